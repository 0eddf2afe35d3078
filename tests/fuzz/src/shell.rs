//! One long-lived `sh` per fuzzing process, fed scripts on stdin: forking a shell per
//! input would cap the conf-script target at a few hundred executions per second.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;

use spank_pyxis::core::bytes;

struct Shell {
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

static SHELL: Mutex<Option<Shell>> = Mutex::new(None);

fn spawn() -> Shell {
    let mut child = Command::new("sh")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sh");
    let stdin = child.stdin.take().expect("sh stdin");
    let stdout = BufReader::new(child.stdout.take().expect("sh stdout"));
    Shell {
        _child: child,
        stdin,
        stdout,
    }
}

/// Runs `script` (no NUL bytes; its output must have none either) in a subshell of the
/// shared `sh` and returns what it printed. The script is written as the plugin writes
/// the conf script: mapped bytes (`core::bytes`) become the original bytes. A syntax
/// error ends the subshell, not the shell; a shell that died is a finding.
pub fn run(script: &str) -> Vec<u8> {
    assert!(!script.contains('\0'));
    let mut guard = SHELL.lock().unwrap_or_else(|p| p.into_inner());
    let sh = guard.get_or_insert_with(spawn);
    // a here-document would interpret the script; eval of a quoted word would not show
    // what sh reads from a file. So the script is written as it is, inside ( ), and a
    // NUL after the subshell marks the end of its output.
    let input = format!("(\n{script}\n) 2>/dev/null </dev/null\nprintf '\\000'\n");
    sh.stdin
        .write_all(&bytes::encode(&input))
        .expect("sh is alive");
    sh.stdin.flush().expect("sh is alive");
    let mut out = Vec::new();
    sh.stdout.read_until(0, &mut out).expect("sh output");
    assert_eq!(out.pop(), Some(0), "sh ended while running {script:?}");
    out
}
