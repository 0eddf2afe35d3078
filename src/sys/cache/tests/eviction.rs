//! Eviction, oversize images, planted files, prune and root's cleanup.

use super::*;

#[test]
fn eviction_takes_the_least_recently_used_unused_entries() {
    let r = Root::new("evict", None);
    let cache = r.open();
    let [a, b, c, n, m] = ['a', 'b', 'c', 'd', 'e'].map(digest);
    let mut size = 0;
    for (i, d) in [&a, &b, &c].into_iter().enumerate() {
        let Committed::Cached { path, size: s, .. } = import(&cache, d, KIB64, u64::MAX) else {
            panic!()
        };
        size = s;
        set_mtime(&path, 1000 + i as u64);
    }
    assert!(size >= KIB64 as u64);
    // Another process uses the oldest entry, a.
    let (mut status_r, status_w) = pipe_files();
    let (go_r, go_w) = pipe_files();
    let (root, uid, ac) = (r.root.clone(), r.uid, a.clone());
    let (mut status, mut go) = (status_w.try_clone().unwrap(), go_r.try_clone().unwrap());
    let user = spawn(move || {
        let cache = UserCache::open(&root, uid).unwrap();
        let pin = cache.pin(&ac, far()).unwrap();
        status.write_all(b"P").unwrap();
        let _ = go.read(&mut [0]);
        drop(pin);
        true
    });
    drop((status_w, go_r));
    status_r.read_exact(&mut [0]).unwrap();
    let listed = cache.list().unwrap();
    let lru: Vec<_> = listed
        .iter()
        .map(|e| (e.digest.clone(), e.in_use))
        .collect();
    assert_eq!(
        lru,
        [(a.clone(), true), (b.clone(), false), (c.clone(), false)]
    );

    // Room for three: b (oldest unused) goes, not a.
    let got = import(&cache, &n, KIB64, 3 * size);
    let Committed::Cached {
        evicted,
        over_bound,
        total,
        ..
    } = &got
    else {
        panic!("{got:?}")
    };
    assert_eq!(
        evicted.iter().map(|e| e.digest.clone()).collect::<Vec<_>>(),
        vec![b.clone()]
    );
    assert_eq!((*total, *over_bound), (3 * size, false));
    assert!(!r.dir().join(entry(&b)).exists());
    assert!(!r.dir().join(CacheFile::UseLock(b.clone()).name()).exists());
    // Room for one: every unused entry goes, a stays, and that is reported.
    let got = import(&cache, &m, KIB64, size);
    let Committed::Cached {
        evicted,
        over_bound,
        total,
        ..
    } = &got
    else {
        panic!("{got:?}")
    };
    let mut gone: Vec<_> = evicted.iter().map(|e| e.digest.clone()).collect();
    gone.sort();
    assert_eq!(gone, [c.clone(), n.clone()]);
    assert_eq!((*total, *over_bound), (2 * size, true));
    assert_eq!(
        r.names(),
        [entry(&a), CacheFile::UseLock(a.clone()).name(), entry(&m)]
    );

    // A byte, not EOF: parallel tests' children may hold copies of the write end.
    (&go_w).write_all(b"x").unwrap();
    assert_eq!(waitpid(user, None).unwrap(), WaitStatus::Exited(user, 0));
    // Unused now: the next insert may take it.
    let got = import(&cache, &b, KIB64, 2 * size);
    let Committed::Cached {
        evicted,
        over_bound: false,
        ..
    } = &got
    else {
        panic!("{got:?}")
    };
    assert_eq!(
        evicted.iter().map(|e| e.digest.clone()).collect::<Vec<_>>(),
        vec![a.clone()]
    );
    assert_eq!(r.names(), [entry(&b), entry(&m)]);
}

