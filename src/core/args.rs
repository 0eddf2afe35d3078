//! The `--container-*` options: their registration table, their validation and
//! the per-step option record they fill.
//!
//! Decides what each option accepts and the exact error text for what it
//! rejects (behaviour spec §4.1, §4.2), how `PYXIS_CONTAINER_*` variables fill
//! options the command line left unset (§4.5), whether the step is
//! containerised at all and which "ignoring" warnings to print (§4.4). Used by
//! `src/spank` to register the options and by the option callbacks and
//! `init_post_opt` of srun, sbatch/salloc and slurmstepd (`src/hooks`).
//!
//! Deliberate differences from pyxis 0.24.0, each a fix of a weak spot of
//! §9 that no valid input depends on:
//! * W5: `--container-env` names must be shell identifiers.
//! * W8: `--container-name` names may not contain `/`, whitespace or control
//!   characters, may not be `.`/`..` and are limited to 200 bytes.
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

use thiserror::Error;

use crate::core::mount::{self, MountEntry, MountError};

/// PATH_MAX - 1: the longest string the remote side can read back through
/// `spank_getenv` into a PATH_MAX buffer.
pub const MAX_VALUE_LEN: usize = 4095;

/// Longest accepted `--container-name` NAME, in bytes (W8).
pub const MAX_NAME_LEN: usize = 200;

/// The 16 options, in registration (and `srun --help`) order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionId {
    /// `--container-image`
    Image,
    /// `--container-mounts`
    Mounts,
    /// `--container-workdir`
    Workdir,
    /// `--container-name`
    Name,
    /// `--container-save`
    Save,
    /// `--container-mount-home`
    MountHome,
    /// `--no-container-mount-home`
    NoMountHome,
    /// `--container-remap-root`
    RemapRoot,
    /// `--no-container-remap-root`
    NoRemapRoot,
    /// `--container-entrypoint`
    Entrypoint,
    /// `--no-container-entrypoint`
    NoEntrypoint,
    /// `--container-entrypoint-log`
    EntrypointLog,
    /// `--container-writable`
    Writable,
    /// `--container-readonly`
    Readonly,
    /// `--container-env`
    Env,
    /// `--container-unshare`
    Unshare,
}

impl OptionId {
    /// Every option in §4.1 order; `index` is the position in this array.
    pub const ALL: [OptionId; 16] = [
        OptionId::Image,
        OptionId::Mounts,
        OptionId::Workdir,
        OptionId::Name,
        OptionId::Save,
        OptionId::MountHome,
        OptionId::NoMountHome,
        OptionId::RemapRoot,
        OptionId::NoRemapRoot,
        OptionId::Entrypoint,
        OptionId::NoEntrypoint,
        OptionId::EntrypointLog,
        OptionId::Writable,
        OptionId::Readonly,
        OptionId::Env,
        OptionId::Unshare,
    ];

    /// The option registered with `val == i` (0-based position in [`Self::ALL`]).
    pub fn from_index(i: i32) -> Option<OptionId> {
        usize::try_from(i)
            .ok()
            .and_then(|i| Self::ALL.get(i))
            .copied()
    }

    /// 0-based position in [`Self::ALL`], used as the SPANK `val`.
    pub fn index(self) -> i32 {
        match self {
            OptionId::Image => 0,
            OptionId::Mounts => 1,
            OptionId::Workdir => 2,
            OptionId::Name => 3,
            OptionId::Save => 4,
            OptionId::MountHome => 5,
            OptionId::NoMountHome => 6,
            OptionId::RemapRoot => 7,
            OptionId::NoRemapRoot => 8,
            OptionId::Entrypoint => 9,
            OptionId::NoEntrypoint => 10,
            OptionId::EntrypointLog => 11,
            OptionId::Writable => 12,
            OptionId::Readonly => 13,
            OptionId::Env => 14,
            OptionId::Unshare => 15,
        }
    }

    /// The option name without leading dashes.
    pub fn name(self) -> &'static str {
        spec(self).name
    }
}

/// What `spank_option_register` needs for one option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionSpec {
    /// Which option this is.
    pub id: OptionId,
    /// Name without leading dashes, e.g. `container-image`.
    pub name: &'static str,
    /// Argument placeholder shown by `--help`; `Some` iff the option takes an argument.
    pub arginfo: Option<&'static str>,
    /// Usage text shown by `--help` (verbatim from pyxis).
    pub usage: &'static str,
}

impl OptionSpec {
    /// Whether the option takes an argument (`has_arg` for Slurm).
    pub fn has_arg(&self) -> bool {
        self.arginfo.is_some()
    }
}

