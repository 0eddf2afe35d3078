//! The fstab dialect of `enroot-mount`, as a pure parser.
//!
//! Lines come from the image's `/etc/fstab`, `mounts.d/*.fstab`, the `mounts()` function of a
//! `--conf` script (pyxis writes `SRC DST FLAGS` there), `-m` arguments and what hooks append to
//! `$ENROOT_MOUNTS`. Fields are `SRC DST [TYPE [OPTS [FREQ [PASSNO]]]]` separated by blanks, with
//! the getmntent octal escapes for space, tab, newline and backslash. enroot fills in missing
//! fields by guessing (see [`normalize`]), notably a third field that looks like options is taken
//! as the options with type `none`.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// One normalised mount request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub source: OsString,
    pub target: OsString,
    pub fstype: String,
    pub options: String,
    pub passno: i32,
}

/// What to create at the target before mounting (`x-create=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Create {
    Dir,
    File,
    /// A directory, unless the source of a bind mount is not a directory.
    Auto,
}

/// Parsed mount options: kernel flags, leftover filesystem data and enroot's extensions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// `MS_*` flags (propagation included).
    pub flags: libc::c_ulong,
    /// Unknown options, passed to the filesystem (`mode=755`, `huge=within_size`, ...).
    pub data: String,
    pub create: Option<Create>,
    pub detach: bool,
    pub move_mount: bool,
    pub nofail: bool,
    pub silent: bool,
    pub loud: bool,
    /// `rbind` was given (plain `bind` clears `MS_REC` for the mount itself).
    pub rbind: bool,
    /// Propagation changes apply recursively (`rshared`, `rslave`, ...).
    pub recursive_propagation: bool,
}

/// Propagation flags.
pub const MS_PROPAGATION: libc::c_ulong =
    libc::MS_PRIVATE | libc::MS_SHARED | libc::MS_SLAVE | libc::MS_UNBINDABLE;

/// How an option word changes the flags.
enum Effect {
    Set(libc::c_ulong),
    Clear(libc::c_ulong),
    /// Known to enroot but without a kernel flag (handled separately or ignored).
    Special,
}

fn option_effect(word: &str) -> Option<Effect> {
    use Effect::{Clear, Set, Special};
    Some(match word {
        "async" => Clear(libc::MS_SYNCHRONOUS),
        "atime" => Clear(libc::MS_NOATIME),
        "bind" => Set(libc::MS_BIND),
        "dev" => Clear(libc::MS_NODEV),
        "diratime" => Clear(libc::MS_NODIRATIME),
        "dirsync" => Set(libc::MS_DIRSYNC),
        "exec" => Clear(libc::MS_NOEXEC),
        "iversion" => Set(libc::MS_I_VERSION),
        "loud" => Clear(libc::MS_SILENT),
        "mand" => Set(libc::MS_MANDLOCK),
        "noatime" => Set(libc::MS_NOATIME),
        "nodev" => Set(libc::MS_NODEV),
        "nodiratime" => Set(libc::MS_NODIRATIME),
        "noexec" => Set(libc::MS_NOEXEC),
        "noiversion" => Clear(libc::MS_I_VERSION),
        "nomand" => Clear(libc::MS_MANDLOCK),
        "norelatime" => Clear(libc::MS_RELATIME),
        "nostrictatime" => Clear(libc::MS_STRICTATIME),
        "nosuid" => Set(libc::MS_NOSUID),
        "private" => Set(libc::MS_PRIVATE),
        "rbind" => Set(libc::MS_BIND | libc::MS_REC),
        "relatime" => Set(libc::MS_RELATIME),
        "remount" => Set(libc::MS_REMOUNT),
        "ro" => Set(libc::MS_RDONLY),
        "rprivate" => Set(libc::MS_PRIVATE | libc::MS_REC),
        "rshared" => Set(libc::MS_SHARED | libc::MS_REC),
        "rslave" => Set(libc::MS_SLAVE | libc::MS_REC),
        "runbindable" => Set(libc::MS_UNBINDABLE | libc::MS_REC),
        "rw" => Clear(libc::MS_RDONLY),
        "shared" => Set(libc::MS_SHARED),
        "silent" => Set(libc::MS_SILENT),
        "slave" => Set(libc::MS_SLAVE),
        "strictatime" => Set(libc::MS_STRICTATIME),
        "suid" => Clear(libc::MS_NOSUID),
        "sync" => Set(libc::MS_SYNCHRONOUS),
        "unbindable" => Set(libc::MS_UNBINDABLE),
        "lazytime" => Set(libc::MS_LAZYTIME),
        "nolazytime" => Clear(libc::MS_LAZYTIME),
        "auto" | "defaults" | "group" | "noauto" | "nofail" | "nogroup" | "noowner" | "nouser"
        | "nousers" | "owner" | "user" | "users" | "x-create=dir" | "x-create=file"
        | "x-create=auto" | "x-move" | "x-detach" => Special,
        _ => return None,
    })
}

