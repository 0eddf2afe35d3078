//! `enroot import`, `load` and `digest` against a loopback Docker registry.
//!
//! Images are fetched with `skopeo` into a temporary OCI layout and unpacked with `umoci`
//! (rootless), then configured the way enroot configures Docker images: `/etc/environment` from
//! `Env`, `/etc/fstab` from `Volumes`, `/etc/rc` doing `cd WORKDIR`, sourcing a non-empty
//! `/etc/rc.local` and executing the entrypoint with the command or the arguments, and an empty
//! `/etc/rc.local`.
//!
//! Safety: the double only ever contacts registries given as `localhost` or a loopback address.
//! Anything else, Docker Hub included, fails without any network access.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{renameat2, RenameFlags};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::json::{self, Value};
use crate::squashfs;
use crate::util::{self, TempPath};

/// Docker Hub's registry host.
pub const DOCKER_HUB: &str = "registry-1.docker.io";

/// A parsed `docker://` image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub user: Option<String>,
    pub registry: String,
    pub image: String,
    /// A tag, or a digest (`sha256:...`).
    pub tag: String,
}

fn valid_image(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"/._-".contains(&c))
}

fn valid_tag(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(&c))
}

fn valid_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| !h.is_empty() && h.bytes().all(|c| c.is_ascii_alphanumeric()))
}

/// Split `IMAGE[:TAG][@DIGEST]`; a digest wins over a tag like in enroot.
fn split_image(s: &str) -> Option<(String, String)> {
    let (rest, digest) = match s.split_once('@') {
        Some((rest, d)) if valid_digest(d) => (rest, Some(d.to_string())),
        Some(_) => return None,
        None => (s, None),
    };
    let (image, tag) = match rest.split_once(':') {
        Some((image, tag)) if valid_tag(tag) => (image, Some(tag.to_string())),
        Some(_) => return None,
        None => (rest, None),
    };
    if !valid_image(image) {
        return None;
    }
    let tag = digest.or(tag).unwrap_or_else(|| "latest".to_string());
    Some((image.to_string(), tag))
}

impl Reference {
    /// Parse `docker://[USER@][REGISTRY#]IMAGE[:TAG|@DIGEST]` or
    /// `docker://[USER@]REGISTRY/IMAGE[:TAG|@DIGEST]` (a first component with `.` or `:` is a
    /// registry, otherwise the name is on Docker Hub).
    pub fn parse(uri: &str) -> Option<Reference> {
        let rest = uri.strip_prefix("docker://")?;
        // The user part ends at the last '@' before the image; a digest's '@' follows the image
        // and is recognised by its "sha256:" prefix.
        let zone_end = rest.find("@sha256:").unwrap_or(rest.len());
        let (user, rest) = match rest.get(..zone_end).and_then(|zone| zone.rfind('@')) {
            Some(i) => (Some(rest.get(..i)?.to_string()), rest.get(i + 1..)?),
            None => (None, rest),
        };
        if user.as_deref() == Some("") {
            return None;
        }
        let (registry, image, tag) = if let Some((registry, image)) = rest.split_once('#') {
            if registry.is_empty() || registry.contains('/') {
                return None;
            }
            let (image, tag) = split_image(image)?;
            (registry.to_string(), image, tag)
        } else {
            match rest.split_once('/') {
                Some((first, tail)) if first.contains('.') || first.contains(':') => {
                    let (image, tag) = split_image(tail)?;
                    (first.to_string(), image, tag)
                }
                _ => {
                    let (image, tag) = split_image(rest)?;
                    (DOCKER_HUB.to_string(), image, tag)
                }
            }
        };
        let mut r = Reference {
            user,
            registry,
            image,
            tag,
        };
        if matches!(
            r.registry.as_str(),
            "docker.io" | "index.docker.io" | DOCKER_HUB
        ) {
            r.registry = DOCKER_HUB.to_string();
            if !r.image.contains('/') {
                r.image = format!("library/{}", r.image);
            }
        }
        Some(r)
    }

    /// The name enroot derives for files and containers: `/` → `+`, then `+TAG`.
    pub fn default_name(&self) -> String {
        let image = if self.registry == DOCKER_HUB {
            self.image.strip_prefix("library/").unwrap_or(&self.image)
        } else {
            &self.image
        };
        format!("{}+{}", image.replace('/', "+"), self.tag)
    }