#[test]
fn an_image_larger_than_the_bound_is_for_one_step_only() {
    let r = Root::new("alone", None);
    let cache = r.open();
    let small = digest('1');
    let Committed::Cached { size, .. } = import(&cache, &small, KIB64, u64::MAX) else {
        panic!()
    };
    let big = digest('2');
    let pin = cache.pin(&big, far()).unwrap();
    let Import::Slot(slot) = cache
        .begin_import(&pin, JobId(8), StepId(1), far(), &mut |_| {})
        .unwrap()
    else {
        panic!()
    };
    fs::write(slot.temp_path(), vec![2u8; 2 * KIB64]).unwrap();
    let got = slot.commit(size + 1, far()).unwrap();
    let Committed::StepOnly { path, .. } = &got else {
        panic!("{got:?}")
    };
    let name = format!(".{}.8.1.{}.step", big.stem(), std::process::id());
    assert_eq!(path, &r.dir().join(&name));
    assert_eq!(fs::read(got.path()).unwrap().len(), 2 * KIB64);
    // Not an entry, nothing evicted for it, import lock released.
    assert_eq!(cache.lookup(&pin).unwrap(), None);
    assert!(r.dir().join(entry(&small)).exists());
    assert!(!r
        .dir()
        .join(CacheFile::ImportLock(big.clone()).name())
        .exists());
    // Another importer of the same digest leaves it alone (it is not a temp).
    let Import::Slot(again) = cache
        .begin_import(&pin, JobId(8), StepId(2), far(), &mut |_| {})
        .unwrap()
    else {
        panic!()
    };
    assert!(path.exists());
    drop(again);
    // Step end.
    let removed = cache.remove_step_temps(JobId(8), StepId(1)).unwrap();
    assert_eq!(
        removed,
        Removed {
            removed: vec![name],
            failed: vec![]
        }
    );
    drop(pin);
    assert_eq!(r.names(), [entry(&small)]);
}

/// Plants a symlink to `target`, a dangling symlink, a FIFO or a directory.
fn plant(kind: usize, at: &Path, target: &Path) -> &'static str {
    match kind {
        0 => std::os::unix::fs::symlink(target, at).unwrap(),
        1 => std::os::unix::fs::symlink(target.with_extension("new"), at).unwrap(),
        2 => nix::unistd::mkfifo(at, Mode::from_bits_truncate(0o600)).unwrap(),
        _ => fs::create_dir(at).unwrap(),
    }
    ["a symlink", "a dangling symlink", "a FIFO", "a directory"][kind]
}

fn unplant(at: &Path) {
    if fs::symlink_metadata(at).unwrap().is_dir() {
        fs::remove_dir(at).unwrap();
    } else {
        fs::remove_file(at).unwrap();
    }
}

#[test]
fn files_planted_at_every_name_are_refused_or_replaced_never_followed() {
    let r = Root::new("plant", None);
    let cache = r.open();
    let target = r.root.join("target");
    fs::write(&target, "keep").unwrap();
    let d = digest('f');
    let at = |f: CacheFile| r.dir().join(f.name());
    for kind in 0..4 {
        // At the entry name: a miss; the import replaces it, except a directory,
        // which makes the commit fail and clean up.
        let p = at(CacheFile::Entry(d.clone()));
        let what = plant(kind, &p, &target);
        let pin = cache.pin(&d, far()).unwrap();
        assert_eq!(cache.lookup(&pin).unwrap(), None, "{what}");
        assert!(cache.list().unwrap().is_empty(), "{what}");
        let Import::Slot(slot) = cache
            .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
            .unwrap()
        else {
            panic!("{what}: hit")
        };
        fs::write(slot.temp_path(), b"img").unwrap();
        let res = slot.commit(1 << 30, far());
        if kind == 3 {
            let err = res.unwrap_err();
            let want = format!("couldn't move the import output to {}", p.display());
            assert!(err.to_string().starts_with(&want), "{err}");
            assert_eq!(
                r.names(),
                [entry(&d), CacheFile::UseLock(d.clone()).name()],
                "{what}"
            );
            unplant(&p);
        } else {
            res.unwrap();
            assert!(fs::symlink_metadata(&p).unwrap().is_file(), "{what}");
            fs::remove_file(&p).unwrap();
        }
        drop(pin);

        // At the use lock and the import lock: refused.
        let p = at(CacheFile::UseLock(d.clone()));
        plant(kind, &p, &target);
        assert!(cache.pin(&d, far()).is_err(), "{what}");
        unplant(&p);
        let pin = cache.pin(&d, far()).unwrap();
        let p = at(CacheFile::ImportLock(d.clone()));
        plant(kind, &p, &target);
        assert!(
            cache
                .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
                .is_err(),
            "{what}"
        );
        unplant(&p);

        // At the commit lock: the commit fails and removes the output.
        let Import::Slot(slot) = cache
            .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
            .unwrap()
        else {
            panic!()
        };
        fs::write(slot.temp_path(), b"img").unwrap();
        let p = r.dir().join(COMMIT_LOCK);
        let _ = fs::remove_file(&p);
        plant(kind, &p, &target);
        assert!(slot.commit(1 << 30, far()).is_err(), "{what}");
        unplant(&p);
        assert_eq!(r.names(), [CacheFile::UseLock(d.clone()).name()], "{what}");

        // At our own output (the import wrote a link): refused, removed.
        let Import::Slot(slot) = cache
            .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
            .unwrap()
        else {
            panic!()
        };
        let temp = slot.temp_path();
        plant(kind, &temp, &target);
        let err = slot.commit(1 << 30, far()).unwrap_err();
        assert!(
            err.to_string().contains("not a regular file"),
            "{what}: {err}"
        );
        if kind == 3 {
            unplant(&temp);
        }
        assert_eq!(r.names(), [CacheFile::UseLock(d.clone()).name()], "{what}");

        // At a dead importer's output: removed as a name (a directory is left).
        let stale = at(CacheFile::Temp(StepFile {
            digest: d.clone(),
            job: JobId(3),
            step: StepId(3),
            pid: 3,
        }));
        plant(kind, &stale, &target);
        let Import::Slot(slot) = cache
            .begin_import(&pin, JobId(1), StepId(1), far(), &mut |_| {})
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(fs::symlink_metadata(&stale).is_ok(), kind == 3, "{what}");
        drop(slot);
        if kind == 3 {
            unplant(&stale);
        }
        drop(pin);
        assert!(r.names().is_empty(), "{what}: {:?}", r.names());
    }
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
    assert!(!target.with_extension("new").exists());
}

