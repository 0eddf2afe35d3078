//! Command-line parsing with enroot's conventions.
//!
//! Every command scans its options up to the first non-option word; `--` ends the options; `-h` or
//! `--help` prints that command's usage and exits 0; an unknown option, a missing option value or a
//! wrong number of operands prints the usage and exits 1. Short options are never bundled (`-fn` is
//! unknown, as in enroot's `case` statements). Operands stay `OsString` because they are paths.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Error, Result};

/// Which usage text to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topic {
    Main,
    Create,
    Digest,
    Exec,
    Export,
    Import,
    List,
    Load,
    Remove,
    Start,
}

/// Options of `enroot start`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StartArgs {
    pub conf: Option<OsString>,
    pub rc: Option<OsString>,
    pub mounts: Vec<OsString>,
    pub env: Vec<OsString>,
    pub root: bool,
    pub rw: bool,
    pub pid: bool,
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    /// Container name or squashfs file.
    pub target: OsString,
    /// The command and its arguments, possibly empty.
    pub command: Vec<OsString>,
}

/// A parsed invocation.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Version,
    List {
        fancy: bool,
    },
    Create {
        name: Option<OsString>,
        force: bool,
        image: OsString,
    },
    Start(StartArgs),
    Export {
        output: Option<OsString>,
        force: bool,
        name: OsString,
    },
    Remove {
        force: bool,
        names: Vec<OsString>,
    },
    Exec {
        env: Vec<OsString>,
        pid: OsString,
        command: Vec<OsString>,
    },
    Import {
        output: Option<OsString>,
        uri: OsString,
    },
    Load {
        name: Option<OsString>,
        force: bool,
        uri: OsString,
    },
    Digest {
        uri: OsString,
    },
}

/// One option a command accepts.
struct Spec {
    short: Option<&'static str>,
    long: &'static str,
    takes_value: bool,
}

const fn flag(short: Option<&'static str>, long: &'static str) -> Spec {
    Spec {
        short,
        long,
        takes_value: false,
    }
}

const fn valued(short: Option<&'static str>, long: &'static str) -> Spec {
    Spec {
        short,
        long,
        takes_value: true,
    }
}

/// Options found by [`scan`], keyed by long name, in command-line order.
type Found = Vec<(&'static str, Option<OsString>)>;

fn usage(topic: Topic, code: i32) -> Error {
    Error::Usage { topic, code }
}

/// Scan options until the first operand; returns the options and the operands.
fn scan(args: &[OsString], specs: &[Spec], topic: Topic) -> Result<(Found, Vec<OsString>)> {
    let mut found = Found::new();
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let bytes = arg.as_bytes();
        if bytes == b"-h" || bytes == b"--help" {
            return Err(usage(topic, 0));
        }
        if bytes == b"--" {
            i += 1;
            break;
        }
        if bytes.len() < 2 || bytes.first() != Some(&b'-') {
            break;
        }
        let exact = specs
            .iter()
            .find(|s| bytes == s.long.as_bytes() || s.short.is_some_and(|x| x.as_bytes() == bytes));
        if let Some(spec) = exact {
            if spec.takes_value {
                // enroot rejects a missing or empty value (`[ -z "${2-}" ]`).
                match args.get(i + 1) {
                    Some(v) if !v.is_empty() => found.push((spec.long, Some(v.clone()))),
                    _ => return Err(usage(topic, 1)),
                }
                i += 2;
            } else {
                found.push((spec.long, None));
                i += 1;
            }
            continue;
        }
        let inline = specs.iter().filter(|s| s.takes_value).find_map(|s| {
            let prefix = s.long.as_bytes();
            bytes
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix(b"="))
                .map(|value| (s.long, value))
        });
        match inline {
            Some((_, b"")) => return Err(usage(topic, 1)),
            Some((long, value)) => {
                found.push((long, Some(OsStr::from_bytes(value).to_os_string())));
                i += 1;
            }
            None => return Err(usage(topic, 1)),
        }
    }
    Ok((
        found,
        args.get(i..).map(<[OsString]>::to_vec).unwrap_or_default(),
    ))
}

fn has(found: &Found, long: &str) -> bool {
    found.iter().any(|(l, _)| *l == long)
}

/// The last value given for an option (enroot's loops overwrite earlier values).
fn last(found: &Found, long: &str) -> Option<OsString> {
    found
        .iter()
        .rev()
        .find(|(l, _)| *l == long)
        .and_then(|(_, v)| v.clone())
}

