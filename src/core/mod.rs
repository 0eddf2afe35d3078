//! The FFI-free core of pyxis-rs: every decision that can be made from plain
//! strings and numbers, without Slurm or the kernel.
//!
//! Used by `src/hooks` in every context (srun, sbatch/salloc, slurmd, slurmstepd,
//! job epilog). Nothing in here calls `spank_*`, forks or touches the file
//! system, so all of it is unit-tested with `cargo test` on any machine.
//! Error `Display` texts are pyxis's messages without the leading `pyxis: `,
//! which the logging bridge adds.
#![forbid(unsafe_code)]

pub mod args;
pub mod bytes;
pub mod cache;
pub mod conf_script;
pub mod config;
pub mod edf;
pub mod envfilter;
pub mod hints;
pub mod image;
pub mod list;
pub mod marker;
pub mod mount;
pub mod naming;
pub mod plan;
mod robustness;
pub mod seccomp;
pub mod text;
