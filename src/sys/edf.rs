//! Finding and reading environment definition files as the job user, for
//! `crate::core::edf`. Runs in srun/sbatch/salloc (already the user) and in
//! slurmstepd's `init_post_opt` (root, before the step exists): there the file is opened
//! with the filesystem ids of the job user (`setfsuid(2)`/`setfsgid(2)`, which only
//! affect the calling thread and drop root's file capabilities while set), and the open
//! file must then be readable by that user through its owner, group (the job's groups)
//! or other bits, so root's own supplementary groups grant nothing. Only regular files
//! of at most [`MAX_FILE_SIZE`] bytes are read; a FIFO or device never blocks the read.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::{geteuid, setfsgid, setfsuid, Gid, Uid};

use crate::core::bytes;
use crate::core::edf::{self, Edf, EdfError, MAX_FILE_SIZE};

/// Who reads, and where names are looked up.
#[derive(Clone, Debug)]
pub struct Reader {
    pub uid: u32,
    pub gid: u32,
    /// The job's supplementary groups (only consulted when the caller is root).
    pub groups: Vec<u32>,
    /// The user's home directory (`~/.edf`).
    pub home: Option<PathBuf>,
    /// The site's directory (plugstack `environment_path=`).
    pub admin_dir: Option<PathBuf>,
    /// Where relative paths resolve: the job's working directory.
    pub cwd: Option<PathBuf>,
}

/// True when the argument names a file rather than an environment on the search path.
fn is_path(name: &str) -> bool {
    name.contains('/') || name.ends_with(".toml")
}

