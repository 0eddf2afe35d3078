//! Decisions of the node-local image cache (issue 7 item 2): digests, the file names
//! under `<image_cache_path>/<uid>/`, and which entries to evict.
//!
//! Used by slurmstepd (`user_init`: the pinned digest of an image reference), by the
//! creator task (the cache's file names and the eviction choice, through
//! `crate::sys::cache`) and by root in `task_exit` (parsing the names of the step's
//! temporary files before unlinking them). Every name is parsed strictly and must be
//! in canonical form, because root acts on names found in a directory the user owns.
//!
//! Files of one digest `sha256:<hex>`, with `N` = `sha256-<hex>`:
//!
//! | name | what |
//! |---|---|
//! | `N.sqsh` | the entry, a squashfs; only ever appears by rename |
//! | `N.lock` | import lock, held exclusively by the one process importing the digest |
//! | `N.use` | use lock, held shared by every step using the entry |
//! | `.N.<job>.<step>.<pid>.tmp` | an import's output while it runs |
//! | `.N.<job>.<step>.<pid>.step` | an image larger than the whole cache, kept for one step |
//! | `commit.lock` | serialises inserts and evictions of the whole cache |

use std::fmt;

use crate::core::image::{classify, ImageSource};
use crate::core::naming::{JobId, StepId};

/// The only digest algorithm registries and enroot use for manifests.
const ALGORITHM: &str = "sha256";
/// Hex digits of a sha256 digest.
const HEX_LEN: usize = 64;

/// A manifest digest `sha256:<64 lowercase hex digits>`; nothing else parses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

impl Digest {
    /// Parses `sha256:<64 lowercase hex>` exactly (no whitespace, no upper case).
    pub fn parse(s: &str) -> Option<Digest> {
        let hex = s.strip_prefix(ALGORITHM)?.strip_prefix(':')?;
        Digest::from_hex(hex)
    }

    fn from_hex(hex: &str) -> Option<Digest> {
        let ok =
            hex.len() == HEX_LEN && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| Digest {
            hex: hex.to_owned(),
        })
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// `sha256-<hex>`: the digest as a file name stem (no `:`, which some tools treat
    /// as a separator).
    pub fn stem(&self) -> String {
        format!("{ALGORITHM}-{}", self.hex)
    }

    fn from_stem(stem: &str) -> Option<Digest> {
        Digest::from_hex(stem.strip_prefix(ALGORITHM)?.strip_prefix('-')?)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{ALGORITHM}:{}", self.hex)
    }
}

/// The digest printed by `enroot digest` (its stdout): exactly one non-empty line.
pub fn parse_digest_output(stdout: &str) -> Option<Digest> {
    let mut lines = stdout.lines().map(str::trim).filter(|l| !l.is_empty());
    let line = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    Digest::parse(line)
}

/// The digest an image reference pins with a trailing `@sha256:<hex>` (enroot >= 4.0
/// accepts `[USER@]REGISTRY#IMAGE[:TAG]@DIGEST` and the docker forms), for `docker://`
/// URIs and plain references alike. Such an image needs no `enroot digest` call, so no
/// network, to be found in the cache. `None` for squashfs files, `dockerd://` images
/// (the local daemon's image, not a registry manifest) and anything that is not a
/// well-formed pinned reference.
pub fn pinned_digest(image: &str) -> Option<Digest> {
    let ImageSource::Registry { uri } = classify(image) else {
        return None;
    };
    let reference = uri.strip_prefix("docker://")?;
    let (name, digest) = reference.rsplit_once('@')?;
    let bad_end = name.ends_with(['/', '#', ':', '@']);
    let bad_char = name.chars().any(|c| c.is_whitespace() || c.is_control());
    if name.is_empty() || bad_end || bad_char || name.contains("://") {
        return None;
    }
    Digest::parse(digest)
}

/// The URI to import so that the content matches `digest` even if the tag is pushed
/// again between `enroot digest` and `enroot import`: `uri@digest` (a tag in front of
/// the digest is ignored by enroot), or `uri` itself when it already pins `digest`.
pub fn pinned_uri(uri: &str, digest: &Digest) -> String {
    if pinned_digest(uri).as_ref() == Some(digest) {
        uri.to_owned()
    } else {
        format!("{uri}@{digest}")
    }
}

/// The owner of a per-step file: which step of which job, and the importing process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepFile {
    pub digest: Digest,
    pub job: JobId,
    pub step: StepId,
    pub pid: u32,
}

