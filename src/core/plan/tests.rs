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
        digest: None,
        direct: &DirectSupport::NotProbed,
    })
}

const FUSE: DirectSupport = DirectSupport::Available {
    native_overlay: false,
};

/// A plan with the cache and direct-start facts given.
fn plan_with(
    a: &Args,
    c: &Config,
    existing: ContainerState,
    digest: Option<&Digest>,
    direct: &DirectSupport,
) -> ContainerPlan {
    decide(&Facts {
        args: a,
        config: c,
        job: JobId(12),
        step: StepId(3),
        node_id: 0,
        batch_script: None,
        existing,
        digest,
        direct,
    })
    .unwrap()
}

fn digest() -> Digest {
    Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap()
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
fn direct_start_only_for_unnamed_unsaved_squashfs_when_the_node_can() {
    let c = config(&[]);
    let off = config(&["use_squashfuse=0"]);
    let d = digest();
    let direct = |a: &Args, c: &Config, digest: Option<&Digest>, s: &DirectSupport| {
        matches!(plan_with(a, c, Absent, digest, s).rootfs, Rootfs::Direct(_))
    };
    let file = args(&[(IMAGE, Some("/x"))]);
    let registry = args(&[(IMAGE, Some("ubuntu"))]);
    // on by default, when probed available
    assert!(direct(&file, &c, None, &FUSE));
    assert!(direct(&registry, &c, Some(&d), &FUSE));
    // use_squashfuse=0: pyxis exactly, whatever the node offers
    assert!(!direct(&file, &off, None, &FUSE));
    assert!(!direct(&registry, &off, Some(&d), &FUSE));
    // named, saved: create
    assert!(!direct(
        &args(&[(IMAGE, Some("/x")), (NAME, Some("n"))]),
        &c,
        None,
        &FUSE
    ));
    assert!(!direct(
        &args(&[(IMAGE, Some("/x")), (OptionId::Save, Some("/o.sqsh"))]),
        &c,
        None,
        &FUSE
    ));
    // a registry image without the cache (no digest) is imported and created, as pyxis
    assert!(!direct(&registry, &c, None, &FUSE));
    assert!(!direct(
        &registry,
        &config(&["use_enroot_load=1"]),
        Some(&d),
        &FUSE
    ));
    // not probed or unavailable: create, the reason kept for the verbose line
    assert!(!direct(&file, &c, None, &DirectSupport::NotProbed));
    let p = plan_with(
        &file,
        &c,
        Absent,
        None,
        &DirectSupport::Unavailable("no squashfuse on PATH".into()),
    );
    assert_eq!(p.rootfs, Rootfs::Create(Source::File("/x".into())));
    assert_eq!(p.fallback.as_deref(), Some("no squashfuse on PATH"));
    assert!(p.remove_at_end && !p.native_overlay);
    // the overlay choice travels with the plan
    let native = DirectSupport::Available {
        native_overlay: true,
    };
    let p = plan_with(&file, &c, Absent, None, &native);
    assert!(p.native_overlay && p.fallback.is_none() && !p.remove_at_end);
    // the importer's squashfs too
    let imp = config(&["importer=/imp"]);
    let p = plan_with(&registry, &imp, Absent, None, &FUSE);
    assert_eq!(
        p.rootfs,
        Rootfs::Direct(Source::Importer {
            uri: "docker://ubuntu".into()
        })
    );
    assert!(p.uses_importer() && p.helper_lives_with_step() && !p.remove_at_end);
}

#[test]
fn registry_images_go_through_the_cache_when_it_is_on() {
    let d = digest();
    let cached = Source::Cached {
        uri: "docker://ubuntu".into(),
        digest: d.clone(),
    };
    let registry = args(&[(IMAGE, Some("ubuntu"))]);
    let named = args(&[(IMAGE, Some("ubuntu")), (NAME, Some("n"))]);
    let saved = args(&[(IMAGE, Some("ubuntu")), (OptionId::Save, Some("/o"))]);
    let on = config(&[]);
    let cases: Vec<(&Args, Config, Option<&Digest>, ContainerState, Rootfs)> = vec![
        (
            &registry,
            on.clone(),
            Some(&d),
            Absent,
            Rootfs::Direct(cached.clone()),
        ),
        (
            &named,
            on.clone(),
            Some(&d),
            Absent,
            Rootfs::Create(cached.clone()),
        ),
        (
            &saved,
            on.clone(),
            Some(&d),
            Absent,
            Rootfs::Create(cached.clone()),
        ),
        (&named, on.clone(), Some(&d), Stopped, Rootfs::Reuse),
        (
            &registry,
            config(&["use_squashfuse=0"]),
            Some(&d),
            Absent,
            Rootfs::Create(cached.clone()),
        ),
        // the cache off: pyxis's import, even with a digest at hand
        (
            &registry,
            config(&["image_cache_path=none"]),
            Some(&d),
            Absent,
            Rootfs::Create(Source::Import {
                uri: "docker://ubuntu".into(),
            }),
        ),
        (
            &registry,
            config(&["image_cache_size=0"]),
            Some(&d),
            Absent,
            Rootfs::Create(Source::Import {
                uri: "docker://ubuntu".into(),
            }),
        ),
        // the digest could not be resolved: import as pyxis does
        (
            &registry,
            on.clone(),
            None,
            Absent,
            Rootfs::Create(Source::Import {
                uri: "docker://ubuntu".into(),
            }),
        ),
    ];
    for (a, c, digest, state, want) in cases {
        assert_eq!(
            plan_with(a, &c, state, digest, &FUSE).rootfs,
            want,
            "{:?} {:?} {state:?}",
            a.image,
            c.image_cache()
        );
    }
    // a cached direct start holds the entry for the whole step, and removes nothing
    let p = plan_with(&registry, &on, Absent, Some(&d), &FUSE);
    assert!(p.helper_lives_with_step() && !p.remove_at_end && !p.uses_importer());
}

#[test]
fn which_images_resolve_a_digest() {
    let on = config(&[]);
    let cases: Vec<(&str, &[&str], Option<&str>)> = vec![
        ("ubuntu", &[], Some("docker://ubuntu")),
        (
            "127.0.0.1:5000#a/b:1",
            &[],
            Some("docker://127.0.0.1:5000#a/b:1"),
        ),
        ("docker://x@sha256:00", &[], Some("docker://x@sha256:00")),
        ("/x.sqsh", &[], None),
        ("dockerd://ubuntu", &[], None),
        ("podman://ubuntu", &[], None),
        ("ubuntu", &["image_cache_path=none"], None),
        ("ubuntu", &["image_cache_size=0"], None),
        ("ubuntu", &["importer=/imp"], None),
        ("ubuntu", &["use_enroot_load=1"], None),
    ];
    for (image, keys, want) in cases {
        let got = cache_uri(&args(&[(IMAGE, Some(image))]), &config(keys));
        assert_eq!(got.as_deref(), want, "{image} {keys:?}");
    }
    assert_eq!(cache_uri(&args(&[(NAME, Some("n"))]), &on), None);
    assert!(may_start_direct(&args(&[(IMAGE, Some("/x"))]), &on));
    assert!(!may_start_direct(
        &args(&[(IMAGE, Some("/x"))]),
        &config(&["use_squashfuse=0"])
    ));
    assert!(!may_start_direct(
        &args(&[(IMAGE, Some("/x")), (NAME, Some("n"))]),
        &on
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
        digest: None,
        direct: &FUSE,
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
        digest: None,
        direct: &DirectSupport::NotProbed,
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
