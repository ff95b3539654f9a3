//! `--pipe` as a user relies on it beyond GNU Parallel's cuts (`tests/gnu_pipe.rs` has those):
//! memory stays bounded on a 2 GB stream, a retried job gets its block again, a job that
//! does not read its stdin ends, wrong combinations exit 255 before any job; and the start
//! throttles `--delay`, `--memfree`, `--load`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::common::bin::{parse_lines, Live};

/// bakapara's exit code, result lines and stderr for `ARGS` with `stdin`, in `dir`.
fn run(dir: &std::path::Path, args: &[&str], stdin: &[u8]) -> (Option<i32>, Vec<Value>, String) {
    let finished = Live::spawn(args, stdin.to_vec(), dir).finish();
    (finished.code, finished.lines, finished.stderr)
}

fn stdout(r: &Value) -> &str {
    r["result"]["stdout"]
        .as_str()
        .unwrap_or_else(|| panic!("no stdout in {r}"))
}

#[test]
fn memory_stays_bounded_on_a_2_gb_stream() {
    // 2 GiB of 16-byte lines, generated as it is written, never on disk.
    const LINE: &[u8] = b"0123456789abcde\n";
    const TOTAL: usize = 2 << 30;
    let chunk: Vec<u8> = LINE.repeat((1 << 20) / LINE.len());
    let mut child = Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kib=%M"])
        .arg(assert_cmd::cargo::cargo_bin("bakapara"))
        .args(["--json", "-j", "2", "--pipe", "wc -l"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/time runs bakapara");
    let mut input = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || {
        for _ in 0..TOTAL / chunk.len() {
            input.write_all(&chunk).expect("bakapara reads its stdin");
        }
    });
    let output = child.wait_with_output().expect("bakapara ends");
    writer.join().expect("writer");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let results = parse_lines(&output.stdout);
    let lines: u64 = results
        .iter()
        .map(|r| {
            stdout(r)
                .trim()
                .parse::<u64>()
                .expect("wc -l prints a count")
        })
        .sum();
    assert_eq!(
        lines,
        (TOTAL / LINE.len()) as u64,
        "every line reached a job"
    );
    let rss_kib: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kib="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no maxrss in {stderr}"));
    assert!(
        rss_kib < 50 * 1024,
        "bakapara's peak RSS was {rss_kib} KiB for a 2 GiB stream"
    );
}

#[test]
fn a_retried_job_gets_its_block_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The first try of each job reads its block and fails; the second passes it on.
    let cmd = "data=$(cat); if mkdir tried.{#} 2>/dev/null; then exit 3; fi; printf %s \"$data\"";
    let input: Vec<u8> = (1..=6)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let (code, results, stderr) = run(
        dir.path(),
        &[
            "--json",
            "--braces",
            "-k",
            "--pipe",
            "-N2",
            "--retries",
            "1",
            cmd,
        ],
        &input,
    );
    assert_eq!(code, Some(0), "{stderr}");
    let got: Vec<(&str, u64)> = results
        .iter()
        .map(|r| (stdout(r), r["result"]["attempts"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(got, [("1\n2", 2), ("3\n4", 2), ("5\n6", 2)]);
}

#[test]
fn jobs_that_do_not_read_their_block_end() {
    let dir = tempfile::tempdir().expect("temp dir");
    let input = b"x\n".repeat(300_000);
    for cmd in ["true", "head -c 1"] {
        let (code, results, stderr) = run(
            dir.path(),
            &["--json", "--pipe", "--block", "200k", cmd],
            &input,
        );
        assert_eq!(code, Some(0), "{cmd}: {stderr}");
        assert_eq!(results.len(), 3, "{cmd}: 600k in blocks of 200k");
        assert!(
            results.iter().all(|r| r["result"]["status"] == "ok"),
            "{results:?}"
        );
    }
}

#[test]
fn a_file_source_is_read_instead_of_stdin() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("in"), "a\nb\nc\n").expect("file");
    for source in [&["-a", "in", "cat"][..], &["cat", "::::", "in"][..]] {
        let mut args = vec!["--json", "-k", "--pipe", "-N2"];
        args.extend(source.iter().copied());
        let (code, results, stderr) = run(dir.path(), &args, b"not this\n");
        assert_eq!(code, Some(0), "{stderr}");
        let out: Vec<&str> = results.iter().map(stdout).collect();
        assert_eq!(out, ["a\nb\n", "c\n"], "{args:?}");
    }
}

