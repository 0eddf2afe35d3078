//! The one panic-catching boundary every `extern "C"` entry point goes through.
//!
//! Since Rust 1.81 a panic that reaches an `extern "C"` frame aborts the process, and the
//! process is srun, slurmd or a root slurmstepd. Every hook and the option callback
//! therefore run inside `catch_unwind`; an error is reported here, once, as one line with
//! its cause chain (plus the tool log it carries, if any), and becomes Slurm's `-1`.

use std::ffi::{c_char, c_int};
use std::panic::{catch_unwind, AssertUnwindSafe};

use spank_sys as sys;
use tracing::Level;

use super::handle::Spank;
use super::log;

/// An error a hook can return: reported once by the boundary.
pub trait Report: std::error::Error {
    /// Extra lines printed after the error line, such as the captured enroot output
    /// (`printing enroot log file:` followed by the log, as pyxis does).
    fn details(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Runs one SPANK hook. `name` only labels an internal error.
///
/// # Safety
/// `raw`, `argc` and `argv` must be the arguments Slurm passed to the calling
/// `slurm_spank_*` callback.
pub unsafe fn hook<E: Report>(
    name: &'static str,
    raw: sys::spank_t,
    argc: c_int,
    argv: *mut *mut c_char,
    f: fn(&Spank<'_>) -> Result<(), E>,
) -> c_int {
    guarded(name, || {
        // SAFETY: raw, argc and argv are exactly what Slurm passed to the exported hook
        // that called us, and they are only used during this call.
        match unsafe { Spank::from_callback(raw, argc, argv) } {
            Ok(spank) => status(f(&spank)),
            Err(e) => status(Err(Plain(format!("{name}: {e}")))),
        }
    })
}

/// Runs the option callback: `val` is the option index we registered, `optarg` the
/// argument (NULL for flags).
///
/// # Safety
/// `optarg` must be NULL or the NUL-terminated string Slurm passed to the callback.
pub unsafe fn option<E: Report>(
    val: c_int,
    optarg: *const c_char,
    remote: c_int,
    f: fn(i32, Option<&str>, bool) -> Result<(), E>,
) -> c_int {
    guarded("option callback", || {
        // SAFETY: Slurm passes NULL or the NUL-terminated option argument, valid for the
        // duration of the callback.
        let arg = unsafe { super::options::optarg_to_string(optarg) };
        status(f(val, arg.as_deref(), remote != 0))
    })
}

/// The panic guard itself: installs the log bridge, runs `body`, and turns a panic
/// into a logged internal error and Slurm's `-1`.
fn guarded(name: &str, body: impl FnOnce() -> c_int) -> c_int {
    log::install();
    catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|panic| {
        log::emit(
            Level::ERROR,
            "",
            &format!("internal error in {name}: {}", panic_text(panic.as_ref())),
        );
        -1
    })
}

/// Slurm's return code for a result, reporting the error once.
fn status<E: Report>(result: Result<(), E>) -> c_int {
    match result {
        Ok(()) => 0,
        Err(e) => {
            report(&e);
            -1
        }
    }
}

/// An error of the boundary itself (C data that could not be taken over).
#[derive(Debug)]
struct Plain(String);

impl std::fmt::Display for Plain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Plain {}
impl Report for Plain {}

/// Prints an error and its sources as one line, then its detail lines.
pub fn report<E: Report>(e: &E) {
    let rendered = Rendered::of(e);
    log::emit(Level::ERROR, "", &rendered.line);
    for detail in rendered.details {
        log::emit(Level::ERROR, "", &detail);
    }
}

/// An error as it is reported: one line with its causes, then its detail lines. Kept
/// to be reported again later (an error of `init_post_opt` or `user_init` is reported
/// by every task).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rendered {
    pub line: String,
    pub details: Vec<String>,
}

impl Rendered {
    pub fn of<E: Report + ?Sized>(e: &E) -> Rendered {
        let mut line = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            // Wrappers often repeat their cause's text; do not print it twice.
            if !line.ends_with(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            source = cause.source();
        }
        Rendered {
            line,
            details: e.details(),
        }
    }
}

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.line)
    }
}

impl std::error::Error for Rendered {}

impl Report for Rendered {
    fn details(&self) -> Vec<String> {
        self.details.clone()
    }
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "panic"
    }
}
