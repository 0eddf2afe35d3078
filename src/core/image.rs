//! What a `--container-image` string refers to (behaviour spec §5.10).
//!
//! Decides whether the image is a squashfs file on the compute node or a
//! registry image, and the enroot URI of a registry image. Used by the
//! creator task in slurmstepd when it imports and creates the container, and
//! when choosing the direct squashfuse start (§5.12).
//!
//! Kept exactly as pyxis for compatibility, including weak spot W24: any
//! string whose first character is `.` or `/` is a path (so a local tag such
//! as `.foo` is a file), and an unknown scheme such as `podman://x` becomes
//! `docker://podman://x`, which enroot then rejects with its own error.
//!
//! One addition: Docker's `REGISTRY/IMAGE` (a first component with `.` or `:`, or
//! `localhost`) is handed to enroot as `REGISTRY#IMAGE` ([`hints::docker_to_enroot`]),
//! because enroot before 4.0 sends the slash form to Docker Hub.

use super::hints;

/// The source of the container filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// A squashfs file, passed as given (relative paths resolve against the
    /// task's working directory).
    Squashfs(String),
    /// A registry image with its enroot URI (`docker://…` or `dockerd://…`).
    Registry {
        /// The URI handed to `enroot import`/`load` or the importer.
        uri: String,
    },
}

impl ImageSource {
    /// True for `dockerd://` images, which `enroot load` cannot fetch.
    pub fn is_dockerd(&self) -> bool {
        matches!(self, ImageSource::Registry { uri } if uri.starts_with("dockerd://"))
    }
}

/// Classifies an image argument (§5.10).
pub fn classify(image: &str) -> ImageSource {
    if image.starts_with('.') || image.starts_with('/') {
        ImageSource::Squashfs(image.to_owned())
    } else if image.starts_with("dockerd://") {
        ImageSource::Registry {
            uri: image.to_owned(),
        }
    } else {
        let rest = image.strip_prefix("docker://").unwrap_or(image);
        let rest = hints::docker_to_enroot(rest).unwrap_or_else(|| rest.to_owned());
        ImageSource::Registry {
            uri: format!("docker://{rest}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let path = |s: &str| ImageSource::Squashfs(s.to_owned());
        let reg = |s: &str| ImageSource::Registry { uri: s.to_owned() };
        let cases = [
            ("/a/b.sqsh", path("/a/b.sqsh")),
            ("./x.sqsh", path("./x.sqsh")),
            ("../x", path("../x")),
            (".foo", path(".foo")),
            ("ubuntu", reg("docker://ubuntu")),
            ("ubuntu:24.04", reg("docker://ubuntu:24.04")),
            (
                "nvcr.io#nvidia/pytorch:21.12-py3",
                reg("docker://nvcr.io#nvidia/pytorch:21.12-py3"),
            ),
            ("user@reg#img", reg("docker://user@reg#img")),
            ("docker://ubuntu", reg("docker://ubuntu")),
            ("dockerd://ubuntu", reg("dockerd://ubuntu")),
            ("podman://ubuntu", reg("docker://podman://ubuntu")),
            ("DOCKER://x", reg("docker://DOCKER://x")),
            (
                "127.0.0.1:5000/repo:tag",
                reg("docker://127.0.0.1:5000#repo:tag"),
            ),
            (
                "docker://nvcr.io/nvidia/pytorch:24.01-py3",
                reg("docker://nvcr.io#nvidia/pytorch:24.01-py3"),
            ),
            ("dockerd://localhost/x", reg("dockerd://localhost/x")),
            ("nvidia/cuda", reg("docker://nvidia/cuda")),
        ];
        for (image, want) in cases {
            assert_eq!(classify(image), want, "{image}");
        }
        assert!(classify("dockerd://x").is_dockerd());
        assert!(!classify("docker://x").is_dockerd());
        assert!(!classify("/dockerd://x").is_dockerd());
    }
}
