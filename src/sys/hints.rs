//! Read-only looks at the node behind an error hint (`crate::core::hints`): run by the
//! task that reports a failed step (the user, in the job's working directory), only
//! after something already failed.

/// True when `name` (no `/`) is a regular file in the working directory: the step's,
/// since Slurm starts every task there.
pub fn file_in_cwd(name: &str) -> bool {
    !name.contains('/') && crate::core::bytes::to_path(name).is_file()
}

/// `user.max_user_namespaces`, when readable.
pub fn max_user_namespaces() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/user/max_user_namespaces")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The PATH enroot is looked up in (slurmstepd's own).
pub fn search_path() -> String {
    std::env::var_os("PATH").map_or_else(String::new, |p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes() {
        assert!(file_in_cwd("Cargo.toml"));
        assert!(!file_in_cwd("src"), "a directory is no image file");
        assert!(!file_in_cwd("./Cargo.toml"));
        assert!(!file_in_cwd("no-such-file.sqsh"));
        assert!(!search_path().is_empty());
    }
}