#[test]
fn wrong_pipe_command_lines_exit_255_naming_the_problem() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases: &[(&[&str], &str)] = &[
        (&["--block", "1M", "cat"], "--block is for --pipe"),
        (&["--recend", ";", "cat"], "--recend is for --pipe"),
        (&["--pipe"], "needs a TEMPLATE"),
        (&["--pipe", "--jsonl", "cat"], "--jsonl"),
        (
            &["--pipe", "--block", "0", "cat"],
            "--block must be more than 0",
        ),
        (&["--pipe", "--block", "lots", "cat"], "--block"),
        (&["--pipe", "--regexp", "--recend", "(", "cat"], "regex"),
        (&["--pipe", "-N0", "cat"], "-N 0"),
        (&["--pipe", "-m", "cat"], "-m"),
        (&["--pipe-part", "cat"], "-a FILE"),
        (&["--pipe", "cat", ":::", "a"], "::: arguments"),
        (&["--shuf", "--pipe", "cat"], "--shuf"),
        (&["--pipe", "echo <##>; cat"], "end of input"),
        (&["--delay", "soon", "true"], "--delay"),
        (&["--memfree", "plenty", "true"], "--memfree"),
        (&["--load", "high", "true"], "--load"),
    ];
    for (args, says) in cases {
        let (code, results, stderr) = run(dir.path(), args, b"x\n");
        assert_eq!(code, Some(255), "{args:?}: {stderr}");
        assert!(results.is_empty(), "{args:?} ran jobs");
        assert!(
            stderr.contains(says),
            "{args:?} should say {says:?}: {stderr}"
        );
    }
}

#[test]
fn delay_spaces_the_starts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, results, stderr) = run(
        dir.path(),
        &[
            "--json", "-j", "3", "--delay", "300ms", "true", ":::", "a", "b", "c",
        ],
        b"",
    );
    assert_eq!(code, Some(0), "{stderr}");
    let mut starts: Vec<chrono::DateTime<chrono::FixedOffset>> = results
        .iter()
        .map(|r| {
            chrono::DateTime::parse_from_rfc3339(r["result"]["started"].as_str().expect("started"))
                .expect("a timestamp")
        })
        .collect();
    starts.sort();
    for pair in starts.windows(2) {
        let gap = pair[1] - pair[0];
        // "started" is stamped once the process is spawned, a little after the start itself.
        assert!(
            gap >= chrono::Duration::milliseconds(250),
            "starts {gap} apart: {starts:?}"
        );
    }
}

#[test]
fn memfree_holds_jobs_back_until_memory_is_there() {
    let dir = tempfile::tempdir().expect("temp dir");
    // No machine has a petabyte free: the job must not start; a kilobyte is always there.
    let live = Live::spawn(
        &["--json", "--memfree", "1P", "touch started"],
        b"x\n".to_vec(),
        dir.path(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !dir.path().join("started").exists(),
        "a job started without the memory"
    );
    live.signal(Signal::SIGTERM);
    let finished = live.finish();
    assert!(!dir.path().join("started").exists());
    assert!(
        finished.lines.iter().all(|r| r["result"]["status"] != "ok"),
        "{:?}",
        finished.lines
    );
    let (code, results, stderr) = run(dir.path(), &["--json", "--memfree", "1k", "true"], b"x\n");
    assert_eq!((code, results.len()), (Some(0), 1), "{stderr}");
}

#[test]
fn load_below_the_limit_runs_jobs() {
    let dir = tempfile::tempdir().expect("temp dir");
    for load in ["1000", "100000%"] {
        let (code, results, stderr) = run(
            dir.path(),
            &["--json", "--load", load, "true", ":::", "a", "b"],
            b"",
        );
        assert_eq!(
            (code, results.len()),
            (Some(0), 2),
            "--load {load}: {stderr}"
        );
    }
}
