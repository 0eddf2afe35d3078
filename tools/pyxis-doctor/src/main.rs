//! `pyxis-doctor`: run on a Slurm node by an admin or a user, checks what pyxis-rs
//! needs there (plugstack line, Slurm release, enroot, user namespaces, FUSE, runtime
//! and image cache directories) with one PASS/WARN/FAIL line each and the fix, and lets
//! a user list and prune their cached images and named containers.
//!
//! Not part of the plugin: an ordinary program, run from a shell by a person or a
//! monitoring agent. It reuses the plugin's configuration parser and directory and
//! cache code so that it accepts and refuses exactly what the plugin does.

mod elf;
mod host;
mod node;
mod plugstack;
mod report;
mod user;
mod version;

use std::path::PathBuf;
use std::process::ExitCode;

use spank_pyxis::core::config::Config;

const USAGE: &str = "\
usage: pyxis-doctor [check] [--json] [--plugstack FILE]
       pyxis-doctor cache list [--json] [--plugstack FILE]
       pyxis-doctor cache prune [--all | --older-than DURATION] [--plugstack FILE]
       pyxis-doctor containers list
       pyxis-doctor containers remove NAME... | --all

check (the default) checks this node and exits 1 if any check FAILs.
cache and containers act on the calling user's images and named containers only;
DURATION is N[s|m|h|d|w]. The configuration is read from the pyxis line of
plugstack.conf (PlugStackConfig of $SLURM_CONF or /etc/slurm/slurm.conf).";

#[derive(Debug, PartialEq)]
enum Cmd {
    Check,
    CacheList,
    CachePrune(user::Prune),
    ContainersList,
    ContainersRemove { names: Vec<String>, all: bool },
}

#[derive(Debug, PartialEq)]
struct Cli {
    cmd: Cmd,
    json: bool,
    plugstack: Option<PathBuf>,
}

fn parse_cli(args: &[String]) -> Result<Cli, String> {
    let mut json = false;
    let mut plugstack = None;
    let mut all = false;
    let mut older = None;
    let mut words = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = true,
            "--all" => all = true,
            "--plugstack" => {
                plugstack = Some(PathBuf::from(it.next().ok_or("--plugstack needs a FILE")?))
            }
            "--older-than" => {
                let v = it.next().ok_or("--older-than needs a DURATION")?;
                older = Some(
                    user::parse_duration(v)
                        .ok_or_else(|| format!("--older-than: not a duration: {v}"))?,
                );
            }
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}")),
            s => words.push(s.to_owned()),
        }
    }
    let word = |i: usize| words.get(i).map(String::as_str);
    let cmd = match (word(0), word(1)) {
        (None | Some("check"), None) => Cmd::Check,
        (Some("cache"), Some("list")) if words.len() == 2 => Cmd::CacheList,
        (Some("cache"), Some("prune")) if words.len() == 2 => Cmd::CachePrune(match (all, older) {
            (true, Some(_)) => return Err("--all and --older-than exclude each other".into()),
            (true, None) => user::Prune::All,
            (false, Some(d)) => user::Prune::OlderThan(d),
            (false, None) => user::Prune::ToBound,
        }),
        (Some("containers"), Some("list")) if words.len() == 2 => Cmd::ContainersList,
        (Some("containers"), Some("remove")) => {
            let names: Vec<String> = words.iter().skip(2).cloned().collect();
            if names.is_empty() != all {
                return Err("containers remove needs NAME... or --all".into());
            }
            Cmd::ContainersRemove { names, all }
        }
        _ => return Err(format!("unknown command: {}", words.join(" "))),
    };
    if (all || older.is_some()) && !matches!(cmd, Cmd::CachePrune(_) | Cmd::ContainersRemove { .. })
    {
        return Err("--all and --older-than only go with cache prune / containers remove".into());
    }
    Ok(Cli {
        cmd,
        json,
        plugstack,
    })
}

/// The configuration of this node's pyxis line, and the checks of the stack itself.
fn node_config(cli: &Cli, checks: &mut Vec<report::Check>) -> (Config, Option<PathBuf>) {
    let slurm = node::read_slurm_conf();
    node::check_plugstack(cli.plugstack.as_deref(), &slurm, checks)
}

fn run_check(cli: &Cli) -> ExitCode {
    let mut checks = Vec::new();
    let (config, so) = node_config(cli, &mut checks);
    node::check_release(so.as_deref(), &mut checks);
    node::check_enroot(&config, &mut checks);
    host::check_userns(&mut checks);
    host::check_fuse(&config, &mut checks);
    host::check_runtime_dir(&config, &mut checks);
    host::check_image_cache(&config, &mut checks);
    let out = if cli.json {
        report::json(&checks)
    } else {
        report::text(&checks)
    };
    print!("{out}");
    if report::summary(&checks).fail > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn finish(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pyxis-doctor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(host::USERNS_PROBE) {
        return ExitCode::from(u8::try_from(host::userns_probe_main()).unwrap_or(1));
    }
    let cli = match parse_cli(&args) {
        Ok(c) => c,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pyxis-doctor: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match &cli.cmd {
        Cmd::Check => run_check(&cli),
        Cmd::CacheList => {
            let (config, _) = node_config(&cli, &mut Vec::new());
            finish(user::cache_list(&config, cli.json))
        }
        Cmd::CachePrune(how) => {
            let (config, _) = node_config(&cli, &mut Vec::new());
            finish(user::cache_prune(&config, *how))
        }
        Cmd::ContainersList => finish(user::containers_list()),
        Cmd::ContainersRemove { names, all } => finish(user::containers_remove(names, *all)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(s: &str) -> Result<Cli, String> {
        parse_cli(&s.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn commands_parse() {
        assert_eq!(cli("").unwrap().cmd, Cmd::Check);
        assert!(cli("--json").unwrap().json);
        assert_eq!(
            cli("check --plugstack /x").unwrap().plugstack,
            Some("/x".into())
        );
        assert_eq!(cli("cache list").unwrap().cmd, Cmd::CacheList);
        assert_eq!(
            cli("cache prune").unwrap().cmd,
            Cmd::CachePrune(user::Prune::ToBound)
        );
        assert_eq!(
            cli("cache prune --all").unwrap().cmd,
            Cmd::CachePrune(user::Prune::All)
        );
        assert_eq!(
            cli("cache prune --older-than 2d").unwrap().cmd,
            Cmd::CachePrune(user::Prune::OlderThan(std::time::Duration::from_secs(
                172800
            )))
        );
        assert_eq!(cli("containers list").unwrap().cmd, Cmd::ContainersList);
        assert_eq!(
            cli("containers remove a pyxis_b").unwrap().cmd,
            Cmd::ContainersRemove {
                names: vec!["a".into(), "pyxis_b".into()],
                all: false
            }
        );
    }

    #[test]
    fn bad_command_lines_are_refused() {
        for bad in [
            "cache",
            "cache prune --all --older-than 1d",
            "cache prune --older-than soon",
            "containers remove",
            "containers remove a --all",
            "check --all",
            "frobnicate",
            "--plugstack",
            "--verbose",
        ] {
            assert!(cli(bad).is_err(), "{bad}");
        }
    }
}
