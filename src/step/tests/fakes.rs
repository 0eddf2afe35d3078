//! Scripted fakes of the three seams, and a simulated node that walks a step through
//! its hooks the way slurmstepd does.

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::super::seams::{Enroot, Host, Io, Slurm};
use super::super::{Step, StepError};
use crate::core::args::{Args, OptionId, Unshare};
use crate::core::config::parse_config;
use crate::core::envfilter::EnvPairs;
use crate::core::plan::DirectSupport;
use crate::spank::boundary::Rendered;
use crate::spank::SpankError;
use crate::state::Phase;
use crate::sys::container::{Helper, Spawned, StartError};
use crate::sys::fs::FsError;
use crate::sys::ns::{ContainerNamespaces, NsError};
use crate::sys::runner::{Credentials, Invocation, RunError, Watch};
use crate::sys::seccomp::SeccompError;

pub(super) struct FakeSlurm {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) step: u32,
    pub(super) node: u32,
    pub(super) tasks: u32,
    pub(super) env: RefCell<Vec<OsString>>,
}

impl Slurm for FakeSlurm {
    fn job_uid(&self) -> Result<u32, SpankError> {
        Ok(self.uid)
    }
    fn job_gid(&self) -> Result<u32, SpankError> {
        Ok(self.gid)
    }
    fn supplementary_gids(&self) -> Result<Vec<u32>, SpankError> {
        Ok(vec![self.gid])
    }
    fn job_id(&self) -> Result<u32, SpankError> {
        Ok(42)
    }
    fn step_id(&self) -> Result<u32, SpankError> {
        Ok(self.step)
    }
    fn node_id(&self) -> Result<u32, SpankError> {
        Ok(self.node)
    }
    fn local_task_count(&self) -> Result<u32, SpankError> {
        Ok(self.tasks)
    }
    fn total_task_count(&self) -> Result<u32, SpankError> {
        Ok(self.tasks)
    }
    fn job_env(&self) -> Result<Vec<OsString>, SpankError> {
        Ok(self.env.borrow().clone())
    }
    fn job_argv(&self) -> Result<Vec<OsString>, SpankError> {
        Ok(vec!["/spool/job42/slurm_script".into()])
    }
    fn getenv(&self, name: &str) -> Result<Option<OsString>, SpankError> {
        let prefix = format!("{name}=");
        Ok(self.env.borrow().iter().find_map(|e| {
            e.as_bytes()
                .strip_prefix(prefix.as_bytes())
                .map(|v| OsString::from_vec(v.to_vec()))
        }))
    }
    fn setenv(&self, name: &OsStr, value: &OsStr, overwrite: bool) -> Result<bool, SpankError> {
        let mut env = self.env.borrow_mut();
        let mut prefix = name.to_owned();
        prefix.push("=");
        let pos = env
            .iter()
            .position(|e| e.as_encoded_bytes().starts_with(prefix.as_encoded_bytes()));
        let mut entry = prefix;
        entry.push(value);
        match pos {
            Some(_) if !overwrite => return Ok(false),
            Some(i) => env[i] = entry,
            None => env.push(entry),
        }
        Ok(true)
    }
    fn unsetenv(&self, name: &str) -> Result<(), SpankError> {
        let prefix = format!("{name}=");
        self.env
            .borrow_mut()
            .retain(|e| !e.to_str().is_some_and(|e| e.starts_with(&prefix)));
        Ok(())
    }
}

/// enroot and the importer: answers per subcommand, every argv recorded.
#[derive(Default)]
pub(super) struct FakeEnroot {
    pub(super) calls: RefCell<Vec<String>>,
    /// Each call's argv, byte for byte.
    pub(super) argvs: RefCell<Vec<Vec<OsString>>>,
    /// The `--conf` script of each `start`, byte for byte.
    pub(super) confs: RefCell<Vec<Vec<u8>>>,
    /// The plugstack key bounding each call, in order.
    pub(super) bounds: RefCell<Vec<&'static str>>,
    /// `list -f` answers, one per call (the last one repeats).
    pub(super) lists: RefCell<Vec<String>>,
    /// Subcommands (first argument) that fail.
    pub(super) failing: Vec<&'static str>,
    pub(super) helper: u32,
    pub(super) importer_path: String,
    /// What `enroot digest` prints.
    pub(super) digest: String,
    /// `import --output PATH` writes this many bytes at PATH (0: nothing).
    pub(super) import_bytes: usize,
}

impl FakeEnroot {
    pub(super) fn new() -> FakeEnroot {
        FakeEnroot {
            lists: RefCell::new(vec!["NAME PID STATE\n".into()]),
            helper: std::process::id(),
            importer_path: "/imp/sqsh".into(),
            digest: format!("sha256:{}\n", "ab".repeat(32)),
            import_bytes: 4096,
            ..FakeEnroot::default()
        }
    }

