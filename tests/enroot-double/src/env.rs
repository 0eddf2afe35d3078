//! The container environment file and its transformations.
//!
//! enroot builds `$ENROOT_RUNTIME_PATH/environment` from the image's `/etc/environment`, the
//! `environ.d/*.env` files (with `${VAR}` replaced from enroot's own environment), the `environ()`
//! function of the `--conf` script and `-e` arguments; hooks may append to it. It is normalised
//! ("envfmt") after building and again after the hooks, then loaded in order with later
//! assignments winning. Values are bytes: nothing here assumes UTF-8.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Replace every `${NAME}` with the value `lookup` gives (empty when unset), like enroot's awk
/// `envsubst`. Other `$` forms are left alone.
pub fn envsubst(text: &[u8], lookup: impl Fn(&str) -> Option<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&c) = text.get(i) {
        if c == b'$' && text.get(i + 1) == Some(&b'{') {
            let rest = text.get(i + 2..).unwrap_or_default();
            let name_len = rest
                .iter()
                .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                .unwrap_or(rest.len());
            let name = rest.get(..name_len).unwrap_or_default();
            let valid_start = name
                .first()
                .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
            if valid_start && rest.get(name_len) == Some(&b'}') {
                let name = String::from_utf8_lossy(name);
                out.extend(lookup(&name).unwrap_or_default());
                i += 2 + name_len + 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Whether a line starts with a valid `NAME=`; returns the name length.
fn name_len(line: &[u8]) -> Option<usize> {
    let first = line.first()?;
    if !(first.is_ascii_alphabetic() || *first == b'_') {
        return None;
    }
    let len = line
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
        .unwrap_or(line.len());
    (line.get(len) == Some(&b'=')).then_some(len)
}

/// enroot's `envfmt`: strip leading blanks, drop comments, blank and malformed lines, drop
/// reserved `ENROOT_*` names, and remove quotes around a value (`K="v"` → `K=v`).
pub fn envfmt(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for line in text.split(|c| *c == b'\n') {
        let start = line
            .iter()
            .position(|c| !c.is_ascii_whitespace())
            .unwrap_or(line.len());
        let line = line.get(start..).unwrap_or_default();
        if line.is_empty() || line.first() == Some(&b'#') || line.starts_with(b"ENROOT_") {
            continue;
        }
        let Some(len) = name_len(line) else {
            continue;
        };
        let (name_eq, value) = line.split_at(len + 1);
        out.extend_from_slice(name_eq);
        out.extend_from_slice(unquote(value));
        out.push(b'\n');
    }
    out
}

/// Remove one pair of surrounding quotes (either kind on either side, trailing blanks allowed),
/// mirroring enroot's sed expression.
fn unquote(value: &[u8]) -> &[u8] {
    let end = value
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |p| p + 1);
    let trimmed = value.get(..end).unwrap_or_default();
    let is_quote = |c: Option<&u8>| matches!(c, Some(b'"') | Some(b'\''));
    if trimmed.len() >= 2 && is_quote(trimmed.first()) && is_quote(trimmed.last()) {
        return trimmed.get(1..trimmed.len() - 1).unwrap_or_default();
    }
    value
}

/// Expand a `-e` argument: `KEY=VALUE` stays, a bare `KEY` takes enroot's own value.
pub fn expand_cli_env(arg: &OsStr, lookup: impl Fn(&OsStr) -> Option<OsString>) -> Vec<u8> {
    let bytes = arg.as_bytes();
    let mut line = bytes.to_vec();
    if !bytes.contains(&b'=') {
        line.push(b'=');
        line.extend(lookup(arg).map(OsString::into_vec).unwrap_or_default());
    }
    line.push(b'\n');
    line
}

/// Whether a `-e` argument is acceptable: `^[[:alpha:]_][[:alnum:]_]*(=|$)`.
pub fn valid_cli_env(arg: &OsStr) -> bool {
    let b = arg.as_bytes();
    let Some(first) = b.first() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || *first == b'_') {
        return false;
    }
    let len = b
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
        .unwrap_or(b.len());
    len == b.len() || b.get(len) == Some(&b'=')
}

/// The final environment, in first-assignment order with later values winning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Environment {
    order: Vec<OsString>,
    values: BTreeMap<OsString, OsString>,
}

