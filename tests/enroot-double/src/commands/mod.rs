//! One module per enroot command; `run` dispatches a parsed command line.

pub mod create;
pub mod exec;
pub mod export;
pub mod remove;
pub mod start;

use crate::cli::Command;
use crate::config::{Config, VERSION};
use crate::error::Result;
use crate::{list, registry};

/// Execute a parsed command. `start` and `exec` only return on failure.
pub fn run(command: Command) -> Result<()> {
    let cfg = Config::load()?;
    match command {
        Command::Version => {
            println!("{VERSION}");
            Ok(())
        }
        Command::List { fancy: false } => list::plain(&cfg.path("ENROOT_DATA_PATH")),
        Command::List { fancy: true } => list::fancy(&cfg.path("ENROOT_DATA_PATH")),
        Command::Create { name, force, image } => create::run(&cfg, &image, name.as_deref(), force),
        Command::Export {
            output,
            force,
            name,
        } => export::run(&cfg, &name, output.as_deref(), force),
        Command::Remove { force, names } => remove::run(&cfg, &names, force),
        Command::Start(args) => start::run(cfg, args).map(|never| match never {}),
        Command::Exec { env, pid, command } => {
            exec::run(&cfg, &pid, &env, &command).map(|never| match never {})
        }
        Command::Import { output, uri } => registry::import(&cfg, &uri, output.as_deref()),
        Command::Load { name, force, uri } => registry::load(&cfg, &uri, name.as_deref(), force),
        Command::Digest { uri } => registry::digest(&cfg, &uri),
    }
}