#[test]
fn an_entry_whose_use_lock_cannot_be_taken_is_never_evicted() {
    let r = Root::new("unprobed", None);
    let cache = r.open();
    let (old, new) = (digest('7'), digest('8'));
    import(&cache, &old, KIB64, u64::MAX);
    nix::unistd::mkfifo(
        &r.dir().join(CacheFile::UseLock(old.clone()).name()),
        Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    assert!(cache.list().unwrap()[0].in_use);
    let got = import(&cache, &new, KIB64, 1 << 16);
    let Committed::Cached {
        evicted,
        over_bound: true,
        ..
    } = &got
    else {
        panic!("{got:?}")
    };
    assert!(evicted.is_empty());
    assert!(r.dir().join(entry(&old)).exists());
}

#[test]
fn prune_removes_unused_entries_and_leftovers_only() {
    let r = Root::new("prune", None);
    let cache = r.open();
    let [a, b, c, dead] = ['a', 'b', 'c', '9'].map(digest);
    for (i, d) in [&a, &b, &c].into_iter().enumerate() {
        let committed = import(&cache, d, KIB64, u64::MAX);
        set_mtime(committed.path(), 100 + i as u64);
    }
    let busy = cache.pin(&a, far()).unwrap();
    // Leftovers of a killed import of `dead` and of a killed step of job 4.
    let stale_temp = CacheFile::Temp(StepFile {
        digest: dead.clone(),
        job: JobId(4),
        step: StepId(0),
        pid: 77,
    })
    .name();
    let step_file = CacheFile::StepOnly(StepFile {
        digest: dead.clone(),
        job: JobId(4),
        step: StepId(0),
        pid: 77,
    })
    .name();
    for n in [
        &stale_temp,
        &step_file,
        &CacheFile::ImportLock(dead.clone()).name(),
        &CacheFile::UseLock(dead.clone()).name(),
    ] {
        fs::write(r.dir().join(n), "").unwrap();
    }
    let size = cache.list().unwrap()[0].size;
    let pruned = cache.prune(size * 2, far()).unwrap();
    assert_eq!(
        pruned
            .evicted
            .iter()
            .map(|e| e.digest.clone())
            .collect::<Vec<_>>(),
        vec![b.clone()]
    );
    assert_eq!(pruned.total, 2 * size);
    let mut stale = pruned.stale_removed.clone();
    stale.sort();
    let mut want = vec![
        stale_temp,
        CacheFile::ImportLock(dead.clone()).name(),
        CacheFile::UseLock(dead.clone()).name(),
    ];
    want.sort();
    assert_eq!(stale, want);
    assert_eq!(pruned.step_files, vec![step_file.clone()]);
    let pruned = cache.prune(0, far()).unwrap();
    assert_eq!(
        pruned
            .evicted
            .iter()
            .map(|e| e.digest.clone())
            .collect::<Vec<_>>(),
        vec![c.clone()]
    );
    assert_eq!(
        r.names(),
        [step_file, entry(&a), CacheFile::UseLock(a.clone()).name()]
    );
    drop(busy);
    cache.remove_job_temps(JobId(4)).unwrap();
    cache.prune(0, far()).unwrap();
    assert!(r.names().is_empty(), "{:?}", r.names());
}

/// As root in CI: the directory belongs to an unprivileged uid, like a real user's.
fn other_uid() -> Option<u32> {
    nix::unistd::geteuid().is_root().then_some(65534)
}

#[test]
fn remove_step_temps_as_root_unlinks_only_that_steps_files() {
    let r = Root::new("rootrm", other_uid());
    let cache = r.open();
    let target = r.root.join("target");
    fs::write(&target, "keep").unwrap();
    let d = digest('5');
    let sf = |job, step, pid| StepFile {
        digest: d.clone(),
        job: JobId(job),
        step: StepId(step),
        pid,
    };
    let dir = r.dir();
    let link = CacheFile::Temp(sf(7, 3, 100)).name();
    let plain = CacheFile::StepOnly(sf(7, 3, 101)).name();
    let subdir = CacheFile::Temp(sf(7, 3, 102)).name();
    std::os::unix::fs::symlink(&target, dir.join(&link)).unwrap();
    fs::write(dir.join(&plain), "").unwrap();
    fs::create_dir(dir.join(&subdir)).unwrap();
    let stem = d.stem();
    let keep: Vec<Vec<u8>> = [
        format!(".{stem}.07.3.1.tmp"),
        format!(".{stem}.7.3.1.tmp\n"),
        format!(".{stem}.7.3.1.tmp.x"),
        format!("..{stem}.7.3.1.tmp"),
        format!("{stem}.7.3.1.tmp"),
        format!(".{stem}.7.3.tmp"),
        format!(".{stem}.7.4.1.tmp"),
        format!(".{stem}.8.3.1.tmp"),
        format!(".{stem}.17.3.1.tmp"),
        entry(&d),
    ]
    .into_iter()
    .map(String::into_bytes)
    .chain([
        [b".", stem.as_bytes(), b".7.3.\xff.tmp"].concat(),
        b"\xff.tmp".to_vec(),
    ])
    .collect();
    // A use lock nobody holds (its killed step's) goes with the step's temporaries.
    let use_lock = CacheFile::UseLock(d.clone()).name();
    for name in keep.iter().chain([&use_lock.clone().into_bytes()]) {
        let path = dir.join(std::ffi::OsStr::from_bytes(name));
        fs::write(&path, "x").unwrap();
        std::os::unix::fs::lchown(&path, Some(r.uid), None).unwrap();
    }
    if nix::unistd::geteuid().as_raw() != r.uid {
        // Root may clean up, but never creates files in the user's directory.
        let err = cache.pin(&d, far()).unwrap_err();
        assert!(matches!(err, CacheError::NotAsUser { .. }), "{err}");
        assert!(cache.prune(0, far()).is_err());
    }
    let mut removed = cache.remove_step_temps(JobId(7), StepId(3)).unwrap();
    removed.removed.sort();
    let mut want = vec![link.clone(), plain.clone(), use_lock];
    want.sort();
    assert_eq!(removed.removed, want);
    assert_eq!(removed.failed.len(), 1);
    assert_eq!(removed.failed[0].0, subdir);
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
    for name in &keep {
        assert!(
            fs::symlink_metadata(dir.join(std::ffi::OsStr::from_bytes(name))).is_ok(),
            "{}",
            String::from_utf8_lossy(name)
        );
    }
    assert!(dir.join(&subdir).is_dir());
    // The whole job: its other step goes too, job 8 and 17 stay.
    let removed = cache.remove_job_temps(JobId(7)).unwrap();
    assert_eq!(removed.removed, [format!(".{stem}.7.4.1.tmp")]);
    assert!(dir.join(format!(".{stem}.8.3.1.tmp")).exists());
    assert!(dir.join(format!(".{stem}.17.3.1.tmp")).exists());
    // list works as root too and follows nothing.
    assert_eq!(cache.list().unwrap().len(), 1);
}

#[test]
fn an_unprivileged_user_runs_the_whole_cycle() {
    let r = Root::new("asuser", other_uid());
    let (root, uid) = (r.root.clone(), r.uid);
    let d = digest('6');
    let dc = d.clone();
    let child = spawn(move || {
        if nix::unistd::geteuid().as_raw() != uid {
            let id = nix::unistd::Uid::from_raw(uid);
            let gid = nix::unistd::Gid::from_raw(uid);
            nix::unistd::setgroups(&[gid]).unwrap();
            nix::unistd::setresgid(gid, gid, gid).unwrap();
            nix::unistd::setresuid(id, id, id).unwrap();
        }
        let cache = UserCache::open(&root, uid).unwrap();
        let committed = import(&cache, &dc, KIB64, u64::MAX);
        let pin = cache.pin(&dc, far()).unwrap();
        let hit = cache.lookup(&pin).unwrap();
        hit.as_deref() == Some(committed.path())
    });
    assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0));
    let meta = fs::metadata(r.dir().join(entry(&d))).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (uid, 0o600));
    assert_eq!(r.names(), [entry(&d)]);
}
