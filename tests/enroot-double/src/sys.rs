//! The few system calls nix does not wrap (or wraps awkwardly), each behind a safe function.
//!
//! Everything here runs in the single-threaded `enroot` process; nothing keeps raw pointers past
//! the call that receives them.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// Take an exclusive `flock(2)` on `fd`, retrying until `timeout` (like `flock -w`).
/// Returns `Ok(false)` when the timeout expired.
pub fn flock_exclusive(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        // SAFETY: flock only reads the descriptor number; `fd` is a live borrowed descriptor.
        let rc = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EWOULDBLOCK) | Some(libc::EINTR) => {}
            _ => return Err(err),
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An anonymous memory file that survives `execve` (no `MFD_CLOEXEC`), so that the shell can open
/// it as `/proc/self/fd/N` after the root switch.
pub fn memfd_inheritable(name: &str) -> io::Result<OwnedFd> {
    let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Close every descriptor from `first` upwards (enroot-switchroot's `closefrom`), so the container
/// does not inherit anything the caller leaked into enroot.
pub fn close_from(first: u32) {
    // SAFETY: close_range has no memory arguments; descriptors owned by Rust objects are not used
    // afterwards by the caller (documented at the call site).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0) };
    if rc == 0 {
        return;
    }
    // Old kernels: close what /proc lists.
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .filter(|fd: &i32| u32::try_from(*fd).is_ok_and(|f| f >= first))
        .collect();
    for fd in fds {
        // SAFETY: closing a descriptor number; see above.
        unsafe { libc::close(fd) };
    }
}

/// `PR_SET_NO_NEW_PRIVS`, set by enroot-switchroot before running the container.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drop every capability from the bounding set (best effort per capability, like enroot which
/// tolerates `EPERM`), so that nothing can be regained by executing a file with capabilities.
pub fn drop_bounding_set() -> io::Result<()> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    for cap in 0..=last {
        // SAFETY: prctl with integer arguments only.
        let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EPERM) && err.raw_os_error() != Some(libc::EINVAL) {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Bring the loopback interface up in a fresh network namespace (enroot-nsenter does the same so
/// that `127.0.0.1` answers with "Connection refused" instead of "Network is unreachable").
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: socket has no pointer arguments.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a new descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is a plain C struct for which all-zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo".iter()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `ifr`, which lives on our stack
    // for the whole call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled the flags member of the union above.
    unsafe {
        ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    // SAFETY: as above; SIOCSIFFLAGS only reads `ifr`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clock ticks per second, for reading `/proc/<pid>/stat` start times.
pub fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no pointer arguments.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|t| *t > 0).unwrap_or(100)
}

/// Local broken-down time of a Unix timestamp: (year, month 0-11, day, hour, minute).
pub fn local_time(epoch: i64) -> Option<(i32, i32, i32, i32, i32)> {
    let t: libc::time_t = epoch;
    // SAFETY: tm is a plain C struct for which all-zero bytes are a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers refer to live locals for the duration of the call.
    let r = unsafe { libc::localtime_r(&t, &mut tm) };
    if r.is_null() {
        return None;
    }
    Some((
        tm.tm_year + 1900,
        tm.tm_mon,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    #[test]
    fn memfd_roundtrip() {
        let fd = memfd_inheritable("t").unwrap();
        let mut f = std::fs::File::from(fd);
        f.write_all(b"hello").unwrap();
        f.rewind().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
    }

    #[test]
    fn flock_is_exclusive_between_descriptions() {
        let path = std::env::temp_dir().join(format!("enroot-double-lock-{}", std::process::id()));
        let a = std::fs::File::create(&path).unwrap();
        let b = std::fs::File::open(&path).unwrap();
        assert!(flock_exclusive(a.as_fd(), Duration::from_millis(10)).unwrap());
        assert!(!flock_exclusive(b.as_fd(), Duration::from_millis(50)).unwrap());
        drop(a);
        assert!(flock_exclusive(b.as_fd(), Duration::from_millis(10)).unwrap());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn time_helpers() {
        assert!(clock_ticks() > 0);
        assert!(local_time(0).is_some());
    }
}
