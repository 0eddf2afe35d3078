//! The tracing → Slurm log bridge.
//!
//! Every process that loads the plugin routes `tracing` events into Slurm's own log calls,
//! so the user and the admin see them where Slurm's messages go (srun's terminal, the
//! slurmd log, the batch output), filtered by Slurm's verbosity (`srun -v`). The format is
//! always the constant `"%s"`: user-controlled text (image names, paths) never becomes a
//! printf format. Messages get the `pyxis: ` prefix here, once.
//!
//! Levels: ERROR/WARN → `slurm_error`, INFO → `slurm_info`, DEBUG → `slurm_verbose`,
//! TRACE → `slurm_debug`. Events with target [`USER`] go to `slurm_spank_log` (shown to
//! the user without Slurm's `error:` prefix); [`USER_RAW`] too, without our prefix (the
//! entrypoint's own output).

use std::ffi::CString;
use std::fmt::Write as _;
use std::sync::Once;

use crate::core::text::show_bytes;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Target for user-facing lines (`slurm_spank_log`).
pub const USER: &str = "pyxis::user";
/// Target for user-facing lines printed verbatim, without `pyxis: `.
pub const USER_RAW: &str = "pyxis::user_raw";

const FORMAT: &[u8; 3] = b"%s\0";

/// Installs the bridge once per process; later calls do nothing.
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An error only means another subscriber is already global (not ours to replace).
        let _ = tracing::subscriber::set_global_default(SlurmLog);
    });
}

/// Sends one already formatted line to Slurm at `level`.
pub fn emit(level: Level, target: &str, message: &str) {
    // Bytes of a value that is not UTF-8 are shown as `\xNN` (crate::core::bytes).
    let message = show_bytes(message);
    let text = if target == USER_RAW {
        message.into_owned()
    } else {
        format!("pyxis: {message}")
    };
    // Interior NULs cannot cross into C; show them instead of dropping the line.
    let line = CString::new(text.replace('\0', "\\0")).unwrap_or_default();
    let fmt = FORMAT.as_ptr().cast();
    // SAFETY: every Slurm log function is printf-like; the format is the constant "%s"
    // and the only argument is a NUL-terminated string that outlives the call.
    unsafe {
        if target == USER || target == USER_RAW {
            spank_sys::slurm_spank_log(fmt, line.as_ptr());
        } else if level <= Level::WARN {
            spank_sys::slurm_error(fmt, line.as_ptr());
        } else if level == Level::INFO {
            spank_sys::slurm_info(fmt, line.as_ptr());
        } else if level == Level::DEBUG {
            spank_sys::slurm_verbose(fmt, line.as_ptr());
        } else {
            spank_sys::slurm_debug(fmt, line.as_ptr());
        }
    }
}

/// A `tracing` subscriber with no spans of its own: each event becomes one Slurm line,
/// its fields appended as `key=value`.
struct SlurmLog;

impl Subscriber for SlurmLog {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut line = Line::default();
        event.record(&mut line);
        let meta = event.metadata();
        emit(*meta.level(), meta.target(), &line.finish());
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Line {
    fn finish(self) -> String {
        if self.fields.is_empty() {
            self.message
        } else {
            format!("{}{}", self.message, self.fields)
        }
    }
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}
