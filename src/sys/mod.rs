//! The few places that touch the process or the kernel: running enroot as the user,
//! the container start handshake, namespaces, the state shared between tasks and the
//! per-user runtime directory. Decisions live in `crate::core`; these only act.

// `cache` and `dirs` are the library API of the node tools (pyxis-doctor); the rest is
// the plugin's own.
pub mod cache;
pub(crate) mod container;
pub mod dirs;
pub(crate) mod edf;
pub(crate) mod fs;
pub(crate) mod hints;
pub(crate) mod lockfile;
pub(crate) mod ns;
pub mod probe;
pub(crate) mod runner;
pub(crate) mod seccomp;
pub(crate) mod shm;
