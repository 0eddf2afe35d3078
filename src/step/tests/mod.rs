//! Whole steps without Slurm or enroot: scripted fakes of the three seams record every
//! call, and each test walks a step through `init_post_opt` → `user_init` →
//! `task_init` of every task → `task_exit` of every task, the way slurmstepd does.
//! Tasks are simulated one after another in this process; the shared state is the real
//! anonymous mapping, the runtime directory a real private temp directory.

mod fakes;

use fakes::Node;

use super::*;
use crate::core::args::OptionId;
use crate::core::plan::{Rootfs, Source};
use crate::state::Phase;

fn plan_of(phase: &Phase) -> &ContainerPlan {
    match phase {
        Phase::Ready(p) => &p.plan,
        _ => panic!("not prepared"),
    }
}

const IMAGE: OptionId = OptionId::Image;
const NAME: OptionId = OptionId::Name;
const START: &str = "enroot start --conf <rt>/42.3.enroot-conf.<pid>";

#[test]
fn unnamed_squashfs_two_tasks() {
    let node = Node::new("unnamed", 2);
    let mut phase = node.prepare(&[(IMAGE, Some("/img/x.sqsh"))]);
    assert!(
        node.marker().exists(),
        "the marker is written in init_post_opt"
    );
    let (entered, finished) = node.run(&mut phase);
    assert_eq!(entered, vec![Ok(()), Ok(())]);
    assert_eq!(finished, Ok(()));
    let pid = std::process::id();
    assert_eq!(
        node.enroot.calls_in(&node.rt()),
        vec![
            "enroot create --force --name pyxis_42.3 /img/x.sqsh".to_owned(),
            format!("{START} pyxis_42.3 sh -c kill -STOP $$ ; exit 0"),
            "enroot remove -f pyxis_42.3".to_owned(),
        ]
    );
    // each task opens the helper's namespaces and joins; the last one releases it
    assert_eq!(
        node.host.calls(),
        vec![
            format!("open {pid}"),
            "join".into(),
            "chdir /workdir".into(),
            "seccomp".into(),
            format!("open {pid}"),
            "join".into(),
            "chdir /workdir".into(),
            "seccomp".into(),
            format!("release {pid}"),
            format!("kill-if-stopped {pid}"),
        ]
    );
    // the container's PATH won; the conf script is gone; the marker too
    assert!(node
        .slurm
        .env
        .borrow()
        .iter()
        .any(|e| e == "PATH=/container/bin"));
    assert_eq!(std::fs::read_dir(node.rt()).unwrap().count(), 0);
    assert!(!node.marker().exists());
}

#[test]
fn registry_import_goes_through_a_temporary_squashfs() {
    let node = Node::new("import", 1);
    let mut phase = node.prepare(&[(IMAGE, Some("127.0.0.1:5000#a/b:1"))]);
    assert_eq!(
        plan_of(&phase).rootfs,
        Rootfs::Create(Source::Import {
            uri: "docker://127.0.0.1:5000#a/b:1".into()
        })
    );
    let (entered, _) = node.run(&mut phase);
    assert_eq!(entered, vec![Ok(())]);
    let calls = node.enroot.calls_in(&node.rt());
    assert_eq!(
        calls.first().unwrap(),
        "enroot import --output <rt>/42.3.squashfs docker://127.0.0.1:5000#a/b:1"
    );
    assert_eq!(
        calls.get(1).unwrap(),
        "enroot create --force --name pyxis_42.3 <rt>/42.3.squashfs"
    );
    // fetching and creating are long calls, starting and removing short ones
    assert_eq!(
        *node.enroot.bounds.borrow(),
        vec![
            "import_timeout",
            "import_timeout",
            "command_timeout",
            "command_timeout"
        ]
    );
}

