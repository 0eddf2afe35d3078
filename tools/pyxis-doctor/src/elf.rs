//! Reads `plugin_version` out of an installed `spank_pyxis.so` without loading it.
//!
//! Slurm compares that value's major.minor with its own before it calls the plugin
//! ("Incompatible Slurm plugin version"), so the doctor reads exactly what Slurm reads:
//! the 4-byte `unsigned int` the dynamic symbol `plugin_version` points to. The file is
//! parsed as ELF64 little-endian (the only kind the plugin is built as); `dlopen` is not
//! an option, the plugin's Slurm symbols are only resolvable inside a Slurm process.

use thiserror::Error;

/// Why the version could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ElfError {
    #[error("not a 64-bit little-endian ELF file")]
    NotElf64,
    #[error("the file is truncated or its headers are inconsistent")]
    Truncated,
    #[error("no dynamic symbol table")]
    NoDynsym,
    #[error("no exported symbol plugin_version: not a Slurm plugin")]
    NoSymbol,
}

const SHT_NOBITS: u32 = 8;
const SHT_DYNSYM: u32 = 11;
const SYM_SIZE: usize = 24;
const SHDR_SIZE: usize = 64;

/// `N` bytes at `off`, if the file has them.
fn bytes<const N: usize>(b: &[u8], off: usize) -> Result<[u8; N], ElfError> {
    off.checked_add(N)
        .and_then(|end| b.get(off..end))
        .and_then(|s| s.try_into().ok())
        .ok_or(ElfError::Truncated)
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, ElfError> {
    bytes(b, off).map(u16::from_le_bytes)
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, ElfError> {
    bytes(b, off).map(u32::from_le_bytes)
}

fn u64_at(b: &[u8], off: usize) -> Result<u64, ElfError> {
    bytes(b, off).map(u64::from_le_bytes)
}

fn usize_of(v: u64) -> Result<usize, ElfError> {
    usize::try_from(v).map_err(|_| ElfError::Truncated)
}

/// One section header: what the lookup needs.
struct Section {
    kind: u32,
    addr: u64,
    offset: usize,
    size: usize,
    link: usize,
}

fn section(b: &[u8], shoff: usize, index: usize) -> Result<Section, ElfError> {
    let base = index
        .checked_mul(SHDR_SIZE)
        .and_then(|o| o.checked_add(shoff))
        .ok_or(ElfError::Truncated)?;
    let field = |delta: usize| base.checked_add(delta).ok_or(ElfError::Truncated);
    Ok(Section {
        kind: u32_at(b, field(4)?)?,
        addr: u64_at(b, field(16)?)?,
        offset: usize_of(u64_at(b, field(24)?)?)?,
        size: usize_of(u64_at(b, field(32)?)?)?,
        link: u32_at(b, field(40)?)? as usize,
    })
}

/// The NUL-terminated name at `off` in a string table.
fn name_at<'a>(b: &'a [u8], strtab: &Section, off: usize) -> Option<&'a [u8]> {
    let table = b.get(strtab.offset..strtab.offset.checked_add(strtab.size)?)?;
    let rest = table.get(off..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    rest.get(..end)
}

/// The value of the dynamic symbol `plugin_version` (an `unsigned int`).
pub fn plugin_version(b: &[u8]) -> Result<u32, ElfError> {
    // e_ident: magic, ELFCLASS64 (2), ELFDATA2LSB (1)
    if b.get(..4) != Some(b"\x7fELF") || b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        return Err(ElfError::NotElf64);
    }
    let shoff = usize_of(u64_at(b, 0x28)?)?;
    let shentsize = u16_at(b, 0x3a)? as usize;
    let shnum = u16_at(b, 0x3c)? as usize;
    if shentsize != SHDR_SIZE {
        return Err(ElfError::Truncated);
    }
    let sections: Vec<Section> = (0..shnum)
        .map(|i| section(b, shoff, i))
        .collect::<Result<_, _>>()?;
    let dynsym = sections
        .iter()
        .find(|s| s.kind == SHT_DYNSYM)
        .ok_or(ElfError::NoDynsym)?;
    let strtab = sections.get(dynsym.link).ok_or(ElfError::Truncated)?;
    for i in 0..dynsym.size / SYM_SIZE {
        let sym = i
            .checked_mul(SYM_SIZE)
            .and_then(|o| o.checked_add(dynsym.offset))
            .filter(|o| o.checked_add(SYM_SIZE).is_some())
            .ok_or(ElfError::Truncated)?;
        let name = u32_at(b, sym)? as usize;
        if name_at(b, strtab, name) != Some(b"plugin_version".as_slice()) {
            continue;
        }
        let shndx = u16_at(b, sym + 6)? as usize;
        let value = u64_at(b, sym + 8)?;
        let holder = sections.get(shndx).ok_or(ElfError::NoSymbol)?;
        if holder.kind == SHT_NOBITS || value < holder.addr {
            return Err(ElfError::NoSymbol);
        }
        let off = usize_of(value - holder.addr)?
            .checked_add(holder.offset)
            .ok_or(ElfError::Truncated)?;
        return u32_at(b, off);
    }
    Err(ElfError::NoSymbol)
}

