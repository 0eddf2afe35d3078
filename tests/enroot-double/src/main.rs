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

fn main() {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    record::record(&args);
    let status = match cli::parse(&args).and_then(commands::run) {
        Ok(()) => 0,
        Err(e) => report(e),
    };
    std::process::exit(status);
}