#[test]
fn named_container_absent_stopped_running() {
    // absent: created under its name, kept at the end, the marker remembers the lock
    let node = Node::new("named-absent", 1);
    let mut phase = node.prepare(&[(IMAGE, Some("/x.sqsh")), (NAME, Some("dev"))]);
    let marker = std::fs::read_to_string(node.marker()).unwrap();
    assert!(marker.contains("lock=pyxis_dev"), "{marker}");
    let _ = node.run(&mut phase);
    let calls = node.enroot.calls_in(&node.rt());
    assert_eq!(
        calls,
        vec![
            "enroot list -f".to_owned(),
            "enroot list -f".to_owned(),
            "enroot create --name pyxis_dev /x.sqsh".to_owned(),
            format!("{START} pyxis_dev sh -c kill -STOP $$ ; exit 0"),
        ]
    );
    assert!(!node.rt().join("pyxis_dev.lock").exists());

    // stopped: its filesystem is started again, nothing created
    let node = Node::new("named-stopped", 1);
    node.enroot
        .lists
        .replace(vec!["NAME PID\npyxis_dev\n".into()]);
    let mut phase = node.prepare(&[(NAME, Some("dev"))]);
    assert_eq!(plan_of(&phase).rootfs, Rootfs::Reuse);
    let _ = node.run(&mut phase);
    assert!(!node.enroot.calls().iter().any(|c| c.contains("create")));

    // running: its namespaces are pinned in user_init (two listings), a helper from its
    // filesystem gives env and cwd, every task joins the pinned namespaces
    let node = Node::new("named-running", 2);
    let pid = std::process::id();
    node.enroot
        .lists
        .replace(vec![format!("NAME PID\npyxis_dev {pid} sh\n")]);
    let mut phase = node.prepare(&[(NAME, Some("dev")), (OptionId::Mounts, Some("/tmp:/t"))]);
    assert_eq!(plan_of(&phase).rootfs, Rootfs::Attach { pid });
    assert!(plan_of(&phase).mounts.is_empty());
    let (entered, _) = node.run(&mut phase);
    assert_eq!(entered, vec![Ok(()), Ok(())]);
    let opens = node
        .host
        .calls()
        .iter()
        .filter(|c| c.starts_with("open"))
        .count();
    assert_eq!(
        opens,
        1,
        "pinned once in user_init: {:?}",
        node.host.calls()
    );
    assert!(!node.enroot.calls().iter().any(|c| c.contains("remove")));
}

#[test]
fn a_container_started_meanwhile_is_attached_to_not_started_twice() {
    let node = Node::new("late-attach", 2);
    let pid = std::process::id();
    // user_init: absent; under the name lock: running (another step started it);
    // then the pin's second listing
    node.enroot.lists.replace(vec![
        "NAME PID\n".into(),
        format!("NAME PID\npyxis_dev {pid} sh\n"),
        format!("NAME PID\npyxis_dev {pid} sh\n"),
    ]);
    let mut phase = node.prepare(&[(IMAGE, Some("/x.sqsh")), (NAME, Some("dev"))]);
    assert!(matches!(plan_of(&phase).rootfs, Rootfs::Create(_)));
    let (entered, _) = node.run(&mut phase);
    assert_eq!(entered, vec![Ok(()), Ok(())]);
    let calls = node.enroot.calls();
    assert!(!calls.iter().any(|c| c.contains("create")), "{calls:?}");
    // the creator pinned the running container, the other task opened it by pid
    let opens: Vec<_> = node
        .host
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("open"))
        .collect();
    assert_eq!(opens, vec![format!("open {pid}"), format!("open {pid}")]);
}

#[test]
fn direct_start_keeps_the_helper_until_the_end() {
    let mut node = Node::new("direct", 2);
    node.keys.push("use_squashfuse=1".into());
    let mut phase = node.prepare(&[(IMAGE, Some("/x.sqsh"))]);
    assert!(matches!(plan_of(&phase).rootfs, Rootfs::Direct(_)));
    let _ = node.run(&mut phase);
    let pid = std::process::id();
    assert_eq!(
        node.enroot.calls_in(&node.rt()),
        vec![format!("{START} /x.sqsh sh -c kill -STOP $$ ; exit 0")]
    );
    assert!(!node.host.calls().contains(&format!("release {pid}")));
    assert!(node
        .host
        .calls()
        .contains(&format!("kill-if-stopped {pid}")));
}

#[test]
fn importer_get_and_release() {
    let mut node = Node::new("importer", 1);
    node.keys.push("importer=/usr/libexec/imp".into());
    let mut phase = node.prepare(&[(IMAGE, Some("ubuntu"))]);
    let _ = node.run(&mut phase);
    assert_eq!(
        node.enroot.calls_in(&node.rt()),
        vec![
            "/usr/libexec/imp get docker://ubuntu".to_owned(),
            "enroot create --force --name pyxis_42.3 /imp/sqsh".to_owned(),
            "/usr/libexec/imp release".to_owned(),
            format!("{START} pyxis_42.3 sh -c kill -STOP $$ ; exit 0"),
            "/usr/libexec/imp release".to_owned(),
            "enroot remove -f pyxis_42.3".to_owned(),
        ]
    );
}

