//! The output side and the values (SPEC §5, §6): a closed stdout at start, stdout and stderr
//! that cannot be written, out-of-range values, and input lines that are not what they seem.
//! The real binary runs real /bin/bash jobs; the tests wait for conditions, never for a fixed
//! time.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::common::bin::*;

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

// ---------------------------------------------------------------------------------------
// Failed and slow stdout / joblog writes
// ---------------------------------------------------------------------------------------

/// A child process killed (and reaped) when the test ends, so a failing test leaves no
/// bakapara behind.
struct Killing(std::process::Child);

impl std::ops::Deref for Killing {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Killing {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Killing {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits for `child` to end (killing it and failing after `limit`).
fn wait_within(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> std::process::ExitStatus {
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bakapara did not end within {limit:?}");
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn read_stderr(child: &mut std::process::Child) -> std::thread::JoinHandle<String> {
    let mut err = child.stderr.take().expect("stderr is piped");
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
        text
    })
}

fn joblog_lines(path: &Path) -> Vec<Value> {
    parse_lines(&std::fs::read(path).unwrap_or_default())
}

#[test]
fn a_reader_that_goes_away_stops_the_run_quietly_with_141() {
    use std::io::{BufRead, Write};
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let log = dir.path().join("log.jsonl");
    let mut child = Killing(
        bakapara()
            .args(["-j", "3", "--joblog"])
            .arg(&log)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bakapara starts"),
    );
    // As `yes true | bakapara | head -1`, with a long job running when the reader leaves.
    let mut input = child.stdin.take().expect("stdin");
    let sleeper = format!("sleep 1000{m}\n");
    let writer = std::thread::spawn(move || {
        if input.write_all(sleeper.as_bytes()).is_err() {
            return;
        }
        while input.write_all(b"true\n").is_ok() {}
    });
    let errors = read_stderr(&mut child);
    wait_until("the long job runs", || sleepers(&m).len() == 1);
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("a first line");
    drop(out);
    let status = wait_within(&mut child, WAIT);
    let stderr = errors.join().expect("stderr reader");
    writer.join().expect("stdin writer");
    assert_eq!(status.code(), Some(141), "{stderr}");
    assert!(!stderr.to_lowercase().contains("broken pipe"), "{stderr}");
    assert!(!stderr.contains("error:"), "{stderr}");
    assert!(sleepers(&m).is_empty(), "the running job was stopped");
    // The joblog, which did not fail, has the long job's line.
    let lines = joblog_lines(&log);
    let long = lines
        .iter()
        .find(|l| l["cmd"].as_str().is_some_and(|c| c.contains(&m)))
        .expect("the long job's line is in the joblog");
    assert_eq!(long["result"]["status"], "aborted", "{long}");
    let why = long["result"]["error"].as_str().unwrap_or("");
    assert!(why.contains("the reader of stdout went away"), "{why}");
}

/// Jobs: one that runs long, then three quick ones.
fn long_and_quick(m: &str) -> Vec<u8> {
    format!("sleep 1000{m}\ntrue\ntrue\ntrue\n").into_bytes()
}

#[test]
fn a_full_stdout_stops_the_run_at_once_and_the_joblog_keeps_every_line() {
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let log = dir.path().join("log.jsonl");
    let mut child = Killing(
        bakapara()
            .args(["-j", "2", "--joblog"])
            .arg(&log)
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(dev_full())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bakapara starts"),
    );
    let mut input = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut input, &long_and_quick(&m)).expect("input");
    drop(input);
    let errors = read_stderr(&mut child);
    let status = wait_within(&mut child, WAIT);
    let stderr = errors.join().expect("stderr reader");
    assert_eq!(status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("cannot write results to stdout: No space left on device"),
        "{stderr}"
    );
    assert!(sleepers(&m).is_empty());
    let lines = joblog_lines(&log);
    assert_eq!(lines.len(), 4, "every job read has its line in the joblog");
    let long = lines
        .iter()
        .find(|l| l["cmd"].as_str().is_some_and(|c| c.contains(&m)))
        .expect("the long job's line");
    assert_eq!(long["result"]["status"], "aborted", "{long}");
}

#[test]
fn a_full_joblog_stops_the_run_at_once_and_stdout_keeps_every_line() {
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let done = Live::spawn(
        &["-j", "2", "--joblog", "/dev/full"],
        long_and_quick(&m),
        dir.path(),
    )
    .finish_within(WAIT);
    assert_eq!(done.code, Some(255), "{}", done.stderr);
    assert!(
        done.stderr
            .contains("cannot write to --joblog /dev/full: No space left on device"),
        "{}",
        done.stderr
    );
    assert!(sleepers(&m).is_empty());
    assert_eq!(done.lines.len(), 4, "every job read has its line on stdout");
    let long = done
        .lines
        .iter()
        .find(|l| l["cmd"].as_str().is_some_and(|c| c.contains(&m)))
        .expect("the long job's line");
    assert_eq!(long["result"]["status"], "aborted", "{long}");
}

#[test]
fn a_stuck_reader_does_not_hold_up_timeouts_or_sigterm() {
    stuck_reader_then_sigterm(&[]);
}

#[test]
fn a_stuck_reader_of_text_output_does_not_hold_up_timeouts_or_sigterm() {
    stuck_reader_then_sigterm(&["--text"]);
}

fn stuck_reader_then_sigterm(mode: &[&str]) {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    // A pipe that nobody reads: its buffer fills with the first big result line.
    let (unread, write_end) = nix::unistd::pipe().expect("a pipe");
    let mut input = String::new();
    for _ in 0..4 {
        input.push_str(&format!("echo >> started; sleep 1000{m}\n"));
    }
    for _ in 0..3 {
        input.push_str("head -c 300000 /dev/zero | tr '\\0' x\n");
    }
    let mut child = Killing(
        bakapara()
            .args(mode)
            .args(["-j", "5", "--timeout", "1", "--grace", "1"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::piped())
            .spawn()
            .expect("bakapara starts"),
    );
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, input.as_bytes()).expect("input");
    drop(stdin);
    let errors = read_stderr(&mut child);
    let started =
        || std::fs::read_to_string(dir.path().join("started")).map_or(0, |t| t.lines().count());
    // Their timeout acts although stdout is stuck on a big result line.
    wait_until("the long jobs start, then --timeout stops them", || {
        started() == 4 && sleepers(&m).is_empty()
    });
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid is an i32"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = wait_within(&mut child, std::time::Duration::from_secs(20));
    let stderr = errors.join().expect("stderr reader");
    assert_eq!(
        status.signal(),
        Some(15),
        "dies of SIGTERM: {status:?} {stderr}"
    );
    assert!(stderr.contains("stdout is not being read"), "{stderr}");
    drop(unread);
}

#[test]
fn a_stuck_reader_holds_back_new_jobs_and_gets_every_line_once_it_reads() {
    use std::io::Read;
    let dir = tempdir();
    let (read_end, write_end) = nix::unistd::pipe().expect("a pipe");
    // 60 jobs with a 1 MB result line each, far more than the writer may queue.
    let mut input = String::new();
    for _ in 0..60 {
        input.push_str("echo >> started; head -c 1000000 /dev/zero | tr '\\0' x\n");
    }
    let mut child = Killing(
        bakapara()
            .args(["-j", "2", "-q"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::null())
            .spawn()
            .expect("bakapara starts"),
    );
    let mut stdin = child.stdin.take().expect("stdin");
    std::io::Write::write_all(&mut stdin, input.as_bytes()).expect("input");
    drop(stdin);
    let started =
        || std::fs::read_to_string(dir.path().join("started")).map_or(0, |t| t.lines().count());
    let pid = child.id();
    // bakapara's children other than its watchdog (src/watchdog.rs): the jobs.
    let jobs = || {
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        children
            .split_whitespace()
            .filter(|child| {
                let cmdline = std::fs::read(format!("/proc/{child}/cmdline")).unwrap_or_default();
                !String::from_utf8_lossy(&cmdline).contains("bakapara's watchdog")
            })
            .count()
    };
    wait_until("some jobs ran", || started() >= 4);
    wait_until("no job runs while the writer is behind", || jobs() == 0);
    let held_back = started();
    assert!(
        held_back < 40,
        "{held_back} jobs started while nothing was read"
    );
    let mut reader = std::fs::File::from(read_end);
    let mut all = Vec::new();
    reader.read_to_end(&mut all).expect("read stdout");
    let status = wait_within(&mut child, RUN_TIMEOUT);
    assert_eq!(status.code(), Some(0));
    assert_eq!(parse_lines(&all).len(), 60, "every line, once read");
    assert_eq!(started(), 60);
}

#[test]
fn dry_run_stops_on_sigterm_and_when_its_reader_goes_away() {
    use std::io::{BufRead, Write};
    use std::os::unix::process::ExitStatusExt;
    let dir = tempdir();
    // stdin stays open: SIGTERM must end it all the same.
    let mut child = Killing(
        bakapara()
            .args(["--dry-run", "echo <>"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("bakapara starts"),
    );
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"a\n").expect("input");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("a line");
    assert!(line.contains("echo a"), "{line}");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid is an i32"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = wait_within(&mut child, WAIT);
    assert_eq!(status.signal(), Some(15), "{status:?}");
    drop(stdin);
    // `yes | bakapara --dry-run | head -1`.
    let mut child = Killing(
        bakapara()
            .args(["--dry-run", "echo <>"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("bakapara starts"),
    );
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || while stdin.write_all(b"y\n").is_ok() {});
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("a line");
    drop(out);
    let status = wait_within(&mut child, WAIT);
    assert_eq!(status.code(), Some(141), "{status:?}");
    writer.join().expect("stdin writer");
}

// ---------------------------------------------------------------------------------------
// Bounded input memory
// ---------------------------------------------------------------------------------------

/// The peak resident memory (`VmHWM`, in bytes) of process `pid`, read from /proc while it runs;
/// `None` once it is gone.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs bakapara with `args` and `input` (written from a thread), stdout read and dropped;
/// returns its exit status, the number of stdout lines and its peak memory as last seen.
fn run_measured(
    dir: &Path,
    args: &[&str],
    input: impl FnOnce(&mut dyn std::io::Write) + Send + 'static,
) -> (std::process::ExitStatus, usize, u64) {
    use std::io::BufRead;
    let mut child = Killing(
        bakapara()
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("bakapara starts"),
    );
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || input(&mut stdin));
    let out = child.stdout.take().expect("stdout");
    let counter = std::thread::spawn(move || {
        let mut lines = 0;
        let mut out = std::io::BufReader::new(out);
        let mut line = Vec::new();
        while out.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            lines += 1;
            line.clear();
        }
        lines
    });
    let pid = child.id();
    let mut peak = 0;
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if let Some(rss) = peak_rss(pid) {
            peak = peak.max(rss);
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            panic!("bakapara did not end");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    writer.join().expect("stdin writer");
    (status, counter.join().expect("stdout reader"), peak)
}

const MB: u64 = 1 << 20;

#[test]
fn a_streamed_source_after_the_first_is_not_held_in_memory() {
    let dir = tempdir();
    // `::: a :::: -` with 60 MB on stdin, every item a 1 MB line (read whole, it took 130 MB).
    let (status, lines, peak) = run_measured(
        dir.path(),
        &["--dry-run", "true <1>", ":::", "a", "::::", "-"],
        |stdin| {
            let mut line = vec![b'x'; 1 << 20];
            line.push(b'\n');
            for _ in 0..60 {
                if stdin.write_all(&line).is_err() {
                    return;
                }
            }
        },
    );
    assert_eq!(status.code(), Some(0));
    assert_eq!(lines, 60);
    assert!(peak < 80 * MB, "peak memory {} MB", peak / MB);
}

#[test]
fn long_lines_read_ahead_are_bounded_in_bytes() {
    let dir = tempdir();
    // 24 JSON objects of 4 MB each; the first job runs a while, the one slot is busy, and
    // the rest could be read ahead meanwhile (read ahead by count, they took 110 MB).
    let (status, lines, peak) =
        run_measured(dir.path(), &["-j", "1", "-q", "--jsonl", "true"], |stdin| {
            let pad = "x".repeat(4 << 20);
            for i in 0..24 {
                let cmd = if i == 0 { "sleep 3" } else { "true" };
                let line = format!("{{\"cmd\":\"{cmd}\",\"x\":\"{pad}\"}}\n");
                if stdin.write_all(line.as_bytes()).is_err() {
                    return;
                }
            }
        });
    assert_eq!(status.code(), Some(0));
    assert_eq!(lines, 24);
    assert!(peak < 80 * MB, "peak memory {} MB", peak / MB);
}
