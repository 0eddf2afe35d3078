//! Whole steps without Slurm or enroot: scripted fakes of the three seams record every
//! call, and each test walks a step through `init_post_opt` → `user_init` →
//! `task_init` of every task → `task_exit` of every task, the way slurmstepd does.
//! Tasks are simulated one after another in this process; the shared state is the real
//! anonymous mapping, the runtime directory a real private temp directory.

mod bytes;
mod fakes;

use fakes::Node;

use super::*;
use crate::core::args::OptionId;
use crate::core::plan::{DirectSupport, Rootfs, Source};
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
    // the node was probed (it cannot start directly: created, as pyxis); each task
    // opens the helper's namespaces and joins; the last one releases it
    let host = node.host.calls();
    assert!(host[0].starts_with("probe PATH="), "{host:?}");
    assert_eq!(
        host[1..],
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
    let mut node = Node::new("import", 1);
    node.keys.push("image_cache_path=none".into());
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
    let opens = node.host.opens().len();
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
    assert_eq!(
        node.host.opens(),
        vec![format!("open {pid}"), format!("open {pid}")]
    );
}

#[test]
fn a_container_that_stops_while_being_attached_is_started_again() {
    // five steps of one name at once (concurrency.bats W2): under the name lock the
    // creator finds another step's container running, which exits before its namespaces
    // are opened; the step starts the stopped filesystem instead of failing
    let mut node = Node::new("attach-gone", 1);
    node.host.gone.push(4242);
    node.enroot.lists.replace(vec![
        "NAME PID\n".into(),
        "NAME PID\npyxis_dev 4242 sh\n".into(),
        "NAME PID\npyxis_dev\n".into(),
    ]);
    let mut phase = node.prepare(&[(IMAGE, Some("/x.sqsh")), (NAME, Some("dev"))]);
    assert!(matches!(plan_of(&phase).rootfs, Rootfs::Create(_)));
    let (entered, _) = node.run(&mut phase);
    assert_eq!(entered, vec![Ok(())]);
    let calls = node.enroot.calls_in(&node.rt());
    assert_eq!(
        calls,
        vec![
            "enroot list -f".to_owned(),
            "enroot list -f".to_owned(),
            "enroot list -f".to_owned(),
            format!("{START} pyxis_dev sh -c kill -STOP $$ ; exit 0"),
        ]
    );
    let pid = std::process::id();
    assert_eq!(
        node.host.opens(),
        vec!["open 4242".to_owned(), format!("open {pid}")]
    );

    // in user_init the same: a listed container that is gone is not attached to, and
    // one that was removed meanwhile is created
    let mut node = Node::new("attach-removed", 1);
    node.host.gone.push(4242);
    node.enroot.lists.replace(vec![
        "NAME PID\npyxis_dev 4242 sh\n".into(),
        "NAME PID\n".into(),
    ]);
    let phase = node.prepare(&[(IMAGE, Some("/x.sqsh")), (NAME, Some("dev"))]);
    assert!(matches!(plan_of(&phase).rootfs, Rootfs::Create(_)));
}

#[test]
fn direct_start_keeps_the_helper_until_the_end() {
    let mut node = Node::new("direct", 2);
    node.host.direct = FUSE;
    node.host.stopped_group = true;
    *node.host.group_polls.borrow_mut() = 3;
    let image = node.image_file();
    let mut phase = node.prepare(&[(IMAGE, Some(image.as_str()))]);
    assert!(matches!(plan_of(&phase).rootfs, Rootfs::Direct(_)));
    let _ = node.run(&mut phase);
    let pid = std::process::id();
    assert_eq!(
        node.enroot.calls_in(&node.rt()),
        vec![format!("{START} {image} sh -c kill -STOP $$ ; exit 0")]
    );
    assert!(!node.host.calls().contains(&format!("release {pid}")));
    // the helper's group is killed and awaited, 5 ms between looks, so slurmstepd
    // finds the step's processes gone
    let host = node.host.calls();
    let end = host
        .iter()
        .position(|c| *c == format!("kill-if-stopped {pid}"))
        .unwrap();
    let alive = format!("session-alive? {pid}");
    let sleep = "sleep 5 ms".to_owned();
    assert_eq!(
        host[end + 1..],
        [
            alive.clone(),
            sleep.clone(),
            alive.clone(),
            sleep.clone(),
            alive.clone(),
            sleep,
            alive
        ]
    );
}

