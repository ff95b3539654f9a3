//! Habits users bring from GNU Parallel (SPEC §2, §4): `-j` in its GNU forms, `{}` in a `<>`
//! template, `--braces`, and job keys that are near-misses of known ones. The real binary, real
//! `/bin/bash` jobs.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use common::bin::{bakapara, parse_lines};

/// Runs bakapara in `dir` with stdin from `/dev/null`.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    bakapara()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running bakapara")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The slot numbers (`<%>`) that `2 × expected` jobs ran in, when each job waits until
/// `expected` jobs have started before it ends. With exactly `expected` slots the first wave
/// fills slots 1..=expected and the barrier opens; fewer slots never open it (each job gives
/// up after a minute, and the test fails), more slots show slot numbers above `expected`.
fn slots_used(
    args_before_template: &[&str],
    expected: usize,
    ulimit_files: Option<u32>,
) -> Vec<usize> {
    let dir = tempfile::tempdir().expect("temporary folder");
    let started = dir.path().join("started");
    std::fs::create_dir(&started).expect("creating the barrier folder");
    let template = format!(
        "touch {s}/<#>; for i in $(seq 1200); do [ $(ls {s} | wc -l) -ge {expected} ] && break; sleep 0.05; done; echo <%>",
        s = started.display()
    );
    let items: Vec<String> = (1..=2 * expected).map(|i| i.to_string()).collect();
    let bin = env!("CARGO_BIN_EXE_bakapara");
    let mut command = Command::new("bash");
    let ulimit = ulimit_files.map_or(String::new(), |n| format!("ulimit -n {n} && "));
    command
        .arg("-c")
        .arg(format!("{ulimit}exec \"$0\" \"$@\""))
        .arg(bin)
        .args(args_before_template)
        .arg(&template)
        .arg(":::")
        .args(&items)
        .current_dir(dir.path())
        .stdin(Stdio::null());
    let output = command.output().expect("running bakapara");
    assert_eq!(
        output.status.code(),
        Some(0),
        "bakapara {args_before_template:?} failed: {}",
        stderr_of(&output)
    );
    let mut slots: Vec<usize> = parse_lines(&output.stdout)
        .iter()
        .map(|r| {
            r["result"]["stdout"]
                .as_str()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(|| panic!("no slot number in {r}"))
        })
        .collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

fn one_to(n: usize) -> Vec<usize> {
    (1..=n).collect()
}

#[test]
fn j_plus_minus_and_percent_are_relative_to_the_cpu_count() {
    let n = cpus();
    assert_eq!(
        slots_used(&["-j", "+1"], n + 1, None),
        one_to(n + 1),
        "-j +1"
    );
    assert_eq!(slots_used(&["-j+2"], n + 2, None), one_to(n + 2), "-j+2");
    let minus = n.saturating_sub(1).max(1);
    assert_eq!(
        slots_used(&["-j", "-1"], minus, None),
        one_to(minus),
        "-j -1"
    );
    assert_eq!(
        slots_used(&["--jobs=-64"], 1, None),
        one_to(1),
        "-j -64: at least 1"
    );
    let half = n.div_ceil(2);
    assert_eq!(
        slots_used(&["-j", "50%"], half, None),
        one_to(half),
        "-j 50%"
    );
    let more = (n * 3).div_ceil(2);
    assert_eq!(
        slots_used(&["-j", "150%"], more, None),
        one_to(more),
        "-j 150%"
    );
    assert_eq!(
        slots_used(&["-j", "1%"], 1, None),
        one_to(1),
        "-j 1%: rounded up"
    );
}

/// `-j 0` is as many as the open-file limit leaves room for: (limit − 64) / 3.
#[test]
fn j_zero_is_as_many_as_the_open_file_limit_allows() {
    assert_eq!(slots_used(&["-j", "0"], 12, Some(100)), one_to(12));
}

#[test]
fn j_beyond_the_bound_or_malformed_is_a_usage_error_before_any_job() {
    let dir = tempfile::tempdir().expect("temporary folder");
    for (value, needle) in [
        ("1e9", "not \"1e9\""),
        ("18446744073709551615", "more than the 4096"),
        ("99999999999999999999999", "more than the 4096"),
        ("4097", "more than the 4096"),
        ("+1000000", "more than the 4096"),
        ("-99999999999999999999999", "more than the 4096"),
        ("100000000%", "more than the 4096"),
        ("abc", "+N or -N"),
        ("", "+N or -N"),
        ("1.5", "+N or -N"),
        ("+", "+N or -N"),
        ("%", "+N or -N"),
        ("-1.5%", "+N or -N"),
    ] {
        let flag = format!("--jobs={value}");
        let output = run_in(dir.path(), &[&flag, "touch ran-<#>", ":::", "a"]);
        let err = stderr_of(&output);
        assert_eq!(output.status.code(), Some(255), "-j {value:?}: {err}");
        assert!(
            err.contains("--jobs") && err.contains(needle),
            "-j {value:?}: the message should name --jobs and say {needle:?}: {err}"
        );
        assert!(!err.contains("panicked"), "-j {value:?}: {err}");
        assert!(output.stdout.is_empty(), "-j {value:?}");
        assert!(!dir.path().join("ran-1").exists(), "-j {value:?} ran a job");
    }
    // The largest accepted value starts, and allocates nothing proportional up front.
    let output = run_in(dir.path(), &["-j", "4096", "echo <%>", ":::", "a"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let lines = parse_lines(&output.stdout);
    assert_eq!(lines[0]["result"]["stdout"], Value::from("1\n"));
}
