//! Running GNU Parallel and bakapara side by side on the same arguments and stdin, for the
//! differential tests (`gnu_input`, `gnu_pipe`).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::bin::{bakapara, parse_lines};

pub fn run_with_stdin(mut command: Command, stdin: &[u8]) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            assert!(
                e.kind() != std::io::ErrorKind::NotFound,
                "GNU Parallel is not installed: apt-get install parallel (.ci/run does this)"
            );
            panic!("spawning {command:?}: {e}")
        });
    let mut pipe = child.stdin.take().expect("stdin pipe");
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // A run that reads no stdin closes it early: that is not a failure of the test.
        let _ = pipe.write_all(&input);
    });
    let output = child.wait_with_output().expect("waiting for the run");
    writer.join().expect("stdin writer");
    output
}

/// GNU Parallel's stdout for `parallel -k ARGS` in `dir`.
pub fn gnu(dir: &Path, args: &[&str], stdin: &[u8]) -> String {
    let mut command = Command::new("parallel");
    command
        .arg("--will-cite")
        .arg("-k")
        .args(args)
        .current_dir(dir)
        .env("PARALLEL_HOME", dir.join(".parallel"));
    let output = run_with_stdin(command, stdin);
    assert!(
        output.status.success(),
        "parallel {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("parallel prints UTF-8 here")
}

/// bakapara's result lines for `bakapara --braces -k ARGS` in `dir`.
pub fn ours(dir: &Path, args: &[&str], stdin: &[u8]) -> Vec<Value> {
    let mut command = bakapara();
    command
        .args(["--json", "--braces", "-k"])
        .args(args)
        .current_dir(dir);
    let output = run_with_stdin(command, stdin);
    assert_eq!(
        output.status.code(),
        Some(0),
        "bakapara {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_lines(&output.stdout)
}

/// The jobs' stdout, concatenated in input order.
pub fn stdout_of(results: &[Value]) -> String {
    results
        .iter()
        .map(|r| {
            r["result"]["stdout"]
                .as_str()
                .unwrap_or_else(|| panic!("no stdout in {r}"))
        })
        .collect()
}

/// A temp folder with the `.parallel` directory GNU Parallel is given as its `PARALLEL_HOME`.
pub fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary folder");
    std::fs::create_dir(dir.path().join(".parallel")).expect("PARALLEL_HOME");
    dir
}
