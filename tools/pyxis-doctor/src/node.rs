//! The Slurm and enroot side of the node check: where plugstack.conf loads the plugin
//! and with which arguments, whether that `spank_pyxis.so` fits the running slurmd, and
//! which enroot is installed and what it can do.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spank_pyxis::core::config::{parse_config, Config};

use crate::elf::{self, split_version};
use crate::plugstack::{self, Entry};
use crate::report::Check;
use crate::version::{
    parse_release, Release, ENROOT_DIGEST_LOAD, ENROOT_MIN, ENROOT_NATIVE_OVERLAYFS,
};

/// Where the doctor looks for programs, after the caller's PATH: slurmd's usual PATH.
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long `slurmd -V` or `enroot version` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(20);

/// Include nesting the doctor follows (Slurm has no limit; a loop would be endless).
const MAX_INCLUDE_DEPTH: usize = 8;

/// The caller's PATH followed by [`SYSTEM_PATH`].
pub fn search_path() -> String {
    match std::env::var("PATH") {
        Ok(p) if !p.is_empty() => format!("{p}:{SYSTEM_PATH}"),
        _ => SYSTEM_PATH.to_owned(),
    }
}

/// Runs `program args` with a deadline; its stdout and stderr, or why it did not run.
pub fn probe_output(program: &Path, args: &[&str]) -> Result<(bool, String), String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", program.display()))?;
    let deadline = Instant::now() + PROBE_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} {} did not finish within {} s",
                    program.display(),
                    args.join(" "),
                    PROBE_TIMEOUT.as_secs()
                ));
            }
        }
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cannot read the output of {}: {e}", program.display()))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

/// What slurm.conf says about the plugin stack.
#[derive(Debug, Default)]
pub struct SlurmConf {
    pub path: PathBuf,
    pub plugstack: Option<PathBuf>,
    pub plugin_dirs: Vec<PathBuf>,
}

/// `PlugStackConfig` and `PluginDir` from slurm.conf (`SLURM_CONF` or
/// /etc/slurm/slurm.conf); keys are case-insensitive in Slurm.
pub fn read_slurm_conf() -> SlurmConf {
    let path = std::env::var_os("SLURM_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/etc/slurm/slurm.conf"));
    let mut conf = SlurmConf {
        path: path.clone(),
        ..SlurmConf::default()
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return conf;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim().to_ascii_lowercase().as_str() {
            "plugstackconfig" => conf.plugstack = Some(PathBuf::from(value)),
            "plugindir" => conf.plugin_dirs = value.split(':').map(PathBuf::from).collect(),
            _ => {}
        }
    }
    conf
}

/// The pyxis line found in the stack.
#[derive(Debug, Clone)]
pub struct PyxisLine {
    pub file: PathBuf,
    pub line: usize,
    pub required: bool,
    pub path: String,
    pub args: Vec<String>,
}

/// Everything the walk over the stack found.
#[derive(Debug, Default)]
pub struct Stack {
    pub files: Vec<PathBuf>,
    pub pyxis: Vec<PyxisLine>,
    pub problems: Vec<String>,
}

/// Reads `file` and its includes (relative include patterns are relative to the
/// including file's directory, as in Slurm).
pub fn walk_stack(file: &Path, depth: usize, stack: &mut Stack) {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            stack
                .problems
                .push(format!("cannot read {}: {e}", file.display()));
            return;
        }
    };
    stack.files.push(file.to_owned());
    let dir = file.parent().unwrap_or(Path::new("/"));
    for entry in plugstack::parse(&text) {
        match entry {
            Entry::Plugin {
                line,
                required,
                path,
                args,
            } if plugstack::is_pyxis(&path) => stack.pyxis.push(PyxisLine {
                file: file.to_owned(),
                line,
                required,
                path,
                args,
            }),
            Entry::Plugin { .. } => {}
            Entry::Invalid { line, text } => stack.problems.push(format!(
                "{}:{line}: Slurm cannot parse '{text}' (every srun and slurmd fails)",
                file.display()
            )),
            Entry::Include { line, pattern } => {
                if depth >= MAX_INCLUDE_DEPTH {
                    stack.problems.push(format!(
                        "{}:{line}: includes nested deeper than {MAX_INCLUDE_DEPTH}",
                        file.display()
                    ));
                    continue;
                }
                let pattern = if pattern.starts_with('/') {
                    pattern
                } else {
                    dir.join(&pattern).to_string_lossy().into_owned()
                };
                let Some((idir, last)) = plugstack::split_pattern(&pattern) else {
                    stack.problems.push(format!(
                        "{}:{line}: include {pattern}: wildcards in directories are not checked",
                        file.display()
                    ));
                    continue;
                };
                let mut names: Vec<String> = match std::fs::read_dir(idir) {
                    Ok(rd) => rd
                        .filter_map(Result::ok)
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| plugstack::component_matches(last, n))
                        .collect(),
                    Err(e) => {
                        stack.problems.push(format!(
                            "{}:{line}: include {pattern}: cannot read {idir}: {e}",
                            file.display()
                        ));
                        continue;
                    }
                };
                names.sort();
                for n in names {
                    walk_stack(&Path::new(idir).join(n), depth + 1, stack);
                }
            }
        }
    }
}

