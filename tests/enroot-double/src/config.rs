//! enroot settings: configuration file, environment and defaults.
//!
//! Resolution follows enroot (§7.2 of the behaviour notes): `<sysconf>/enroot.conf` then
//! `<sysconf>/enroot.conf.d/*.conf` are read line by line; only keys that enroot accepts are used;
//! each value is shell-expanded (so `$(id -u)` works); a non-empty environment value wins over the
//! file. Then the XDG and `ENROOT_*` defaults are filled in, and every `ENROOT_*` variable whose
//! value means "no" is removed, so "set and non-empty" means "on" everywhere else.
//!
//! The result is the complete environment the rest of the double works with: it is what the
//! `--conf` functions and hooks see, like the exported variables of enroot's bash process.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::util;

/// The version printed by `enroot version` and exported as `ENROOT_VERSION`.
pub const VERSION: &str = "4.1.2-double";

/// Where `enroot.conf` lives unless `ENROOT_SYSCONF_PATH` says otherwise. The build may bake in
/// another default (`ENROOT_DOUBLE_SYSCONF_PATH=... cargo build`) because pyxis strips
/// `ENROOT_SYSCONF_PATH` from enroot's environment.
pub const DEFAULT_SYSCONF: &str = match option_env!("ENROOT_DOUBLE_SYSCONF_PATH") {
    Some(p) => p,
    None => "/etc/enroot",
};

/// Default mksquashfs options. enroot also passes `-exit-on-error`, which the squashfs-tools 4.5
/// found on test machines does not know.
pub const DEFAULT_SQUASH_OPTIONS: &str = "-comp lzo -noD";

/// The environment of the double after configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    vars: BTreeMap<OsString, OsString>,
}

impl Config {
    /// A configuration holding exactly these variables (no files, no defaults).
    pub fn from_vars(vars: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        Config {
            vars: vars.into_iter().collect(),
        }
    }

