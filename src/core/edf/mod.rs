//! Environment definition files (EDF): `--environment=NAME|PATH` and `PYXIS_ENVIRONMENT`
//! name a TOML file holding the image, mounts, working directory, writability,
//! entrypoint choice and environment of a container, compatible with CSCS's Container
//! Engine where the two overlap (`image`, `mounts`, `workdir`, `writable`, `entrypoint`,
//! `[env]`, `base_environment` inheritance up to 10 levels, `${VAR}` from the host
//! environment).
//!
//! Pure: parsing (`parse.rs`), inheritance and expansion (`resolve.rs`), and applying the
//! result under the command line's options ([`apply`]). Finding and reading the files as
//! the user is `crate::sys::edf`; srun/sbatch/salloc and slurmstepd both resolve the file
//! in `init_post_opt`, so a mistake is reported before the job starts and the node sees
//! the same file.

mod parse;
mod resolve;

#[cfg(test)]
pub use parse::{parse, Layer};
#[cfg(test)]
pub use resolve::expand;
pub use resolve::resolve;

use crate::core::args::{ArgError, Args, OptionId};
use crate::core::mount;
use crate::core::text::printable;

/// Largest file read, in bytes.
pub const MAX_FILE_SIZE: u64 = 64 * 1024;

/// Deepest `base_environment` chain (CSCS's limit).
pub const MAX_DEPTH: usize = 10;

/// Most files read for one environment, counting a base every time it is inherited:
/// without it, ten levels each naming the next file a few times over read it
/// exponentially often (slurmstepd, as root, looping and growing until the node ran
/// out of memory).
pub const MAX_FILES: usize = 64;

/// The resolved environment: every layer merged, variables expanded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edf {
    pub image: Option<String>,
    /// `SRC:DST[:FLAGS]` entries, inherited ones first.
    pub mounts: Vec<String>,
    pub workdir: Option<String>,
    pub writable: Option<bool>,
    pub entrypoint: Option<bool>,
    /// `[env]`, inherited entries first, a later value replacing an earlier one.
    pub env: Vec<(String, String)>,
}

/// Why an environment file could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdfError {
    /// `--environment=NAME` found nowhere on the search path.
    #[error("--environment: {}: no such environment file (searched {})", printable(.name), printable(.searched))]
    NotFound { name: String, searched: String },
    /// The file exists but could not be read.
    #[error("--environment: {}: {}", printable(.file), printable(.message))]
    Read { file: String, message: String },
    /// A TOML syntax error, an unknown key or a value of the wrong type.
    #[error("--environment: {}:{line}: {}: {}", printable(.file), printable(.key), printable(.message))]
    Invalid {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
    /// `base_environment` chains deeper than [`MAX_DEPTH`] or in a cycle.
    #[error("--environment: {}: base_environment: {}", printable(.file), printable(.message))]
    Inheritance { file: String, message: String },
}

/// Fills what the command line left unset from `edf` (§ "CLI options override file
/// values"): image, workdir, writable and entrypoint only when unset; the file's mounts
/// come before the command line's; `[env]` is kept for the container's environment.
pub fn apply(args: &mut Args, edf: &Edf) -> Result<(), ArgError> {
    if args.image.is_none() {
        if let Some(image) = &edf.image {
            args.apply(OptionId::Image, Some(image))?;
        }
    }
    if !edf.mounts.is_empty() {
        let mut mounts = Vec::new();
        for m in &edf.mounts {
            for entry in mount::parse_mounts(m)? {
                mount::add_unique(&mut mounts, entry);
            }
        }
        for entry in std::mem::take(&mut args.mounts) {
            mount::add_unique(&mut mounts, entry);
        }
        args.mounts = mounts;
    }
    if args.workdir.is_none() {
        args.workdir.clone_from(&edf.workdir);
    }
    if args.writable.is_none() {
        args.writable = edf.writable;
    }
    if args.entrypoint.is_none() {
        args.entrypoint = edf.entrypoint;
    }
    args.env_values.clone_from(&edf.env);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edf() -> Edf {
        Edf {
            image: Some("file-image".into()),
            mounts: vec!["/a:/a".into(), "/b:/b:ro".into()],
            workdir: Some("/w".into()),
            writable: Some(true),
            entrypoint: Some(false),
            env: vec![("A".into(), "1".into())],
        }
    }

    #[test]
    fn file_values_fill_what_the_command_line_left_unset() {
        let mut args = Args::default();
        apply(&mut args, &edf()).unwrap();
        assert_eq!(args.image.as_deref(), Some("file-image"));
        assert_eq!(args.workdir.as_deref(), Some("/w"));
        assert_eq!(args.writable, Some(true));
        assert_eq!(args.entrypoint, Some(false));
        assert_eq!(args.mounts.len(), 2);
        assert_eq!(args.env_values, vec![("A".to_owned(), "1".to_owned())]);
        assert!(args.enabled());
    }

    #[test]
    fn the_command_line_wins_and_mounts_merge() {
        let mut args = Args::default();
        args.apply(OptionId::Image, Some("cli")).unwrap();
        args.apply(OptionId::Workdir, Some("/cli")).unwrap();
        args.apply(OptionId::Readonly, None).unwrap();
        args.apply(OptionId::Entrypoint, None).unwrap();
        args.apply(OptionId::Mounts, Some("/c:/c,/a:/a")).unwrap();
        apply(&mut args, &edf()).unwrap();
        assert_eq!(args.image.as_deref(), Some("cli"));
        assert_eq!(args.workdir.as_deref(), Some("/cli"));
        assert_eq!(args.writable, Some(false));
        assert_eq!(args.entrypoint, Some(true));
        let dsts: Vec<&str> = args.mounts.iter().map(|m| m.target.as_str()).collect();
        assert_eq!(dsts, ["/a", "/b", "/c"], "file first, duplicates once");
    }

    #[test]
    fn messages_are_one_line() {
        let e = EdfError::Invalid {
            file: "/h/\x1b.toml".into(),
            line: 2,
            key: "a\nb".into(),
            message: "m\rx".into(),
        };
        assert_eq!(
            e.to_string(),
            "--environment: /h/\\u{1b}.toml:2: a\\nb: m\\rx"
        );
    }

    #[test]
    fn bad_file_values_are_option_errors() {
        let mut args = Args::default();
        let bad = Edf {
            mounts: vec!["devpts:/x".into()],
            ..Edf::default()
        };
        assert!(apply(&mut args, &bad).is_err());
    }
}
