//! Runs every committed seed and finding (`seeds/<target>/*`, `findings/<target>/*`)
//! through its target under plain `cargo test`: no fuzzer needed, so regressions of
//! fixed findings fail here and the invariants are checked on the corpus.
use std::path::Path;

fn replay(target: &str, f: fn(&[u8])) {
    // PYXIS_FUZZ_REPLAY=DIR replays DIR/<target>/*/* instead (triage of run.sh's out/)
    if let Some(dir) = std::env::var_os("PYXIS_FUZZ_REPLAY") {
        triage(Path::new(&dir).join(target).as_path(), f);
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in ["seeds", "findings"] {
        let Ok(rd) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            eprintln!("{}", p.display());
            f(&data);
            n += 1;
        }
    }
    assert!(n > 0, "no seeds for {target}");
}

/// Runs every file under `dir` (recursively one level) and prints each distinct panic.
fn triage(dir: &Path, f: fn(&[u8])) {
    let mut seen = std::collections::BTreeMap::new();
    for sub in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        for e in std::fs::read_dir(sub.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let data = std::fs::read(e.path()).unwrap();
            if let Err(p) = std::panic::catch_unwind(|| f(&data)) {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let key: String = msg.chars().take(60).collect();
                seen.entry(key).or_insert((e.path(), msg));
            }
        }
    }
    for (path, msg) in seen.values() {
        eprintln!("FINDING {}: {msg}", path.display());
    }
}

macro_rules! replay_tests {
    ($($t:ident),*) => { $( #[test] fn $t() { replay(stringify!($t), pyxis_fuzz::$t); } )* };
}

replay_tests!(
    args,
    pyxis_env,
    mount,
    config,
    image,
    list,
    envfilter,
    conf_script,
    digest,
    edf
);