/// The registration table, verbatim names, arginfo and usage texts of §4.1.
pub const OPTIONS: [OptionSpec; 16] = [
    OptionSpec {
        id: OptionId::Image,
        name: "container-image",
        arginfo: Some("[USER@][REGISTRY#]IMAGE[:TAG]|PATH"),
        usage: "[pyxis] the image to use for the container filesystem. Can be either a docker \
                image given as an enroot URI, or a path to a squashfs file on the remote host \
                filesystem.",
    },
    OptionSpec {
        id: OptionId::Mounts,
        name: "container-mounts",
        arginfo: Some("SRC:DST[:FLAGS][,SRC:DST...]"),
        usage: "[pyxis] bind mount[s] inside the container. Mount flags are separated with \
                \"+\", e.g. \"ro+rprivate\"",
    },
    OptionSpec {
        id: OptionId::Workdir,
        name: "container-workdir",
        arginfo: Some("PATH"),
        usage: "[pyxis] working directory inside the container",
    },
    OptionSpec {
        id: OptionId::Name,
        name: "container-name",
        arginfo: Some("NAME"),
        usage: "[pyxis] name to use for saving and loading the container on the host. Unnamed \
                containers are removed after the slurm task is complete; named containers are \
                not. If a container with this name already exists, the existing container is \
                used and the import is skipped.",
    },
    OptionSpec {
        id: OptionId::Save,
        name: "container-save",
        arginfo: Some("PATH"),
        usage: "[pyxis] Save the container state to a squashfs file on the remote host \
                filesystem.",
    },
    OptionSpec {
        id: OptionId::MountHome,
        name: "container-mount-home",
        arginfo: None,
        usage: "[pyxis] bind mount the user's home directory. System-level enroot settings \
                might cause this directory to be already-mounted.",
    },
    OptionSpec {
        id: OptionId::NoMountHome,
        name: "no-container-mount-home",
        arginfo: None,
        usage: "[pyxis] do not bind mount the user's home directory",
    },
    OptionSpec {
        id: OptionId::RemapRoot,
        name: "container-remap-root",
        arginfo: None,
        usage: "[pyxis] ask to be remapped to root inside the container. Does not grant \
                elevated system permissions, despite appearances.",
    },
    OptionSpec {
        id: OptionId::NoRemapRoot,
        name: "no-container-remap-root",
        arginfo: None,
        usage: "[pyxis] do not remap to root inside the container",
    },
    OptionSpec {
        id: OptionId::Entrypoint,
        name: "container-entrypoint",
        arginfo: None,
        usage: "[pyxis] execute the entrypoint from the container image",
    },
    OptionSpec {
        id: OptionId::NoEntrypoint,
        name: "no-container-entrypoint",
        arginfo: None,
        usage: "[pyxis] do not execute the entrypoint from the container image",
    },
    OptionSpec {
        id: OptionId::EntrypointLog,
        name: "container-entrypoint-log",
        arginfo: None,
        usage: "[pyxis] print the output of the entrypoint script",
    },
    OptionSpec {
        id: OptionId::Writable,
        name: "container-writable",
        arginfo: None,
        usage: "[pyxis] make the container filesystem writable",
    },
    OptionSpec {
        id: OptionId::Readonly,
        name: "container-readonly",
        arginfo: None,
        usage: "[pyxis] make the container filesystem read-only",
    },
    OptionSpec {
        id: OptionId::Env,
        name: "container-env",
        arginfo: Some("NAME[,NAME...]"),
        usage: "[pyxis] names of environment variables to override with the host environment \
                and set at the entrypoint. By default, all exported host environment variables \
                are set in the container after the entrypoint is run, but their existing \
                values in the image take precedence; the variables specified with this flag \
                are preserved from the host and set before the entrypoint runs",
    },
    OptionSpec {
        id: OptionId::Unshare,
        name: "container-unshare",
        arginfo: Some("NS[,NS...]"),
        usage: "[pyxis] create new namespaces for the container. Supported: net, ipc, uts.",
    },
];

