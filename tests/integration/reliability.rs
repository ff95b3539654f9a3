//! Reliability: timeouts, retries, --halt, SIGHUP, --resume, results fed back in, unwritable
//! outputs and input that does not fit (SPEC §3, §5). The real binary runs real /bin/bash jobs;
//! the tests wait for conditions (processes in /proc, marker files, result lines), never for
//! a fixed time.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::common::bin::*;

/// The result lines keyed by `result.seq`; fails on a seq seen twice.
fn by_seq(lines: &[Value]) -> BTreeMap<u64, &Value> {
    let mut map = BTreeMap::new();
    for l in lines {
        let seq = l["result"]["seq"].as_u64().expect("result.seq");
        assert!(map.insert(seq, l).is_none(), "two lines for seq {seq}");
    }
    map
}

fn status(l: &Value) -> &str {
    l["result"]["status"].as_str().expect("result.status")
}

fn error(l: &Value) -> &str {
    l["result"]["error"].as_str().unwrap_or("")
}

fn run(args: &[&str], stdin: &[u8], dir: &Path) -> Finished {
    Live::spawn(args, stdin.to_vec(), dir).finish()
}

/// How many lines a counter / marker file holds (0 when it does not exist).
fn count(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

// ---------------------------------------------------------------------------------------
// 1. Timeouts
// ---------------------------------------------------------------------------------------

#[test]
fn timeout_kills_a_job_that_ignores_sigterm() {
    let dir = tempdir();
    let m = marker();
    let template = format!("trap '' TERM; : <>; sleep 100{m}");
    let out = run(
        &[
            "--timeout",
            "500ms",
            "--grace",
            "300ms",
            &template,
            ":::",
            "x",
        ],
        b"",
        dir.path(),
    );
    assert_eq!(out.lines.len(), 1, "{}", out.stderr);
    let r = &out.lines[0]["result"];
    assert_eq!(r["status"], "error", "{r}");
    assert_eq!(r["signal"], "SIGKILL", "{r}");
    let why = r["error"].as_str().unwrap_or("");
    assert!(
        why.contains("timed out") && why.contains("0.5"),
        "the error names the timeout: {why}"
    );
    assert_eq!(out.code, Some(1));
    wait_until("the job's processes are gone", || pids_with(&m).is_empty());
}

#[test]
fn the_timeout_key_of_a_job_wins_over_the_command_line() {
    let dir = tempdir();
    let m = marker();
    // One job with its own 0.5 s timeout, one without: --timeout 1h leaves it alone.
    let jobs = format!(
        "{{\"cmd\":\"trap '' TERM; sleep 100{m}\",\"timeout\":0.5,\"tag\":\"slow\"}}\n\
         {{\"cmd\":\"echo quick\",\"tag\":\"quick\"}}\n"
    );
    let out = run(
        &["--timeout", "1h", "--grace", "300ms", "-j", "2"],
        jobs.as_bytes(),
        dir.path(),
    );
    let lines = by_seq(&out.lines);
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    let slow = &lines[&1]["result"];
    assert_eq!(lines[&1]["tag"], "slow");
    assert_eq!(slow["status"], "error", "{slow}");
    assert_eq!(slow["signal"], "SIGKILL", "{slow}");
    let why = slow["error"].as_str().unwrap_or("");
    assert!(why.contains("timed out") && why.contains("0.5"), "{why}");
    assert_eq!(lines[&2]["result"]["status"], "ok");
    assert_eq!(lines[&2]["result"]["stdout"], "quick\n");
    assert_eq!(out.code, Some(1));
    wait_until("the job's processes are gone", || pids_with(&m).is_empty());
}

#[test]
fn a_timed_out_job_dies_with_its_children_and_grandchildren() {
    let dir = tempdir();
    let m = marker();
    // Two background children, one of them ignoring TERM in a subshell (a grandchild).
    let template =
        format!(": <>; sleep 100{m} & sleep 100{m} & (trap '' TERM; sleep 100{m}) & wait");
    let mut live = Live::spawn(
        &[
            "--timeout",
            "500ms",
            "--grace",
            "300ms",
            &template,
            ":::",
            "x",
        ],
        Vec::new(),
        dir.path(),
    );
    wait_until("the job's three sleeps run", || sleepers(&m).len() == 3);
    live.wait_for_lines("the timed-out result", |l| l.len() == 1);
    let out = live.finish();
    let r = &out.lines[0]["result"];
    assert_eq!(r["status"], "error", "{r}");
    assert!(
        r["error"].as_str().unwrap_or("").contains("timed out"),
        "{r}"
    );
    assert_eq!(out.code, Some(1));
    wait_until("no process with the marker is left", || {
        pids_with(&m).is_empty()
    });
}

#[test]
fn timeout_applies_while_a_background_child_holds_the_output_open() {
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    // The shell exits at once; its background sleep keeps the captured stdout open.
    let template = format!(": <>; sleep 100{m} & echo started");
    let live = Live::spawn(
        &[
            "--timeout",
            "500ms",
            "--grace",
            "300ms",
            &template,
            ":::",
            "x",
        ],
        Vec::new(),
        dir.path(),
    );
    let out = live.finish_within(Duration::from_secs(30));
    assert_eq!(out.lines.len(), 1);
    let r = &out.lines[0]["result"];
    assert_eq!(r["status"], "error", "{r}");
    assert!(
        r["error"].as_str().unwrap_or("").contains("timed out"),
        "{r}"
    );
    wait_until("the background sleep is gone", || sleepers(&m).is_empty());
}

#[test]
fn ctrl_c_stops_a_job_whose_background_child_holds_the_output_open() {
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let template = format!(": <>; sleep 100{m} & echo started");
    let live = Live::spawn(
        &["--grace", "300ms", &template, ":::", "x"],
        Vec::new(),
        dir.path(),
    );
    let bakapara_pid = live.child.id();
    // The shell is gone (reaped by bakapara), only its background sleep is left.
    wait_until("only the background sleep runs", || {
        sleepers(&m).len() == 1
            && pids_with(&m)
                .into_iter()
                .filter(|&p| p != bakapara_pid)
                .count()
                == 1
    });
    live.signal(Signal::SIGINT);
    let out = live.finish_within(Duration::from_secs(30));
    assert_eq!(out.signal, Some(nix::libc::SIGINT));
    assert_eq!(out.lines.len(), 1);
    assert_eq!(status(&out.lines[0]), "aborted", "{}", out.lines[0]);
    wait_until("the background sleep is gone", || sleepers(&m).is_empty());
}

// ---------------------------------------------------------------------------------------
// 2. Retries
// ---------------------------------------------------------------------------------------

#[test]
fn retries_run_a_failed_job_again_and_the_job_key_wins() {
    let dir = tempdir();
    let m = marker();
    let jobs = format!(
        // Fails twice, then succeeds.
        "{{\"cmd\":\"echo x >> c1; [ $(wc -l < c1) -ge 3 ]\"}}\n\
         {{\"cmd\":\"echo x >> c2; exit 7\"}}\n\
         {{\"cmd\":\"echo x >> c3; exit 5\",\"retries\":1}}\n\
         {{\"cmd\":\"echo x >> c4; exit 6\",\"retries\":0}}\n\
         {{\"cmd\":\"echo x >> c5; [ $(wc -l < c5) -ge 2 ] || sleep 100{m}\",\"timeout\":0.5}}\n"
    );
    let out = run(
        &["--retries", "2", "-j", "2", "--grace", "200ms"],
        jobs.as_bytes(),
        dir.path(),
    );
    let lines = by_seq(&out.lines);
    assert_eq!(lines.len(), 5, "{}", out.stderr);
    let summary = |seq: u64| {
        let r = &lines[&seq]["result"];
        (
            r["status"].as_str().unwrap().to_string(),
            r["code"].as_i64(),
            r["attempts"].as_u64().unwrap(),
        )
    };
    assert_eq!(summary(1), ("ok".into(), Some(0), 3));
    assert_eq!(summary(2), ("ok".into(), Some(7), 3));
    assert_eq!(summary(3), ("ok".into(), Some(5), 2));
    assert_eq!(summary(4), ("ok".into(), Some(6), 1));
    // A timeout is a failure too: the second run is quick and ok.
    assert_eq!(summary(5), ("ok".into(), Some(0), 2));
    let counts: Vec<usize> = (1..=5)
        .map(|i| count(&dir.path().join(format!("c{i}"))))
        .collect();
    assert_eq!(counts, [3, 3, 2, 1, 2], "how many times each job ran");
    assert_eq!(out.code, Some(3), "jobs 2, 3 and 4 failed");
    wait_until("no sleep left", || pids_with(&m).is_empty());
}

// ---------------------------------------------------------------------------------------
// 3. --halt
// ---------------------------------------------------------------------------------------

/// Six jobs: 1 runs until told (it signals it started by `s1`), 2 waits for 1 and fails,
/// 3..6 would be quick.
fn halt_jobs(m: &str, job1: &str) -> Vec<u8> {
    let mut jobs = format!(
        "{{\"cmd\":\"touch s1; {job1}\"}}\n\
         {{\"cmd\":\"until [ -e s1 ]; do sleep 0.01; done; exit 3\"}}\n"
    )
    .replace("MARK", m);
    for i in 3..=6 {
        jobs.push_str(&format!("{{\"cmd\":\"touch s{i}; echo {i}\"}}\n"));
    }
    jobs.into_bytes()
}

#[test]
fn halt_now_kills_running_jobs_and_aborts_the_rest() {
    let dir = tempdir();
    let m = marker();
    let jobs = halt_jobs(&m, "sleep 100MARK");
    let out = run(
        &["-j", "2", "--halt", "now,fail=1", "--grace", "300ms"],
        &jobs,
        dir.path(),
    );
    let lines = by_seq(&out.lines);
    assert_eq!(
        lines.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6],
        "every job read has exactly one line: {}",
        out.stderr
    );
    let failed = &lines[&2]["result"];
    assert_eq!(
        (failed["status"].as_str(), failed["code"].as_i64()),
        (Some("ok"), Some(3))
    );
    let killed = &lines[&1]["result"];
    assert_eq!(killed["status"], "aborted", "{killed}");
    assert!(killed["started"].is_string(), "{killed}");
    assert!(
        killed["signal"].is_string() || killed["code"].is_i64(),
        "signal or code set: {killed}"
    );
    assert!(error(lines[&1]).contains("halt"), "{killed}");
    for seq in 3..=6 {
        let r = &lines[&seq]["result"];
        assert_eq!(r["status"], "aborted", "{r}");
        assert!(r["started"].is_null(), "{r}");
        assert!(error(lines[&seq]).contains("not started"), "{r}");
        assert!(
            !dir.path().join(format!("s{seq}")).exists(),
            "job {seq} did not run"
        );
    }
    assert_eq!(
        out.code,
        Some(3),
        "the exit code of job 2, which triggered the halt; the aborted jobs are not counted"
    );
    assert_eq!(out.signal, None);
    wait_until("job 1's sleep is gone", || pids_with(&m).is_empty());
}

