//! `base_environment` inheritance and `${VAR}` expansion: files are evaluated bases
//! first, in order, then the file itself; a later scalar replaces an earlier one,
//! `mounts` and `[env]` accumulate (a later `[env]` value replaces an earlier one of the
//! same name), as CSCS's Container Engine does.

use super::parse::{parse, Layer};
use super::{Edf, EdfError, MAX_DEPTH, MAX_FILES};
use crate::core::mount;

/// Why `${...}` could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    Unterminated,
    Undefined(String),
}

/// Replaces every `${NAME}` in `s` with `lookup(NAME)`; a `$` not followed by `{` is
/// kept.
pub fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("${") {
        out.push_str(rest.get(..at).unwrap_or_default());
        let after = rest.get(at + 2..).unwrap_or_default();
        let end = after.find('}').ok_or(ExpandError::Unterminated)?;
        let name = after.get(..end).unwrap_or_default();
        let value = lookup(name).ok_or_else(|| ExpandError::Undefined(name.to_owned()))?;
        out.push_str(&value);
        rest = after.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

/// What reads a file: the name as written (in `--environment` or `base_environment`)
/// and the file that named it (`None` for the command line) → the file as reported and
/// its text.
pub type Loader<'a> = dyn FnMut(&str, Option<&str>) -> Result<(String, String), EdfError> + 'a;

/// Every layer of `name`, bases first; `read` counts the files read so far.
fn chain(
    name: &str,
    parent: Option<&str>,
    load: &mut Loader<'_>,
    stack: &mut Vec<String>,
    read: &mut usize,
    out: &mut Vec<Layer>,
) -> Result<(), EdfError> {
    if *read >= MAX_FILES {
        return Err(EdfError::Inheritance {
            file: parent.unwrap_or(name).to_owned(),
            message: format!("more than {MAX_FILES} files inherited"),
        });
    }
    *read += 1;
    let (file, text) = load(name, parent)?;
    if stack.contains(&file) {
        return Err(EdfError::Inheritance {
            file,
            message: format!("inherits from itself through {}", stack.join(" -> ")),
        });
    }
    if stack.len() >= MAX_DEPTH {
        return Err(EdfError::Inheritance {
            file,
            message: format!("more than {MAX_DEPTH} levels of inheritance"),
        });
    }
    let layer = parse(&file, &text)?;
    stack.push(file.clone());
    for base in &layer.bases {
        chain(base, Some(&file), load, stack, read, out)?;
    }
    stack.pop();
    out.push(layer);
    Ok(())
}

/// Expands one value of `layer`'s `key`.
fn expanded(
    layer: &Layer,
    key: &str,
    value: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, EdfError> {
    expand(value, lookup).map_err(|e| {
        layer.error(
            key,
            match e {
                ExpandError::Unterminated => "unterminated ${".to_owned(),
                ExpandError::Undefined(v) => format!("${{{v}}} is not set in the environment"),
            },
        )
    })
}

/// Loads `name` and everything it inherits, and merges them with the host
/// environment's variables expanded.
pub fn resolve(
    name: &str,
    load: &mut Loader<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Edf, EdfError> {
    let mut layers = Vec::new();
    chain(name, None, load, &mut Vec::new(), &mut 0, &mut layers)?;
    let mut edf = Edf::default();
    for layer in &layers {
        for (key, value, slot) in [
            ("image", &layer.image, &mut edf.image),
            ("workdir", &layer.workdir, &mut edf.workdir),
        ] {
            if let Some(v) = value {
                let v = expanded(layer, key, v, lookup)?;
                if v.is_empty() {
                    return Err(layer.error(key, "empty value once variables are expanded"));
                }
                *slot = Some(v);
            }
        }
        edf.writable = layer.writable.or(edf.writable);
        edf.entrypoint = layer.entrypoint.or(edf.entrypoint);
        for m in &layer.mounts {
            let m = expanded(layer, "mounts", m, lookup)?;
            mount::parse_mounts(&m).map_err(|e| layer.error("mounts", e.to_string()))?;
            edf.mounts.push(m);
        }
        for (k, v) in &layer.env {
            let v = expanded(layer, &format!("env.{k}"), v, lookup)?;
            if v.contains('\n') {
                return Err(layer.error(&format!("env.{k}"), "a value cannot contain a newline"));
            }
            match edf.env.iter_mut().find(|(name, _)| name == k) {
                Some(slot) => slot.1 = v,
                None => edf.env.push((k.clone(), v)),
            }
        }
    }
    Ok(edf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn host(name: &str) -> Option<String> {
        match name {
            "USER" => Some("alice".into()),
            "SCRATCH" => Some("/scratch/alice".into()),
            _ => None,
        }
    }

    fn files(
        list: &[(&str, &str)],
    ) -> impl FnMut(&str, Option<&str>) -> Result<(String, String), EdfError> {
        let map: HashMap<String, String> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name: &str, _parent: Option<&str>| {
            let file = format!("/edf/{name}.toml");
            map.get(name)
                .map(|t| (file, t.clone()))
                .ok_or(EdfError::NotFound {
                    name: name.to_owned(),
                    searched: "/edf".into(),
                })
        }
    }

    #[test]
    fn expansion() {
        assert_eq!(expand("/s/${USER}/x", &host).unwrap(), "/s/alice/x");
        assert_eq!(expand("${USER}${USER}", &host).unwrap(), "alicealice");
        assert_eq!(expand("$USER $ {x} $", &host).unwrap(), "$USER $ {x} $");
        assert_eq!(
            expand("${NOPE}", &host),
            Err(ExpandError::Undefined("NOPE".into()))
        );
        assert_eq!(expand("${USER", &host), Err(ExpandError::Unterminated));
    }

    #[test]
    fn inheritance_merges_in_order() {
        let mut load = files(&[
            ("common", "image = \"base\"\nmounts = [\"${SCRATCH}:/s\"]\nwritable = true\n[env]\nA = \"common\"\nB = \"common\"\n"),
            ("gpu", "mounts = [\"/g:/g\"]\n[env]\nB = \"gpu\"\n"),
            ("top", "base_environment = [\"common\", \"gpu\"]\nworkdir = \"/home/${USER}\"\n[env]\nC = \"top\"\n"),
        ]);
        let edf = resolve("top", &mut load, &host).unwrap();
        assert_eq!(edf.image.as_deref(), Some("base"));
        assert_eq!(edf.workdir.as_deref(), Some("/home/alice"));
        assert_eq!(edf.writable, Some(true));
        assert_eq!(edf.mounts, ["/scratch/alice:/s", "/g:/g"]);
        let env: Vec<(&str, &str)> = edf
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env, [("A", "common"), ("B", "gpu"), ("C", "top")]);
    }

    #[test]
    fn cycles_depth_and_missing_bases_are_errors() {
        let mut load = files(&[
            ("a", "base_environment = \"b\"\n"),
            ("b", "base_environment = \"a\"\n"),
        ]);
        let e = resolve("a", &mut load, &host).unwrap_err().to_string();
        assert!(
            e.contains("/edf/a.toml: base_environment: inherits from itself"),
            "{e}"
        );
        let deep: Vec<(String, String)> = (0..12)
            .map(|i| {
                (
                    format!("l{i}"),
                    format!("base_environment = \"l{}\"\n", i + 1),
                )
            })
            .collect();
        let refs: Vec<(&str, &str)> = deep.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let e = resolve("l0", &mut files(&refs), &host)
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 10 levels"), "{e}");
        let e = resolve(
            "x",
            &mut files(&[("x", "base_environment = \"gone\"\n")]),
            &host,
        )
        .unwrap_err();
        assert!(
            matches!(e, EdfError::NotFound { ref name, .. } if name == "gone"),
            "{e:?}"
        );
    }

    #[test]
    fn bases_named_many_times_over_stop_at_max_files() {
        // l0 .. l8 each inherit the next one 8 times: l9 read 8^9 times without the limit
        let wide: Vec<(String, String)> = (0..10)
            .map(|i| {
                let bases = vec![format!("\"l{}\"", i + 1); 8].join(", ");
                let text = if i < 9 {
                    format!("base_environment = [{bases}]\n")
                } else {
                    "image = \"x\"\n".to_owned()
                };
                (format!("l{i}"), text)
            })
            .collect();
        let refs: Vec<(&str, &str)> = wide.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let mut reads = 0;
        let mut inner = files(&refs);
        let mut load = |n: &str, p: Option<&str>| {
            reads += 1;
            inner(n, p)
        };
        let e = resolve("l0", &mut load, &host).unwrap_err().to_string();
        assert!(
            e.contains("base_environment: more than 64 files inherited"),
            "{e}"
        );
        assert_eq!(reads, MAX_FILES);
        // a diamond (the same base through two others) is still fine
        let mut load = files(&[
            ("top", "base_environment = [\"a\", \"b\"]\n"),
            ("a", "base_environment = \"c\"\n"),
            ("b", "base_environment = \"c\"\n"),
            ("c", "image = \"c\"\n"),
        ]);
        assert_eq!(
            resolve("top", &mut load, &host).unwrap().image.as_deref(),
            Some("c")
        );
    }

    #[test]
    fn expansion_errors_name_the_file_line_and_key() {
        let mut load = files(&[("t", "image = \"x\"\n\n[env]\nP = \"${NOPE}/bin\"\n")]);
        let e = resolve("t", &mut load, &host).unwrap_err().to_string();
        assert_eq!(
            e,
            "--environment: /edf/t.toml:4: env.P: ${NOPE} is not set in the environment"
        );
        let mut load = files(&[("t", "image = \"i\"\nworkdir = \"${EMPTY}\"\n")]);
        let empty = |n: &str| (n == "EMPTY").then(String::new);
        let e = resolve("t", &mut load, &empty).unwrap_err().to_string();
        assert_eq!(
            e,
            "--environment: /edf/t.toml:2: workdir: empty value once variables are expanded"
        );
        let mut load = files(&[("t", "mounts = [\"${USER}:/x\"]\n")]);
        let e = resolve("t", &mut load, &host).unwrap_err().to_string();
        assert!(
            e.contains("/edf/t.toml:1: mounts: mount source must be"),
            "{e}"
        );
    }
}
