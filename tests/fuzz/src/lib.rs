//! Fuzz targets of pyxis-rs: one function per parser of user or enroot strings, each
//! taking the fuzzer's raw bytes and asserting the parser's invariants (a failed
//! assertion is a panic, which afl records as a crash). Not part of the plugin: the
//! afl binaries in `fuzz_targets/` call these, and `tests/replay.rs` runs every
//! committed seed and finding through them under plain `cargo test`.
//!
//! The parsers run inside srun and root-owned slurmstepd, so besides "no panic" the
//! targets check what an attacker would try to break: values reach enroot's
//! configuration script and fstab lines intact and cannot inject shell code or extra
//! lines, error messages (logged by slurmstepd) stay on one line, and names that are
//! accepted cannot escape enroot's container directory.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use spank_pyxis::core::args::{is_identifier, ArgError, Args, OptionId};
use spank_pyxis::core::bytes;
use spank_pyxis::core::cache::{self, CacheFile, Digest};
use spank_pyxis::core::conf_script::{sh_quote, ConfScript};
use spank_pyxis::core::config::{parse_config, parse_size};
use spank_pyxis::core::envfilter::{self, EnrootEnvInput};
use spank_pyxis::core::hints;
use spank_pyxis::core::image::{classify, ImageSource};
use spank_pyxis::core::list::{find_container, ContainerState};
use spank_pyxis::core::mount::{fstab_escape, parse_mounts, MountEntry};
use spank_pyxis::core::naming::{self, JobId, StepId};
use spank_pyxis::core::text::printable;

mod edf;
mod shell;

pub use edf::edf;

/// Splits `data` at NUL bytes (C strings never contain one) into strings, mapping
/// bytes that are not UTF-8 as the option callback and the env reads do.
fn fields(data: &[u8]) -> Vec<String> {
    data.split(|b| *b == 0).map(bytes::decode).collect()
}

/// A log or error line must not contain anything that starts a new line or moves
/// the cursor: slurmd's log and the user's terminal show it as one line.
fn assert_one_line(line: &str) {
    assert!(
        !line.chars().any(char::is_control),
        "a message has control characters: {line:?}"
    );
}

fn assert_error_lines(e: &ArgError) {
    for line in e.log_lines() {
        assert_one_line(&line);
    }
}

/// What every accepted `Args` satisfies, whatever the input.
fn assert_args_invariants(args: &Args) {
    assert_option_invariants(args, 0);
    // whatever was accepted renders into a conf script (no rejection at start time)
    let script = ConfScript {
        mounts: args.mounts.clone(),
        disable_entrypoint: args.entrypoint == Some(false),
        env_names: args.env_names.clone(),
        env_values: args.env_values.clone(),
    };
    script.render().expect("accepted options render");
}

/// The invariants of single options, and of the mounts from index `new_mounts` on (the
/// ones the last option added: checking all of them after every option made long inputs
/// quadratic, and AFL reported them as hangs).
fn assert_option_invariants(args: &Args, new_mounts: usize) {
    if let Some(image) = &args.image {
        assert!(!image.is_empty() && bytes::encoded_len(image) < 4096);
    }
    if let Some(name) = &args.name {
        let n = &name.name;
        assert!(!n.is_empty() && n != "." && n != "..", "{n:?}");
        assert!(!n.contains('/'), "a container name with a slash: {n:?}");
        assert!(bytes::is_exact_utf8(n), "a container name not UTF-8: {n:?}");
        assert!(
            !n.chars().any(|c| c.is_whitespace() || c.is_control()),
            "{n:?}"
        );
    }
    for m in args.mounts.iter().skip(new_mounts) {
        assert_mount_invariants(m);
    }
    for name in &args.env_names {
        assert!(is_identifier(name), "--container-env accepted {name:?}");
    }
    if let Some(save) = &args.save {
        assert!(!save.is_empty() && !save.ends_with('/'), "{save:?}");
    }
    for w in args.ignored_option_warnings() {
        assert_one_line(&w);
    }
}