#[test]
fn halt_soon_lets_running_jobs_finish() {
    let dir = tempdir();
    let m = marker();
    // Job 1 runs until the test sees job 2's failure reported (then the halt is in force).
    let jobs = halt_jobs(&m, "until [ -e release ]; do sleep 0.01; done; echo fine");
    let mut live = Live::spawn(&["-j", "2", "--halt", "soon,fail=1"], jobs, dir.path());
    live.wait_for_lines("job 2's failure", |lines| {
        lines.iter().any(|l| l["result"]["seq"] == 2)
    });
    std::fs::write(dir.path().join("release"), "").unwrap();
    let out = live.finish();
    let lines = by_seq(&out.lines);
    assert_eq!(
        lines.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    let r1 = &lines[&1]["result"];
    assert_eq!(
        (r1["status"].as_str(), r1["code"].as_i64()),
        (Some("ok"), Some(0)),
        "{r1}"
    );
    assert_eq!(r1["stdout"], "fine\n");
    assert_eq!(lines[&2]["result"]["code"], 3);
    for seq in 3..=6 {
        assert_eq!(status(lines[&seq]), "aborted");
        assert!(lines[&seq]["result"]["started"].is_null());
        assert!(!dir.path().join(format!("s{seq}")).exists());
    }
    assert_eq!(
        out.code,
        Some(3),
        "job 2's own exit code (GNU Parallel's rule)"
    );
}

/// `--halt` runs with one slot, so that jobs end in input order: (exit code, result lines).
fn halt_run(halt: &str, args: &[&str], stdin: &[u8]) -> (Option<i32>, Vec<String>) {
    let dir = tempdir();
    let mut all = vec!["-j", "1", "--halt", halt];
    all.extend_from_slice(args);
    let out = run(&all, stdin, dir.path());
    let lines = by_seq(&out.lines);
    assert_eq!(
        lines.len() as u64,
        *lines.keys().last().unwrap_or(&0),
        "{}",
        out.stderr
    );
    (
        out.code,
        lines.values().map(|l| status(l).to_string()).collect(),
    )
}

#[test]
fn halt_on_a_percentage_takes_it_of_the_known_total() {
    // Ten jobs; 3 and 6 fail. 20 % of 10 is 2 failures: the halt comes after job 6, not 3.
    let (code, statuses) = halt_run(
        "soon,fail=20%",
        &[
            "exit $(( <> % 3 == 0 ? <> : 0 ))",
            ":::",
            "1",
            "2",
            "3",
            "4",
            "5",
            "6",
            "7",
            "8",
            "9",
            "10",
        ],
        b"",
    );
    assert_eq!(&statuses[..6], ["ok"; 6], "jobs 1..6 ran");
    assert_eq!(&statuses[6..], ["aborted"; 4], "7..10 were not started");
    assert_eq!(code, Some(6), "job 6 triggered the halt");
}

#[test]
fn halt_on_a_percentage_of_streamed_input_waits_for_ten_finished_jobs() {
    // Read from a pipe, the total is unknown while jobs run: one failure in the first job is
    // 100 % of the finished jobs, yet no reason to stop a fail=20% run.
    let mut jobs = String::from("exit 4\n");
    for i in 2..=12 {
        jobs.push_str(&format!("echo {i}\n"));
    }
    let (code, statuses) = halt_run("soon,fail=20%", &[], jobs.as_bytes());
    assert_eq!(statuses, ["ok"; 12], "every job ran");
    assert_eq!(code, Some(1), "one failed job");
}

#[test]
fn halt_on_success_exits_0_whatever_failed_before() {
    let (code, statuses) = halt_run("now,success=1", &[], b"exit 4\ntrue\ntrue\ntrue\n");
    assert_eq!(statuses, ["ok", "ok", "aborted", "aborted"]);
    assert_eq!(code, Some(0));
    let (code, _) = halt_run("now,done=2", &[], b"exit 4\nexit 5\ntrue\n");
    assert_eq!(code, Some(0), "a done= halt exits 0 too");
}

#[test]
fn halt_triggered_by_a_job_without_an_exit_code_exits_1() {
    let (code, statuses) = halt_run("now,fail=1", &[], b"kill -9 $$\ntrue\n");
    assert_eq!(
        statuses,
        ["aborted", "aborted"],
        "killed by SIGKILL; not started"
    );
    assert_eq!(code, Some(1));
}

// ---------------------------------------------------------------------------------------
// 4. SIGHUP
// ---------------------------------------------------------------------------------------

#[test]
fn sighup_starts_no_new_job_and_lets_running_ones_finish() {
    let dir = tempdir();
    // Each job says it started, then waits for the test's go (instead of `sleep 1`, so the
    // test never races the clock).
    let input: String = (1..=6).map(|i| format!("{i}\n")).collect();
    let mut live = Live::spawn(
        &[
            "-j",
            "2",
            "touch started<>; until [ -e release ]; do sleep 0.01; done; echo <>",
        ],
        input.into_bytes(),
        dir.path(),
    );
    wait_until("two jobs started", || {
        dir.path().join("started1").exists() && dir.path().join("started2").exists()
    });
    live.signal(Signal::SIGHUP);
    live.wait_for_lines("the not-started jobs' lines", |lines| {
        lines
            .iter()
            .filter(|l| l["result"]["status"] == "aborted")
            .count()
            == 4
    });
    std::fs::write(dir.path().join("release"), "").unwrap();
    let out = live.finish();
    assert_eq!(out.signal, None, "bakapara exits normally after SIGHUP");
    let lines = by_seq(&out.lines);
    assert_eq!(
        lines.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    for seq in [1, 2] {
        let r = &lines[&seq]["result"];
        assert_eq!(
            (r["status"].as_str(), r["code"].as_i64()),
            (Some("ok"), Some(0)),
            "{r}"
        );
        assert_eq!(r["stdout"], format!("{seq}\n"));
    }
    for seq in 3..=6 {
        assert_eq!(status(lines[&seq]), "aborted");
        assert!(
            error(lines[&seq]).contains("not started"),
            "{}",
            lines[&seq]
        );
        assert!(!dir.path().join(format!("started{seq}")).exists());
    }
    assert_eq!(out.code, Some(4), "exit code = the aborted jobs");
}

// ---------------------------------------------------------------------------------------
// 5. --resume
// ---------------------------------------------------------------------------------------

/// The raw output lines by seq.
fn raw_by_seq(raw: &[Vec<u8>]) -> BTreeMap<u64, Vec<u8>> {
    raw.iter()
        .map(|line| {
            let v: Value = serde_json::from_slice(line).expect("a JSON line");
            (v["result"]["seq"].as_u64().unwrap(), line.clone())
        })
        .collect()
}

fn inputs_once(lines: &[Value], n: usize) {
    let mut inputs: Vec<String> = lines
        .iter()
        .map(|l| l["input"].as_str().expect("input").to_string())
        .collect();
    inputs.sort();
    let want: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    assert_eq!(inputs, want, "every input item has exactly one line");
}

#[test]
fn resume_runs_only_the_jobs_that_were_not_ok() {
    let dir = tempdir();
    let template = "echo run >> m<>; [ <> != 2 ] && [ <> != 5 ]";
    let input = b"1\n2\n3\n4\n5\n6\n";
    let first = run(&["-j", "2", template], input, dir.path());
    assert_eq!(first.code, Some(2), "{}", first.stderr);
    let results = dir.path().join("first.jsonl");
    std::fs::write(&results, first.raw.concat()).unwrap();
    let ran_once: Vec<usize> = (1..=6)
        .map(|i| count(&dir.path().join(format!("m{i}"))))
        .collect();
    assert_eq!(ran_once, [1; 6]);

    let second = run(
        &["-j", "2", "--resume", results.to_str().unwrap(), template],
        input,
        dir.path(),
    );
    let ran: Vec<usize> = (1..=6)
        .map(|i| count(&dir.path().join(format!("m{i}"))))
        .collect();
    assert_eq!(ran, [1, 2, 1, 1, 2, 1], "only 2 and 5 ran again");
    assert_eq!(second.lines.len(), 6);
    inputs_once(&second.lines, 6);
    let old = raw_by_seq(&first.raw);
    let new = raw_by_seq(&second.raw);
    for seq in [1, 3, 4, 6] {
        assert_eq!(
            String::from_utf8_lossy(&new[&seq]),
            String::from_utf8_lossy(&old[&seq]),
            "job {seq}'s line is copied through byte for byte"
        );
    }
    for seq in [2, 5] {
        assert_ne!(new[&seq], old[&seq], "job {seq} ran again");
    }
    assert_eq!(second.code, Some(2), "2 and 5 still fail");
}

#[test]
fn resume_after_ctrl_c_runs_exactly_the_jobs_that_were_not_ok() {
    let dir = tempdir();
    let m = marker();
    // A job is quick once its `fast<N>` file exists; else it sleeps until stopped.
    let template = format!("echo run >> m<>; [ -e fast<> ] || sleep 100{m}");
    for i in [1, 2] {
        std::fs::write(dir.path().join(format!("fast{i}")), "").unwrap();
    }
    let input = b"1\n2\n3\n4\n5\n6\n".to_vec();
    let live = Live::spawn(
        &["-j", "2", "--grace", "300ms", &template],
        input.clone(),
        dir.path(),
    );
    wait_until("jobs 3 and 4 sleep", || sleepers(&m).len() == 2);
    live.signal(Signal::SIGINT);
    let first = live.finish();
    assert_eq!(first.signal, Some(nix::libc::SIGINT), "dies of SIGINT");
    let lines = by_seq(&first.lines);
    assert_eq!(
        lines.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    let statuses: Vec<&str> = lines.values().map(|l| status(l)).collect();
    assert_eq!(
        statuses,
        ["ok", "ok", "aborted", "aborted", "aborted", "aborted"]
    );
    assert!(lines[&3]["result"]["started"].is_string());
    assert!(lines[&5]["result"]["started"].is_null());
    wait_until("the interrupted sleeps are gone", || {
        pids_with(&m).is_empty()
    });
    let results = dir.path().join("first.jsonl");
    std::fs::write(&results, first.raw.concat()).unwrap();

    for i in 3..=6 {
        std::fs::write(dir.path().join(format!("fast{i}")), "").unwrap();
    }
    let second = run(
        &["-j", "2", "--resume", results.to_str().unwrap(), &template],
        &input,
        dir.path(),
    );
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    let ran: Vec<usize> = (1..=6)
        .map(|i| count(&dir.path().join(format!("m{i}"))))
        .collect();
    assert_eq!(
        ran,
        [1, 1, 2, 2, 1, 1],
        "exactly the jobs that were not ok ran"
    );
    inputs_once(&second.lines, 6);
    let old = raw_by_seq(&first.raw);
    let new = raw_by_seq(&second.raw);
    assert_eq!(new[&1], old[&1]);
    assert_eq!(new[&2], old[&2]);
}

// ---------------------------------------------------------------------------------------
// 6. Results fed back in
// ---------------------------------------------------------------------------------------

#[test]
fn a_result_stream_fed_back_in_runs_the_jobs_again() {
    let dir = tempdir();
    let first = run(&["-k", "echo run >> m<>; echo <>"], b"a\nb\n", dir.path());
    assert_eq!(first.code, Some(0));
    // A hand-written result line too: extra keys, and an old result that must go.
    let mut again = first.raw.concat();
    again.extend_from_slice(
        br#"{"z":1,"cmd":"echo run >> mc; echo c","tag":["x",{"y":null}],"result":{"status":"error","fake":true}}"#,
    );
    again.push(b'\n');
    let second = run(&["-k"], &again, dir.path());
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert_eq!(second.lines.len(), 3);
    for name in ["ma", "mb"] {
        assert_eq!(count(&dir.path().join(name)), 2, "{name}: ran again");
    }
    assert_eq!(count(&dir.path().join("mc")), 1);
    for (old, new) in first.lines.iter().zip(&second.lines) {
        assert_eq!(old["cmd"], new["cmd"]);
        assert_eq!(old["input"], new["input"], "other keys preserved");
        assert_ne!(
            old["result"]["msg_id"], new["result"]["msg_id"],
            "a new result"
        );
    }
    let c = &second.raw[2];
    let text = String::from_utf8_lossy(c);
    assert!(
        text.starts_with(r#"{"z":1,"cmd":"echo run >> mc; echo c","tag":["x",{"y":null}],"result":{"status":"ok""#),
        "keys in their order, the old result replaced: {text}"
    );
    assert_eq!(text.matches("\"result\"").count(), 1, "{text}");
    assert!(!text.contains("fake"), "{text}");
    assert_eq!(second.lines[2]["result"]["stdout"], "c\n");
}

// ---------------------------------------------------------------------------------------
// 7. Outputs that cannot be written
// ---------------------------------------------------------------------------------------

#[test]
fn an_out_file_that_cannot_be_written_fails_only_that_job() {
    let dir = tempdir();
    let d = dir.path();
    std::fs::write(d.join("plain"), "a file, not a directory").unwrap();
    std::fs::create_dir(d.join("adir")).unwrap();
    let jobs = "{\"cmd\":\"echo one\",\"out\":\"/proc/nope/x\"}\n\
                {\"cmd\":\"echo two\"}\n\
                {\"cmd\":\"echo three\",\"out\":\"plain/x\"}\n\
                {\"cmd\":\"echo four\",\"err\":\"adir\"}\n\
                {\"cmd\":\"echo five\",\"out\":\"sub/dir/five.txt\"}\n";
    let out = run(&["-j", "2"], jobs.as_bytes(), d);
    let lines = by_seq(&out.lines);
    assert_eq!(lines.len(), 5, "{}", out.stderr);
    for (seq, path) in [(1, "/proc/nope"), (3, "plain"), (4, "adir")] {
        let l = lines[&seq];
        assert_eq!(status(l), "error", "{l}");
        assert!(error(l).contains(path), "the error names {path}: {l}");
    }
    assert_eq!(lines[&2]["result"]["stdout"], "two\n");
    assert_eq!(status(lines[&5]), "ok");
    assert_eq!(
        std::fs::read_to_string(d.join("sub/dir/five.txt")).unwrap(),
        "five\n"
    );
    assert_eq!(out.code, Some(3));
}

#[test]
fn an_out_template_that_cannot_be_written_fails_only_that_job() {
    let dir = tempdir();
    std::fs::write(dir.path().join("plain"), "").unwrap();
    let out = run(
        &["--out", "<>/out.txt", "echo <>", ":::", "plain", "fine"],
        b"",
        dir.path(),
    );
    let lines = out.lines;
    assert_eq!(lines.len(), 2);
    for l in &lines {
        if l["input"] == "plain" {
            assert_eq!(status(l), "error");
            assert!(error(l).contains("plain"), "{l}");
        } else {
            assert_eq!(status(l), "ok");
        }
    }
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fine/out.txt")).unwrap(),
        "fine\n"
    );
}

// ---------------------------------------------------------------------------------------
// 8. Input that does not fit
// ---------------------------------------------------------------------------------------

#[test]
fn a_100_mb_input_line_gets_a_result_and_other_jobs_run() {
    const BIG: usize = 100_000_000;
    let dir = tempdir();
    let mut input = b"small1\n".to_vec();
    input.resize(input.len() + BIG, b'x');
    input.extend_from_slice(b"\nsmall2\n");
    let out = run(&["-j", "2", "printf %s <> | wc -c"], &input, dir.path());
    assert_eq!(out.lines.len(), 3, "{}", out.stderr);
    let lines = by_seq(&out.lines);
    for seq in [1, 3] {
        assert_eq!(lines[&seq]["result"]["stdout"], "6\n");
    }
    let big = &lines[&2];
    assert_eq!(big["input"].as_str().map(str::len), Some(BIG));
    match status(big) {
        "ok" => assert_eq!(big["result"]["stdout"], format!("{BIG}\n")),
        "error" => {
            let why = error(big);
            assert!(
                why.contains("kernel") || why.contains("too long") || why.contains("argument"),
                "the error says why: {why}"
            );
        }
        other => panic!("unexpected status {other}"),
    }
}

#[test]
fn a_line_that_is_not_utf8_becomes_an_error_result_with_its_bytes() {
    let dir = tempdir();
    let b64 = |s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("valid base64")
    };
    // Template mode.
    let bad: &[u8] = b"caf\xe9 \xff\xfe";
    let input = [b"ok1\n".as_slice(), bad, b"\nok2\n"].concat();
    let out = run(&["echo <>"], &input, dir.path());
    let lines = by_seq(&out.lines);
    assert_eq!(lines.len(), 3, "{}", out.stderr);
    assert_eq!(status(lines[&2]), "error");
    assert!(error(lines[&2]).contains("UTF-8"), "{}", lines[&2]);
    let carried = lines[&2]["input_base64"].as_str().expect("input_base64");
    assert_eq!(b64(carried), bad);
    assert_eq!(lines[&1]["result"]["stdout"], "ok1\n");
    assert_eq!(lines[&3]["result"]["stdout"], "ok2\n");
    assert_eq!(out.code, Some(1));

    // Job-line mode: a JSON object and a plain command line.
    let json_bad: &[u8] = b"{\"cmd\":\"echo \xff\"}";
    let cmd_bad: &[u8] = b"echo \xc3\x28";
    let input = [json_bad, b"\necho fine\n", cmd_bad, b"\n"].concat();
    let out = run(&[], &input, dir.path());
    let lines = by_seq(&out.lines);
    assert_eq!(lines.len(), 3, "{}", out.stderr);
    for (seq, bytes) in [(1, json_bad), (3, cmd_bad)] {
        let l = lines[&seq];
        assert_eq!(status(l), "error", "{l}");
        assert!(error(l).contains("UTF-8"), "{l}");
        let carried = l["line_base64"].as_str().expect("line_base64");
        assert_eq!(b64(carried), bytes);
    }
    assert_eq!(lines[&2]["result"]["stdout"], "fine\n");
    assert_eq!(out.code, Some(2));
}

#[test]
fn an_empty_line_is_an_item_in_template_mode_and_skipped_in_job_mode() {
    let dir = tempdir();
    let out = run(&["-k", "echo x<>x"], b"a\n\nb\n", dir.path());
    let got: Vec<(&str, &str)> = out
        .lines
        .iter()
        .map(|l| {
            (
                l["input"].as_str().unwrap(),
                l["result"]["stdout"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("a", "xax\n"), ("", "xx\n"), ("b", "xbx\n")]);
    let out = run(&["-k"], b"echo a\n\n   \necho b\n", dir.path());
    assert_eq!(out.lines.len(), 2, "blank job lines are skipped");
}

#[test]
fn json_fields_of_the_wrong_type_give_errors_naming_the_key() {
    let dir = tempdir();
    let cases: &[(&str, &str)] = &[
        (r#"{"cmd":1}"#, "`cmd`"),
        (r#"{"nocmd":"echo"}"#, "`cmd`"),
        (r#"{"cmd":"echo","cd":["a"]}"#, "`cd`"),
        (r#"{"cmd":"echo","out":5}"#, "`out`"),
        (r#"{"cmd":"echo","err":{}}"#, "`err`"),
        (r#"{"cmd":"echo","env":"A=1"}"#, "`env`"),
        (r#"{"cmd":"echo","env":{"A":[1]}}"#, "`env.A`"),
        (r#"{"cmd":"echo","timeout":"soon"}"#, "`timeout`"),
        (r#"{"cmd":"echo","timeout":-1}"#, "`timeout`"),
        (r#"{"cmd":"echo","retries":-1}"#, "`retries`"),
        (r#"{"cmd":"echo","retries":"2"}"#, "`retries`"),
        (r#"{"cmd":"echo","host":3}"#, "`host`"),
        (r#"{"cmd":"echo","host":[1]}"#, "`host`"),
        (r#"{"cmd":"echo","host":{"a":1}}"#, "`host`"),
        (r#"{"cmd":"echo","host":["localhost",null]}"#, "`host`"),
        (r#"{"cmd":"echo" "#, "not valid JSON"),
    ];
    let mut input: String = cases.iter().map(|(line, _)| format!("{line}\n")).collect();
    input.push_str("{\"cmd\":\"echo still running\"}\n");
    let out = run(&["-j", "2"], input.as_bytes(), dir.path());
    let lines = by_seq(&out.lines);
    assert_eq!(lines.len(), cases.len() + 1, "{}", out.stderr);
    for (i, (line, key)) in cases.iter().enumerate() {
        let l = lines[&(i as u64 + 1)];
        assert_eq!(status(l), "error", "{line}: {l}");
        assert!(error(l).contains(key), "{line}: the error names {key}: {l}");
    }
    let last = lines[&(cases.len() as u64 + 1)];
    assert_eq!(last["result"]["stdout"], "still running\n");
    assert_eq!(out.code, i32::try_from(cases.len()).ok());
}

#[test]
fn a_zero_timeout_is_an_error_naming_the_key_whatever_its_type() {
    let dir = tempdir();
    let input = "{\"cmd\":\"echo a\",\"timeout\":0}\n\
                 {\"cmd\":\"echo b\",\"timeout\":\"0\"}\n\
                 {\"cmd\":\"echo c\",\"timeout\":\"0ms\"}\n";
    let out = run(&[], input.as_bytes(), dir.path());
    let lines = by_seq(&out.lines);
    assert_eq!(lines.len(), 3);
    for l in lines.values() {
        assert_eq!(status(l), "error", "{l}");
        assert!(
            error(l).contains("`timeout`"),
            "the error names the key: {l}"
        );
        assert!(
            l["result"]["started"].is_null(),
            "the job does not run: {l}"
        );
    }
}

fn check_jsonl_errors(input: &str, keys: &[&str]) {
    let dir = tempdir();
    let out = run(&["--jsonl", "-k", "echo <x>"], input.as_bytes(), dir.path());
    assert_eq!(out.lines.len(), keys.len() + 1, "{}", out.stderr);
    for (l, key) in out.lines.iter().zip(keys) {
        assert_eq!(status(l), "error", "{l}");
        assert!(error(l).contains(key), "the error names {key}: {l}");
    }
    assert_eq!(out.lines[keys.len()]["result"]["stdout"], "ok\n");
}

#[test]
fn jsonl_objects_with_a_bad_field_give_errors_naming_the_key() {
    check_jsonl_errors(
        "{\"x\":\"a\",\"host\":3}\n\
         {\"x\":\"a\",\"host\":[\"localhost\",2]}\n\
         {\"x\":\"c\",\"timeout\":\"soon\"}\n\
         {\"x\":\"c\",\"env\":[]}\n\
         {\"x\":\"ok\"}\n",
        &["`host`", "`host`", "`timeout`", "`env`"],
    );
}

#[test]
fn jsonl_objects_with_a_host_list_of_non_strings_give_errors_naming_the_key() {
    check_jsonl_errors("{\"x\":\"b\",\"host\":[1]}\n{\"x\":\"ok\"}\n", &["`host`"]);
}

#[test]
fn resume_with_a_missing_file_runs_every_job() {
    let dir = tempdir();
    let out = run(
        &["--resume", "not-yet.jsonl", "echo <>", ":::", "1", "2"],
        b"",
        dir.path(),
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.lines.len(), 2);
    assert!(
        out.stderr.contains("not-yet.jsonl does not exist"),
        "{}",
        out.stderr
    );
}

#[test]
fn resume_refuses_a_file_that_is_also_stdout() {
    let dir = tempdir();
    let first = run(&["touch ran<>; echo <>", ":::", "1", "2"], b"", dir.path());
    let results = dir.path().join("r.jsonl");
    let before = first.raw.concat();
    for append in [false, true] {
        std::fs::write(&results, &before).unwrap();
        // What `> r.jsonl` (the shell empties the file) and `>> r.jsonl` hand bakapara.
        let stdout = std::fs::OpenOptions::new()
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&results)
            .unwrap();
        std::fs::remove_file(dir.path().join("ran1")).unwrap_or_default();
        let out = bakapara()
            .args([
                "--resume",
                "r.jsonl",
                "touch ran<>; echo <>",
                ":::",
                "1",
                "3",
            ])
            .current_dir(dir.path())
            .stdout(stdout)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "append {append}: {stderr}");
        assert!(stderr.contains("stdout is the --resume file"), "{stderr}");
        assert!(!dir.path().join("ran3").exists(), "no job ran");
        if append {
            assert_eq!(std::fs::read(&results).unwrap(), before, "nothing written");
        }
    }
}

#[test]
fn resume_gives_a_copied_line_the_seq_of_this_run() {
    let dir = tempdir();
    let template = "[ <> != y ] && echo <>";
    let first = run(&["-j", "1", template], b"x\ny\n", dir.path());
    assert_eq!(first.code, Some(1), "y failed: {}", first.stderr);
    let results = dir.path().join("first.jsonl");
    std::fs::write(&results, first.raw.concat()).unwrap();
    // Asked the other way round: y runs again as job 1, x's line is copied as job 2.
    let second = run(
        &["-j", "1", "--resume", results.to_str().unwrap(), template],
        b"y\nx\n",
        dir.path(),
    );
    let lines = by_seq(&second.lines);
    assert_eq!(
        lines.keys().copied().collect::<Vec<_>>(),
        [1, 2],
        "unique seqs"
    );
    assert_eq!(lines[&1]["input"], "y");
    let mut copied = lines[&2].clone();
    assert_eq!(copied["input"], "x");
    copied["result"]["seq"] = 1.into();
    assert_eq!(copied, first.lines[0], "the old line, but for its seq");
}
