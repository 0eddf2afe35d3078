//! What a containerised step does with its container, decided once per step and node in
//! slurmstepd's `user_init` from the options and what `enroot list -f` reported.
//!
//! pyxis §5.4: an existing named container always wins over `--container-image` (its
//! filesystem is reused, import skipped); a running one is attached to; the
//! `--container-name` flag can demand creation (`create`), attachment (`exec`) or forbid
//! attaching (`no_exec`).

use super::args::NameFlag;
use super::list::ContainerState;

/// The container plan of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Create the container filesystem from the image, then start it.
    Create,
    /// Start a new container from an existing filesystem.
    ReuseRootfs,
    /// Join the namespaces of the running container with this pid.
    Attach(u32),
}

/// Why a named container cannot be used as asked.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "error: \"create\" flag was passed to --container-name but the container already exists"
    )]
    CreateExists,
    #[error(
        "error: \"exec\" flag was passed to --container-name but the container is not running"
    )]
    ExecNotRunning,
    #[error(
        "error: a container with name \"{0}\" does not exist, and --container-image is not set"
    )]
    Missing(String),
}

/// Decides for a named container (`full_name` is the enroot name, for the message).
pub fn decide_named(
    flag: NameFlag,
    state: ContainerState,
    has_image: bool,
    full_name: &str,
) -> Result<Decision, PlanError> {
    let state = match (flag, state) {
        (NameFlag::Create, ContainerState::Stopped | ContainerState::Running(_)) => {
            return Err(PlanError::CreateExists)
        }
        (NameFlag::Exec, ContainerState::Absent | ContainerState::Stopped) => {
            return Err(PlanError::ExecNotRunning)
        }
        // A running container is treated as merely existing: fresh namespaces.
        (NameFlag::NoExec, ContainerState::Running(_)) => ContainerState::Stopped,
        (_, state) => state,
    };
    match state {
        ContainerState::Running(pid) => Ok(Decision::Attach(pid)),
        ContainerState::Stopped => Ok(Decision::ReuseRootfs),
        ContainerState::Absent if has_image => Ok(Decision::Create),
        ContainerState::Absent => Err(PlanError::Missing(full_name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerState::{Absent, Running, Stopped};

    #[test]
    fn pyxis_name_flag_table() {
        let cases = [
            (NameFlag::Auto, Absent, true, Ok(Decision::Create)),
            (NameFlag::Auto, Stopped, true, Ok(Decision::ReuseRootfs)),
            (NameFlag::Auto, Stopped, false, Ok(Decision::ReuseRootfs)),
            (NameFlag::Auto, Running(7), false, Ok(Decision::Attach(7))),
            (
                NameFlag::Auto,
                Absent,
                false,
                Err(PlanError::Missing("pyxis_x".into())),
            ),
            (NameFlag::Create, Absent, true, Ok(Decision::Create)),
            (
                NameFlag::Create,
                Stopped,
                true,
                Err(PlanError::CreateExists),
            ),
            (
                NameFlag::Create,
                Running(7),
                true,
                Err(PlanError::CreateExists),
            ),
            (NameFlag::Exec, Absent, true, Err(PlanError::ExecNotRunning)),
            (
                NameFlag::Exec,
                Stopped,
                true,
                Err(PlanError::ExecNotRunning),
            ),
            (NameFlag::Exec, Running(7), false, Ok(Decision::Attach(7))),
            (
                NameFlag::NoExec,
                Running(7),
                false,
                Ok(Decision::ReuseRootfs),
            ),
            (NameFlag::NoExec, Absent, true, Ok(Decision::Create)),
        ];
        for (flag, state, image, want) in cases {
            assert_eq!(
                decide_named(flag, state, image, "pyxis_x"),
                want,
                "{flag:?} {state:?} {image}"
            );
        }
    }

    #[test]
    fn messages_are_pyxis_text() {
        assert_eq!(
            PlanError::Missing("pyxis_foo".into()).to_string(),
            "error: a container with name \"pyxis_foo\" does not exist, and --container-image is not set"
        );
    }
}

/// How the image of a new container is fetched (pyxis §5.10-§5.12).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// A squashfs file on the node: `enroot create` from it (or start it directly).
    Squashfs(String),
    /// `enroot import --output <temp squashfs> <uri>`, then `enroot create`.
    Import { uri: String },
    /// `enroot load --name <name> <uri>`: straight to a root filesystem (enroot >= 4.0).
    Load { uri: String },
    /// The admin's importer program: `get <uri>` prints a squashfs path.
    Importer { uri: String },
}

impl Fetch {
    /// Chooses the method: `importer=` wins for registry images, then
    /// `use_enroot_load=1` except for `dockerd://` (load cannot read the local daemon).
    pub fn choose(
        source: super::image::ImageSource,
        use_enroot_load: bool,
        importer: bool,
    ) -> Fetch {
        match source {
            super::image::ImageSource::Squashfs(path) => Fetch::Squashfs(path),
            super::image::ImageSource::Registry { uri } if importer => Fetch::Importer { uri },
            super::image::ImageSource::Registry { uri }
                if use_enroot_load && !uri.starts_with("dockerd://") =>
            {
                Fetch::Load { uri }
            }
            super::image::ImageSource::Registry { uri } => Fetch::Import { uri },
        }
    }

    /// Whether `use_squashfuse=1` starts the container straight from the squashfs file
    /// (no `enroot create`, nothing to remove): only for unnamed containers that are not
    /// saved, and only when there is a squashfs file (a path or the importer's output).
    pub fn direct_start(&self, use_squashfuse: bool, named: bool, save: bool) -> bool {
        use_squashfuse
            && !named
            && !save
            && matches!(self, Fetch::Squashfs(_) | Fetch::Importer { .. })
    }
}

#[cfg(test)]
mod fetch_tests {
    use super::super::image::ImageSource;
    use super::*;

    fn reg(uri: &str) -> ImageSource {
        ImageSource::Registry { uri: uri.into() }
    }

    #[test]
    fn method_choice_follows_pyxis() {
        assert_eq!(
            Fetch::choose(reg("docker://a"), false, false),
            Fetch::Import {
                uri: "docker://a".into()
            }
        );
        assert_eq!(
            Fetch::choose(reg("docker://a"), true, false),
            Fetch::Load {
                uri: "docker://a".into()
            }
        );
        assert_eq!(
            Fetch::choose(reg("dockerd://a"), true, false),
            Fetch::Import {
                uri: "dockerd://a".into()
            }
        );
        assert_eq!(
            Fetch::choose(reg("docker://a"), true, true),
            Fetch::Importer {
                uri: "docker://a".into()
            }
        );
        assert_eq!(
            Fetch::choose(ImageSource::Squashfs("/x.sqsh".into()), true, true),
            Fetch::Squashfs("/x.sqsh".into())
        );
    }

    #[test]
    fn direct_start_only_for_unnamed_unsaved_files() {
        let sq = Fetch::Squashfs("/x".into());
        assert!(sq.direct_start(true, false, false));
        assert!(!sq.direct_start(false, false, false));
        assert!(!sq.direct_start(true, true, false));
        assert!(!sq.direct_start(true, false, true));
        assert!(Fetch::Importer { uri: "u".into() }.direct_start(true, false, false));
        assert!(!Fetch::Import { uri: "u".into() }.direct_start(true, false, false));
        assert!(!Fetch::Load { uri: "u".into() }.direct_start(true, false, false));
    }
}
