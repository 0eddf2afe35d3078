//! The user's own subcommands: list and prune the calling user's cached images
//! (`<image_cache_path>/<uid>/`, through the plugin's cache store, so an image a step
//! uses is never removed) and the named containers enroot keeps for the user
//! (`enroot list` / `enroot remove`, only names with pyxis's `pyxis_` prefix).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use spank_pyxis::core::config::Config;
use spank_pyxis::core::list::{find_container, ContainerState};
use spank_pyxis::sys::cache::{EntryInfo, UserCache};

use crate::node::plugstack_which;
use crate::report::{human, json_string};

/// How long a prune waits for another step committing an import.
const PRUNE_WAIT: Duration = Duration::from_secs(60);

/// What `cache prune` removes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prune {
    /// Down to the configured `image_cache_size`.
    ToBound,
    /// Every entry not in use.
    All,
    /// Entries not used for this long.
    OlderThan(Duration),
}

/// `30d`, `12h`, `90m`, `45s` (or bare seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let (digits, unit) = match s.char_indices().last()? {
        (i, c) if c.is_ascii_alphabetic() => (s.get(..i)?, c),
        _ => (s, 's'),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let secs = match unit {
        's' => Some(n),
        'm' => n.checked_mul(60),
        'h' => n.checked_mul(3600),
        'd' => n.checked_mul(86400),
        'w' => n.checked_mul(7 * 86400),
        _ => None,
    }?;
    Some(Duration::from_secs(secs))
}

/// The size to prune to so that exactly the unused entries last used before `cutoff`
/// go: LRU eviction removes unused entries oldest first until the total fits.
pub fn older_than_target(entries: &[EntryInfo], cutoff: SystemTime) -> u64 {
    entries
        .iter()
        .filter(|e| e.in_use || e.last_used >= cutoff)
        .map(|e| e.size)
        .sum()
}

fn my_cache(config: &Config) -> Result<UserCache, String> {
    let root = config.image_cache().ok_or(
        "the image cache is disabled on this node (image_cache_path=none or image_cache_size=0)",
    )?;
    let uid = nix::unistd::getuid().as_raw();
    UserCache::open(root, uid).map_err(|e| {
        if root.join(uid.to_string()).exists() {
            e.to_string()
        } else {
            format!(
                "no cached images: {} does not exist yet",
                root.join(uid.to_string()).display()
            )
        }
    })
}

fn age(t: SystemTime) -> String {
    let secs = SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs();
    match secs {
        s if s < 3600 => format!("{} min ago", s / 60),
        s if s < 86400 => format!("{} h ago", s / 3600),
        s => format!("{} d ago", s / 86400),
    }
}

/// `cache list [--json]`.
pub fn cache_list(config: &Config, json: bool) -> Result<String, String> {
    let cache = my_cache(config)?;
    let entries = cache.list().map_err(|e| e.to_string())?;
    let total: u64 = entries.iter().map(|e| e.size).sum();
    if json {
        let items: Vec<String> = entries
            .iter()
            .map(|e| {
                format!(
                    "{{\"digest\":{},\"path\":{},\"size\":{},\"last_used\":{},\"in_use\":{}}}",
                    json_string(&e.digest.to_string()),
                    json_string(&e.path.to_string_lossy()),
                    e.size,
                    e.last_used
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs(),
                    e.in_use
                )
            })
            .collect();
        return Ok(format!(
            "{{\"path\":{},\"bound\":{},\"total\":{total},\"images\":[{}]}}\n",
            json_string(&cache.path().to_string_lossy()),
            config.image_cache_size,
            items.join(",")
        ));
    }
    let mut out = String::new();
    for e in &entries {
        out.push_str(&format!(
            "{}  {:>10}  {:<12}{}\n",
            e.digest,
            human(e.size),
            age(e.last_used),
            if e.in_use { "  in use" } else { "" }
        ));
    }
    out.push_str(&format!(
        "{} images, {} of {} in {}\n",
        entries.len(),
        human(total),
        human(config.image_cache_size),
        cache.path().display()
    ));
    Ok(out)
}

/// `cache prune [--all | --older-than D]`.
pub fn cache_prune(config: &Config, how: Prune) -> Result<String, String> {
    let cache = my_cache(config)?;
    let target = match how {
        Prune::ToBound => config.image_cache_size,
        Prune::All => 0,
        Prune::OlderThan(d) => {
            let entries = cache.list().map_err(|e| e.to_string())?;
            let cutoff = SystemTime::now()
                .checked_sub(d)
                .unwrap_or(SystemTime::UNIX_EPOCH);
            older_than_target(&entries, cutoff)
        }
    };
    let pruned = cache
        .prune(target, Instant::now() + PRUNE_WAIT)
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    for e in &pruned.evicted {
        out.push_str(&format!("removed {} ({})\n", e.digest, human(e.size)));
    }
    for name in &pruned.stale_removed {
        out.push_str(&format!("removed leftover {name}\n"));
    }
    let kept_in_use = cache
        .list()
        .map(|l| l.iter().filter(|e| e.in_use).count())
        .unwrap_or(0);
    out.push_str(&format!(
        "{} images removed, {} left{}\n",
        pruned.evicted.len(),
        human(pruned.total),
        if kept_in_use > 0 {
            format!(" ({kept_in_use} in use by running steps, kept)")
        } else {
            String::new()
        }
    ));
    Ok(out)
}

