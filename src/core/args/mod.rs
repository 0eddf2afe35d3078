//! The `--container-*` options: their validation and the per-step option record they
//! fill. The registration table is in `options.rs`, the `PYXIS_CONTAINER_*` aliases in
//! `env.rs`.
//!
//! Decides what each option accepts and the exact error text for what it
//! rejects (behaviour spec §4.1, §4.2), how `PYXIS_CONTAINER_*` variables fill
//! options the command line left unset (§4.5), whether the step is
//! containerised at all and which "ignoring" warnings to print (§4.4). Used by
//! `src/spank` to register the options and by the option callbacks and
//! `init_post_opt` of srun, sbatch/salloc and slurmstepd (`src/hooks`).
//!
//! Values are bytes, as in pyxis: an argument or a `PYXIS_CONTAINER_*` value that is
//! not UTF-8 is mapped losslessly into the `String`s here ([`crate::core::bytes`]), so
//! image paths, mount sources and targets, the workdir and the save path reach enroot
//! byte for byte; lengths are counted in the original bytes.
//!
//! Deliberate differences from pyxis 0.24.0, each a fix of a weak spot of
//! §9 that no valid input depends on:
//! * W5: `--container-env` names must be shell identifiers.
//! * W8: `--container-name` names may not contain `/`, whitespace or control
//!   characters, may not be `.`/`..`, must be UTF-8 and are limited to 200 bytes
//!   (a name is also a lock file name and is matched in `enroot list` output).
//! * W25: a repeated `--container-name` is compared with the stored *full*
//!   argument, so an identical re-delivery of `foo:exec` is accepted and
//!   `foo` followed by `foo:create` is rejected.
//! * `--container-save` also rejects `.`, `..` and paths ending in `/.` or
//!   `/..` as directories (upstream issue #151).
//! * `--container-image` is limited to 4095 bytes (PATH_MAX - 1), the most
//!   the remote side can read back.
//! * W16: a `PYXIS_CONTAINER_*` value longer than 4095 bytes is reported and
//!   ignored in every context (pyxis silently dropped it on the node only).
//! * A rejected multi-element argument (`--container-mounts`,
//!   `--container-env`, `--container-unshare`) changes nothing; pyxis kept
//!   the elements before the bad one.

mod env;
mod options;

use thiserror::Error;

#[cfg(test)]
pub use options::spec;
pub use options::{OptionId, OptionSpec, OPTIONS};

use crate::core::bytes;
use crate::core::mount::{self, MountEntry, MountError};
use crate::core::text::printable;

/// PATH_MAX - 1: the longest string the remote side can read back through
/// `spank_getenv` into a PATH_MAX buffer.
pub const MAX_VALUE_LEN: usize = 4095;

/// Longest accepted `--container-name` NAME, in bytes (W8).
pub const MAX_NAME_LEN: usize = 200;

/// The `:FLAG` part of `--container-name=NAME[:FLAG]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameFlag {
    /// Attach if running, reuse if present, create otherwise (default).
    Auto,
    /// Fail if the container already exists.
    Create,
    /// Fail unless the container is running; attach to it.
    Exec,
    /// Never attach to a running container; start a new one from the rootfs.
    NoExec,
}

impl NameFlag {
    /// Parses a non-empty flag; `None` for anything but the four names.
    fn parse(s: &str) -> Option<NameFlag> {
        match s {
            "auto" => Some(NameFlag::Auto),
            "create" => Some(NameFlag::Create),
            "exec" => Some(NameFlag::Exec),
            "no_exec" => Some(NameFlag::NoExec),
            _ => None,
        }
    }
}

/// A parsed `--container-name` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerName {
    /// NAME, without the flag.
    pub name: String,
    /// FLAG, `Auto` when absent or empty.
    pub flag: NameFlag,
    /// The full argument as given, for the repeat check (W25).
    pub raw: String,
}

/// `--container-unshare` namespaces (accumulating; nothing un-sets them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Unshare {
    /// New network namespace.
    pub net: bool,
    /// New IPC namespace.
    pub ipc: bool,
    /// New UTS namespace.
    pub uts: bool,
}

impl Unshare {
    /// True when any namespace was requested.
    pub fn any(&self) -> bool {
        self.net || self.ipc || self.uts
    }
}

