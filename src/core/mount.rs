//! `--container-mounts` parsing and the fstab line handed to enroot.
//!
//! Decides how one `SRC:DST[:FLAGS][,SRC:DST...]` argument becomes mount
//! entries (behaviour spec §4.3 steps 1-7), which default flags each source
//! kind gets, and how an entry is written as an fstab line for the `mounts()`
//! function of enroot's `--conf` script (§5.7). Used by [`crate::core::args`]
//! when the option callback or `PYXIS_CONTAINER_MOUNTS` is processed (srun,
//! sbatch/salloc and slurmstepd), by the batch-step script mount (§4.7) and by
//! [`crate::core::conf_script`].
//!
//! Deliberate difference from pyxis: mount flags containing whitespace or
//! control characters are rejected, because they would split the fstab line
//! enroot reads (weak spot W5/W6); pyxis accepted them and enroot then failed
//! or mounted something else.

use thiserror::Error;

use crate::core::text::printable;

/// Default flags for a path source (`./x`, `/x`, `../x`).
const PATH_FLAGS: &str = "x-create=auto,rbind";
/// Default flags for the `tmpfs` source.
const TMPFS_FLAGS: &str = "x-create=dir";
/// Default flags for the `umount` source.
const UMOUNT_FLAGS: &str = "x-detach";
/// Extra flags of the internal sbatch-script mount (§4.7).
const BATCH_SCRIPT_EXTRA_FLAGS: &str = "x-create=file,bind,ro,nosuid,nodev,private";

/// One mount requested by the user, with its final enroot flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Host path (absolute or relative to the task cwd), `tmpfs` or `umount`.
    pub source: String,
    /// Path inside the container (absolute or relative to the container root).
    pub target: String,
    /// Comma-separated flags: defaults for the source kind, then user flags.
    pub flags: String,
}

/// Why one `--container-mounts` argument was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MountError {
    /// The argument was empty.
    #[error("--container-mounts: argument required")]
    ArgumentRequired,
    /// An entry has an empty source or an empty target.
    #[error("--container-mounts: invalid format: {}", printable(.0))]
    InvalidFormat(String),
    /// The source is neither a path nor `tmpfs`/`umount`.
    #[error("mount source must be a relative path, an absolute path, \"tmpfs\" or \"umount\"")]
    InvalidSource {
        /// Source as given.
        src: String,
        /// Target as given.
        dst: String,
    },
    /// The target is not a path.
    #[error("mount target must be a relative path or an absolute path")]
    InvalidTarget {
        /// Source as given.
        src: String,
        /// Target as given.
        dst: String,
    },
    /// User flags that would break the fstab line (not checked by pyxis).
    #[error("--container-mounts: invalid mount flags: {}", printable(.flags))]
    InvalidFlags {
        /// The user flags as given (still with `+`).
        flags: String,
        /// Source as given.
        src: String,
        /// Target as given.
        dst: String,
    },
}

impl MountError {
    /// The second line pyxis logs after a failed entry (§4.3 step 7):
    /// `could not add mount entry: <src>:<dst>`, for the errors raised after
    /// the entry was split.
    pub fn followup(&self) -> Option<String> {
        match self {
            MountError::ArgumentRequired | MountError::InvalidFormat(_) => None,
            MountError::InvalidSource { src, dst }
            | MountError::InvalidTarget { src, dst }
            | MountError::InvalidFlags { src, dst, .. } => Some(format!(
                "could not add mount entry: {}:{}",
                printable(src),
                printable(dst)
            )),
        }
    }
}

/// True when `s` starts like a path: pyxis checks only the first character
/// (`.` or `/`), so `.foo` and `..` count as relative paths.
pub(crate) fn is_path_like(s: &str) -> bool {
    s.starts_with('.') || s.starts_with('/')
}

/// Parses one `--container-mounts` argument (§4.3 steps 1-6).
///
/// The whole argument is validated before anything is returned, so a bad
/// entry never leaves the earlier entries of the same argument half-applied.
pub fn parse_mounts(arg: &str) -> Result<Vec<MountEntry>, MountError> {
    if arg.is_empty() {
        return Err(MountError::ArgumentRequired);
    }
    arg.split(',').map(parse_entry).collect()
}

