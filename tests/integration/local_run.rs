//! End-to-end tests of local runs: the real binary, real `/bin/bash` jobs.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use serde_json::Value;

use crate::common::bin::{parse_lines, pids_with, wait_until};

/// The binary, with stderr piped (the tests read the log lines).
fn bakapara() -> Command {
    let mut cmd = Command::cargo_bin("bakapara").expect("the bakapara binary is built");
    cmd.stderr(Stdio::piped());
    cmd
}

/// Runs bakapara with `stdin` as input; returns (exit code, result lines, stderr).
fn run(
    args: &[&str],
    stdin: &str,
    dir: Option<&std::path::Path>,
) -> (Option<i32>, Vec<Value>, String) {
    let mut cmd = bakapara();
    cmd.args(args).stdin(Stdio::piped()).stdout(Stdio::piped());
    if let Some(dir) = dir {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().expect("bakapara starts");
    let mut input = child.stdin.take().expect("stdin is piped");
    let text = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let out = child.wait_with_output().expect("bakapara runs");
    writer.join().expect("stdin writer");
    let lines = parse_lines(&out.stdout);
    (
        out.status.code(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn by_seq(mut lines: Vec<Value>) -> Vec<Value> {
    lines.sort_by_key(|l| l["result"]["seq"].as_u64());
    lines
}

#[test]
fn the_readme_example_turns_a_files_into_b_files() {
    let dir = tempfile::tempdir().unwrap();
    for i in 1..=4 {
        std::fs::write(
            dir.path().join(format!("a0{i}.txt")),
            format!("content {i}\n"),
        )
        .unwrap();
    }
    let input = "a01.txt\na02.txt\na03.txt\na04.txt\n";
    let (code, lines, _) = run(&["-j", "2", "cat < <> > </a/b>"], input, Some(dir.path()));
    assert_eq!(code, Some(0));
    assert_eq!(lines.len(), 4);
    for i in 1..=4 {
        let b = std::fs::read_to_string(dir.path().join(format!("b0{i}.txt"))).unwrap();
        assert_eq!(b, format!("content {i}\n"));
    }
    let lines = by_seq(lines);
    assert_eq!(lines[0]["cmd"], "cat < a01.txt > b01.txt");
    assert_eq!(lines[0]["input"], "a01.txt");
    assert_eq!(lines[3]["result"]["seq"], 4);
}

#[test]
fn json_jobs_keep_their_keys_and_get_a_full_result() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("work")).unwrap();
    let input = concat!(
        r#"{"name":"one","cmd":"pwd; echo to-err >&2","cd":"work","out":"logs/o.txt","err":"logs/e.txt","tags":[1,2],"env":{"X":"y"}}"#,
        "\n",
        r#"{"cmd":"printf %s \"$X\"; exit 3","env":{"X":"from env"},"z":{"a":null}}"#,
        "\n"
    );
    let (code, lines, _) = run(&["-k"], input, Some(dir.path()));
    assert_eq!(code, Some(1), "one job exited 3");
    assert_eq!(lines.len(), 2);
    let first = lines[0].as_object().unwrap();
    let keys: Vec<&str> = first.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["name", "cmd", "cd", "out", "err", "tags", "env", "result"]
    );
    let r = &first["result"];
    for key in [
        "status",
        "code",
        "seq",
        "host",
        "engine_id",
        "attempts",
        "submitted",
        "started",
        "completed",
        "received",
        "elapsed",
        "msg_id",
    ] {
        assert!(r.get(key).is_some(), "result has {key}: {r}");
    }
    assert_eq!(r["status"], "ok");
    assert_eq!(r["code"], 0);
    assert_eq!(r["host"], "localhost");
    assert_eq!(r["attempts"], 1);
    assert!(r.get("stdout").is_none(), "stdout went to the out file");
    let canonical = std::fs::canonicalize(dir.path().join("work")).unwrap();
    let out = std::fs::read_to_string(dir.path().join("work/logs/o.txt")).unwrap();
    assert_eq!(out.trim_end(), canonical.to_str().unwrap());
    let err = std::fs::read_to_string(dir.path().join("work/logs/e.txt")).unwrap();
    assert_eq!(err, "to-err\n");
    for key in ["submitted", "started", "completed", "received"] {
        let t = r[key].as_str().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(t).is_ok(),
            "{key} = {t}"
        );
        assert_eq!(
            t.split('.').nth(1).map(str::len),
            Some(12),
            "microseconds and offset: {t}"
        );
    }
    assert!(r["elapsed"].as_f64().unwrap() >= 0.0);
    let second = &lines[1];
    assert_eq!(second["z"], serde_json::json!({"a": null}));
    assert_eq!(second["result"]["code"], 3);
    assert_eq!(second["result"]["stdout"], "from env");
    assert_ne!(second["result"]["msg_id"], r["msg_id"]);
}