/// Everything the user asked for with `--container-*` and `PYXIS_CONTAINER_*`.
/// `None` in a tri-state means "not specified" (pyxis's -1).
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub struct Args {
    /// `--container-image`, verbatim.
    pub image: Option<String>,
    /// `--container-mounts`, accumulated without duplicates.
    pub mounts: Vec<MountEntry>,
    /// `--container-workdir`.
    pub workdir: Option<String>,
    /// `--container-name`.
    pub name: Option<ContainerName>,
    /// `--container-save`.
    pub save: Option<String>,
    /// `--[no-]container-mount-home`.
    pub mount_home: Option<bool>,
    /// `--[no-]container-remap-root`.
    pub remap_root: Option<bool>,
    /// `--[no-]container-entrypoint`.
    pub entrypoint: Option<bool>,
    /// `--container-entrypoint-log` (`Some(false)` only from the environment).
    pub entrypoint_log: Option<bool>,
    /// `--container-writable` (`Some(true)`) / `--container-readonly` (`Some(false)`).
    pub writable: Option<bool>,
    /// `--container-env` names, accumulated without duplicates.
    pub env_names: Vec<String>,
    /// `--container-unshare`.
    pub unshare: Unshare,
    /// `--environment` (or `PYXIS_ENVIRONMENT`): the file's name or path, verbatim.
    pub environment: Option<String>,
    /// `[env]` of the environment file: set in the container, over the image's values.
    pub env_values: Vec<(String, String)>,
}

/// Why an option argument (or a `PYXIS_CONTAINER_*` value) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ArgError {
    /// Missing or empty argument.
    #[error("--{option}: argument required")]
    ArgumentRequired {
        /// Option name without dashes.
        option: &'static str,
    },
    /// A single-valued option given twice with different values.
    #[error("--{option} specified multiple times")]
    SpecifiedMultipleTimes {
        /// Option name without dashes.
        option: &'static str,
    },
    /// Both sides of an on/off pair.
    #[error("both --{on} and --{off} were specified")]
    BothSpecified {
        /// The "on" option name.
        on: &'static str,
        /// The "off" option name.
        off: &'static str,
    },
    /// `--container-image` longer than PATH_MAX - 1.
    #[error("--container-image: argument too long")]
    ImageTooLong,
    /// `--container-image=HOST:PORT`: a registry without an image, often an `#SBATCH`
    /// line cut at its `#`.
    #[error("{}", crate::core::hints::registry_address_message(&printable(.0)))]
    RegistryOnly(String),
    /// A `--container-mounts` error.
    #[error(transparent)]
    Mount(#[from] MountError),
    /// `--container-name=:FLAG`.
    #[error("--container-name: empty name")]
    EmptyName,
    /// `--container-name=NAME:bogus`.
    #[error("--container-name: flag must be \"auto\", \"create\", \"exec\" or \"no_exec\"")]
    InvalidNameFlag,
    /// A name enroot cannot store or pyxis cannot find again (W8).
    #[error("--container-name: invalid name: {}", printable(.0))]
    InvalidName(String),
    /// `--container-save` names a directory.
    #[error("--container-save: target is a directory")]
    SaveIsDirectory,
    /// `--container-env` with an empty element.
    #[error("--container-env: invalid format: {}", printable(.0))]
    EnvInvalidFormat(String),
    /// `--container-env` element that is not a shell identifier (W5).
    #[error("--container-env: invalid variable name: {}", printable(.0))]
    EnvInvalidName(String),
    /// `--container-unshare` with an empty element.
    #[error("--container-unshare: empty namespace argument")]
    UnshareEmpty,
    /// `--container-unshare` element other than net/ipc/uts.
    #[error("--container-unshare: unknown namespace '{}'", printable(.0))]
    UnshareUnknown(String),
    /// A `PYXIS_CONTAINER_*` value the node could not read back (W16).
    #[error("ignoring {var}: value longer than 4095 bytes")]
    EnvValueTooLong {
        /// The variable name.
        var: &'static str,
    },
}

