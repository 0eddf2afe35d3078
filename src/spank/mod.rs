//! The safe wrapper around Slurm's SPANK API; the only code that calls `spank-sys`.
//!
//! Runs in every process that loads the plugin: srun (local), sbatch/salloc (allocator),
//! slurmd, slurmstepd (remote, and the task children it forks) and the job epilog
//! (job script). Everything above this module works with owned Rust values: strings are
//! copied out of Slurm's buffers at once, NULL and length are checked first, and C enums
//! stay integers converted with `TryFrom`-style matches.
#![allow(unsafe_code)]

pub mod boundary;
mod error;
pub mod export;
mod handle;
pub mod log;
pub mod options;

pub use error::SpankError;

/// The step id of the batch step (`SLURM_BATCH_SCRIPT`).
pub const BATCH_STEP: u32 = spank_sys::SLURM_BATCH_SCRIPT;
pub use handle::{Context, Spank};
