//! Property tests of every parser of user-supplied strings (proptest).
//!
//! These parsers run inside root-owned slurmstepd, so a panic or a malformed result is
//! a crashed step or worse. Each parser gets thousands of generated inputs built from
//! the pieces that matter to it (separators, quotes, shell metacharacters, whitespace,
//! non-ASCII) and is checked for the invariants its callers rely on; proptest shrinks a
//! failure to a minimal input. The coverage-guided fuzz targets in `tests/fuzz` go
//! further on the same parsers.
#![cfg(test)]

use proptest::prelude::*;

use super::args::{Args, OptionId};
use super::conf_script::ConfScript;
use super::config::parse_config;
use super::list::find_container;
use super::mount::parse_mounts;

const PIECES: &[&str] = &[
    "/",
    ".",
    "..",
    ":",
    ",",
    "+",
    "a",
    "tmp",
    "umount",
    "tmpfs",
    "ro",
    "x-create=dir",
    " ",
    "\t",
    "\n",
    "\\",
    "'",
    "\"",
    "$",
    "$(touch x)",
    "`",
    ";",
    "=",
    "#",
    "é",
    "\u{0}",
    "-",
    "*",
];

/// A string of up to `max` pieces drawn from `alphabet`.
fn pieces(alphabet: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(alphabet), 0..=max).prop_map(|v| v.concat())
}

fn cases() -> ProptestConfig {
    ProptestConfig {
        cases: 4000,
        ..ProptestConfig::default()
    }
}

proptest! {
#![proptest_config(cases())]

#[test]
fn mount_parsing_never_panics_and_yields_three_field_fstab_lines(arg in pieces(PIECES, 12)) {
        if let Ok(entries) = parse_mounts(&arg) {
            for e in &entries {
                assert!(
                    e.source.starts_with(['.', '/']) || e.source == "tmpfs" || e.source == "umount"
                );
                assert!(e.target.starts_with(['.', '/']), "{arg:?} -> {e:?}");
                // The fstab reader splits on whitespace: escaping must keep 3 fields
                // whenever the flags are usable at all.
                if e.flags_are_safe() {
                    assert_eq!(
                        e.fstab_line().split_whitespace().count(),
                        3,
                        "{arg:?} -> {e:?}"
                    );
                }
            }
        }
}

#[test]
fn rendered_conf_scripts_quote_everything_from_users(arg in pieces(PIECES, 10)) {
        let Ok(mounts) = parse_mounts(&arg) else {
            return Ok(());
        };
        let Ok(script) = (ConfScript {
            mounts: mounts.clone(),
            disable_entrypoint: false,
            env_names: vec![],
            env_values: vec![],
        })
        .render() else {
            return Ok(());
        };
        // Every user byte sits inside single quotes: no line may contain an unquoted
        // `$`, backtick or `;` outside the quoted literal.
        for line in script.lines().filter(|l| l.starts_with("\tprintf")) {
            let literal = line.trim_start_matches("\tprintf '%s\\n' ");
            assert!(
                literal.starts_with('\'') && literal.ends_with('\''),
                "{line:?}"
            );
            let inner = &literal[1..literal.len() - 1];
            // Inside single quotes the only way out is a quote, which must be the
            // '\'' sequence.
            assert!(!inner.replace("'\\''", "").contains('\''), "{line:?}");
        }
}

#[test]
fn option_parsing_never_panics(
    opts in prop::collection::vec(
        (prop::sample::select(OptionId::ALL.as_slice()), prop::option::weighted(0.75, pieces(PIECES, 8))),
        0..4,
    )
) {
        let mut args = Args::default();
        for (id, value) in &opts {
            let _ = args.apply(*id, value.as_deref());
        }
        let _ = args.enabled();
        let _ = args.ignored_option_warnings();
        if let Some(name) = &args.name {
            assert!(
                !name.name.is_empty()
                    && !name.name.contains('/')
                    && !name.name.contains(char::is_whitespace)
            );
        }
        for n in &args.env_names {
            assert!(
                n.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()),
                "{n:?}"
            );
        }
}

#[test]
fn config_and_list_parsing_never_panic(
    argv in prop::collection::vec((prop::sample::select(CONFIG_KEYS), pieces(PIECES, 6)), 0..4),
    listing in pieces(LISTING, 12),
) {
        let argv: Vec<String> = argv.iter().map(|(k, v)| format!("{k}{v}")).collect();
        let _ = parse_config(&argv);
        let _ = find_container(&listing, "pyxis_a");
}
}

const CONFIG_KEYS: &[&str] = &[
    "runtime_path=",
    "execute_entrypoint=",
    "container_scope=",
    "sbatch_support=",
    "importer=",
    "use_squashfuse=",
    "image_cache_path=",
    "image_cache_size=",
    "command_timeout=",
    "import_timeout=",
    "x",
];

const LISTING: &[&str] = &[
    "NAME PID\n",
    "pyxis_a",
    " ",
    "12",
    "\n",
    "x",
    "[WARN] w\n",
    "99999999999999999999",
];
