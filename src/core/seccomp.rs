//! The seccomp filter every unprivileged task gets after joining its container (§5.15).
//!
//! With a single-id user mapping, package managers call chown/setuid to ids that are not
//! mapped and fail. Like enroot's `enroot-nsenter`, the filter makes the credential
//! calls (`chown` family, `set*id`, `setgroups`) return success without doing anything,
//! so `apt-get` works as "root" without subordinate id ranges; `setfsuid`/`setfsgid`
//! still run for the query value `-1`. pyxis only filtered the native ABI, so 32-bit and
//! x32 binaries saw different behaviour (W17); this program covers every ABI the kernel
//! of the build architecture can run. It is plain data here; `sys::seccomp` installs it.

/// One classic-BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

// Classic BPF opcodes (linux/bpf_common.h) and seccomp return values (linux/seccomp.h).
const BPF_LD: u16 = 0x00;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_ALU: u16 = 0x04;
const BPF_AND: u16 = 0x50;
const BPF_JMP: u16 = 0x05;
const BPF_JEQ: u16 = 0x10;
const BPF_K: u16 = 0x00;
const BPF_RET: u16 = 0x06;
const LD_W_ABS: u16 = BPF_LD | BPF_W | BPF_ABS;
const JEQ_K: u16 = BPF_JMP | BPF_JEQ | BPF_K;
const AND_K: u16 = BPF_ALU | BPF_AND | BPF_K;
const RET_K: u16 = BPF_RET | BPF_K;
pub const RET_ALLOW: u32 = 0x7fff_0000;
/// `SECCOMP_RET_ERRNO` with errno 0: the call "succeeds" without running.
pub const RET_FAKE_SUCCESS: u32 = 0x0005_0000;

// struct seccomp_data offsets (little-endian low word of args[0]).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0: u32 = 16;

/// `__X32_SYSCALL_BIT`: x32 calls arrive as x86_64 with this bit set.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// One system-call ABI: its audit arch and the numbers of the calls to fake.
#[derive(Clone, Copy, Debug)]
pub struct Abi {
    #[cfg(test)]
    pub name: &'static str,
    pub arch: u32,
    /// Bits cleared from the number before matching (x32 on x86_64).
    pub ignore_bits: u32,
    /// chown, lchown, fchown, fchownat, set[re[s]]{u,g}id, setgroups (+ 32-bit variants).
    pub faked: &'static [u32],
    /// setfsuid, setfsgid (+ 32-bit variants): faked unless the argument is -1.
    pub fs_calls: &'static [u32],
}

pub const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
pub const AUDIT_ARCH_I386: u32 = 3 | 0x4000_0000;
pub const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;
pub const AUDIT_ARCH_ARM: u32 = 40 | 0x4000_0000;
pub const AUDIT_ARCH_PPC64LE: u32 = 21 | 0x8000_0000 | 0x4000_0000;

/// x86_64 and x32 (asm/unistd_64.h, unistd_x32.h: same numbers plus the x32 bit).
pub const X86_64: Abi = Abi {
    #[cfg(test)]
    name: "x86_64",
    arch: AUDIT_ARCH_X86_64,
    ignore_bits: X32_SYSCALL_BIT,
    // chown lchown fchown fchownat setuid setgid setreuid setregid setresuid setresgid setgroups
    faked: &[92, 94, 93, 260, 105, 106, 113, 114, 117, 119, 116],
    fs_calls: &[122, 123],
};

/// i386, also reachable on x86_64 kernels (asm/unistd_32.h), 16- and 32-bit id variants.
pub const I386: Abi = Abi {
    #[cfg(test)]
    name: "i386",
    arch: AUDIT_ARCH_I386,
    ignore_bits: 0,
    faked: &[
        182, 16, 95, 298, 23, 46, 70, 71, 164, 170, 81, // 16-bit ids, fchownat
        212, 198, 207, 213, 214, 203, 204, 208, 210, 206, // 32-bit ids
    ],
    fs_calls: &[138, 139, 215, 216],
};