/// Whether a field looks like a list of mount options rather than a type or a path.
pub fn is_mount_option(field: &str) -> bool {
    field.contains(',') || option_effect(field).is_some()
}

/// Parse an option string.
pub fn parse_options(options: &str) -> Options {
    let mut o = Options::default();
    let mut data: Vec<&str> = Vec::new();
    for word in options.split(',').filter(|w| !w.is_empty()) {
        match option_effect(word) {
            Some(Effect::Set(f)) => o.flags |= f,
            Some(Effect::Clear(f)) => o.flags &= !f,
            Some(Effect::Special) => {}
            None => data.push(word),
        }
        match word {
            "x-create=dir" => o.create = Some(Create::Dir),
            "x-create=file" => o.create = Some(Create::File),
            "x-create=auto" => o.create = Some(Create::Auto),
            "x-detach" => o.detach = true,
            "x-move" => o.move_mount = true,
            "nofail" => o.nofail = true,
            "silent" => o.silent = true,
            "loud" => o.loud = true,
            "rbind" => o.rbind = true,
            "rshared" | "rslave" | "rprivate" | "runbindable" => o.recursive_propagation = true,
            _ => {}
        }
    }
    o.data = data.join(",");
    o
}

/// Decode the getmntent escapes `\040` (space), `\011` (tab), `\012` (newline), `\134` and `\\`
/// (backslash). Other backslashes are kept literally.
pub fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while let Some(&c) = field.get(i) {
        if c == b'\\' {
            let replacement = match field.get(i + 1..i + 4) {
                Some(b"040") => Some((b' ', 4)),
                Some(b"011") => Some((b'\t', 4)),
                Some(b"012") => Some((b'\n', 4)),
                Some(b"134") => Some((b'\\', 4)),
                _ if field.get(i + 1) == Some(&b'\\') => Some((b'\\', 2)),
                _ => None,
            };
            if let Some((byte, len)) = replacement {
                out.push(byte);
                i += len;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Encode a path for an fstab field (the inverse of [`unescape`]).
pub fn escape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    for &c in field {
        match c {
            b' ' => out.extend_from_slice(b"\\040"),
            b'\t' => out.extend_from_slice(b"\\011"),
            b'\n' => out.extend_from_slice(b"\\012"),
            b'\\' => out.extend_from_slice(b"\\134"),
            _ => out.push(c),
        }
    }
    out
}

/// The raw fields of one line, before guessing. `None` for blank lines and comments.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Raw {
    pub source: Vec<u8>,
    pub target: Vec<u8>,
    pub fstype: Vec<u8>,
    pub options: Vec<u8>,
    pub freq: i32,
    pub passno: i32,
}

/// Split one line into fields.
pub fn split_line(line: &[u8]) -> Option<Raw> {
    let mut fields = line
        .split(|c| *c == b' ' || *c == b'\t' || *c == b'\r')
        .filter(|f| !f.is_empty());
    let first = fields.next()?;
    if first.first() == Some(&b'#') {
        return None;
    }
    let mut next = || fields.next().map(unescape).unwrap_or_default();
    let source = unescape(first);
    let target = next();
    let fstype = next();
    let options = next();
    // getmntent reads the numbers with sscanf: garbage counts as 0.
    let number = |f: Vec<u8>| {
        std::str::from_utf8(&f)
            .ok()
            .and_then(|s| s.parse::<i32>().ok())
            .unwrap_or(0)
    };
    let freq = number(next());
    let passno = number(next());
    Some(Raw {
        source,
        target,
        fstype,
        options,
        freq,
        passno,
    })
}

/// Fill in missing fields the way `enroot-mount` guesses them:
///
/// ```text
/// tmpfs /dst           -> tmpfs /dst tmpfs ""
/// /src                 -> /src  /src none  rbind,x-create=auto
/// /src bind            -> /src  /src none  bind
/// /src /dst            -> /src  /dst none  rbind,x-create=auto
/// /src /dst bind,ro    -> /src  /dst none  bind,ro
/// ```
///
/// Returns `None` for an entry that stays incomplete ("invalid fstab entry").
pub fn normalize(raw: Raw) -> Option<Entry> {
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    let mut source = raw.source;
    let mut target = raw.target;
    let mut fstype = text(raw.fstype);
    let mut options: Option<String> = if raw.options.is_empty() {
        None
    } else {
        Some(text(raw.options))
    };
    let passno = if raw.freq != 0 && raw.passno == 0 {
        raw.freq
    } else {
        raw.passno
    };

    let target_str = String::from_utf8_lossy(&target).into_owned();
    if !target.is_empty() && fstype.is_empty() && options.is_none() && is_mount_option(&target_str)
    {
        options = Some(target_str);
        fstype = "none".to_string();
        target.clear();
    }
    if !fstype.is_empty() && options.is_none() && is_mount_option(&fstype) {
        options = Some(std::mem::replace(&mut fstype, "none".to_string()));
        if target == b"none" {
            target.clear();
        }
    }
    if !source.is_empty() {
        if source == b"tmpfs" {
            if fstype.is_empty() || fstype == "none" {
                fstype = "tmpfs".to_string();
            }
        } else {
            if target.is_empty() {
                target.clone_from(&source);
            }
            if fstype.is_empty() || fstype == "none" {
                fstype = "none".to_string();
                if options.as_deref().map_or(true, str::is_empty) {
                    options = Some("rbind,x-create=auto".to_string());
                }
            }
        }
    }
    if source.is_empty() || target.is_empty() || fstype.is_empty() {
        return None;
    }
    source.shrink_to_fit();
    Some(Entry {
        source: OsString::from_vec(source),
        target: OsString::from_vec(target),
        fstype,
        options: options.unwrap_or_default(),
        passno,
    })
}

/// A line that could not be understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

/// Parse a whole fstab text; comments and blank lines are skipped.
pub fn parse(text: &[u8]) -> Vec<Result<Entry, Invalid>> {
    text.split(|c| *c == b'\n')
        .filter_map(|line| {
            split_line(line).map(|raw| {
                normalize(raw).ok_or_else(|| Invalid(String::from_utf8_lossy(line).into_owned()))
            })
        })
        .collect()
}

/// Build one fstab line from a source, a target and options.
pub fn line(source: &OsString, target: &OsString, fstype: &str, options: &str) -> Vec<u8> {
    let mut l = escape(source.as_bytes());
    l.push(b' ');
    l.extend_from_slice(&escape(target.as_bytes()));
    l.push(b' ');
    l.extend_from_slice(fstype.as_bytes());
    l.push(b' ');
    l.extend_from_slice(options.as_bytes());
    l.push(b'\n');
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: &str) -> Entry {
        let mut all = parse(line.as_bytes());
        assert_eq!(all.len(), 1, "{line}");
        all.remove(0).unwrap()
    }

    #[test]
    fn unescape_known_sequences() {
        assert_eq!(
            unescape(br"/a\040b\011c\012d\134e"),
            b"/a b\tc\nd\\e".to_vec()
        );
        assert_eq!(unescape(br"/x\\y"), b"/x\\y".to_vec());
        assert_eq!(unescape(br"/x\041y\"), b"/x\\041y\\".to_vec());
        assert_eq!(
            escape(b"/a b\tc\nd\\e"),
            br"/a\040b\011c\012d\134e".to_vec()
        );
        assert_eq!(
            unescape(&escape(b"weird \\ \t\n name")),
            b"weird \\ \t\n name".to_vec()
        );
    }

    #[test]
    fn pyxis_mount_lines() {
        let e = entry("/home /test-mnt x-create=auto,rbind");
        assert_eq!(e.source, OsString::from("/home"));
        assert_eq!(e.target, OsString::from("/test-mnt"));
        assert_eq!(e.fstype, "none");
        assert_eq!(e.options, "x-create=auto,rbind");
        assert_eq!(e.passno, 0);

        let e = entry("tmpfs /mytmpfs x-create=dir,huge=within_size");
        assert_eq!(e.fstype, "tmpfs");
        assert_eq!(e.options, "x-create=dir,huge=within_size");

        let e = entry("umount /root x-detach");
        assert_eq!(e.fstype, "none");
        assert_eq!(e.options, "x-detach");

        let e = entry(r"/tmp/pyxis\040test\040dir /mnt/my\040mount x-create=auto,rbind");
        assert_eq!(e.source, OsString::from("/tmp/pyxis test dir"));
        assert_eq!(e.target, OsString::from("/mnt/my mount"));
    }

    #[test]
    fn guessing_missing_fields() {
        let e = entry("/src");
        assert_eq!(
            (e.target, e.fstype, e.options),
            ("/src".into(), "none".into(), "rbind,x-create=auto".into())
        );
        let e = entry("/src bind");
        assert_eq!(
            (e.target, e.fstype, e.options),
            ("/src".into(), "none".into(), "bind".into())
        );
        let e = entry("/src /dst");
        assert_eq!(
            (e.target, e.options),
            ("/dst".into(), "rbind,x-create=auto".into())
        );
        let e = entry("tmpfs /dst");
        assert_eq!((e.fstype, e.options), ("tmpfs".into(), String::new()));
        let e = entry("none /dst devpts");
        assert_eq!((e.fstype, e.options), ("devpts".into(), String::new()));
        let e = entry("/proc /proc none x-create=dir,rbind 0 -1");
        assert_eq!(e.passno, -1);
        let e = entry("/a /b none bind 3");
        assert_eq!(e.passno, 3);
    }

    #[test]
    fn comments_blank_and_invalid_lines() {
        assert!(parse(b"# comment\n\n   \n  # indented\n").is_empty());
        let all = parse(b"none");
        assert_eq!(all.len(), 1);
        assert!(all[0].is_ok(), "a lone source binds onto itself");
        assert!(parse(b"x /y devpts ro")[0].is_ok());
        assert!(split_line(b"").is_none());
    }

    #[test]
    fn option_parsing() {
        let o = parse_options("x-create=auto,rbind,ro,unbindable");
        assert_eq!(o.create, Some(Create::Auto));
        assert!(o.rbind);
        assert_eq!(o.flags & libc::MS_RDONLY, libc::MS_RDONLY);
        assert_eq!(o.flags & libc::MS_UNBINDABLE, libc::MS_UNBINDABLE);
        assert_eq!(o.flags & libc::MS_BIND, libc::MS_BIND);
        assert!(o.data.is_empty());

        let o = parse_options("x-create=dir,rw,nosuid,nodev,mode=755,huge=within_size,slave");
        assert_eq!(o.data, "mode=755,huge=within_size");
        assert_eq!(o.flags & libc::MS_RDONLY, 0);
        assert_eq!(o.flags & libc::MS_SLAVE, libc::MS_SLAVE);

        let o = parse_options("ro,rw");
        assert_eq!(o.flags & libc::MS_RDONLY, 0);
        let o = parse_options("x-detach,nofail,silent");
        assert!(o.detach && o.nofail && o.silent);
        let o = parse_options("rslave");
        assert!(o.recursive_propagation);

        assert!(is_mount_option("ro"));
        assert!(is_mount_option("a,b"));
        assert!(!is_mount_option("tmpfs"));
        assert!(!is_mount_option("/mnt"));
    }

    #[test]
    fn line_builder_escapes() {
        let l = line(&"/a b".into(), &"/c".into(), "none", "bind");
        assert_eq!(l, b"/a\\040b /c none bind\n".to_vec());
    }
}