/// `SLURM_VERSION_NUMBER` (0xMMmmuu) as (major, minor, micro).
pub fn split_version(v: u32) -> (u32, u32, u32) {
    ((v >> 16) & 0xff, (v >> 8) & 0xff, v & 0xff)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 LE file: sections null, .dynstr, .dynsym, .rodata; the symbol
    /// `name` points `delta` bytes into .rodata, which holds `value` at that offset.
    fn elf(name: &str, value: u32, shndx: u16) -> Vec<u8> {
        let mut dynstr = vec![0u8];
        dynstr.extend_from_slice(b"other\0");
        let name_off = dynstr.len() as u32;
        dynstr.extend_from_slice(name.as_bytes());
        dynstr.push(0);
        let rodata_addr = 0x2000u64;
        let mut rodata = vec![0xaau8; 8];
        rodata.extend_from_slice(&value.to_le_bytes());
        let mut dynsym = vec![0u8; SYM_SIZE]; // the null symbol
        for (n, v) in [(1u32, rodata_addr), (name_off, rodata_addr + 8)] {
            dynsym.extend_from_slice(&n.to_le_bytes());
            dynsym.extend_from_slice(&[0x11, 0]); // info, other
            dynsym.extend_from_slice(&shndx.to_le_bytes());
            dynsym.extend_from_slice(&v.to_le_bytes());
            dynsym.extend_from_slice(&4u64.to_le_bytes());
        }
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2;
        out[5] = 1;
        let str_off = out.len();
        out.extend_from_slice(&dynstr);
        let sym_off = out.len();
        out.extend_from_slice(&dynsym);
        let ro_off = out.len();
        out.extend_from_slice(&rodata);
        let shoff = out.len();
        let mut shdr = |kind: u32, addr: u64, off: usize, size: usize, link: u32| {
            let mut h = vec![0u8; SHDR_SIZE];
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[16..24].copy_from_slice(&addr.to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            h[40..44].copy_from_slice(&link.to_le_bytes());
            out.extend_from_slice(&h);
        };
        shdr(0, 0, 0, 0, 0);
        shdr(3, 0, str_off, dynstr.len(), 0);
        shdr(SHT_DYNSYM, 0, sym_off, dynsym.len(), 1);
        shdr(1, rodata_addr, ro_off, rodata.len(), 0);
        out[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        out[0x3a..0x3c].copy_from_slice(&(SHDR_SIZE as u16).to_le_bytes());
        out[0x3c..0x3e].copy_from_slice(&4u16.to_le_bytes());
        out
    }

    #[test]
    fn reads_the_symbol_value() {
        assert_eq!(
            plugin_version(&elf("plugin_version", 0x16_05_08, 3)),
            Ok(0x16_05_08)
        );
    }

    #[test]
    fn a_file_without_the_symbol_is_not_a_plugin() {
        assert_eq!(
            plugin_version(&elf("plugin_name", 1, 3)),
            Err(ElfError::NoSymbol)
        );
        assert_eq!(
            plugin_version(&elf("plugin_version", 1, 9)),
            Err(ElfError::NoSymbol)
        );
    }

    #[test]
    fn garbage_and_truncation_are_errors_not_panics() {
        assert_eq!(plugin_version(b""), Err(ElfError::NotElf64));
        assert_eq!(plugin_version(b"#!/bin/sh\n"), Err(ElfError::NotElf64));
        let full = elf("plugin_version", 7, 3);
        // (the last 20 bytes, the unread tail of the last section header, may go)
        for len in 6..full.len() - 20 {
            assert!(plugin_version(&full[..len]).is_err(), "length {len}");
        }
        assert_eq!(plugin_version(&full[..full.len() - 20]), Ok(7));
    }

    #[test]
    fn splits_slurm_version_numbers() {
        assert_eq!(split_version(0x16_05_08), (22, 5, 8));
        assert_eq!(split_version(0x18_0b_01), (24, 11, 1));
    }
}