#[test]
fn hostile_names_reach_the_command_byte_for_byte_and_run_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "a file's \"name\" $(touch PWNED).txt",
        "`touch PWNED`",
        "x; touch PWNED",
        "*",
        "  two  spaces  ",
        "日本語ファイル.txt",
        "-n",
        "$HOME",
        "a\\b",
        "back\\\\slash'\"",
        "~",
        "!event",
        "",
    ];
    let input: String = names.iter().map(|n| format!("{n}\n")).collect();
    let (code, lines, _) = run(&["-k", "printf %s <>"], &input, Some(dir.path()));
    assert_eq!(code, Some(0));
    assert_eq!(lines.len(), names.len(), "an empty line is an item too");
    for (line, name) in lines.iter().zip(names) {
        assert_eq!(line["result"]["stdout"], name, "cmd was {}", line["cmd"]);
        assert_eq!(line["input"], name);
    }
    assert!(!dir.path().join("PWNED").exists(), "a name ran code");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing was created"
    );
}

#[test]
fn exit_status_counts_failed_jobs() {
    let (code, lines, _) = run(&["-j", "4", "exit <>"], "0\n0\n", None);
    assert_eq!((code, lines.len()), (Some(0), 2));
    let (code, _, _) = run(&["-j", "4", "exit <>"], "0\n1\n2\n0\n7\n", None);
    assert_eq!(code, Some(3));
    let many: String = (0..100).map(|_| "1\n").collect();
    let (code, lines, _) = run(&["-j", "4", "-q", "exit <>"], &many, None);
    assert_eq!((code, lines.len()), (Some(100), 100));
    let more: String = (0..101).map(|_| "1\n").collect();
    let (code, lines, _) = run(&["-j", "4", "-q", "exit <>"], &more, None);
    assert_eq!((code, lines.len()), (Some(101), 101));
}

#[test]
fn usage_errors_exit_255_before_any_job_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["touch ran; echo <nope x> <unknown>"], "<unknown>"),
        (&["touch ran; echo </(/x>"], "</(/x>"),
        (&["--frobnicate", "touch ran"], "--frobnicate"),
        (&["-j", "1e9", "touch ran"], "--jobs"),
        (&["--capture-limit", "lots", "touch ran"], "--capture-limit"),
        (&["--colsep", "(", "touch ran"], "--colsep"),
        (&["touch ran", "::::", "/no/such/file"], "/no/such/file"),
    ];
    for (args, named) in cases {
        let (code, lines, stderr) = run(args, "x\n", Some(dir.path()));
        assert_eq!(code, Some(255), "{args:?}: {stderr}");
        assert!(lines.is_empty(), "{args:?}");
        assert!(
            stderr.contains(named),
            "{args:?} should name {named}: {stderr}"
        );
        assert!(!dir.path().join("ran").exists(), "{args:?} ran a job");
    }
}

#[test]
fn bad_job_lines_become_error_results_and_the_run_goes_on() {
    let input = concat!(
        "{not json\n",
        "{\"cd\":\"x\"}\n",
        "{\"cmd\":[\"echo\"]}\n",
        "{\"cmd\":\"echo ok\",\"timeout\":\"never\"}\n",
        "[1,2]\n",
        "   \n",
        "echo fine\n",
    );
    let (code, lines, _) = run(&["-k"], input, None);
    assert_eq!(code, Some(5), "four bad lines, and `[1,2]` is no command");
    let errors: Vec<&str> = lines
        .iter()
        .filter_map(|l| l["result"]["error"].as_str())
        .collect();
    assert_eq!(
        lines.len(),
        6,
        "a blank line is skipped, every other line gets a result"
    );
    assert!(errors[0].contains("not valid JSON"), "{errors:?}");
    assert!(errors[1].contains("no `cmd`"), "{errors:?}");
    assert!(errors[2].contains("`cmd` must be a string"), "{errors:?}");
    assert!(errors[3].contains("`timeout`"), "{errors:?}");
    assert_eq!(lines[0]["line"], "{not json");
    assert_eq!(lines[1]["cd"], "x", "the object is carried through");
    assert_eq!(
        lines[4]["result"]["status"], "ok",
        "[1,2] is a plain command line"
    );
    assert_eq!(lines[4]["result"]["code"], 127);
    assert_eq!(lines[5]["result"]["stdout"], "fine\n");
    assert_eq!(lines[0]["result"]["status"], "error");
    assert_eq!(lines[0]["result"]["started"], Value::Null);
}

