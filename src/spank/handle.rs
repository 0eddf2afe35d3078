//! `Spank`: one SPANK callback's view of Slurm (its handle and plugstack arguments), with
//! one typed getter per `spank_get_item` item the plugin uses.
//!
//! Valid only for the duration of the callback that received the handle. Which items
//! work depends on the context: job and task items only in remote (slurmstepd), uid/gid/
//! job id also in the job script context; see `spank.h`.

use std::ffi::{c_char, c_int, CStr, CString, OsStr, OsString};
use std::marker::PhantomData;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use spank_sys as sys;

use super::error::SpankError;

/// The Slurm process the plugin was loaded into (`spank_context()`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Context {
    /// srun.
    Local,
    /// slurmstepd and the task processes it forks.
    Remote,
    /// sbatch, salloc, scrontab.
    Allocator,
    /// slurmd itself.
    Slurmd,
    /// The SPANK prolog/epilog run by slurmd.
    JobScript,
    /// `S_CTX_ERROR` or a value this build does not know.
    Other(u32),
}

impl Context {
    /// The context of the calling process.
    pub fn current() -> Context {
        // SAFETY: spank_context takes no arguments and only reads Slurm's global state.
        let raw = unsafe { sys::spank_context() };
        Context::from_raw(raw)
    }

    fn from_raw(raw: sys::spank_context_t) -> Context {
        match raw {
            sys::S_CTX_LOCAL => Context::Local,
            sys::S_CTX_REMOTE => Context::Remote,
            sys::S_CTX_ALLOCATOR => Context::Allocator,
            sys::S_CTX_SLURMD => Context::Slurmd,
            sys::S_CTX_JOB_SCRIPT => Context::JobScript,
            other => Context::Other(other),
        }
    }
}

/// Buffer sizes tried by `getenv`: Slurm reports `ESPANK_NOSPACE` when a value does not
/// fit, so a long value is read again into a larger buffer (pyxis silently dropped values
/// over 4 KiB: W16).
const GETENV_SIZES: [usize; 3] = [4096, 128 * 1024, 4 * 1024 * 1024];

/// The SPANK handle of one callback plus the plugstack arguments of our line.
pub struct Spank<'a> {
    raw: sys::spank_t,
    args: Vec<String>,
    _callback: PhantomData<&'a ()>,
}

