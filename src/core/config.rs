//! The plugstack.conf arguments of the plugin (behaviour spec §3).
//!
//! Decides which `key=value` arguments are accepted, their defaults and the
//! exact error for anything else (every error is fatal for the calling
//! context). Used by the allocator `init` (`sbatch_support`), slurmd `init`
//! (`runtime_path`), slurmstepd `init` (everything) and the job epilog
//! (`container_scope`); srun never parses it.
//!
//! Deliberate difference from pyxis: `runtime_path` and a non-empty
//! `importer` must be absolute paths (pyxis accepted relative ones, which
//! then resolved against whatever directory slurmd or slurmstepd ran in).

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

pub use crate::core::args::parse_bool;

/// PATH_MAX: pyxis stores paths in PATH_MAX buffers, so a value of this
/// length or more is "too long".
const PATH_MAX: usize = 4096;

/// How containers are named and whether the job epilog removes them (§5.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Names carry the job id; the epilog removes the job's containers.
    Job,
    /// Names are global to the user; nothing removes named containers.
    Global,
}

/// The parsed plugin configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Root of the per-user temporary squashfs directories.
    pub runtime_path: PathBuf,
    /// Default for `--[no-]container-entrypoint`.
    pub execute_entrypoint: bool,
    /// Container naming and epilog cleanup.
    pub container_scope: Scope,
    /// Whether sbatch/salloc register the options.
    pub sbatch_support: bool,
    /// Use `enroot load` instead of import + create.
    pub use_enroot_load: bool,
    /// Importer executable (§5.11); `None` when unset or empty.
    pub importer: Option<PathBuf>,
    /// Start unnamed containers directly from the squashfs file (§5.12); on by default
    /// in pyxis-rs (issue 7), used only when the node is probed to support it.
    pub use_squashfuse: bool,
    /// Root of the per-user, digest-keyed image caches (`<path>/<uid>/`); `None`
    /// when `image_cache_path=none` or `image_cache_size=0` disabled the cache.
    pub image_cache_path: Option<PathBuf>,
    /// Upper bound of one user's image cache on one node, in bytes.
    pub image_cache_size: u64,
    /// Deadline of the short enroot/importer calls made by slurmstepd and the tasks
    /// (`list`, `digest`, `start`, `remove`, importer `release`).
    pub command_timeout: Duration,
    /// Deadline of the long ones (`import`, `create`, `load`, `export`, importer `get`).
    pub import_timeout: Duration,
    /// The site's directory of environment definition files (`--environment=NAME`
    /// looks in `~/.edf` first, then here); `None` when unset or empty.
    pub environment_path: Option<PathBuf>,
}

/// `image_cache_path` default: local disk, not the `/run` tmpfs.
pub const DEFAULT_IMAGE_CACHE_PATH: &str = "/var/cache/pyxis";
/// `image_cache_size` default: 50 GiB per user and node.
pub const DEFAULT_IMAGE_CACHE_SIZE: u64 = 50 << 30;
/// `command_timeout` default.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(600);
/// `import_timeout` default: a large image over a slow registry link.
pub const DEFAULT_IMPORT_TIMEOUT: Duration = Duration::from_secs(2 * 3600);

impl Default for Config {
    fn default() -> Self {
        Config {
            runtime_path: PathBuf::from("/run/pyxis"),
            execute_entrypoint: false,
            container_scope: Scope::Global,
            sbatch_support: true,
            use_enroot_load: false,
            importer: None,
            use_squashfuse: true,
            image_cache_path: Some(PathBuf::from(DEFAULT_IMAGE_CACHE_PATH)),
            image_cache_size: DEFAULT_IMAGE_CACHE_SIZE,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            import_timeout: DEFAULT_IMPORT_TIMEOUT,
            environment_path: None,
        }
    }
}

impl Config {
    /// The image cache root, if the cache is enabled.
    pub fn image_cache(&self) -> Option<&std::path::Path> {
        self.image_cache_path
            .as_deref()
            .filter(|_| self.image_cache_size > 0)
    }
}

/// Why the plugstack arguments were rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// An argument that matches no `key=` prefix.
    #[error("unknown configuration option: {0}")]
    UnknownOption(String),
    /// A boolean key with a value `parse_bool` rejects (also container_scope).
    #[error("{key}: invalid value: {value}")]
    InvalidValue {
        /// The key without `=`.
        key: &'static str,
        /// The value as given.
        value: String,
    },
    /// A path of PATH_MAX bytes or more.
    #[error("{key}: path too long: {value}")]
    PathTooLong {
        /// The key without `=`.
        key: &'static str,
        /// The value as given.
        value: String,
    },
    /// A relative path (not checked by pyxis).
    #[error("{key}: must be an absolute path: {value}")]
    NotAbsolute {
        /// The key without `=`.
        key: &'static str,
        /// The value as given.
        value: String,
    },
}

/// A boolean value or the §3 error for `key`.
fn bool_value(key: &'static str, value: &str) -> Result<bool, ConfigError> {
    parse_bool(value).ok_or_else(|| ConfigError::InvalidValue {
        key,
        value: value.to_owned(),
    })
}