    fn manifest_url(&self, scheme: &str) -> String {
        format!(
            "{scheme}://{}/v2/{}/manifests/{}",
            self.registry, self.image, self.tag
        )
    }

    /// The skopeo source reference.
    fn skopeo_ref(&self) -> String {
        let sep = if self.tag.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        format!("docker://{}/{}{sep}{}", self.registry, self.image, self.tag)
    }
}

/// Whether a registry (`host[:port]`) is on the loopback interface. Names are not resolved:
/// only `localhost` and loopback addresses count, so no lookup can lead elsewhere.
pub fn is_loopback_registry(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else if registry.matches(':').count() > 1 {
        registry
    } else {
        registry.split(':').next().unwrap_or_default()
    };
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn parse_reference(uri: &OsStr) -> Result<Reference> {
    let text = uri.to_string_lossy();
    if !text.starts_with("docker://") {
        return Err(Error::msg(format!("Invalid argument: {text}")));
    }
    Reference::parse(&text).ok_or_else(|| Error::msg(format!("Invalid image reference: {text}")))
}

fn ensure_loopback(r: &Reference) -> Result<()> {
    if is_loopback_registry(&r.registry) {
        return Ok(());
    }
    Err(Error::msg(format!(
        "URL {} returned error code: 403 Forbidden (the enroot test double only contacts loopback registries)",
        r.manifest_url("https")
    )))
}

/// Turn skopeo's failure into enroot-like messages.
fn registry_error(r: &Reference, stderr: &[u8]) -> Error {
    let text = String::from_utf8_lossy(stderr);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        eprintln!("[WARN] {line}");
    }
    let lower = text.to_ascii_lowercase();
    // enroot's `common::curl` words for the answers users must tell apart.
    if lower.contains("unauthorized") || lower.contains("authentication required") {
        return Error::msg(format!(
            "URL {} returned error code: 401 Unauthorized",
            r.manifest_url("http")
        ));
    }
    if lower.contains("denied") || lower.contains("forbidden") {
        return Error::msg(format!(
            "URL {} returned error code: 403 Forbidden",
            r.manifest_url("http")
        ));
    }
    if lower.contains("manifest unknown")
        || lower.contains("name unknown")
        || lower.contains("not found")
    {
        return Error::msg(format!(
            "URL {} returned error code: 404 Not Found",
            r.manifest_url("http")
        ));
    }
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("unknown error");
    Error::msg(format!(
        "Could not fetch {}: {}",
        r.skopeo_ref(),
        last.trim()
    ))
}

fn skopeo() -> Command {
    let mut c = Command::new("skopeo");
    c.stdin(Stdio::null());
    c
}

/// Copy the image into an OCI layout at `layout` (tag `img`).
fn fetch(r: &Reference, layout: &Path) -> Result<()> {
    let mut dest = OsString::from("oci:");
    dest.push(layout);
    dest.push(":img");
    let out = skopeo()
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--src-tls-verify=false",
        ])
        .arg(r.skopeo_ref())
        .arg(dest)
        .output()
        .map_err(|e| Error::io("Command not found: skopeo", &e))?;
    if !out.status.success() {
        return Err(registry_error(r, &out.stderr));
    }
    Ok(())
}

/// The image configuration of the layout.
fn image_config(layout: &Path) -> Result<Value> {
    let mut src = OsString::from("oci:");
    src.push(layout);
    src.push(":img");
    let out = skopeo()
        .args(["inspect", "--config"])
        .arg(src)
        .output()
        .map_err(|e| Error::io("Command not found: skopeo", &e))?;
    if !out.status.success() {
        return Err(Error::msg("Could not read the image configuration"));
    }
    json::parse(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| Error::msg("Could not process JSON input"))
}

/// Unpack the layout's layers into `rootfs` without needing privileges.
fn unpack(layout: &Path, rootfs: &Path) -> Result<()> {
    let mut image = OsString::from(layout);
    image.push(":img");
    let out = Command::new("umoci")
        .args(["raw", "unpack", "--rootless", "--image"])
        .arg(image)
        .arg(rootfs)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io("Command not found: umoci", &e))?;
    if !out.status.success() {
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        return Err(Error::msg("Could not extract the image layers"));
    }
    Ok(())
}

/// Quote a word for POSIX sh.
pub fn sh_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&c))
    {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', "'\\''"))
}

