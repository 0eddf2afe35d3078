//! Installs `core::seccomp`'s filter in a task that joined its container.
//!
//! Runs in the task process (`task_init`), after `setns`: no `PR_SET_NO_NEW_PRIVS` is
//! needed because the task holds CAP_SYS_ADMIN in the container's user namespace, and
//! none is set, as in pyxis (setuid binaries inside the container keep working).
#![allow(unsafe_code)]

use crate::core::seccomp::{native_abis, program, Insn};

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;
const SECCOMP_FILTER_FLAG_SPEC_ALLOW: libc::c_ulong = 1 << 2;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp filter failed: {0}")]
    Install(#[source] std::io::Error),
    #[error("seccomp filter failed: {0}")]
    Build(#[source] crate::core::seccomp::TooLarge),
}

/// Installs the filter on the calling thread (the task is single-threaded).
pub fn install() -> Result<(), SeccompError> {
    let insns = program(native_abis()).map_err(SeccompError::Build)?;
    let mut filter: Vec<libc::sock_filter> = insns
        .iter()
        .map(|i: &Insn| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).unwrap_or(u16::MAX),
        filter: filter.as_mut_ptr(),
    };
    // SPEC_ALLOW keeps speculative-store-bypass mitigation as the site configured it;
    // kernels that do not know the flag get EINVAL and the call is retried without it.
    for flags in [SECCOMP_FILTER_FLAG_SPEC_ALLOW, 0] {
        // SAFETY: seccomp(2) reads `prog`, which points to `filter` (alive for the call).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                SECCOMP_SET_MODE_FILTER,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINVAL) || flags == 0 {
            return Err(SeccompError::Install(err));
        }
    }
    Ok(())
}