impl ArgError {
    /// Every line pyxis logs for this error, in order (a failed mount entry
    /// adds `could not add mount entry: <src>:<dst>`).
    pub fn log_lines(&self) -> Vec<String> {
        let mut lines = vec![self.to_string()];
        if let ArgError::Mount(m) = self {
            lines.extend(m.followup());
        }
        lines
    }
}

/// pyxis's boolean parser, case-sensitive: `1 true yes y` / `0 false no n`.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "true" | "yes" | "y" => Some(true),
        "0" | "false" | "no" | "n" => Some(false),
        _ => None,
    }
}

/// True for a POSIX shell identifier `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => {}
        _ => return false,
    }
    bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// True when `name` can be stored by enroot and found again by pyxis (W8); a name
/// must be UTF-8 text, like the rest of the name rules a difference from pyxis.
fn is_valid_container_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
        && bytes::is_exact_utf8(name)
        && !name
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
}

/// True when a `--container-save` value can only name a directory.
fn names_directory(path: &str) -> bool {
    path.ends_with('/')
        || path == "."
        || path == ".."
        || path.ends_with("/.")
        || path.ends_with("/..")
}

/// Records `val` in an on/off tri-state, rejecting the opposite of an earlier value.
fn set_tristate(
    slot: &mut Option<bool>,
    val: bool,
    on: OptionId,
    off: OptionId,
) -> Result<(), ArgError> {
    match *slot {
        Some(old) if old != val => Err(ArgError::BothSpecified {
            on: on.name(),
            off: off.name(),
        }),
        _ => {
            *slot = Some(val);
            Ok(())
        }
    }
}

/// Records a single-valued string option: a repeat of the same value is
/// accepted (Slurm may call a callback twice), a different one is not.
fn set_once(slot: &mut Option<String>, value: &str, id: OptionId) -> Result<(), ArgError> {
    match slot {
        Some(old) if old == value => Ok(()),
        Some(_) => Err(ArgError::SpecifiedMultipleTimes { option: id.name() }),
        None => {
            *slot = Some(value.to_owned());
            Ok(())
        }
    }
}

/// The argument of an option that requires one; empty counts as missing.
fn required(id: OptionId, arg: Option<&str>) -> Result<&str, ArgError> {
    match arg {
        Some(a) if !a.is_empty() => Ok(a),
        _ => Err(ArgError::ArgumentRequired { option: id.name() }),
    }
}

impl Args {
    /// Applies one option as Slurm delivers it (§4.2). `arg` is ignored for
    /// the flag options.
    pub fn apply(&mut self, id: OptionId, arg: Option<&str>) -> Result<(), ArgError> {
        match id {
            OptionId::Image => {
                let a = required(id, arg)?;
                if bytes::encoded_len(a) > MAX_VALUE_LEN {
                    return Err(ArgError::ImageTooLong);
                }
                if crate::core::hints::is_registry_address(a) {
                    return Err(ArgError::RegistryOnly(a.to_owned()));
                }
                set_once(&mut self.image, a, id)
            }
            OptionId::Mounts => {
                let a = arg.unwrap_or_default();
                for entry in mount::parse_mounts(a)? {
                    mount::add_unique(&mut self.mounts, entry);
                }
                Ok(())
            }
            OptionId::Workdir => {
                let a = required(id, arg)?;
                set_once(&mut self.workdir, a, id)
            }
            OptionId::Name => self.apply_name(required(id, arg)?),
            OptionId::Save => {
                let a = required(id, arg)?;
                if names_directory(a) {
                    return Err(ArgError::SaveIsDirectory);
                }
                set_once(&mut self.save, a, id)
            }
            OptionId::MountHome | OptionId::NoMountHome => set_tristate(
                &mut self.mount_home,
                id == OptionId::MountHome,
                OptionId::MountHome,
                OptionId::NoMountHome,
            ),
            OptionId::RemapRoot | OptionId::NoRemapRoot => set_tristate(
                &mut self.remap_root,
                id == OptionId::RemapRoot,
                OptionId::RemapRoot,
                OptionId::NoRemapRoot,
            ),
            OptionId::Entrypoint | OptionId::NoEntrypoint => set_tristate(
                &mut self.entrypoint,
                id == OptionId::Entrypoint,
                OptionId::Entrypoint,
                OptionId::NoEntrypoint,
            ),
            OptionId::EntrypointLog => {
                self.entrypoint_log = Some(true);
                Ok(())
            }
            OptionId::Writable | OptionId::Readonly => set_tristate(
                &mut self.writable,
                id == OptionId::Writable,
                OptionId::Writable,
                OptionId::Readonly,
            ),
            OptionId::Env => self.apply_env_names(required(id, arg)?),
            OptionId::Unshare => self.apply_unshare(required(id, arg)?),
            OptionId::Environment => {
                let a = required(id, arg)?;
                set_once(&mut self.environment, a, id)
            }
        }
    }