impl Environment {
    /// Load a (formatted) environment file; invalid lines are skipped.
    pub fn parse(text: &[u8]) -> Self {
        let mut env = Environment::default();
        for line in text.split(|c| *c == b'\n') {
            if let Some(len) = name_len(line) {
                let (name, value) = line.split_at(len);
                let value = value.get(1..).unwrap_or_default();
                env.set(OsStr::from_bytes(name), OsStr::from_bytes(value));
            }
        }
        env
    }

    /// Set or replace a variable.
    pub fn set(&mut self, name: &OsStr, value: &OsStr) {
        if self
            .values
            .insert(name.to_os_string(), value.to_os_string())
            .is_none()
        {
            self.order.push(name.to_os_string());
        }
    }

    /// Set a variable only when absent (`setenv(..., 0)`).
    pub fn set_default(&mut self, name: &str, value: &OsStr) {
        if !self.values.contains_key(OsStr::new(name)) {
            self.set(OsStr::new(name), value);
        }
    }

    /// A variable's value.
    pub fn get(&self, name: &str) -> Option<&OsStr> {
        self.values.get(OsStr::new(name)).map(OsString::as_os_str)
    }

    /// `NAME=VALUE` entries for execve.
    pub fn entries(&self) -> Vec<OsString> {
        self.order
            .iter()
            .filter_map(|k| {
                self.values.get(k).map(|v| {
                    let mut e = k.clone();
                    e.push("=");
                    e.push(v);
                    e
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(name: &str) -> Option<Vec<u8>> {
        match name {
            "TERM" => Some(b"xterm".to_vec()),
            "EMPTY" => Some(Vec::new()),
            _ => None,
        }
    }

    #[test]
    fn envsubst_replaces_braced_names_only() {
        assert_eq!(envsubst(b"TERM=${TERM}", lookup), b"TERM=xterm".to_vec());
        assert_eq!(envsubst(b"A=${UNSET}x${EMPTY}", lookup), b"A=x".to_vec());
        assert_eq!(
            envsubst(b"A=$TERM ${1X} ${T-1} ${", lookup),
            b"A=$TERM ${1X} ${T-1} ${".to_vec()
        );
    }

    #[test]
    fn envfmt_filters_and_unquotes() {
        let input = b"  A=1\n# c\n\nB=\"two words\"  \nC='x'\nENROOT_X=1\n1BAD=x\nNOEQ\nD=a\"b\nE=\nF=\"only\n";
        let out = envfmt(input);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "A=1\nB=two words\nC=x\nD=a\"b\nE=\nF=\"only\n"
        );
    }

    #[test]
    fn environment_loading_later_wins() {
        let env = Environment::parse(b"PATH=/a\nX=1\nPATH=/b\nbad line\nY=a=b\n");
        assert_eq!(env.get("PATH"), Some(OsStr::new("/b")));
        assert_eq!(env.get("Y"), Some(OsStr::new("a=b")));
        assert_eq!(
            env.entries(),
            vec![
                OsString::from("PATH=/b"),
                OsString::from("X=1"),
                OsString::from("Y=a=b")
            ]
        );
        let mut env = env;
        env.set_default("X", OsStr::new("2"));
        env.set_default("HOME", OsStr::new("/root"));
        assert_eq!(env.get("X"), Some(OsStr::new("1")));
        assert_eq!(env.get("HOME"), Some(OsStr::new("/root")));
    }

    #[test]
    fn cli_env() {
        let host = |k: &OsStr| (k == "FOO").then(|| OsString::from("bar"));
        assert_eq!(
            expand_cli_env(OsStr::new("FOO"), host),
            b"FOO=bar\n".to_vec()
        );
        assert_eq!(
            expand_cli_env(OsStr::new("NOPE"), host),
            b"NOPE=\n".to_vec()
        );
        assert_eq!(
            expand_cli_env(OsStr::new("A=b=c"), host),
            b"A=b=c\n".to_vec()
        );
        assert!(valid_cli_env(OsStr::new("A_1=x y")));
        assert!(valid_cli_env(OsStr::new("_A")));
        assert!(!valid_cli_env(OsStr::new("1A")));
        assert!(!valid_cli_env(OsStr::new("A-B=1")));
        assert!(!valid_cli_env(OsStr::new("")));
    }
}