/// A path value: shorter than PATH_MAX and absolute.
fn path_value(key: &'static str, value: &str) -> Result<PathBuf, ConfigError> {
    if value.len() >= PATH_MAX {
        return Err(ConfigError::PathTooLong {
            key,
            value: value.to_owned(),
        });
    }
    if !value.starts_with('/') {
        return Err(ConfigError::NotAbsolute {
            key,
            value: value.to_owned(),
        });
    }
    Ok(PathBuf::from(value))
}

/// A size in bytes: digits with an optional `K`, `M`, `G` or `T` suffix (powers of
/// 1024); `none` means 0.
pub fn parse_size(value: &str) -> Option<u64> {
    if value == "none" {
        return Some(0);
    }
    let (digits, shift) = match value.as_bytes().last()? {
        b'K' | b'k' => (value.get(..value.len() - 1)?, 10),
        b'M' | b'm' => (value.get(..value.len() - 1)?, 20),
        b'G' | b'g' => (value.get(..value.len() - 1)?, 30),
        b'T' | b't' => (value.get(..value.len() - 1)?, 40),
        _ => (value, 0),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(1u64 << shift)
}

/// A positive number of seconds.
fn seconds_value(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|s| *s > 0 && value.bytes().all(|b| b.is_ascii_digit()))
        .map(Duration::from_secs)
        .ok_or_else(|| ConfigError::InvalidValue {
            key,
            value: value.to_owned(),
        })
}

