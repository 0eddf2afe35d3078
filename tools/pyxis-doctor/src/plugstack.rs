//! plugstack.conf as Slurm reads it (`src/common/spank.c`): one entry per line,
//! `required|optional PATH [ARG ...]` or `include GLOB`, whitespace-separated, `#`
//! starts a comment. Pure parsing and glob matching; `node.rs` reads the files.

/// One meaningful line of a plugstack file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// `required|optional PATH ARGS...`
    Plugin {
        line: usize,
        required: bool,
        path: String,
        args: Vec<String>,
    },
    /// `include GLOB`
    Include { line: usize, pattern: String },
    /// Anything Slurm would refuse (it fails the whole stack).
    Invalid { line: usize, text: String },
}

/// The entries of one file, in order.
pub fn parse(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("");
        let mut tokens = content.split_whitespace();
        let Some(first) = tokens.next() else {
            continue;
        };
        let rest: Vec<String> = tokens.map(str::to_owned).collect();
        let entry = match (first, rest.split_first()) {
            ("required" | "optional", Some((path, args))) => Entry::Plugin {
                line,
                required: first == "required",
                path: path.clone(),
                args: args.to_vec(),
            },
            ("include", Some((pattern, []))) => Entry::Include {
                line,
                pattern: pattern.clone(),
            },
            _ => Entry::Invalid {
                line,
                text: raw.trim().to_owned(),
            },
        };
        out.push(entry);
    }
    out
}

/// True when `path` names the pyxis plugin (`.../spank_pyxis.so` or just the name,
/// which Slurm looks up in PluginDir).
pub fn is_pyxis(path: &str) -> bool {
    path.rsplit('/').next() == Some("spank_pyxis.so")
}

/// glob(3)-style match of one path component: `*`, `?` and literal characters
/// (`[...]` classes are treated literally; plugstack includes use `*`).
pub fn component_matches(pattern: &str, name: &str) -> bool {
    // A leading dot is only matched by a literal dot, as in glob(3).
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative wildcard matching with one backtrack point (the last `*`).
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || Some(&c) == n.get(ni) => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// Splits an include pattern into the directory and the last component's pattern;
/// `None` when a wildcard sits in a directory part (the doctor does not expand those).
pub fn split_pattern(pattern: &str) -> Option<(&str, &str)> {
    let (dir, last) = match pattern.rsplit_once('/') {
        Some(("", last)) => ("/", last),
        Some(split) => split,
        None => (".", pattern),
    };
    (!dir.contains(['*', '?', '['])).then_some((dir, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plugins_includes_comments_and_garbage() {
        let text = "# comment\n\
                    include /etc/slurm/plugstack.conf.d/*\n\
                    \n\
                    required /usr/lib/slurm/spank_pyxis.so runtime_path=/run/pyxis container_scope=job # why\n\
                    optional other.so\n\
                    requird typo.so\n\
                    include a b\n";
        assert_eq!(
            parse(text),
            vec![
                Entry::Include {
                    line: 2,
                    pattern: "/etc/slurm/plugstack.conf.d/*".into()
                },
                Entry::Plugin {
                    line: 4,
                    required: true,
                    path: "/usr/lib/slurm/spank_pyxis.so".into(),
                    args: vec![
                        "runtime_path=/run/pyxis".into(),
                        "container_scope=job".into()
                    ],
                },
                Entry::Plugin {
                    line: 5,
                    required: false,
                    path: "other.so".into(),
                    args: vec![],
                },
                Entry::Invalid {
                    line: 6,
                    text: "requird typo.so".into()
                },
                Entry::Invalid {
                    line: 7,
                    text: "include a b".into()
                },
            ]
        );
    }

    #[test]
    fn recognises_the_plugin_by_file_name() {
        assert!(is_pyxis("/usr/lib/x86_64-linux-gnu/slurm/spank_pyxis.so"));
        assert!(is_pyxis("spank_pyxis.so"));
        assert!(!is_pyxis("/usr/lib/slurm/spank_pyxis.so.bak"));
        assert!(!is_pyxis("/opt/spank_pyxis.so/x.so"));
    }

    #[test]
    fn matches_like_glob() {
        assert!(component_matches("*", "pyxis.conf"));
        assert!(!component_matches("*", ".hidden"));
        assert!(component_matches(".*", ".hidden"));
        assert!(component_matches("*.conf", "pyxis.conf"));
        assert!(!component_matches("*.conf", "pyxis.conf.orig"));
        assert!(component_matches("p?xis*.conf", "pyxis-x.conf"));
        assert!(component_matches("a*b*c", "aXbYbZc"));
        assert!(!component_matches("a*b*c", "aXbYbZ"));
        assert!(component_matches("pyxis.conf", "pyxis.conf"));
        assert!(!component_matches("pyxis.conf", "pyxis.con"));
    }

    #[test]
    fn splits_include_patterns() {
        assert_eq!(
            split_pattern("/etc/slurm/plugstack.conf.d/*"),
            Some(("/etc/slurm/plugstack.conf.d", "*"))
        );
        assert_eq!(split_pattern("/x.conf"), Some(("/", "x.conf")));
        assert_eq!(split_pattern("x.conf"), Some((".", "x.conf")));
        assert_eq!(split_pattern("/etc/*/x.conf"), None);
    }
}