impl Reader {
    /// Reads `name` and its bases and merges them; `lookup` gives `${VAR}` values.
    pub fn resolve(
        &self,
        name: &str,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Edf, EdfError> {
        let mut load = |n: &str, _parent: Option<&str>| self.load(n);
        edf::resolve(name, &mut load, lookup)
    }

    /// Where `name` may be, in search order.
    fn candidates(&self, name: &str) -> Vec<PathBuf> {
        // `name` may stand for bytes that are not UTF-8 (crate::core::bytes).
        if is_path(name) {
            let p = bytes::to_path(name);
            return vec![match &self.cwd {
                Some(cwd) if p.is_relative() => cwd.join(p),
                _ => p,
            }];
        }
        let file = bytes::to_path(&format!("{name}.toml"));
        let mut dirs = Vec::new();
        if let Some(home) = &self.home {
            dirs.push(home.join(".edf"));
        }
        dirs.extend(self.admin_dir.clone());
        dirs.into_iter().map(|d| d.join(&file)).collect()
    }

    fn load(&self, name: &str) -> Result<(String, String), EdfError> {
        let candidates = self.candidates(name);
        for path in &candidates {
            if let Some(text) = self.read(path)? {
                return Ok((path.display().to_string(), text));
            }
        }
        Err(EdfError::NotFound {
            name: name.to_owned(),
            searched: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// The file's text; `None` when it does not exist.
    fn read(&self, path: &Path) -> Result<Option<String>, EdfError> {
        let err = |message: String| EdfError::Read {
            file: path.display().to_string(),
            message,
        };
        let mut file = match self.open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(err(e.to_string())),
        };
        let meta = file.metadata().map_err(|e| err(e.to_string()))?;
        if !meta.file_type().is_file() {
            return Err(err("not a regular file".to_owned()));
        }
        if !self.may_read(&meta) {
            return Err(err("Permission denied".to_owned()));
        }
        if meta.len() > MAX_FILE_SIZE {
            return Err(err(format!("larger than {MAX_FILE_SIZE} bytes")));
        }
        let mut raw = Vec::new();
        (&mut file)
            .take(MAX_FILE_SIZE + 1)
            .read_to_end(&mut raw)
            .map_err(|e| err(e.to_string()))?;
        if u64::try_from(raw.len()).unwrap_or(u64::MAX) > MAX_FILE_SIZE {
            return Err(err(format!("larger than {MAX_FILE_SIZE} bytes")));
        }
        String::from_utf8(raw)
            .map(|text| Some(bytes::from_utf8_text(text)))
            .map_err(|_| err("not UTF-8 text (TOML files are UTF-8)".to_owned()))
    }

    /// Opens with the user's filesystem ids when the caller is root.
    fn open(&self, path: &Path) -> std::io::Result<File> {
        let mut options = OpenOptions::new();
        options
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC);
        if !geteuid().is_root() {
            return options.open(path);
        }
        let old_gid = setfsgid(Gid::from_raw(self.gid));
        let old_uid = setfsuid(Uid::from_raw(self.uid));
        let opened = options.open(path);
        setfsuid(old_uid);
        setfsgid(old_gid);
        opened
    }

    /// The permission bits grant the job user read access (root's groups do not count).
    fn may_read(&self, meta: &std::fs::Metadata) -> bool {
        if !geteuid().is_root() || self.uid == 0 {
            return true;
        }
        let mode = meta.mode();
        if meta.uid() == self.uid {
            mode & 0o400 != 0
        } else if meta.gid() == self.gid || self.groups.contains(&meta.gid()) {
            mode & 0o040 != 0
        } else {
            mode & 0o004 != 0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::ffi::OsStringExt;

    fn reader(dir: &Path) -> Reader {
        Reader {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            groups: vec![],
            home: Some(dir.join("home")),
            admin_dir: Some(dir.join("site")),
            cwd: Some(dir.to_path_buf()),
        }
    }

    fn tempdir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "pyxis-edf-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        fs::create_dir_all(d.join("home/.edf")).unwrap();
        fs::create_dir_all(d.join("site")).unwrap();
        d
    }

    fn rand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    }

    #[test]
    fn search_path_sizes_and_kinds() {
        let d = tempdir();
        let r = reader(&d);
        fs::write(
            d.join("home/.edf/mine.toml"),
            "image = \"home\"\nbase_environment = \"site\"\n",
        )
        .unwrap();
        fs::write(d.join("site/mine.toml"), "image = \"site-shadowed\"\n").unwrap();
        fs::write(d.join("site/site.toml"), "workdir = \"/w\"\n").unwrap();
        fs::write(d.join("rel.toml"), "image = \"rel\"\n").unwrap();
        let none = |_: &str| None;
        let e = r.resolve("mine", &none).unwrap();
        assert_eq!(
            (e.image.as_deref(), e.workdir.as_deref()),
            (Some("home"), Some("/w"))
        );
        assert_eq!(
            r.resolve("rel.toml", &none).unwrap().image.as_deref(),
            Some("rel")
        );
        assert_eq!(
            r.resolve("./rel.toml", &none).unwrap().image.as_deref(),
            Some("rel")
        );
        let abs = d.join("rel.toml").display().to_string();
        assert_eq!(
            r.resolve(&abs, &none).unwrap().image.as_deref(),
            Some("rel")
        );
        let missing = r.resolve("nope", &none).unwrap_err().to_string();
        assert!(
            missing.contains("nope: no such environment file")
                && missing.contains("site/nope.toml"),
            "{missing}"
        );
        fs::write(d.join("big.toml"), "#".repeat(70 * 1024)).unwrap();
        assert!(r
            .resolve("big.toml", &none)
            .unwrap_err()
            .to_string()
            .contains("larger than 65536 bytes"));
        assert!(r
            .resolve(&d.join("site").display().to_string(), &none)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        fs::write(d.join("bad.toml"), [0xff, 0xfe]).unwrap();
        assert!(r
            .resolve("bad.toml", &none)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
        // A file name that is not UTF-8, and a value with a reserved code point of
        // core::bytes: both exact (the value is what enroot would get).
        fs::write(
            d.join(std::ffi::OsString::from_vec(b"e\xff.toml".to_vec())),
            "image = \"/i\u{10fe80}\"\n",
        )
        .unwrap();
        let e = r.resolve(&bytes::decode(b"e\xff.toml"), &none).unwrap();
        assert_eq!(
            bytes::encode(e.image.as_deref().unwrap()),
            "/i\u{10fe80}".as_bytes()
        );
        fs::remove_dir_all(&d).unwrap();
    }
}
