//! The output side and the values (SPEC §5, §6): a closed stdout at start, stdout and stderr
//! that cannot be written, out-of-range values, and input lines that are not what they seem.
//! The real binary runs real /bin/bash jobs; the tests wait for conditions, never for a fixed
//! time.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use common::bin::*;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temp dir")
}

fn dev_full() -> Stdio {
    Stdio::from(
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full opens"),
    )
}

fn bin_path() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("bakapara")
}

/// `bakapara ARGS` run by bash with `redirect` applied (`>&-`, `2>/dev/full`...), stdin from
/// /dev/null; returns (exit code, stdout, stderr).
fn run_redirected(dir: &Path, redirect: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new("/bin/bash")
        .arg("-c")
        .arg(format!("exec \"$0\" \"$@\" {redirect}"))
        .arg(bin_path())
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("bash runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_at_start_is_refused_before_any_job_runs() {
    let dir = tempdir();
    let (code, _, stderr) = run_redirected(dir.path(), ">&-", &["touch ran-<>", ":::", "a"]);
    assert_eq!(code, Some(255), "{stderr}");
    assert!(stderr.contains("standard output is closed"), "{stderr}");
    assert!(!dir.path().join("ran-a").exists(), "no job ran");
    // A stdout sent to /dev/null is the way to discard results: that runs.
    let (code, _, stderr) = run_redirected(dir.path(), ">/dev/null", &["touch ran-<>", ":::", "a"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(dir.path().join("ran-a").exists());
}

#[test]
fn help_and_version_that_cannot_be_written_fail() {
    for flag in ["--help", "-h", "--version"] {
        let out = bakapara()
            .arg(flag)
            .stdout(dev_full())
            .stderr(Stdio::piped())
            .output()
            .expect("bakapara runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{flag}: {stderr}");
        assert!(
            stderr.contains("cannot write to stdout"),
            "{flag}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{flag}: {stderr}");
    }
}

#[test]
fn a_full_stderr_is_like_dev_null() {
    let dir = tempdir();
    // A usage error: its message cannot be written, the exit status still says so.
    let (code, _, _) = run_redirected(dir.path(), "2>/dev/full", &["--timeout", "soon", "true"]);
    assert_eq!(code, Some(255));
    // A run with log lines and a failed job: every result line, the exit status counts it.
    let (code, stdout, _) = run_redirected(
        dir.path(),
        "2>/dev/full",
        &["-v", "exit <>", ":::", "0", "3", "0"],
    );
    assert_eq!(code, Some(1));
    assert_eq!(parse_lines(stdout.as_bytes()).len(), 3);
    // A fatal error at the end (an unreadable :::: file).
    let (code, _, _) = run_redirected(dir.path(), "2>/dev/full", &["true", "::::", "/nonexistent"]);
    assert_eq!(code, Some(255));
}

#[test]
fn out_of_range_durations_on_the_command_line_are_usage_errors_naming_the_option() {
    let dir = tempdir();
    for option in ["--timeout", "--grace", "--host-timeout"] {
        for value in ["1e19", "18446744073709551616", "36501d"] {
            let (code, _, stderr) =
                run_redirected(dir.path(), "", &[option, value, "touch ran", ":::", "a"]);
            assert_eq!(code, Some(255), "{option} {value}: {stderr}");
            assert!(stderr.contains(option), "{option} {value}: {stderr}");
            assert!(stderr.contains("too long"), "{option} {value}: {stderr}");
            assert!(!stderr.contains("panicked"), "{option} {value}: {stderr}");
            assert!(
                !dir.path().join("ran").exists(),
                "{option} {value}: no job ran"
            );
        }
    }
    // The longest one taken, 100 years, runs (and a job is stopped by TERM, then KILL after
    // that grace, only when it must be: here it ends by itself).
    let (code, stdout, stderr) = run_redirected(
        dir.path(),
        "",
        &[
            "--timeout",
            "36500d",
            "--grace",
            "36500d",
            "--host-timeout",
            "36500d",
            "true",
            ":::",
            "a",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(parse_lines(stdout.as_bytes()).len(), 1);
}

#[test]
fn out_of_range_job_keys_give_error_lines_naming_the_key() {
    let dir = tempdir();
    let input = concat!(
        "{\"cmd\":\"true\",\"timeout\":1e19}\n",
        "{\"cmd\":\"true\",\"timeout\":18446744073709551616}\n",
        "{\"cmd\":\"true\",\"timeout\":\"1e19\"}\n",
        "{\"cmd\":\"true\",\"retries\":4294967296}\n",
        "{\"cmd\":\"true\",\"timeout\":3153600000}\n",
    );
    let done = Live::spawn(&["-k"], input.as_bytes().to_vec(), dir.path()).finish();
    assert_eq!(done.lines.len(), 5, "one line per job: {}", done.stderr);
    for line in &done.lines[..4] {
        let r = &line["result"];
        assert_eq!(r["status"], "error", "{line}");
        let why = r["error"].as_str().unwrap_or("");
        assert!(
            why.contains("`timeout`") || why.contains("`retries`"),
            "{line}"
        );
    }
    assert_eq!(
        done.lines[4]["result"]["status"], "ok",
        "100 years is taken"
    );
    assert_eq!(done.code, Some(4), "{}", done.stderr);
    assert!(!done.stderr.contains("panicked"), "{}", done.stderr);
}

#[test]
fn a_bom_blank_lines_of_any_whitespace_and_an_empty_host_list() {
    let dir = tempdir();
    let input = b"\xEF\xBB\xBF{\"cmd\":\"echo one\"}\n\t\x0b\x0c \r\n\x0b\n\xEF\xBB\xBF{\"cmd\":\"echo two\"}\n{\"cmd\":\"true\",\"host\":[]}\n";
    let done = Live::spawn(&["-k"], input.to_vec(), dir.path()).finish();
    let lines: Vec<&Value> = done.lines.iter().collect();
    assert_eq!(lines.len(), 3, "blank lines are no jobs: {:?}", done.raw);
    assert_eq!(lines[0]["cmd"], "echo one");
    assert_eq!(lines[0]["result"]["stdout"], "one\n");
    assert_eq!(lines[1]["cmd"], "echo two");
    assert_eq!(lines[1]["result"]["stdout"], "two\n");
    let why = lines[2]["result"]["error"].as_str().unwrap_or("");
    assert!(why.contains("empty host list"), "{why}");
    // With a TEMPLATE, a BOM at the start of input is no part of the first item.
    let done = Live::spawn(&["-k", "echo"], b"\xEF\xBB\xBFa\nb\n".to_vec(), dir.path()).finish();
    assert_eq!(done.lines[0]["input"], "a");
    assert_eq!(done.lines[0]["result"]["stdout"], "a\n");
    // --jsonl with an empty host list: the same clear error.
    let done = Live::spawn(
        &["--jsonl", "echo <x>"],
        b"\xEF\xBB\xBF{\"x\":1,\"host\":[]}\n".to_vec(),
        dir.path(),
    )
    .finish();
    let why = done.lines[0]["result"]["error"].as_str().unwrap_or("");
    assert!(why.contains("empty host list"), "{why}");
}