/// Parses one comma-free entry `SRC[:DST[:FLAGS]]`.
fn parse_entry(entry: &str) -> Result<MountEntry, MountError> {
    let invalid = || MountError::InvalidFormat(entry.to_owned());
    let (source, target, user_flags) = match entry.split_once(':') {
        None => (entry, entry, None),
        Some((source, rest)) => match rest.split_once(':') {
            None => (source, rest, None),
            Some((target, flags)) => (source, target, Some(flags).filter(|f| !f.is_empty())),
        },
    };
    if source.is_empty() || target.is_empty() {
        return Err(invalid());
    }

    let default_flags = if is_path_like(source) {
        PATH_FLAGS
    } else if source == "tmpfs" {
        TMPFS_FLAGS
    } else if source == "umount" {
        UMOUNT_FLAGS
    } else {
        return Err(MountError::InvalidSource {
            src: source.to_owned(),
            dst: target.to_owned(),
        });
    };
    if !is_path_like(target) {
        return Err(MountError::InvalidTarget {
            src: source.to_owned(),
            dst: target.to_owned(),
        });
    }

    let flags = match user_flags {
        None => default_flags.to_owned(),
        Some(user) => {
            if user.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(MountError::InvalidFlags {
                    flags: user.to_owned(),
                    src: source.to_owned(),
                    dst: target.to_owned(),
                });
            }
            // enroot separates flags with ",", which already separates entries
            // on the command line, hence "+" in the argument.
            format!("{default_flags},{}", user.replace('+', ","))
        }
    };
    Ok(MountEntry {
        source: source.to_owned(),
        target: target.to_owned(),
        flags,
    })
}

/// Appends `entry` unless an identical (source, target, flags) entry is
/// already recorded (§4.3 step 7); order is preserved.
pub fn add_unique(list: &mut Vec<MountEntry>, entry: MountEntry) {
    if !list.contains(&entry) {
        list.push(entry);
    }
}

/// The internal mount of the batch script onto the same path inside the
/// container, so slurmstepd can exec it there (§4.7).
pub fn batch_script_mount(path: &str) -> MountEntry {
    MountEntry {
        source: path.to_owned(),
        target: path.to_owned(),
        flags: format!("{PATH_FLAGS},{BATCH_SCRIPT_EXTRA_FLAGS}"),
    }
}

/// Escapes one fstab field the way enroot-mount decodes it: space, tab,
/// newline and backslash become octal escapes.
pub fn fstab_escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            other => out.push(other),
        }
    }
    out
}

impl MountEntry {
    /// `<SRC> <DST> <FLAGS>` with SRC and DST fstab-escaped and FLAGS
    /// verbatim; enroot reads a third field containing a comma as the
    /// options of a `none`/`tmpfs` mount.
    pub fn fstab_line(&self) -> String {
        format!(
            "{} {} {}",
            fstab_escape(&self.source),
            fstab_escape(&self.target),
            self.flags
        )
    }

