//! Randomised robustness tests of every parser of user-supplied strings.
//!
//! These parsers run inside root-owned slurmstepd, so a panic or a malformed result is
//! a crashed step or worse. A fuzzer would need a nightly toolchain; instead each parser
//! gets a few thousand deterministic pseudo-random inputs built from the characters that
//! matter to it (separators, quotes, shell metacharacters, whitespace, non-ASCII) and is
//! checked for the invariants its callers rely on.
#![cfg(test)]

use super::args::{Args, OptionId};
use super::conf_script::ConfScript;
use super::config::parse_config;
use super::list::find_container;
use super::mount::parse_mounts;

/// xorshift64*: small, deterministic, good enough to spread inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n as u64)).unwrap()
    }

    /// A string of up to `max` pieces drawn from `alphabet`.
    fn string(&mut self, alphabet: &[&str], max: usize) -> String {
        (0..self.below(max + 1))
            .map(|_| alphabet[self.below(alphabet.len())])
            .collect()
    }
}

const ITERATIONS: usize = 4000;
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

#[test]
fn mount_parsing_never_panics_and_yields_three_field_fstab_lines() {
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..ITERATIONS {
        let arg = rng.string(PIECES, 12);
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
}

#[test]
fn rendered_conf_scripts_quote_everything_from_users() {
    let mut rng = Rng(0x5eed_0002);
    for _ in 0..ITERATIONS {
        let arg = rng.string(PIECES, 10);
        let Ok(mounts) = parse_mounts(&arg) else {
            continue;
        };
        let Ok(script) = (ConfScript {
            mounts: mounts.clone(),
            disable_entrypoint: false,
            env_names: vec![],
        })
        .render() else {
            continue;
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
}

#[test]
fn option_parsing_never_panics() {
    let mut rng = Rng(0x5eed_0003);
    for _ in 0..ITERATIONS {
        let mut args = Args::default();
        for _ in 0..rng.below(4) {
            let id = OptionId::ALL[rng.below(OptionId::ALL.len())];
            let value = rng.string(PIECES, 8);
            let arg = if rng.below(4) == 0 {
                None
            } else {
                Some(value.as_str())
            };
            let _ = args.apply(id, arg);
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
}

#[test]
fn config_and_list_parsing_never_panic() {
    let mut rng = Rng(0x5eed_0004);
    let keys = [
        "runtime_path=",
        "execute_entrypoint=",
        "container_scope=",
        "sbatch_support=",
        "importer=",
        "x",
    ];
    for _ in 0..ITERATIONS {
        let argv: Vec<String> = (0..rng.below(4))
            .map(|_| format!("{}{}", keys[rng.below(keys.len())], rng.string(PIECES, 6)))
            .collect();
        let _ = parse_config(&argv);
        let listing = rng.string(
            &[
                "NAME PID\n",
                "pyxis_a",
                " ",
                "12",
                "\n",
                "x",
                "[WARN] w\n",
                "99999999999999999999",
            ],
            12,
        );
        let _ = find_container(&listing, "pyxis_a");
    }
}