/// A file of the cache directory, by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheFile {
    /// `N.sqsh`: a cache entry.
    Entry(Digest),
    /// `N.lock`: the import lock.
    ImportLock(Digest),
    /// `N.use`: the use lock.
    UseLock(Digest),
    /// `.N.<job>.<step>.<pid>.tmp`: an import in progress (or a killed one's leftover).
    Temp(StepFile),
    /// `.N.<job>.<step>.<pid>.step`: an image too large for the cache, used by one step.
    StepOnly(StepFile),
    /// `commit.lock`.
    CommitLock,
}

/// The name of the cache-wide commit lock.
pub const COMMIT_LOCK: &str = "commit.lock";

impl CacheFile {
    /// The file name.
    pub fn name(&self) -> String {
        match self {
            CacheFile::Entry(d) => format!("{}.sqsh", d.stem()),
            CacheFile::ImportLock(d) => format!("{}.lock", d.stem()),
            CacheFile::UseLock(d) => format!("{}.use", d.stem()),
            CacheFile::Temp(f) => step_file_name(f, "tmp"),
            CacheFile::StepOnly(f) => step_file_name(f, "step"),
            CacheFile::CommitLock => COMMIT_LOCK.to_owned(),
        }
    }

    /// Parses a directory entry's name. Only the exact names [`CacheFile::name`]
    /// produces parse (no leading zeros or signs in numbers, no other bytes), so
    /// `parse(n).map(|f| f.name()) == Some(n)` whenever it is `Some`.
    pub fn parse(name: &[u8]) -> Option<CacheFile> {
        // The longest valid name is a step file with three 10-digit numbers.
        if name.len() > 128 {
            return None;
        }
        let name = std::str::from_utf8(name).ok()?;
        let file = CacheFile::parse_loose(name)?;
        (file.name() == name).then_some(file)
    }

    fn parse_loose(name: &str) -> Option<CacheFile> {
        if name == COMMIT_LOCK {
            return Some(CacheFile::CommitLock);
        }
        if let Some(hidden) = name.strip_prefix('.') {
            let (rest, kind) = hidden.rsplit_once('.')?;
            let mut parts = rest.split('.');
            let file = StepFile {
                digest: Digest::from_stem(parts.next()?)?,
                job: JobId(parts.next()?.parse().ok()?),
                step: StepId(parts.next()?.parse().ok()?),
                pid: parts.next()?.parse().ok()?,
            };
            if parts.next().is_some() {
                return None;
            }
            return match kind {
                "tmp" => Some(CacheFile::Temp(file)),
                "step" => Some(CacheFile::StepOnly(file)),
                _ => None,
            };
        }
        let (stem, kind) = name.rsplit_once('.')?;
        let digest = Digest::from_stem(stem)?;
        match kind {
            "sqsh" => Some(CacheFile::Entry(digest)),
            "lock" => Some(CacheFile::ImportLock(digest)),
            "use" => Some(CacheFile::UseLock(digest)),
            _ => None,
        }
    }
}

fn step_file_name(f: &StepFile, kind: &str) -> String {
    format!(".{}.{}.{}.{}.{kind}", f.digest.stem(), f.job, f.step, f.pid)
}

/// One cache entry as the eviction choice sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<K> {
    /// Identifies the entry to the caller (a digest).
    pub key: K,
    /// Allocated bytes (`st_blocks * 512`).
    pub size: u64,
    /// Last use, in nanoseconds since the epoch (the entry's mtime, refreshed on a hit).
    pub last_used: i128,
    /// True when a step holds its use lock: never evicted.
    pub in_use: bool,
}

/// What to do when an entry of `incoming` bytes is added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvictionPlan<K> {
    /// False when the new entry alone is larger than the bound: it is not cached (the
    /// step uses it once) and nothing is evicted for it.
    pub keep_new: bool,
    /// The entries to remove, least recently used first.
    pub evict: Vec<K>,
    /// The cache's size afterwards, the new entry included when kept.
    pub total: u64,
    /// True when `total` is still above the bound: every other entry is in use.
    pub over_bound: bool,
}