    /// True when the flags could be written into an fstab line without
    /// splitting it (no whitespace, no control characters, not empty).
    pub fn flags_are_safe(&self) -> bool {
        !self.flags.is_empty()
            && !self
                .flags
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_escape_control_characters() {
        // found by tests/fuzz (targets mount, args, pyxis_env): user bytes went raw into
        // the messages slurmstepd logs, so a newline forged a log line
        let e = parse_mounts(":\n/a").unwrap_err();
        assert_eq!(e.to_string(), "--container-mounts: invalid format: :\\n/a");
        let e = parse_mounts("\u{18}/a:/b").unwrap_err();
        assert_eq!(
            e.followup().as_deref(),
            Some("could not add mount entry: \\u{18}/a:/b")
        );
        let e = parse_mounts("/a:/b:ro\u{7f}").unwrap_err();
        assert!(e.to_string().ends_with("ro\\u{7f}"), "{e}");
        assert_eq!(
            e.followup().as_deref(),
            Some("could not add mount entry: /a:/b")
        );
    }

    fn entry(source: &str, target: &str, flags: &str) -> MountEntry {
        MountEntry {
            source: source.into(),
            target: target.into(),
            flags: flags.into(),
        }
    }

    #[test]
    fn accepted_forms() {
        type Expected<'a> = &'a [(&'a str, &'a str, &'a str)];
        let cases: &[(&str, Expected)] = &[
            ("/tmp", &[("/tmp", "/tmp", "x-create=auto,rbind")]),
            ("./a", &[("./a", "./a", "x-create=auto,rbind")]),
            ("/a:/b", &[("/a", "/b", "x-create=auto,rbind")]),
            ("/a:/b:", &[("/a", "/b", "x-create=auto,rbind")]),
            (
                "/tmp:/mnt:ro+rprivate",
                &[("/tmp", "/mnt", "x-create=auto,rbind,ro,rprivate")],
            ),
            (
                "tmpfs:/t:huge=within_size",
                &[("tmpfs", "/t", "x-create=dir,huge=within_size")],
            ),
            ("tmpfs:/t", &[("tmpfs", "/t", "x-create=dir")]),
            ("umount:/etc/x", &[("umount", "/etc/x", "x-detach")]),
            ("../x:./y", &[("../x", "./y", "x-create=auto,rbind")]),
            (".foo:.bar", &[(".foo", ".bar", "x-create=auto,rbind")]),
            (
                "/a:/b:ro:extra",
                &[("/a", "/b", "x-create=auto,rbind,ro:extra")],
            ),
            (
                "/a:/a,/b:/c:ro",
                &[
                    ("/a", "/a", "x-create=auto,rbind"),
                    ("/b", "/c", "x-create=auto,rbind,ro"),
                ],
            ),
            (
                "/with space:/x y",
                &[("/with space", "/x y", "x-create=auto,rbind")],
            ),
        ];
        for (arg, expected) in cases {
            let got = parse_mounts(arg).unwrap();
            let want: Vec<MountEntry> = expected.iter().map(|(s, t, f)| entry(s, t, f)).collect();
            assert_eq!(got, want, "{arg}");
        }
    }

    #[test]
    fn rejected_forms() {
        let src_msg =
            "mount source must be a relative path, an absolute path, \"tmpfs\" or \"umount\"";
        let dst_msg = "mount target must be a relative path or an absolute path";
        let cases: &[(&str, &str, Option<&str>)] = &[
            ("", "--container-mounts: argument required", None),
            (":/a", "--container-mounts: invalid format: :/a", None),
            ("/a,", "--container-mounts: invalid format: ", None),
            (",/a", "--container-mounts: invalid format: ", None),
            ("/a,,/b", "--container-mounts: invalid format: ", None),
            ("/tmp:", "--container-mounts: invalid format: /tmp:", None),
            (
                "/tmp::ro",
                "--container-mounts: invalid format: /tmp::ro",
                None,
            ),
            ("/ok:/ok,:x", "--container-mounts: invalid format: :x", None),
            (
                "devpts:/x",
                src_msg,
                Some("could not add mount entry: devpts:/x"),
            ),
            (
                "proc:/x",
                src_msg,
                Some("could not add mount entry: proc:/x"),
            ),
            (
                "none:/x",
                src_msg,
                Some("could not add mount entry: none:/x"),
            ),
            (
                "tmpfs",
                dst_msg,
                Some("could not add mount entry: tmpfs:tmpfs"),
            ),
            (
                "umount",
                dst_msg,
                Some("could not add mount entry: umount:umount"),
            ),
            (
                "/tmp:mnt",
                dst_msg,
                Some("could not add mount entry: /tmp:mnt"),
            ),
            (
                "/a:b/..",
                dst_msg,
                Some("could not add mount entry: /a:b/.."),
            ),
            (
                "/a:/b:ro+x y",
                "--container-mounts: invalid mount flags: ro+x y",
                Some("could not add mount entry: /a:/b"),
            ),
            (
                "/a:/b:ro\nrw",
                "--container-mounts: invalid mount flags: ro\\nrw",
                Some("could not add mount entry: /a:/b"),
            ),
            (
                "/a:/b:ro\t",
                "--container-mounts: invalid mount flags: ro\\t",
                Some("could not add mount entry: /a:/b"),
            ),
        ];
        for (arg, msg, followup) in cases {
            let err = parse_mounts(arg).unwrap_err();
            assert_eq!(err.to_string(), *msg, "{arg:?}");
            assert_eq!(err.followup().as_deref(), *followup, "{arg:?}");
        }
    }

    #[test]
    fn add_unique_skips_identical_entries() {
        let mut list = Vec::new();
        for e in parse_mounts("/a:/a,/b:/b,/a:/a,/a:/a:ro").unwrap() {
            add_unique(&mut list, e);
        }
        assert_eq!(
            list,
            vec![
                entry("/a", "/a", "x-create=auto,rbind"),
                entry("/b", "/b", "x-create=auto,rbind"),
                entry("/a", "/a", "x-create=auto,rbind,ro"),
            ]
        );
    }

    #[test]
    fn fstab_lines() {
        let cases = [
            (
                entry("/a", "/b", "x-create=auto,rbind"),
                "/a /b x-create=auto,rbind",
            ),
            (
                entry("/a b\tc\nd\\e", "/x y", "x-create=auto,rbind,ro"),
                "/a\\040b\\011c\\012d\\134e /x\\040y x-create=auto,rbind,ro",
            ),
            (
                entry("/$(x)\"'`;", "/t", "x-detach"),
                "/$(x)\"'`; /t x-detach",
            ),
        ];
        for (e, line) in cases {
            assert_eq!(e.fstab_line(), line);
        }
    }

    #[test]
    fn flags_safety() {
        assert!(entry("/a", "/a", "x-create=auto,rbind").flags_are_safe());
        assert!(!entry("/a", "/a", "").flags_are_safe());
        assert!(!entry("/a", "/a", "ro rw").flags_are_safe());
        assert!(!entry("/a", "/a", "ro\n/x /y").flags_are_safe());
    }

    #[test]
    fn batch_script() {
        assert_eq!(
            batch_script_mount("/var/spool/slurmd/job00042/slurm_script"),
            entry(
                "/var/spool/slurmd/job00042/slurm_script",
                "/var/spool/slurmd/job00042/slurm_script",
                "x-create=auto,rbind,x-create=file,bind,ro,nosuid,nodev,private"
            )
        );
    }
}