    fn record(&self, inv: &Invocation) -> Result<String, RunError> {
        self.argvs.borrow_mut().push(inv.args.clone());
        let line = std::iter::once(inv.program.clone())
            .chain(inv.args.iter().cloned())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let sub = inv
            .args
            .first()
            .and_then(|a| a.to_str())
            .unwrap_or_default()
            .to_owned();
        let line = match inv
            .env
            .iter()
            .any(|(k, v)| k == "ENROOT_NATIVE_OVERLAYFS" && v == "y")
        {
            true => format!("{line} [native overlay]"),
            false => line,
        };
        self.calls.borrow_mut().push(line);
        // Like enroot's mksquashfs, a failing import may leave part of its output.
        if sub == "import" && self.import_bytes > 0 {
            if let Some(out) = inv.args.get(2) {
                std::fs::write(out, vec![7u8; self.import_bytes]).unwrap();
            }
        }
        if self.failing.iter().any(|f| *f == sub) {
            return Err(RunError::Exit {
                program: "enroot".into(),
                code: 1,
                log: format!("[ERROR] {sub} failed\n"),
            });
        }
        if sub == "list" {
            let mut lists = self.lists.borrow_mut();
            let out = if lists.len() > 1 {
                lists.remove(0)
            } else {
                lists.first().cloned().unwrap_or_default()
            };
            return Ok(out);
        }
        Ok(String::new())
    }

    pub(super) fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    /// The recorded calls with the temp paths of this test replaced by `<rt>` (and
    /// `<cache>`), the importing pid by `<pid>`.
    pub(super) fn calls_in(&self, rt: &Path) -> Vec<String> {
        let cache = rt
            .parent()
            .unwrap()
            .join("cache")
            .join(rt.file_name().unwrap());
        let cache = cache.to_string_lossy().into_owned();
        let rt = rt.to_string_lossy().into_owned();
        let pid = format!(".{}.tmp", std::process::id());
        self.calls()
            .into_iter()
            .map(|c| c.replace(&cache, "<cache>").replace(&pid, ".<pid>.tmp"))
            .map(|c| c.replace(&rt, "<rt>"))
            .map(|c| match c.split_once(".enroot-conf.") {
                Some((head, tail)) => format!(
                    "{head}.enroot-conf.<pid>{}",
                    tail.trim_start_matches(|ch: char| ch.is_ascii_digit())
                ),
                None => c,
            })
            .collect()
    }
}

impl Enroot for FakeEnroot {
    fn run(
        &self,
        inv: &Invocation,
        _: &Credentials,
        watch: &mut Watch<'_>,
    ) -> Result<String, RunError> {
        self.bounds.borrow_mut().push(watch.key);
        self.record(inv)
    }
    fn run_split(
        &self,
        inv: &Invocation,
        c: &Credentials,
        watch: &mut Watch<'_>,
    ) -> Result<(String, String), RunError> {
        let log = self.run(inv, c, watch)?;
        if inv.args.first().is_some_and(|a| a == "digest") {
            return Ok((self.digest.clone(), log));
        }
        Ok((format!("{}\n", self.importer_path), log))
    }
    fn start(
        &self,
        inv: &Invocation,
        _: &Credentials,
        watch: &Watch<'_>,
        spawned: &dyn Fn(Spawned),
    ) -> Result<Helper, StartError> {
        self.bounds.borrow_mut().push(watch.key);
        // enroot's process exists before it can fail
        spawned(Spawned {
            pid: self.helper,
            start: 1,
        });
        if let Some(conf) = inv.args.get(2) {
            self.confs.borrow_mut().push(std::fs::read(conf).unwrap());
        }
        self.record(inv).map_err(StartError::Spawn)?;
        Ok(Helper {
            pid: self.helper,
            log: "entrypoint said hello\n".into(),
        })
    }
}

/// The task process: namespaces of this test process (harmless to open), everything
/// that would change the process recorded instead.
pub(super) struct FakeHost {
    pub(super) calls: RefCell<Vec<String>>,
    /// Each `chdir`'s directory, byte for byte.
    pub(super) chdirs: RefCell<Vec<PathBuf>>,
    pub(super) fail_chdir: bool,
    /// The helper was still stopped at the end and led its process group.
    pub(super) stopped_group: bool,
    /// How many polls find the killed group still alive.
    pub(super) group_polls: RefCell<u32>,
    /// What the direct-start probe answers.
    pub(super) direct: DirectSupport,
    /// Processes that exited after `enroot list` named them: opening them fails.
    pub(super) gone: Vec<u32>,
}

impl Default for FakeHost {
    fn default() -> FakeHost {
        FakeHost {
            calls: RefCell::default(),
            chdirs: RefCell::default(),
            fail_chdir: false,
            stopped_group: false,
            group_polls: RefCell::new(0),
            direct: DirectSupport::Unavailable("no squashfuse in the test".into()),
            gone: Vec::new(),
        }
    }
}

impl FakeHost {
    pub(super) fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }
    /// The namespace opens among the calls (`open <pid>`), in order.
    pub(super) fn opens(&self) -> Vec<String> {
        self.calls()
            .into_iter()
            .filter(|c| c.starts_with("open"))
            .collect()
    }
    fn push(&self, s: String) {
        self.calls.borrow_mut().push(s);
    }
}

