//! Errors that say what to do: the Docker image syntax users type, and the causes behind
//! the bare enroot errors users cannot act on (pyxis issues #39, #41, #53, #78, #127,
//! #135, #168).
//!
//! Pure functions over the image string and enroot's captured output, used by the option
//! callbacks (srun, sbatch, salloc, slurmstepd), by the container plan (the URI handed to
//! enroot) and by the step's error report in the creator task (`src/step/error.rs`),
//! which appends the returned lines to the one `pyxis: ...` block of the failure.
//!
//! enroot's own words are matched (enroot 3.x-4.x `common::curl`:
//! `URL <url> returned error code: <N> <status>`; `enroot-nsenter`:
//! `failed to create user namespace: <strerror>`), never pyxis-rs's.

use crate::core::text::printable;

/// The enroot credentials file users are pointed at (netrc format).
pub const CREDENTIALS: &str = "~/.config/enroot/.credentials";

/// A first path component that can only be a registry host, as Docker decides it:
/// `localhost`, or a name with a `.` (domain, IPv4) or a `:` (port).
fn is_registry_host(host: &str) -> bool {
    !host.is_empty() && (host == "localhost" || host.contains('.') || host.contains(':'))
}

/// Splits an optional `USER@` from the front of a reference (before the first `/`).
fn split_user(s: &str) -> (&str, &str) {
    let head_end = s.find('/').unwrap_or(s.len());
    match s.get(..head_end).and_then(|head| head.find('@')) {
        Some(at) => s.split_at(at + 1),
        None => ("", s),
    }
}

/// Docker's `[USER@]REGISTRY/IMAGE[:TAG]` as enroot's `[USER@]REGISTRY#IMAGE[:TAG]`.
///
/// `rest` is the reference without its `docker://` scheme. `None` when nothing changes:
/// a `#` is present already, there is no `/`, or the first component is not a registry
/// host (then it is a Docker Hub namespace, as `nvidia/cuda`). No Docker Hub repository
/// can have a namespace with `.` or `:`, so no image that works today changes; enroot
/// reads the slash form itself only since 4.0, so this is done for every enroot.
pub fn docker_to_enroot(rest: &str) -> Option<String> {
    // `podman://x` is another scheme (W24), left for enroot to refuse.
    if rest.contains('#') || rest.contains("://") {
        return None;
    }
    let (user, reference) = split_user(rest);
    let (host, image) = reference.split_once('/')?;
    if !is_registry_host(host) || image.is_empty() {
        return None;
    }
    Some(format!("{user}{host}#{image}"))
}

/// The verbose line saying an image was converted, `None` when it was not.
pub fn conversion_note(image: &str) -> Option<String> {
    if image.starts_with('.') || image.starts_with('/') || image.starts_with("dockerd://") {
        return None;
    }
    let rest = image.strip_prefix("docker://").unwrap_or(image);
    docker_to_enroot(rest).map(|to| {
        format!(
            "--container-image {}: Docker registry syntax, passed to enroot as docker://{}",
            printable(image),
            printable(&to)
        )
    })
}