/// The registration entry of `id`.
pub fn spec(id: OptionId) -> &'static OptionSpec {
    // Constant indices into a const array: checked at compile time.
    match id {
        OptionId::Image => &OPTIONS[0],
        OptionId::Mounts => &OPTIONS[1],
        OptionId::Workdir => &OPTIONS[2],
        OptionId::Name => &OPTIONS[3],
        OptionId::Save => &OPTIONS[4],
        OptionId::MountHome => &OPTIONS[5],
        OptionId::NoMountHome => &OPTIONS[6],
        OptionId::RemapRoot => &OPTIONS[7],
        OptionId::NoRemapRoot => &OPTIONS[8],
        OptionId::Entrypoint => &OPTIONS[9],
        OptionId::NoEntrypoint => &OPTIONS[10],
        OptionId::EntrypointLog => &OPTIONS[11],
        OptionId::Writable => &OPTIONS[12],
        OptionId::Readonly => &OPTIONS[13],
        OptionId::Env => &OPTIONS[14],
        OptionId::Unshare => &OPTIONS[15],
    }
}

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
    /// The flag as the user writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            NameFlag::Auto => "auto",
            NameFlag::Create => "create",
            NameFlag::Exec => "exec",
            NameFlag::NoExec => "no_exec",
        }
    }

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

/// Renders user text for a one-line log message: control characters are
/// escaped so a value cannot forge extra log lines; everything else is kept.
pub(crate) fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
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

