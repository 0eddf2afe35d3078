//! End-to-end checks of the enroot double with real namespaces: create → start → list → export →
//! remove on a tiny busybox image, and the stop contract pyxis relies on (the started process
//! stops itself inside the container and stays the same pid).
//!
//! The scenarios run as the current user and, when the tests run as root, again as `nobody` to
//! cover the unprivileged path slurmstepd uses. They skip (with a printed reason) when user
//! namespaces, squashfs-tools or a static busybox are not available.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chown, geteuid, Gid, Pid, Uid};

const ENROOT: &str = env!("CARGO_BIN_EXE_enroot");
const BUSYBOX: &str = "/bin/busybox";

/// Why the environment cannot run these tests, if it cannot.
fn missing_prerequisite() -> Option<String> {
    for tool in ["unsquashfs", "mksquashfs", "unshare"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!("{BUSYBOX} (a static busybox) is missing"));
    }
    let userns = Command::new("unshare")
        .args(["--user", "--map-root-user", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !userns {
        return Some("user namespaces are not available".to_string());
    }
    None
}

macro_rules! require_prerequisites {
    () => {
        if let Some(reason) = missing_prerequisite() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

/// A private set of enroot directories, possibly used as another user.
struct Scenario {
    base: PathBuf,
    /// Run the double as this uid/gid (root only).
    as_user: Option<(u32, u32)>,
}

impl Scenario {
    fn new(tag: &str, as_user: Option<(u32, u32)>) -> Self {
        let base =
            std::env::temp_dir().join(format!("enroot-double-it-{tag}-{}", std::process::id()));
        let _ = Command::new("rm").arg("-rf").arg(&base).status();
        for d in ["data", "run", "cache", "sysconf", "out", "home"] {
            fs::create_dir_all(base.join(d)).unwrap();
        }
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        if let Some((uid, gid)) = as_user {
            for d in ["data", "run", "cache", "out", "home"] {
                chown(
                    &base.join(d),
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                )
                .unwrap();
            }
        }
        let s = Scenario { base, as_user };
        s.build_image();
        s
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.base.join(rel)
    }

    fn image(&self) -> PathBuf {
        self.path("busybox.sqsh")
    }

    /// A squashfs with a static busybox as /bin/sh and a recognisable /etc/os-release.
    fn build_image(&self) {
        let root = self.path("rootfs");
        fs::create_dir_all(root.join("bin")).unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "cat", "ls", "id", "touch", "sleep", "pwd", "grep", "env",
        ] {
            symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        fs::write(
            root.join("etc/os-release"),
            "NAME=\"Double Busybox\"\nID=busybox\n",
        )
        .unwrap();
        fs::write(root.join("etc/environment"), "IMAGE_VAR=\"from image\"\n").unwrap();
        let ok = Command::new("mksquashfs")
            .arg(&root)
            .arg(self.image())
            .args(["-all-root", "-noappend", "-no-progress", "-quiet"])
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok, "mksquashfs failed");
        fs::set_permissions(self.image(), fs::Permissions::from_mode(0o644)).unwrap();
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(ENROOT);
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HOME", self.path("home"))
            .env("TERM", "xterm")
            .env("ENROOT_SYSCONF_PATH", self.path("sysconf"))
            .env("ENROOT_DATA_PATH", self.path("data"))
            .env("ENROOT_RUNTIME_PATH", self.path("run"))
            .env("ENROOT_CACHE_PATH", self.path("cache"))
            .env("ENROOT_TEMP_PATH", self.path("out"))
            .current_dir(self.path("out"))
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.as_user {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "enroot {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails_with(&self, args: &[&str], message: &str) {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "enroot {args:?}: {stderr}");
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("[ERROR] ") && l.contains(message)),
            "enroot {args:?}: expected {message:?} in {stderr:?}"
        );
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // Containers may hold read-only or mode-0 directories; make them removable first.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+rwX")
            .arg(&self.base)
            .status();
        let _ = fs::remove_dir_all(&self.base);
    }
}

fn lifecycle(s: &Scenario) {
    let image = s.image();
    let image = image.to_str().unwrap();
    s.ok(&["create", "--name", "busy", image]);
    assert_eq!(s.ok(&["list"]), "busy\n");

    let os_release = s.ok(&["start", "busy", "cat", "/etc/os-release"]);
    assert!(os_release.contains("Double Busybox"), "{os_release}");

    let env = s.ok(&["start", "-e", "CLI_VAR=1", "busy", "env"]);
    assert!(env.lines().any(|l| l == "IMAGE_VAR=from image"), "{env}");
    assert!(env.lines().any(|l| l == "CLI_VAR=1"), "{env}");
    assert!(env.lines().any(|l| l == "TERM=xterm"), "{env}");
    assert!(!env.lines().any(|l| l.starts_with("ENROOT_")), "{env}");

    // Read-only by default, writable on request; edits survive export and re-import.
    let out = s.run(&["start", "busy", "touch", "/ro-test"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Read-only file system"));
    s.ok(&[
        "start",
        "--rw",
        "busy",
        "sh",
        "-c",
        "echo edited > /edit.txt",
    ]);

    let fancy = s.ok(&["list", "-f"]);
    let lines: Vec<&str> = fancy.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{fancy}");
    assert_eq!(lines[1..], ["busy"], "{fancy}");

    let exported = s.path("out/busy-export.sqsh");
    let exported = exported.to_str().unwrap();
    s.ok(&["export", "-o", exported, "busy"]);
    s.fails_with(&["export", "-o", exported, "busy"], "File already exists");
    s.ok(&["export", "-f", "-o", exported, "busy"]);
    s.ok(&["create", "-n", "copy", exported]);
    assert_eq!(s.ok(&["start", "copy", "cat", "/edit.txt"]), "edited\n");
    assert_eq!(s.ok(&["start", exported, "cat", "/edit.txt"]), "edited\n");

    s.ok(&["remove", "-f", "busy", "copy"]);
    assert_eq!(s.ok(&["list"]), "");
    s.fails_with(&["remove", "-f", "busy"], "No such file or directory");
}

fn stop_contract(s: &Scenario) {
    let image = s.image();
    s.ok(&["create", "--name", "pyxis_1.0", image.to_str().unwrap()]);
    let conf = s.path("out/conf.sh");
    fs::write(
        &conf,
        "mounts() {\n\techo \"tmpfs /my\\040tmpfs x-create=dir\"\n}\n\
         hooks() {\n\techo 'exec \"$@\"' > ${ENROOT_ROOTFS}/etc/rc.local\n}\n\
         environ() {\n\t[ -n \"${JOB_VAR-}\" ] && echo \"JOB_VAR=${JOB_VAR}\" || :\n}\n",
    )
    .unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();

    let mut child = s
        .command(&[
            "start",
            "--conf",
            conf.to_str().unwrap(),
            "pyxis_1.0",
            "sh",
            "-c",
            "kill -STOP $$ ; exit 0",
        ])
        .env("JOB_VAR", "job value")
        .env("ENROOT_REMAP_ROOT", "y")
        .spawn()
        .unwrap();
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    let status = waitpid(pid, Some(WaitPidFlag::WUNTRACED)).unwrap();
    assert_eq!(
        status,
        WaitStatus::Stopped(pid, Signal::SIGSTOP),
        "container did not stop"
    );

    let ns = |p: &str, kind: &str| fs::read_link(format!("/proc/{p}/ns/{kind}")).unwrap();
    let pid_s = pid.to_string();
    assert_ne!(ns(&pid_s, "mnt"), ns("self", "mnt"));
    assert_ne!(ns(&pid_s, "user"), ns("self", "user"));
    assert_eq!(ns(&pid_s, "net"), ns("self", "net"));
    let uid_map = fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let fields: Vec<&str> = uid_map.split_whitespace().collect();
    let uid = s.as_user.map_or(geteuid().as_raw(), |(u, _)| u);
    assert_eq!(fields, ["0", &uid.to_string(), "1"]);

    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    let vars: Vec<&[u8]> = environ.split(|c| *c == 0).collect();
    assert!(vars.contains(&&b"JOB_VAR=job value"[..]));
    assert!(vars.contains(&&b"HOME=/root"[..]));
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert!(cwd.is_absolute(), "{cwd:?}");
    assert!(
        !cwd.starts_with(s.path("data")),
        "cwd must be container-relative: {cwd:?}"
    );

    let fancy = s.ok(&["list", "-f"]);
    let second: Vec<&str> = fancy
        .lines()
        .nth(1)
        .unwrap()
        .split(' ')
        .filter(|t| !t.is_empty())
        .collect();
    assert_eq!(second[..2], ["pyxis_1.0", pid_s.as_str()], "{fancy}");

    let inside = s.ok(&[
        "exec",
        &pid_s,
        "sh",
        "-c",
        "grep -c ' /my\\\\040tmpfs ' /proc/self/mountinfo; cat /etc/rc.local",
    ]);
    assert_eq!(inside, "1\nexec \"$@\"\n");

    kill(pid, Signal::SIGCONT).unwrap();
    assert!(
        child.wait().unwrap().success(),
        "the stopped command must exit 0"
    );
    s.ok(&["remove", "-f", "pyxis_1.0"]);
}

fn error_messages(s: &Scenario) {
    let image = s.image();
    let image = image.to_str().unwrap();
    s.fails_with(
        &["create", "/does/not/exist.sqsh"],
        "No such file or directory: /does/not/exist.sqsh",
    );
    s.fails_with(&["create", "/etc/hostname"], "Invalid image format");
    s.fails_with(&["create", "-n", "a/b", image], "Invalid argument: a/b");
    s.ok(&["create", "-n", "dup", image]);
    s.fails_with(&["create", "-n", "dup", image], "File already exists");
    s.ok(&["create", "-f", "-n", "dup", image]);
    s.fails_with(&["start", "missing", "true"], "No such file or directory");
    s.fails_with(&["start", "a/b", "true"], "Invalid argument: a/b");
    s.fails_with(
        &["start", "-m", "/nonexistent/x:/mnt", "dup", "true"],
        "failed to mount",
    );
    s.fails_with(
        &["start", "-m", "/tmp:../home", "dup", "true"],
        "cross-device link",
    );
    s.fails_with(
        &["export", "-o", "/tmp/never.sqsh", "missing"],
        "No such file or directory",
    );
    assert_eq!(s.run(&["list", "--bogus"]).status.code(), Some(1));
    assert_eq!(s.run(&["list", "--help"]).status.code(), Some(0));
    assert_eq!(s.run(&[]).status.code(), Some(1));
    s.ok(&["remove", "-f", "dup"]);
}

#[test]
fn lifecycle_as_current_user() {
    require_prerequisites!();
    lifecycle(&Scenario::new("life", None));
}

#[test]
fn stop_contract_as_current_user() {
    require_prerequisites!();
    stop_contract(&Scenario::new("stop", None));
}

#[test]
fn error_messages_as_current_user() {
    require_prerequisites!();
    error_messages(&Scenario::new("errors", None));
}

/// The unprivileged path slurmstepd takes: only possible when the tests run as root.
#[test]
fn unprivileged_user() {
    require_prerequisites!();
    if !geteuid().is_root() {
        eprintln!("skipping: switching to an unprivileged user needs root");
        return;
    }
    let nobody = (65534, 65534);
    lifecycle(&Scenario::new("nobody-life", Some(nobody)));
    stop_contract(&Scenario::new("nobody-stop", Some(nobody)));
}

#[test]
fn version_is_bare() {
    let dir = std::env::temp_dir().join(format!("enroot-double-it-version-{}", std::process::id()));
    let out = Command::new(ENROOT)
        .arg("version")
        .env("ENROOT_SYSCONF_PATH", OsStr::new("/nonexistent"))
        .env("ENROOT_DATA_PATH", &dir)
        .env("ENROOT_RUNTIME_PATH", &dir)
        .env("ENROOT_CACHE_PATH", &dir)
        .output()
        .unwrap();
    let _ = fs::remove_dir_all(&dir);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "4.1.2-double\n");
}

/// Public registries are refused before any network access.
#[test]
fn public_registries_are_never_contacted() {
    let s = Scenario {
        base: std::env::temp_dir().join(format!("enroot-double-it-public-{}", std::process::id())),
        as_user: None,
    };
    for d in ["data", "run", "cache", "sysconf", "out", "home"] {
        fs::create_dir_all(s.path(d)).unwrap();
    }
    let refused = "only contacts loopback registries";
    s.fails_with(&["import", "docker://ubuntu:18.04"], refused);
    s.fails_with(
        &[
            "import",
            "-o",
            "x.sqsh",
            "docker://nvcr.io#nvidia/pytorch:23.01-py3",
        ],
        refused,
    );
    s.fails_with(&["load", "docker://ghcr.io/a/b:1"], refused);
    s.fails_with(&["digest", "docker://quay.io/a/b"], refused);
    s.fails_with(
        &["import", "docker://Not A Reference"],
        "Invalid image reference",
    );
    s.fails_with(&["import", "podman://x"], "Invalid argument");
}

/// A private docker-registry on a free loopback port, stopped on drop.
struct Registry {
    child: std::process::Child,
    addr: String,
    dir: PathBuf,
}

impl Registry {
    fn start() -> Option<Registry> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let addr = format!("127.0.0.1:{port}");
        let dir = std::env::temp_dir().join(format!("enroot-double-it-reg-{}", std::process::id()));
        fs::create_dir_all(dir.join("storage")).ok()?;
        let config = dir.join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.join("storage").display()
            ),
        )
        .ok()?;
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let registry = Registry { child, addr, dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(&registry.addr).is_ok() {
                return Some(registry);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn installed(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// import/load/digest against a throwaway loopback registry holding an image built with umoci.
#[test]
fn loopback_registry_import() {
    require_prerequisites!();
    if let Some(tool) = ["docker-registry", "skopeo", "umoci"]
        .into_iter()
        .find(|t| !installed(t))
    {
        eprintln!("skipping: {tool} is not installed");
        return;
    }
    let Some(registry) = Registry::start() else {
        eprintln!("skipping: docker-registry did not start");
        return;
    };
    let s = Scenario::new("registry", None);
    let run = |program: &str, args: &[&OsStr]| {
        let out = Command::new(program)
            .args(args)
            .current_dir(s.path("out"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let os = |s: &str| OsStr::new(s).to_os_string();
    // An image with a working directory, an environment variable and an entrypoint.
    run("umoci", &[&os("init"), &os("--layout"), &os("layout")]);
    run("umoci", &[&os("new"), &os("--image"), &os("layout:t")]);
    run(
        "umoci",
        &[
            &os("unpack"),
            &os("--rootless"),
            &os("--image"),
            &os("layout:t"),
            &os("bundle"),
        ],
    );
    run(
        "cp",
        &[
            &os("-a"),
            &s.path("rootfs/.").into_os_string(),
            &os("bundle/rootfs/"),
        ],
    );
    run(
        "umoci",
        &[
            &os("repack"),
            &os("--image"),
            &os("layout:t"),
            &os("bundle"),
        ],
    );
    run(
        "umoci",
        &[
            &os("config"),
            &os("--image"),
            &os("layout:t"),
            &os("--config.env=REG_VAR=from registry"),
            &os("--config.workingdir=/work"),
            &os("--config.entrypoint=/bin/sh"),
            &os("--config.cmd=-c"),
            &os("--config.cmd=echo default"),
        ],
    );
    let dest = format!("docker://{}/double/busybox:1", registry.addr);
    run(
        "skopeo",
        &[
            &os("--insecure-policy"),
            &os("copy"),
            &os("--quiet"),
            &os("--dest-tls-verify=false"),
            &os("--format=v2s2"),
            &os("oci:layout:t"),
            &os(&dest),
        ],
    );

    let uri = format!("docker://{}#double/busybox:1", registry.addr);
    let image = s.path("out/imported.sqsh");
    let image = image.to_str().unwrap();
    s.ok(&["import", "-o", image, &uri]);
    s.fails_with(&["import", "-o", image, &uri], "File already exists");
    s.ok(&["create", "-n", "imported", image]);
    assert_eq!(s.ok(&["start", "imported"]), "default\n");
    let out = s.ok(&["start", "imported", "-c", "pwd; echo $REG_VAR"]);
    assert_eq!(out, "/work\nfrom registry\n");

    s.ok(&["load", "-n", "loaded", &uri]);
    assert_eq!(s.ok(&["start", "loaded", "-c", "echo loaded"]), "loaded\n");

    let digest = s.ok(&["digest", &uri]);
    assert!(
        digest.starts_with("sha256:") && digest.trim().len() == 71,
        "{digest}"
    );

    let missing = format!("docker://{}#double/missing:1", registry.addr);
    s.fails_with(&["import", "-o", "missing.sqsh", &missing], "404 Not Found");
    assert!(!s.path("out/missing.sqsh").exists());
}