/// The `/etc/rc` script for an image configuration.
pub fn rc_script(uri: &str, workdir: &str, entrypoint: &[String], cmd: &[String]) -> String {
    let workdir = if workdir.is_empty() { "/" } else { workdir };
    let quoted = |words: &[String]| {
        words
            .iter()
            .map(|w| sh_quote(w))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let default_cmd = if entrypoint.is_empty() && cmd.is_empty() {
        "/bin/sh".to_string()
    } else {
        quoted(cmd)
    };
    let wd = sh_quote(workdir);
    let mut s = String::new();
    s.push_str(&format!(
        "# Container start script written by the enroot test double for {uri}\n"
    ));
    s.push_str(&format!("mkdir -p {wd} 2> /dev/null\n"));
    s.push_str(&format!("cd {wd} || exit 1\n"));
    s.push_str("unset OLDPWD\n\n");
    s.push_str("# A non-empty rc.local can change what runs (pyxis writes 'exec \"$@\"' there).\n");
    s.push_str("if [ -s /etc/rc.local ]; then\n    . /etc/rc.local\nfi\n\n");
    if !default_cmd.is_empty() {
        s.push_str(&format!("[ $# -gt 0 ] || set -- {default_cmd}\n"));
    }
    let ep = quoted(entrypoint);
    if ep.is_empty() {
        s.push_str("exec \"$@\"\n");
    } else {
        s.push_str(&format!("exec {ep} \"$@\"\n"));
    }
    s
}

/// Write enroot's configuration files into an unpacked image.
fn configure(rootfs: &Path, config: &Value, uri: &str) -> Result<()> {
    let empty = Value::Null;
    let c = config.get("config").unwrap_or(&empty);
    let etc = rootfs.join("etc");
    let io = |what: &Path, e: std::io::Error| {
        Error::io(format!("Could not write {}", what.display()), &e)
    };
    fs::create_dir_all(&etc).map_err(|e| io(&etc, e))?;

    let mut environment = String::new();
    for e in c.get("Env").map(Value::strings).unwrap_or_default() {
        environment.push_str(&e);
        environment.push('\n');
    }
    let mut fstab = String::new();
    for (volume, _) in c
        .get("Volumes")
        .and_then(Value::as_object)
        .unwrap_or_default()
    {
        fstab.push_str(&format!(
            "${{ENROOT_ROOTFS}}{volume} {volume} none x-create=dir,bind,rw,nosuid,nodev\n"
        ));
    }
    let workdir = c.get("WorkingDir").and_then(Value::as_str).unwrap_or("");
    let entrypoint = c.get("Entrypoint").map(Value::strings).unwrap_or_default();
    let cmd = c.get("Cmd").map(Value::strings).unwrap_or_default();
    if !workdir.is_empty() {
        let dir = rootfs.join(workdir.trim_start_matches('/'));
        let _ = fs::create_dir_all(dir);
    }
    let files = [
        ("environment", environment),
        ("fstab", fstab),
        ("rc", rc_script(uri, workdir, &entrypoint, &cmd)),
        (
            "rc.local",
            "# Sourced by /etc/rc when the container starts; may change the command.\n".to_string(),
        ),
    ];
    for (name, content) in files {
        let path = etc.join(name);
        // Images may ship these as symlinks (e.g. into /usr): replace, never follow.
        let _ = fs::remove_file(&path);
        fs::write(&path, content).map_err(|e| io(&path, e))?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).map_err(|e| io(&path, e))?;
    }
    Ok(())
}

/// A private working directory under `base`, removed on drop.
fn work_dir(base: &Path) -> Result<TempPath> {
    let dir = util::sibling_temp(&base.join("enroot"), "work");
    fs::create_dir(&dir)
        .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)))
        .map_err(|e| {
            Error::io(
                format!("Could not create a directory in {}", base.display()),
                &e,
            )
        })?;
    Ok(TempPath::new(dir))
}

/// Fetch, unpack and configure an image into `work/rootfs`.
fn prepare(r: &Reference, uri: &str, work: &Path) -> Result<PathBuf> {
    eprintln!("[INFO] Fetching image {}", r.skopeo_ref());
    let layout = work.join("oci");
    fetch(r, &layout)?;
    let rootfs = work.join("rootfs");
    eprintln!("[INFO] Extracting image layers...");
    unpack(&layout, &rootfs)?;
    configure(&rootfs, &image_config(&layout)?, uri)?;
    util::fix_permissions(&rootfs);
    Ok(rootfs)
}

