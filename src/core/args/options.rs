//! The registration table of the 16 `--container-*` options (behaviour spec §4.1):
//! names, argument placeholders and `--help` texts, verbatim from pyxis 0.24.0, and
//! pyxis-rs's `--environment`.

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
    /// `--environment` (pyxis-rs: an environment definition file, as CSCS's)
    Environment,
}

impl OptionId {
    /// Every option in §4.1 order; `index` is the position in this array.
    pub const ALL: [OptionId; 17] = [
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
        OptionId::Environment,
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
            OptionId::Environment => 16,
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
pub const OPTIONS: [OptionSpec; 17] = [
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
    // Not in pyxis; named as in CSCS's Container Engine, so scripts written for it work.
    OptionSpec {
        id: OptionId::Environment,
        name: "environment",
        arginfo: Some("NAME|PATH"),
        usage: "[pyxis] environment definition file (TOML): a path, or NAME for NAME.toml in \
                ~/.edf or the site's directory. Command-line options override its values.",
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
        OptionId::Environment => &OPTIONS[16],
    }
}
