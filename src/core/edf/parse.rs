//! One environment file's text into a [`Layer`], with every mistake located as
//! `file:line: key: message` (toml's spans turned into line numbers).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::EdfError;
use crate::core::mount;

/// `base_environment = "a"` or `base_environment = ["a", "b"]`.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// The keys pyxis-rs knows, CSCS's names and types.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    base_environment: Option<OneOrMany>,
    image: Option<String>,
    mounts: Option<Vec<String>>,
    workdir: Option<String>,
    writable: Option<bool>,
    entrypoint: Option<bool>,
    env: Option<BTreeMap<String, String>>,
}

/// One parsed file, variables not yet expanded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layer {
    /// The file as reported in errors.
    pub file: String,
    pub bases: Vec<String>,
    pub image: Option<String>,
    pub mounts: Vec<String>,
    pub workdir: Option<String>,
    pub writable: Option<bool>,
    pub entrypoint: Option<bool>,
    pub env: Vec<(String, String)>,
    /// The line of each top-level key and `[env]` entry, for later errors.
    lines: Vec<(String, usize)>,
}

impl Layer {
    /// The line `key` is on (1 when unknown: an error still names the file).
    pub fn line_of(&self, key: &str) -> usize {
        self.lines
            .iter()
            .find(|(k, _)| k == key)
            .map_or(1, |(_, l)| *l)
    }