/// 32-bit ARM EABI, reachable on many aarch64 kernels (arch/arm/tools/syscall.tbl).
pub const ARM: Abi = Abi {
    #[cfg(test)]
    name: "arm",
    arch: AUDIT_ARCH_ARM,
    ignore_bits: 0,
    faked: &[
        182, 16, 95, 325, 23, 46, 70, 71, 164, 170, 81, // 16-bit ids, fchownat
        212, 198, 207, 213, 214, 203, 204, 208, 210, 206, // 32-bit ids
    ],
    fs_calls: &[138, 139, 215, 216],
};

/// aarch64 (the generic table: no chown/lchown).
pub const AARCH64: Abi = Abi {
    #[cfg(test)]
    name: "aarch64",
    arch: AUDIT_ARCH_AARCH64,
    ignore_bits: 0,
    // fchownat fchown setregid setgid setreuid setuid setresuid setresgid setgroups
    faked: &[54, 55, 143, 144, 145, 146, 147, 149, 159],
    fs_calls: &[151, 152],
};

/// ppc64le.
pub const PPC64LE: Abi = Abi {
    #[cfg(test)]
    name: "ppc64le",
    arch: AUDIT_ARCH_PPC64LE,
    ignore_bits: 0,
    // chown lchown fchown fchownat setuid setgid setreuid setregid setresuid setresgid setgroups
    faked: &[181, 16, 95, 289, 23, 46, 70, 71, 164, 169, 81],
    fs_calls: &[138, 139],
};

/// The ABIs a kernel of the build architecture can execute.
pub fn native_abis() -> &'static [Abi] {
    if cfg!(target_arch = "x86_64") {
        &[X86_64, I386]
    } else if cfg!(target_arch = "aarch64") {
        &[AARCH64, ARM]
    } else if cfg!(target_arch = "powerpc64") {
        &[PPC64LE]
    } else {
        &[]
    }
}

/// Errors building a program (only possible with absurdly large tables).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("seccomp program too large for classic BPF jumps")]
pub struct TooLarge;

/// Builds the filter. Unknown architectures are allowed through (as pyxis does).
///
/// Layout: the arch checks jump to one block per ABI; each block loads the number
/// (masking `ignore_bits`), then jumps to the shared FAKE / FS-CHECK tails.
pub fn program(abis: &[Abi]) -> Result<Vec<Insn>, TooLarge> {
    // Block sizes first, so forward jump offsets can be computed.
    let block_len = |abi: &Abi| {
        1 + usize::from(abi.ignore_bits != 0) + abi.faked.len() + abi.fs_calls.len() + 1
    };
    let header = 1 + abis.len() + 1; // ld arch, one jeq per ABI, ret allow
    let blocks_total: usize = abis.iter().map(block_len).sum();
    let fs_check = header + blocks_total; // ld arg0; jeq -1 → allow else fake
    let fake = fs_check + 2;
    let allow = fake + 1;

    let mut prog: Vec<Insn> = Vec::with_capacity(allow + 1);
    let jump = |from: usize, to: usize| -> Result<u8, TooLarge> {
        u8::try_from(to.checked_sub(from + 1).ok_or(TooLarge)?).map_err(|_| TooLarge)
    };
    prog.push(stmt(LD_W_ABS, OFF_ARCH));
    let mut block_start = header;
    for abi in abis {
        let at = prog.len();
        prog.push(Insn {
            code: JEQ_K,
            jt: jump(at, block_start)?,
            jf: 0,
            k: abi.arch,
        });
        block_start += block_len(abi);
    }
    prog.push(stmt(RET_K, RET_ALLOW));
    for abi in abis {
        prog.push(stmt(LD_W_ABS, OFF_NR));
        if abi.ignore_bits != 0 {
            prog.push(stmt(AND_K, !abi.ignore_bits));
        }
        for (numbers, target) in [(abi.faked, fake), (abi.fs_calls, fs_check)] {
            for nr in numbers {
                let at = prog.len();
                prog.push(Insn {
                    code: JEQ_K,
                    jt: jump(at, target)?,
                    jf: 0,
                    k: *nr,
                });
            }
        }
        prog.push(stmt(RET_K, RET_ALLOW));
    }
    prog.push(stmt(LD_W_ABS, OFF_ARG0));
    prog.push(Insn {
        code: JEQ_K,
        jt: 1, // -1: a query, let it run
        jf: 0,
        k: u32::MAX,
    });
    prog.push(stmt(RET_K, RET_FAKE_SUCCESS));
    prog.push(stmt(RET_K, RET_ALLOW));
    Ok(prog)
}

