//! Every branch of [`decide`] as a table.

use super::*;
use crate::core::args::OptionId;
use crate::core::config::{parse_config, Scope};
use ContainerState::{Absent, Running, Stopped};

fn args(opts: &[(OptionId, Option<&str>)]) -> Args {
    let mut a = Args::default();
    for (id, v) in opts {
        a.apply(*id, *v).unwrap();
    }
    a
}

fn config(keys: &[&str]) -> Config {
    parse_config(keys).unwrap()
}

fn plan(a: &Args, c: &Config, existing: ContainerState) -> Result<ContainerPlan, PlanError> {
    decide(&Facts {
        args: a,
        config: c,
        job: JobId(12),
        step: StepId(3),
        node_id: 0,
        batch_script: None,
        existing,
    })
}

const IMAGE: OptionId = OptionId::Image;
const NAME: OptionId = OptionId::Name;

#[test]
fn named_container_flags() {
    let c = config(&[]);
    let file = || Rootfs::Create(Source::File("/x.sqsh".into()));
    let cases: Vec<(&str, bool, ContainerState, Result<Rootfs, PlanError>)> = vec![
        ("n", true, Absent, Ok(file())),
        ("n", true, Stopped, Ok(Rootfs::Reuse)),
        ("n", false, Stopped, Ok(Rootfs::Reuse)),
        ("n", false, Running(7), Ok(Rootfs::Attach { pid: 7 })),
        (
            "n",
            false,
            Absent,
            Err(PlanError::Missing("pyxis_n".into())),
        ),
        ("n:create", true, Absent, Ok(file())),
        ("n:create", true, Stopped, Err(PlanError::CreateExists)),
        ("n:create", true, Running(7), Err(PlanError::CreateExists)),
        ("n:exec", true, Absent, Err(PlanError::ExecNotRunning)),
        ("n:exec", true, Stopped, Err(PlanError::ExecNotRunning)),
        ("n:exec", false, Running(7), Ok(Rootfs::Attach { pid: 7 })),
        ("n:no_exec", false, Running(7), Ok(Rootfs::Reuse)),
        ("n:no_exec", true, Absent, Ok(file())),
        ("n:auto", true, Running(7), Ok(Rootfs::Attach { pid: 7 })),
    ];
    for (name, image, state, want) in cases {
        let mut opts = vec![(NAME, Some(name))];
        if image {
            opts.push((IMAGE, Some("/x.sqsh")));
        }
        let got = plan(&args(&opts), &c, state).map(|p| p.rootfs);
        assert_eq!(got, want, "{name} image={image} {state:?}");
    }
}

#[test]
fn image_sources() {
    let cases: Vec<(&str, &[&str], Source)> = vec![
        ("/a.sqsh", &[], Source::File("/a.sqsh".into())),
        (
            "./a.sqsh",
            &["importer=/imp"],
            Source::File("./a.sqsh".into()),
        ),
        (
            "ubuntu",
            &[],
            Source::Import {
                uri: "docker://ubuntu".into(),
            },
        ),
        (
            "ubuntu",
            &["use_enroot_load=1"],
            Source::Load {
                uri: "docker://ubuntu".into(),
            },
        ),
        (
            "dockerd://u",
            &["use_enroot_load=1"],
            Source::Import {
                uri: "dockerd://u".into(),
            },
        ),
        (
            "ubuntu",
            &["importer=/imp", "use_enroot_load=1"],
            Source::Importer {
                uri: "docker://ubuntu".into(),
            },
        ),
    ];
    for (image, keys, want) in cases {
        let p = plan(&args(&[(IMAGE, Some(image))]), &config(keys), Absent).unwrap();
        assert_eq!(p.rootfs, Rootfs::Create(want), "{image} {keys:?}");
        assert!(p.remove_at_end);
    }
}