fn all(found: &Found, long: &str) -> Vec<OsString> {
    found
        .iter()
        .filter(|(l, _)| *l == long)
        .filter_map(|(_, v)| v.clone())
        .collect()
}

fn exactly_one(mut operands: Vec<OsString>, topic: Topic) -> Result<OsString> {
    match operands.len() {
        1 => operands.pop().ok_or_else(|| usage(topic, 1)),
        _ => Err(usage(topic, 1)),
    }
}

/// Parse `argv[1..]`.
pub fn parse(args: &[OsString]) -> Result<Command> {
    let Some((command, rest)) = args.split_first() else {
        return Err(usage(Topic::Main, 1));
    };
    match command.as_bytes() {
        b"version" => Ok(Command::Version),
        b"help" | b"-h" | b"--help" => Err(usage(Topic::Main, 0)),
        b"list" => {
            let (found, _) = scan(rest, &[flag(Some("-f"), "--fancy")], Topic::List)?;
            Ok(Command::List {
                fancy: has(&found, "--fancy"),
            })
        }
        b"create" => {
            let specs = [flag(Some("-f"), "--force"), valued(Some("-n"), "--name")];
            let (found, operands) = scan(rest, &specs, Topic::Create)?;
            Ok(Command::Create {
                name: last(&found, "--name"),
                force: has(&found, "--force"),
                image: exactly_one(operands, Topic::Create)?,
            })
        }
        b"export" => {
            let specs = [flag(Some("-f"), "--force"), valued(Some("-o"), "--output")];
            let (found, operands) = scan(rest, &specs, Topic::Export)?;
            Ok(Command::Export {
                output: last(&found, "--output"),
                force: has(&found, "--force"),
                name: exactly_one(operands, Topic::Export)?,
            })
        }
        b"remove" => {
            let (found, names) = scan(rest, &[flag(Some("-f"), "--force")], Topic::Remove)?;
            if names.is_empty() {
                return Err(usage(Topic::Remove, 1));
            }
            Ok(Command::Remove {
                force: has(&found, "--force"),
                names,
            })
        }
        b"start" => parse_start(rest),
        b"exec" => {
            let (found, operands) = scan(rest, &[valued(Some("-e"), "--env")], Topic::Exec)?;
            let mut operands = operands.into_iter();
            match (operands.next(), operands.as_slice().is_empty()) {
                (Some(pid), false) => Ok(Command::Exec {
                    env: all(&found, "--env"),
                    pid,
                    command: operands.collect(),
                }),
                _ => Err(usage(Topic::Exec, 1)),
            }
        }
        b"import" => {
            let specs = [valued(Some("-a"), "--arch"), valued(Some("-o"), "--output")];
            let (found, operands) = scan(rest, &specs, Topic::Import)?;
            Ok(Command::Import {
                output: last(&found, "--output"),
                uri: exactly_one(operands, Topic::Import)?,
            })
        }
        b"load" => {
            let specs = [
                valued(Some("-a"), "--arch"),
                valued(Some("-n"), "--name"),
                flag(Some("-f"), "--force"),
            ];
            let (found, operands) = scan(rest, &specs, Topic::Load)?;
            Ok(Command::Load {
                name: last(&found, "--name"),
                force: has(&found, "--force"),
                uri: exactly_one(operands, Topic::Load)?,
            })
        }
        b"digest" => {
            let (_, operands) = scan(rest, &[valued(Some("-a"), "--arch")], Topic::Digest)?;
            Ok(Command::Digest {
                uri: exactly_one(operands, Topic::Digest)?,
            })
        }
        _ => Err(usage(Topic::Main, 1)),
    }
}

fn parse_start(rest: &[OsString]) -> Result<Command> {
    let specs = [
        valued(Some("-c"), "--conf"),
        valued(Some("-m"), "--mount"),
        valued(Some("-e"), "--env"),
        valued(None, "--rc"),
        flag(Some("-r"), "--root"),
        flag(Some("-w"), "--rw"),
        flag(None, "--pid"),
        flag(None, "--net"),
        flag(None, "--ipc"),
        flag(None, "--uts"),
    ];
    let (found, operands) = scan(rest, &specs, Topic::Start)?;
    let mut operands = operands.into_iter();
    let target = operands.next().ok_or_else(|| usage(Topic::Start, 1))?;
    Ok(Command::Start(StartArgs {
        conf: last(&found, "--conf"),
        rc: last(&found, "--rc"),
        mounts: all(&found, "--mount"),
        env: all(&found, "--env"),
        root: has(&found, "--root"),
        rw: has(&found, "--rw"),
        pid: has(&found, "--pid"),
        net: has(&found, "--net"),
        ipc: has(&found, "--ipc"),
        uts: has(&found, "--uts"),
        target,
        command: operands.collect(),
    }))
}