/// `--container-*` options in the order Slurm delivers them: each field of the input
/// is one option, its first byte choosing which and the rest its argument.
pub fn args(data: &[u8]) {
    let mut args = Args::default();
    for f in data.split(|b| *b == 0) {
        let Some((&sel, value)) = f.split_first() else {
            continue;
        };
        let id = OptionId::ALL[usize::from(sel) % OptionId::ALL.len()];
        let value = bytes::decode(value);
        let arg = (sel & 0x80 == 0).then_some(value.as_str());
        let before = args.clone();
        match args.apply(id, arg) {
            Ok(()) => {}
            Err(e) => {
                assert_error_lines(&e);
                assert_eq!(args, before, "a rejected {id:?} changed the options");
            }
        }
        let kept = if args.mounts.starts_with(&before.mounts) {
            before.mounts.len()
        } else {
            0
        };
        assert_option_invariants(&args, kept);
    }
    assert_args_invariants(&args);
}

/// `PYXIS_CONTAINER_*` aliases: the input is `NAME=VALUE` fields, read with the
/// real variable names (the first byte of each field picks one).
pub fn pyxis_env(data: &[u8]) {
    // the variables of src/core/args/env.rs (behaviour spec §4.5), in its order
    const PYXIS_ENV_VARS: [&str; 13] = [
        "PYXIS_CONTAINER_IMAGE",
        "PYXIS_CONTAINER_MOUNTS",
        "PYXIS_CONTAINER_WORKDIR",
        "PYXIS_CONTAINER_NAME",
        "PYXIS_CONTAINER_SAVE",
        "PYXIS_CONTAINER_MOUNT_HOME",
        "PYXIS_CONTAINER_REMAP_ROOT",
        "PYXIS_CONTAINER_ENTRYPOINT",
        "PYXIS_CONTAINER_ENTRYPOINT_LOG",
        "PYXIS_CONTAINER_WRITABLE",
        "PYXIS_CONTAINER_READONLY",
        "PYXIS_CONTAINER_ENV",
        "PYXIS_CONTAINER_UNSHARE",
    ];
    let mut env: Vec<(&'static str, String)> = Vec::new();
    let mut f = fields(data).into_iter();
    // first field: command-line options applied before the environment
    let mut args = Args::default();
    if let Some(first) = f.next() {
        for (i, part) in first.split('\u{1}').enumerate() {
            let id = OptionId::ALL[i % OptionId::ALL.len()];
            if !part.is_empty() {
                let _ = args.apply(id, Some(part));
            }
        }
    }
    for field in f {
        let mut chars = field.chars();
        let Some(sel) = chars.next() else { continue };
        let var = PYXIS_ENV_VARS[(sel as usize) % PYXIS_ENV_VARS.len()];
        env.push((var, chars.collect()));
    }
    let errors = args.apply_env(|name| {
        env.iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    });
    for e in &errors {
        assert_error_lines(e);
    }
    assert_args_invariants(&args);
}

fn assert_mount_invariants(m: &MountEntry) {
    for field in [&m.source, &m.target] {
        assert!(!field.is_empty() && !field.contains(','), "{m:?}");
    }
    assert!(m.flags_are_safe(), "{m:?}");
    let fields = split_fstab(&m.fstab_line());
    assert_eq!(
        fields.len(),
        3,
        "fstab line of {m:?} has {} fields",
        fields.len()
    );
    assert_eq!(unescape_fstab(&fields[0]), m.source);
    assert_eq!(unescape_fstab(&fields[1]), m.target);
    assert_eq!(fields[2], m.flags);
}

/// getmntent(3)'s field splitting, which enroot-mount uses: blanks separate fields.
fn split_fstab(line: &str) -> Vec<String> {
    assert!(
        !line.contains('\n'),
        "an fstab line with a newline: {line:?}"
    );
    line.split([' ', '\t'])
        .filter(|f| !f.is_empty())
        .map(str::to_owned)
        .collect()
}

/// getmntent(3)'s decoding of `\040`, `\011`, `\012`, `\134`.
fn unescape_fstab(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// `--container-mounts`: the whole input is one argument.
pub fn mount(data: &[u8]) {
    let arg = bytes::decode(data);
    let arg = arg.as_str();
    match parse_mounts(arg) {
        Ok(entries) => {
            assert_eq!(entries.len(), arg.split(',').count());
            for m in &entries {
                assert_mount_invariants(m);
            }
        }
        Err(e) => assert_error_lines(&ArgError::Mount(e)),
    }
    let escaped = fstab_escape(arg);
    assert!(!escaped.contains([' ', '\t', '\n']));
    assert_eq!(unescape_fstab(&escaped), arg);
}

/// plugstack.conf arguments: NUL-separated `key=value` words.
pub fn config(data: &[u8]) {
    let words = fields(data);
    match parse_config(&words) {
        Ok(config) => {
            // parsing is a function of the words: the same words give the same config
            assert_eq!(parse_config(&words).ok(), Some(config));
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    for w in &words {
        if let Some(n) = parse_size(w) {
            let _ = n;
        }
    }
}

/// `--container-image` classification and the pinned-digest forms.
pub fn image(data: &[u8]) {
    let Ok(image) = std::str::from_utf8(data) else {
        return;
    };
    match classify(image) {
        ImageSource::Squashfs(p) => {
            assert!(image.starts_with(['.', '/']));
            assert_eq!(p, image);
        }
        ImageSource::Registry { uri } => {
            assert!(
                uri.starts_with("docker://") || uri.starts_with("dockerd://"),
                "{uri:?}"
            );
            let rest = image.strip_prefix("docker://").unwrap_or(image);
            match hints::docker_to_enroot(rest).filter(|_| !image.starts_with("dockerd://")) {
                // Docker's REGISTRY/IMAGE: the first `/` after the host became enroot's `#`
                Some(to) => {
                    assert_eq!(uri, format!("docker://{to}"));
                    assert_eq!(to.replacen('#', "/", 1), rest, "{image:?}");
                }
                None => assert!(uri.ends_with(
                    image
                        .trim_start_matches("docker://")
                        .trim_start_matches("dockerd://")
                )),
            }
        }
    }
    if let Some(d) = cache::pinned_digest(image) {
        assert!(!image.starts_with(['.', '/']) && !image.starts_with("dockerd://"));
        // an image already pinned to d is imported as it is
        let ImageSource::Registry { uri } = classify(image) else {
            panic!("pinned but not a registry image: {image:?}");
        };
        assert_eq!(cache::pinned_uri(&uri, &d), uri);
    }
}

/// `enroot list -f` output: the first line of the input is the name looked up, the
/// rest the output; also the epilog's line matcher and the step file names.
pub fn list(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (name, output) = text.split_once('\n').unwrap_or((text, ""));
    match find_container(output, name) {
        Ok(ContainerState::Running(pid)) => {
            assert!(pid > 0, "pid 0 taken from {output:?}");
            assert!(!name.is_empty());
        }
        Ok(ContainerState::Stopped | ContainerState::Absent) => {}
        Err(e) => assert_one_line(&e.to_string()),
    }
    let job = JobId(u32::from(data.first().copied().unwrap_or(0)) * 7919);
    for line in output.lines() {
        if naming::epilog_matches(line, job) {
            // leading zeros in the job id match, as pyxis's sscanf("pyxis_%u_") does
            let digits = line.trim_start_matches("pyxis_").trim_start_matches('0');
            assert!(
                digits.starts_with(&format!("{job}_")) || job.0 == 0,
                "{line:?}"
            );
            assert!(!line.contains(['/', ' ', '\t']), "{line:?}");
            assert!(!line.chars().any(char::is_control), "{line:?}");
        }
        if naming::is_step_file(line, job, None) {
            assert!(!line.contains('/'), "{line:?}");
        }
    }
    // a name pyxis produces is found again in a listing that holds it
    let own = naming::container_name(
        spank_pyxis::core::config::Scope::Job,
        job,
        Some(name),
        StepId(3),
    );
    if !name.is_empty() && !name.chars().any(|c| c.is_whitespace()) {
        let listing = format!("NAME PID COMM\n{own} 42 bash\n");
        assert_eq!(
            find_container(&listing, &own),
            Ok(ContainerState::Running(42))
        );
    }
}

/// The job environment as Slurm hands it to slurmstepd: NUL-separated entries.
pub fn envfilter(data: &[u8]) {
    let entries: Vec<OsString> = data
        .split(|b| *b == 0)
        .map(|e| OsStr::from_bytes(e).to_owned())
        .collect();
    let pairs = envfilter::split_entries(&entries);
    for (n, _) in &pairs {
        assert!(!n.is_empty() && !n.as_bytes().contains(&b'='), "{n:?}");
    }
    let args = Args::default();
    let env = envfilter::enroot_env(&EnrootEnvInput {
        job_env: &entries,
        host_path: Some(OsStr::new("/usr/bin:/bin")),
        uid: 1000,
        gid: 1000,
        args: &args,
        runtime_path: Path::new("/run/pyxis"),
        version: "0.0.0",
    });
    let mut names: Vec<&OsString> = env.iter().map(|(n, _)| n).collect();
    for (n, v) in &env {
        let mut entry = n.clone();
        entry.push("=");
        entry.push(v);
        assert!(
            !envfilter::is_shell_startup(&entry),
            "shell start-up variable {n:?} reaches enroot"
        );
        assert!(!n.is_empty() && !n.as_bytes().contains(&b'='), "{n:?}");
    }
    let total = names.len();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        total,
        "duplicate names in enroot's environment"
    );
    let _ = envfilter::task_env_overrides;
    let _ = envfilter::pytorch_remap(&pairs);
}

/// `sh_quote` and the `mounts()` function of enroot's configuration script, checked
/// by a real `sh`: the quoted word must read back as the input byte for byte, and the
/// function must print each accepted mount as exactly one fstab line that decodes to
/// it. The input is `WORD\0MOUNTS`; bytes that are not UTF-8 are mapped as the option
/// callback maps them, and reach `sh` as the original bytes, as in the plugin.
pub fn conf_script(data: &[u8]) {
    let mut parts = data.splitn(2, |b| *b == 0);
    let word = parts.next().unwrap_or_default();
    let mounts = parts.next().unwrap_or_default();
    let quoted = sh_quote(&bytes::decode(word));
    let got = shell::run(&format!("printf '%s' {quoted}"));
    assert_eq!(got, word, "sh read {quoted:?} back differently");
    // option values are C strings: a NUL cannot reach the parser
    if mounts.contains(&0) {
        return;
    }
    let mounts = bytes::decode(mounts);
    let mounts = mounts.as_str();
    let Ok(entries) = parse_mounts(mounts) else {
        return;
    };
    let script = ConfScript {
        mounts: entries.clone(),
        disable_entrypoint: false,
        env_names: Vec::new(),
        env_values: Vec::new(),
    };
    let text = script.render().expect("parsed mounts render");
    let out = shell::run(&format!("{text}\nmounts"));
    let out = bytes::decode(&out);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), entries.len(), "mounts() printed {out:?}");
    for (line, m) in lines.iter().zip(&entries) {
        let f = split_fstab(line);
        assert_eq!(f.len(), 3, "{line:?}");
        assert_eq!(unescape_fstab(&f[0]), m.source);
        assert_eq!(unescape_fstab(&f[1]), m.target);
        assert_eq!(f[2], m.flags);
    }
}

/// Digests (`enroot digest` output, pinned references) and image cache file names:
/// whatever parses prints back to exactly the input.
pub fn digest(data: &[u8]) {
    if let Some(f) = CacheFile::parse(data) {
        assert_eq!(f.name().as_bytes(), data, "{f:?}");
        assert!(!f.name().contains('/'));
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(d) = Digest::parse(s) {
        assert_eq!(d.to_string(), s);
        assert_eq!(d.hex().len(), 64);
        assert_eq!(
            CacheFile::parse(format!("{}.sqsh", d.stem()).as_bytes()),
            Some(CacheFile::Entry(d))
        );
    }
    if let Some(d) = cache::parse_digest_output(s) {
        assert!(s.contains(&d.to_string()));
    }
    if let Some(d) = cache::pinned_digest(s) {
        assert!(s.ends_with(&format!("@{d}")), "{s:?}");
    }
    let _ = printable(s);
}