fn rename_no_replace(from: &Path, to: &Path) -> Result<()> {
    match renameat2(None, from, None, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) | Err(nix::errno::Errno::ENOTEMPTY) => {
            Err(Error::msg(format!("File already exists: {}", to.display())))
        }
        Err(e) => Err(Error::errno(
            format!("Could not create {}", to.display()),
            e,
        )),
    }
}

/// `enroot import [-o FILE] URI`.
pub fn import(cfg: &Config, uri: &OsStr, output: Option<&OsStr>) -> Result<()> {
    let r = parse_reference(uri)?;
    let requested = output.map_or_else(
        || PathBuf::from(format!("{}.sqsh", r.default_name())),
        PathBuf::from,
    );
    let filename = util::realpath(&requested).map_err(|_| {
        Error::msg(format!(
            "No such file or directory: {}",
            requested.display()
        ))
    })?;
    if fs::symlink_metadata(&filename).is_ok() {
        return Err(Error::msg(format!(
            "File already exists: {}",
            filename.display()
        )));
    }
    ensure_loopback(&r)?;
    let work = work_dir(&cfg.path("ENROOT_TEMP_PATH"))?;
    let rootfs = prepare(&r, &uri.to_string_lossy(), work.path())?;
    eprintln!("[INFO] Creating squashfs filesystem...");
    // Like enroot, mksquashfs writes the requested file itself: a killed import leaves
    // (at most) a partial file at the path the caller chose and will clean up, never a
    // hidden temporary next to it. A failed one removes it.
    let partial = TempPath::new(filename.clone());
    squashfs::create(cfg, &rootfs, partial.path(), &[])?;
    partial.disarm();
    Ok(())
}

/// `enroot load [-n NAME] [-f] URI`.
pub fn load(cfg: &Config, uri: &OsStr, name: Option<&OsStr>, force: bool) -> Result<()> {
    let r = parse_reference(uri)?;
    let force = force || cfg.is_on("ENROOT_FORCE_OVERRIDE");
    let name = name.map_or_else(|| OsString::from(r.default_name()), OsStr::to_os_string);
    if !util::valid_name(&name) || name.is_empty() {
        return Err(Error::msg(format!(
            "Invalid argument: {}",
            name.to_string_lossy()
        )));
    }
    let joined = cfg.path("ENROOT_DATA_PATH").join(&name);
    let target = util::realpath(&joined)
        .map_err(|_| Error::msg(format!("No such file or directory: {}", joined.display())))?;
    let exists = fs::symlink_metadata(&target).is_ok();
    if exists && !force {
        return Err(Error::msg(format!(
            "File already exists: {}",
            target.display()
        )));
    }
    ensure_loopback(&r)?;
    // Work next to the target so that the final rename stays on one filesystem.
    let work = work_dir(target.parent().unwrap_or(Path::new("/")))?;
    let rootfs = prepare(&r, &uri.to_string_lossy(), work.path())?;
    if exists {
        util::remove_tree(&target)
            .map_err(|e| Error::io(format!("Could not remove {}", target.display()), &e))?;
    }
    rename_no_replace(&rootfs, &target)
}