#[test]
fn captured_output_is_cut_marked_and_base64_when_binary() {
    let input = "head -c 5000 /dev/zero | tr '\\0' x\nprintf '\\xff\\xfe' >&2\n";
    let (_, lines, _) = run(&["-k", "--capture-limit", "1K"], input, None);
    let r = &lines[0]["result"];
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1024);
    assert_eq!(r["stdout_truncated"], true);
    assert!(r.get("stderr_truncated").is_none());
    let r = &lines[1]["result"];
    assert_eq!(r["stderr_base64"], "//4=");
    assert!(r.get("stderr").is_none());
}

#[test]
fn sources_combine_as_a_cartesian_product_and_colsep_splits_columns() {
    let (code, lines, _) = run(
        &["-k", "echo <2>-<1>", ":::", "a", "b", ":::", "1", "2", "3"],
        "",
        None,
    );
    assert_eq!(code, Some(0));
    let outs: Vec<&str> = lines
        .iter()
        .map(|l| l["result"]["stdout"].as_str().unwrap())
        .collect();
    assert_eq!(outs, ["1-a\n", "2-a\n", "3-a\n", "1-b\n", "2-b\n", "3-b\n"]);
    assert_eq!(lines[0]["input"], serde_json::json!(["a", "1"]));
    let (_, lines, _) = run(&["-k", "--colsep", ",", "echo <2> <1>"], "x,y\np,q\n", None);
    assert_eq!(lines[1]["result"]["stdout"], "q p\n");
}

#[test]
fn a_template_without_a_token_gets_the_item_appended() {
    let (_, lines, _) = run(&["echo", "got:"], "item one\n", None);
    assert_eq!(lines[0]["cmd"], "echo got: 'item one'");
    assert_eq!(lines[0]["result"]["stdout"], "got: item one\n");
}

#[test]
fn jsonl_fields_feed_the_template() {
    let input = "{\"name\":\"Ann\",\"n\":2}\n{\"name\":\"Bob\",\"n\":3,\"cmd\":\"echo own\"}\n";
    let (_, lines, _) = run(&["-k", "--jsonl", "echo <name> <n>"], input, None);
    assert_eq!(lines[0]["result"]["stdout"], "Ann 2\n");
    assert_eq!(
        lines[1]["result"]["stdout"], "own\n",
        "the object's own cmd wins"
    );
}

#[test]
fn keep_order_emits_in_input_order() {
    let (_, lines, _) = run(
        &["-k", "-j", "3", "sleep <>; echo <>"],
        "0.3\n0.1\n0.2\n0\n",
        None,
    );
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| l["result"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
}

#[test]
fn dry_run_prints_jobs_and_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (code, lines, _) = run(&["--dry-run", "touch <>"], "made\n", Some(dir.path()));
    assert_eq!(code, Some(0));
    assert_eq!(
        lines,
        [serde_json::json!({"cmd": "touch made", "input": "made"})]
    );
    assert!(!dir.path().join("made").exists());
}

#[test]
fn log_lines_go_to_stderr_and_quiet_silences_them() {
    let (_, _, stderr) = run(&["true"], "a\nb\n", None);
    assert!(stderr.contains("total ? jobs on"), "{stderr}");
    assert!(stderr.contains("[2/2] returned 0 in 0:00:00."), "{stderr}");
    assert!(stderr.contains(" sec on localhost: true "), "{stderr}");
    assert!(stderr.contains("completed"), "{stderr}");
    let (_, _, stderr) = run(&["-q", "true"], "a\nb\n", None);
    assert_eq!(stderr, "");
}

#[test]
fn the_first_result_comes_while_stdin_is_still_open() {
    let mut child = bakapara()
        .args(["-j", "2", "echo <>"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"first\n").unwrap();
    stdin.flush().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["result"]["stdout"], "first\n");
    // stdin is still open: the process is still running and waiting for more.
    assert!(child.try_wait().unwrap().is_none());
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// Starts bakapara on jobs that sleep, waits until `running` of them are up, and returns the
/// child and a unique marker in their command lines.
fn start_sleepers(
    args: &[&str],
    jobs: usize,
    running: usize,
    job: &str,
) -> (std::process::Child, String) {
    // Unique per test (tests run in parallel threads of one process) and per test run.
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let marker = format!(
        "{}{n}.{}",
        1000 + std::process::id() % 1000,
        std::process::id() % 997 + 1
    );
    let mut child = bakapara()
        .args(args)
        .arg(job.replace("MARK", &marker))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for i in 0..jobs {
        writeln!(stdin, "{i}").unwrap();
    }
    drop(stdin);
    // Only `sleep` processes: bakapara's and the jobs' shells' command lines hold the marker
    // too, and a shell counted before it has run its `trap` would be killed by a TERM.
    wait_until("the jobs to start", || {
        pids_with(&format!("sleep {marker}"))
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.starts_with(b"sleep\0"))
            })
            .count()
            >= running
    });
    (child, marker)
}