/// The plugstack check; returns the configuration in force (pyxis's defaults when the
/// line is missing or broken) and the plugin path it names.
pub fn check_plugstack(
    explicit: Option<&Path>,
    slurm: &SlurmConf,
    out: &mut Vec<Check>,
) -> (Config, Option<PathBuf>) {
    let file = explicit
        .map(Path::to_owned)
        .or_else(|| slurm.plugstack.clone())
        .unwrap_or_else(|| {
            slurm
                .path
                .parent()
                .unwrap_or(Path::new("/etc/slurm"))
                .join("plugstack.conf")
        });
    let mut stack = Stack::default();
    walk_stack(&file, 0, &mut stack);
    let fix_link = "ln -s /usr/share/pyxis/pyxis.conf /etc/slurm/plugstack.conf.d/pyxis.conf \
                    (plugstack.conf needs 'include /etc/slurm/plugstack.conf.d/*'), then restart slurmd";
    let mut config = Config::default();
    let mut so = None;
    match stack.pyxis.as_slice() {
        [] => out.push(Check::fail(
            "plugstack",
            format!(
                "no line of {} loads spank_pyxis.so{}",
                stack
                    .files
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
                    .chars()
                    .take(300)
                    .collect::<String>(),
                if stack.problems.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", stack.problems.join("; "))
                }
            ),
            fix_link,
        )),
        [one] => {
            let place = format!("{}:{}", one.file.display(), one.line);
            let keys: Vec<&str> = one
                .args
                .iter()
                .map(|a| a.split_once('=').map_or(a.as_str(), |(k, _)| k))
                .collect();
            match parse_config(&one.args) {
                Err(e) => out.push(Check::fail(
                    "plugstack",
                    format!("{place}: pyxis: {e} (slurmd and every containerised step fail)"),
                    "remove or correct that argument; the keys are listed in docs/admin-guide.md",
                )),
                Ok(c) if !stack.problems.is_empty() => {
                    config = c;
                    out.push(Check::fail(
                        "plugstack",
                        stack.problems.join("; "),
                        "correct the plugstack files",
                    ));
                }
                Ok(c) => {
                    config = c;
                    let detail = format!(
                        "{place}: {} {}{}",
                        if one.required { "required" } else { "optional" },
                        one.path,
                        if keys.is_empty() {
                            " (all defaults)".to_owned()
                        } else {
                            format!(" with keys {}", keys.join(", "))
                        }
                    );
                    if one.required {
                        out.push(Check::pass("plugstack", detail));
                    } else {
                        out.push(Check::warn(
                            "plugstack",
                            detail,
                            "use 'required': with 'optional' a plugin that fails to load is skipped and \
                             --container-* options are rejected as unknown",
                        ));
                    }
                }
            }
            so = Some(resolve_plugin(&one.path, &slurm.plugin_dirs));
        }
        many => out.push(Check::fail(
            "plugstack",
            format!(
                "spank_pyxis.so is loaded {} times: {}",
                many.len(),
                many.iter()
                    .map(|l| format!("{}:{}", l.file.display(), l.line))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "keep exactly one line (Slurm refuses to register the same options twice)",
        )),
    }
    (config, so)
}

/// A plugin path as Slurm resolves it: absolute, or looked up in PluginDir.
fn resolve_plugin(path: &str, plugin_dirs: &[PathBuf]) -> PathBuf {
    if path.starts_with('/') {
        return PathBuf::from(path);
    }
    let defaults = [
        PathBuf::from("/usr/lib/x86_64-linux-gnu/slurm"),
        PathBuf::from("/usr/lib64/slurm"),
        PathBuf::from("/usr/local/lib/slurm"),
    ];
    let dirs = if plugin_dirs.is_empty() {
        &defaults[..]
    } else {
        plugin_dirs
    };
    dirs.iter()
        .map(|d| d.join(path))
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(path))
}