fn enroot() -> Result<std::path::PathBuf, String> {
    plugstack_which("enroot").ok_or_else(|| "no enroot on this node".to_owned())
}

fn enroot_output(enroot: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(enroot)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", enroot.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "enroot {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(text)
}

/// The user's containers that pyxis made (`pyxis_` names), from `enroot list`.
pub fn pyxis_names(listing: &str) -> Vec<String> {
    listing
        .split_whitespace()
        .filter(|n| n.starts_with("pyxis_"))
        .map(str::to_owned)
        .collect()
}

/// `containers list`.
pub fn containers_list() -> Result<String, String> {
    let enroot = enroot()?;
    let names = pyxis_names(&enroot_output(&enroot, &["list"])?);
    let full = enroot_output(&enroot, &["list", "-f"]).unwrap_or_default();
    let mut out = String::new();
    for n in &names {
        let state = match find_container(&full, n) {
            Ok(ContainerState::Running(pid)) => format!("  running (pid {pid})"),
            _ => String::new(),
        };
        out.push_str(&format!("{n}{state}\n"));
    }
    out.push_str(&format!("{} containers\n", names.len()));
    Ok(out)
}

/// `containers remove NAME... | --all`: `NAME` may omit the `pyxis_` prefix; running
/// containers are left alone.
pub fn containers_remove(names: &[String], all: bool) -> Result<String, String> {
    let enroot = enroot()?;
    let existing = pyxis_names(&enroot_output(&enroot, &["list"])?);
    let wanted: Vec<String> = if all {
        existing.clone()
    } else {
        names
            .iter()
            .map(|n| {
                if n.starts_with("pyxis_") {
                    n.clone()
                } else {
                    format!("pyxis_{n}")
                }
            })
            .collect()
    };
    let full = enroot_output(&enroot, &["list", "-f"]).unwrap_or_default();
    let mut out = String::new();
    let mut failed = false;
    for name in &wanted {
        if !existing.contains(name) {
            out.push_str(&format!("{name}: no such container\n"));
            failed = true;
            continue;
        }
        if let Ok(ContainerState::Running(pid)) = find_container(&full, name) {
            out.push_str(&format!(
                "{name}: kept, a step runs in it (pid {pid}); end that job first\n"
            ));
            failed = !all || failed;
            continue;
        }
        match enroot_output(&enroot, &["remove", "-f", name]) {
            Ok(_) => out.push_str(&format!("{name}: removed\n")),
            Err(e) => {
                out.push_str(&format!("{name}: {e}\n"));
                failed = true;
            }
        }
    }
    if failed {
        Err(out.trim_end().to_owned())
    } else {
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spank_pyxis::core::cache::Digest;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Some(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_duration("90m"), Some(Duration::from_secs(90 * 60)));
        assert_eq!(parse_duration("45"), Some(Duration::from_secs(45)));
        assert_eq!(parse_duration("2w"), Some(Duration::from_secs(14 * 86400)));
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_duration("3y"), None);
        assert_eq!(parse_duration("-3d"), None);
        assert_eq!(parse_duration(""), None);
        assert_eq!(parse_duration("99999999999999999999d"), None);
    }

    #[test]
    fn the_older_than_target_keeps_new_and_used_entries() {
        let now = SystemTime::now();
        let hex = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let entry = |c: char, size: u64, days: u64, in_use: bool| EntryInfo {
            digest: Digest::parse(&hex(c)).unwrap(),
            path: format!("/c/{c}").into(),
            size,
            last_used: now - Duration::from_secs(days * 86400),
            in_use,
        };
        let entries = [
            entry('a', 100, 40, false),
            entry('b', 10, 40, true),
            entry('c', 1, 1, false),
        ];
        let cutoff = now - Duration::from_secs(30 * 86400);
        assert_eq!(older_than_target(&entries, cutoff), 11);
        assert_eq!(older_than_target(&entries, now), 10);
    }

    #[test]
    fn only_pyxis_containers_are_listed() {
        assert_eq!(
            pyxis_names("mine\npyxis_foo\npyxis_12.0\nother\n"),
            vec!["pyxis_foo".to_owned(), "pyxis_12.0".to_owned()]
        );
    }
}
