//! End-to-end tests of `--text`, `--tag` and `--joblog` (SPEC §6): the real binary, real
//! `/bin/bash` jobs.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::sshd::{wait_until, SshCluster};
use serde_json::Value;

fn bakapara() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bakapara"))
}

/// Runs bakapara with `args` (stdin from `/dev/null`) and waits for it.
fn run(args: &[&str]) -> Output {
    bakapara()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("bakapara runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("UTF-8 output")
}

/// The JSON lines of a file, each parsed (panics on a line that is not JSON).
fn json_lines(path: &Path) -> Vec<Value> {
    let content = std::fs::read_to_string(path).expect("read the joblog");
    content
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect()
}

/// Checks that every job's lines (`<input> <stream> <n>`) form one contiguous block, in order,
/// with `count` lines each; returns the inputs in the order their blocks came.
fn assert_blocks(output: &str, stream: &str, count: usize) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (at, line) in output.lines().enumerate() {
        let mut words = line.split(' ');
        let (Some(input), Some(s), Some(n), None) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            panic!("line {at} is not job output: {line:?}\n{output}");
        };
        assert_eq!(s, stream, "line {at}: {line:?}");
        let n: usize = n.parse().expect("a line number");
        if order.last().map(String::as_str) != Some(input) {
            assert!(
                !order.iter().any(|o| o == input),
                "the output of job {input} is split: line {at} {line:?}\n{output}"
            );
            order.push(input.to_string());
        }
        let next = seen.entry(input.to_string()).or_insert(0);
        *next += 1;
        assert_eq!(
            n, *next,
            "job {input}'s lines are out of order at line {at}"
        );
    }
    for (input, n) in &seen {
        assert_eq!(*n, count, "job {input} printed {n} lines on {stream}");
    }
    order
}

const BURSTS: &str = r#"for i in $(seq 200); do echo "<> out $i"; echo "<> err $i" >&2; done"#;

#[test]
fn each_jobs_output_is_one_block_on_stdout_and_on_stderr() {
    let inputs: Vec<String> = (1..=8).map(|i| format!("job{i}")).collect();
    let mut args = vec!["--text", "-q", "-j", "4", BURSTS, ":::"];
    args.extend(inputs.iter().map(String::as_str));
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let order_out = assert_blocks(&stdout, "out", 200);
    let order_err = assert_blocks(&stderr, "err", 200);
    assert_eq!(order_out.len(), 8, "every job printed: {order_out:?}");
    assert_eq!(order_err.len(), 8, "every job printed: {order_err:?}");
    assert!(
        !stdout.contains("\"result\""),
        "no result lines on stdout with --text"
    );
}

#[test]
fn log_lines_do_not_split_a_jobs_stderr() {
    let out = run(&[
        "--text", "-j", "4", BURSTS, ":::", "a", "b", "c", "d", "e", "f",
    ]);
    assert_eq!(out.status.code(), Some(0));
    // Log lines (with their time stamp) come between blocks, never inside one.
    let job_lines: String = text(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with(|c: char| c.is_ascii_digit()))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_blocks(&job_lines, "err", 200);
    let mut last_input = "";
    for line in text(&out.stderr).lines() {
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            last_input = "";
            continue;
        }
        let input = line.split(' ').next().unwrap();
        assert!(
            last_input.is_empty() || input == last_input,
            "two jobs' stderr blocks with no log line between: {last_input} {input}"
        );
        last_input = input;
    }
}

