//! The few places that touch the process or the kernel: running enroot as the user,
//! the container start handshake, namespaces, the state shared between tasks and the
//! per-user runtime directory. Decisions live in `crate::core`; these only act.

pub mod cache;
pub mod container;
pub mod dirs;
pub mod fs;
pub mod lockfile;
pub mod ns;
pub mod probe;
pub mod runner;
pub mod seccomp;
pub mod shm;
