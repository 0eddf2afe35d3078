//! Generates the raw SPANK bindings from the installed `<slurm/spank.h>`.
//!
//! The header of the Slurm release we deploy against must be the one we bind: since Slurm
//! 21.08 the loader rejects plugins whose `plugin_version` major.minor differs, and the
//! ESPANK_* codes were renumbered in 21.08. `SLURM_INCLUDE_DIR` points at another header
//! tree; `SPANK_SYS_PREGENERATED=1` copies the committed snapshot instead (for machines
//! without libclang; the snapshot is for Slurm 22.05 and CI checks it for drift).

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=pregenerated/bindings.rs");
    println!("cargo:rerun-if-env-changed=SLURM_INCLUDE_DIR");
    println!("cargo:rerun-if-env-changed=SPANK_SYS_PREGENERATED");

    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default()).join("bindings.rs");
    if env::var_os("SPANK_SYS_PREGENERATED").is_some_and(|v| v == "1") {
        if let Err(e) = std::fs::copy("pregenerated/bindings.rs", &out) {
            eprintln!("spank-sys: cannot copy pregenerated bindings: {e}");
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
