//! State shared by the tasks of one step on one node.
//!
//! Created in slurmstepd's `user_init`, before Slurm forks the tasks, as an anonymous
//! `MAP_SHARED` mapping that every task inherits. It holds a process-shared *robust*
//! mutex (a task that dies holding it is detected, never deadlocks the others), the count
//! of tasks that entered and finished container setup, and the pids of the helper
//! container process. Waiting for the lock is done in one-second slices so a waiter never
//! blocks without bound behind a dead owner (W18).
#![allow(unsafe_code)]

use std::ptr::NonNull;
use std::time::Duration;

use super::container::Spawned;

/// What the creator task published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Setup {
    /// No task got to it yet.
    Pending,
    /// The helper (the container's stopped first process) is ready: its environment
    /// and cwd are the tasks'; its namespaces too, unless `ns` names the running
    /// container the creator attached to.
    Ready { helper: u32, ns: Option<NsRef> },
    /// The creator failed; it reported why.
    Failed,
}

/// A running container's process and the identity (st_dev, st_ino) of its mount
/// namespace, so a task opening it by pid can prove it is still the same container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NsRef {
    pub pid: u32,
    pub mount: (u64, u64),
}

#[repr(C)]
struct Shared {
    mutex: libc::pthread_mutex_t,
    /// Tasks that entered setup; the first one creates the container.
    entered: u32,
    /// Tasks that finished setup (joined the container).
    started: u32,
    /// 0 pending, 1 ready, 2 failed.
    state: u32,
    helper: u32,
    /// The attached container's pid (0 when the helper's namespaces are joined).
    ns_pid: u32,
    ns_dev: u64,
    ns_ino: u64,
    /// The helper as soon as the creator's `enroot start` forked it (0: none yet).
    spawned: u32,
    spawned_start: u64,
}

/// Errors of the shared state.
#[derive(Debug, thiserror::Error)]
pub enum ShmError {
    #[error("couldn't create shared memory: {0}")]
    Map(#[source] std::io::Error),
    #[error("couldn't initialize shared memory lock: {0}")]
    Init(#[source] std::io::Error),
    #[error("failed to acquire container setup lock: {0}")]
    Lock(#[source] std::io::Error),
    #[error("a previous task terminated unexpectedly during container setup")]
    OwnerDied,
    #[error("timed out after {0} s waiting for the task that sets the container up")]
    Timeout(u64),
}

/// The mapping; owned by slurmstepd, inherited by the tasks.
pub struct SharedStep {
    ptr: NonNull<Shared>,
}

// SAFETY: the mapping is only touched under its process-shared mutex (or, for `destroy`,
// after every task is gone); the plugin runs no threads of its own.
unsafe impl Send for SharedStep {}

impl SharedStep {
    pub fn create() -> Result<SharedStep, ShmError> {
        let size = std::mem::size_of::<Shared>();
        // SAFETY: an anonymous shared mapping; no file, no aliasing with existing memory.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(ShmError::Map(std::io::Error::last_os_error()));
        }
        let ptr = NonNull::new(addr.cast::<Shared>())
            .ok_or_else(|| ShmError::Map(std::io::Error::other("mmap returned NULL")))?;
        let step = SharedStep { ptr };
        // SAFETY: the mapping is zero-filled, sized for Shared, and not yet shared with
        // any other process; initialise the mutex as process-shared and robust.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            let mut rc = libc::pthread_mutexattr_init(&mut attr);
            if rc == 0 {
                rc = libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            }
            if rc == 0 {
                rc = libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            }
            if rc == 0 {
                rc = libc::pthread_mutex_init(&mut (*ptr.as_ptr()).mutex, &attr);
            }
            libc::pthread_mutexattr_destroy(&mut attr);
            if rc != 0 {
                return Err(ShmError::Init(std::io::Error::from_raw_os_error(rc)));
            }
        }
        Ok(step)
    }

    /// Takes the lock, waiting at most `timeout` for a live owner (the creator task,
    /// while it fetches and creates). A dead previous owner is reported once as
    /// [`ShmError::OwnerDied`] (the state is marked consistent and failed, so every
    /// other task fails too).
    pub fn lock(&self, timeout: Duration) -> Result<Guard<'_>, ShmError> {
        let m = self.mutex();
        let give_up = std::time::Instant::now() + timeout;
        loop {
            if std::time::Instant::now() >= give_up {
                return Err(ShmError::Timeout(timeout.as_secs()));
            }
            let deadline = realtime_in(Duration::from_secs(1));
            // SAFETY: the mutex was initialised in create() and lives in the mapping.
            let rc = unsafe { libc::pthread_mutex_timedlock(m, &deadline) };
            match rc {
                0 => return Ok(Guard { step: self }),
                libc::ETIMEDOUT => continue,
                libc::EOWNERDEAD => {
                    // SAFETY: we own the mutex now; make it usable again and poison state.
                    unsafe {
                        libc::pthread_mutex_consistent(m);
                        let s = &mut *self.ptr.as_ptr();
                        s.state = 2;
                        s.helper = 0;
                        libc::pthread_mutex_unlock(m);
                    }
                    return Err(ShmError::OwnerDied);
                }
                other => return Err(ShmError::Lock(std::io::Error::from_raw_os_error(other))),
            }
        }
    }

    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        // SAFETY: ptr is a live mapping for the lifetime of self.
        unsafe { &mut (*self.ptr.as_ptr()).mutex }
    }

    /// Reads the published setup without taking the lock (slurmstepd's task_exit, after
    /// the tasks are gone).
    pub fn snapshot(&self) -> Setup {
        // SAFETY: plain reads of u32 fields in a live mapping; a racing writer can only
        // be a task, and callers use this once all tasks were reaped.
        let s = unsafe { &*self.ptr.as_ptr() };
        decode(s)
    }

    /// The creator task (holding the lock) records the helper it just forked, so that
    /// slurmstepd can kill it should the creator die before publishing it.
    pub fn note_spawned(&self, helper: Spawned) {
        // SAFETY: only the creator task writes these fields, while it holds the mutex
        // (inside `enter`'s guard); slurmstepd reads them after the tasks are gone.
        unsafe {
            let s = self.ptr.as_ptr();
            std::ptr::write_volatile(&raw mut (*s).spawned_start, helper.start);
            std::ptr::write_volatile(&raw mut (*s).spawned, helper.pid);
        }
    }

    /// The helper the creator forked, published or not (read after the tasks are gone).
    pub fn spawned(&self) -> Option<Spawned> {
        // SAFETY: as for `snapshot`.
        let s = unsafe { &*self.ptr.as_ptr() };
        (s.spawned > 0).then_some(Spawned {
            pid: s.spawned,
            start: s.spawned_start,
        })
    }

    /// How many tasks finished joining the container (read after the tasks are gone).
    pub fn started_tasks(&self) -> u32 {
        // SAFETY: as for `snapshot`.
        unsafe { (*self.ptr.as_ptr()).started }
    }

    /// Unmaps after destroying the mutex (slurmstepd `exit`).
    pub fn destroy(self) {
        // SAFETY: called once, in slurmstepd, after the tasks exited: nobody holds the
        // mutex. A dead owner leaves it inconsistent; destroying it is still allowed.
        unsafe {
            libc::pthread_mutex_destroy(self.mutex());
            libc::munmap(self.ptr.as_ptr().cast(), std::mem::size_of::<Shared>());
        }
    }
}