/// The usage text of a topic (printed on stdout).
pub fn usage_text(topic: Topic) -> &'static str {
    match topic {
        Topic::Main => {
            "Usage: enroot COMMAND [ARG...]\n\
             \n\
             Test double of the enroot container utility (namespaces are real, registries are local).\n\
             \n \
             Commands:\n   \
               create  [options] [--] IMAGE\n   \
               digest  [options] [--] URI\n   \
               exec    [options] [--] PID COMMAND [ARG...]\n   \
               export  [options] [--] NAME\n   \
               import  [options] [--] URI\n   \
               list    [options]\n   \
               load    [options] [--] URI\n   \
               remove  [options] [--] NAME...\n   \
               start   [options] [--] NAME|IMAGE [COMMAND] [ARG...]\n   \
               version\n"
        }
        Topic::Create => {
            "Usage: enroot create [options] [--] IMAGE\n\
             \n\
             Unpack a squashfs image into a new container root filesystem.\n\
             \n \
             Options:\n   \
               -n, --name   Name of the container (default: IMAGE without .sqsh)\n   \
               -f, --force  Replace an existing root filesystem\n"
        }
        Topic::Digest => {
            "Usage: enroot digest [options] [--] URI\n\
             \n\
             Print the sha256 digest of an image manifest in a local registry.\n\
             \n \
             Options:\n   \
               -a, --arch  Architecture (accepted, ignored)\n"
        }
        Topic::Exec => {
            "Usage: enroot exec [options] [--] PID COMMAND [ARG...]\n\
             \n\
             Run a command in the namespaces of a running container process.\n\
             \n \
             Options:\n   \
               -e, --env KEY[=VAL]  Set a variable in the command's environment\n"
        }
        Topic::Export => {
            "Usage: enroot export [options] [--] NAME\n\
             \n\
             Pack a container root filesystem into a squashfs image.\n\
             \n \
             Options:\n   \
               -o, --output  Image file to write (default: NAME.sqsh)\n   \
               -f, --force   Replace an existing image file\n"
        }
        Topic::Import => {
            "Usage: enroot import [options] [--] URI\n\
             \n\
             Build a squashfs image from docker://[USER@][REGISTRY#]IMAGE[:TAG] (loopback registries only).\n\
             \n \
             Options:\n   \
               -a, --arch    Architecture (accepted, ignored)\n   \
               -o, --output  Image file to write\n"
        }
        Topic::List => {
            "Usage: enroot list [options]\n\
             \n\
             List the container root filesystems.\n\
             \n \
             Options:\n   \
               -f, --fancy  Also show the processes running in each container\n"
        }
        Topic::Load => {
            "Usage: enroot load [options] [--] URI\n\
             \n\
             Unpack docker://[USER@][REGISTRY#]IMAGE[:TAG] directly into a container root filesystem.\n\
             \n \
             Options:\n   \
               -a, --arch   Architecture (accepted, ignored)\n   \
               -n, --name   Name of the container\n   \
               -f, --force  Replace an existing root filesystem\n"
        }
        Topic::Remove => {
            "Usage: enroot remove [options] [--] NAME...\n\
             \n\
             Delete container root filesystems.\n\
             \n \
             Options:\n   \
               -f, --force  Do not ask for confirmation\n"
        }
        Topic::Start => {
            "Usage: enroot start [options] [--] NAME|IMAGE [COMMAND] [ARG...]\n\
             \n\
             Run a command (or the image's /etc/rc, or a shell) inside a container.\n\
             \n \
             Options:\n   \
               -c, --conf CONFIG    Bash script defining mounts/environ/hooks/rc functions\n   \
               -e, --env KEY[=VAL]  Set a variable in the container\n   \
                   --rc SCRIPT      Replace the container's command script\n   \
               -r, --root           Map the current user to root\n   \
               -w, --rw             Keep the root filesystem writable\n   \
               -m, --mount FSTAB    Extra mount (colon-separated fstab fields)\n   \
                   --net            New network namespace (loopback only)\n   \
                   --ipc            New IPC namespace and a minimal /dev\n   \
                   --uts            New UTS namespace\n"
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn usage_code(r: Result<Command>) -> Option<(Topic, i32)> {
        match r {
            Err(Error::Usage { topic, code }) => Some((topic, code)),
            _ => None,
        }
    }

    #[test]
    fn no_command_and_unknown_command_are_usage_errors() {
        assert_eq!(usage_code(parse(&[])), Some((Topic::Main, 1)));
        assert_eq!(
            usage_code(parse(&args(&["frobnicate"]))),
            Some((Topic::Main, 1))
        );
        assert_eq!(
            usage_code(parse(&args(&["--help"]))),
            Some((Topic::Main, 0))
        );
    }

    #[test]
    fn pyxis_start_argv() {
        let cmd = parse(&args(&[
            "start",
            "--conf",
            "/tmp/.enroot_config_x",
            "pyxis_1.0",
            "sh",
            "-c",
            "kill -STOP $$ ; exit 0",
        ]));
        let Ok(Command::Start(s)) = cmd else {
            panic!("not a start command: {cmd:?}");
        };
        assert_eq!(s.conf, Some(OsString::from("/tmp/.enroot_config_x")));
        assert_eq!(s.target, OsString::from("pyxis_1.0"));
        assert_eq!(s.command, args(&["sh", "-c", "kill -STOP $$ ; exit 0"]));
    }

    #[test]
    fn options_after_the_target_belong_to_the_command() {
        let Ok(Command::Start(s)) = parse(&args(&["start", "-w", "c", "-r", "--", "x"])) else {
            panic!("parse failed");
        };
        assert!(s.rw);
        assert!(!s.root);
        assert_eq!(s.command, args(&["-r", "--", "x"]));
    }

    #[test]
    fn inline_and_repeated_values() {
        let Ok(Command::Start(s)) = parse(&args(&[
            "start",
            "--mount=/a:/b",
            "-m",
            "/c:/d",
            "--env=A=1",
            "-e",
            "B",
            "--rc=/r",
            "img",
        ])) else {
            panic!("parse failed");
        };
        assert_eq!(s.mounts, args(&["/a:/b", "/c:/d"]));
        assert_eq!(s.env, args(&["A=1", "B"]));
        assert_eq!(s.rc, Some(OsString::from("/r")));
    }

    #[test]
    fn missing_values_and_unknown_options_exit_1() {
        assert_eq!(
            usage_code(parse(&args(&["create", "-n"]))),
            Some((Topic::Create, 1))
        );
        assert_eq!(
            usage_code(parse(&args(&["create", "--name=", "x"]))),
            Some((Topic::Create, 1))
        );
        assert_eq!(
            usage_code(parse(&args(&["create", "-x", "f"]))),
            Some((Topic::Create, 1))
        );
        assert_eq!(
            usage_code(parse(&args(&["create", "-fn", "a", "f"]))),
            Some((Topic::Create, 1))
        );
        assert_eq!(
            usage_code(parse(&args(&["create", "a", "b"]))),
            Some((Topic::Create, 1))
        );
        assert_eq!(
            usage_code(parse(&args(&["start"]))),
            Some((Topic::Start, 1))
        );
        assert_eq!(
            usage_code(parse(&args(&["remove", "-f"]))),
            Some((Topic::Remove, 1))
        );
        assert_eq!(
            usage_code(parse(&args(&["exec", "12"]))),
            Some((Topic::Exec, 1))
        );
        assert_eq!(
            usage_code(parse(&args(&["list", "--help"]))),
            Some((Topic::List, 0))
        );
    }

    #[test]
    fn create_export_remove_list() {
        assert_eq!(
            parse(&args(&["create", "--name", "n", "-f", "/x.sqsh"])).ok(),
            Some(Command::Create {
                name: Some("n".into()),
                force: true,
                image: "/x.sqsh".into()
            })
        );
        assert_eq!(
            parse(&args(&["export", "-f", "-o", "/o.sqsh", "n"])).ok(),
            Some(Command::Export {
                output: Some("/o.sqsh".into()),
                force: true,
                name: "n".into()
            })
        );
        assert_eq!(
            parse(&args(&["remove", "-f", "--", "-a", "b"])).ok(),
            Some(Command::Remove {
                force: true,
                names: args(&["-a", "b"])
            })
        );
        assert_eq!(
            parse(&args(&["list", "-f"])).ok(),
            Some(Command::List { fancy: true })
        );
        assert_eq!(
            parse(&args(&["list"])).ok(),
            Some(Command::List { fancy: false })
        );
        // A lone "-" is an operand, not an option.
        assert_eq!(
            parse(&args(&["create", "-"])).ok(),
            Some(Command::Create {
                name: None,
                force: false,
                image: "-".into()
            })
        );
    }
}