impl Host for FakeHost {
    fn open_namespaces(&self, pid: u32, _: Unshare) -> Result<ContainerNamespaces, NsError> {
        self.push(format!("open {pid}"));
        if self.gone.contains(&pid) {
            return Err(NsError::Open {
                kind: crate::sys::ns::NsKind::User,
                source: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        ContainerNamespaces::own_as_container()
    }
    fn join(&self, _: &ContainerNamespaces) -> Result<(), NsError> {
        self.push("join".into());
        Ok(())
    }
    fn helper_cwd(&self, _: u32) -> Result<OsString, FsError> {
        Ok("/workdir".into())
    }
    fn helper_environ(&self, _: u32) -> Result<EnvPairs, FsError> {
        Ok(vec![("PATH".into(), "/container/bin".into())])
    }
    fn chdir(&self, dir: &Path) -> std::io::Result<()> {
        self.push(format!("chdir {}", dir.display()));
        self.chdirs.borrow_mut().push(dir.to_owned());
        if self.fail_chdir {
            return Err(std::io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(())
    }
    fn install_seccomp(&self) -> Result<(), SeccompError> {
        self.push("seccomp".into());
        Ok(())
    }
    fn release(&self, pid: u32) -> nix::Result<()> {
        self.push(format!("release {pid}"));
        Ok(())
    }
    fn kill_stopped_helper(&self, pid: u32, _: u32) -> Option<u32> {
        self.push(format!("kill-if-stopped {pid}"));
        self.stopped_group.then_some(pid)
    }
    fn kill_unpublished_helper(&self, helper: Spawned, _: u32) -> Option<u32> {
        self.push(format!("kill-unpublished {}", helper.pid));
        Some(helper.pid)
    }
    fn direct_support(&self, path: Option<&OsStr>, _: u32, _: u32) -> DirectSupport {
        self.push(format!(
            "probe PATH={}",
            path.unwrap_or_default().to_string_lossy()
        ));
        self.direct.clone()
    }
    fn session_alive(&self, pgid: u32) -> bool {
        let mut left = self.group_polls.borrow_mut();
        self.push(format!("session-alive? {pgid}"));
        if *left == 0 {
            return false;
        }
        *left -= 1;
        true
    }
    fn sleep(&self, d: std::time::Duration) {
        self.push(format!("sleep {} ms", d.as_millis()));
    }
}

/// One simulated node: the fakes, a private runtime_path, the configuration.
pub(super) struct Node {
    pub(super) slurm: FakeSlurm,
    pub(super) enroot: FakeEnroot,
    pub(super) host: FakeHost,
    pub(super) root: PathBuf,
    pub(super) keys: Vec<String>,
}

impl Node {
    pub(super) fn new(tag: &str, tasks: u32) -> Node {
        let root = std::env::temp_dir().join(format!("pyxis-rs-step-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(root.join("cache")).unwrap();
        Node {
            slurm: FakeSlurm {
                uid: nix::unistd::geteuid().as_raw(),
                gid: nix::unistd::getegid().as_raw(),
                step: 3,
                node: 0,
                tasks,
                env: RefCell::new(vec!["PWD=/home/u".into(), "PMI_RANK=0".into()]),
            },
            enroot: FakeEnroot::new(),
            host: FakeHost::default(),
            keys: vec![
                format!("runtime_path={}", root.display()),
                format!("image_cache_path={}", root.join("cache").display()),
            ],
            root,
        }
    }

    pub(super) fn io(&self) -> Io<'_> {
        Io {
            slurm: &self.slurm,
            enroot: &self.enroot,
            host: &self.host,
        }
    }

    /// An existing squashfs file (its content does not matter to the fakes).
    pub(super) fn image_file(&self) -> String {
        let path = self.root.join("img.sqsh");
        std::fs::write(&path, b"hsqs").unwrap();
        path.to_string_lossy().into_owned()
    }

    pub(super) fn rt(&self) -> PathBuf {
        self.root.join(self.slurm.uid.to_string())
    }

    pub(super) fn marker(&self) -> PathBuf {
        self.root
            .join("jobs")
            .join(format!("42.{}", self.slurm.step))
    }

    /// `init_post_opt` and `user_init`.
    pub(super) fn prepare(&self, opts: &[(OptionId, Option<&str>)]) -> Phase {
        let mut args = Args::default();
        for (id, v) in opts {
            args.apply(*id, *v).unwrap();
        }
        let config = parse_config(&self.keys).unwrap();
        let mut phase = match Step::new(&self.slurm, config, args) {
            Ok(step) => Phase::Configured(step),
            Err(e) => Phase::SetupFailed(Rendered::of(&StepError::from(e))),
        };
        phase.prepare(self.io());
        phase
    }

    /// Every task's `task_init`, then every `task_exit`; the task results.
    pub(super) fn run(&self, phase: &mut Phase) -> (Vec<Result<(), String>>, Result<(), String>) {
        let entered = (0..self.slurm.tasks)
            .map(|_| phase.enter(self.io()).map_err(|e| e.to_string()))
            .collect();
        let mut finished = Ok(());
        for _ in 0..self.slurm.tasks {
            if let Err(e) = phase.task_exited(self.io()) {
                finished = Err(e.to_string());
            }
        }
        (entered, finished)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
