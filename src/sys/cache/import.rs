//! Importing into the image cache: the import lock, the import's output and its
//! commit (with eviction), and the guards of a step's use.

use super::*;

impl UserCache {
    /// Starts importing the pinned digest: takes `N.lock` exclusively, waiting until
    /// `deadline` for another step importing it (`progress` hears about the wait at
    /// once, then every [`PROGRESS_EVERY`]). Returns [`Import::Hit`] when the entry
    /// exists by then, otherwise a slot whose stale temporaries (of killed imports) are
    /// already removed.
    pub fn begin_import(
        &self,
        pin: &EntryUse,
        job: JobId,
        step: StepId,
        deadline: Instant,
        progress: &mut dyn FnMut(Waiting),
    ) -> Result<Import, CacheError> {
        self.begin_import_every(pin, job, step, deadline, PROGRESS_EVERY, progress)
    }

    pub(super) fn begin_import_every(
        &self,
        pin: &EntryUse,
        job: JobId,
        step: StepId,
        deadline: Instant,
        every: Duration,
        progress: &mut dyn FnMut(Waiting),
    ) -> Result<Import, CacheError> {
        self.require_user("import")?;
        let digest = &pin.digest;
        let lock_name = CacheFile::ImportLock(digest.clone()).name();
        let lock = lockfile::lock(
            self.fd(),
            &self.path,
            &lock_name,
            LockKind::Exclusive,
            deadline,
            every,
            &mut |elapsed| {
                progress(Waiting {
                    elapsed,
                    what: WaitFor::Importer,
                })
            },
        )
        .map_err(|e| match e {
            LockFileError::Timeout { waited, .. } => CacheError::ImportTimeout {
                digest: digest.clone(),
                path: self.path.clone(),
                waited,
            },
            other => CacheError::Lock(other),
        })?;
        // From here on, dropping `slot` releases the lock (and removes its file).
        let slot = ImportSlot {
            dir: self.dup_dir()?,
            dir_path: self.path.clone(),
            uid: self.uid,
            temp: StepFile {
                digest: digest.clone(),
                job,
                step,
                pid: std::process::id(),
            },
            lock: Some(lock),
            moved: false,
            owner: std::process::id(),
        };
        if let Some(path) = self.lookup_digest(digest)? {
            return Ok(Import::Hit(path));
        }
        // Only a holder of N.lock writes .N.*.tmp: any found now is a killed import's.
        self.remove_temps_of(digest)?;
        Ok(Import::Slot(slot))
    }

    /// Unlinks every `.N.*.tmp` of `digest`; call with its import lock held.
    pub(super) fn remove_temps_of(&self, digest: &Digest) -> Result<Vec<String>, CacheError> {
        let mut removed = Vec::new();
        for file in dir_files(self.fd(), &self.path)? {
            if matches!(&file, CacheFile::Temp(t) if t.digest == *digest) {
                let name = file.name();
                // A directory planted there is left alone (EISDIR); nothing is followed.
                if unlink(self.fd(), &name).is_ok() {
                    removed.push(name);
                }
            }
        }
        Ok(removed)
    }
}

impl EntryUse {
    /// The pinned digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }
}

impl Drop for EntryUse {
    fn drop(&mut self) {
        // The last user takes the lock exclusively and removes the file; when another
        // step still holds it the conversion fails and only our lock goes.
        if let Some(lock) = self.lock.take().and_then(HeldLock::try_exclusive) {
            let _ = lock.remove(
                self.dir.as_fd(),
                &CacheFile::UseLock(self.digest.clone()).name(),
            );
        }
    }
}

impl ImportSlot {
    /// The digest being imported.
    pub fn digest(&self) -> &Digest {
        &self.temp.digest
    }

    /// Where the import writes its squashfs (`enroot import --output`). The file does
    /// not exist yet (enroot refuses to overwrite).
    pub fn temp_path(&self) -> PathBuf {
        self.dir_path.join(self.temp_name())
    }

    fn temp_name(&self) -> String {
        CacheFile::Temp(self.temp.clone()).name()
    }

    /// Gives up: unlinks the output and releases the import lock (same as dropping).
    pub fn abort(self) {}

    /// Inserts the finished output as the entry, evicting unused least recently used
    /// entries while the cache would exceed `bound` bytes (waiting for other commits
    /// until `deadline`). The output must be a regular file of the user at
    /// [`ImportSlot::temp_path`]; it is made 0600 and fsynced before the rename, so a
    /// crash never leaves a truncated entry. On error the output is removed.
    pub fn commit(mut self, bound: u64, deadline: Instant) -> Result<Committed, CacheError> {
        let cache = UserCache {
            dir: dup_dir(&self.dir, &self.dir_path)?,
            path: self.dir_path.clone(),
            uid: self.uid,
        };
        let temp_name = self.temp_name();
        let temp_path = self.temp_path();
        let (fd, st) = open_regular(cache.fd(), &temp_name, self.uid)
            .map_err(io("open", temp_path.clone()))?
            .ok_or_else(|| CacheError::NotRegular {
                path: temp_path.clone(),
                found: fstatat(cache.fd(), temp_name.as_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
                    .map_or_else(
                        |e| format!("missing ({e})"),
                        |st| {
                            if is_regular(&st) {
                                format!("a regular file owned by uid {}", st.st_uid)
                            } else {
                                kind_name(st.st_mode).to_owned()
                            }
                        },
                    ),
                uid: self.uid,
            })?;
        fchmod(&fd, Mode::from_bits_truncate(0o600)).map_err(io("chmod", temp_path.clone()))?;
        fsync(&fd).map_err(io("sync", temp_path.clone()))?;
        let size = file_size(&st);
        drop(fd);

        let _commit = cache.commit_lock(deadline)?;
        let scan = cache.scan(Some(&self.temp.digest), true)?;
        let Room {
            keep_new: keep,
            evicted,
            total,
            held,
        } = cache.make_room(scan, size, bound);
        release_use_locks(cache.fd(), held);
        let name = if keep {
            CacheFile::Entry(self.temp.digest.clone()).name()
        } else {
            CacheFile::StepOnly(self.temp.clone()).name()
        };
        let path = self.dir_path.join(&name);
        renameat(cache.fd(), temp_name.as_str(), cache.fd(), name.as_str())
            .map_err(io("move the import output to", path.clone()))?;
        self.moved = true;
        // Best effort: the entry is complete either way; this makes the name durable.
        let _ = fsync(cache.fd());
        if !keep {
            return Ok(Committed::StepOnly { path, size });
        }
        Ok(Committed::Cached {
            path,
            size,
            evicted,
            total,
            over_bound: total > bound,
        })
    }
}

impl Drop for ImportSlot {
    fn drop(&mut self) {
        if self.owner != std::process::id() {
            return;
        }
        if !self.moved {
            let _ = unlink(self.dir.as_fd(), &self.temp_name());
        }
        if let Some(lock) = self.lock.take() {
            let _ = lock.remove(
                self.dir.as_fd(),
                &CacheFile::ImportLock(self.temp.digest.clone()).name(),
            );
        }
    }
}