fn kill(child: &std::process::Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("a pid is an i32")),
        sig,
    )
    .unwrap();
}

#[test]
fn ctrl_c_stops_every_job_gives_each_its_line_and_leaves_no_process() {
    use std::os::unix::process::ExitStatusExt;
    // Each job forks a grandchild too: the whole process group must die.
    let (child, marker) =
        start_sleepers(&["-j", "3"], 5, 6, "sleep MARK & sleep MARK; wait; echo <>");
    kill(&child, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output_timeout();
    assert_eq!(
        out.status.signal(),
        Some(nix::libc::SIGINT),
        "dies of SIGINT: {:?}",
        out.status
    );
    let lines = parse_lines(&out.stdout);
    assert_eq!(lines.len(), 5, "every job read gets a line");
    let mut statuses: Vec<&str> = lines
        .iter()
        .map(|l| l["result"]["status"].as_str().unwrap())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, ["aborted"; 5]);
    let started = lines
        .iter()
        .filter(|l| l["result"]["started"].is_string())
        .count();
    assert_eq!(started, 3);
    assert!(lines.iter().any(|l| l["result"]["signal"] == "SIGTERM"));
    wait_until("no job process left", || {
        pids_with(&format!("sleep {marker}")).is_empty()
    });
}

#[test]
fn sigterm_kills_jobs_that_ignore_it_after_the_grace_period() {
    use std::os::unix::process::ExitStatusExt;
    let (child, marker) = start_sleepers(
        &["-j", "2", "--grace", "300ms"],
        2,
        2,
        "trap '' TERM; sleep MARK; sleep MARK",
    );
    let sent = Instant::now();
    kill(&child, nix::sys::signal::Signal::SIGTERM);
    let out = child.wait_with_output_timeout();
    assert!(sent.elapsed() < Duration::from_secs(10));
    assert_eq!(out.status.signal(), Some(nix::libc::SIGTERM));
    let lines = parse_lines(&out.stdout);
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(l["result"]["status"], "aborted");
        assert_eq!(l["result"]["signal"], "SIGKILL");
    }
    assert!(pids_with(&format!("sleep {marker}")).is_empty());
}

#[test]
fn a_second_ctrl_c_kills_at_once() {
    use std::os::unix::process::ExitStatusExt;
    let (mut child, marker) = start_sleepers(
        &["-j", "2", "--grace", "1h"],
        2,
        2,
        "trap '' TERM INT; sleep MARK; sleep MARK",
    );
    kill(&child, nix::sys::signal::Signal::SIGINT);
    // The first Ctrl-C leaves jobs that ignore TERM running for the (long) grace period.
    std::thread::sleep(Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none());
    kill(&child, nix::sys::signal::Signal::SIGINT);
    let out = child.wait_with_output_timeout();
    assert_eq!(out.status.signal(), Some(nix::libc::SIGINT));
    assert_eq!(parse_lines(&out.stdout).len(), 2);
    assert!(pids_with(&format!("sleep {marker}")).is_empty());
}

trait WaitTimeout {
    fn wait_with_output_timeout(self) -> std::process::Output;
}

impl WaitTimeout for std::process::Child {
    /// `wait_with_output`, but a hang fails the test instead of blocking it forever.
    fn wait_with_output_timeout(self) -> std::process::Output {
        let pid = self.id();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(self.wait_with_output());
        });
        if let Ok(out) = rx.recv_timeout(Duration::from_secs(30)) {
            out.unwrap()
        } else {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid is an i32")),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("bakapara did not exit within 30 s");
        }
    }
}

#[test]
fn a_job_that_cannot_start_says_where_and_why_with_no_start_time() {
    let (code, lines, _) = run(&["-k", "--cd", "no/such/dir", "true"], "x\n", None);
    assert_eq!(code, Some(1));
    let r = &lines[0]["result"];
    assert_eq!(r["status"], "error");
    assert!(r["error"].as_str().unwrap().contains("no/such/dir"), "{r}");
    assert_eq!(r["host"], "localhost", "it got to a host");
    assert_eq!(r["started"], Value::Null);
    assert_eq!(r["elapsed"], Value::Null);
}
