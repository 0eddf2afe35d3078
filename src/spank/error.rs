//! Errors of the SPANK wrapper: a failed Slurm call, or C data that cannot be owned as Rust.

use std::ffi::CStr;

/// What went wrong talking to Slurm. The `Display` text is Slurm's own `spank_strerror`
/// for API failures, so messages read like pyxis's (`couldn't get job uid: <text>`).
#[derive(Debug, thiserror::Error)]
pub enum SpankError {
    #[error("{message}")]
    Api {
        call: &'static str,
        code: u32,
        message: String,
    },
    #[error("{what} contains a NUL byte")]
    Nul { what: &'static str },
    #[error("{what} is not valid UTF-8")]
    Utf8 { what: &'static str },
}

impl SpankError {
    /// Wraps a non-zero `spank_err_t`, keeping Slurm's text for it.
    pub(crate) fn api(call: &'static str, code: spank_sys::spank_err_t) -> Self {
        // SAFETY: spank_strerror returns a pointer to a static string (or NULL on very
        // old releases); it is only read here, never freed or kept.
        let text = unsafe { spank_sys::spank_strerror(code) };
        let message = if text.is_null() {
            format!("spank error {code}")
        } else {
            // SAFETY: non-NULL, NUL-terminated static string owned by Slurm.
            unsafe { CStr::from_ptr(text) }
                .to_string_lossy()
                .into_owned()
        };
        SpankError::Api {
            call,
            code,
            message,
        }
    }
}
