//! The container plan of a step: one pure function decides, from everything known in
//! slurmstepd's `user_init`, how the container filesystem is obtained, which mounts
//! apply, who removes the container and whether it is exported. `src/step` only
//! carries the plan out. When the facts change under the named-container lock (another
//! step created or started the container meanwhile), the same function decides again,
//! so a running container is attached to, never started twice.
//!
//! pyxis §5.4: an existing named container always wins over `--container-image` (its
//! filesystem is reused, import skipped); a running one is attached to; the
//! `--container-name` flag can demand creation (`create`), attachment (`exec`) or forbid
//! attaching (`no_exec`). §5.10-§5.12 choose how an image is fetched.

use super::args::{Args, NameFlag};
use super::cache::Digest;
use super::config::Config;
use super::image::{classify, ImageSource};
use super::list::ContainerState;
use super::mount::{add_unique, batch_script_mount, MountEntry};
use super::naming::{container_name, JobId, StepId};

/// Everything the plan depends on.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub args: &'a Args,
    pub config: &'a Config,
    pub job: JobId,
    pub step: StepId,
    /// This node's index in the step: only node 0 exports (W14).
    pub node_id: u32,
    /// The batch script, for the batch step: it is bind-mounted into the container.
    pub batch_script: Option<&'a str>,
    /// What `enroot list -f` says of the named container (`Absent` when unnamed).
    pub existing: ContainerState,
    /// The manifest digest of a registry image that goes through the image cache
    /// (see [`cache_uri`]); `None` when the cache is off or the digest is unknown.
    pub digest: Option<&'a Digest>,
    /// Whether this node can start a squashfs directly (see [`may_start_direct`]).
    pub direct: &'a DirectSupport,
}

/// What the node offers for starting a squashfs without unpacking it, as probed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectSupport {
    /// Not probed: the plan cannot start directly anyway (or `use_squashfuse=0`).
    NotProbed,
    /// squashfuse and `/dev/fuse` work, and one overlay: kernel overlayfs in a user
    /// namespace (`native`, `ENROOT_NATIVE_OVERLAYFS=y`, reads faster) or fuse-overlayfs.
    Available { native_overlay: bool },
    /// The node cannot do it; why, for the one verbose line of the fallback.
    Unavailable(String),
}

/// The decided plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPlan {
    /// The enroot container name (`pyxis_...`), also of an unnamed container.
    pub name: String,
    /// `--container-name` was given: the container is kept, and creating or starting
    /// it is serialised with the user's other steps (W2).
    pub named: bool,
    pub rootfs: Rootfs,
    /// What enroot mounts when it starts the container.
    pub mounts: Vec<MountEntry>,
    /// Run the image's entrypoint (the option, else the `execute_entrypoint` key).
    pub entrypoint: bool,
    /// The step removes the container filesystem when it ends (unnamed, created).
    pub remove_at_end: bool,
    /// `--container-save` path, on the first node only.
    pub export: Option<String>,
    /// Lines for the user, printed once when the plan is carried out.
    pub notices: Vec<Notice>,
    /// A direct start runs enroot with `ENROOT_NATIVE_OVERLAYFS=y`.
    pub native_overlay: bool,
    /// Why a step that would have started directly is created instead (verbose line).
    pub fallback: Option<String>,
}

/// How the container filesystem is obtained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rootfs {
    /// Join the namespaces of the running named container with this pid; a fresh
    /// helper started from its filesystem gives the environment and working
    /// directory, as in pyxis.
    Attach { pid: u32 },
    /// Start a new container from the existing filesystem of a named container.
    Reuse,
    /// Fetch the image, create the filesystem, then start it.
    Create(Source),
    /// Start straight from a squashfs file (use_squashfuse): nothing is unpacked and
    /// nothing is left to remove; the helper must stay alive for the whole step.
    Direct(Source),
}

/// Where the image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A squashfs file on the node (relative paths resolve in the task's cwd).
    File(String),
    /// `enroot import --output <temp squashfs> <uri>`.
    Import { uri: String },
    /// A registry image through the per-user image cache: the entry of `digest`, imported
    /// first (from `uri@digest`) when the cache does not have it.
    Cached { uri: String, digest: Digest },
    /// `enroot load --name <name> <uri>`: straight to a filesystem (enroot >= 4.0).
    Load { uri: String },
    /// The admin's importer: `get <uri>` prints a squashfs path; `release` after use.
    Importer { uri: String },
}

/// Something the user is told about the plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Mounts cannot be added to a running container.
    MountsIgnoredOnAttach,
}

impl Notice {
    pub fn text(self) -> &'static str {
        match self {
            Notice::MountsIgnoredOnAttach => {
                "ignoring --container-mounts when attaching to a running container"
            }
        }
    }
}

/// Why a named container cannot be used as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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

impl Rootfs {
    /// The image source, when the image is fetched.
    pub fn source(&self) -> Option<&Source> {
        match self {
            Rootfs::Create(s) | Rootfs::Direct(s) => Some(s),
            Rootfs::Attach { .. } | Rootfs::Reuse => None,
        }
    }
}