/// The plugin file and its Slurm release against the running slurmd.
pub fn check_release(so: Option<&Path>, out: &mut Vec<Check>) {
    let build = spank_sys::SLURM_VERSION_NUMBER;
    let (plugin, source) = match so {
        Some(so) => match std::fs::read(so) {
            Ok(bytes) => match elf::plugin_version(&bytes) {
                Ok(v) => (v, format!("{} is built for", so.display())),
                Err(e) => {
                    out.push(Check::fail(
                        "plugin",
                        format!("{}: {e}", so.display()),
                        "reinstall the pyxis-rs package (or make install)",
                    ));
                    return;
                }
            },
            Err(e) => {
                out.push(Check::fail(
                    "plugin",
                    format!("cannot read {}: {e}", so.display()),
                    "install the pyxis-rs package, or correct the path in plugstack.conf",
                ));
                return;
            }
        },
        None => (build, "this pyxis-doctor was built with".to_owned()),
    };
    if let Some(so) = so {
        let mode = std::fs::metadata(so).map(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode()
        });
        match mode {
            Ok(m) if m & 0o004 == 0 => out.push(Check::fail(
                "plugin",
                format!(
                    "{} has mode {:04o}: srun and sbatch, which run as the user, cannot load it",
                    so.display(),
                    m & 0o7777
                ),
                format!("chmod 0644 {}", so.display()),
            )),
            _ => out.push(Check::pass(
                "plugin",
                format!("{} is readable", so.display()),
            )),
        }
    }
    let (maj, min, mic) = split_version(plugin);
    let slurmd = plugstack_which("slurmd");
    let Some(slurmd) = slurmd else {
        out.push(Check::warn(
            "slurm-release",
            format!("{source} Slurm {maj}.{min:02}.{mic}; no slurmd on this node to compare with"),
            "run pyxis-doctor on a compute node",
        ));
        return;
    };
    match probe_output(&slurmd, &["-V"]).map(|(_, text)| (parse_release(&text), text)) {
        Ok((Some(Release(a, b, c)), _)) if (a, b) == (maj, min) => out.push(Check::pass(
            "slurm-release",
            format!("{source} Slurm {maj}.{min:02}.{mic}; slurmd is {a}.{b:02}.{c}"),
        )),
        Ok((Some(Release(a, b, c)), _)) => out.push(Check::fail(
            "slurm-release",
            format!(
                "{source} Slurm {maj}.{min:02}.{mic} but slurmd is {a}.{b:02}.{c}: Slurm refuses the plugin \
                 (\"Incompatible Slurm plugin version\") and, with 'required', slurmd does not start"
            ),
            format!("install the pyxis-rs package built for Slurm {a}.{b:02} (or rebuild against its spank.h)"),
        )),
        Ok((None, text)) => out.push(Check::warn(
            "slurm-release",
            format!("cannot read a release from '{} -V': {}", slurmd.display(), text.trim()),
            "check the Slurm installation",
        )),
        Err(e) => out.push(Check::warn("slurm-release", e, "check the Slurm installation")),
    }
}

/// `name` on [`search_path`].
pub fn plugstack_which(name: &str) -> Option<PathBuf> {
    spank_pyxis::sys::probe::find_program(std::ffi::OsStr::new(&search_path()), name)
}

/// enroot: found, its version, and the features the configuration asks for.
pub fn check_enroot(config: &Config, out: &mut Vec<Check>) -> Option<Release> {
    let Some(enroot) = plugstack_which("enroot") else {
        out.push(Check::fail(
            "enroot",
            format!("no enroot on {}", search_path()),
            "install enroot (>= 3.1.0; >= 4.0 for the image cache) on every compute node",
        ));
        return None;
    };
    let release = match probe_output(&enroot, &["version"]) {
        Ok((true, text)) => parse_release(&text),
        Ok((false, text)) => {
            out.push(Check::fail(
                "enroot",
                format!("'{} version' failed: {}", enroot.display(), text.trim()),
                "reinstall enroot",
            ));
            return None;
        }
        Err(e) => {
            out.push(Check::fail("enroot", e, "reinstall enroot"));
            return None;
        }
    };
    let Some(release) = release else {
        out.push(Check::warn(
            "enroot",
            format!("{}: cannot read its version", enroot.display()),
            "check that it is NVIDIA's enroot",
        ));
        return None;
    };
    if release < ENROOT_MIN {
        out.push(Check::fail(
            "enroot",
            format!(
                "enroot {release} at {} is older than {ENROOT_MIN}",
                enroot.display()
            ),
            "upgrade enroot",
        ));
        return Some(release);
    }
    out.push(Check::pass(
        "enroot",
        format!("enroot {release} at {}", enroot.display()),
    ));
    let digest = release >= ENROOT_DIGEST_LOAD;
    if config.use_enroot_load && release < ENROOT_NATIVE_OVERLAYFS {
        out.push(Check::fail(
            "enroot-features",
            format!(
                "use_enroot_load=1 needs enroot >= {ENROOT_NATIVE_OVERLAYFS}, this is {release}"
            ),
            "upgrade enroot or remove use_enroot_load from the plugstack line",
        ));
    } else if config.image_cache().is_some() && !digest {
        out.push(Check::warn(
            "enroot-features",
            format!("enroot {release} has no 'enroot digest': registry images are imported every time instead of from the image cache"),
            "upgrade enroot to >= 4.0",
        ));
    } else {
        let mut have = vec!["import", "create", "start"];
        if digest {
            have.extend(["digest", "load"]);
        }
        out.push(Check::pass(
            "enroot-features",
            format!("enroot {release} offers {}", have.join(", ")),
        ));
    }
    Some(release)
}