    /// Resolve the settings from the process environment, the configuration files and defaults,
    /// and create the cache, data and runtime directories like enroot does on every invocation.
    pub fn load() -> Result<Self> {
        let mut cfg = Config::from_vars(std::env::vars_os());
        let sysconf = cfg
            .get("ENROOT_SYSCONF_PATH")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SYSCONF));

        let main = sysconf.join("enroot.conf");
        cfg.load_file(&main)?;
        let dropins = util::sorted_entries_with_suffix(&sysconf.join("enroot.conf.d"), ".conf");
        for file in dropins {
            cfg.load_file(&file)?;
        }
        cfg.apply_defaults(&sysconf);
        cfg.remove_false();
        cfg.create_directories()?;
        Ok(cfg)
    }

    /// The value of a variable, if set.
    pub fn get(&self, key: &str) -> Option<&OsStr> {
        self.vars.get(OsStr::new(key)).map(OsString::as_os_str)
    }

    /// Whether a setting is on: set and non-empty (false-like values were removed by `load`).
    pub fn is_on(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| !v.is_empty())
    }

    /// Set a variable.
    pub fn set(&mut self, key: &str, value: impl Into<OsString>) {
        self.vars.insert(OsString::from(key), value.into());
    }

    /// Remove a variable.
    pub fn unset(&mut self, key: &str) {
        self.vars.remove(OsStr::new(key));
    }

    /// A path-valued setting (always present after `load` for the `*_PATH` settings).
    pub fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(self.get(key).unwrap_or_default())
    }

    /// All variables, sorted by name.
    pub fn vars(&self) -> impl Iterator<Item = (&OsString, &OsString)> {
        self.vars.iter()
    }

    /// Read one configuration file; a missing file is not an error.
    fn load_file(&mut self, file: &Path) -> Result<()> {
        let text = match std::fs::read(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(format!("Could not read {}", file.display()), &e)),
        };
        for line in text.split(|&b| b == b'\n') {
            let Some((key, raw)) = parse_line(line) else {
                continue;
            };
            // Keys are set in order so that later values may refer to earlier ones.
            if self.get(&key).is_some_and(|v| !v.is_empty()) {
                continue;
            }
            let value = self.expand(raw)?;
            self.set(&key, value);
        }
        Ok(())
    }

    /// Shell-expand a value like enroot's `eval echo ${value}`, with this configuration as the
    /// environment.
    pub fn expand(&self, raw: &[u8]) -> Result<OsString> {
        if let Some(simple) = expand_without_shell(raw) {
            return Ok(simple);
        }
        let output = Command::new("bash")
            .args(["--norc", "--noprofile", "-c", "eval echo \"$1\"", "enroot"])
            .arg(OsStr::from_bytes(raw))
            .env_clear()
            .envs(self.vars.iter())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| Error::io("Could not run bash to expand the configuration", &e))?;
        let mut out = output.stdout;
        if out.last() == Some(&b'\n') {
            out.pop();
        }
        Ok(OsString::from_vec(out))
    }

    /// Set `key` to `value` unless the environment already has a non-empty value.
    fn default(&mut self, key: &str, value: impl Into<OsString>) {
        if !self.is_on(key) {
            self.set(key, value);
        }
    }

    fn apply_defaults(&mut self, sysconf: &Path) {
        let home = self
            .get("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(util::passwd_home)
            .unwrap_or_else(|| PathBuf::from("/"));
        self.default("XDG_DATA_HOME", home.join(".local/share"));
        self.default("XDG_CONFIG_HOME", home.join(".config"));
        self.default("XDG_CACHE_HOME", home.join(".cache"));
        self.default("XDG_RUNTIME_DIR", "/run");

        self.default("ENROOT_SYSCONF_PATH", sysconf);
        self.default(
            "ENROOT_RUNTIME_PATH",
            self.path("XDG_RUNTIME_DIR").join("enroot"),
        );
        self.default(
            "ENROOT_CONFIG_PATH",
            self.path("XDG_CONFIG_HOME").join("enroot"),
        );
        self.default(
            "ENROOT_CACHE_PATH",
            self.path("XDG_CACHE_HOME").join("enroot"),
        );
        self.default(
            "ENROOT_DATA_PATH",
            self.path("XDG_DATA_HOME").join("enroot"),
        );
        let tmp = self
            .get("TMPDIR")
            .filter(|t| !t.is_empty())
            .map(OsStr::to_os_string)
            .unwrap_or_else(|| OsString::from("/tmp"));
        self.default("ENROOT_TEMP_PATH", tmp);

        let nproc = std::thread::available_parallelism().map_or(1, usize::from);
        self.default("ENROOT_GZIP_PROGRAM", "gzip");
        self.default("ENROOT_ZSTD_OPTIONS", "-1");
        self.default("ENROOT_SQUASH_OPTIONS", DEFAULT_SQUASH_OPTIONS);
        self.default("ENROOT_MAX_PROCESSORS", nproc.to_string());
        self.default("ENROOT_MAX_CONNECTIONS", "10");
        self.default("ENROOT_CONNECT_TIMEOUT", "30");
        self.default("ENROOT_TRANSFER_TIMEOUT", "0");
        self.default("ENROOT_TRANSFER_RETRIES", "0");
        self.default("ENROOT_LOGIN_SHELL", "true");
        self.default("ENROOT_ALLOW_SUPERUSER", "false");
        self.default("ENROOT_ALLOW_HTTP", "false");
        self.default("ENROOT_ROOTFS_WRITABLE", "false");
        self.default("ENROOT_NATIVE_OVERLAYFS", "true");
        self.default("ENROOT_REMAP_ROOT", "false");
        self.default("ENROOT_BUNDLE_ALL", "false");
        self.default("ENROOT_BUNDLE_CHECKSUM", "false");
        self.default("ENROOT_FORCE_OVERRIDE", "false");
        self.set("ENROOT_VERSION", VERSION);
    }

    /// Drop every `ENROOT_*` variable whose value means "no".
    fn remove_false(&mut self) {
        self.vars
            .retain(|k, v| !(k.as_bytes().starts_with(b"ENROOT_") && is_false(v.as_bytes())));
    }

    fn create_directories(&self) -> Result<()> {
        for key in [
            "ENROOT_CACHE_PATH",
            "ENROOT_DATA_PATH",
            "ENROOT_RUNTIME_PATH",
        ] {
            let dir = self.path(key);
            util::create_private_dir_all(&dir).map_err(|e| {
                Error::io(format!("Could not create directory: {}", dir.display()), &e)
            })?;
        }
        Ok(())
    }
}

/// Whether a key is one enroot reads from its configuration file.
pub fn key_accepted(key: &[u8]) -> bool {
    let upper_tail =
        |rest: &[u8]| !rest.is_empty() && rest.iter().all(|&c| c.is_ascii_uppercase() || c == b'_');
    if let Some(rest) = key.strip_prefix(b"ENROOT_") {
        return upper_tail(rest);
    }
    key.starts_with(b"MELLANOX_")
        || key.starts_with(b"NVIDIA_")
        || matches!(key, b"SSL_CERT_DIR" | b"SSL_CERT_FILE")
        || matches!(
            key,
            b"all_proxy" | b"no_proxy" | b"http_proxy" | b"https_proxy"
        )
}

/// Split a configuration line into an accepted key and its raw value, the way bash's
/// `IFS=$' \t=' read -r key value` splits it. Comments simply fail the key check.
pub fn parse_line(line: &[u8]) -> Option<(String, &[u8])> {
    let is_ws = |c: &u8| *c == b' ' || *c == b'\t';
    let start = line.iter().position(|c| !is_ws(c))?;
    let line = line.get(start..)?;
    let key_len = line
        .iter()
        .position(|c| is_ws(c) || *c == b'=')
        .unwrap_or(line.len());
    let (key, rest) = line.split_at(key_len);
    if !key_accepted(key) {
        return None;
    }
    // One separator: surrounding blanks and at most one '='.
    let mut rest = rest;
    while let Some((c, tail)) = rest.split_first() {
        if !is_ws(c) {
            break;
        }
        rest = tail;
    }
    if let Some(tail) = rest.strip_prefix(b"=") {
        rest = tail;
        while let Some((c, tail)) = rest.split_first() {
            if !is_ws(c) {
                break;
            }
            rest = tail;
        }
    }
    let end = rest
        .iter()
        .rposition(|c| !is_ws(c) && *c != b'\r')
        .map_or(0, |p| p + 1);
    Some((
        String::from_utf8_lossy(key).into_owned(),
        rest.get(..end).unwrap_or_default(),
    ))
}

