//! The `edf` target: environment definition files (src/core/edf) through
//! `edf::resolve`, with an in-memory loader in place of `crate::sys::edf`'s file I/O,
//! then `edf::apply` onto empty options.
//!
//! The input is NUL-separated files (TOML has no raw NUL): field `i` is the file named
//! `i` (`base_environment = "1"`), reported as `/edf/i.toml`; `--environment=0` is
//! resolved. `${VAR}` is looked up in a fixed host environment that holds the awkward
//! values a real one can (empty, a newline, a comma, a `${` of its own).

use std::cell::RefCell;

use spank_pyxis::core::args::{is_identifier, Args};
use spank_pyxis::core::edf::{self, Edf, EdfError, MAX_FILES};
use spank_pyxis::core::mount::parse_mounts;

use super::{assert_args_invariants, assert_error_lines, assert_one_line};

/// The host environment `${VAR}` reads.
fn host(name: &str) -> Option<String> {
    let v = match name {
        "USER" => "alice",
        "HOME" => "/home/alice",
        "SCRATCH" => "/scratch/alice",
        "EMPTY" => "",
        "NL" => "a\nb",
        "COMMA" => "/a:/a,/b",
        "DOLLAR" => "${USER}",
        _ => return None,
    };
    Some(v.to_owned())
}

fn file_name(i: usize) -> String {
    format!("/edf/{i}.toml")
}

/// What a job could get from a file: a C string (no NUL), as from the command line.
fn assert_c_string(what: &str, v: &str) {
    assert!(!v.contains('\0'), "{what} with a NUL: {v:?}");
}

fn assert_edf_invariants(e: &Edf) {
    for (what, v) in [("image", &e.image), ("workdir", &e.workdir)] {
        if let Some(v) = v {
            assert!(!v.is_empty(), "an empty {what} was accepted");
            assert_c_string(what, v);
        }
    }
    for m in &e.mounts {
        assert_c_string("mount", m);
        assert!(parse_mounts(m).is_ok(), "unparsable mount accepted: {m:?}");
    }
    for (i, (k, v)) in e.env.iter().enumerate() {
        assert!(is_identifier(k), "env name {k:?}");
        assert!(!v.contains(['\n', '\0']), "env {k}={v:?}");
        assert!(
            e.env.iter().skip(i + 1).all(|(k2, _)| k2 != k),
            "env {k} twice"
        );
    }
}

/// A string value that expansion leaves as it is.
fn plain(v: &toml::Value) -> Option<&str> {
    v.as_str().filter(|s| !s.contains("${"))
}

/// A file without bases, compared with what the TOML says (`toml::Table`).
fn assert_transcribed(text: &str, e: &Edf) {
    let table: toml::Table = text.parse().expect("resolve accepted invalid TOML");
    const KEYS: [&str; 7] = [
        "base_environment",
        "image",
        "mounts",
        "workdir",
        "writable",
        "entrypoint",
        "env",
    ];
    for k in table.keys() {
        assert!(KEYS.contains(&k.as_str()), "unknown key {k:?} accepted");
    }
    assert_eq!(e.writable, table.get("writable").and_then(|v| v.as_bool()));
    assert_eq!(
        e.entrypoint,
        table.get("entrypoint").and_then(|v| v.as_bool())
    );
    for (k, got) in [("image", &e.image), ("workdir", &e.workdir)] {
        match table.get(k) {
            None => assert_eq!(*got, None, "{k}"),
            Some(v) => {
                if let Some(want) = plain(v) {
                    assert_eq!(got.as_deref(), Some(want), "{k}");
                }
            }
        }
    }
    let mounts = table
        .get("mounts")
        .and_then(|v| v.as_array())
        .cloned()
        .unwrap_or_default();
    assert_eq!(e.mounts.len(), mounts.len(), "mounts");
    for (got, want) in e.mounts.iter().zip(&mounts) {
        if let Some(want) = plain(want) {
            assert_eq!(got, want);
        }
    }
    let env = table
        .get("env")
        .and_then(|v| v.as_table())
        .cloned()
        .unwrap_or_default();
    let mut names: Vec<&String> = env.keys().collect();
    names.sort();
    let got: Vec<&String> = e.env.iter().map(|(k, _)| k).collect();
    assert_eq!(got, names, "[env] names, in order");
    for (k, v) in &e.env {
        if let Some(want) = env.get(k).and_then(plain) {
            assert_eq!(v, want, "env.{k}");
        }
    }
}

fn assert_error(e: &EdfError, files: &[String], loaded: &[usize]) {
    assert_one_line(&e.to_string());
    let is_loaded = |f: &str| loaded.iter().any(|i| file_name(*i) == f);
    match e {
        EdfError::Invalid {
            file, line, key, ..
        } => {
            assert!(is_loaded(file), "{e:?}");
            let i = loaded.iter().find(|i| file_name(**i) == *file).unwrap();
            let lines = files[*i].matches('\n').count() + 1;
            assert!(
                *line >= 1 && *line <= lines,
                "line {line} of {lines}: {e:?}"
            );
            assert!(!key.is_empty(), "{e:?}");
        }
        EdfError::Inheritance { file, .. } => assert!(is_loaded(file), "{e:?}"),
        EdfError::NotFound { name, .. } => {
            assert!(
                // the loader finds exactly the names "0", "1", ... below files.len()
                name.parse::<usize>()
                    .map_or(true, |i| i >= files.len() || *name != i.to_string()),
                "{e:?}"
            );
        }
        EdfError::Read { .. } => panic!("a read error without reading: {e:?}"),
    }
}

pub fn edf(data: &[u8]) {
    let files: Vec<String> = data
        .split(|b| *b == 0)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect();
    let loaded = RefCell::new(Vec::new());
    let mut load = |name: &str, _parent: Option<&str>| {
        let i = name
            .parse::<usize>()
            .ok()
            .filter(|i| *i < files.len() && name == i.to_string());
        let Some(i) = i else {
            return Err(EdfError::NotFound {
                name: name.to_owned(),
                searched: "/edf".into(),
            });
        };
        loaded.borrow_mut().push(i);
        assert!(
            loaded.borrow().len() <= MAX_FILES,
            "more than {MAX_FILES} files read"
        );
        Ok((file_name(i), files[i].clone()))
    };
    let result = edf::resolve("0", &mut load, &host);
    let loaded = loaded.into_inner();
    let e = match result {
        Ok(e) => e,
        Err(err) => {
            assert_error(&err, &files, &loaded);
            return;
        }
    };
    assert_edf_invariants(&e);
    if loaded == [0] {
        assert_transcribed(&files[0], &e);
    }
    // resolving is a function of the files and the environment
    let mut again = |name: &str, _: Option<&str>| {
        let i: usize = name.parse().map_err(|_| EdfError::NotFound {
            name: name.to_owned(),
            searched: String::new(),
        })?;
        Ok((file_name(i), files[i].clone()))
    };
    assert_eq!(edf::resolve("0", &mut again, &host).as_ref(), Ok(&e));

    let mut args = Args::default();
    match edf::apply(&mut args, &e) {
        Ok(()) => {
            assert_args_invariants(&args);
            if let Some(w) = &args.workdir {
                assert!(!w.is_empty(), "empty workdir applied");
            }
            assert_eq!(args.image, e.image, "the file's image was not applied");
            assert_eq!(args.env_values, e.env);
            for m in &args.mounts {
                assert_c_string("mount source", &m.source);
                assert_c_string("mount target", &m.target);
            }
        }
        Err(err) => assert_error_lines(&err),
    }
}