/// `HOST:PORT` with nothing after it: a registry address, not an image. `ubuntu:5000`
/// (tag `5000` of a Docker Hub image) is not one: the host must be `localhost` or
/// contain a `.`.
pub fn is_registry_address(image: &str) -> bool {
    let rest = image.strip_prefix("docker://").unwrap_or(image);
    let (_, reference) = split_user(rest);
    if reference.contains('/') || reference.contains('#') {
        return false;
    }
    match reference.rsplit_once(':') {
        Some((host, port)) => {
            (host == "localhost" || host.contains('.'))
                && !port.is_empty()
                && port.len() <= 5
                && port.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// The `#SBATCH` escaping advice, for an image that ends where a `#` would have been.
pub fn sbatch_escape_hint(image: &str) -> String {
    format!(
        "in an #SBATCH line an unescaped \"#\" starts a comment, so everything after it is lost: \
         write {image}\\#IMAGE[:TAG] there, or use the Docker form {image}/IMAGE[:TAG]"
    )
}

/// The whole message for a refused `HOST:PORT` image.
pub fn registry_address_message(image: &str) -> String {
    format!(
        "--container-image: {image} is only a registry address, not an image: name the image too, \
         e.g. {image}/IMAGE[:TAG]; {}",
        sbatch_escape_hint(image)
    )
}

/// True for a name that looks like a file (squashfs or archive) rather than an image.
fn looks_like_file(image: &str) -> bool {
    [
        ".sqsh",
        ".squashfs",
        ".sqfs",
        ".sif",
        ".tar",
        ".tar.gz",
        ".tgz",
    ]
    .iter()
    .any(|ext| image.ends_with(ext))
}

/// True for a bare registry host (`nvcr.io`, `user@gitlab.example.com`): what is left of
/// `nvcr.io#nvidia/pytorch` after `#SBATCH` cut it.
fn is_bare_host(image: &str) -> bool {
    let (_, reference) = split_user(image);
    !reference.contains('/')
        && !reference.contains(':')
        && !looks_like_file(reference)
        && reference
            .rsplit_once('.')
            .is_some_and(|(_, tld)| tld.len() >= 2 && tld.bytes().all(|b| b.is_ascii_alphabetic()))
}

/// What a failed registry fetch (`enroot import`, `enroot load`) of `image` means.
/// `file_here`: a file named `image` exists in the working directory of the step.
pub fn fetch_hints(image: &str, log: &str, file_here: bool) -> Vec<String> {
    let mut hints = Vec::new();
    // Shown in slurmd's log too: a newline in a user string must not forge a line.
    let image = &printable(image);
    if file_here {
        hints.push(format!(
            "a file named {image} exists in the working directory, but an image without \"/\" or \
             \"./\" is taken for a registry image: use --container-image=./{image}"
        ));
    } else if is_bare_host(image) {
        hints.push(format!(
            "{image} is a registry host without an image name; {}",
            sbatch_escape_hint(image)
        ));
    }
    if let Some(code) = http_error(log) {
        hints.push(match code {
            401 => format!(
                "the registry answered 401 Unauthorized: the image was not found, or it needs \
                 credentials: see {CREDENTIALS} (netrc lines: machine REGISTRY login USER password TOKEN)"
            ),
            403 => format!(
                "the registry answered 403 Forbidden: the registry refuses these credentials for \
                 this image: check the account's access and {CREDENTIALS}"
            ),
            _ => "the registry answered 404 Not Found: the image or its tag does not exist there; \
                  check the name, the tag and the registry"
                .to_owned(),
        });
    }
    hints
}

/// The first 401, 403 or 404 in enroot's `returned error code: N` lines.
fn http_error(log: &str) -> Option<u16> {
    log.lines().find_map(|line| {
        let (_, after) = line.split_once("returned error code: ")?;
        let code: u16 = after.get(..3)?.parse().ok()?;
        [401, 403, 404].contains(&code).then_some(code)
    })
}

/// Which enroot command failed, for the no-space advice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// `enroot import` (or the importer): the squashfs under `runtime_path`, layers in
    /// enroot's cache and temporary directories.
    Import,
    /// `enroot create` / `enroot load`: the unpacked filesystem in enroot's data path.
    Create,
    /// `enroot export`: the `--container-save` target.
    Export,
    /// Anything else (`list`, `start`, `remove`).
    Other,
}

/// What enroot's log says about the node, whichever command failed: user namespaces,
/// FUSE, and a full disk (told apart from `unshare`'s ENOSPC, which is what a
/// `user.max_user_namespaces=0` node reports).
pub fn node_hints(phase: Phase, log: &str, userns_max: Option<u64>) -> Vec<String> {
    let mut hints = Vec::new();
    let userns = log.contains("failed to create user namespace");
    if userns {
        let now = userns_max.map_or_else(String::new, |n| {
            format!(" (user.max_user_namespaces is {n} here)")
        });
        hints.push(format!(
            "enroot could not create a user namespace: user namespaces are disabled or exhausted on \
             this node{now}; an admin must enable them, e.g. sysctl -w user.max_user_namespaces=65536 \
             (and kernel.unprivileged_userns_clone=1 where that sysctl exists)"
        ));
    }
    if log.contains("/dev/fuse") || log.contains("fuse: device not found") {
        hints.push(
            "/dev/fuse is missing or not usable by this user (squashfuse and fuse-overlayfs need it): \
             an admin must load the fuse module (modprobe fuse) and make /dev/fuse mode 0666, or \
             set use_squashfuse=0 in plugstack.conf"
                .to_owned(),
        );
    }
    if !userns && log.contains("No space left on device") {
        hints.push(match phase {
            Phase::Import => "no space left on device while importing: the squashfs image is written under \
                              the plugstack key runtime_path= (or image_cache_path= when the image cache is on), \
                              layers and temporary files under enroot's ENROOT_CACHE_PATH and ENROOT_TEMP_PATH \
                              (enroot.conf): free space there, or ask an admin to move them to a larger disk"
                .to_owned(),
            Phase::Create => "no space left on device while unpacking the image: container filesystems are \
                              written under enroot's ENROOT_DATA_PATH (enroot.conf): remove unused containers \
                              (enroot list, enroot remove) or ask an admin to move it to a larger disk"
                .to_owned(),
            Phase::Export => "no space left on device while saving: free space where --container-save \
                              points, or save to a larger file system"
                .to_owned(),
            Phase::Other => "no space left on device: enroot's runtime directory (ENROOT_RUNTIME_PATH in \
                             enroot.conf) or the plugstack key runtime_path= is on a full file system"
                .to_owned(),
        });
    }
    hints
}

/// enroot could not be executed at all.
pub fn enroot_missing(path: &str) -> String {
    format!(
        "enroot is not installed on this node, or not in slurmd's PATH ({path}): an admin must \
         install enroot (https://github.com/NVIDIA/enroot) or add its directory to slurmd's PATH"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_syntax_becomes_enroot_syntax() {
        let cases: [(&str, Option<&str>); 15] = [
            ("127.0.0.1:5000/repo:tag", Some("127.0.0.1:5000#repo:tag")),
            (
                "nvcr.io/nvidia/pytorch:24.01-py3",
                Some("nvcr.io#nvidia/pytorch:24.01-py3"),
            ),
            ("localhost/img", Some("localhost#img")),
            (
                "localhost:5000/a/b@sha256:00ff",
                Some("localhost:5000#a/b@sha256:00ff"),
            ),
            ("user@nvcr.io/nvidia/x", Some("user@nvcr.io#nvidia/x")),
            ("docker.io/library/ubuntu", Some("docker.io#library/ubuntu")),
            // unchanged
            ("nvcr.io#nvidia/pytorch:24.01-py3", None),
            ("nvidia/cuda:12.0", None),
            ("ubuntu", None),
            ("ubuntu:24.04", None),
            ("ubuntu@sha256:00ff", None),
            ("library/ubuntu", None),
            ("nvcr.io/", None),
            ("user@reg#img/x", None),
            ("podman://ubuntu", None),
        ];
        for (image, want) in cases {
            assert_eq!(docker_to_enroot(image).as_deref(), want, "{image}");
        }
    }

    #[test]
    fn user_strings_are_escaped() {
        let note = conversion_note("a.b/x\nforged").unwrap_or_default();
        assert!(!note.contains('\n') && note.contains("\\n"), "{note}");
        let h = fetch_hints("x\ny.sqsh", "", true);
        assert!(!h[0].contains('\n'), "{h:?}");
    }

    #[test]
    fn conversion_is_noted() {
        assert_eq!(
            conversion_note("nvcr.io/nvidia/x").as_deref(),
            Some("--container-image nvcr.io/nvidia/x: Docker registry syntax, passed to enroot as docker://nvcr.io#nvidia/x")
        );
        for same in [
            "ubuntu",
            "./a.b/c",
            "/a.b/c",
            "dockerd://a.b/c",
            "nvcr.io#x",
        ] {
            assert_eq!(conversion_note(same), None, "{same}");
        }
    }

    #[test]
    fn registry_addresses_are_told_from_tags() {
        for yes in [
            "127.0.0.1:5000",
            "localhost:5000",
            "reg.example.com:443",
            "docker://nvcr.io:443",
            "u@10.0.0.1:5000",
        ] {
            assert!(is_registry_address(yes), "{yes}");
        }
        for no in [
            "ubuntu:5000",
            "ubuntu:24.04",
            "127.0.0.1:5000/x",
            "127.0.0.1:5000#x",
            "nvcr.io",
            "host.x:tag",
            "a.b:123456",
            "a.b:",
        ] {
            assert!(!is_registry_address(no), "{no}");
        }
        let m = registry_address_message("127.0.0.1:5000");
        assert!(
            m.contains("127.0.0.1:5000/IMAGE[:TAG]") && m.contains("\\#"),
            "{m}"
        );
    }

    #[test]
    fn fetch_failures_are_told_apart() {
        let url = "URL http://127.0.0.1:5001/v2/x/manifests/latest returned error code: ";
        let h = fetch_hints(
            "x",
            &format!("[INFO] Fetching\n[ERROR] {url}401 Unauthorized\n"),
            false,
        );
        assert_eq!(h.len(), 1);
        assert!(
            h[0].contains("401")
                && h[0].contains("not found, or it needs credentials")
                && h[0].contains(CREDENTIALS)
        );
        let h = fetch_hints("x", &format!("[ERROR] {url}403 Forbidden"), false);
        assert!(
            h[0].contains("403 Forbidden") && h[0].contains("refuses"),
            "{h:?}"
        );
        let h = fetch_hints("x", &format!("[ERROR] {url}404 Not Found"), false);
        assert!(
            h[0].contains("404 Not Found") && !h[0].contains("credentials"),
            "{h:?}"
        );
        assert!(fetch_hints(
            "x",
            &format!("[ERROR] {url}500 Internal Server Error"),
            false
        )
        .is_empty());
        assert!(fetch_hints("x", "[ERROR] returned error code: 40", false).is_empty());
        assert!(fetch_hints("ubuntu", "", false).is_empty());
    }

    #[test]
    fn file_names_and_cut_images_get_hints() {
        let h = fetch_hints("hello.sqsh", "", true);
        assert!(h[0].contains("--container-image=./hello.sqsh"), "{h:?}");
        // A file-looking name that is not there gets no file hint, and is no host.
        assert!(fetch_hints("hello.sqsh", "", false).is_empty());
        for cut in ["nvcr.io", "user@gitlab.example.com"] {
            let h = fetch_hints(cut, "", false);
            assert!(
                h[0].contains("#SBATCH") && h[0].contains("\\#IMAGE"),
                "{cut}: {h:?}"
            );
        }
        for not_cut in ["ubuntu", "nvcr.io/x", "python3.11x1", "a.b:1", "a.1"] {
            assert!(fetch_hints(not_cut, "", false).is_empty(), "{not_cut}");
        }
    }

    #[test]
    fn node_causes() {
        let userns = "enroot-nsenter: failed to create user namespace: No space left on device";
        let h = node_hints(Phase::Import, userns, Some(0));
        assert_eq!(h.len(), 1, "ENOSPC from unshare is not a full disk: {h:?}");
        assert!(h[0].contains("sysctl -w user.max_user_namespaces") && h[0].contains("is 0 here"));
        assert!(!node_hints(Phase::Other, userns, None)[0].contains(" here)"));
        let fuse = "fuse: failed to open /dev/fuse: Permission denied";
        assert!(node_hints(Phase::Other, fuse, None)[0].contains("modprobe fuse"));
        let full = "Write failed because No space left on device";
        assert!(node_hints(Phase::Import, full, None)[0].contains("runtime_path="));
        assert!(node_hints(Phase::Import, full, None)[0].contains("ENROOT_CACHE_PATH"));
        assert!(node_hints(Phase::Create, full, None)[0].contains("ENROOT_DATA_PATH"));
        assert!(node_hints(Phase::Export, full, None)[0].contains("--container-save"));
        assert!(node_hints(Phase::Other, full, None)[0].contains("ENROOT_RUNTIME_PATH"));
        assert!(node_hints(Phase::Import, "[ERROR] boom", None).is_empty());
        assert!(enroot_missing("/usr/bin:/bin").contains("/usr/bin:/bin"));
    }
}