/// Holding the lock.
pub struct Guard<'a> {
    step: &'a SharedStep,
}

impl Guard<'_> {
    fn shared(&mut self) -> &mut Shared {
        // SAFETY: the mutex is held, so this process has exclusive access.
        unsafe { &mut *self.step.ptr.as_ptr() }
    }

    /// Counts this task in; true for the first one (the creator).
    pub fn enter(&mut self) -> bool {
        let s = self.shared();
        s.entered += 1;
        s.entered == 1
    }

    pub fn setup(&mut self) -> Setup {
        decode(self.shared())
    }

    pub fn publish(&mut self, setup: Setup) {
        let s = self.shared();
        match setup {
            Setup::Pending => s.state = 0,
            Setup::Ready { helper, ns } => {
                s.state = 1;
                s.helper = helper;
                let r = ns.unwrap_or(NsRef {
                    pid: 0,
                    mount: (0, 0),
                });
                (s.ns_pid, s.ns_dev, s.ns_ino) = (r.pid, r.mount.0, r.mount.1);
            }
            Setup::Failed => {
                s.state = 2;
                s.helper = 0;
            }
        }
    }

    /// Counts this task as joined; returns the new count.
    pub fn started(&mut self) -> u32 {
        let s = self.shared();
        s.started += 1;
        s.started
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        // SAFETY: this guard holds the mutex.
        unsafe {
            libc::pthread_mutex_unlock(self.step.mutex());
        }
    }
}

fn decode(s: &Shared) -> Setup {
    match s.state {
        1 if s.helper > 0 => Setup::Ready {
            helper: s.helper,
            ns: (s.ns_pid > 0).then_some(NsRef {
                pid: s.ns_pid,
                mount: (s.ns_dev, s.ns_ino),
            }),
        },
        0 => Setup::Pending,
        _ => Setup::Failed,
    }
}

fn realtime_in(d: Duration) -> libc::timespec {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        + d;
    libc::timespec {
        tv_sec: libc::time_t::try_from(now.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(now.subsec_nanos() as i32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    #[test]
    fn first_task_creates_and_others_see_it() {
        let step = SharedStep::create().unwrap();
        {
            let mut g = step.lock(Duration::from_secs(10)).unwrap();
            assert!(g.enter());
            assert_eq!(g.setup(), Setup::Pending);
            g.publish(Setup::Ready {
                helper: 10,
                ns: Some(NsRef {
                    pid: 5,
                    mount: (1, 2),
                }),
            });
        }
        // SAFETY: the child only uses the mapping and exits with _exit.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let code = match step.lock(Duration::from_secs(10)) {
                    Ok(mut g) => {
                        let ok = !g.enter()
                            && g.setup()
                                == Setup::Ready {
                                    helper: 10,
                                    ns: Some(NsRef {
                                        pid: 5,
                                        mount: (1, 2),
                                    }),
                                };
                        g.started();
                        i32::from(!ok)
                    }
                    Err(_) => 2,
                };
                // SAFETY: terminate the forked test child without running destructors.
                unsafe { libc::_exit(code) };
            }
            ForkResult::Parent { child } => {
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
            }
        }
        assert_eq!(step.lock(Duration::from_secs(10)).unwrap().started(), 2);
        step.destroy();
    }

    #[test]
    fn dead_owner_is_detected() {
        let step = SharedStep::create().unwrap();
        // SAFETY: the child takes the lock and dies holding it.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                let g = step.lock(Duration::from_secs(10));
                std::mem::forget(g);
                // SAFETY: exit without unlocking, like a killed task.
                unsafe { libc::_exit(0) };
            }
            ForkResult::Parent { child } => {
                waitpid(child, None).unwrap();
            }
        }
        assert!(matches!(
            step.lock(Duration::from_secs(10)),
            Err(ShmError::OwnerDied)
        ));
        // Consistent again afterwards, and the setup is marked failed.
        let mut g = step.lock(Duration::from_secs(10)).unwrap();
        assert_eq!(g.setup(), Setup::Failed);
        drop(g);
        step.destroy();
    }
}