#[test]
fn direct_start_only_for_unnamed_unsaved_files() {
    let sq = config(&["use_squashfuse=1"]);
    let direct =
        |a: &Args, c: &Config| matches!(plan(a, c, Absent).unwrap().rootfs, Rootfs::Direct(_));
    assert!(direct(&args(&[(IMAGE, Some("/x"))]), &sq));
    assert!(!direct(&args(&[(IMAGE, Some("/x"))]), &config(&[])));
    assert!(!direct(
        &args(&[(IMAGE, Some("/x")), (NAME, Some("n"))]),
        &sq
    ));
    assert!(!direct(
        &args(&[(IMAGE, Some("/x")), (OptionId::Save, Some("/o.sqsh"))]),
        &sq
    ));
    let imp = config(&["use_squashfuse=1", "importer=/imp"]);
    let p = plan(&args(&[(IMAGE, Some("ubuntu"))]), &imp, Absent).unwrap();
    assert_eq!(
        p.rootfs,
        Rootfs::Direct(Source::Importer {
            uri: "docker://ubuntu".into()
        })
    );
    assert!(p.uses_importer() && p.helper_lives_with_step() && !p.remove_at_end);
    assert!(!direct(&args(&[(IMAGE, Some("ubuntu"))]), &sq));
    assert!(!direct(
        &args(&[(IMAGE, Some("ubuntu"))]),
        &config(&["use_squashfuse=1", "use_enroot_load=1"])
    ));
}

#[test]
fn names_removal_export_entrypoint() {
    let c = config(&[]);
    let job = config(&["container_scope=job", "execute_entrypoint=1"]);
    let unnamed = args(&[(IMAGE, Some("/x"))]);
    let p = plan(&unnamed, &c, Absent).unwrap();
    assert_eq!(
        (p.name.as_str(), p.named, p.remove_at_end, p.entrypoint),
        ("pyxis_12.3", false, true, false)
    );
    let p = plan(&unnamed, &job, Absent).unwrap();
    assert_eq!((p.name.as_str(), p.entrypoint), ("pyxis_12_12.3", true));
    let named = args(&[
        (IMAGE, Some("/x")),
        (NAME, Some("n")),
        (OptionId::NoEntrypoint, None),
    ]);
    let p = plan(&named, &job, Absent).unwrap();
    assert_eq!(
        (p.name.as_str(), p.named, p.remove_at_end, p.entrypoint),
        ("pyxis_12_n", true, false, false)
    );
    let saved = args(&[(IMAGE, Some("/x")), (OptionId::Save, Some("o.sqsh"))]);
    assert_eq!(
        plan(&saved, &c, Absent).unwrap().export.as_deref(),
        Some("o.sqsh")
    );
    let other_node = decide(&Facts {
        args: &saved,
        config: &c,
        job: JobId(12),
        step: StepId(3),
        node_id: 1,
        batch_script: None,
        existing: Absent,
    })
    .unwrap();
    assert_eq!(other_node.export, None);
    assert_eq!(Scope::Job, job.container_scope);
}

#[test]
fn mounts_batch_script_and_attach() {
    let c = config(&[]);
    let a = args(&[
        (IMAGE, Some("/x")),
        (NAME, Some("n")),
        (OptionId::Mounts, Some("/a:/b")),
    ]);
    let batch = decide(&Facts {
        args: &a,
        config: &c,
        job: JobId(12),
        step: StepId(0xffff_fffb),
        node_id: 0,
        batch_script: Some("/spool/job12/slurm_script"),
        existing: Absent,
    })
    .unwrap();
    assert_eq!(batch.mounts.len(), 2);
    assert!(batch.notices.is_empty());
    let attach = plan(&a, &c, Running(9)).unwrap();
    assert_eq!(attach.rootfs, Rootfs::Attach { pid: 9 });
    assert!(attach.mounts.is_empty());
    assert_eq!(attach.notices, vec![Notice::MountsIgnoredOnAttach]);
    let no_mounts = args(&[(NAME, Some("n"))]);
    assert!(plan(&no_mounts, &c, Running(9)).unwrap().notices.is_empty());
}

#[test]
fn messages_are_pyxis_text() {
    assert_eq!(
        PlanError::Missing("pyxis_foo".into()).to_string(),
        "error: a container with name \"pyxis_foo\" does not exist, and --container-image is not set"
    );
    assert_eq!(
        Notice::MountsIgnoredOnAttach.text(),
        "ignoring --container-mounts when attaching to a running container"
    );
}