#[test]
fn failures_in_each_phase() {
    // init_post_opt: an untrusted runtime directory; every task reports it
    let node = Node::new("fail-setup", 2);
    std::fs::create_dir(node.rt()).unwrap();
    std::fs::set_permissions(
        node.rt(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut phase = node.prepare(&[(IMAGE, Some("/x.sqsh"))]);
    let (entered, _) = node.run(&mut phase);
    assert!(entered
        .iter()
        .all(|r| r.as_ref().is_err_and(|e| e.contains("refusing to use it"))));
    assert!(node.enroot.calls().is_empty());

    // user_init: enroot list fails; reported by every task, files cleaned up
    let mut node = Node::new("fail-prepare", 2);
    node.enroot.failing = vec!["list"];
    let mut phase = node.prepare(&[(NAME, Some("dev"))]);
    assert!(matches!(phase, Phase::PrepareFailed { .. }));
    let (entered, finished) = node.run(&mut phase);
    for e in &entered {
        assert_eq!(
            e.as_ref().unwrap_err(),
            "couldn't get list of existing container filesystems: enroot failed with error code: 1"
        );
    }
    // the task reports carry enroot's log, as the boundary prints it
    if let Phase::PrepareFailed { error, .. } = &phase {
        assert_eq!(
            error.details,
            vec!["printing enroot log file:", "    [ERROR] list failed"]
        );
    }
    assert_eq!(finished, Ok(()));
    assert!(!node.marker().exists());

    // the creator's import fails: it says so once, the other task that it did not
    // start, and the unnamed container is still removed at the end
    let mut node = Node::new("fail-import", 2);
    node.enroot.failing = vec!["import"];
    let mut phase = node.prepare(&[(IMAGE, Some("ubuntu"))]);
    let (entered, _) = node.run(&mut phase);
    assert_eq!(
        entered,
        vec![
            Err("failed to import docker image: ubuntu".to_owned()),
            Err("container was not started successfully by another task".to_owned()),
        ]
    );
    assert_eq!(
        node.enroot.calls().last().unwrap(),
        "enroot remove -f pyxis_42.3"
    );

    // start fails
    let mut node = Node::new("fail-start", 1);
    node.enroot.failing = vec!["start"];
    let mut phase = node.prepare(&[(IMAGE, Some("/x.sqsh"))]);
    let (entered, _) = node.run(&mut phase);
    assert!(entered[0]
        .as_ref()
        .is_err_and(|e| e.starts_with("failed to start container")));

    // a task cannot change into the working directory
    let mut node = Node::new("fail-join", 1);
    node.host.fail_chdir = true;
    let mut phase = node.prepare(&[(IMAGE, Some("/x.sqsh")), (OptionId::Workdir, Some("/nope"))]);
    let (entered, _) = node.run(&mut phase);
    assert!(entered[0]
        .as_ref()
        .is_err_and(|e| e.starts_with("couldn't chdir to /nope")));

    // export fails
    let mut node = Node::new("fail-save", 1);
    node.enroot.failing = vec!["export"];
    let mut phase = node.prepare(&[(IMAGE, Some("/x.sqsh")), (OptionId::Save, Some("out.sqsh"))]);
    let (_, finished) = node.run(&mut phase);
    assert_eq!(
        finished,
        Err("failed to export container pyxis_42.3 to out.sqsh".to_owned())
    );
}

#[test]
fn export_on_the_first_node_only_and_relative_to_the_job_cwd() {
    let node = Node::new("save", 1);
    let mut phase = node.prepare(&[(IMAGE, Some("/x.sqsh")), (OptionId::Save, Some("out.sqsh"))]);
    let _ = node.run(&mut phase);
    assert!(node
        .enroot
        .calls()
        .contains(&"enroot export -f -o /home/u/out.sqsh pyxis_42.3".to_owned()));

    let mut node = Node::new("save-node1", 1);
    node.slurm.node = 1;
    let mut phase = node.prepare(&[(IMAGE, Some("/x.sqsh")), (OptionId::Save, Some("out.sqsh"))]);
    let _ = node.run(&mut phase);
    assert!(!node.enroot.calls().iter().any(|c| c.contains("export")));
}

#[test]
fn batch_step_mounts_its_script() {
    let mut node = Node::new("batch", 1);
    node.slurm.step = crate::spank::BATCH_STEP;
    let phase = node.prepare(&[(IMAGE, Some("/x.sqsh"))]);
    let plan = plan_of(&phase);
    assert_eq!(plan.mounts.len(), 1);
    assert_eq!(plan.mounts[0].source, "/spool/job42/slurm_script");
}