/// Chooses the evictions for an insert of `incoming` bytes under `bound`: while the
/// total (entries plus the new one) exceeds the bound, the least recently used entry
/// that is not in use goes (ties broken by key, so the choice is deterministic).
/// `incoming = 0` shrinks an existing cache to `bound`.
pub fn plan_eviction<K: Ord + Clone>(
    entries: &[Candidate<K>],
    incoming: u64,
    bound: u64,
) -> EvictionPlan<K> {
    // u128: a sum of u64 sizes cannot overflow it, so no saturation hides an excess.
    let existing: u128 = entries.iter().map(|e| u128::from(e.size)).sum();
    let bound_wide = u128::from(bound);
    let clamp = |n: u128| u64::try_from(n).unwrap_or(u64::MAX);
    if incoming > bound {
        return EvictionPlan {
            keep_new: false,
            evict: Vec::new(),
            total: clamp(existing),
            over_bound: existing > bound_wide,
        };
    }
    let mut unused: Vec<&Candidate<K>> = entries.iter().filter(|e| !e.in_use).collect();
    unused.sort_by(|a, b| (a.last_used, &a.key).cmp(&(b.last_used, &b.key)));
    let mut total = existing + u128::from(incoming);
    let mut evict = Vec::new();
    for e in unused {
        if total <= bound_wide {
            break;
        }
        total -= u128::from(e.size);
        evict.push(e.key.clone());
    }
    EvictionPlan {
        keep_new: true,
        evict,
        total: clamp(total),
        over_bound: total > bound_wide,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn digest() -> Digest {
        Digest::parse(&format!("sha256:{HEX}")).unwrap()
    }

    #[test]
    fn digest_parsing_is_strict() {
        let d = digest();
        assert_eq!(d.to_string(), format!("sha256:{HEX}"));
        assert_eq!(d.hex(), HEX);
        assert_eq!(d.stem(), format!("sha256-{HEX}"));
        let upper = HEX.to_uppercase();
        let short = &HEX[1..];
        let bad = [
            String::new(),
            "sha256:".into(),
            HEX.into(),
            format!("sha256:{short}"),
            format!("sha256:{HEX}0"),
            format!("sha256:{upper}"),
            format!("SHA256:{HEX}"),
            format!("sha512:{HEX}"),
            format!("sha256-{HEX}"),
            format!(" sha256:{HEX}"),
            format!("sha256:{HEX}\n"),
            format!("sha256: {short}"),
            format!("sha256:{}g", &HEX[1..]),
            format!("sha256:{}é", &HEX[2..]),
            format!("sha256:{}/", &HEX[1..]),
        ];
        for s in &bad {
            assert_eq!(Digest::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn enroot_digest_output() {
        let want = Some(digest());
        assert_eq!(parse_digest_output(&format!("sha256:{HEX}\n")), want);
        assert_eq!(parse_digest_output(&format!("sha256:{HEX}\r\n")), want);
        assert_eq!(parse_digest_output(&format!("\nsha256:{HEX}\n\n")), want);
        for bad in [
            String::new(),
            "\n".into(),
            format!("sha256:{HEX}\nsha256:{HEX}\n"),
            format!("[INFO] x\nsha256:{HEX}\n"),
            format!("digest sha256:{HEX}"),
        ] {
            assert_eq!(parse_digest_output(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn pinned_digests() {
        let d = format!("sha256:{HEX}");
        let yes = [
            format!("ubuntu@{d}"),
            format!("ubuntu:24.04@{d}"),
            format!("docker://ubuntu@{d}"),
            format!("docker://nvcr.io#nvidia/pytorch:21.12-py3@{d}"),
            format!("nvcr.io#nvidia/pytorch@{d}"),
            format!("docker://user@nvcr.io#nvidia/pytorch@{d}"),
            format!("user@reg#img@{d}"),
            format!("docker://registry.example.com:5000/team/img:tag@{d}"),
            format!("docker://user@{d}"),
        ];
        for image in &yes {
            assert_eq!(pinned_digest(image), Some(digest()), "{image}");
        }
        let no = [
            "ubuntu".to_owned(),
            "ubuntu:24.04".into(),
            "user@reg#img".into(),
            d.clone(),
            format!("docker://{d}"),
            format!("@{d}"),
            format!("docker://@{d}"),
            format!("reg#@{d}"),
            format!("reg/@{d}"),
            format!("img:@{d}"),
            format!("a@@{d}"),
            format!("img @{d}"),
            format!("img\n@{d}"),
            format!("img@{d} "),
            format!("img@{}", d.to_uppercase()),
            format!("img@sha256:{}", &HEX[1..]),
            format!("img@{d}@x"),
            format!("dockerd://ubuntu@{d}"),
            format!("/images/ubuntu@{d}"),
            format!("./ubuntu@{d}"),
            format!(".ubuntu@{d}"),
            format!("podman://ubuntu@{d}"),
        ];
        for image in &no {
            assert_eq!(pinned_digest(image), None, "{image}");
        }
    }

    #[test]
    fn pinned_uris() {
        let d = digest();
        assert_eq!(
            pinned_uri("docker://ubuntu:24.04", &d),
            format!("docker://ubuntu:24.04@{d}")
        );
        assert_eq!(
            pinned_uri("docker://nvcr.io#nvidia/pytorch", &d),
            format!("docker://nvcr.io#nvidia/pytorch@{d}")
        );
        let already = format!("docker://ubuntu@{d}");
        assert_eq!(pinned_uri(&already, &d), already);
        for s in [
            "docker://ubuntu:24.04".to_owned(),
            "docker://user@reg#img".into(),
        ] {
            assert_eq!(pinned_digest(&pinned_uri(&s, &d)), Some(d.clone()), "{s}");
        }
    }

    #[test]
    fn file_names_round_trip() {
        let d = digest();
        let sf = StepFile {
            digest: d.clone(),
            job: JobId(42),
            step: StepId(0xffff_fffb),
            pid: 4_000_000_000,
        };
        let stem = d.stem();
        let cases = [
            (CacheFile::Entry(d.clone()), format!("{stem}.sqsh")),
            (CacheFile::ImportLock(d.clone()), format!("{stem}.lock")),
            (CacheFile::UseLock(d.clone()), format!("{stem}.use")),
            (
                CacheFile::Temp(sf.clone()),
                format!(".{stem}.42.4294967291.4000000000.tmp"),
            ),
            (
                CacheFile::StepOnly(sf),
                format!(".{stem}.42.4294967291.4000000000.step"),
            ),
            (CacheFile::CommitLock, "commit.lock".to_owned()),
        ];
        for (file, name) in cases {
            assert_eq!(file.name(), name);
            assert_eq!(CacheFile::parse(name.as_bytes()), Some(file), "{name}");
        }
    }

    #[test]
    fn hostile_names_do_not_parse() {
        let stem = digest().stem();
        let upper = stem.to_uppercase();
        let short = &stem[1..];
        let bad: Vec<Vec<u8>> = [
            String::new(),
            ".".into(),
            "..".into(),
            stem.clone(),
            format!("{stem}."),
            format!("{stem}.sqsh.tmp"),
            format!("{stem}.sqsh "),
            format!(" {stem}.sqsh"),
            format!("{stem}.SQSH"),
            format!("{upper}.sqsh"),
            format!("sha256:{}.sqsh", digest().hex()),
            format!("{short}.sqsh"),
            format!("{stem}0.sqsh"),
            format!("{stem}.sqsh\n"),
            format!("{stem}.squashfs"),
            format!("./{stem}.sqsh"),
            format!("{stem}/x.sqsh"),
            format!(".{stem}.sqsh"),
            format!(".{stem}.1.2.3"),
            format!(".{stem}.1.2.3.tmp.tmp"),
            format!(".{stem}.1.2.tmp"),
            format!(".{stem}.1.2.3.4.tmp"),
            format!(".{stem}.01.2.3.tmp"),
            format!(".{stem}.1.02.3.tmp"),
            format!(".{stem}.1.2.03.tmp"),
            format!(".{stem}.+1.2.3.tmp"),
            format!(".{stem}.-1.2.3.tmp"),
            format!(".{stem}. 1.2.3.tmp"),
            format!(".{stem}.1..3.tmp"),
            format!(".{stem}.4294967296.2.3.tmp"),
            format!(".{stem}.1.2.3.TMP"),
            format!(".{stem}.1.2.3.tmp/"),
            format!("..{stem}.1.2.3.tmp"),
            format!("{stem}.1.2.3.tmp"),
            format!(".{stem}.1.2.3.tmp\0"),
            format!(".{upper}.1.2.3.tmp"),
            "commit.lock ".into(),
            "Commit.lock".into(),
            ".commit.lock".into(),
            format!("{stem}.lock.use"),
            format!(".{stem}.1.2.3.{}.tmp", "9".repeat(200)),
        ]
        .into_iter()
        .map(String::into_bytes)
        .chain([
            format!("{stem}.sq\u{e9}h").into_bytes(),
            [stem.as_bytes(), b".sqsh\xff"].concat(),
            [b".", stem.as_bytes(), b".1.2.\xff.tmp"].concat(),
            vec![0xff; 300],
        ])
        .collect();
        for name in &bad {
            assert_eq!(
                CacheFile::parse(name),
                None,
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }

    fn c(key: &'static str, size: u64, last_used: i128, in_use: bool) -> Candidate<&'static str> {
        Candidate {
            key,
            size,
            last_used,
            in_use,
        }
    }

    #[test]
    fn eviction_choice() {
        let entries = [
            c("new", 10, 300, false),
            c("old", 10, 100, false),
            c("busy", 10, 50, true),
            c("mid", 10, 200, false),
        ];
        // (incoming, bound, keep_new, evict, total, over_bound)
        type Case = (u64, u64, bool, &'static [&'static str], u64, bool);
        let cases: [Case; 9] = [
            // Fits: nothing goes.
            (10, 50, true, &[], 50, false),
            // One too many: the oldest unused one goes, not the older busy one.
            (10, 40, true, &["old"], 40, false),
            (15, 40, true, &["old", "mid"], 35, false),
            // Everything unused goes and it still does not fit: keep, report.
            (10, 15, true, &["old", "mid", "new"], 20, true),
            (40, 40, true, &["old", "mid", "new"], 50, true),
            // Alone larger than the bound: not kept, nothing evicted for it.
            (41, 40, false, &[], 40, false),
            (41, 30, false, &[], 40, true),
            // Shrinking (prune): incoming 0.
            (0, 20, true, &["old", "mid"], 20, false),
            (0, 0, true, &["old", "mid", "new"], 10, true),
        ];
        for (i, (incoming, bound, keep, evict, total, over)) in cases.into_iter().enumerate() {
            let plan = plan_eviction(&entries, incoming, bound);
            assert_eq!(plan.keep_new, keep, "case {i}");
            assert_eq!(plan.evict, evict, "case {i}");
            assert_eq!(plan.total, total, "case {i}");
            assert_eq!(plan.over_bound, over, "case {i}");
        }
    }

    #[test]
    fn eviction_edges() {
        // Empty cache.
        let none: [Candidate<u8>; 0] = [];
        let plan = plan_eviction(&none, 5, 10);
        assert_eq!(
            (plan.keep_new, plan.total, plan.over_bound),
            (true, 5, false)
        );
        // Equal times: the key decides, so the choice does not depend on listing order.
        let a = [c("b", 10, 7, false), c("a", 10, 7, false)];
        let b = [c("a", 10, 7, false), c("b", 10, 7, false)];
        assert_eq!(plan_eviction(&a, 10, 20).evict, ["a"]);
        assert_eq!(plan_eviction(&b, 10, 20).evict, ["a"]);
        // Sizes near u64::MAX neither wrap nor saturate into "fits".
        let huge = [c("x", u64::MAX, 1, false), c("y", u64::MAX, 2, true)];
        let plan = plan_eviction(&huge, 1, u64::MAX);
        assert_eq!(plan.evict, ["x"]);
        assert!(plan.over_bound);
        // Negative times (before 1970) still sort.
        let old = [c("p", 1, 5, false), c("q", 1, -5, false)];
        assert_eq!(plan_eviction(&old, 1, 2).evict, ["q"]);
    }

    #[test]
    fn random_names_parse_only_in_canonical_form() {
        let stem = digest().stem();
        let pieces: [&[u8]; 16] = [
            stem.as_bytes(),
            b".",
            b"..",
            b"0",
            b"1",
            b"42",
            b"tmp",
            b"step",
            b"sqsh",
            b"lock",
            b"use",
            b"commit",
            b"-",
            b"+",
            b"\xff",
            b" ",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            usize::try_from(state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n as u64).unwrap()
        };
        let mut parsed = 0;
        for _ in 0..20_000 {
            let name: Vec<u8> = (0..next(9))
                .flat_map(|_| pieces[next(pieces.len())].to_vec())
                .collect();
            if let Some(file) = CacheFile::parse(&name) {
                assert_eq!(file.name().as_bytes(), &name[..]);
                parsed += 1;
            }
        }
        // The alphabet reaches every kind now and then, so the check above is exercised.
        assert!(parsed > 0);
    }
}