/// Parses the plugstack.conf arguments (§3): `key=value`, last occurrence
/// wins, anything else is an error.
pub fn parse_config<S: AsRef<str>>(args: &[S]) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    for arg in args {
        let arg = arg.as_ref();
        let (key, value) = arg
            .split_once('=')
            .ok_or_else(|| ConfigError::UnknownOption(arg.to_owned()))?;
        match key {
            "runtime_path" => config.runtime_path = path_value("runtime_path", value)?,
            "execute_entrypoint" => {
                config.execute_entrypoint = bool_value("execute_entrypoint", value)?;
            }
            "container_scope" => {
                config.container_scope = match value {
                    "job" => Scope::Job,
                    "global" => Scope::Global,
                    _ => {
                        return Err(ConfigError::InvalidValue {
                            key: "container_scope",
                            value: value.to_owned(),
                        })
                    }
                };
            }
            "sbatch_support" => config.sbatch_support = bool_value("sbatch_support", value)?,
            "use_enroot_load" => config.use_enroot_load = bool_value("use_enroot_load", value)?,
            "importer" => {
                config.importer = if value.is_empty() {
                    None
                } else {
                    Some(path_value("importer", value)?)
                };
            }
            "use_squashfuse" => config.use_squashfuse = bool_value("use_squashfuse", value)?,
            "environment_path" => {
                config.environment_path = if value.is_empty() {
                    None
                } else {
                    Some(path_value("environment_path", value)?)
                };
            }
            "image_cache_path" => {
                config.image_cache_path = match value {
                    "none" | "0" => None,
                    _ => Some(path_value("image_cache_path", value)?),
                };
            }
            "image_cache_size" => {
                config.image_cache_size =
                    parse_size(value).ok_or_else(|| ConfigError::InvalidValue {
                        key: "image_cache_size",
                        value: value.to_owned(),
                    })?;
            }
            "command_timeout" => config.command_timeout = seconds_value("command_timeout", value)?,
            "import_timeout" => config.import_timeout = seconds_value("import_timeout", value)?,
            _ => return Err(ConfigError::UnknownOption(arg.to_owned())),
        }
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let empty: [&str; 0] = [];
        let c = parse_config(&empty).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.runtime_path, PathBuf::from("/run/pyxis"));
        assert!(!c.execute_entrypoint);
        assert_eq!(c.container_scope, Scope::Global);
        assert!(c.sbatch_support);
        assert!(!c.use_enroot_load);
        assert_eq!(c.importer, None);
        assert!(c.use_squashfuse);
        assert_eq!(
            c.image_cache(),
            Some(std::path::Path::new("/var/cache/pyxis"))
        );
        assert_eq!(c.image_cache_size, 50 << 30);
        assert_eq!(c.command_timeout, Duration::from_secs(600));
        assert_eq!(c.import_timeout, Duration::from_secs(7200));
        assert_eq!(c.environment_path, None);
    }

    #[test]
    fn environment_path() {
        let c = parse_config(&["environment_path=/etc/pyxis/edf"]).unwrap();
        assert_eq!(c.environment_path, Some(PathBuf::from("/etc/pyxis/edf")));
        assert_eq!(
            parse_config(&["environment_path="])
                .unwrap()
                .environment_path,
            None
        );
        assert_eq!(
            parse_config(&["environment_path=edf"])
                .unwrap_err()
                .to_string(),
            "environment_path: must be an absolute path: edf"
        );
    }

    #[test]
    fn image_cache_and_timeouts() {
        let c = parse_config(&[
            "image_cache_path=/scratch/pyxis",
            "image_cache_size=20G",
            "command_timeout=30",
            "import_timeout=900",
        ])
        .unwrap();
        assert_eq!(
            c.image_cache(),
            Some(std::path::Path::new("/scratch/pyxis"))
        );
        assert_eq!(c.image_cache_size, 20 << 30);
        assert_eq!(c.command_timeout, Duration::from_secs(30));
        assert_eq!(c.import_timeout, Duration::from_secs(900));
        for off in [
            ["image_cache_path=none"].as_slice(),
            &["image_cache_path=0"],
            &["image_cache_size=0"],
            &["image_cache_size=none"],
        ] {
            assert_eq!(parse_config(off).unwrap().image_cache(), None, "{off:?}");
        }
        for (arg, msg) in [
            (
                "image_cache_size=12X",
                "image_cache_size: invalid value: 12X",
            ),
            ("image_cache_size=", "image_cache_size: invalid value: "),
            ("image_cache_size=-1", "image_cache_size: invalid value: -1"),
            (
                "image_cache_size=99999999999T",
                "image_cache_size: invalid value: 99999999999T",
            ),
            (
                "image_cache_path=cache",
                "image_cache_path: must be an absolute path: cache",
            ),
            ("command_timeout=0", "command_timeout: invalid value: 0"),
            ("import_timeout=+5", "import_timeout: invalid value: +5"),
            ("import_timeout=1h", "import_timeout: invalid value: 1h"),
        ] {
            assert_eq!(parse_config(&[arg]).unwrap_err().to_string(), msg, "{arg}");
        }
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("4k"), Some(4096));
        assert_eq!(parse_size("3M"), Some(3 << 20));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("G"), None);
    }

    #[test]
    fn accepted() {
        let c = parse_config(&[
            "runtime_path=/tmp/pyxis",
            "execute_entrypoint=1",
            "container_scope=job",
            "sbatch_support=no",
            "use_enroot_load=y",
            "importer=/usr/libexec/imp",
            "use_squashfuse=false",
        ])
        .unwrap();
        assert_eq!(
            c,
            Config {
                runtime_path: "/tmp/pyxis".into(),
                execute_entrypoint: true,
                container_scope: Scope::Job,
                sbatch_support: false,
                use_enroot_load: true,
                importer: Some("/usr/libexec/imp".into()),
                use_squashfuse: false,
                ..Config::default()
            }
        );
        // Last occurrence wins, including an empty importer disabling it.
        let c = parse_config(&[
            "container_scope=job",
            "container_scope=global",
            "importer=/x",
            "importer=",
            "execute_entrypoint=true",
            "execute_entrypoint=0",
        ])
        .unwrap();
        assert_eq!(c.container_scope, Scope::Global);
        assert_eq!(c.importer, None);
        assert!(!c.execute_entrypoint);
        // The value is everything after the first '='.
        let c = parse_config(&["runtime_path=/a=b"]).unwrap();
        assert_eq!(c.runtime_path, PathBuf::from("/a=b"));
    }

    #[test]
    fn rejected() {
        let long = format!("/{}", "a".repeat(4095));
        let max = format!("/{}", "a".repeat(4094));
        assert!(parse_config(&[format!("runtime_path={max}")]).is_ok());
        let cases: Vec<(String, String)> = vec![
            (
                "remap_root=1".into(),
                "unknown configuration option: remap_root=1".into(),
            ),
            (
                "epilog=1".into(),
                "unknown configuration option: epilog=1".into(),
            ),
            ("bogus".into(), "unknown configuration option: bogus".into()),
            ("".into(), "unknown configuration option: ".into()),
            (
                " runtime_path=/x".into(),
                "unknown configuration option:  runtime_path=/x".into(),
            ),
            (
                "RUNTIME_PATH=/x".into(),
                "unknown configuration option: RUNTIME_PATH=/x".into(),
            ),
            (
                "execute_entrypoint=True".into(),
                "execute_entrypoint: invalid value: True".into(),
            ),
            (
                "sbatch_support=".into(),
                "sbatch_support: invalid value: ".into(),
            ),
            (
                "use_enroot_load=2".into(),
                "use_enroot_load: invalid value: 2".into(),
            ),
            (
                "use_squashfuse=on".into(),
                "use_squashfuse: invalid value: on".into(),
            ),
            (
                "container_scope=Job".into(),
                "container_scope: invalid value: Job".into(),
            ),
            (
                "container_scope=".into(),
                "container_scope: invalid value: ".into(),
            ),
            (
                format!("runtime_path={long}"),
                format!("runtime_path: path too long: {long}"),
            ),
            (
                format!("importer={long}"),
                format!("importer: path too long: {long}"),
            ),
            (
                "runtime_path=run/pyxis".into(),
                "runtime_path: must be an absolute path: run/pyxis".into(),
            ),
            (
                "runtime_path=".into(),
                "runtime_path: must be an absolute path: ".into(),
            ),
            (
                "importer=imp.sh".into(),
                "importer: must be an absolute path: imp.sh".into(),
            ),
        ];
        for (arg, msg) in cases {
            let err = parse_config(&["container_scope=job", arg.as_str()]).unwrap_err();
            assert_eq!(err.to_string(), msg, "{arg:?}");
        }
    }
}
