//! The image cache in a step (issue 7): `user_init` (slurmstepd, euid = user) resolves
//! a registry image to its manifest digest and pins the digest; the creator task (as
//! the user) finds the entry or imports it once into the cache, coalesced with the
//! user's other steps on the node; `task_exit` (root) removes what a killed import of
//! this step left. The store itself is `sys::cache`, the decisions `core::cache` and
//! `core::plan`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::info;

use super::seams::Io;
use super::{CreateError, Step};
use crate::core::cache::{parse_digest_output, pinned_digest, pinned_uri, Digest};
use crate::core::text::printable;
use crate::spank::log::USER;
use crate::sys::cache::{Committed, EntryUse, Import, UserCache, Waiting};
use crate::sys::runner::Progress;

/// The user's cache and this step's pin of one digest.
pub(super) struct CacheUse {
    pub(super) cache: UserCache,
    pub(super) pin: EntryUse,
}

/// Where the time of a step's setup went, one entry per enroot call or wait, for the
/// verbose line printed once the container runs.
#[derive(Clone, Debug, Default)]
pub(super) struct Timing {
    phases: Vec<(String, Duration)>,
}

impl Timing {
    pub(super) fn add(&mut self, what: impl Into<String>, took: Duration) {
        self.phases.push((what.into(), took));
    }

    /// `digest 12 ms, cache hit 0 ms, direct start 151 ms, total 163 ms`.
    pub(super) fn line(&self) -> String {
        let total: Duration = self.phases.iter().map(|(_, d)| *d).sum();
        let mut parts: Vec<String> = self
            .phases
            .iter()
            .map(|(what, d)| format!("{what} {} ms", d.as_millis()))
            .collect();
        parts.push(format!("total {} ms", total.as_millis()));
        parts.join(", ")
    }
}

/// `importing docker image: URI (10 s, 84 MB written): Downloading 3 missing layers...`
fn progress_line(image: &str, p: &Progress, written: u64) -> String {
    let said = p
        .last_line
        .as_deref()
        .map(|l| format!(": {}", printable(l.trim_start_matches("[INFO] "))))
        .unwrap_or_default();
    format!(
        "importing docker image: {image} ({} s, {} MB written){said}",
        p.elapsed.as_secs(),
        mb(written)
    )
}

/// Bytes as whole megabytes (10^6, as `du --si` and registries count).
fn mb(bytes: u64) -> u64 {
    bytes / 1_000_000
}

impl Step {
    /// The digest of the step's registry image, when the image may go through the
    /// cache: taken from an `@sha256:` reference without any call, else from
    /// `enroot digest URI` (one registry request, no download). Any failure only means
    /// no cache for this step: the import then reports the image's real problem.
    pub(super) fn resolve_digest(
        &self,
        io: Io<'_>,
        job_env: &[OsString],
        uri: &str,
        timing: &mut Timing,
    ) -> Option<Digest> {
        if let Some(digest) = pinned_digest(uri) {
            timing.add("digest (pinned)", Duration::ZERO);
            return Some(digest);
        }
        let started = Instant::now();
        let out = io.enroot.run_split(
            &self.enroot(&["digest", uri], job_env),
            &self.user(),
            &mut self.short(),
        );
        timing.add("enroot digest", started.elapsed());
        match out {
            Ok((stdout, _)) => match parse_digest_output(&stdout) {
                Some(d) => Some(d),
                None => {
                    info!(
                        "enroot digest {uri} printed no digest ({}), not using the image cache",
                        printable(stdout.trim())
                    );
                    None
                }
            },
            Err(e) => {
                info!("could not resolve the digest of {uri}, not using the image cache: {e}");
                None
            }
        }
    }

    /// Opens the user's cache (checked by root in `init_post_opt`) and pins `digest`,
    /// so that its entry is never evicted while this step may use it.
    pub(super) fn pin(&self, digest: &Digest) -> Option<CacheUse> {
        let dir = self.cache_dir.as_ref()?;
        let pinned = UserCache::from_dir(dir, self.job.uid).and_then(|cache| {
            let pin = cache.pin(digest, Instant::now() + self.config.command_timeout)?;
            Ok(CacheUse { cache, pin })
        });
        match pinned {
            Ok(used) => Some(used),
            Err(e) => {
                info!("not using the image cache: {e}");
                None
            }
        }
    }