#[test]
fn a_group_that_never_goes_costs_only_the_bound() {
    let mut node = Node::new("group-bound", 1);
    node.host.direct = FUSE;
    node.host.stopped_group = true;
    *node.host.group_polls.borrow_mut() = u32::MAX;
    let image = node.image_file();
    let mut phase = node.prepare(&[(IMAGE, Some(image.as_str()))]);
    let (entered, finished) = node.run(&mut phase);
    assert_eq!((entered, finished), (vec![Ok(())], Ok(())));
    let sleeps = node
        .host
        .calls()
        .iter()
        .filter(|c| *c == "sleep 5 ms")
        .count();
    assert_eq!(sleeps, 500, "2.5 s in 5 ms looks");
}

#[test]
fn a_missing_squashfs_file_is_reported_by_enroot_create_as_in_pyxis() {
    let mut node = Node::new("direct-missing", 1);
    node.host.direct = FUSE;
    node.enroot.failing = vec!["create"];
    let mut phase = node.prepare(&[(IMAGE, Some("./.i3-not-a-tag"))]);
    assert!(matches!(plan_of(&phase).rootfs, Rootfs::Direct(_)));
    let (entered, _) = node.run(&mut phase);
    assert_eq!(
        entered,
        vec![Err(
            "failed to create container filesystem for image: ./.i3-not-a-tag".to_owned()
        )]
    );
    let calls = node.enroot.calls_in(&node.rt());
    assert_eq!(
        calls,
        vec!["enroot create --force --name pyxis_42.3 ./.i3-not-a-tag".to_owned()]
    );
}

const FUSE: DirectSupport = DirectSupport::Available {
    native_overlay: false,
};
const DIGEST: &str = "sha256:abababababababababababababababababababababababababababababababab";
const ENTRY: &str =
    "<cache>/sha256-abababababababababababababababababababababababababababababababab.sqsh";
const REGISTRY: &str = "127.0.0.1:5000#a/b:1";

fn cache_files(node: &Node) -> Vec<String> {
    let dir = node.root.join("cache").join(node.slurm.uid.to_string());
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn registry_image_is_imported_once_into_the_cache_then_started_directly() {
    let mut node = Node::new("cache-direct", 1);
    node.host.direct = DirectSupport::Available {
        native_overlay: true,
    };
    let mut phase = node.prepare(&[(IMAGE, Some(REGISTRY))]);
    assert!(matches!(
        plan_of(&phase).rootfs,
        Rootfs::Direct(Source::Cached { .. })
    ));
    let (entered, finished) = node.run(&mut phase);
    assert_eq!((entered, finished), (vec![Ok(())], Ok(())));
    let hex = DIGEST.trim_start_matches("sha256:");
    assert_eq!(
        node.enroot.calls_in(&node.rt()),
        vec![
            format!("enroot digest docker://{REGISTRY}"),
            format!("enroot import --output <cache>/.sha256-{hex}.42.3.<pid>.tmp docker://{REGISTRY}@{DIGEST}"),
            format!("{START} {ENTRY} sh -c kill -STOP $$ ; exit 0 [native overlay]"),
        ]
    );
    phase.close();
    // the entry only: no temporary, no lock left
    assert_eq!(
        cache_files(&node),
        vec!["commit.lock".to_owned(), format!("sha256-{hex}.sqsh")]
    );

    // the next step (any job) of the user: the digest is checked, nothing imported
    node.enroot.calls.borrow_mut().clear();
    node.slurm.step = 4;
    let mut phase = node.prepare(&[(IMAGE, Some(REGISTRY))]);
    let _ = node.run(&mut phase);
    let start4 = START.replace("42.3", "42.4");
    assert_eq!(
        node.enroot.calls_in(&node.rt()),
        vec![
            format!("enroot digest docker://{REGISTRY}"),
            format!("{start4} {ENTRY} sh -c kill -STOP $$ ; exit 0 [native overlay]"),
        ]
    );
    phase.close();

    // pinned by digest: no enroot call at all before the start
    node.enroot.calls.borrow_mut().clear();
    node.slurm.step = 5;
    let pinned = format!("{REGISTRY}@{DIGEST}");
    let mut phase = node.prepare(&[(IMAGE, Some(pinned.as_str()))]);
    let _ = node.run(&mut phase);
    let calls = node.enroot.calls_in(&node.rt());
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].contains(ENTRY), "{calls:?}");
    phase.close();
}

