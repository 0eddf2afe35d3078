//! Generates the raw SPANK bindings from the installed `<slurm/spank.h>`.
//!
//! The header of the Slurm release we deploy against must be the one we bind: since Slurm
//! 21.08 the loader rejects plugins whose `plugin_version` major.minor differs, and the
//! ESPANK_* codes were renumbered in 21.08. `SLURM_INCLUDE_DIR` points at another header
//! tree; `SPANK_SYS_PREGENERATED=1` copies a committed snapshot instead (for machines
//! without libclang): `pregenerated/bindings-<major.minor>.rs`, one per supported release
//! (22.05, 24.11, 26.05), chosen by `SPANK_SYS_RELEASE` or else by the release of the
//! headers' `<slurm/slurm_version.h>` (tools/check-bindings.sh checks each for drift;
//! docs/releases.md lists what differs).

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=pregenerated");
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=SPANK_SYS_PREGENERATED");
    println!("cargo:rerun-if-env-changed=SPANK_SYS_RELEASE");

    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("bindings.rs");
    if env::var_os("SPANK_SYS_PREGENERATED").is_some_and(|v| v == "1") {
        let release = match env::var("SPANK_SYS_RELEASE").ok().or_else(header_release) {
            Some(r) => r,
            None => {
                eprintln!(
                    "spank-sys: SPANK_SYS_PREGENERATED=1 needs the Slurm release: set \
                     SPANK_SYS_RELEASE=22.05|24.11|26.05 or SLURM_INCLUDE_DIR"
                );
                std::process::exit(1);
            }
        };
        let snapshot = format!("pregenerated/bindings-{release}.rs");
        if let Err(e) = std::fs::copy(&snapshot, &out) {
            eprintln!("spank-sys: no pregenerated bindings for Slurm {release} ({snapshot}: {e})");
            std::process::exit(1);
        }
        return;
    }

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .allowlist_function("spank_.*")
        .allowlist_function("slurm_(error|info|verbose|debug|debug2|debug3|spank_log)")
        .allowlist_type("spank_.*")
        .allowlist_type("spank_t")
        .allowlist_var("ESPANK_.*")
        .allowlist_var("S_.*")
        .allowlist_var("SLURM_VERSION_NUMBER")
        .allowlist_var("SLURM_BATCH_SCRIPT")
        .allowlist_var("SPANK_OPTION_MAXLEN")
        // C enums stay integer constants: Slurm may hand us values this build does not know.
        .default_enum_style(bindgen::EnumVariation::Consts)
        .prepend_enum_name(false)
        .layout_tests(false)
        .generate_comments(false)
        .formatter(bindgen::Formatter::Rustfmt);
    if let Some(dir) = env::var_os("SLURM_INCLUDE_DIR") {
        builder = builder.clang_arg(format!("-I{}", PathBuf::from(dir).display()));
    }
    match builder.generate() {
        Ok(bindings) => {
            if let Err(e) = bindings.write_to_file(&out) {
                eprintln!("spank-sys: cannot write bindings: {e}");
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!(
                "spank-sys: bindgen failed on <slurm/spank.h> ({e}); install libslurm-dev and \
                 libclang-dev, set SLURM_INCLUDE_DIR, or build with SPANK_SYS_PREGENERATED=1"
            );
            std::process::exit(1);
        }
    }
}

/// The major.minor release (`"24.11"`) of the `<slurm/slurm_version.h>` the build would
/// use (`SLURM_INCLUDE_DIR`, else /usr/include), from its `SLURM_VERSION_NUMBER` line.
fn header_release() -> Option<String> {
    let dir = env::var_os("SLURM_INCLUDE_DIR")
        .map_or_else(|| PathBuf::from("/usr/include"), PathBuf::from);
    let text = std::fs::read_to_string(dir.join("slurm/slurm_version.h")).ok()?;
    let hex = text.lines().find_map(|l| {
        let mut words = l.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("#define"), Some("SLURM_VERSION_NUMBER"), Some(v)) => {
                v.strip_prefix("0x").map(str::to_owned)
            }
            _ => None,
        }
    })?;
    let n = u32::from_str_radix(&hex, 16).ok()?;
    Some(format!("{}.{:02}", (n >> 16) & 0xff, (n >> 8) & 0xff))
}
