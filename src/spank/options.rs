//! Registration of the `--container-*` options and the option callback trampoline.
//!
//! Options are registered dynamically with `spank_option_register` from `slurm_spank_init`
//! (the only way that works in the allocator context). Slurm hands our `val` back to the
//! callback; we use the option's index in [`crate::core::args::OPTIONS`], so one
//! trampoline serves all sixteen options. The strings given to Slurm live in a
//! process-wide registry: Slurm may keep the pointers.

use std::ffi::{c_char, c_int, CString};
use std::sync::OnceLock;

use spank_sys as sys;

use super::error::SpankError;
use super::handle::Spank;
use crate::core::args::{OptionSpec, OPTIONS};

/// The C strings of every option, built once per process.
struct Registry {
    strings: Vec<(CString, Option<CString>, CString)>,
}

static REGISTRY: OnceLock<Result<Registry, SpankError>> = OnceLock::new();

fn registry() -> Result<&'static Registry, &'static SpankError> {
    REGISTRY
        .get_or_init(|| {
            let strings = OPTIONS
                .iter()
                .map(|spec: &OptionSpec| {
                    let nul = |s: &str, what| CString::new(s).map_err(|_| SpankError::Nul { what });
                    Ok((
                        nul(spec.name, "option name")?,
                        spec.arginfo.map(|a| nul(a, "option arginfo")).transpose()?,
                        nul(spec.usage, "option usage")?,
                    ))
                })
                .collect::<Result<Vec<_>, SpankError>>()?;
            Ok(Registry { strings })
        })
        .as_ref()
}

/// Error of [`register_all`]: which option failed, with Slurm's reason.
#[derive(Debug, thiserror::Error)]
#[error("couldn't register option {name}: {source}")]
pub struct RegisterError {
    pub name: &'static str,
    #[source]
    pub source: SpankError,
}

/// Registers every option in the order of `OPTIONS` (the order `srun --help` shows).
pub fn register_all(
    spank: &Spank<'_>,
    callback: unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int,
) -> Result<(), RegisterError> {
    let reg = registry().map_err(|e| RegisterError {
        name: "(all)",
        source: SpankError::Api {
            call: "option registry",
            code: 0,
            message: e.to_string(),
        },
    })?;
    for (spec, (name, arginfo, usage)) in OPTIONS.iter().zip(&reg.strings) {
        let mut opt = sys::spank_option {
            // Slurm's struct is not const-correct; it never writes through these pointers.
            name: name.as_ptr().cast_mut(),
            arginfo: arginfo
                .as_ref()
                .map_or(std::ptr::null_mut(), |a| a.as_ptr().cast_mut()),
            usage: usage.as_ptr().cast_mut(),
            has_arg: c_int::from(spec.has_arg()),
            val: spec.id.index(),
            cb: Some(callback),
        };
        spank
            .register_option(&mut opt)
            .map_err(|source| RegisterError {
                name: spec.name,
                source,
            })?;
    }
    Ok(())
}

/// Copies the option argument Slurm passed (NULL for flags). Any bytes are accepted, as
/// in pyxis: what is not UTF-8 is mapped losslessly ([`crate::core::bytes`]).
///
/// # Safety
/// `optarg` is NULL or a NUL-terminated string valid for the duration of the callback.
pub(crate) unsafe fn optarg_to_string(optarg: *const c_char) -> Option<String> {
    if optarg.is_null() {
        return None;
    }
    // SAFETY: non-NULL and NUL-terminated per the caller's contract.
    let s = unsafe { std::ffi::CStr::from_ptr(optarg) };
    Some(crate::core::bytes::decode(s.to_bytes()))
}