impl<'a> Spank<'a> {
    /// Wraps the arguments Slurm passed to a `slurm_spank_*` callback.
    ///
    /// # Safety
    /// `raw` must be the handle Slurm passed to the running callback, and `argv` must point
    /// to `argc` NUL-terminated strings (or be NULL with `argc == 0`), as Slurm guarantees
    /// for the plugstack arguments.
    pub(crate) unsafe fn from_callback(
        raw: sys::spank_t,
        argc: c_int,
        argv: *mut *mut c_char,
    ) -> Result<Spank<'a>, SpankError> {
        let mut args = Vec::new();
        let count = usize::try_from(argc).unwrap_or(0);
        if !argv.is_null() {
            for i in 0..count {
                // SAFETY: argv has argc elements per the caller's contract.
                let item = unsafe { *argv.add(i) };
                if item.is_null() {
                    continue;
                }
                // SAFETY: each element is a NUL-terminated string owned by Slurm for the
                // duration of the callback; it is copied at once.
                let s = unsafe { CStr::from_ptr(item) };
                args.push(owned(s, "plugstack argument")?);
            }
        }
        Ok(Spank {
            raw,
            args,
            _callback: PhantomData,
        })
    }

    /// The `key=value` arguments that follow the plugin path on its plugstack line.
    pub fn plugin_args(&self) -> &[String] {
        &self.args
    }

    /// A variable of the job (remote) environment, byte-exact; `Ok(None)` when it is
    /// not set.
    pub fn getenv(&self, name: &str) -> Result<Option<OsString>, SpankError> {
        let cname = cstring(name.as_bytes(), "environment variable name")?;
        for size in GETENV_SIZES {
            let mut buf = vec![0u8; size];
            let len = c_int::try_from(size).unwrap_or(c_int::MAX);
            // SAFETY: buf is writable for `len` bytes; Slurm NUL-terminates what it writes
            // and reports truncation with ESPANK_NOSPACE.
            let rc = unsafe {
                sys::spank_getenv(self.raw, cname.as_ptr(), buf.as_mut_ptr().cast(), len)
            };
            match rc {
                sys::ESPANK_SUCCESS => {
                    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
                    buf.truncate(end);
                    return Ok(Some(OsString::from_vec(buf)));
                }
                sys::ESPANK_ENV_NOEXIST => return Ok(None),
                sys::ESPANK_NOSPACE => continue,
                code => return Err(SpankError::api("spank_getenv", code)),
            }
        }
        Err(SpankError::api("spank_getenv", sys::ESPANK_NOSPACE))
    }

    /// Sets a variable in the job/task environment. Returns `Ok(false)` when it already
    /// existed and `overwrite` was false.
    pub fn setenv(&self, name: &OsStr, value: &OsStr, overwrite: bool) -> Result<bool, SpankError> {
        let cname = cstring(name.as_bytes(), "environment variable name")?;
        let cvalue = cstring(value.as_bytes(), "environment variable value")?;
        // SAFETY: both strings are NUL-terminated and outlive the call; Slurm copies them.
        let rc = unsafe {
            sys::spank_setenv(
                self.raw,
                cname.as_ptr(),
                cvalue.as_ptr(),
                c_int::from(overwrite),
            )
        };
        match rc {
            sys::ESPANK_SUCCESS => Ok(true),
            sys::ESPANK_ENV_EXISTS => Ok(false),
            code => Err(SpankError::api("spank_setenv", code)),
        }
    }

    /// Removes a variable from the job/task environment.
    pub fn unsetenv(&self, name: &str) -> Result<(), SpankError> {
        let cname = cstring(name.as_bytes(), "environment variable name")?;
        // SAFETY: NUL-terminated name valid for the call.
        let rc = unsafe { sys::spank_unsetenv(self.raw, cname.as_ptr()) };
        check("spank_unsetenv", rc)
    }

    /// `S_JOB_UID` (uid_t *).
    pub fn job_uid(&self) -> Result<u32, SpankError> {
        let mut v: libc::uid_t = 0;
        // SAFETY: spank.h documents S_JOB_UID as taking a uid_t *.
        let rc = unsafe { sys::spank_get_item(self.raw, sys::S_JOB_UID, &mut v as *mut _) };
        check("S_JOB_UID", rc).map(|()| v)
    }

    /// `S_JOB_GID` (gid_t *).
    pub fn job_gid(&self) -> Result<u32, SpankError> {
        let mut v: libc::gid_t = 0;
        // SAFETY: spank.h documents S_JOB_GID as taking a gid_t *.
        let rc = unsafe { sys::spank_get_item(self.raw, sys::S_JOB_GID, &mut v as *mut _) };
        check("S_JOB_GID", rc).map(|()| v)
    }

    /// `S_JOB_ID` (uint32_t *).
    pub fn job_id(&self) -> Result<u32, SpankError> {
        self.item_u32(sys::S_JOB_ID, "S_JOB_ID")
    }

    /// `S_JOB_STEPID` (uint32_t *); the batch step is `SLURM_BATCH_SCRIPT` (0xfffffffb).
    pub fn step_id(&self) -> Result<u32, SpankError> {
        self.item_u32(sys::S_JOB_STEPID, "S_JOB_STEPID")
    }

    /// `S_JOB_LOCAL_TASK_COUNT` (uint32_t *).
    pub fn local_task_count(&self) -> Result<u32, SpankError> {
        self.item_u32(sys::S_JOB_LOCAL_TASK_COUNT, "S_JOB_LOCAL_TASK_COUNT")
    }

    /// `S_JOB_TOTAL_TASK_COUNT` (uint32_t *); 0 for the batch step.
    pub fn total_task_count(&self) -> Result<u32, SpankError> {
        self.item_u32(sys::S_JOB_TOTAL_TASK_COUNT, "S_JOB_TOTAL_TASK_COUNT")
    }

    /// `S_JOB_NODEID` (uint32_t *): this node's index in the step, 0 on the first node.
    pub fn node_id(&self) -> Result<u32, SpankError> {
        self.item_u32(sys::S_JOB_NODEID, "S_JOB_NODEID")
    }

    fn item_u32(&self, item: sys::spank_item_t, name: &'static str) -> Result<u32, SpankError> {
        let mut v: u32 = 0;
        // SAFETY: callers only pass items that spank.h documents as taking a uint32_t *.
        let rc = unsafe { sys::spank_get_item(self.raw, item, &mut v as *mut u32) };
        check(name, rc).map(|()| v)
    }

    /// `S_JOB_SUPPLEMENTARY_GIDS` (gid_t **, int *): the job's supplementary groups.
    pub fn supplementary_gids(&self) -> Result<Vec<u32>, SpankError> {
        let mut ptr: *mut libc::gid_t = std::ptr::null_mut();
        let mut count: c_int = 0;
        // SAFETY: spank.h documents this item as (gid_t **, int *); Slurm keeps ownership
        // of the array, which is copied below.
        let rc = unsafe {
            sys::spank_get_item(
                self.raw,
                sys::S_JOB_SUPPLEMENTARY_GIDS,
                &mut ptr as *mut *mut libc::gid_t,
                &mut count as *mut c_int,
            )
        };
        check("S_JOB_SUPPLEMENTARY_GIDS", rc)?;
        // SAFETY: Slurm returned `count` gids at `ptr` (NULL means none).
        Ok(unsafe { slice_or_empty(ptr, count) }.to_vec())
    }

    /// `S_JOB_ARGV` (int *, char ***): the step's command line (the batch script path for
    /// the batch step).
    pub fn job_argv(&self) -> Result<Vec<OsString>, SpankError> {
        let mut argc: c_int = 0;
        let mut argv: *mut *mut c_char = std::ptr::null_mut();
        // SAFETY: spank.h documents S_JOB_ARGV as (int *, char ***); the array stays
        // owned by Slurm and is copied at once.
        let rc = unsafe {
            sys::spank_get_item(
                self.raw,
                sys::S_JOB_ARGV,
                &mut argc as *mut c_int,
                &mut argv as *mut *mut *mut c_char,
            )
        };
        check("S_JOB_ARGV", rc)?;
        // SAFETY: argv holds argc string pointers (NULL array when argc is 0).
        let ptrs = unsafe { slice_or_empty(argv, argc) };
        Ok(ptrs
            .iter()
            .filter(|p| !p.is_null())
            // SAFETY: each non-NULL element is a NUL-terminated string owned by Slurm.
            .map(|p| OsStr::from_bytes(unsafe { CStr::from_ptr(*p) }.to_bytes()).to_owned())
            .collect())
    }

    /// `S_JOB_ENV` (char ***): the job (or, in task_init, the task) environment as
    /// `KEY=VALUE` entries, byte-exact (Slurm puts user-chosen bytes there).
    pub fn job_env(&self) -> Result<Vec<OsString>, SpankError> {
        let mut env: *mut *mut c_char = std::ptr::null_mut();
        // SAFETY: spank.h documents S_JOB_ENV as taking a char ***; the array is
        // NULL-terminated and owned by Slurm.
        let rc = unsafe {
            sys::spank_get_item(self.raw, sys::S_JOB_ENV, &mut env as *mut *mut *mut c_char)
        };
        check("S_JOB_ENV", rc)?;
        let mut out = Vec::new();
        if env.is_null() {
            return Ok(out);
        }
        let mut i = 0usize;
        loop {
            // SAFETY: the array is NULL-terminated, so every index up to the terminator
            // is in bounds.
            let item = unsafe { *env.add(i) };
            if item.is_null() {
                break;
            }
            // SAFETY: non-NULL entries are NUL-terminated strings owned by Slurm.
            out.push(OsStr::from_bytes(unsafe { CStr::from_ptr(item) }.to_bytes()).to_owned());
            i += 1;
        }
        Ok(out)
    }

    /// Registers one `--container-*` option with Slurm.
    pub(crate) fn register_option(&self, option: &mut sys::spank_option) -> Result<(), SpankError> {
        // SAFETY: `option` points to a fully initialised spank_option whose strings are
        // 'static (kept in options::REGISTRY for the life of the process).
        let rc = unsafe { sys::spank_option_register(self.raw, option as *mut _) };
        check("spank_option_register", rc)
    }
}

fn check(call: &'static str, rc: sys::spank_err_t) -> Result<(), SpankError> {
    if rc == sys::ESPANK_SUCCESS {
        Ok(())
    } else {
        Err(SpankError::api(call, rc))
    }
}

fn cstring(s: &[u8], what: &'static str) -> Result<CString, SpankError> {
    CString::new(s).map_err(|_| SpankError::Nul { what })
}

fn owned(s: &CStr, what: &'static str) -> Result<String, SpankError> {
    s.to_str()
        .map(str::to_owned)
        .map_err(|_| SpankError::Utf8 { what })
}

/// A slice over an array Slurm handed back, treating NULL or a non-positive count as
/// empty (`slice::from_raw_parts` requires a non-NULL pointer even for length 0).
///
/// # Safety
/// When `ptr` is non-NULL it must point to at least `count` initialised elements that
/// stay valid while the slice is used.
unsafe fn slice_or_empty<'s, T>(ptr: *const T, count: c_int) -> &'s [T] {
    match usize::try_from(count) {
        // SAFETY: guaranteed by the caller for non-NULL ptr and positive count.
        Ok(n) if n > 0 && !ptr.is_null() => unsafe { std::slice::from_raw_parts(ptr, n) },
        _ => &[],
    }
}
