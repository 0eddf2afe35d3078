//! `enroot` test double for the pyxis-rs integration tests.
//!
//! slurmstepd runs `enroot` from `PATH` as the unprivileged job user; this binary honours enroot's
//! command-line contract (§7 of the behaviour notes) with real namespaces: `start` turns the
//! calling process itself into the container, `list -f` finds running containers by inspecting
//! processes, and images are plain squashfs files handled by squashfs-tools. Registries are only
//! reached on the loopback interface.
//!
//! Every failure ends as one `[ERROR] <message>` line on stderr and exit status 1; usage mistakes
//! print the usage text on stdout.

mod cli;
mod commands;
mod conf;
mod config;
mod env;
mod error;
mod fstab;
mod hooks;
mod json;
mod list;
mod mount;
mod ns;
mod record;
mod registry;
mod squashfs;
mod switchroot;
mod sys;
mod util;

use std::ffi::OsString;
use std::io::Write;

use error::Error;

fn report(err: Error) -> i32 {
    match err {
        Error::Usage { topic, code } => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(cli::usage_text(topic).as_bytes());
            let _ = out.flush();
            code
        }
        Error::Failed(message) => {
            eprintln!("[ERROR] {message}");
            1
        }
        Error::Exit(code) => code,
    }
}

/// True when `ENROOT_DOUBLE_HANG` (a comma-separated list of subcommands) names this
/// invocation's subcommand: the fault-injection suite's "enroot hangs" knob.
fn hangs(args: &[OsString], knob: Option<&std::ffi::OsStr>) -> bool {
    let (Some(knob), Some(cmd)) = (knob.and_then(|k| k.to_str()), args.first()) else {
        return false;
    };
    knob.split(',')
        .any(|c| !c.is_empty() && std::ffi::OsStr::new(c) == cmd)
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    record::record(&args);
    if hangs(&args, std::env::var_os("ENROOT_DOUBLE_HANG").as_deref()) {
        // until killed: the caller's deadline or a signal is what ends it
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    let status = match cli::parse(&args).and_then(commands::run) {
        Ok(()) => 0,
        Err(e) => report(e),
    };
    std::process::exit(status);
}

#[cfg(test)]
mod tests {
    use super::hangs;
    use std::ffi::{OsStr, OsString};

    #[test]
    fn hang_knob_names_subcommands() {
        let create: Vec<OsString> = vec!["create".into(), "-n".into(), "x".into()];
        assert!(hangs(&create, Some(OsStr::new("create"))));
        assert!(hangs(&create, Some(OsStr::new("start,create"))));
        assert!(!hangs(&create, Some(OsStr::new("start"))));
        assert!(!hangs(&create, Some(OsStr::new(""))));
        assert!(!hangs(&create, None));
        assert!(!hangs(&[], Some(OsStr::new("create"))));
    }
}