/// The Debian name of the host architecture, as used in manifest lists.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `enroot digest URI`: the digest of the image manifest for this architecture.
pub fn digest(cfg: &Config, uri: &OsStr) -> Result<()> {
    let r = parse_reference(uri)?;
    ensure_loopback(&r)?;
    let out = skopeo()
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(r.skopeo_ref())
        .output()
        .map_err(|e| Error::io("Command not found: skopeo", &e))?;
    if !out.status.success() {
        return Err(registry_error(&r, &out.stderr));
    }
    let manifest = json::parse(&String::from_utf8_lossy(&out.stdout));
    let from_list = manifest
        .as_ref()
        .and_then(|m| m.get("manifests"))
        .and_then(|list| {
            list.as_array()?.iter().find_map(|entry| {
                let arch = entry.get("platform")?.get("architecture")?.as_str()?;
                (arch == host_arch()).then(|| entry.get("digest")?.as_str().map(str::to_string))?
            })
        });
    let digest = match from_list {
        Some(d) => d,
        None => {
            let work = work_dir(&cfg.path("ENROOT_TEMP_PATH"))?;
            let file = work.path().join("manifest.json");
            fs::write(&file, &out.stdout)
                .map_err(|e| Error::io("Could not write the manifest", &e))?;
            let d = skopeo()
                .arg("manifest-digest")
                .arg(&file)
                .output()
                .map_err(|e| Error::io("Command not found: skopeo", &e))?;
            if !d.status.success() {
                return Err(Error::msg(format!(
                    "Could not retrieve digest from {}",
                    r.manifest_url("http")
                )));
            }
            String::from_utf8_lossy(&d.stdout).trim().to_string()
        }
    };
    println!("{digest}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(uri: &str) -> Reference {
        Reference::parse(uri).unwrap_or_else(|| panic!("{uri} did not parse"))
    }

    #[test]
    fn enroot_hash_syntax() {
        let x = r("docker://127.0.0.1:5000#test/busybox:1.0");
        assert_eq!(
            (x.registry.as_str(), x.image.as_str(), x.tag.as_str()),
            ("127.0.0.1:5000", "test/busybox", "1.0")
        );
        let x = r("docker://alice@localhost:5000#img");
        assert_eq!(x.user.as_deref(), Some("alice"));
        assert_eq!(x.tag, "latest");
        let x = r("docker://localhost:5000#img@sha256:abc123");
        assert_eq!(x.tag, "sha256:abc123");
        assert_eq!(x.skopeo_ref(), "docker://localhost:5000/img@sha256:abc123");
    }

    #[test]
    fn docker_standard_syntax_and_hub() {
        let x = r("docker://localhost:5000/test/busybox:2");
        assert_eq!(
            (x.registry.as_str(), x.image.as_str()),
            ("localhost:5000", "test/busybox")
        );
        let x = r("docker://ubuntu:18.04");
        assert_eq!(
            (x.registry.as_str(), x.image.as_str(), x.tag.as_str()),
            (DOCKER_HUB, "library/ubuntu", "18.04")
        );
        assert_eq!(x.default_name(), "ubuntu+18.04");
        let x = r("docker://nvidia/cuda:11.8.0-base");
        assert_eq!(
            (x.registry.as_str(), x.image.as_str()),
            (DOCKER_HUB, "nvidia/cuda")
        );
        let x = r("docker://docker.io/ubuntu");
        assert_eq!(
            (x.registry.as_str(), x.image.as_str()),
            (DOCKER_HUB, "library/ubuntu")
        );
        let x = r("docker://docker.io#ubuntu:24.04");
        assert_eq!(x.image, "library/ubuntu");
        let x = r("docker://nvcr.io#nvidia/pytorch:23.01-py3");
        assert_eq!(x.default_name(), "nvidia+pytorch+23.01-py3");
    }

    #[test]
    fn invalid_references() {
        for bad in [
            "docker://",
            "docker://UPPER",
            "docker://a b",
            "ubuntu",
            "docker://#img",
            "docker://x@",
            "docker://img:t@sha256:",
        ] {
            assert!(Reference::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn loopback_only() {
        for ok in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "::1",
            "LOCALHOST:1",
        ] {
            assert!(is_loopback_registry(ok), "{ok}");
        }
        for bad in [
            DOCKER_HUB,
            "nvcr.io",
            "10.0.0.1:5000",
            "registry.local:5000",
            "[::2]:5000",
            "localhost.evil.com",
        ] {
            assert!(!is_loopback_registry(bad), "{bad}");
        }
    }

    #[test]
    fn quoting_and_rc() {
        assert_eq!(sh_quote("/bin/sh"), "/bin/sh");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
        assert_eq!(sh_quote(""), "''");
        let rc = rc_script(
            "docker://x",
            "/work dir",
            &["/entry.sh".into()],
            &["a b".into()],
        );
        assert!(rc.contains("cd '/work dir' || exit 1\n"));
        assert!(rc.contains("[ $# -gt 0 ] || set -- 'a b'\n"));
        assert!(rc.contains("exec /entry.sh \"$@\"\n"));
        let rc = rc_script("docker://x", "", &[], &[]);
        assert!(rc.contains("cd / || exit 1\n"));
        assert!(rc.contains("set -- /bin/sh\n"));
        assert!(rc.contains("\nexec \"$@\"\n"));
    }
}