    /// The cache entry of the pinned digest, imported first if the cache lacks it.
    /// Concurrent steps of the user needing the same digest wait for the one importing
    /// it (a line every 5 s), then use its entry.
    pub(super) fn cached_squashfs(
        &self,
        io: Io<'_>,
        used: &CacheUse,
        uri: &str,
        digest: &Digest,
        env: &[OsString],
        timing: &mut Timing,
    ) -> Result<PathBuf, CreateError> {
        let started = Instant::now();
        if let Some(path) = used.cache.lookup(&used.pin)? {
            timing.add("cache hit", started.elapsed());
            info!("image cache hit: {digest} ({})", path.display());
            return Ok(path);
        }
        let mut waited = |w: Waiting| {
            tracing::error!(
                target: USER,
                "waiting for another step importing docker image: {} ({} s)",
                self.image(),
                w.elapsed.as_secs()
            );
        };
        let deadline = Instant::now() + self.setup_bound();
        let slot = match used.cache.begin_import(
            &used.pin,
            self.job.job,
            self.job.step,
            deadline,
            &mut waited,
        )? {
            Import::Hit(path) => {
                timing.add("wait for import by another step", started.elapsed());
                info!("image cache: imported by another step: {}", path.display());
                return Ok(path);
            }
            Import::Slot(slot) => slot,
        };
        timing.add("cache miss", started.elapsed());
        let tmp = slot.temp_path();
        let out = crate::core::bytes::decode_os(tmp.as_os_str());
        let source = pinned_uri(uri, digest);
        self.announce();
        let importing = Instant::now();
        let mut progress = self.progress_of(tmp.clone());
        let imported = io.enroot.run(
            &self.enroot(&["import", "--output", &out, &source], env),
            &self.user(),
            &mut self.long().with_progress(&mut progress),
        );
        timing.add("enroot import", importing.elapsed());
        if let Err(e) = imported {
            // The slot goes with this scope: the partial output and the lock are removed.
            return Err(self.import_failed(&used.cache, e));
        }
        let committing = Instant::now();
        let committed = slot.commit(self.config.image_cache_size, deadline)?;
        timing.add("cache commit", committing.elapsed());
        self.imported();
        match &committed {
            Committed::Cached {
                path,
                size,
                evicted,
                total,
                over_bound,
            } => {
                info!(
                    "image cache: added {} ({} MB), cache now {} MB",
                    path.display(),
                    mb(*size),
                    mb(*total)
                );
                for e in evicted {
                    info!(
                        "image cache: evicted {} ({} MB, least recently used)",
                        e.path.display(),
                        mb(e.size)
                    );
                }
                if *over_bound {
                    info!(
                        "image cache {} holds {} MB, above image_cache_size ({} MB): every other entry is in use",
                        used.cache.path().display(),
                        mb(*total),
                        mb(self.config.image_cache_size)
                    );
                }
            }
            Committed::StepOnly { size, .. } => info!(
                "image {} ({} MB) is larger than image_cache_size ({} MB): used for this step only",
                self.image(),
                mb(*size),
                mb(self.config.image_cache_size)
            ),
        }
        Ok(committed.path().to_owned())
    }

    /// A failed import: a full disk is said as such, with the path and the keys.
    fn import_failed(
        &self,
        cache: &UserCache,
        source: crate::sys::runner::RunError,
    ) -> CreateError {
        let said_full = source
            .log()
            .is_some_and(|l| l.contains("No space left on device"));
        let space = cache.free_space().ok();
        let nearly_full = space.is_some_and(|s| s.available < (64 << 20).max(s.size / 200));
        if said_full || nearly_full {
            return CreateError::CacheFull {
                image: self.image().to_owned(),
                path: cache.path().display().to_string(),
                available_mb: space.map_or(0, |s| mb(s.available)),
                bound_mb: mb(self.config.image_cache_size),
                source,
            };
        }
        CreateError::Import {
            image: self.image().to_owned(),
            source,
        }
    }

    /// The progress line of an import into `output`: elapsed time, bytes written so
    /// far, and what enroot said last.
    fn progress_of(&self, output: PathBuf) -> impl FnMut(&Progress) + '_ {
        move |p: &Progress| {
            let written = std::fs::symlink_metadata(&output).map_or(0, |m| m.len());
            tracing::error!(target: USER, "{}", progress_line(self.image(), p, written));
        }
    }

    /// Root, in `task_exit`: the temporaries of a killed import of this step, and the
    /// per-step copy of an image too large for the cache.
    pub(super) fn remove_cache_temps(&self) {
        let Some(dir) = self.cache_dir.as_ref() else {
            return;
        };
        match UserCache::from_dir(dir, self.job.uid)
            .and_then(|c| c.remove_step_temps(self.job.job, self.job.step))
        {
            Ok(removed) => {
                for name in removed.removed {
                    info!("image cache: removed {name} of this step");
                }
                for (name, e) in removed.failed {
                    info!("image cache: couldn't remove {name}: {e}");
                }
            }
            Err(e) => info!("image cache: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_say_what_how_long_and_how_much() {
        let p = Progress {
            elapsed: Duration::from_millis(10_400),
            last_line: Some("[INFO] Creating squashfs filesystem...\u{1b}[0m".into()),
        };
        assert_eq!(
            progress_line("a/b:1", &p, 84_500_000),
            "importing docker image: a/b:1 (10 s, 84 MB written): Creating squashfs filesystem...\\u{1b}[0m"
        );
        let quiet = Progress {
            elapsed: Duration::from_secs(5),
            last_line: None,
        };
        assert_eq!(
            progress_line("x", &quiet, 0),
            "importing docker image: x (5 s, 0 MB written)"
        );
    }

    #[test]
    fn the_timing_line_adds_every_phase() {
        let mut t = Timing::default();
        t.add("enroot digest", Duration::from_millis(12));
        t.add("cache hit", Duration::ZERO);
        t.add("enroot start (direct)", Duration::from_millis(151));
        assert_eq!(
            t.line(),
            "enroot digest 12 ms, cache hit 0 ms, enroot start (direct) 151 ms, total 163 ms"
        );
    }
}
