//! The cache store with real processes competing: forks, kill -9, planted files, root.
#![allow(unsafe_code)] // fork/_exit/alarm to get real competing processes

use super::*;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// A cache root with one user directory, removed at the end.
struct Root {
    root: PathBuf,
    uid: u32,
}

impl Root {
    /// `<tmp>/<tag>/<uid>`, mode 0700, owned by `uid` (the caller's euid unless
    /// given).
    fn new(tag: &str, uid: Option<u32>) -> Root {
        let root =
            std::env::temp_dir().join(format!("pyxis-rs-cache-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let uid = uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        let dir = root.join(uid.to_string());
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::lchown(&dir, Some(uid), None).unwrap();
        Root { root, uid }
    }

    fn dir(&self) -> PathBuf {
        self.root.join(self.uid.to_string())
    }

    fn open(&self) -> UserCache {
        UserCache::open(&self.root, self.uid).unwrap()
    }

    /// The names in the user directory, sorted, commit.lock left out.
    fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != COMMIT_LOCK)
            .collect();
        v.sort();
        v
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn digest(c: char) -> Digest {
    Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap()
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

fn entry(d: &Digest) -> String {
    CacheFile::Entry(d.clone()).name()
}

const KIB64: usize = 64 << 10;

/// Imports `d` with `bytes` bytes of content under `bound`.
fn import(cache: &UserCache, d: &Digest, bytes: usize, bound: u64) -> Committed {
    let pin = cache.pin(d, far()).unwrap();
    let Import::Slot(slot) = cache
        .begin_import(&pin, JobId(1), StepId(2), far(), &mut |w| {
            panic!("waited: {w:?}")
        })
        .unwrap()
    else {
        panic!("unexpected hit");
    };
    fs::write(slot.temp_path(), vec![0xab; bytes]).unwrap();
    slot.commit(bound, far()).unwrap()
}

fn set_mtime(path: &Path, secs: u64) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .unwrap();
}

/// Forks; the child runs `f` and exits 0 when it returns true. It is killed after
/// 60 s so a broken test fails instead of hanging.
fn spawn(f: impl FnOnce() -> bool) -> Pid {
    // SAFETY: the child runs `f` (file and lock calls) and _exits without unwinding.
    match unsafe { fork() }.unwrap() {
        ForkResult::Child => {
            // SAFETY: alarm(2) only arms a timer.
            unsafe { libc::alarm(60) };
            let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
            // SAFETY: leave the forked test child without running the harness.
            unsafe { libc::_exit(i32::from(!ok)) };
        }
        ForkResult::Parent { child } => child,
    }
}

fn pipe_files() -> (fs::File, fs::File) {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    (fs::File::from(r), fs::File::from(w))
}

#[test]
fn open_checks_type_owner_and_mode() {
    let r = Root::new("open", None);
    r.open();
    fs::set_permissions(r.dir(), fs::Permissions::from_mode(0o750)).unwrap();
    let err = UserCache::open(&r.root, r.uid).unwrap_err();
    assert!(err.to_string().contains("mode 0750"), "{err}");
    fs::set_permissions(r.dir(), fs::Permissions::from_mode(0o700)).unwrap();
    // Another uid's directory, or ours opened for another uid.
    let other = r.uid.wrapping_add(1);
    fs::create_dir(r.root.join(other.to_string())).unwrap();
    fs::set_permissions(
        r.root.join(other.to_string()),
        fs::Permissions::from_mode(0o700),
    )
    .unwrap();
    let err = UserCache::open(&r.root, other).unwrap_err();
    assert!(matches!(err, CacheError::Untrusted { .. }), "{err}");
    assert!(
        err.to_string().contains(&format!("owned by uid {}", r.uid)),
        "{err}"
    );
    fs::remove_dir(r.root.join(other.to_string())).unwrap();
    // A symlink to a good directory, a file, nothing.
    let real = r.root.join("real");
    fs::rename(r.dir(), &real).unwrap();
    std::os::unix::fs::symlink(&real, r.dir()).unwrap();
    let err = UserCache::open(&r.root, r.uid).unwrap_err();
    assert!(err.to_string().contains("found a symlink"), "{err}");
    fs::remove_file(r.dir()).unwrap();
    fs::write(r.dir(), "").unwrap();
    let err = UserCache::open(&r.root, r.uid).unwrap_err();
    assert!(err.to_string().contains("found a regular file"), "{err}");
    fs::remove_file(r.dir()).unwrap();
    let err = UserCache::open(&r.root, r.uid).unwrap_err();
    assert!(
        matches!(
            err,
            CacheError::OpenDir {
                source: Errno::ENOENT,
                ..
            }
        ),
        "{err}"
    );
    fs::rename(&real, r.dir()).unwrap();
    // Root's way in: the directory checked on a trusted path by sys::dirs.
    let trusted = Dir::open_trusted(&r.root, r.uid).unwrap();
    let dir = trusted.existing_user_subdir(r.uid).unwrap();
    assert_eq!(UserCache::from_dir(&dir, r.uid).unwrap().path(), r.dir());
    let err = UserCache::from_dir(&trusted, r.uid).unwrap_err();
    assert!(err.to_string().contains("mode 0755"), "{err}");
}

#[test]
fn import_commit_hit_and_nothing_left_behind() {
    let r = Root::new("roundtrip", None);
    let cache = r.open();
    let d = digest('a');
    let pin = cache.pin(&d, far()).unwrap();
    assert_eq!(cache.lookup(&pin).unwrap(), None);
    let Import::Slot(slot) = cache
        .begin_import(&pin, JobId(7), StepId(3), far(), &mut |w| panic!("{w:?}"))
        .unwrap()
    else {
        panic!("hit");
    };
    let temp = slot.temp_path();
    assert_eq!(
        temp.file_name().unwrap().to_str().unwrap(),
        format!(".{}.7.3.{}.tmp", d.stem(), std::process::id())
    );
    assert!(!temp.exists(), "enroot import refuses an existing output");
    assert!(r
        .dir()
        .join(CacheFile::ImportLock(d.clone()).name())
        .exists());
    fs::write(&temp, b"squashfs").unwrap();
    let committed = slot.commit(1 << 30, far()).unwrap();
    let Committed::Cached {
        path,
        evicted,
        over_bound,
        ..
    } = &committed
    else {
        panic!("{committed:?}");
    };
    assert_eq!(path, &r.dir().join(entry(&d)));
    assert!(evicted.is_empty() && !over_bound);
    assert_eq!(fs::metadata(path).unwrap().mode() & 0o777, 0o600);
    // The import lock is gone; the step's use lock stays until the pin is dropped.
    assert_eq!(r.names(), [entry(&d), CacheFile::UseLock(d.clone()).name()]);
    set_mtime(path, 1000);
    assert_eq!(cache.lookup(&pin).unwrap().as_ref(), Some(path));
    let age = SystemTime::now().duration_since(fs::metadata(path).unwrap().modified().unwrap());
    assert!(
        age.unwrap_or_default() < Duration::from_secs(60),
        "a hit refreshes the mtime"
    );
    assert_eq!(fs::read(path).unwrap(), b"squashfs");
    // begin_import on an existing entry is a hit, and leaves no lock behind.
    let Import::Hit(hit) = cache
        .begin_import(&pin, JobId(7), StepId(4), far(), &mut |w| panic!("{w:?}"))
        .unwrap()
    else {
        panic!("slot for an existing entry");
    };
    assert_eq!(&hit, path);
    drop(pin);
    assert_eq!(r.names(), [entry(&d)]);
    let list = cache.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].digest.clone(), list[0].in_use), (d, false));
    assert!(list[0].size >= 8);
    assert!(cache.free_space().unwrap().available > 0);
}