/// Expand a value that needs no shell: plain words are only re-joined with single spaces, which is
/// what `echo ${value}` does to them. Anything that could be a shell construct returns `None`.
pub fn expand_without_shell(raw: &[u8]) -> Option<OsString> {
    let plain = |c: &u8| c.is_ascii_alphanumeric() || b"_./:,=+@%-^ \t".contains(c);
    if !raw.iter().all(plain) {
        return None;
    }
    let words: Vec<&[u8]> = raw
        .split(|c| *c == b' ' || *c == b'\t')
        .filter(|w| !w.is_empty())
        .collect();
    Some(OsString::from_vec(words.join(&b' ')))
}

/// enroot's "off" values: `^(no?|N[oO]?|[fF](alse)?|FALSE)$`.
pub fn is_false(value: &[u8]) -> bool {
    matches!(
        value,
        b"n" | b"no" | b"N" | b"NO" | b"No" | b"f" | b"F" | b"false" | b"False" | b"FALSE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn false_set_matches_enroot() {
        for v in [
            "n", "no", "N", "No", "NO", "f", "false", "F", "False", "FALSE",
        ] {
            assert!(is_false(v.as_bytes()), "{v}");
        }
        for v in ["", "y", "yes", "nO", "fALSE", "0", "off", "true", "nope"] {
            assert!(!is_false(v.as_bytes()), "{v}");
        }
    }

    #[test]
    fn accepted_keys() {
        assert!(key_accepted(b"ENROOT_DATA_PATH"));
        assert!(!key_accepted(b"ENROOT_"));
        assert!(!key_accepted(b"ENROOT_data"));
        assert!(!key_accepted(b"#ENROOT_DATA_PATH"));
        assert!(key_accepted(b"NVIDIA_VISIBLE_DEVICES"));
        assert!(key_accepted(b"MELLANOX_VISIBLE_DEVICES"));
        assert!(key_accepted(b"https_proxy"));
        assert!(!key_accepted(b"HTTPS_PROXY"));
        assert!(key_accepted(b"SSL_CERT_FILE"));
        assert!(!key_accepted(b"PATH"));
    }

    #[test]
    fn line_splitting() {
        assert_eq!(
            parse_line(b"ENROOT_DATA_PATH  /tmp/x  "),
            Some(("ENROOT_DATA_PATH".to_string(), &b"/tmp/x"[..]))
        );
        assert_eq!(
            parse_line(b"  ENROOT_X=a b"),
            Some(("ENROOT_X".to_string(), &b"a b"[..]))
        );
        assert_eq!(
            parse_line(b"ENROOT_X = $(id -u)"),
            Some(("ENROOT_X".to_string(), &b"$(id -u)"[..]))
        );
        assert_eq!(
            parse_line(b"ENROOT_X"),
            Some(("ENROOT_X".to_string(), &b""[..]))
        );
        assert_eq!(parse_line(b"#ENROOT_X y"), None);
        assert_eq!(parse_line(b""), None);
        assert_eq!(parse_line(b"FOO=bar"), None);
    }

    #[test]
    fn simple_values_skip_the_shell() {
        assert_eq!(
            expand_without_shell(b"-comp  lzo -noD"),
            Some(OsString::from("-comp lzo -noD"))
        );
        assert_eq!(
            expand_without_shell(b"/run/enroot"),
            Some(OsString::from("/run/enroot"))
        );
        assert_eq!(expand_without_shell(b"$HOME/x"), None);
        assert_eq!(expand_without_shell(b"\"quoted\""), None);
        assert_eq!(expand_without_shell(b"*"), None);
    }

    #[test]
    fn shell_expansion_sees_earlier_values() {
        let mut cfg = Config::from_vars([(OsString::from("ENROOT_A"), OsString::from("x y"))]);
        let v = cfg.expand(b"${ENROOT_A}/$(echo z)").unwrap();
        assert_eq!(v, OsString::from("x y/z"));
        cfg.default("ENROOT_A", "other");
        assert_eq!(cfg.get("ENROOT_A"), Some(OsStr::new("x y")));
        cfg.default("ENROOT_B", "b");
        assert_eq!(cfg.get("ENROOT_B"), Some(OsStr::new("b")));
    }

    #[test]
    fn false_values_are_removed() {
        let mut cfg = Config::from_vars([
            (OsString::from("ENROOT_REMAP_ROOT"), OsString::from("n")),
            (
                OsString::from("ENROOT_ROOTFS_WRITABLE"),
                OsString::from("yes"),
            ),
            (OsString::from("OTHER"), OsString::from("no")),
        ]);
        cfg.remove_false();
        assert!(!cfg.is_on("ENROOT_REMAP_ROOT"));
        assert!(cfg.is_on("ENROOT_ROOTFS_WRITABLE"));
        assert!(cfg.is_on("OTHER"));
    }
}