impl ContainerPlan {
    /// The admin's importer holds a squashfs for this step (`release` is owed).
    pub fn uses_importer(&self) -> bool {
        matches!(self.rootfs.source(), Some(Source::Importer { .. }))
    }

    /// The helper (the container's first process) must stay alive for the whole
    /// step: it holds the squashfuse mount of a direct start.
    pub fn helper_lives_with_step(&self) -> bool {
        matches!(self.rootfs, Rootfs::Direct(_))
    }
}

/// Decides the plan.
pub fn decide(f: &Facts<'_>) -> Result<ContainerPlan, PlanError> {
    let scope = f.config.container_scope;
    let named = f.args.name.as_ref();
    let name = container_name(scope, f.job, named.map(|n| n.name.as_str()), f.step);
    let source = |image: &str| match source(image, f.config) {
        Source::Import { uri } if f.config.image_cache().is_some() => match f.digest {
            Some(digest) => Source::Cached {
                uri,
                digest: digest.clone(),
            },
            None => Source::Import { uri },
        },
        other => other,
    };
    let mut fallback = None;
    let mut native_overlay = false;
    let rootfs = match named {
        Some(cn) => match named_state(cn.flag, f.existing)? {
            ContainerState::Running(pid) => Rootfs::Attach { pid },
            ContainerState::Stopped => Rootfs::Reuse,
            ContainerState::Absent => match f.args.image.as_deref() {
                Some(image) => Rootfs::Create(source(image)),
                None => return Err(PlanError::Missing(name)),
            },
        },
        None => {
            let source = source(f.args.image.as_deref().unwrap_or_default());
            let squashfs = matches!(
                source,
                Source::File(_) | Source::Importer { .. } | Source::Cached { .. }
            );
            match (may_start_direct(f.args, f.config) && squashfs, f.direct) {
                (true, DirectSupport::Available { native_overlay: n }) => {
                    native_overlay = *n;
                    Rootfs::Direct(source)
                }
                (true, DirectSupport::Unavailable(why)) => {
                    fallback = Some(why.clone());
                    Rootfs::Create(source)
                }
                _ => Rootfs::Create(source),
            }
        }
    };
    let mut mounts = f.args.mounts.clone();
    if let Some(script) = f.batch_script {
        add_unique(&mut mounts, batch_script_mount(script));
    }
    let mut notices = Vec::new();
    if matches!(rootfs, Rootfs::Attach { .. }) && !mounts.is_empty() {
        notices.push(Notice::MountsIgnoredOnAttach);
        mounts.clear();
    }
    Ok(ContainerPlan {
        remove_at_end: named.is_none() && matches!(rootfs, Rootfs::Create(_)),
        export: f.args.save.clone().filter(|_| f.node_id == 0),
        entrypoint: f.args.execute_entrypoint(f.config.execute_entrypoint),
        named: named.is_some(),
        name,
        rootfs,
        mounts,
        notices,
        native_overlay,
        fallback,
    })
}

/// Whether the step would start its image directly if the node can (so the node is
/// worth probing): `use_squashfuse` (on by default), an unnamed container, no
/// `--container-save`. Whether the image is a squashfs is decided by [`decide`].
pub fn may_start_direct(args: &Args, config: &Config) -> bool {
    config.use_squashfuse && args.name.is_none() && args.save.is_none() && args.image.is_some()
}

/// The registry URI whose manifest digest the step should resolve for the image cache:
/// the cache is on and the image would be imported with `enroot import` (not the
/// admin's importer, not `use_enroot_load`, not the local `dockerd://`/`podman://`
/// daemons). A named container that already exists needs no image at all: call this
/// only when the container is absent.
pub fn cache_uri(args: &Args, config: &Config) -> Option<String> {
    config.image_cache()?;
    match source(args.image.as_deref()?, config) {
        Source::Import { uri }
            if uri
                .strip_prefix("docker://")
                .is_some_and(|r| !r.contains("://")) =>
        {
            Some(uri)
        }
        _ => None,
    }
}

/// The `--container-name` flag applied to what enroot reported (§5.4).
fn named_state(flag: NameFlag, state: ContainerState) -> Result<ContainerState, PlanError> {
    match (flag, state) {
        (NameFlag::Create, ContainerState::Stopped | ContainerState::Running(_)) => {
            Err(PlanError::CreateExists)
        }
        (NameFlag::Exec, ContainerState::Absent | ContainerState::Stopped) => {
            Err(PlanError::ExecNotRunning)
        }
        // A running container is treated as merely existing: fresh namespaces.
        (NameFlag::NoExec, ContainerState::Running(_)) => Ok(ContainerState::Stopped),
        (_, state) => Ok(state),
    }
}

/// How an image is fetched: `importer=` wins for registry images, then
/// `use_enroot_load=1` except for `dockerd://` (load cannot read the local daemon).
fn source(image: &str, config: &Config) -> Source {
    let image = classify(image);
    let load = config.use_enroot_load && !image.is_dockerd();
    match image {
        ImageSource::Squashfs(path) => Source::File(path),
        ImageSource::Registry { uri } if config.importer.is_some() => Source::Importer { uri },
        ImageSource::Registry { uri } if load => Source::Load { uri },
        ImageSource::Registry { uri } => Source::Import { uri },
    }
}

#[cfg(test)]
mod tests;