#[test]
fn abort_and_drop_remove_the_output_and_the_lock() {
    let r = Root::new("abort", None);
    let cache = r.open();
    let d = digest('b');
    let pin = cache.pin(&d, far()).unwrap();
    for explicit in [true, false] {
        let Import::Slot(slot) = cache
            .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
            .unwrap()
        else {
            panic!("hit");
        };
        fs::write(slot.temp_path(), b"partial").unwrap();
        if explicit {
            slot.abort();
        } else {
            drop(slot);
        }
        assert_eq!(r.names(), [CacheFile::UseLock(d.clone()).name()]);
        assert_eq!(cache.lookup(&pin).unwrap(), None);
    }
    // An import that produced nothing: commit fails clearly and cleans up.
    let Import::Slot(slot) = cache
        .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
        .unwrap()
    else {
        panic!("hit");
    };
    let err = slot.commit(1 << 30, far()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    drop(pin);
    assert!(r.names().is_empty(), "{:?}", r.names());
}

#[test]
fn waiting_for_another_importer_is_reported_and_bounded() {
    let r = Root::new("wait", None);
    let cache = r.open();
    let d = digest('c');
    let pin = cache.pin(&d, far()).unwrap();
    let Import::Slot(_slot) = cache
        .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
        .unwrap()
    else {
        panic!("hit");
    };
    // A second open file (as another step would have) waits, hears about it, and
    // gives up at its deadline.
    let other = r.open();
    let pin2 = other.pin(&d, far()).unwrap();
    let mut waits = Vec::new();
    let started = Instant::now();
    let err = other
        .begin_import_every(
            &pin2,
            JobId(1),
            StepId(2),
            started + Duration::from_millis(350),
            Duration::from_millis(100),
            &mut |w| waits.push(w),
        )
        .unwrap_err();
    assert!(matches!(err, CacheError::ImportTimeout { .. }), "{err}");
    assert!(err.to_string().contains("another step importing"), "{err}");
    assert!(!waits.is_empty() && waits.iter().all(|w| w.what == WaitFor::Importer));
    assert!(waits[0].elapsed < Duration::from_millis(50), "{waits:?}");
    assert!(waits.len() >= 2, "{waits:?}");
}

#[test]
fn concurrent_importers_of_one_digest_import_once() {
    const N: u32 = 6;
    let r = Root::new("coalesce", None);
    let d = digest('d');
    let (mut status_r, status_w) = pipe_files();
    let (go_r, mut go_w) = pipe_files();
    let mut children = Vec::new();
    for i in 0..N {
        let (root, uid, d) = (r.root.clone(), r.uid, d.clone());
        let (mut status, mut go) = (status_w.try_clone().unwrap(), go_r.try_clone().unwrap());
        children.push(spawn(move || {
            let cache = UserCache::open(&root, uid).unwrap();
            let pin = cache.pin(&d, far()).unwrap();
            let mut told = false;
            let import = cache
                .begin_import(&pin, JobId(9), StepId(i), far(), &mut |w| {
                    assert_eq!(w.what, WaitFor::Importer);
                    if !told {
                        status.write_all(b"W").unwrap();
                        told = true;
                    }
                })
                .unwrap();
            match import {
                Import::Slot(slot) => {
                    status.write_all(b"I").unwrap();
                    go.read_exact(&mut [0]).unwrap();
                    fs::write(slot.temp_path(), vec![1u8; KIB64]).unwrap();
                    slot.commit(1 << 30, far()).is_ok()
                }
                Import::Hit(path) => {
                    status.write_all(b"H").unwrap();
                    fs::read(path).unwrap().len() == KIB64
                }
            }
        }));
    }
    drop((status_w, go_r));
    // Each child's first word: the importer's "I" or a waiter's "W". The importer
    // holds the lock until told to go on, so every other child must wait.
    let mut first = vec![0u8; N as usize];
    status_r.read_exact(&mut first).unwrap();
    go_w.write_all(&[0; N as usize]).unwrap();
    for child in children {
        assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
    }
    // Everything the children wrote is in the pipe now. Not read to EOF: children
    // forked by tests running in parallel may hold copies of the write end.
    let mut rest = [0u8; 64];
    nix::fcntl::fcntl(&status_r, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).unwrap();
    let n = status_r.read(&mut rest).unwrap_or(0);
    let rest = &rest[..n];
    let all: Vec<u8> = first.iter().chain(rest).copied().collect();
    let count = |c: u8| all.iter().filter(|b| **b == c).count();
    assert_eq!(
        (count(b'I'), count(b'W'), count(b'H')),
        (1, N as usize - 1, N as usize - 1),
        "{:?}",
        String::from_utf8_lossy(&all)
    );
    assert_eq!(r.names(), [entry(&d)]);
}

#[test]
fn a_killed_importer_leaves_no_entry_and_the_next_one_cleans_up() {
    let r = Root::new("kill", None);
    let d = digest('e');
    let (mut status_r, status_w) = pipe_files();
    let (root, uid, dc) = (r.root.clone(), r.uid, d.clone());
    let mut status = status_w.try_clone().unwrap();
    let child = spawn(move || {
        let cache = UserCache::open(&root, uid).unwrap();
        let pin = cache.pin(&dc, far()).unwrap();
        let Import::Slot(slot) = cache
            .begin_import(&pin, JobId(5), StepId(0), far(), &mut |_| {})
            .unwrap()
        else {
            return false;
        };
        fs::write(slot.temp_path(), b"half an image").unwrap();
        status.write_all(b"I").unwrap();
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    drop(status_w);
    status_r.read_exact(&mut [0]).unwrap();
    kill(child, Signal::SIGKILL).unwrap();
    assert_eq!(
        waitpid(child, None).unwrap(),
        WaitStatus::Signaled(child, Signal::SIGKILL, false)
    );
    let temp = format!(".{}.5.0.{child}.tmp", d.stem());
    let names = r.names();
    assert!(!names.contains(&entry(&d)), "{names:?}");
    assert!(names.contains(&temp), "{names:?}");
    let lock = format!("{}.lock", d.stem());
    assert!(names.contains(&lock), "{names:?}");
    // The killed step's task_exit (root) removes its output and the unheld lock file;
    // another step's temporaries stay.
    let other = format!(".{}.9.0.1.tmp", d.stem());
    fs::write(r.dir().join(&other), b"x").unwrap();
    let removed = r.open().remove_step_temps(JobId(5), StepId(0)).unwrap();
    let use_lock = format!("{}.use", d.stem());
    assert_eq!(removed.removed, vec![temp.clone(), lock.clone(), use_lock]);
    assert_eq!(r.names(), vec![other.clone()]);
    fs::remove_file(r.dir().join(&other)).unwrap();
    // A killed importer whose step could not clean up: the next importer does not wait for the dead one and removes its output.
    let cache = r.open();
    let pin = cache.pin(&d, far()).unwrap();
    assert_eq!(cache.lookup(&pin).unwrap(), None);
    let Import::Slot(slot) = cache
        .begin_import(&pin, JobId(6), StepId(0), far(), &mut |w| {
            panic!("waited for a dead importer: {w:?}")
        })
        .unwrap()
    else {
        panic!("hit on a partial import");
    };
    assert!(!r.dir().join(&temp).exists());
    fs::write(slot.temp_path(), b"whole").unwrap();
    slot.commit(1 << 30, far()).unwrap();
    drop(pin);
    assert_eq!(r.names(), [entry(&d)]);
}

mod eviction;
