//! Unit tests of the option table, the option parsers and the `PYXIS_CONTAINER_*` aliases.

use super::*;
use std::collections::HashMap;

mod bytes;

/// A sequence of option deliveries.
type Steps<'a> = &'a [(OptionId, Option<&'a str>)];
/// An environment as (name, value) pairs.
type EnvPairs<'a> = &'a [(&'a str, &'a str)];

fn applied(steps: &[(OptionId, Option<&str>)]) -> Result<Args, ArgError> {
    let mut args = Args::default();
    for (id, arg) in steps {
        args.apply(*id, *arg)?;
    }
    Ok(args)
}

fn err(steps: &[(OptionId, Option<&str>)]) -> String {
    applied(steps).unwrap_err().to_string()
}

#[test]
fn table_is_consistent() {
    for (i, id) in OptionId::ALL.iter().enumerate() {
        let i = i32::try_from(i).unwrap();
        assert_eq!(id.index(), i);
        assert_eq!(OptionId::from_index(i), Some(*id));
        assert_eq!(spec(*id).id, *id);
        assert_eq!(OPTIONS[usize::try_from(i).unwrap()].id, *id);
        assert!(spec(*id).usage.starts_with("[pyxis] "));
    }
    assert_eq!(OptionId::from_index(-1), None);
    assert_eq!(OptionId::from_index(17), None);
    let with_arg: Vec<&str> = OPTIONS
        .iter()
        .filter(|o| o.has_arg())
        .map(|o| o.name)
        .collect();
    assert_eq!(
        with_arg,
        [
            "container-image",
            "container-mounts",
            "container-workdir",
            "container-name",
            "container-save",
            "container-env",
            "container-unshare",
            "environment"
        ]
    );
}

#[test]
fn usage_texts_are_verbatim() {
    let cases = [
        (OptionId::Image, "[pyxis] the image to use for the container filesystem. Can be either a docker image given as an enroot URI, or a path to a squashfs file on the remote host filesystem."),
        (OptionId::Mounts, "[pyxis] bind mount[s] inside the container. Mount flags are separated with \"+\", e.g. \"ro+rprivate\""),
        (OptionId::Name, "[pyxis] name to use for saving and loading the container on the host. Unnamed containers are removed after the slurm task is complete; named containers are not. If a container with this name already exists, the existing container is used and the import is skipped."),
        (OptionId::Save, "[pyxis] Save the container state to a squashfs file on the remote host filesystem."),
        (OptionId::MountHome, "[pyxis] bind mount the user's home directory. System-level enroot settings might cause this directory to be already-mounted."),
        (OptionId::RemapRoot, "[pyxis] ask to be remapped to root inside the container. Does not grant elevated system permissions, despite appearances."),
        (OptionId::Env, "[pyxis] names of environment variables to override with the host environment and set at the entrypoint. By default, all exported host environment variables are set in the container after the entrypoint is run, but their existing values in the image take precedence; the variables specified with this flag are preserved from the host and set before the entrypoint runs"),
        (OptionId::Unshare, "[pyxis] create new namespaces for the container. Supported: net, ipc, uts."),
    ];
    for (id, usage) in cases {
        assert_eq!(spec(id).usage, usage);
    }
    assert_eq!(
        spec(OptionId::Image).arginfo,
        Some("[USER@][REGISTRY#]IMAGE[:TAG]|PATH")
    );
    assert_eq!(
        spec(OptionId::Mounts).arginfo,
        Some("SRC:DST[:FLAGS][,SRC:DST...]")
    );
}

#[test]
fn single_valued_options() {
    use OptionId::*;
    let long = "a".repeat(4096);
    let max = "a".repeat(4095);
    let cases: &[(Steps, Result<(), &str>)] = &[
        (
            &[(Image, None)],
            Err("--container-image: argument required"),
        ),
        (
            &[(Image, Some(""))],
            Err("--container-image: argument required"),
        ),
        (&[(Image, Some("ubuntu")), (Image, Some("ubuntu"))], Ok(())),
        (
            &[(Image, Some("ubuntu")), (Image, Some("centos"))],
            Err("--container-image specified multiple times"),
        ),
        (
            &[(Image, Some(&long))],
            Err("--container-image: argument too long"),
        ),
        (&[(Image, Some(&max))], Ok(())),
        (&[(Image, Some("ubuntu:5000"))], Ok(())),
        (&[(Image, Some("127.0.0.1:5000/repo:tag"))], Ok(())),
        (
            &[(Image, Some("127.0.0.1:5000"))],
            Err("--container-image: 127.0.0.1:5000 is only a registry address, not an image: name the image too, e.g. 127.0.0.1:5000/IMAGE[:TAG]; in an #SBATCH line an unescaped \"#\" starts a comment, so everything after it is lost: write 127.0.0.1:5000\\#IMAGE[:TAG] there, or use the Docker form 127.0.0.1:5000/IMAGE[:TAG]"),
        ),
        (
            &[(Workdir, Some(""))],
            Err("--container-workdir: argument required"),
        ),
        (
            &[(Workdir, Some("rel/dir")), (Workdir, Some("rel/dir"))],
            Ok(()),
        ),
        (
            &[(Workdir, Some("/a")), (Workdir, Some("/b"))],
            Err("--container-workdir specified multiple times"),
        ),
        (&[(Save, None)], Err("--container-save: argument required")),
        (
            &[(Save, Some("/"))],
            Err("--container-save: target is a directory"),
        ),
        (
            &[(Save, Some("./"))],
            Err("--container-save: target is a directory"),
        ),
        (
            &[(Save, Some("/tmp/"))],
            Err("--container-save: target is a directory"),
        ),
        (
            &[(Save, Some("."))],
            Err("--container-save: target is a directory"),
        ),
        (
            &[(Save, Some(".."))],
            Err("--container-save: target is a directory"),
        ),
        (
            &[(Save, Some("/tmp/."))],
            Err("--container-save: target is a directory"),
        ),
        (
            &[(Save, Some("a/.."))],
            Err("--container-save: target is a directory"),
        ),
        (&[(Save, Some("x.sqsh")), (Save, Some("x.sqsh"))], Ok(())),
        (&[(Save, Some(".x.sqsh"))], Ok(())),
        (&[(Save, Some("/tmp/..x"))], Ok(())),
        (
            &[(Save, Some("/a.sqsh")), (Save, Some("/b.sqsh"))],
            Err("--container-save specified multiple times"),
        ),
    ];
    for (steps, want) in cases {
        let got = applied(steps).map(|_| ()).map_err(|e| e.to_string());
        assert_eq!(got, want.map_err(str::to_owned), "{steps:?}");
    }
}

#[test]
fn container_name() {
    use OptionId::Name;
    let flag_msg = "--container-name: flag must be \"auto\", \"create\", \"exec\" or \"no_exec\"";
    let ok: &[(&[&str], &str, NameFlag)] = &[
        (&["foo"], "foo", NameFlag::Auto),
        (&["foo:"], "foo", NameFlag::Auto),
        (&["foo:auto"], "foo", NameFlag::Auto),
        (&["foo:create"], "foo", NameFlag::Create),
        (&["foo:exec"], "foo", NameFlag::Exec),
        (&["foo:no_exec"], "foo", NameFlag::NoExec),
        (&["foo:exec", "foo:exec"], "foo", NameFlag::Exec), // W25 fix
        (&["foo", "foo"], "foo", NameFlag::Auto),
        (&["42.0"], "42.0", NameFlag::Auto),
        (&["...x"], "...x", NameFlag::Auto),
    ];
    for (steps, name, flag) in ok {
        let mut args = Args::default();
        for s in *steps {
            args.apply(Name, Some(s)).unwrap();
        }
        let got = args.name.unwrap();
        assert_eq!((got.name.as_str(), got.flag), (*name, *flag), "{steps:?}");
        assert_eq!(got.raw, steps[0]);
    }
    let long = "n".repeat(201);
    let max = "n".repeat(200);
    assert!(applied(&[(Name, Some(&max))]).is_ok());
    let bad: &[(&[&str], String)] = &[
        (&[""], "--container-name: argument required".into()),
        (&[":exec"], "--container-name: empty name".into()),
        (&[":"], "--container-name: empty name".into()),
        (&["foo:bar"], flag_msg.into()),
        (&["foo:exec:x"], flag_msg.into()),
        (&["foo:EXEC"], flag_msg.into()),
        (
            &["foo", "foo:create"],
            "--container-name specified multiple times".into(),
        ),
        (
            &["foo", "bar"],
            "--container-name specified multiple times".into(),
        ),
        (&["a/b"], "--container-name: invalid name: a/b".into()),
        (&["a b"], "--container-name: invalid name: a b".into()),
        (
            &["a\tb:exec"],
            "--container-name: invalid name: a\\tb".into(),
        ),
        (&["a\nb"], "--container-name: invalid name: a\\nb".into()),
        (&["."], "--container-name: invalid name: .".into()),
        (&["..:create"], "--container-name: invalid name: ..".into()),
        (
            &[long.as_str()],
            format!("--container-name: invalid name: {long}"),
        ),
    ];
    for (steps, msg) in bad {
        let steps: Vec<(OptionId, Option<&str>)> = steps.iter().map(|s| (Name, Some(*s))).collect();
        assert_eq!(err(&steps), *msg, "{steps:?}");
    }
}

#[test]
fn mounts_accumulate_and_report() {
    use OptionId::Mounts;
    let args = applied(&[(Mounts, Some("/a:/a")), (Mounts, Some("/a:/a,/b:/c:ro"))]).unwrap();
    assert_eq!(args.mounts.len(), 2);
    assert_eq!(
        err(&[(Mounts, None)]),
        "--container-mounts: argument required"
    );
    assert_eq!(
        err(&[(Mounts, Some(""))]),
        "--container-mounts: argument required"
    );
    let e = applied(&[(Mounts, Some("proc:/x"))]).unwrap_err();
    assert_eq!(
        e.log_lines(),
        [
            "mount source must be a relative path, an absolute path, \"tmpfs\" or \"umount\"",
            "could not add mount entry: proc:/x"
        ]
    );
    // A rejected argument leaves earlier entries of the same argument out.
    let mut args = Args::default();
    assert!(args.apply(Mounts, Some("/a:/a,bad:/x")).is_err());
    assert!(args.mounts.is_empty());
}

#[test]
fn tristates() {
    use OptionId::*;
    let pairs = [
        (
            MountHome,
            NoMountHome,
            "both --container-mount-home and --no-container-mount-home were specified",
        ),
        (
            RemapRoot,
            NoRemapRoot,
            "both --container-remap-root and --no-container-remap-root were specified",
        ),
        (
            Entrypoint,
            NoEntrypoint,
            "both --container-entrypoint and --no-container-entrypoint were specified",
        ),
        (
            Writable,
            Readonly,
            "both --container-writable and --container-readonly were specified",
        ),
    ];
    for (on, off, msg) in pairs {
        assert_eq!(err(&[(on, None), (off, None)]), msg);
        assert_eq!(err(&[(off, None), (on, None)]), msg);
        assert!(applied(&[(on, None), (on, None)]).is_ok());
        assert!(applied(&[(off, None), (off, None)]).is_ok());
    }
    let a = applied(&[(MountHome, None), (NoRemapRoot, None), (Readonly, None)]).unwrap();
    assert_eq!(
        (a.mount_home, a.remap_root, a.entrypoint, a.writable),
        (Some(true), Some(false), None, Some(false))
    );
    let a = applied(&[(EntrypointLog, None), (EntrypointLog, None)]).unwrap();
    assert_eq!(a.entrypoint_log, Some(true));
}

#[test]
fn container_env() {
    use OptionId::Env;
    let a = applied(&[(Env, Some("FOO,BAR")), (Env, Some("BAR,_x1"))]).unwrap();
    assert_eq!(a.env_names, ["FOO", "BAR", "_x1"]);
    let bad = [
        (None, "--container-env: argument required"),
        (Some(""), "--container-env: argument required"),
        (Some("FOO,"), "--container-env: invalid format: FOO,"),
        (Some(",FOO"), "--container-env: invalid format: ,FOO"),
        (Some("A,,B"), "--container-env: invalid format: A,,B"),
        (Some("1FOO"), "--container-env: invalid variable name: 1FOO"),
        (Some("A,B-C"), "--container-env: invalid variable name: B-C"),
        (Some("A}"), "--container-env: invalid variable name: A}"),
        (
            Some("$(id)"),
            "--container-env: invalid variable name: $(id)",
        ),
        (Some("A B"), "--container-env: invalid variable name: A B"),
    ];
    for (arg, msg) in bad {
        assert_eq!(err(&[(Env, arg)]), msg, "{arg:?}");
    }
    let mut a = Args::default();
    assert!(a.apply(Env, Some("GOOD,1BAD")).is_err());
    assert!(a.env_names.is_empty());
}

#[test]
fn container_unshare() {
    use OptionId::Unshare as U;
    let a = applied(&[(U, Some("net")), (U, Some("uts,net"))]).unwrap();
    assert_eq!(
        a.unshare,
        Unshare {
            net: true,
            ipc: false,
            uts: true
        }
    );
    let bad = [
        (None, "--container-unshare: argument required"),
        (Some(""), "--container-unshare: argument required"),
        (
            Some("net,"),
            "--container-unshare: empty namespace argument",
        ),
        (
            Some(",net"),
            "--container-unshare: empty namespace argument",
        ),
        (Some("pid"), "--container-unshare: unknown namespace 'pid'"),
        (
            Some("net,NET"),
            "--container-unshare: unknown namespace 'NET'",
        ),
    ];
    for (arg, msg) in bad {
        assert_eq!(err(&[(U, arg)]), msg, "{arg:?}");
    }
    let mut a = Args::default();
    assert!(a.apply(U, Some("ipc,bogus")).is_err());
    assert!(!a.unshare.any());
}

#[test]
fn bool_parser() {
    for s in ["1", "true", "yes", "y"] {
        assert_eq!(parse_bool(s), Some(true));
    }
    for s in ["0", "false", "no", "n"] {
        assert_eq!(parse_bool(s), Some(false));
    }
    for s in ["", "TRUE", "Yes", "N", "2", "on", "off", " 1"] {
        assert_eq!(parse_bool(s), None, "{s:?}");
    }
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn env_fills_only_unset_options() {
    let mut a = Args::default();
    a.apply(OptionId::Image, Some("cli")).unwrap();
    a.apply(OptionId::NoMountHome, None).unwrap();
    let errors = a.apply_env(env_of(&[
        ("PYXIS_CONTAINER_IMAGE", "env"),
        ("PYXIS_CONTAINER_MOUNTS", "/a:/b:ro"),
        ("PYXIS_CONTAINER_WORKDIR", "/w"),
        ("PYXIS_CONTAINER_NAME", "n:exec"),
        ("PYXIS_CONTAINER_SAVE", "/s.sqsh"),
        ("PYXIS_CONTAINER_MOUNT_HOME", "1"),
        ("PYXIS_CONTAINER_REMAP_ROOT", "yes"),
        ("PYXIS_CONTAINER_ENTRYPOINT", "0"),
        ("PYXIS_CONTAINER_ENTRYPOINT_LOG", "0"),
        ("PYXIS_CONTAINER_READONLY", "1"),
        ("PYXIS_CONTAINER_ENV", "A,B"),
        ("PYXIS_CONTAINER_UNSHARE", "ipc"),
    ]));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(a.image.as_deref(), Some("cli"));
    assert_eq!(a.mounts, mount::parse_mounts("/a:/b:ro").unwrap());
    assert_eq!(a.workdir.as_deref(), Some("/w"));
    assert_eq!(a.name.as_ref().map(|n| n.flag), Some(NameFlag::Exec));
    assert_eq!(a.save.as_deref(), Some("/s.sqsh"));
    assert_eq!(a.mount_home, Some(false));
    assert_eq!(a.remap_root, Some(true));
    assert_eq!(a.entrypoint, Some(false));
    assert_eq!(a.entrypoint_log, Some(false));
    assert_eq!(a.writable, Some(false));
    assert_eq!(a.env_names, ["A", "B"]);
    assert!(a.unshare.ipc && !a.unshare.net);
}

#[test]
fn env_does_not_extend_cli_lists() {
    let mut a = Args::default();
    a.apply(OptionId::Mounts, Some("/x:/x")).unwrap();
    a.apply(OptionId::Env, Some("X")).unwrap();
    a.apply(OptionId::Unshare, Some("net")).unwrap();
    let errors = a.apply_env(env_of(&[
        ("PYXIS_CONTAINER_MOUNTS", "/a:/b"),
        ("PYXIS_CONTAINER_ENV", "A"),
        ("PYXIS_CONTAINER_UNSHARE", "ipc"),
    ]));
    assert!(errors.is_empty());
    assert_eq!(a.mounts.len(), 1);
    assert_eq!(a.env_names, ["X"]);
    assert!(!a.unshare.ipc);
}

#[test]
fn env_booleans() {
    let cases: &[(EnvPairs, Option<bool>)] = &[
        (
            &[
                ("PYXIS_CONTAINER_WRITABLE", "1"),
                ("PYXIS_CONTAINER_READONLY", "1"),
            ],
            Some(true),
        ),
        (
            &[
                ("PYXIS_CONTAINER_WRITABLE", "0"),
                ("PYXIS_CONTAINER_READONLY", "0"),
            ],
            Some(false),
        ),
        (
            &[
                ("PYXIS_CONTAINER_WRITABLE", "bogus"),
                ("PYXIS_CONTAINER_READONLY", "0"),
            ],
            Some(true),
        ),
        (&[("PYXIS_CONTAINER_READONLY", "n")], Some(true)),
        (&[("PYXIS_CONTAINER_READONLY", "maybe")], None),
        (&[], None),
    ];
    for (env, writable) in cases {
        let mut a = Args::default();
        assert!(a.apply_env(env_of(env)).is_empty());
        assert_eq!(a.writable, *writable, "{env:?}");
    }
    let mut a = Args::default();
    assert!(a
        .apply_env(env_of(&[("PYXIS_CONTAINER_MOUNT_HOME", "True")]))
        .is_empty());
    assert_eq!(a.mount_home, None);
}

#[test]
fn env_errors_are_collected_not_fatal() {
    let long = "x".repeat(4096);
    let mut a = Args::default();
    let errors = a.apply_env(env_of(&[
        ("PYXIS_CONTAINER_IMAGE", ""),
        ("PYXIS_CONTAINER_MOUNTS", "proc:/x"),
        ("PYXIS_CONTAINER_WORKDIR", &long),
        ("PYXIS_CONTAINER_NAME", "ok"),
        ("PYXIS_CONTAINER_SAVE", "/dir/"),
        ("PYXIS_CONTAINER_ENV", "A,"),
        ("PYXIS_CONTAINER_UNSHARE", "pid"),
    ]));
    let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        [
            "--container-image: argument required",
            "mount source must be a relative path, an absolute path, \"tmpfs\" or \"umount\"",
            "ignoring PYXIS_CONTAINER_WORKDIR: value longer than 4095 bytes",
            "--container-save: target is a directory",
            "--container-env: invalid format: A,",
            "--container-unshare: unknown namespace 'pid'",
        ]
    );
    assert!(a.image.is_none() && a.workdir.is_none() && a.save.is_none());
    assert_eq!(a.name.map(|n| n.name), Some("ok".to_owned()));
}

#[test]
fn enablement_and_warnings() {
    use OptionId::*;
    let suffix = " because neither --container-image nor --container-name is set";
    let cases: &[(Steps, &[&str])] = &[
        (&[], &[]),
        (&[(Image, Some("x")), (Workdir, Some("/w"))], &[]),
        (&[(Name, Some("x")), (Readonly, None)], &[]),
        (&[(Env, Some("A")), (Unshare, Some("net"))], &[]),
        (
            &[
                (Mounts, Some("/a")),
                (Workdir, Some("/w")),
                (Save, Some("/s")),
                (NoMountHome, None),
                (RemapRoot, None),
                (NoEntrypoint, None),
                (EntrypointLog, None),
                (Readonly, None),
            ],
            &[
                "--container-mounts",
                "--container-workdir",
                "--container-save",
                "--[no-]container-mount-home",
                "--[no-]container-remap-root",
                "--[no-]container-entrypoint",
                "--container-entrypoint-log",
                "--container-readonly",
            ],
        ),
        (&[(Writable, None)], &["--container-writable"]),
    ];
    for (steps, opts) in cases {
        let a = applied(steps).unwrap();
        let want: Vec<String> = opts
            .iter()
            .map(|o| format!("ignoring {o}{suffix}"))
            .collect();
        assert_eq!(a.ignored_option_warnings(), want, "{steps:?}");
        assert_eq!(
            a.enabled(),
            steps.iter().any(|(id, _)| matches!(id, Image | Name))
        );
    }
}

#[test]
fn entrypoint_default() {
    let mut a = Args::default();
    assert!(!a.execute_entrypoint(false));
    assert!(a.execute_entrypoint(true));
    a.apply(OptionId::NoEntrypoint, None).unwrap();
    assert!(!a.execute_entrypoint(true));
}

#[test]
fn identifiers() {
    for ok in ["A", "_", "a_1", "PATH", "_X9"] {
        assert!(is_identifier(ok), "{ok}");
    }
    for bad in ["", "1A", "A-B", "A B", "é", "A=B", "A.B"] {
        assert!(!is_identifier(bad), "{bad}");
    }
}