fn stmt(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the subset of classic BPF the program uses on one syscall.
    fn eval(prog: &[Insn], arch: u32, nr: u32, arg0: u32) -> u32 {
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    acc = match i.k {
                        OFF_NR => nr,
                        OFF_ARCH => arch,
                        OFF_ARG0 => arg0,
                        other => panic!("load of offset {other}"),
                    }
                }
                AND_K => acc &= i.k,
                JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
                RET_K => return i.k,
                other => panic!("opcode {other:#x}"),
            }
        }
    }

    fn all() -> Vec<Insn> {
        program(&[X86_64, I386, AARCH64, ARM, PPC64LE]).unwrap()
    }

    #[test]
    fn credential_calls_are_faked_on_every_abi() {
        let prog = all();
        for abi in [X86_64, I386, AARCH64, ARM, PPC64LE] {
            for nr in abi.faked {
                assert_eq!(
                    eval(&prog, abi.arch, *nr, 0),
                    RET_FAKE_SUCCESS,
                    "{} {nr}",
                    abi.name
                );
            }
        }
    }

    #[test]
    fn x32_calls_are_faked_too() {
        let prog = all();
        assert_eq!(
            eval(&prog, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 92, 0),
            RET_FAKE_SUCCESS
        );
        assert_eq!(
            eval(&prog, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT | 122, 5),
            RET_FAKE_SUCCESS
        );
        assert_eq!(
            eval(&prog, AUDIT_ARCH_X86_64, X32_SYSCALL_BIT, 0),
            RET_ALLOW
        ); // read
    }

    #[test]
    fn setfsuid_query_runs_and_change_is_faked() {
        let prog = all();
        for abi in [X86_64, I386, AARCH64, ARM, PPC64LE] {
            for nr in abi.fs_calls {
                assert_eq!(
                    eval(&prog, abi.arch, *nr, u32::MAX),
                    RET_ALLOW,
                    "{} {nr}",
                    abi.name
                );
                assert_eq!(
                    eval(&prog, abi.arch, *nr, 1000),
                    RET_FAKE_SUCCESS,
                    "{} {nr}",
                    abi.name
                );
            }
        }
    }

    #[test]
    fn other_calls_and_unknown_arches_are_allowed() {
        let prog = all();
        // x86_64 read/write/getuid, i386 getuid32, aarch64 read.
        for (arch, nr) in [
            (AUDIT_ARCH_X86_64, 0),
            (AUDIT_ARCH_X86_64, 1),
            (AUDIT_ARCH_X86_64, 102),
            (AUDIT_ARCH_I386, 199),
            (AUDIT_ARCH_AARCH64, 63),
        ] {
            assert_eq!(eval(&prog, arch, nr, 0), RET_ALLOW, "{arch:#x} {nr}");
        }
        assert_eq!(eval(&prog, 0x1234, 92, 0), RET_ALLOW);
    }

    #[test]
    fn native_program_fits_and_matches_libc_numbers() {
        let prog = program(native_abis()).unwrap();
        assert!(prog.len() < 200);
        #[cfg(target_arch = "x86_64")]
        {
            for nr in [
                libc::SYS_chown,
                libc::SYS_setresuid,
                libc::SYS_fchownat,
                libc::SYS_setgroups,
            ] {
                let nr = u32::try_from(nr).unwrap();
                assert_eq!(eval(&prog, AUDIT_ARCH_X86_64, nr, 0), RET_FAKE_SUCCESS);
            }
        }
    }
}
