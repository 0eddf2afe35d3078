//! The image cache's contents: listing, the LRU eviction under the bound, pruning and
//! the root-side removal of a step's or job's temporaries.

use super::*;

impl UserCache {
    /// The entries with their sizes and last use, least recently used first. `in_use`
    /// is probed with a non-blocking exclusive attempt on `N.use`, released at once.
    /// Safe as root: it only opens lock files, without following or blocking.
    pub fn list(&self) -> Result<Vec<EntryInfo>, CacheError> {
        let mut out = Vec::new();
        for (candidate, lock) in self.scan(None, false)? {
            drop(lock);
            out.push(self.info(&candidate));
        }
        out.sort_by(|a, b| (a.last_used, &a.digest).cmp(&(b.last_used, &b.digest)));
        Ok(out)
    }

    pub(super) fn info(&self, c: &Candidate<Digest>) -> EntryInfo {
        EntryInfo {
            digest: c.key.clone(),
            path: self.path.join(CacheFile::Entry(c.key.clone()).name()),
            size: c.size,
            last_used: system_time(c.last_used),
            in_use: c.in_use,
        }
    }

    /// Every entry (a regular file of the user at an entry name) except `exclude`,
    /// with its use lock probed. With `hold`, an unused entry's `N.use` is created if
    /// needed and stays locked exclusively (returned), so it cannot be pinned until
    /// released; without, the probe creates nothing and releases at once.
    pub(super) fn scan(&self, exclude: Option<&Digest>, hold: bool) -> Result<Scanned, CacheError> {
        let mut out = Vec::new();
        for file in dir_files(self.fd(), &self.path)? {
            let CacheFile::Entry(digest) = file else {
                continue;
            };
            if exclude == Some(&digest) {
                continue;
            }
            let name = CacheFile::Entry(digest.clone()).name();
            let st = match fstatat(self.fd(), name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) if is_regular(&st) && st.st_uid == self.uid => st,
                Ok(_) | Err(Errno::ENOENT) => continue,
                Err(e) => return Err(io("stat", self.path.join(&name))(e)),
            };
            let use_name = CacheFile::UseLock(digest.clone()).name();
            // A use lock that cannot be probed (something planted there) counts as in
            // use: never remove what might be in use.
            let (in_use, lock) = match lockfile::try_lock(
                self.fd(),
                &self.path,
                &use_name,
                LockKind::Exclusive,
                hold,
            ) {
                Ok(Attempt::Locked(lock)) => (false, hold.then_some(lock)),
                Ok(Attempt::Missing) => (false, None),
                Ok(Attempt::Busy) | Err(_) => (true, None),
            };
            out.push((
                Candidate {
                    key: digest,
                    size: file_size(&st),
                    last_used: mtime_ns(&st),
                    in_use,
                },
                lock,
            ));
        }
        Ok(out)
    }

    /// Removes one entry whose use lock we hold exclusively, with its leftovers: an
    /// unheld import lock and the temporaries of killed imports.
    pub(super) fn evict(&self, digest: &Digest, use_lock: HeldLock) -> Result<(), CacheError> {
        let name = CacheFile::Entry(digest.clone()).name();
        let result = unlink(self.fd(), &name).map_err(io("remove", self.path.join(&name)));
        let lock_name = CacheFile::ImportLock(digest.clone()).name();
        if let Ok(Attempt::Locked(lock)) = lockfile::try_lock(
            self.fd(),
            &self.path,
            &lock_name,
            LockKind::Exclusive,
            false,
        ) {
            let _ = self.remove_temps_of(digest);
            let _ = lock.remove(self.fd(), &lock_name);
        }
        let _ = use_lock.remove(self.fd(), &CacheFile::UseLock(digest.clone()).name());
        result
    }

    /// Takes `commit.lock` (kept in place between uses).
    pub(super) fn commit_lock(&self, deadline: Instant) -> Result<HeldLock, CacheError> {
        Ok(lockfile::lock(
            self.fd(),
            &self.path,
            COMMIT_LOCK,
            LockKind::Exclusive,
            deadline,
            PROGRESS_EVERY,
            &mut |_| {},
        )?)
    }

    /// Evicts the unused entries chosen by `plan_eviction` for `incoming` bytes under
    /// `bound`.
    pub(super) fn make_room(&self, scan: Scanned, incoming: u64, bound: u64) -> Room {
        let candidates: Vec<Candidate<Digest>> = scan.iter().map(|(c, _)| c.clone()).collect();
        let plan = plan_eviction(&candidates, incoming, bound);
        let mut held: Vec<(Digest, HeldLock)> = Vec::new();
        let mut infos = Vec::new();
        for (candidate, lock) in scan {
            if let Some(lock) = lock {
                held.push((candidate.key.clone(), lock));
            }
            infos.push(candidate);
        }
        if !plan.keep_new {
            return Room {
                keep_new: false,
                evicted: Vec::new(),
                total: plan.total,
                held,
            };
        }
        let mut total = plan.total;
        let mut evicted = Vec::new();
        for digest in &plan.evict {
            let Some(candidate) = infos.iter().find(|c| c.key == *digest) else {
                continue;
            };
            // Only an entry whose use lock the scan holds can go (always the case for
            // the unused ones it returns when holding).
            let Some(pos) = held.iter().position(|(d, _)| d == digest) else {
                total = total.saturating_add(candidate.size);
                continue;
            };
            let (_, lock) = held.swap_remove(pos);
            match self.evict(digest, lock) {
                Ok(()) => evicted.push(self.info(candidate)),
                // Still there: it still counts.
                Err(_) => total = total.saturating_add(candidate.size),
            }
        }
        Room {
            keep_new: true,
            evicted,
            total,
            held,
        }
    }

    /// Shrinks the cache to at most `target` bytes by evicting unused entries, least
    /// recently used first (`0`: every unused entry), and removes the leftovers of
    /// killed imports and lock files nobody holds. Never waits for a lock other than
    /// `commit.lock` (until `deadline`); entries in use stay.
    pub fn prune(&self, target: u64, deadline: Instant) -> Result<Pruned, CacheError> {
        self.require_user("prune")?;
        let _commit = self.commit_lock(deadline)?;
        let scan = self.scan(None, true)?;
        let room = self.make_room(scan, 0, target);
        release_use_locks(self.fd(), room.held);
        let mut pruned = Pruned {
            evicted: room.evicted,
            total: room.total,
            ..Pruned::default()
        };
        let files = dir_files(self.fd(), &self.path)?;
        let mut digests: Vec<Digest> = Vec::new();
        for file in &files {
            match file {
                CacheFile::Temp(t) => digests.push(t.digest.clone()),
                CacheFile::ImportLock(d) | CacheFile::UseLock(d) => digests.push(d.clone()),
                CacheFile::StepOnly(_) => pruned.step_files.push(file.name()),
                CacheFile::Entry(_) | CacheFile::CommitLock => {}
            }
        }
        digests.sort();
        digests.dedup();
        for digest in digests {
            let has_temps = files
                .iter()
                .any(|f| matches!(f, CacheFile::Temp(t) if t.digest == digest));
            let lock_name = CacheFile::ImportLock(digest.clone()).name();
            if let Ok(Attempt::Locked(lock)) = lockfile::try_lock(
                self.fd(),
                &self.path,
                &lock_name,
                LockKind::Exclusive,
                has_temps,
            ) {
                pruned.stale_removed.extend(self.remove_temps_of(&digest)?);
                let existed = files.contains(&CacheFile::ImportLock(digest.clone()));
                if lock.remove(self.fd(), &lock_name).is_ok() && existed {
                    pruned.stale_removed.push(lock_name);
                }
            }
            let use_name = CacheFile::UseLock(digest.clone()).name();
            if let Ok(Attempt::Locked(lock)) =
                lockfile::try_lock(self.fd(), &self.path, &use_name, LockKind::Exclusive, false)
            {
                if lock.remove(self.fd(), &use_name).is_ok() {
                    pruned.stale_removed.push(use_name);
                }
            }
        }
        Ok(pruned)
    }

    /// Unlinks the temporaries and per-step files of one step (after its creator task
    /// was killed mid-import, or at step end for a [`Committed::StepOnly`] image). Safe
    /// as root: only names that parse strictly as this step's files are unlinked
    /// through the verified directory fd; nothing is opened or followed, a directory
    /// planted at such a name is left (reported in `failed`).
    pub fn remove_step_temps(&self, job: JobId, step: StepId) -> Result<Removed, CacheError> {
        self.remove_temps(|f| f.job == job && f.step == step)
    }

    /// Like [`UserCache::remove_step_temps`] for every step of `job` (the job's end).
    pub fn remove_job_temps(&self, job: JobId) -> Result<Removed, CacheError> {
        self.remove_temps(|f| f.job == job)
    }

    fn remove_temps(&self, matches: impl Fn(&StepFile) -> bool) -> Result<Removed, CacheError> {
        let mut out = Removed::default();
        let mut killed: Vec<Digest> = Vec::new();
        for file in dir_files(self.fd(), &self.path)? {
            let (CacheFile::Temp(f) | CacheFile::StepOnly(f)) = &file else {
                continue;
            };
            if !matches(f) {
                continue;
            }
            let name = file.name();
            match unlink(self.fd(), &name) {
                Ok(()) => out.removed.push(name),
                Err(e) => out.failed.push((name, e)),
            }
            if matches!(file, CacheFile::Temp(_)) && !killed.contains(&f.digest) {
                killed.push(f.digest.clone());
            }
        }
        // A killed import also left its lock files, which nobody holds now (a step
        // importing or using the digest meanwhile holds them: then they stay).
        for digest in killed {
            for lock_name in [
                CacheFile::ImportLock(digest.clone()).name(),
                CacheFile::UseLock(digest).name(),
            ] {
                if let Ok(Attempt::Locked(lock)) = lockfile::try_lock(
                    self.fd(),
                    &self.path,
                    &lock_name,
                    LockKind::Exclusive,
                    false,
                ) {
                    if lock.remove(self.fd(), &lock_name).is_ok() {
                        out.removed.push(lock_name);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Free and total space of the file system holding the cache, for messages such as
    /// "no space left in <path> (image_cache_size=...)".
    pub fn free_space(&self) -> Result<FreeSpace, CacheError> {
        let st = fstatvfs(self.fd()).map_err(io("statvfs", self.path.clone()))?;
        let frag = st.fragment_size();
        Ok(FreeSpace {
            available: st.blocks_available().saturating_mul(frag),
            size: st.blocks().saturating_mul(frag),
        })
    }
}