#[test]
fn options_of_text_output_imply_it_and_refuse_json() {
    let out = run(&["--tag", "-q", "echo hi", ":::", "a"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a\thi a\n");
    let out = run(&["--json", "--tag", "echo hi", ":::", "a"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(text(&out.stderr).contains("--tag"), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    let out = run(&["--json", "--text", "echo hi", ":::", "a"]);
    assert_eq!(out.status.code(), Some(255));
    // A pipe gets JSON lines with or without --json.
    let out = run(&["--json", "-q", "echo hi", ":::", "a"]);
    assert_eq!(out.status.code(), Some(0));
    let line: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(line["result"]["stdout"], "hi a\n");
}

#[test]
fn tagstring_is_a_template_expanded_as_text() {
    let out = run(&[
        "--tagstring",
        "<#>:<2> <1/.> $HOME 'x'",
        "-k",
        "-q",
        "-j",
        "1",
        "echo <1>; echo e >&2",
        ":::",
        "dir/a b.txt",
        "c.txt",
        ":::",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Implies --tag (and so --text); values are text, not shell words: no quotes added.
    assert_eq!(
        text(&out.stdout),
        "1:1 a b $HOME 'x'\tdir/a b.txt\n2:1 c $HOME 'x'\tc.txt\n"
    );
    assert!(text(&out.stderr).contains("1:1 a b $HOME 'x'\te\n"));
    // A bad token is refused before any job runs.
    let out = run(&["--tagstring", "<nope>", "echo", ":::", "a"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("--tagstring"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn tag_prefixes_every_line_with_the_input_and_a_tab() {
    let out = run(&[
        "--text",
        "--tag",
        "-q",
        "-j",
        "3",
        "printf 'one\\ntwo\\n'; echo err >&2; printf 'last'",
        ":::",
        "a",
        "b c",
        "d",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for input in ["a", "b c", "d"] {
        let block = format!("{input}\tone\n{input}\ttwo\n{input}\tlast");
        assert!(stdout.contains(&block), "{block:?} in {stdout:?}");
        let err = format!("{input}\terr\n");
        assert!(text(&out.stderr).contains(&err), "{err:?} in stderr");
    }
    // Several sources: the values joined by one space.
    let out = run(&[
        "--text",
        "--tag",
        "-k",
        "-q",
        "echo <1>-<2>",
        ":::",
        "x",
        "y",
        ":::",
        "1",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        "x 1\tx-1\nx 2\tx-2\ny 1\ty-1\ny 2\ty-2\n"
    );
    // Command lines from stdin have no input: the command is the tag.
    let mut child = bakapara()
        .args(["--text", "--tag", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"echo hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "echo hi\thi\n");
}

#[test]
fn keep_order_prints_in_input_order() {
    // Later inputs end first.
    let inputs: Vec<String> = (1..=6).map(|i| i.to_string()).collect();
    let mut args = vec![
        "--text",
        "-k",
        "-q",
        "-j",
        "6",
        "sleep 0.$((7 - <>)); echo <> out 1; echo <> err 1 >&2",
        ":::",
    ];
    args.extend(inputs.iter().map(String::as_str));
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(assert_blocks(&text(&out.stdout), "out", 1), inputs);
    assert_eq!(assert_blocks(&text(&out.stderr), "err", 1), inputs);
}

#[test]
fn keep_order_with_many_waiting_jobs_spills_and_keeps_every_output() {
    // Job 1 ends last; the 300 others wait for it with their output (more than bakapara
    // keeps open as files).
    let inputs: Vec<String> = (1..=301).map(|i| i.to_string()).collect();
    let mut args = vec![
        "--text",
        "-k",
        "-q",
        "-j",
        "8",
        "if [ <> = 1 ]; then sleep 1; fi; echo <> out 1; echo <> err 1 >&2",
        ":::",
    ];
    args.extend(inputs.iter().map(String::as_str));
    let out = run(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(assert_blocks(&text(&out.stdout), "out", 1), inputs);
    assert_eq!(assert_blocks(&text(&out.stderr), "err", 1), inputs);
}

#[test]
fn joblog_gets_one_result_line_per_job_in_text_mode() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("sub-log.jsonl");
    let out = run(&[
        "--text",
        "-q",
        "--joblog",
        log.to_str().unwrap(),
        "-j",
        "3",
        "echo <>; exit $((<> % 2))",
        ":::",
        "1",
        "2",
        "3",
        "4",
        "5",
    ]);
    assert_eq!(out.status.code(), Some(3), "three odd inputs fail");
    let mut stdout: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    stdout.sort_unstable();
    assert_eq!(stdout, ["1", "2", "3", "4", "5"]);
    let mut lines = json_lines(&log);
    assert_eq!(lines.len(), 5);
    lines.sort_by_key(|l| l["result"]["seq"].as_u64());
    for (i, line) in lines.iter().enumerate() {
        let r = &line["result"];
        assert_eq!(r["seq"], i as u64 + 1);
        assert_eq!(line["input"], (i + 1).to_string());
        assert_eq!(r["status"], "ok");
        assert_eq!(r["code"], (i + 1) % 2);
        assert!(r.get("stdout").is_none(), "printed, not captured: {line}");
        assert!(r.get("stderr").is_none(), "printed, not captured: {line}");
    }
}

#[test]
fn joblog_gets_every_result_line_in_json_mode_too() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log.jsonl");
    let out = run(&[
        "-q",
        "--joblog",
        log.to_str().unwrap(),
        "-j",
        "3",
        "echo <>",
        ":::",
        "1",
        "2",
        "3",
        "4",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(stdout, logged, "the same lines, in the same order");
    let lines = json_lines(&log);
    assert_eq!(lines.len(), 4);
    for line in &lines {
        assert_eq!(
            line["result"]["stdout"],
            format!("{}\n", line["input"].as_str().unwrap())
        );
    }
}

#[test]
fn joblog_may_not_be_the_resume_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("results.jsonl");
    let before = "{\"cmd\":\"echo 1\",\"result\":{\"status\":\"ok\",\"code\":0}}\n";
    std::fs::write(&file, before).unwrap();
    let f = file.to_str().unwrap();
    let out = run(&["--resume", f, "--joblog", f, "echo <>", ":::", "1"]);
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("--joblog"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), before, "untouched");
}

/// `VmHWM` (peak resident set) of a process, in kB.
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM line");
    line.split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB")
}

#[test]
fn a_job_printing_200_mb_does_not_raise_memory() {
    const SIZE: u64 = 200_000_000;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("go");
    // Job 1 prints 200 MB; job 2 keeps bakapara alive until the test has measured it.
    let jobs = format!(
        "head -c {SIZE} /dev/zero\nwhile [ ! -e {} ]; do sleep 0.02; done\n",
        marker.display()
    );
    let mut child = bakapara()
        .args(["--text", "-q", "-j", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(jobs.as_bytes())
        .unwrap();
    let pid = child.id();
    let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let counted = std::sync::Arc::clone(&counted);
        let mut stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            let mut nonzero = false;
            loop {
                match stdout.read(&mut buf) {
                    Ok(0) | Err(_) => return nonzero,
                    Ok(n) => {
                        nonzero |= buf[..n].iter().any(|&b| b != 0);
                        counted.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
                    }
                }
            }
        })
    };
    let all_read = || counted.load(std::sync::atomic::Ordering::SeqCst) >= SIZE;
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(Duration::from_secs(120), "200 MB on stdout", all_read);
        peak_rss_kb(pid)
    }));
    std::fs::write(&marker, "").unwrap();
    let peak_kb = match result {
        Ok(kb) => kb,
        Err(e) => {
            let _ = child.kill();
            std::panic::resume_unwind(e);
        }
    };
    let status = child.wait().unwrap();
    let nonzero = reader.join().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(counted.load(std::sync::atomic::Ordering::SeqCst), SIZE);
    assert!(!nonzero, "the job's bytes came through unchanged");
    assert!(
        peak_kb < 50 * 1024,
        "bakapara's peak RSS was {peak_kb} kB while a job printed 200 MB"
    );
}

#[test]
fn text_mode_over_ssh_prints_whole_blocks_without_the_wrappers_report() {
    let cluster = SshCluster::start(&["t1", "t2"]);
    let out = bakapara()
        .arg("--ssh-config")
        .arg(cluster.ssh_config_path())
        .args(["--text", "--tag", "-q", "-k", "-S", &cluster.sshlogins(2)])
        .args([BURSTS, ":::", "a", "b", "c", "d", "e", "f"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Each line is tagged with its own job's input.
    let untag = |s: &str| -> String {
        s.lines()
            .map(|l| {
                let (tag, rest) = l.split_once('\t').expect("a tagged line");
                assert_eq!(tag, rest.split(' ').next().unwrap(), "{l:?}");
                format!("{rest}\n")
            })
            .collect()
    };
    let stdout = untag(&text(&out.stdout));
    let stderr = untag(&text(&out.stderr));
    let inputs = ["a", "b", "c", "d", "e", "f"];
    assert_eq!(assert_blocks(&stdout, "out", 200), inputs);
    assert_eq!(assert_blocks(&stderr, "err", 200), inputs);
}

#[test]
fn results_writes_each_jobs_streams_and_seq_in_gnu_parallels_layout() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r");
    let r_arg = r.to_str().unwrap();
    let job = "echo out <1> <2>; echo err <2> >&2; printf x";
    let out = run(&[
        "--results",
        r_arg,
        "--capture-limit",
        "3",
        "-k",
        job,
        ":::",
        "a/b",
        "c",
        ":::",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let read = |p: &str| std::fs::read_to_string(r.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    // A "/" in a value is written "\_", as GNU Parallel does.
    assert_eq!(read("1/a\\_b/2/1/stdout"), "out a/b 1\nx");
    assert_eq!(read("1/a\\_b/2/1/stderr"), "err 1\n");
    assert_eq!(read("1/a\\_b/2/1/seq"), "1");
    assert_eq!(read("1/c/2/1/stdout"), "out c 1\nx");
    assert_eq!(read("1/c/2/1/seq"), "2");
    // The result lines are as without --results: captured up to the limit.
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["result"]["stdout"], "out");
    assert_eq!(lines[0]["result"]["stdout_truncated"], true);
    assert_eq!(lines[1]["result"]["stderr"], "err");

    // With --text too: printed, and written.
    let r2 = dir.path().join("r2");
    let out = run(&[
        "--text",
        "-q",
        "--results",
        r2.to_str().unwrap(),
        "echo hi <>",
        ":::",
        "",
        "..",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("hi ..\n"));
    // Values that cannot be a directory name of their own stay inside DIR.
    let read2 =
        |p: &str| std::fs::read_to_string(r2.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert_eq!(read2("1/\\empty/stdout"), "hi \n");
    assert_eq!(read2("1/\\.\\./stdout"), "hi ..\n");
    assert!(!dir.path().join("stdout").exists());
}

#[test]
fn results_refuses_gnus_file_formats() {
    for name in ["r.csv", "r.tsv", "r.json", "r_<>/"] {
        let out = run(&["--results", name, "echo", ":::", "a"]);
        assert_eq!(out.status.code(), Some(255), "{name}");
        assert!(
            text(&out.stderr).contains("--results"),
            "{}",
            text(&out.stderr)
        );
        assert!(!Path::new(name).exists());
    }
}

/// Spawns bakapara in `dir` with stdout piped; a thread sends what it reads, chunk by chunk.
fn spawn_streaming(
    args: &[&str],
    dir: &Path,
) -> (std::process::Child, std::sync::mpsc::Receiver<Vec<u8>>) {
    let mut child = bakapara()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bakapara starts");
    let mut out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut chunk = vec![0u8; 4096];
        while let Ok(n @ 1..) = out.read(&mut chunk) {
            if tx.send(chunk[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Reads from `rx` into `got` until it holds `want`; panics after a minute.
fn read_until_seen(rx: &std::sync::mpsc::Receiver<Vec<u8>>, got: &mut Vec<u8>, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !String::from_utf8_lossy(got).contains(want) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => got.extend_from_slice(&chunk),
            Err(why) => panic!(
                "never saw {want:?} ({why}); got {:?}",
                String::from_utf8_lossy(got)
            ),
        }
    }
}

/// A job step that waits (up to a minute) for file `name` to exist, else fails the job.
fn wait_for(name: &str) -> String {
    format!(
        "for i in $(seq 600); do [ -e {name} ] && break; sleep 0.1; done; [ -e {name} ] || exit 9"
    )
}

#[test]
fn line_buffer_passes_whole_lines_as_they_come() {
    let dir = tempfile::tempdir().unwrap();
    // Job 1 prints a line and half of another, then waits for the test; job 2 prints its line
    // in the middle of job 1's unfinished one.
    let job1 = format!("echo first; printf part-; {}; echo end", wait_for("go"));
    let job2 = format!("{}; echo other", wait_for("b"));
    let (mut child, rx) = spawn_streaming(
        &["--line-buffer", "-q", "-j", "2", ":::", &job1, &job2],
        dir.path(),
    );
    let mut got = Vec::new();
    // Both lines come while job 1 still runs (grouped output would wait for its end).
    read_until_seen(&rx, &mut got, "first\n");
    std::fs::write(dir.path().join("b"), "").unwrap();
    read_until_seen(&rx, &mut got, "other\n");
    assert!(
        !String::from_utf8_lossy(&got).contains("part-"),
        "half a line is held: {:?}",
        String::from_utf8_lossy(&got)
    );
    std::fs::write(dir.path().join("go"), "").unwrap();
    let status = child.wait().unwrap();
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(60)) {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(status.code(), Some(0));
    assert_eq!(text(&got), "first\nother\npart-end\n");
}

#[test]
fn line_buffer_tags_each_line_as_it_comes() {
    let dir = tempfile::tempdir().unwrap();
    let job1 = format!("printf 'a1\\na'; {}; echo 2", wait_for("go"));
    let job2 = format!("{}; echo b1", wait_for("b"));
    let (mut child, rx) = spawn_streaming(
        &[
            "--line-buffer",
            "--tagstring",
            "<#>:",
            "-q",
            "-j",
            "2",
            ":::",
            &job1,
            &job2,
        ],
        dir.path(),
    );
    let mut got = Vec::new();
    read_until_seen(&rx, &mut got, "1:\ta1\n");
    std::fs::write(dir.path().join("b"), "").unwrap();
    read_until_seen(&rx, &mut got, "2:\tb1\n");
    std::fs::write(dir.path().join("go"), "").unwrap();
    let status = child.wait().unwrap();
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(60)) {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(status.code(), Some(0));
    assert_eq!(text(&got), "1:\ta1\n2:\tb1\n1:\ta2\n");
}

#[test]
fn ungroup_passes_output_through_even_within_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let job = format!("printf half-; {}; echo done", wait_for("go"));
    let (mut child, rx) = spawn_streaming(&["-u", "-q", ":::", &job], dir.path());
    let mut got = Vec::new();
    read_until_seen(&rx, &mut got, "half-");
    std::fs::write(dir.path().join("go"), "").unwrap();
    let status = child.wait().unwrap();
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(60)) {
        got.extend_from_slice(&chunk);
    }
    assert_eq!(status.code(), Some(0));
    assert_eq!(text(&got), "half-done\n");
}

#[test]
fn line_buffer_goes_with_results_and_refuses_keep_order() {
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r");
    let out = run(&[
        "--line-buffer",
        "-q",
        "--results",
        r.to_str().unwrap(),
        "echo out <>; echo err <> >&2",
        ":::",
        "a",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Printed once, as it came, and written to the results.
    assert_eq!(text(&out.stdout), "out a\n");
    assert_eq!(text(&out.stderr), "err a\n");
    assert_eq!(
        std::fs::read_to_string(r.join("1/a/stdout")).unwrap(),
        "out a\n"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("1/a/stderr")).unwrap(),
        "err a\n"
    );
    for bad in [
        &["--line-buffer", "-k"][..],
        &["-u", "--tag"],
        &["--lb", "-u"],
        &["--lb", "--json"],
    ] {
        let mut args = bad.to_vec();
        args.extend(["echo", ":::", "a"]);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(255), "{bad:?}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn results_and_line_buffer_over_ssh() {
    let cluster = SshCluster::start(&["r1"]);
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path().join("r");
    let out = bakapara()
        .arg("--ssh-config")
        .arg(cluster.ssh_config_path())
        .args([
            "--results",
            r.to_str().unwrap(),
            "-S",
            &cluster.sshlogins(2),
        ])
        .args(["echo out <>; echo err <> >&2", ":::", "a", "b"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    for v in ["a", "b"] {
        let read = |f: &str| std::fs::read_to_string(r.join("1").join(v).join(f)).unwrap();
        assert_eq!(read("stdout"), format!("out {v}\n"));
        // The wrapper's report is not part of the job's stderr. (What the remote login
        // shell's profile may print comes before the job's own.)
        let stderr = read("stderr");
        assert!(stderr.ends_with(&format!("err {v}\n")), "{stderr:?}");
    }
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    // --line-buffer with SSH jobs: their output comes grouped per job, once.
    let out = bakapara()
        .arg("--ssh-config")
        .arg(cluster.ssh_config_path())
        .args(["--line-buffer", "-q", "-S", &cluster.sshlogins(2)])
        .args(["echo out <>", ":::", "a", "b"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut got: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    got.sort_unstable();
    assert_eq!(got, ["out a", "out b"]);
}
