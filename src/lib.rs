//! pyxis-rs: a memory-safe, drop-in replacement for NVIDIA's pyxis SPANK plugin.
//!
//! Slurm loads `spank_pyxis.so` into srun, sbatch, salloc, slurmd and slurmstepd. This
//! file only emits the exported ABI; `hooks` dispatches each callback by context,
//! `core` decides (pure, unit-tested), `sys` acts on the process, and `spank` is the only
//! code that talks to Slurm.
#![deny(unsafe_code)]

// `core` is public for the fuzz targets (tests/fuzz); the dead-code check of
// tests/run-all.sh builds with `--cfg pyxis_private_core` so that everything in it
// must be used by the plugin itself.
#[cfg(not(pyxis_private_core))]
pub mod core;
#[cfg(pyxis_private_core)]
mod core;
mod error;
mod hooks;
mod spank;
mod state;
mod step;
pub mod sys;

export_plugin!(name: b"pyxis\0", hooks: crate::hooks);
