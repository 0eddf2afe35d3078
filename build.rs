//! Link-time shape of `spank_pyxis.so`.
//!
//! pyxis links with a version script (node `PYXIS_1.0`) so that only `plugin_name`,
//! `plugin_type`, `plugin_version` and the `slurm_spank_*` callbacks are exported. rustc
//! already hides everything that is not `#[no_mangle]` in a cdylib; the script pins the
//! exported set so an accidental extra export cannot change how Slurm treats the plugin
//! (`make check-symbols` verifies it). The node is defined, but rustc's own export list
//! leaves the symbols unversioned; Slurm looks them up unversioned with `dlsym`, so that
//! makes no difference to loading. `plugin_version` itself comes from the same
//! `<slurm/spank.h>` headers through spank-sys (`SLURM_VERSION_NUMBER`).

use std::path::PathBuf;

const VERSION_SCRIPT: &str = "\
PYXIS_1.0 {
  global:
    plugin_name;
    plugin_type;
    plugin_version;
    slurm_spank_*;
  local:
    *;
};
";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default()).join("spank_pyxis.lds");
    if let Err(e) = std::fs::write(&out, VERSION_SCRIPT) {
        eprintln!("cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
    println!(
        "cargo:rustc-cdylib-link-arg=-Wl,--version-script={}",
        out.display()
    );
    // Slurm resolves the plugin's calls at dlopen time from the loading process; keep
    // the lazy-binding-free, read-only relocation hardening pyxis uses.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,relro,-z,now,-z,noexecstack");
}