#[test]
fn named_and_saved_containers_create_from_the_cache_entry() {
    let node = Node::new("cache-named", 1);
    let mut phase = node.prepare(&[(IMAGE, Some(REGISTRY)), (NAME, Some("dev"))]);
    let _ = node.run(&mut phase);
    let calls = node.enroot.calls_in(&node.rt());
    assert_eq!(calls[0], "enroot list -f");
    assert_eq!(calls[1], format!("enroot digest docker://{REGISTRY}"));
    assert!(
        calls[3].starts_with("enroot import --output <cache>/."),
        "{calls:?}"
    );
    assert_eq!(calls[4], format!("enroot create --name pyxis_dev {ENTRY}"));
    // a second named container of the same image: no import
    let mut phase = node.prepare(&[(IMAGE, Some(REGISTRY)), (NAME, Some("other"))]);
    node.enroot.calls.borrow_mut().clear();
    let _ = node.run(&mut phase);
    let calls = node.enroot.calls_in(&node.rt());
    assert!(!calls.iter().any(|c| c.contains("import")), "{calls:?}");
    assert!(calls.contains(&format!("enroot create --name pyxis_other {ENTRY}")));
}

#[test]
fn without_a_digest_or_with_the_cache_off_the_image_is_imported_as_pyxis_does() {
    for (tag, keys, failing) in [
        ("cache-nodigest", vec![], vec!["digest"]),
        ("cache-off", vec!["image_cache_size=0"], vec![]),
    ] {
        let mut node = Node::new(tag, 1);
        node.host.direct = FUSE;
        node.keys.extend(keys.iter().map(|k| k.to_string()));
        node.enroot.failing = failing;
        let mut phase = node.prepare(&[(IMAGE, Some(REGISTRY))]);
        assert!(matches!(
            plan_of(&phase).rootfs,
            Rootfs::Create(Source::Import { .. })
        ));
        let _ = node.run(&mut phase);
        let calls = node.enroot.calls_in(&node.rt());
        assert!(
            calls.contains(&format!(
                "enroot import --output <rt>/42.3.squashfs docker://{REGISTRY}"
            )),
            "{tag}: {calls:?}"
        );
    }
}

#[test]
fn a_failed_import_leaves_nothing_in_the_cache() {
    let mut node = Node::new("cache-fail", 1);
    node.enroot.failing = vec!["import"];
    let mut phase = node.prepare(&[(IMAGE, Some(REGISTRY))]);
    let (entered, _) = node.run(&mut phase);
    assert!(
        entered[0]
            .as_ref()
            .unwrap_err()
            .contains("failed to import docker image"),
        "{entered:?}"
    );
    phase.close();
    assert_eq!(cache_files(&node), Vec::<String>::new());
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
    // the helper it forked was never published: task_exit kills what may be left of it
    assert!(node
        .host
        .calls()
        .contains(&format!("kill-unpublished {}", std::process::id())));

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