    /// `--container-name=NAME[:FLAG]`.
    fn apply_name(&mut self, raw: &str) -> Result<(), ArgError> {
        if let Some(old) = &self.name {
            if old.raw == raw {
                return Ok(());
            }
            return Err(ArgError::SpecifiedMultipleTimes {
                option: OptionId::Name.name(),
            });
        }
        let (name, flag) = match raw.split_once(':') {
            Some((name, flag)) => (name, flag),
            None => (raw, ""),
        };
        if name.is_empty() {
            return Err(ArgError::EmptyName);
        }
        let flag = if flag.is_empty() {
            NameFlag::Auto
        } else {
            NameFlag::parse(flag).ok_or(ArgError::InvalidNameFlag)?
        };
        if !is_valid_container_name(name) {
            return Err(ArgError::InvalidName(name.to_owned()));
        }
        self.name = Some(ContainerName {
            name: name.to_owned(),
            flag,
            raw: raw.to_owned(),
        });
        Ok(())
    }

    /// `--container-env=NAME[,NAME...]`.
    fn apply_env_names(&mut self, arg: &str) -> Result<(), ArgError> {
        let names: Vec<&str> = arg.split(',').collect();
        if names.iter().any(|n| n.is_empty()) {
            return Err(ArgError::EnvInvalidFormat(arg.to_owned()));
        }
        if let Some(bad) = names.iter().find(|n| !is_identifier(n)) {
            return Err(ArgError::EnvInvalidName((*bad).to_owned()));
        }
        for name in names {
            if !self.env_names.iter().any(|n| n == name) {
                self.env_names.push(name.to_owned());
            }
        }
        Ok(())
    }

    /// `--container-unshare=NS[,NS...]`.
    fn apply_unshare(&mut self, arg: &str) -> Result<(), ArgError> {
        let mut wanted = self.unshare;
        for ns in arg.split(',') {
            match ns {
                "" => return Err(ArgError::UnshareEmpty),
                "net" => wanted.net = true,
                "ipc" => wanted.ipc = true,
                "uts" => wanted.uts = true,
                other => return Err(ArgError::UnshareUnknown(other.to_owned())),
            }
        }
        self.unshare = wanted;
        Ok(())
    }

    /// A step is containerised iff an image or a container name is set (§4.4).
    pub fn enabled(&self) -> bool {
        self.image.is_some() || self.name.is_some()
    }

    /// Whether the image entrypoint runs: the option, else the config default (§5.17).
    pub fn execute_entrypoint(&self, config_default: bool) -> bool {
        self.entrypoint.unwrap_or(config_default)
    }

    /// The §4.4 "ignoring" lines (without `pyxis: `) for options set on a
    /// step that is not containerised; empty when [`Self::enabled`].
    pub fn ignored_option_warnings(&self) -> Vec<String> {
        if self.enabled() {
            return Vec::new();
        }
        let set: [(bool, &str); 9] = [
            (!self.mounts.is_empty(), "--container-mounts"),
            (self.workdir.is_some(), "--container-workdir"),
            (self.save.is_some(), "--container-save"),
            (self.mount_home.is_some(), "--[no-]container-mount-home"),
            (self.remap_root.is_some(), "--[no-]container-remap-root"),
            (self.entrypoint.is_some(), "--[no-]container-entrypoint"),
            (self.entrypoint_log.is_some(), "--container-entrypoint-log"),
            (self.writable == Some(false), "--container-readonly"),
            (self.writable == Some(true), "--container-writable"),
        ];
        set.iter()
            .filter(|(is_set, _)| *is_set)
            .map(|(_, opt)| {
                format!(
                    "ignoring {opt} because neither --container-image nor --container-name is set"
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