/// True when `name` can be stored by enroot and found again by pyxis (W8).
fn is_valid_container_name(name: &str) -> bool {
    name.len() <= MAX_NAME_LEN
        && name != "."
        && name != ".."
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

// The `PYXIS_CONTAINER_*` variables of §4.5, in evaluation order.
const ENV_IMAGE: &str = "PYXIS_CONTAINER_IMAGE";
const ENV_MOUNTS: &str = "PYXIS_CONTAINER_MOUNTS";
const ENV_WORKDIR: &str = "PYXIS_CONTAINER_WORKDIR";
const ENV_NAME: &str = "PYXIS_CONTAINER_NAME";
const ENV_SAVE: &str = "PYXIS_CONTAINER_SAVE";
const ENV_MOUNT_HOME: &str = "PYXIS_CONTAINER_MOUNT_HOME";
const ENV_REMAP_ROOT: &str = "PYXIS_CONTAINER_REMAP_ROOT";
const ENV_ENTRYPOINT: &str = "PYXIS_CONTAINER_ENTRYPOINT";
const ENV_ENTRYPOINT_LOG: &str = "PYXIS_CONTAINER_ENTRYPOINT_LOG";
const ENV_WRITABLE: &str = "PYXIS_CONTAINER_WRITABLE";
const ENV_READONLY: &str = "PYXIS_CONTAINER_READONLY";
const ENV_ENV: &str = "PYXIS_CONTAINER_ENV";
const ENV_UNSHARE: &str = "PYXIS_CONTAINER_UNSHARE";

/// Every `PYXIS_CONTAINER_*` variable read by [`Args::apply_env`], in order.
pub const PYXIS_ENV_VARS: [&str; 13] = [
    ENV_IMAGE,
    ENV_MOUNTS,
    ENV_WORKDIR,
    ENV_NAME,
    ENV_SAVE,
    ENV_MOUNT_HOME,
    ENV_REMAP_ROOT,
    ENV_ENTRYPOINT,
    ENV_ENTRYPOINT_LOG,
    ENV_WRITABLE,
    ENV_READONLY,
    ENV_ENV,
    ENV_UNSHARE,
];

impl Args {
    /// Applies one option as Slurm delivers it (§4.2). `arg` is ignored for
    /// the flag options.
    pub fn apply(&mut self, id: OptionId, arg: Option<&str>) -> Result<(), ArgError> {
        match id {
            OptionId::Image => {
                let a = required(id, arg)?;
                if a.len() > MAX_VALUE_LEN {
                    return Err(ArgError::ImageTooLong);
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

    /// Applies `PYXIS_CONTAINER_*` after the command line (§4.5): each
    /// variable only fills an option that is still unset, in table order.
    /// Errors are returned for printing and never fail the command; boolean
    /// values that do not parse are ignored silently; WRITABLE beats READONLY.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Vec<ArgError> {
        let mut errors = Vec::new();
        let get = &get;
        if self.image.is_none() {
            self.apply_env_string(get, ENV_IMAGE, OptionId::Image, &mut errors);
        }
        if self.mounts.is_empty() {
            self.apply_env_string(get, ENV_MOUNTS, OptionId::Mounts, &mut errors);
        }
        if self.workdir.is_none() {
            self.apply_env_string(get, ENV_WORKDIR, OptionId::Workdir, &mut errors);
        }
        if self.name.is_none() {
            self.apply_env_string(get, ENV_NAME, OptionId::Name, &mut errors);
        }
        if self.save.is_none() {
            self.apply_env_string(get, ENV_SAVE, OptionId::Save, &mut errors);
        }

        let bool_of = |var: &str| get(var).as_deref().and_then(parse_bool);
        if self.mount_home.is_none() {
            self.mount_home = bool_of(ENV_MOUNT_HOME);
        }
        if self.remap_root.is_none() {
            self.remap_root = bool_of(ENV_REMAP_ROOT);
        }
        if self.entrypoint.is_none() {
            self.entrypoint = bool_of(ENV_ENTRYPOINT);
        }
        if self.entrypoint_log.is_none() {
            self.entrypoint_log = bool_of(ENV_ENTRYPOINT_LOG);
        }
        if self.writable.is_none() {
            self.writable = bool_of(ENV_WRITABLE);
        }
        if self.writable.is_none() {
            self.writable = bool_of(ENV_READONLY).map(|readonly| !readonly);
        }

        if self.env_names.is_empty() {
            self.apply_env_string(get, ENV_ENV, OptionId::Env, &mut errors);
        }
        if !self.unshare.any() {
            self.apply_env_string(get, ENV_UNSHARE, OptionId::Unshare, &mut errors);
        }
        errors
    }

    /// One argument-taking `PYXIS_CONTAINER_*` variable, if set. Values the
    /// node could not read back (longer than [`MAX_VALUE_LEN`]) are
    /// reported and ignored in every context (W16).
    fn apply_env_string(
        &mut self,
        get: &impl Fn(&str) -> Option<String>,
        var: &'static str,
        id: OptionId,
        errors: &mut Vec<ArgError>,
    ) {
        let Some(value) = get(var) else {
            return;
        };
        let result = if value.len() > MAX_VALUE_LEN {
            Err(ArgError::EnvValueTooLong { var })
        } else {
            self.apply(id, Some(&value))
        };
        if let Err(e) = result {
            errors.push(e);
        }
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
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A sequence of option deliveries.
    type Steps<'a> = &'a [(OptionId, Option<&'a str>)];
    /// An environment as (name, value) pairs.
    type EnvPairs<'a> = &'a [(&'a str, &'a str)];

    fn applied(steps: &[(OptionId, Option<&str>)]) -> Result<Args, ArgError> {
        let mut args = Args::default();
        for (id, arg) in steps {
            args.apply(*id, *arg)?;
        }
        Ok(args)
    }

    fn err(steps: &[(OptionId, Option<&str>)]) -> String {
        applied(steps).unwrap_err().to_string()
    }

    #[test]
    fn table_is_consistent() {
        for (i, id) in OptionId::ALL.iter().enumerate() {
            let i = i32::try_from(i).unwrap();
            assert_eq!(id.index(), i);
            assert_eq!(OptionId::from_index(i), Some(*id));
            assert_eq!(spec(*id).id, *id);
            assert_eq!(OPTIONS[usize::try_from(i).unwrap()].id, *id);
            assert!(spec(*id).usage.starts_with("[pyxis] "));
        }
        assert_eq!(OptionId::from_index(-1), None);
        assert_eq!(OptionId::from_index(16), None);
        let with_arg: Vec<&str> = OPTIONS
            .iter()
            .filter(|o| o.has_arg())
            .map(|o| o.name)
            .collect();
        assert_eq!(
            with_arg,
            [
                "container-image",
                "container-mounts",
                "container-workdir",
                "container-name",
                "container-save",
                "container-env",
                "container-unshare"
            ]
        );
    }

    #[test]
    fn usage_texts_are_verbatim() {
        let cases = [
            (OptionId::Image, "[pyxis] the image to use for the container filesystem. Can be either a docker image given as an enroot URI, or a path to a squashfs file on the remote host filesystem."),
            (OptionId::Mounts, "[pyxis] bind mount[s] inside the container. Mount flags are separated with \"+\", e.g. \"ro+rprivate\""),
            (OptionId::Name, "[pyxis] name to use for saving and loading the container on the host. Unnamed containers are removed after the slurm task is complete; named containers are not. If a container with this name already exists, the existing container is used and the import is skipped."),
            (OptionId::Save, "[pyxis] Save the container state to a squashfs file on the remote host filesystem."),
            (OptionId::MountHome, "[pyxis] bind mount the user's home directory. System-level enroot settings might cause this directory to be already-mounted."),
            (OptionId::RemapRoot, "[pyxis] ask to be remapped to root inside the container. Does not grant elevated system permissions, despite appearances."),
            (OptionId::Env, "[pyxis] names of environment variables to override with the host environment and set at the entrypoint. By default, all exported host environment variables are set in the container after the entrypoint is run, but their existing values in the image take precedence; the variables specified with this flag are preserved from the host and set before the entrypoint runs"),
            (OptionId::Unshare, "[pyxis] create new namespaces for the container. Supported: net, ipc, uts."),
        ];
        for (id, usage) in cases {
            assert_eq!(spec(id).usage, usage);
        }
        assert_eq!(
            spec(OptionId::Image).arginfo,
            Some("[USER@][REGISTRY#]IMAGE[:TAG]|PATH")
        );
        assert_eq!(
            spec(OptionId::Mounts).arginfo,
            Some("SRC:DST[:FLAGS][,SRC:DST...]")
        );
    }

    #[test]
    fn single_valued_options() {
        use OptionId::*;
        let long = "a".repeat(4096);
        let max = "a".repeat(4095);
        let cases: &[(Steps, Result<(), &str>)] = &[
            (
                &[(Image, None)],
                Err("--container-image: argument required"),
            ),
            (
                &[(Image, Some(""))],
                Err("--container-image: argument required"),
            ),
            (&[(Image, Some("ubuntu")), (Image, Some("ubuntu"))], Ok(())),
            (
                &[(Image, Some("ubuntu")), (Image, Some("centos"))],
                Err("--container-image specified multiple times"),
            ),
            (
                &[(Image, Some(&long))],
                Err("--container-image: argument too long"),
            ),
            (&[(Image, Some(&max))], Ok(())),
            (
                &[(Workdir, Some(""))],
                Err("--container-workdir: argument required"),
            ),
            (
                &[(Workdir, Some("rel/dir")), (Workdir, Some("rel/dir"))],
                Ok(()),
            ),
            (
                &[(Workdir, Some("/a")), (Workdir, Some("/b"))],
                Err("--container-workdir specified multiple times"),
            ),
            (&[(Save, None)], Err("--container-save: argument required")),
            (
                &[(Save, Some("/"))],
                Err("--container-save: target is a directory"),
            ),
            (
                &[(Save, Some("./"))],
                Err("--container-save: target is a directory"),
            ),
            (
                &[(Save, Some("/tmp/"))],
                Err("--container-save: target is a directory"),
            ),
            (
                &[(Save, Some("."))],
                Err("--container-save: target is a directory"),
            ),
            (
                &[(Save, Some(".."))],
                Err("--container-save: target is a directory"),
            ),
            (
                &[(Save, Some("/tmp/."))],
                Err("--container-save: target is a directory"),
            ),
            (
                &[(Save, Some("a/.."))],
                Err("--container-save: target is a directory"),
            ),
            (&[(Save, Some("x.sqsh")), (Save, Some("x.sqsh"))], Ok(())),
            (&[(Save, Some(".x.sqsh"))], Ok(())),
            (&[(Save, Some("/tmp/..x"))], Ok(())),
            (
                &[(Save, Some("/a.sqsh")), (Save, Some("/b.sqsh"))],
                Err("--container-save specified multiple times"),
            ),
        ];
        for (steps, want) in cases {
            let got = applied(steps).map(|_| ()).map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_owned), "{steps:?}");
        }
    }

    #[test]
    fn container_name() {
        use OptionId::Name;
        let flag_msg =
            "--container-name: flag must be \"auto\", \"create\", \"exec\" or \"no_exec\"";
        let ok: &[(&[&str], &str, NameFlag)] = &[
            (&["foo"], "foo", NameFlag::Auto),
            (&["foo:"], "foo", NameFlag::Auto),
            (&["foo:auto"], "foo", NameFlag::Auto),
            (&["foo:create"], "foo", NameFlag::Create),
            (&["foo:exec"], "foo", NameFlag::Exec),
            (&["foo:no_exec"], "foo", NameFlag::NoExec),
            (&["foo:exec", "foo:exec"], "foo", NameFlag::Exec), // W25 fix
            (&["foo", "foo"], "foo", NameFlag::Auto),
            (&["42.0"], "42.0", NameFlag::Auto),
            (&["...x"], "...x", NameFlag::Auto),
        ];
        for (steps, name, flag) in ok {
            let mut args = Args::default();
            for s in *steps {
                args.apply(Name, Some(s)).unwrap();
            }
            let got = args.name.unwrap();
            assert_eq!((got.name.as_str(), got.flag), (*name, *flag), "{steps:?}");
            assert_eq!(got.raw, steps[0]);
        }
        let long = "n".repeat(201);
        let max = "n".repeat(200);
        assert!(applied(&[(Name, Some(&max))]).is_ok());
        let bad: &[(&[&str], String)] = &[
            (&[""], "--container-name: argument required".into()),
            (&[":exec"], "--container-name: empty name".into()),
            (&[":"], "--container-name: empty name".into()),
            (&["foo:bar"], flag_msg.into()),
            (&["foo:exec:x"], flag_msg.into()),
            (&["foo:EXEC"], flag_msg.into()),
            (
                &["foo", "foo:create"],
                "--container-name specified multiple times".into(),
            ),
            (
                &["foo", "bar"],
                "--container-name specified multiple times".into(),
            ),
            (&["a/b"], "--container-name: invalid name: a/b".into()),
            (&["a b"], "--container-name: invalid name: a b".into()),
            (
                &["a\tb:exec"],
                "--container-name: invalid name: a\\tb".into(),
            ),
            (&["a\nb"], "--container-name: invalid name: a\\nb".into()),
            (&["."], "--container-name: invalid name: .".into()),
            (&["..:create"], "--container-name: invalid name: ..".into()),
            (
                &[long.as_str()],
                format!("--container-name: invalid name: {long}"),
            ),
        ];
        for (steps, msg) in bad {
            let steps: Vec<(OptionId, Option<&str>)> =
                steps.iter().map(|s| (Name, Some(*s))).collect();
            assert_eq!(err(&steps), *msg, "{steps:?}");
        }
    }

    #[test]
    fn mounts_accumulate_and_report() {
        use OptionId::Mounts;
        let args = applied(&[(Mounts, Some("/a:/a")), (Mounts, Some("/a:/a,/b:/c:ro"))]).unwrap();
        assert_eq!(args.mounts.len(), 2);
        assert_eq!(
            err(&[(Mounts, None)]),
            "--container-mounts: argument required"
        );
        assert_eq!(
            err(&[(Mounts, Some(""))]),
            "--container-mounts: argument required"
        );
        let e = applied(&[(Mounts, Some("proc:/x"))]).unwrap_err();
        assert_eq!(
            e.log_lines(),
            [
                "mount source must be a relative path, an absolute path, \"tmpfs\" or \"umount\"",
                "could not add mount entry: proc:/x"
            ]
        );
        // A rejected argument leaves earlier entries of the same argument out.
        let mut args = Args::default();
        assert!(args.apply(Mounts, Some("/a:/a,bad:/x")).is_err());
        assert!(args.mounts.is_empty());
    }

    #[test]
    fn tristates() {
        use OptionId::*;
        let pairs = [
            (
                MountHome,
                NoMountHome,
                "both --container-mount-home and --no-container-mount-home were specified",
            ),
            (
                RemapRoot,
                NoRemapRoot,
                "both --container-remap-root and --no-container-remap-root were specified",
            ),
            (
                Entrypoint,
                NoEntrypoint,
                "both --container-entrypoint and --no-container-entrypoint were specified",
            ),
            (
                Writable,
                Readonly,
                "both --container-writable and --container-readonly were specified",
            ),
        ];
        for (on, off, msg) in pairs {
            assert_eq!(err(&[(on, None), (off, None)]), msg);
            assert_eq!(err(&[(off, None), (on, None)]), msg);
            assert!(applied(&[(on, None), (on, None)]).is_ok());
            assert!(applied(&[(off, None), (off, None)]).is_ok());
        }
        let a = applied(&[(MountHome, None), (NoRemapRoot, None), (Readonly, None)]).unwrap();
        assert_eq!(
            (a.mount_home, a.remap_root, a.entrypoint, a.writable),
            (Some(true), Some(false), None, Some(false))
        );
        let a = applied(&[(EntrypointLog, None), (EntrypointLog, None)]).unwrap();
        assert_eq!(a.entrypoint_log, Some(true));
    }

    #[test]
    fn container_env() {
        use OptionId::Env;
        let a = applied(&[(Env, Some("FOO,BAR")), (Env, Some("BAR,_x1"))]).unwrap();
        assert_eq!(a.env_names, ["FOO", "BAR", "_x1"]);
        let bad = [
            (None, "--container-env: argument required"),
            (Some(""), "--container-env: argument required"),
            (Some("FOO,"), "--container-env: invalid format: FOO,"),
            (Some(",FOO"), "--container-env: invalid format: ,FOO"),
            (Some("A,,B"), "--container-env: invalid format: A,,B"),
            (Some("1FOO"), "--container-env: invalid variable name: 1FOO"),
            (Some("A,B-C"), "--container-env: invalid variable name: B-C"),
            (Some("A}"), "--container-env: invalid variable name: A}"),
            (
                Some("$(id)"),
                "--container-env: invalid variable name: $(id)",
            ),
            (Some("A B"), "--container-env: invalid variable name: A B"),
        ];
        for (arg, msg) in bad {
            assert_eq!(err(&[(Env, arg)]), msg, "{arg:?}");
        }
        let mut a = Args::default();
        assert!(a.apply(Env, Some("GOOD,1BAD")).is_err());
        assert!(a.env_names.is_empty());
    }

    #[test]
    fn container_unshare() {
        use OptionId::Unshare as U;
        let a = applied(&[(U, Some("net")), (U, Some("uts,net"))]).unwrap();
        assert_eq!(
            a.unshare,
            Unshare {
                net: true,
                ipc: false,
                uts: true
            }
        );
        let bad = [
            (None, "--container-unshare: argument required"),
            (Some(""), "--container-unshare: argument required"),
            (
                Some("net,"),
                "--container-unshare: empty namespace argument",
            ),
            (
                Some(",net"),
                "--container-unshare: empty namespace argument",
            ),
            (Some("pid"), "--container-unshare: unknown namespace 'pid'"),
            (
                Some("net,NET"),
                "--container-unshare: unknown namespace 'NET'",
            ),
        ];
        for (arg, msg) in bad {
            assert_eq!(err(&[(U, arg)]), msg, "{arg:?}");
        }
        let mut a = Args::default();
        assert!(a.apply(U, Some("ipc,bogus")).is_err());
        assert!(!a.unshare.any());
    }

    #[test]
    fn bool_parser() {
        for s in ["1", "true", "yes", "y"] {
            assert_eq!(parse_bool(s), Some(true));
        }
        for s in ["0", "false", "no", "n"] {
            assert_eq!(parse_bool(s), Some(false));
        }
        for s in ["", "TRUE", "Yes", "N", "2", "on", "off", " 1"] {
            assert_eq!(parse_bool(s), None, "{s:?}");
        }
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_fills_only_unset_options() {
        let mut a = Args::default();
        a.apply(OptionId::Image, Some("cli")).unwrap();
        a.apply(OptionId::NoMountHome, None).unwrap();
        let errors = a.apply_env(env_of(&[
            ("PYXIS_CONTAINER_IMAGE", "env"),
            ("PYXIS_CONTAINER_MOUNTS", "/a:/b:ro"),
            ("PYXIS_CONTAINER_WORKDIR", "/w"),
            ("PYXIS_CONTAINER_NAME", "n:exec"),
            ("PYXIS_CONTAINER_SAVE", "/s.sqsh"),
            ("PYXIS_CONTAINER_MOUNT_HOME", "1"),
            ("PYXIS_CONTAINER_REMAP_ROOT", "yes"),
            ("PYXIS_CONTAINER_ENTRYPOINT", "0"),
            ("PYXIS_CONTAINER_ENTRYPOINT_LOG", "0"),
            ("PYXIS_CONTAINER_READONLY", "1"),
            ("PYXIS_CONTAINER_ENV", "A,B"),
            ("PYXIS_CONTAINER_UNSHARE", "ipc"),
        ]));
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(a.image.as_deref(), Some("cli"));
        assert_eq!(a.mounts, mount::parse_mounts("/a:/b:ro").unwrap());
        assert_eq!(a.workdir.as_deref(), Some("/w"));
        assert_eq!(a.name.as_ref().map(|n| n.flag), Some(NameFlag::Exec));
        assert_eq!(a.save.as_deref(), Some("/s.sqsh"));
        assert_eq!(a.mount_home, Some(false));
        assert_eq!(a.remap_root, Some(true));
        assert_eq!(a.entrypoint, Some(false));
        assert_eq!(a.entrypoint_log, Some(false));
        assert_eq!(a.writable, Some(false));
        assert_eq!(a.env_names, ["A", "B"]);
        assert!(a.unshare.ipc && !a.unshare.net);
    }

    #[test]
    fn env_does_not_extend_cli_lists() {
        let mut a = Args::default();
        a.apply(OptionId::Mounts, Some("/x:/x")).unwrap();
        a.apply(OptionId::Env, Some("X")).unwrap();
        a.apply(OptionId::Unshare, Some("net")).unwrap();
        let errors = a.apply_env(env_of(&[
            ("PYXIS_CONTAINER_MOUNTS", "/a:/b"),
            ("PYXIS_CONTAINER_ENV", "A"),
            ("PYXIS_CONTAINER_UNSHARE", "ipc"),
        ]));
        assert!(errors.is_empty());
        assert_eq!(a.mounts.len(), 1);
        assert_eq!(a.env_names, ["X"]);
        assert!(!a.unshare.ipc);
    }

    #[test]
    fn env_booleans() {
        let cases: &[(EnvPairs, Option<bool>)] = &[
            (
                &[
                    ("PYXIS_CONTAINER_WRITABLE", "1"),
                    ("PYXIS_CONTAINER_READONLY", "1"),
                ],
                Some(true),
            ),
            (
                &[
                    ("PYXIS_CONTAINER_WRITABLE", "0"),
                    ("PYXIS_CONTAINER_READONLY", "0"),
                ],
                Some(false),
            ),
            (
                &[
                    ("PYXIS_CONTAINER_WRITABLE", "bogus"),
                    ("PYXIS_CONTAINER_READONLY", "0"),
                ],
                Some(true),
            ),
            (&[("PYXIS_CONTAINER_READONLY", "n")], Some(true)),
            (&[("PYXIS_CONTAINER_READONLY", "maybe")], None),
            (&[], None),
        ];
        for (env, writable) in cases {
            let mut a = Args::default();
            assert!(a.apply_env(env_of(env)).is_empty());
            assert_eq!(a.writable, *writable, "{env:?}");
        }
        let mut a = Args::default();
        assert!(a
            .apply_env(env_of(&[("PYXIS_CONTAINER_MOUNT_HOME", "True")]))
            .is_empty());
        assert_eq!(a.mount_home, None);
    }

    #[test]
    fn env_errors_are_collected_not_fatal() {
        let long = "x".repeat(4096);
        let mut a = Args::default();
        let errors = a.apply_env(env_of(&[
            ("PYXIS_CONTAINER_IMAGE", ""),
            ("PYXIS_CONTAINER_MOUNTS", "proc:/x"),
            ("PYXIS_CONTAINER_WORKDIR", &long),
            ("PYXIS_CONTAINER_NAME", "ok"),
            ("PYXIS_CONTAINER_SAVE", "/dir/"),
            ("PYXIS_CONTAINER_ENV", "A,"),
            ("PYXIS_CONTAINER_UNSHARE", "pid"),
        ]));
        let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            msgs,
            [
                "--container-image: argument required",
                "mount source must be a relative path, an absolute path, \"tmpfs\" or \"umount\"",
                "ignoring PYXIS_CONTAINER_WORKDIR: value longer than 4095 bytes",
                "--container-save: target is a directory",
                "--container-env: invalid format: A,",
                "--container-unshare: unknown namespace 'pid'",
            ]
        );
        assert!(a.image.is_none() && a.workdir.is_none() && a.save.is_none());
        assert_eq!(a.name.map(|n| n.name), Some("ok".to_owned()));
    }

    #[test]
    fn enablement_and_warnings() {
        use OptionId::*;
        let suffix = " because neither --container-image nor --container-name is set";
        let cases: &[(Steps, &[&str])] = &[
            (&[], &[]),
            (&[(Image, Some("x")), (Workdir, Some("/w"))], &[]),
            (&[(Name, Some("x")), (Readonly, None)], &[]),
            (&[(Env, Some("A")), (Unshare, Some("net"))], &[]),
            (
                &[
                    (Mounts, Some("/a")),
                    (Workdir, Some("/w")),
                    (Save, Some("/s")),
                    (NoMountHome, None),
                    (RemapRoot, None),
                    (NoEntrypoint, None),
                    (EntrypointLog, None),
                    (Readonly, None),
                ],
                &[
                    "--container-mounts",
                    "--container-workdir",
                    "--container-save",
                    "--[no-]container-mount-home",
                    "--[no-]container-remap-root",
                    "--[no-]container-entrypoint",
                    "--container-entrypoint-log",
                    "--container-readonly",
                ],
            ),
            (&[(Writable, None)], &["--container-writable"]),
        ];
        for (steps, opts) in cases {
            let a = applied(steps).unwrap();
            let want: Vec<String> = opts
                .iter()
                .map(|o| format!("ignoring {o}{suffix}"))
                .collect();
            assert_eq!(a.ignored_option_warnings(), want, "{steps:?}");
            assert_eq!(
                a.enabled(),
                steps.iter().any(|(id, _)| matches!(id, Image | Name))
            );
        }
    }

    #[test]
    fn entrypoint_default() {
        let mut a = Args::default();
        assert!(!a.execute_entrypoint(false));
        assert!(a.execute_entrypoint(true));
        a.apply(OptionId::NoEntrypoint, None).unwrap();
        assert!(!a.execute_entrypoint(true));
    }

    #[test]
    fn identifiers() {
        for ok in ["A", "_", "a_1", "PATH", "_X9"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "é", "A=B", "A.B"] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }
}
