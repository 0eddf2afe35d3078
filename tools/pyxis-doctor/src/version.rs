//! Version strings of the programs the doctor asks (`slurmd -V`, `enroot version`) and
//! what each enroot release can do (pyxis-behaviour.md §7.1). Pure.

/// A dotted release `major.minor.micro` (missing parts are 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Release(pub u32, pub u32, pub u32);

impl std::fmt::Display for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// The first token of `text` that reads as `N.N[.N]` (a `-rc1`-style tail ignored):
/// `slurm 22.05.8`, `slurm-wlm 24.11.1`, `4.1.2`.
pub fn parse_release(text: &str) -> Option<Release> {
    text.split_whitespace().find_map(|token| {
        let token = token.split(['-', '+', '~']).next()?;
        let mut parts = token.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let micro = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        parts
            .next()
            .is_none()
            .then_some(Release(major, minor, micro))
    })
}

/// The oldest enroot pyxis (and pyxis-rs) supports.
pub const ENROOT_MIN: Release = Release(3, 1, 0);
/// `enroot digest` and `enroot load` appeared in 4.0.0.
pub const ENROOT_DIGEST_LOAD: Release = Release(4, 0, 0);
/// `enroot load` needs `ENROOT_NATIVE_OVERLAYFS`, from 4.1.0.
pub const ENROOT_NATIVE_OVERLAYFS: Release = Release(4, 1, 0);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_the_programs_print() {
        assert_eq!(parse_release("slurm 22.05.8\n"), Some(Release(22, 5, 8)));
        assert_eq!(parse_release("slurm-wlm 24.11.1"), Some(Release(24, 11, 1)));
        assert_eq!(parse_release("4.1.2\n"), Some(Release(4, 1, 2)));
        assert_eq!(parse_release("3.4"), Some(Release(3, 4, 0)));
        assert_eq!(parse_release("slurm 25.05.0-0rc1"), Some(Release(25, 5, 0)));
        assert_eq!(parse_release("enroot: command not found"), None);
        assert_eq!(parse_release("1.2.3.4"), None);
        assert_eq!(parse_release(""), None);
    }

    #[test]
    fn releases_order_numerically() {
        assert!(Release(4, 10, 0) > Release(4, 9, 9));
        assert!(Release(3, 1, 0) >= ENROOT_MIN);
        assert!(Release(3, 0, 9) < ENROOT_MIN);
        assert_eq!(Release(22, 5, 8).to_string(), "22.5.8");
    }
}