    /// An error about `key` of this file.
    pub fn error(&self, key: &str, message: impl Into<String>) -> EdfError {
        EdfError::Invalid {
            file: self.file.clone(),
            line: self.line_of(key),
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// 1-based line of byte `offset` in `text`.
fn line_at(text: &str, offset: usize) -> usize {
    text.get(..offset.min(text.len()))
        .map_or(1, |before| before.matches('\n').count() + 1)
}

/// The key written on `line` (`key = ...`, `env.KEY = ...`, or `[table]`), else `-`.
fn key_on_line(text: &str, line: usize) -> String {
    let l = text
        .lines()
        .nth(line.saturating_sub(1))
        .unwrap_or("")
        .trim();
    let key = match l.split_once('=') {
        Some((k, _)) => k.trim(),
        None => l.trim_start_matches('[').trim_end_matches(']').trim(),
    };
    let key = key.trim_matches('"').trim();
    if key.is_empty() {
        "-".to_owned()
    } else {
        key.to_owned()
    }
}

/// Where each key is: top-level `key =` lines, and `KEY =` lines inside `[env]` as
/// `env.KEY`.
fn key_lines(text: &str) -> Vec<(String, usize)> {
    let mut table = String::new();
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if l.starts_with('[') {
            table = l.trim_matches(|c| c == '[' || c == ']').trim().to_owned();
            continue;
        }
        if let Some((k, _)) = l.split_once('=') {
            let k = k.trim().trim_matches('"');
            if k.is_empty() || k.starts_with('#') {
                continue;
            }
            let key = if table.is_empty() {
                k.to_owned()
            } else {
                format!("{table}.{k}")
            };
            out.push((key, i + 1));
        }
    }
    out
}

/// True for a value that can go into the container environment as one entry.
fn valid_env_value(v: &str) -> bool {
    !v.contains('\0') && !v.contains('\n')
}

/// Parses `text`, the content of `file`.
pub fn parse(file: &str, text: &str) -> Result<Layer, EdfError> {
    let raw: Raw = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_at(text, s.start));
        EdfError::Invalid {
            file: file.to_owned(),
            line,
            key: key_on_line(text, line),
            message: e.message().trim().to_owned(),
        }
    })?;
    let mut layer = Layer {
        file: file.to_owned(),
        lines: key_lines(text),
        ..Layer::default()
    };
    layer.bases = match raw.base_environment {
        None => Vec::new(),
        Some(OneOrMany::One(s)) => vec![s],
        Some(OneOrMany::Many(v)) => v,
    };
    layer.bases.retain(|b| !b.is_empty());
    for (key, value) in [("image", &raw.image), ("workdir", &raw.workdir)] {
        if value.as_deref() == Some("") {
            return Err(layer.error(key, "empty value"));
        }
    }
    // TOML's `\u0000` would give what no option (a C string) can: enroot's argv and
    // bash's reading of the configuration script drop or refuse a NUL
    let nul = |v: &String| v.contains('\0');
    for (key, has_nul) in [
        ("image", raw.image.iter().any(nul)),
        ("workdir", raw.workdir.iter().any(nul)),
        ("mounts", raw.mounts.iter().flatten().any(nul)),
        ("base_environment", layer.bases.iter().any(nul)),
    ] {
        if has_nul {
            return Err(layer.error(key, "a value cannot contain NUL"));
        }
    }
    for m in raw.mounts.iter().flatten() {
        // Checked here so that the error names this file; applied after expansion.
        if !m.contains("${") {
            mount::parse_mounts(m).map_err(|e| layer.error("mounts", e.to_string()))?;
        }
    }
    for (k, v) in raw.env.iter().flatten() {
        if !crate::core::args::is_identifier(k) {
            return Err(layer.error(&format!("env.{k}"), "not a valid variable name"));
        }
        if !valid_env_value(v) {
            return Err(layer.error(
                &format!("env.{k}"),
                "a value cannot contain a newline or NUL",
            ));
        }
    }
    layer.image = raw.image;
    layer.mounts = raw.mounts.unwrap_or_default();
    layer.workdir = raw.workdir;
    layer.writable = raw.writable;
    layer.entrypoint = raw.entrypoint;
    layer.env = raw.env.unwrap_or_default().into_iter().collect();
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cscs_style_file() {
        let text = r#"
base_environment = "common"
image = "nvcr.io#nvidia/pytorch:24.01-py3"
mounts = ["/scratch:/scratch", "/data:/data:ro"]
workdir = "/scratch/${USER}"
writable = true
entrypoint = false

[env]
FOO = "bar"
NCCL_DEBUG = "INFO"
"#;
        let l = parse("f.toml", text).unwrap();
        assert_eq!(l.bases, ["common"]);
        assert_eq!(l.image.as_deref(), Some("nvcr.io#nvidia/pytorch:24.01-py3"));
        assert_eq!(l.mounts.len(), 2);
        assert_eq!(l.workdir.as_deref(), Some("/scratch/${USER}"));
        assert_eq!((l.writable, l.entrypoint), (Some(true), Some(false)));
        assert_eq!(
            l.env,
            [
                ("FOO".into(), "bar".into()),
                ("NCCL_DEBUG".into(), "INFO".into())
            ]
        );
        assert_eq!(l.line_of("workdir"), 5);
        assert_eq!(l.line_of("env.FOO"), 10);
        let many = parse("m.toml", "base_environment = [\"a\", \"b\"]\n").unwrap();
        assert_eq!(many.bases, ["a", "b"]);
        assert_eq!(
            parse("e.toml", "").unwrap(),
            Layer {
                file: "e.toml".into(),
                ..Layer::default()
            }
        );
    }

    #[test]
    fn mistakes_name_file_line_and_key() {
        let cases = [
            (
                "image = \"x\"\nimgae = \"y\"\n",
                2,
                "imgae",
                "unknown field",
            ),
            (
                "image = \"x\"\n\nwritable = \"yes\"\n",
                3,
                "writable",
                "invalid type",
            ),
            ("mounts = \"/a:/a\"\n", 1, "mounts", "invalid type"),
            ("image = \n", 1, "image", ""),
            ("[env]\nA = 1\n", 2, "A", "invalid type"),
            ("image = \"\"\n", 1, "image", "empty value"),
            (
                "\nmounts = [\"devpts:/x\"]\n",
                2,
                "mounts",
                "mount source must be",
            ),
            (
                "[env]\n\"1A\" = \"x\"\n",
                2,
                "env.1A",
                "not a valid variable name",
            ),
            ("[env]\nA = \"x\\ny\"\n", 2, "env.A", "newline"),
            ("image = \"a\\u0000b\"\n", 1, "image", "NUL"),
            ("\nworkdir = \"/\\u0000\"\n", 2, "workdir", "NUL"),
            (
                "mounts = [\"/a:/a\", \"/\\u0000:/b\"]\n",
                1,
                "mounts",
                "NUL",
            ),
            (
                "base_environment = [\"a\\u0000\"]\n",
                1,
                "base_environment",
                "NUL",
            ),
            // a syntax error on a line with no key names "-" (found by fuzzing)
            ("\"", 1, "-", "invalid basic string"),
            ("x = 1\n\"]", 2, "-", ""),
            (
                "[annotations]\nx = \"y\"\n",
                1,
                "annotations",
                "unknown field",
            ),
        ];
        for (text, line, key, message) in cases {
            match parse("/home/u/.edf/t.toml", text) {
                Err(EdfError::Invalid {
                    file,
                    line: l,
                    key: k,
                    message: m,
                }) => {
                    assert_eq!(file, "/home/u/.edf/t.toml");
                    assert_eq!((l, k.as_str()), (line, key), "{text:?}: {m}");
                    assert!(m.contains(message), "{text:?}: {m}");
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let shown = parse("t.toml", "imgae = \"y\"\n").unwrap_err().to_string();
        assert!(
            shown.starts_with("--environment: t.toml:1: imgae: unknown field `imgae`"),
            "{shown}"
        );
    }
}
