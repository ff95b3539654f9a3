//! End-to-end tests of SSH runs against real sshd instances started by the test harness.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::bin::{Finished, Live};
use crate::common::sshd::{pids_with_cmdline_containing, wait_until, SshCluster, SshdHost};
use serde_json::{json, Value};

/// How long one bakapara run may take before the test gives up (the machine is busy).
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
/// How long to wait for a condition (jobs running, processes gone).
const WAIT: Duration = Duration::from_secs(60);

fn bakapara(cluster: &SshCluster) -> Command {
    let mut cmd = crate::common::bin::bakapara();
    cmd.arg("--ssh-config").arg(cluster.ssh_config_path());
    cmd
}

fn run(cmd: Command, stdin: &str) -> (Option<i32>, Vec<Value>, String) {
    let Finished {
        code,
        lines,
        stderr,
        ..
    } = start(cmd, stdin).finish_within(RUN_TIMEOUT);
    (code, lines, stderr)
}

/// Starts `cmd` with `stdin` as its input (then closed).
fn start(mut cmd: Command, stdin: &str) -> Live {
    Live::spawn_with(&mut cmd, stdin.as_bytes().to_vec())
}

fn job_line(job: &Value) -> String {
    format!("{job}\n")
}

fn result(line: &Value) -> &Value {
    &line["result"]
}

fn seq(line: &Value) -> u64 {
    result(line)["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq: {line}"))
}

fn stdout_of(line: &Value) -> &str {
    result(line)["stdout"]
        .as_str()
        .unwrap_or_else(|| panic!("no captured stdout: {line}"))
}

/// A marker unique to this test process and call, to find a test's job processes.
fn unique(tag: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("{tag}{}{n:03}", std::process::id())
}

/// The pids of processes whose whole command line is `sleep <arg>`.
fn sleeps(arg: &str) -> Vec<u32> {
    pids_with_cmdline_containing(arg)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|raw| raw == format!("sleep\0{arg}\0").as_bytes())
        })
        .collect()
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bakapara-ssh-run-")
        .tempdir()
        .expect("a temp dir")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn jobs_spread_over_three_hosts() {
    let cluster = SshCluster::start(&["h1", "h2", "h3"]);
    let mut cmd = bakapara(&cluster);
    cmd.args([
        "-S",
        &cluster.sshlogins(2),
        "sleep 0.2; echo $BAKAPARA_TEST_HOST <>",
    ]);
    let input: String = (1..=12).map(|i| format!("{i}\n")).collect();
    let (code, lines, stderr) = run(cmd, &input);
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    assert_eq!(lines.len(), 12);
    let mut seen = std::collections::BTreeSet::new();
    for l in &lines {
        let r = &l["result"];
        let out = r["stdout"].as_str().unwrap();
        let ran_on = out.split_whitespace().next().unwrap();
        assert_eq!(
            r["host"], ran_on,
            "result.host names the host that ran it: {l}"
        );
        seen.insert(ran_on.to_string());
    }
    assert_eq!(
        seen.len(),
        3,
        "all three hosts ran jobs: {seen:?}\n{stderr}"
    );
    // Counted with the hosts still connecting when the first one was up.
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.ends_with(" jobs on 6 engines"),
        "the start line counts every host's slots: {stderr}"
    );
}

#[test]
fn many_quick_jobs_all_end_with_their_whole_output() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/8,h2/8", "echo out <>; echo err <> >&2"]);
    let input: String = (1..=200).map(|i| format!("{i}\n")).collect();
    let live = start(cmd, &input);
    let Finished {
        status,
        lines,
        stderr,
        ..
    } = live.finish_within(Duration::from_secs(90));
    let bad: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            let i = l["input"].as_str().unwrap_or_default();
            let r = result(l);
            r["status"] != "ok"
                || r["code"] != 0
                || r["stdout"] != format!("out {i}\n").as_str()
                || r["stderr"] != format!("err {i}\n").as_str()
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{} jobs lost output or failed: {bad:#?}\nsshd logs:\n{}",
        bad.len(),
        cluster
            .hosts()
            .iter()
            .map(|h| format!("{}: {}", h.name(), h.log()))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(lines.len(), 200, "{stderr}");
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn large_remote_output_arrives_whole() {
    // OpenSSH's multiplexing drops what is still buffered for a session when its client lets
    // go right after the exit status (openssh-rust/openssh#103): the last bytes of a big
    // output must not be lost.
    let cluster = SshCluster::start(&["h1"]);
    let mut cmd = bakapara(&cluster);
    cmd.args([
        "-S",
        "h1/4",
        "--capture-limit",
        "4M",
        "head -c 2000000 /dev/zero | tr '\\0' x; echo; echo end <>; \
         head -c 300000 /dev/zero | tr '\\0' y >&2; echo >&2; echo end <> >&2",
    ]);
    let input: String = (1..=12).map(|i| format!("{i}\n")).collect();
    let (code, lines, stderr) = run(cmd, &input);
    assert_eq!(lines.len(), 12, "{stderr}");
    for l in &lines {
        let i = l["input"].as_str().unwrap();
        let r = result(l);
        let out = r["stdout"].as_str().unwrap_or_default();
        let err = r["stderr"].as_str().unwrap_or_default();
        assert_eq!(r["status"], "ok", "job {i}: {}", r["error"]);
        assert!(
            out.len() == 2_000_001 + format!("end {i}\n").len()
                && out.ends_with(&format!("\nend {i}\n")),
            "job {i}: stdout of {} bytes ends with {:?}",
            out.len(),
            &out[out.len().saturating_sub(20)..]
        );
        assert!(
            err.len() == 300_001 + format!("end {i}\n").len()
                && err.ends_with(&format!("\nend {i}\n")),
            "job {i}: stderr of {} bytes ends with {:?}",
            err.len(),
            &err[err.len().saturating_sub(20)..]
        );
        assert!(r.get("stdout_truncated").is_none(), "{i}");
    }
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_jobs_host_key_restricts_where_it_runs() {
    let cluster = SshCluster::start(&["h1", "h2", "h3"]);
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", &cluster.sshlogins(2)]);
    let mut input = String::new();
    for i in 0..4 {
        let echo = "sleep 0.1; echo $BAKAPARA_TEST_HOST";
        input += &job_line(&json!({"cmd": echo, "kind": "h2", "host": "h2", "i": i}));
        input += &job_line(&json!({"cmd": echo, "kind": "h1|h3", "host": ["h1", "h3"], "i": i}));
        input += &job_line(&json!({"cmd": echo, "kind": "any", "i": i}));
    }
    let (code, lines, stderr) = run(cmd, &input);
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    assert_eq!(lines.len(), 12, "{lines:#?}");
    let mut by_kind: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for l in &lines {
        let r = result(l);
        assert_eq!(r["status"], "ok", "{l}");
        let ran_on = stdout_of(l).trim().to_string();
        assert_eq!(
            r["host"],
            ran_on.as_str(),
            "result.host is where it ran: {l}"
        );
        let kind = l["kind"].as_str().unwrap().to_string();
        let allowed: &[&str] = match kind.as_str() {
            "h2" => &["h2"],
            "h1|h3" => &["h1", "h3"],
            _ => &["h1", "h2", "h3"],
        };
        assert!(
            allowed.contains(&ran_on.as_str()),
            "a {kind} job ran on {ran_on}: {l}"
        );
        // the `host` key is carried through unchanged
        match kind.as_str() {
            "h2" => assert_eq!(l["host"], "h2"),
            "h1|h3" => assert_eq!(l["host"], json!(["h1", "h3"])),
            _ => assert!(l.get("host").is_none(), "{l}"),
        }
        by_kind.entry(kind).or_default().insert(ran_on);
    }
    assert_eq!(by_kind.len(), 3, "{by_kind:?}");
}

#[test]
fn a_job_asking_for_an_unknown_host_fails_at_once_and_the_rest_run() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", &cluster.sshlogins(2)]);
    let slow = "sleep 1; echo $BAKAPARA_TEST_HOST";
    let input = [
        job_line(&json!({"cmd": slow})),
        job_line(&json!({"cmd": "echo never", "host": "nosuch"})),
        job_line(&json!({"cmd": slow})),
        job_line(&json!({"cmd": slow})),
    ]
    .concat();
    let (code, lines, stderr) = run(cmd, &input);
    assert_eq!(code, Some(1), "one job failed: {stderr}\n{lines:#?}");
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let bad = &lines[0];
    assert_eq!(
        seq(bad),
        2,
        "the unsatisfiable job's line comes first, before the 1 s jobs end: {lines:#?}"
    );
    let r = result(bad);
    assert_eq!(r["status"], "error", "{bad}");
    let why = r["error"].as_str().unwrap_or_default();
    assert!(why.contains("nosuch"), "the error names the host: {why}");
    assert!(
        r["stdout"].is_null() && r["host"].is_null(),
        "it never ran: {bad}"
    );
    for l in &lines[1..] {
        assert_eq!(result(l)["status"], "ok", "{l}");
        assert_eq!(result(l)["code"], 0, "{l}");
    }
}

#[test]
fn sixteen_slots_work_against_a_stock_max_sessions_of_ten() {
    let cluster = SshCluster::start(&["h1"]);
    let dir = tempdir();
    let mut cmd = bakapara(&cluster);
    cmd.current_dir(dir.path()).args(["-S", "h1/16"]);
    // Each job marks itself running, waits (up to ~30 s) until more than 10 jobs run at once
    // (or some job saw that already), prints how many it saw, sleeps, and unmarks itself.
    let input: String = (1..=48)
        .map(|i| {
            job_line(&json!({
                "cmd": format!(
                    "touch running.{i}; \
                     for t in $(seq 600); do set -- running.*; \
                       if [ $# -gt 10 ]; then touch seen; fi; [ -e seen ] && break; sleep 0.05; \
                     done; \
                     set -- running.*; echo $#; sleep 0.5; rm running.{i}"
                )
            }))
        })
        .collect();
    let started = Instant::now();
    let (code, lines, stderr) = run(cmd, &input);
    let took = started.elapsed();
    assert_eq!(
        code,
        Some(0),
        "{stderr}\n{lines:#?}\nsshd log of h1:\n{}",
        cluster.host("h1").log()
    );
    assert_eq!(lines.len(), 48);
    let seqs: BTreeSet<u64> = lines.iter().map(seq).collect();
    assert_eq!(seqs.len(), 48);
    let mut most = 0;
    for l in &lines {
        let r = result(l);
        assert_eq!(r["status"], "ok", "{l}");
        assert_eq!(r["code"], 0, "{l}");
        assert_eq!(r["host"], "h1", "{l}");
        let n: usize = stdout_of(l).trim().parse().expect("a count");
        most = most.max(n);
    }
    assert!(
        dir.path().join("seen").exists() && most > 10,
        "more than 10 jobs ran at once on h1 (most seen: {most}, in {took:?})\n{stderr}"
    );
}

#[test]
fn a_host_lost_mid_run_has_its_jobs_rerun_elsewhere() {
    // h2's sessions are SIGKILLed mid-run, maybe mid-login: no .bashrc (see the helper).
    let cluster = SshCluster::start(&["h1", "h2", "h3"]);
    let dir = tempdir();
    let mut cmd = bakapara(&cluster);
    cmd.current_dir(dir.path()).args(["-S", "h1/3,h2/3,h3/3"]);
    let input: String = (1..=60)
        .map(|i| {
            job_line(&json!({
                "cmd": format!("touch on.$BAKAPARA_TEST_HOST.{i}; sleep 0.3; echo $BAKAPARA_TEST_HOST")
            }))
        })
        .collect();
    let live = start(cmd, &input);
    // Some jobs are done, and some job has started on h2 and has no result yet.
    let running_on_h2 = |lines: &[Value]| -> Vec<u64> {
        let done_on_h2: BTreeSet<u64> = lines
            .iter()
            .filter(|l| result(l)["host"] == "h2")
            .map(seq)
            .collect();
        (1..=60)
            .filter(|i| dir.path().join(format!("on.h2.{i}")).exists() && !done_on_h2.contains(i))
            .collect()
    };
    wait_until(WAIT, "some jobs done and some running on h2", || {
        let lines = live.lines();
        lines.len() >= 6 && !running_on_h2(&lines).is_empty()
    });
    cluster.host("h2").kill_hard();
    let Finished {
        status,
        lines,
        stderr,
        ..
    } = live.finish_within(RUN_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{stderr}\n{lines:#?}");
    assert_eq!(lines.len(), 60, "one line per job: {lines:#?}\n{stderr}");
    let seqs: BTreeSet<u64> = lines.iter().map(seq).collect();
    assert_eq!(seqs, (1..=60).collect(), "each job exactly once");
    for l in &lines {
        let r = result(l);
        assert_eq!(r["status"], "ok", "{l}\n{stderr}");
        assert_eq!(r["code"], 0, "{l}");
        assert_eq!(r["host"], stdout_of(l).trim(), "{l}");
    }
    // The jobs that had started on h2 but ended nowhere: run again on another host.
    let lost = running_on_h2(&lines);
    assert!(!lost.is_empty(), "some job was running on h2 when it died");
    for l in lines.iter().filter(|l| lost.contains(&seq(l))) {
        let r = result(l);
        assert!(r["attempts"].as_u64().unwrap() >= 2, "{l}");
        assert_ne!(r["host"], "h2", "{l}");
    }
    assert!(
        stderr.contains("host h2 is down"),
        "stderr says h2 is down:\n{stderr}"
    );
}

#[test]
fn ctrl_c_aborts_remote_jobs_and_leaves_no_process_on_any_host() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let arg = format!("1234.{}", unique(""));
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", &cluster.sshlogins(2)]);
    let input: String = (0..6)
        .map(|_| job_line(&json!({"cmd": format!("sleep {arg}")})))
        .collect();
    let live = start(cmd, &input);
    wait_until(WAIT, "four remote sleeps", || sleeps(&arg).len() >= 4);
    let hosts_running: BTreeSet<String> = sleeps(&arg)
        .iter()
        .filter_map(|pid| {
            let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            env.split(|&b| b == 0)
                .find_map(|e| e.strip_prefix(b"BAKAPARA_TEST_HOST="))
                .map(|h| String::from_utf8_lossy(h).into_owned())
        })
        .collect();
    assert_eq!(
        hosts_running.len(),
        2,
        "jobs run on both hosts: {hosts_running:?}"
    );
    nix::sys::signal::kill(live.pid(), nix::sys::signal::Signal::SIGINT).expect("send SIGINT");
    let Finished {
        status,
        lines,
        stderr,
        ..
    } = live.finish_within(Duration::from_secs(60));
    assert_eq!(
        status.signal(),
        Some(2),
        "bakapara dies of SIGINT: {status:?}\n{stderr}"
    );
    assert_eq!(
        lines.len(),
        6,
        "every job read has its line: {lines:#?}\n{stderr}"
    );
    let seqs: BTreeSet<u64> = lines.iter().map(seq).collect();
    assert_eq!(seqs, (1..=6).collect());
    for l in &lines {
        let r = result(l);
        assert_eq!(r["status"], "aborted", "{l}");
        if !r["host"].is_null() {
            // it ran, and died of bakapara's SIGTERM: a signal and no exit code
            assert_eq!(r["signal"], "SIGTERM", "{l}");
            assert!(r["code"].is_null(), "{l}");
        }
    }
    let ran = lines
        .iter()
        .filter(|l| !result(l)["host"].is_null())
        .count();
    assert_eq!(ran, 4, "four jobs were running: {lines:#?}");
    wait_until(Duration::from_secs(10), "no job process left", || {
        pids_with_cmdline_containing(&arg).is_empty()
    });
    for h in cluster.hosts() {
        wait_until(
            Duration::from_secs(10),
            &format!("no session process left on {}", h.name()),
            || h.session_pids().is_empty(),
        );
    }
}

#[test]
fn an_unreachable_host_is_left_out_and_the_run_goes_on() {
    let cluster = SshCluster::start(&["h1", "h9"]);
    cluster.host("h9").stop();
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/2,h9/2", "echo $BAKAPARA_TEST_HOST <>"]);
    let (code, lines, stderr) = run(cmd, "a\nb\nc\nd\ne\nf\n");
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    assert!(
        stderr.contains("host h9 cannot be reached"),
        "stderr warns about h9:\n{stderr}"
    );
    assert_eq!(lines.len(), 6);
    for l in &lines {
        assert_eq!(result(l)["status"], "ok", "{l}");
        assert_eq!(result(l)["host"], "h1", "{l}");
        assert!(stdout_of(l).starts_with("h1 "), "{l}");
    }

    // A job only h9 may run waits for it (it may come up) as long as --host-timeout.
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/2,h9/2", "--host-timeout", "1s"]);
    let input = [
        job_line(&json!({"cmd": "echo $BAKAPARA_TEST_HOST", "host": "h9"})),
        job_line(&json!({"cmd": "echo $BAKAPARA_TEST_HOST"})),
    ]
    .concat();
    let (code, lines, stderr) = run(cmd, &input);
    assert_eq!(code, Some(1), "the h9 job failed: {stderr}\n{lines:#?}");
    let by_seq: BTreeMap<u64, &Value> = lines.iter().map(|l| (seq(l), l)).collect();
    let h9 = result(by_seq[&1]);
    assert_eq!(h9["status"], "error", "{h9}");
    let why = h9["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("h9") && why.contains("could not be reached"),
        "the error says h9 could not be reached: {why}"
    );
    assert_eq!(result(by_seq[&2])["status"], "ok");
    assert_eq!(stdout_of(by_seq[&2]), "h1\n");
}

#[test]
fn cd_out_err_and_env_act_on_the_remote_host() {
    let cluster = SshCluster::start(&["h1"]);
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let mut cmd = bakapara(&cluster);
    cmd.current_dir(dir.path())
        .env("BAKAPARA_TEST_LOCAL", "it's \"$(local)\" too")
        .args(["-S", "h1/2", "--env", "BAKAPARA_TEST_LOCAL"]);
    let input = [
        job_line(&json!({
            "cmd": "echo \"$V on $BAKAPARA_TEST_HOST\"; echo oops >&2; pwd > where.txt",
            "cd": "sub",
            "out": "o/out.txt",
            "err": "e.txt",
            "env": {"V": "x y"},
        })),
        job_line(
            &json!({"cmd": "printf '%s|%s' \"$BAKAPARA_TEST_LOCAL\" \"$BAKAPARA_TEST_HOST\""}),
        ),
    ]
    .concat();
    let (code, lines, stderr) = run(cmd, &input);
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    let by_seq: BTreeMap<u64, &Value> = lines.iter().map(|l| (seq(l), l)).collect();
    let first = by_seq[&1];
    assert_eq!(result(first)["status"], "ok", "{first}");
    assert!(
        result(first).get("stdout").is_none() && result(first).get("stderr").is_none(),
        "streams that went to files are not captured: {first}"
    );
    let sub = dir.path().join("sub");
    assert_eq!(read(&sub.join("o/out.txt")), "x y on h1\n");
    assert_eq!(read(&sub.join("e.txt")), "oops\n");
    assert_eq!(
        read(&sub.join("where.txt")).trim(),
        sub.canonicalize().unwrap().to_str().unwrap()
    );
    assert_eq!(stdout_of(by_seq[&2]), "it's \"$(local)\" too|h1");
}

#[test]
fn remote_output_comes_back_byte_exact_without_the_wrappers_end_lines() {
    // The wrapper ends stdout with an end line and stderr with its report; neither may show,
    // and what the job wrote before them must be whole: NUL bytes, no final newline.
    let cluster = SshCluster::start(&["h1"]);
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/2", "printf 'a\\0b\\n\\0<>'; printf 'e\\0<>' >&2"]);
    let (code, lines, stderr) = run(cmd, "x\ny\n");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines.len(), 2, "{stderr}");
    for l in &lines {
        let i = l["input"].as_str().unwrap();
        let r = result(l);
        assert_eq!(r["stdout"], format!("a\0b\n\0{i}"), "{r}");
        assert_eq!(r["stderr"], format!("e\0{i}"), "{r}");
    }
}

#[test]
fn remote_exit_codes_255_and_127_are_the_jobs_codes_not_transport_failures() {
    let cluster = SshCluster::start(&["h1"]);
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/2"]);
    let input = [
        job_line(&json!({"cmd": "exit 255"})),
        job_line(&json!({"cmd": "echo out; echo err >&2; exit 255"})),
        job_line(&json!({"cmd": "echo fine"})),
        job_line(&json!({"cmd": "exit 127"})),
        job_line(&json!({"cmd": "bakapara-no-such-command-xyz"})),
    ]
    .concat();
    let (code, lines, stderr) = run(cmd, &input);
    assert_eq!(
        code,
        Some(4),
        "two jobs had code 255, two 127: {stderr}\n{lines:#?}"
    );
    let by_seq: BTreeMap<u64, &Value> = lines.iter().map(|l| (seq(l), l)).collect();
    assert_eq!(by_seq.len(), 5);
    // 127 ("command not found") is the job's code too, not "the remote command could not be
    // executed"
    for s in [4, 5] {
        let r = result(by_seq[&s]);
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["code"], 127, "{r}");
        assert_eq!(r["attempts"], 1, "{r}");
    }
    for s in [1, 2] {
        let r = result(by_seq[&s]);
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["code"], 255, "{r}");
        assert_eq!(r["attempts"], 1, "{r}");
        assert_eq!(r["host"], "h1", "{r}");
    }
    assert_eq!(result(by_seq[&2])["stdout"], "out\n");
    // (the login shell's own stderr, e.g. from ~/.bashrc, may come first)
    let err = result(by_seq[&2])["stderr"].as_str().unwrap_or_default();
    assert!(err.ends_with("err\n"), "{err:?}");
    assert_eq!(result(by_seq[&3])["code"], 0);
    assert!(!stderr.contains("is down"), "no host was lost:\n{stderr}");
}

#[test]
fn remote_jobs_past_their_timeout_are_stopped_by_sigterm() {
    let cluster = SshCluster::start(&["h1"]);
    let arg = format!("1234.{}", unique(""));
    let mut cmd = bakapara(&cluster);
    // The timeout counts from the job's start, remote login included, so the quick job gets
    // a generous one of its own (its `timeout` key wins over --timeout).
    cmd.args(["-S", "h1/7", "--timeout", "3s", "--grace", "1s"]);
    let mut input: String = (0..6)
        .map(|_| job_line(&json!({"cmd": format!("sleep {arg}")})))
        .collect();
    input += &job_line(&json!({"cmd": "echo quick", "timeout": 120}));
    let started = Instant::now();
    let (code, lines, stderr) = run(cmd, &input);
    let took = started.elapsed();
    assert_eq!(code, Some(6), "{stderr}\n{lines:#?}");
    let by_seq: BTreeMap<u64, &Value> = lines.iter().map(|l| (seq(l), l)).collect();
    assert_eq!(by_seq.len(), 7);
    for s in 1..=6 {
        let r = result(by_seq[&s]);
        assert_eq!(r["status"], "error", "{r}");
        let why = r["error"].as_str().unwrap_or_default();
        assert!(why.contains("timed out"), "{r}");
        // sleep dies of the TERM: a signal and no exit code
        assert_eq!(r["signal"], "SIGTERM", "{r}");
        assert!(r["code"].is_null(), "{r}");
        assert_eq!(r["host"], "h1", "{r}");
        let elapsed = r["elapsed"].as_f64().unwrap();
        assert!((2.9..30.0).contains(&elapsed), "elapsed {elapsed}: {r}");
    }
    assert!(took < Duration::from_secs(60), "{took:?}");
    assert_eq!(result(by_seq[&7])["status"], "ok", "{}", by_seq[&7]);
    assert_eq!(result(by_seq[&7])["stdout"], "quick\n");
    wait_until(
        Duration::from_secs(10),
        "the timed-out jobs are gone",
        || pids_with_cmdline_containing(&arg).is_empty(),
    );
}

#[test]
fn a_failed_job_is_retried_on_another_host() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let mut cmd = bakapara(&cluster);
    // The job fails wherever it first runs and succeeds on any other host: only a retry that
    // moves to the other host can make it ok.
    let dir = tempdir();
    let first = dir.path().join("first");
    let job = format!(
        "if [ -e {f} ]; then [ \"$(cat {f})\" != \"$BAKAPARA_TEST_HOST\" ]; \
         else echo \"$BAKAPARA_TEST_HOST\" > {f}; exit 3; fi",
        f = first.display()
    );
    cmd.args(["-S", "h1/1,h2/1", "--retries", "1"]);
    let (code, lines, stderr) = run(cmd, &job_line(&json!({ "cmd": job })));
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    let r = result(&lines[0]);
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["code"], 0, "{r}");
    assert_eq!(r["attempts"], 2, "{r}");
    let failed_on = std::fs::read_to_string(&first).expect("the first run wrote its host");
    assert_ne!(
        r["host"],
        failed_on.trim(),
        "the retry ran on another host: {r}"
    );
    assert!(stderr.contains("retry 1 of 1"), "{stderr}");
}

#[test]
fn a_job_whose_only_host_stays_down_fails_after_the_host_timeout() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let dir = tempdir();
    let started = dir.path().join("started");
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/1,h2/1", "--host-timeout", "2s"]);
    let pinned = format!("touch {}; sleep 60", started.display());
    let input = [
        job_line(&json!({"cmd": pinned, "host": "h2"})),
        job_line(&json!({"cmd": "echo anywhere"})),
    ]
    .concat();
    let live = start(cmd, &input);
    wait_until(WAIT, "the pinned job to start on h2", || started.exists());
    cluster.host("h2").kill_hard();
    let Finished {
        status,
        lines,
        stderr,
        ..
    } = live.finish_within(RUN_TIMEOUT);
    assert_eq!(status.code(), Some(1), "{stderr}\n{lines:#?}");
    let by_seq: BTreeMap<u64, &Value> = lines.iter().map(|l| (seq(l), l)).collect();
    let r = result(by_seq[&1]);
    assert_eq!(r["status"], "error", "{r}");
    let why = r["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("stayed down for more than 2 s") && why.contains("h2"),
        "{r}"
    );
    // It did start, on h2, before h2 was lost.
    assert!(r["started"].is_string(), "{r}");
    assert_eq!(r["host"], "h2", "{r}");
    assert!(r["completed"].is_null() && r["elapsed"].is_null(), "{r}");
    assert_eq!(result(by_seq[&2])["status"], "ok");
    assert!(stderr.contains("host h2 is down"), "{stderr}");
}

/// The cluster's client config with `edit` applied to its text, written into `dir`.
fn edited_config(cluster: &SshCluster, dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = edit(read(cluster.ssh_config_path()));
    let path = dir.join("ssh_config");
    std::fs::write(&path, text).expect("write the edited ssh_config");
    path
}

#[test]
fn the_users_strict_host_key_checking_refuses_an_unknown_host() {
    let cluster = SshCluster::start(&["h1"]);
    let dir = tempdir();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let strict = edited_config(&cluster, dir.path(), |text| {
        text.replace("StrictHostKeyChecking no", "StrictHostKeyChecking yes")
            .replace(
                "UserKnownHostsFile /dev/null",
                &format!("UserKnownHostsFile {}", known.display()),
            )
    });
    let mut cmd = crate::common::bin::bakapara();
    cmd.arg("--ssh-config").arg(&strict);
    cmd.args(["-S", "h1/1", "--host-timeout", "1s", "echo <>"]);
    let (_, lines, stderr) = run(cmd, "a\n");
    assert!(
        lines.iter().all(|l| result(l)["status"] != "ok"),
        "nothing ran on a host ssh itself refuses: {lines:#?}\n{stderr}"
    );
    assert!(
        stderr.contains("h1") && stderr.contains("Host key verification failed"),
        "stderr says why h1 was left out:\n{stderr}"
    );
    assert_eq!(
        read(&known),
        "",
        "the unknown host key was not trusted and written down"
    );

    // Where the config says nothing, bakapara's default (accept-new) applies.
    let lax = edited_config(&cluster, dir.path(), |text| {
        text.replace("StrictHostKeyChecking no\n", "").replace(
            "UserKnownHostsFile /dev/null",
            &format!("UserKnownHostsFile {}", known.display()),
        )
    });
    let mut cmd = crate::common::bin::bakapara();
    cmd.arg("--ssh-config").arg(&lax);
    cmd.args(["-S", "h1/1", "echo <>"]);
    let (code, lines, stderr) = run(cmd, "a\n");
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    assert!(
        !read(&known).is_empty(),
        "accept-new wrote the new key down"
    );
}

/// Runs against a temp dir of their own for `$TMPDIR`, and no `$XDG_RUNTIME_DIR`, so that the
/// run's control directory is the only thing in it.
fn with_tmpdir(cmd: &mut Command, dir: &Path) {
    cmd.env("TMPDIR", dir).env_remove("XDG_RUNTIME_DIR");
}

/// The directories in `dir`.
fn dirs_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_long_tmpdir_does_not_break_the_control_sockets() {
    let cluster = SshCluster::start(&["h1"]);
    let base = tempdir();
    let long = base
        .path()
        .join("a-temp-dir-name-long-enough-to-overflow-a-socket-path");
    std::fs::create_dir(&long).unwrap();
    let mut cmd = bakapara(&cluster);
    with_tmpdir(&mut cmd, &long);
    cmd.args(["-S", "h1/2", "echo <>"]);
    let (code, lines, stderr) = run(cmd, "a\nb\n");
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    assert_eq!(lines.len(), 2);
}

#[test]
fn a_control_directory_removed_mid_run_is_recreated() {
    let cluster = SshCluster::start(&["h1"]);
    let tmp = tempdir();
    let flags = tempdir();
    let (started, go) = (flags.path().join("started"), flags.path().join("go"));
    let mut cmd = bakapara(&cluster);
    with_tmpdir(&mut cmd, tmp.path());
    cmd.args(["-S", "h1/1", "--host-timeout", "30s"]);
    let first = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.05; done; echo first",
        started.display(),
        go.display()
    );
    let input = [
        job_line(&json!({ "cmd": first })),
        job_line(&json!({"cmd": "echo second"})),
        job_line(&json!({"cmd": "echo third"})),
    ]
    .concat();
    let live = start(cmd, &input);
    wait_until(WAIT, "the first job to start", || started.exists());
    let removed = dirs_in(tmp.path());
    assert!(
        !removed.is_empty(),
        "the run has a control directory in $TMPDIR"
    );
    for dir in removed {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::write(&go, "").unwrap();
    let Finished {
        status,
        lines,
        stderr,
        ..
    } = live.finish_within(RUN_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{stderr}\n{lines:#?}");
    assert_eq!(lines.len(), 3);
    assert!(
        dirs_in(tmp.path()).is_empty(),
        "removed at the end of the run"
    );
}

#[test]
fn a_run_in_another_pid_namespace_leaves_a_live_runs_control_directory_alone() {
    let unshared = Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !unshared {
        eprintln!("skipped: `unshare --pid` does not work here (it needs root)");
        return;
    }
    let cluster = SshCluster::start(&["h1"]);
    let tmp = tempdir();
    let flags = tempdir();
    let (started, go) = (flags.path().join("started"), flags.path().join("go"));
    let mut cmd = bakapara(&cluster);
    with_tmpdir(&mut cmd, tmp.path());
    cmd.args(["-S", "h1/1"]);
    let first = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.05; done",
        started.display(),
        go.display()
    );
    let input = [
        job_line(&json!({ "cmd": first })),
        job_line(&json!({"cmd": "echo later"})),
    ]
    .concat();
    let live = start(cmd, &input);
    wait_until(WAIT, "the first job to start", || started.exists());
    let ours = dirs_in(tmp.path());
    assert_eq!(ours.len(), 1, "{ours:?}");

    // The other run sees no process with our pid: it must still see that the run is live.
    let bin = assert_cmd::cargo::cargo_bin("bakapara");
    let mut other = Command::new("unshare");
    other.args(["--pid", "--fork"]).arg(bin);
    other.arg("--ssh-config").arg(cluster.ssh_config_path());
    with_tmpdir(&mut other, tmp.path());
    other.args(["-S", "h1/1", "echo <>"]);
    let (code, lines, stderr) = run(other, "x\n");
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    assert!(
        ours[0].exists(),
        "the live run's control directory is still there"
    );

    std::fs::write(&go, "").unwrap();
    let Finished {
        status,
        lines,
        stderr,
        ..
    } = live.finish_within(RUN_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{stderr}\n{lines:#?}");
    assert_eq!(lines.len(), 2);
}

#[test]
fn masters_and_their_sessions_end_with_the_run() {
    let cluster = SshCluster::start(&["h1"]);
    let tmp = tempdir();
    let mut cmd = bakapara(&cluster);
    with_tmpdir(&mut cmd, tmp.path());
    // Two masters (one per 6 slots).
    cmd.args(["-S", "h1/8", "echo <>"]);
    let (code, lines, stderr) = run(cmd, "a\nb\nc\n");
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    // Without a close they would stay for ControlPersist; closed, they go at once (the wait is
    // only for the processes to be reaped on a busy machine).
    let h1 = cluster.host("h1");
    let marker = tmp.path().display().to_string();
    wait_until(
        Duration::from_secs(5),
        "no master, connection or session of the run left",
        || {
            h1.connection_pids().is_empty()
                && h1.session_pids().is_empty()
                && pids_with_cmdline_containing(&marker).is_empty()
        },
    );
}

/// The thread of `pid` that is blocked writing to its fd 1 (`/proc/PID/task/TID/syscall`
/// starts with `1 0x1 `: write(2) on descriptor 1), if any.
fn blocked_on_stdout(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|mut tasks| {
        tasks.any(|task| {
            task.and_then(|t| std::fs::read_to_string(t.path().join("syscall")))
                .is_ok_and(|call| call.starts_with("1 0x1 "))
        })
    })
}

#[test]
fn a_host_that_joins_as_the_run_ends_leaves_no_master_behind() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    // h2 cannot log in until the run has done all its jobs on h1.
    let relay = crate::common::relay::Relay::in_front_of(&cluster, "h2");
    relay.cut();
    let tmp = tempdir();
    // The user's ControlPersist: a master left to it would stay a minute.
    let config = edited_config(&cluster, tmp.path(), |text| {
        format!("Host *\n    ControlPersist 60\n{text}")
    });
    let mut cmd = crate::common::bin::bakapara();
    cmd.arg("--ssh-config").arg(&config);
    with_tmpdir(&mut cmd, tmp.path());
    // A result line larger than a pipe holds: the run ends with its line still being written.
    cmd.args([
        "-S",
        "h1/1,h2/1",
        "head -c 300000 /dev/zero | tr '\\0' x; : <>",
    ]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("bakapara starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"1\n")
        .expect("the input");
    let pid = child.id();
    wait_until(WAIT, "the one job's line waiting for a reader", || {
        blocked_on_stdout(pid)
    });
    // h2 joins now: after the run's last job, before it has ended.
    relay.restore();
    let h2 = cluster.host("h2");
    wait_until(WAIT, "h2's agent up", || !h2.session_pids().is_empty());
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut out)
        .expect("read stdout");
    let mut stderr = String::new();
    let _ = child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr);
    let status = child.wait().expect("bakapara ends");
    assert_eq!(status.code(), Some(0), "{stderr}");
    let lines = crate::common::bin::parse_lines(&out);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(result(&lines[0])["host"], "h1", "{stderr}");
    let marker = tmp.path().display().to_string();
    wait_until(
        Duration::from_secs(5),
        "no master, connection or session of the run left on either host",
        || {
            cluster.host("h1").connection_pids().is_empty()
                && h2.connection_pids().is_empty()
                && cluster.session_pids().is_empty()
                && pids_with_cmdline_containing(&marker).is_empty()
        },
    );
}

#[test]
fn ipv6_literals_work_in_sshlogin() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 on the loopback interface");
        return;
    }
    let host = SshdHost::builder("h6").ipv6().start();
    let dir = tempdir();
    let config = dir.path().join("ssh_config");
    let user = crate::common::sshd::current_user();
    let block = format!(
        "    User {user}\n    IdentityFile \"{key}\"\n    IdentitiesOnly yes\n\
         \x20   StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n\
         \x20   BatchMode yes\n    LogLevel ERROR\n",
        key = host.identity_file().display()
    );
    // `::1` alone takes its port from the config.
    std::fs::write(
        &config,
        format!("Host ::1\n    Port {}\n{block}", host.port()),
    )
    .unwrap();
    for sshlogin in [format!("[::1]:{}/2", host.port()), "::1/2".to_string()] {
        let mut cmd = crate::common::bin::bakapara();
        cmd.arg("--ssh-config").arg(&config);
        cmd.args(["-S", &sshlogin, "echo $BAKAPARA_TEST_HOST <>"]);
        let (code, lines, stderr) = run(cmd, "a\nb\n");
        assert_eq!(code, Some(0), "-S {sshlogin}: {stderr}\n{lines:#?}");
        let name = sshlogin.trim_end_matches("/2");
        for l in &lines {
            assert_eq!(result(l)["host"], name, "{l}");
            assert!(stdout_of(l).starts_with("h6 "), "{l}");
        }
        assert_eq!(lines.len(), 2);
    }
}

/// A TCP port that accepts connections and never says a word (a host whose sshd hangs): ssh
/// waits there until its `ConnectTimeout`.
fn silent_port() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[test]
fn jobs_start_on_the_first_ready_host_without_waiting_for_a_hanging_one() {
    let cluster = SshCluster::start(&["h1"]);
    let (_listener, port) = silent_port();
    let dir = tempdir();
    let config = edited_config(&cluster, dir.path(), |mut text| {
        text.push_str(&format!(
            "\nHost hang\n    HostName 127.0.0.1\n    Port {port}\n    ConnectTimeout 300\n\
             \x20   BatchMode yes\n"
        ));
        text
    });
    let started = dir.path().join("started");
    let mut cmd = crate::common::bin::bakapara();
    cmd.arg("--ssh-config").arg(&config);
    cmd.args(["-S", "hang/1,h1/1", "--host-timeout", "5s"]);
    let input = [
        job_line(&json!({"cmd": format!("touch {}", started.display())})),
        job_line(&json!({"cmd": "echo $BAKAPARA_TEST_HOST", "host": "hang"})),
    ]
    .concat();
    let tmp = tempdir();
    with_tmpdir(&mut cmd, tmp.path());
    let live = start(cmd, &input);
    // The hanging host would hold everything for its 300 s ConnectTimeout.
    wait_until(Duration::from_secs(60), "a job to run on h1", || {
        started.exists()
    });
    let Finished {
        status,
        lines,
        stderr,
        ..
    } = live.finish_within(RUN_TIMEOUT);
    let marker = tmp.path().display().to_string();
    wait_until(WAIT, "the ssh still connecting to be stopped", || {
        pids_with_cmdline_containing(&marker).is_empty()
    });
    assert_eq!(status.code(), Some(1), "{stderr}\n{lines:#?}");
    let by_seq: BTreeMap<u64, &Value> = lines.iter().map(|l| (seq(l), l)).collect();
    assert_eq!(result(by_seq[&1])["host"], "h1");
    let pinned = result(by_seq[&2]);
    assert_eq!(pinned["status"], "error", "{pinned}");
    assert!(
        pinned["error"]
            .as_str()
            .unwrap_or_default()
            .contains("hang"),
        "{pinned}"
    );
}

#[test]
fn a_host_down_at_start_joins_when_it_comes_up() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    cluster.host("h2").stop();
    let dir = tempdir();
    let (started, go) = (dir.path().join("started"), dir.path().join("go"));
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/1,h2/1", "--host-timeout", "120s"]);
    let wait = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.05; done",
        started.display(),
        go.display()
    );
    let input = [
        job_line(&json!({"cmd": wait, "host": "h1"})),
        job_line(&json!({"cmd": "echo $BAKAPARA_TEST_HOST", "host": "h2"})),
    ]
    .concat();
    let tmp = tempdir();
    with_tmpdir(&mut cmd, tmp.path());
    let mut live = start(cmd, &input);
    wait_until(WAIT, "the h1 job to start", || started.exists());
    // Even with its control directory (and the ssh config there) removed meanwhile.
    for dir in dirs_in(tmp.path()) {
        std::fs::remove_dir_all(dir).unwrap();
    }
    cluster.host("h2").restart();
    live.wait_for_lines("the h2 job to end", |lines| !lines.is_empty());
    std::fs::write(&go, "").unwrap();
    let Finished {
        status,
        lines,
        stderr,
        ..
    } = live.finish_within(RUN_TIMEOUT);
    assert_eq!(status.code(), Some(0), "{stderr}\n{lines:#?}");
    let by_seq: BTreeMap<u64, &Value> = lines.iter().map(|l| (seq(l), l)).collect();
    let r = result(by_seq[&2]);
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["host"], "h2", "{r}");
    assert_eq!(stdout_of(by_seq[&2]), "h2\n");
    assert!(stderr.contains("host h2 joined"), "{stderr}");
}

#[test]
fn every_job_gets_an_error_line_when_no_host_can_be_reached() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    cluster.host("h1").stop();
    cluster.host("h2").stop();
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/1,h2/1", "--host-timeout", "1s", "echo <>"]);
    let (code, lines, stderr) = run(cmd, "a\nb\nc\n");
    assert_eq!(code, Some(3), "three failed jobs: {stderr}\n{lines:#?}");
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for l in &lines {
        let r = result(l);
        assert_eq!(r["status"], "error", "{l}");
        let why = r["error"].as_str().unwrap_or_default();
        assert!(
            why.contains("h1") && why.contains("h2") && why.contains("could not be reached"),
            "{l}"
        );
    }

    // A host ssh refuses for good (its key) fails the jobs at once, with no wait.
    let dir = tempdir();
    let known = dir.path().join("known_hosts");
    std::fs::write(&known, "").unwrap();
    let strict = edited_config(&cluster, dir.path(), |text| {
        text.replace("StrictHostKeyChecking no", "StrictHostKeyChecking yes")
            .replace(
                "UserKnownHostsFile /dev/null",
                &format!("UserKnownHostsFile {}", known.display()),
            )
    });
    cluster.host("h1").restart();
    let mut cmd = crate::common::bin::bakapara();
    cmd.arg("--ssh-config").arg(&strict);
    cmd.args(["-S", "h1/1", "--host-timeout", "1h", "echo <>"]);
    let (code, lines, stderr) = run(cmd, "a\nb\n");
    assert_eq!(code, Some(2), "{stderr}\n{lines:#?}");
    for l in &lines {
        let why = result(l)["error"].as_str().unwrap_or_default();
        assert!(why.contains("Host key verification failed"), "{l}");
    }
}

#[test]
fn the_last_jobs_spread_over_hosts_with_free_slots() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let dir = tempdir();
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/4,h2/4"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    let mut output = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next_line = || -> Value {
        let line = output.next().expect("a result line").unwrap();
        serde_json::from_str(&line).unwrap()
    };
    // First both hosts are up (each ran a job), so the next two jobs have all 8 slots to
    // choose from.
    for host in ["h1", "h2"] {
        writeln!(input, "{}", json!({"cmd": "true", "host": host})).unwrap();
    }
    for _ in 0..2 {
        assert_eq!(result(&next_line())["status"], "ok");
    }
    // The first job runs until the second has started.
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let first = format!(
        "touch {}; for i in $(seq 1200); do [ -e {} ] && break; sleep 0.05; done; \
         echo $BAKAPARA_TEST_HOST",
        one.display(),
        two.display()
    );
    let second = format!("touch {}; echo $BAKAPARA_TEST_HOST", two.display());
    writeln!(input, "{}", json!({ "cmd": first })).unwrap();
    writeln!(input, "{}", json!({ "cmd": second })).unwrap();
    drop(input);
    let hosts: BTreeSet<String> = (0..2)
        .map(|_| stdout_of(&next_line()).to_string())
        .collect();
    assert_eq!(
        hosts.len(),
        2,
        "the two jobs ran on different hosts, not both on h1: {hosts:?}"
    );
    assert!(child.wait().unwrap().success());
}

/// A TCP relay to `127.0.0.1:target` whose client-to-server direction can be cut: bytes from
/// the client are then read and dropped, as a firewall dropping a host's inbound packets would.
/// Its threads live until the test process ends.
struct Relay {
    port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
}

impl Relay {
    fn start(target: u16) -> Relay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&cut);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let flag = Arc::clone(&flag);
                std::thread::spawn(move || Relay::pump(client, server, Some(flag.as_ref())));
                std::thread::spawn(move || Relay::pump(s2, c2, None));
            }
        });
        Relay { port, cut }
    }

    fn pump(
        mut from: std::net::TcpStream,
        mut to: std::net::TcpStream,
        cut: Option<&std::sync::atomic::AtomicBool>,
    ) {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if cut
                .as_ref()
                .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
            {
                continue;
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    }
}

#[test]
fn a_result_that_arrived_keeps_its_own_elapsed_when_the_hosts_inbound_traffic_is_dropped() {
    let cluster = SshCluster::start(&["h1"]);
    let h1 = cluster.host("h1").port();
    let relay = Relay::start(h1);
    let dir = tempdir();
    // Through the relay; the master notices the dead link after 3 unanswered keepalives.
    let config = edited_config(&cluster, dir.path(), |text| {
        text.replace(
            &format!("Port {h1}\n"),
            &format!("Port {}\n    ServerAliveInterval 4\n", relay.port),
        )
    });
    let (started, cut) = (dir.path().join("started"), dir.path().join("cut"));
    let job = format!(
        "touch {}; while [ ! -e {} ]; do sleep 0.05; done; sleep 1; echo done",
        started.display(),
        cut.display()
    );
    let mut cmd = crate::common::bin::bakapara();
    cmd.arg("--ssh-config").arg(&config);
    cmd.args(["-S", "h1/1", "--host-timeout", "1s"]);
    let live = start(cmd, &job_line(&json!({ "cmd": job })));
    wait_until(WAIT, "the job to start", || started.exists());
    relay.cut.store(true, std::sync::atomic::Ordering::SeqCst);
    std::fs::write(&cut, "").unwrap();
    let Finished { lines, stderr, .. } = live.finish_within(RUN_TIMEOUT);
    assert_eq!(lines.len(), 1, "{stderr}\n{lines:#?}");
    let r = result(&lines[0]);
    assert_eq!(
        r["status"], "ok",
        "the job's report had arrived: {r}\n{stderr}"
    );
    assert_eq!(stdout_of(&lines[0]), "done\n");
    // The channel stays open ~12 s more (the acknowledgement never reaches the host): no part
    // of the job's run.
    let elapsed = r["elapsed"].as_f64().unwrap();
    assert!(elapsed < 8.0, "elapsed {elapsed}: {r}");
}

#[test]
fn after_kill_9_the_masters_and_remote_jobs_go_within_seconds() {
    let cluster = SshCluster::start(&["h1"]);
    let arg = format!("1234.{}", unique(""));
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/2"]);
    let live = start(cmd, &job_line(&json!({"cmd": format!("sleep {arg}")})));
    wait_until(WAIT, "the remote job to run", || !sleeps(&arg).is_empty());
    nix::sys::signal::kill(live.pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = live.finish_within(RUN_TIMEOUT);
    // The job is stopped when its channel closes; the idle master then goes after its
    // ControlPersist (2 s unless the user's config says otherwise; it was 10 s).
    let h1 = cluster.host("h1");
    wait_until(
        Duration::from_secs(8),
        "nothing of the killed run left on h1",
        || {
            sleeps(&arg).is_empty()
                && h1.session_pids().is_empty()
                && h1.connection_pids().is_empty()
        },
    );
}

#[test]
fn a_retry_runs_again_on_its_host_when_the_other_one_cannot_be_reached() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    cluster.host("h2").stop();
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/1,h2/1", "--retries", "1"]);
    let (code, lines, stderr) = run(cmd, &job_line(&json!({"cmd": "exit 3"})));
    assert_eq!(code, Some(1), "{stderr}\n{lines:#?}");
    let r = result(&lines[0]);
    assert_eq!(r["attempts"], 2, "{r}");
    assert_eq!(r["host"], "h1", "{r}");
}

#[test]
fn the_users_connect_timeout_wins_over_bakaparas_default() {
    let cluster = SshCluster::start(&["h1"]);
    let (_listener, port) = silent_port();
    let dir = tempdir();
    // bakapara's own default is 10 s; the user asks for 1 s on this host.
    let config = edited_config(&cluster, dir.path(), |mut text| {
        text.push_str(&format!(
            "\nHost hang\n    HostName 127.0.0.1\n    Port {port}\n    ConnectTimeout 1\n\
             \x20   BatchMode yes\n"
        ));
        text
    });
    let mut cmd = crate::common::bin::bakapara();
    cmd.arg("--ssh-config").arg(&config);
    cmd.args(["-S", "hang/1,h1/1", "--host-timeout", "6s"]);
    let input = job_line(&json!({"cmd": "true", "host": "hang"}));
    let (code, lines, stderr) = run(cmd, &input);
    assert_eq!(code, Some(1), "{stderr}\n{lines:#?}");
    // With a 10 s timeout the run would have ended (host timeout, 6 s) before ssh gave up.
    assert!(
        stderr.contains("host hang cannot be reached"),
        "ssh gave up after the user's 1 s:\n{stderr}"
    );
}

#[test]
fn nul_bytes_invalid_utf8_and_a_10_mb_line_come_back_from_the_agent_byte_exact() {
    use base64::Engine;
    let cluster = SshCluster::start(&["h1"]);
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/2", "--capture-limit", "20000000"]);
    // 10 MB of `x` as one line, then NUL, an invalid UTF-8 byte and no final newline; stderr
    // gets the same small tail.
    let job =
        "head -c 10000000 /dev/zero | tr '\\0' x; printf '\\n\\0\\377end'; printf 'e\\0\\377' >&2";
    let (code, lines, stderr) = run(cmd, &job_line(&json!({ "cmd": job })));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines.len(), 1, "{stderr}");
    let r = result(&lines[0]);
    let decode = |key: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(r[key].as_str().unwrap_or_else(|| panic!("no {key}")))
            .unwrap()
    };
    let mut want = vec![b'x'; 10_000_000];
    want.extend_from_slice(b"\n\0\xffend");
    let got = decode("stdout_base64");
    assert_eq!(got.len(), want.len());
    assert!(got == want, "stdout differs");
    assert_eq!(decode("stderr_base64"), b"e\0\xff");
    assert!(
        r.get("stdout_truncated").is_none(),
        "{}",
        r["stdout_truncated"]
    );
}

#[test]
fn after_kill_9_no_remote_job_is_left_after_5_s_even_one_that_ignores_term() {
    let cluster = SshCluster::start(&["h1"]);
    let arg = format!("2345.{}", unique(""));
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/2", "--grace", "30s"]);
    let input = [
        job_line(&json!({"cmd": format!("sleep {arg}")})),
        job_line(&json!({"cmd": format!("trap '' TERM; sleep {arg}")})),
    ]
    .concat();
    let live = start(cmd, &input);
    wait_until(WAIT, "both remote jobs to run", || sleeps(&arg).len() == 2);
    nix::sys::signal::kill(live.pid(), nix::sys::signal::Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let _ = live.finish_within(RUN_TIMEOUT);
    wait_until(Duration::from_secs(10), "the jobs to go", || {
        sleeps(&arg).is_empty()
    });
    // The agent sees its stdin close: TERM, and KILL after its own short grace (1 s), not the
    // run's 30 s.
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the jobs outlived bakapara by {took:?}"
    );
}

#[test]
fn a_process_a_remote_job_leaves_behind_ends_with_the_run() {
    let marker = crate::common::bin::marker();
    let _reaper = crate::common::bin::Reaper(marker.clone());
    let dir = tempdir();
    let mut cmd = crate::common::bin::bakapara();
    // Through the agent (a launcher host on this machine): each job ends at once and leaves
    // a sleep behind in its process group, one of them deaf to TERM.
    cmd.current_dir(dir.path()).args([
        "-S",
        "node/2",
        "--launcher",
        "env BKHOST=<host>",
        &format!("if [ <> = 2 ]; then trap '' TERM; fi; sleep 100{marker} & echo started <>"),
    ]);
    let (code, lines, stderr) = run(cmd, "1\n2\n3\n");
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    assert_eq!(lines.len(), 3, "{stderr}");
    assert!(
        lines.iter().all(|l| result(l)["status"] == "ok"),
        "{lines:#?}"
    );
    // TERM, then KILL after the grace (2 s) for the deaf one.
    wait_until(
        Duration::from_secs(5),
        "no process the jobs left behind",
        || crate::common::bin::sleepers(&marker).is_empty(),
    );
}

#[test]
fn a_launcher_host_still_starting_when_the_run_ends_leaves_nothing_running() {
    let marker = crate::common::bin::marker();
    let _reaper = crate::common::bin::Reaper(marker.clone());
    let dir = tempdir();
    // Host slow never gets its agent going: its launcher's command (a child of the launcher's
    // shell) sleeps; the run's one job runs on host quick.
    let launcher = format!(
        "env BKHOST=<host> sh -c 'if [ $BKHOST = slow ]; then sleep 100{marker}; fi; \
         exec \"$@\"' launcher"
    );
    let mut cmd = crate::common::bin::bakapara();
    cmd.current_dir(dir.path())
        .args(["-S", "quick/1,slow/1", "--launcher", &launcher, "echo <>"]);
    let started = Instant::now();
    let (code, lines, stderr) = run(cmd, "1\n");
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    assert_eq!(result(&lines[0])["host"], "quick", "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the run does not wait for the slow host's start: {:?}",
        started.elapsed()
    );
    wait_until(
        Duration::from_secs(5),
        "no process of the slow host's launcher left",
        || pids_with_cmdline_containing(&marker).is_empty(),
    );
}

#[test]
fn a_launcher_starts_the_agent_without_ssh_and_names_the_host() {
    // `env BKHOST=<host>` runs the agent on this machine: a real launcher path, no sshd.
    let dir = tempdir();
    let mut cmd = crate::common::bin::bakapara();
    cmd.current_dir(dir.path()).args([
        "-S",
        "node-a/2,node-b",
        "--launcher",
        // What a login shell's start-up files print before the agent starts is passed over.
        "echo welcome; env BKHOST=<host>",
        "printf '%s:%s' \"$BKHOST\" <>; pwd >&2",
    ]);
    let (code, lines, stderr) = run(cmd, "1\n2\n3\n4\n5\n6\n");
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    assert_eq!(lines.len(), 6, "{stderr}");
    let mut hosts = BTreeSet::new();
    for l in &lines {
        let r = result(l);
        let host = r["host"].as_str().unwrap().to_string();
        assert_eq!(
            r["stdout"],
            format!("{host}:{}", l["input"].as_str().unwrap()),
            "{r}"
        );
        // Remote jobs run in bakapara's working directory.
        assert_eq!(
            r["stderr"].as_str().unwrap().trim(),
            dir.path().canonicalize().unwrap().to_str().unwrap()
        );
        hosts.insert(host);
    }
    assert_eq!(
        hosts,
        BTreeSet::from(["node-a".to_string(), "node-b".to_string()])
    );
}

#[test]
fn a_launcher_host_makes_its_workdir_and_cleanup_removes_a_fresh_one() {
    // A launcher's host has no master connection to make the directory over: its agent makes
    // it (relative to $HOME there), and removes a `--workdir ...` one at the end with
    // --cleanup. (These runs used to give every job "files cannot be copied there".)
    let home = tempdir();
    let here = tempdir();
    let launcher = format!("env HOME={}", home.path().display());
    let pwds = |args: &[&str]| -> Vec<String> {
        let mut cmd = crate::common::bin::bakapara();
        cmd.current_dir(here.path())
            .args(["-S", "n1/2,n2", "--launcher", &launcher])
            .args(args)
            .arg("pwd");
        let (code, lines, stderr) = run(cmd, "1\n2\n3\n");
        assert_eq!(code, Some(0), "{args:?}: {stderr}\n{lines:#?}");
        assert_eq!(lines.len(), 3, "{args:?}: {stderr}");
        lines
            .iter()
            .map(|l| {
                let r = result(l);
                assert_eq!(r["status"], "ok", "{args:?}: {r}");
                r["stdout"].as_str().unwrap().trim().to_string()
            })
            .collect()
    };
    let home_dir = home.path().canonicalize().unwrap();
    let made = home_dir.join("made/here");
    for dir in pwds(&["--workdir", "made/here"]) {
        assert_eq!(Path::new(&dir), made);
    }
    let absolute = here.path().canonicalize().unwrap().join("abs/dir");
    for dir in pwds(&["--workdir", absolute.to_str().unwrap()]) {
        assert_eq!(Path::new(&dir), absolute);
    }
    for dir in pwds(&["--workdir", "~"]) {
        assert_eq!(Path::new(&dir), home_dir);
    }
    let fresh = |args: &[&str]| -> PathBuf {
        let dirs: BTreeSet<String> = pwds(args).into_iter().collect();
        assert_eq!(dirs.len(), 1, "one directory for the run: {dirs:?}");
        let dir = PathBuf::from(dirs.first().unwrap());
        assert!(
            dir.starts_with(home_dir.join(".bakapara/tmp")),
            "{}",
            dir.display()
        );
        dir
    };
    let removed = fresh(&["--workdir", "...", "--cleanup"]);
    assert!(!removed.exists(), "{} is left", removed.display());
    let kept = fresh(&["--workdir", "..."]);
    assert!(
        kept.is_dir(),
        "{} is gone without --cleanup",
        kept.display()
    );
    // A directory that cannot be made is each job's error, naming it.
    let mut cmd = crate::common::bin::bakapara();
    cmd.current_dir(here.path()).args([
        "-S",
        "n1",
        "--launcher",
        &launcher,
        "--workdir",
        "/proc/no/such/dir",
        "pwd",
    ]);
    let (code, lines, stderr) = run(cmd, "1\n");
    assert_eq!(code, Some(1), "{stderr}\n{lines:#?}");
    let r = result(&lines[0]);
    assert_eq!(r["status"], "error", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("cannot create directory /proc/no/such/dir"),
        "{r}"
    );
}

#[test]
fn a_job_ends_the_same_way_through_the_agent_as_here() {
    // Differential: the same job lines run here and through an agent (a launcher host), and
    // every result says the same of how each ended and what it wrote.
    let jobs = [
        json!({"cmd": "exit 3"}),
        json!({"cmd": "exit 143"}),
        json!({"cmd": "exit 130"}),
        json!({"cmd": "kill -TERM $$"}),
        json!({"cmd": "kill -KILL $$"}),
        json!({"cmd": "sleep 0.1; kill -SEGV $$"}),
        json!({"cmd": "trap 'exit 7' TERM; kill -TERM $$; sleep 1"}),
        json!({"cmd": "false | true"}),
        json!({"cmd": "printf 'no newline'; printf 'err' >&2"}),
        json!({"cmd": "printf '\\000\\377'"}),
        json!({"cmd": "echo $0 $-; read -t 1 x; echo \"[$x]\""}),
        json!({"cmd": "pwd", "cd": "sub"}),
        json!({"cmd": "echo \"$X\"", "env": {"X": "a\nb 'q' \"dq\" $HOME `x` \\ \u{e9}"}}),
        json!({"cmd": "[ \"$(ps -o pgid= -p $$ | tr -d ' ')\" = $$ ] && echo own group"}),
    ];
    let input: String = jobs.iter().map(job_line).collect();
    let dir = tempdir();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let mut seen = Vec::new();
    for hosts in [&["-S", ":/3"][..], &["-S", "n1/3", "--launcher", "env"]] {
        let mut cmd = crate::common::bin::bakapara();
        cmd.current_dir(dir.path()).args(hosts);
        let (_, lines, stderr) = run(cmd, &input);
        assert_eq!(lines.len(), jobs.len(), "{hosts:?}: {stderr}");
        let by_seq: BTreeMap<u64, Value> = lines
            .iter()
            .map(|l| {
                let mut r = result(l).clone();
                for k in [
                    "host",
                    "engine_id",
                    "submitted",
                    "started",
                    "completed",
                    "received",
                    "elapsed",
                    "msg_id",
                ] {
                    r.as_object_mut().unwrap().remove(k);
                }
                (seq(l), r)
            })
            .collect();
        seen.push(by_seq);
    }
    for (seq, here) in &seen[0] {
        assert_eq!(
            Some(here),
            seen[1].get(seq),
            "job {seq}: {}",
            jobs[usize::try_from(*seq).unwrap() - 1]
        );
    }
    // (And the cases are what they say.)
    assert_eq!(seen[1][&4]["signal"], "SIGTERM");
    assert_eq!(seen[1][&2]["code"], 143);
    assert_eq!(seen[1][&14]["stdout"], "own group\n");
}

#[test]
fn a_remote_jobs_environment_may_hold_any_name_as_a_local_one() {
    // The agent's own shell variables (c is the command, w its directory, h the host...) are
    // no business of the job's: a job setting them gets its values and still runs its command,
    // as it does here. (A job with `c` in its env used to run that value as its command.)
    let names = [
        "c", "w", "h", "x", "i", "b", "d", "o", "e", "so", "se", "id", "v", "f", "fe_", "fn_", "M",
    ];
    let env: serde_json::Map<String, Value> = names
        .iter()
        .map(|n| ((*n).to_string(), json!(format!("{n} value; echo hijacked"))))
        .collect();
    let show: String = names.iter().map(|n| format!("echo \"${n}\"; ")).collect();
    let line = job_line(&json!({"cmd": format!("echo ran; {show}"), "env": env}));
    let dir = tempdir();
    let mut outputs = Vec::new();
    for hosts in [&["-S", ":"][..], &["-S", "n1", "--launcher", "env"]] {
        let mut cmd = crate::common::bin::bakapara();
        cmd.current_dir(dir.path()).args(hosts);
        let (code, lines, stderr) = run(cmd, &line);
        assert_eq!(code, Some(0), "{hosts:?}: {stderr}\n{lines:#?}");
        let r = result(&lines[0]);
        assert_eq!(r["status"], "ok", "{hosts:?}: {r}");
        outputs.push(r["stdout"].as_str().unwrap().to_string());
    }
    let expected: String = std::iter::once("ran\n".to_string())
        .chain(names.iter().map(|n| format!("{n} value; echo hijacked\n")))
        .collect();
    assert_eq!(outputs[0], expected, "here");
    assert_eq!(outputs[1], expected, "through the agent");
}

#[test]
fn a_launcher_host_refuses_file_transfers_and_bad_host_loss_limits_are_usage_errors() {
    let dir = tempdir();
    for args in [
        &[
            "-S",
            "n1",
            "--launcher",
            "env",
            "--transferfile",
            "<>",
            "cat <>",
        ][..],
        &["-S", "n1", "--launcher", " ", "true"][..],
        &["-S", "n1", "--host-loss-limit", "0", "true"][..],
        &["-S", "n1", "--host-loss-limit", "x", "true"][..],
    ] {
        let out = crate::common::bin::bakapara()
            .current_dir(dir.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{args:?}: {stderr}");
        let named = if args.contains(&"--launcher") {
            "--launcher"
        } else {
            "--host-loss-limit"
        };
        assert!(stderr.contains(named), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn a_job_lost_with_its_host_host_loss_limit_times_fails() {
    // The job kills its own agent (and so loses its host) every time it runs.
    let dir = tempdir();
    let mut cmd = crate::common::bin::bakapara();
    cmd.current_dir(dir.path())
        .args(["-S", "n1/1", "--launcher", "env", "--host-loss-limit", "2"]);
    let input = [job_line(
        &json!({"cmd": "kill -9 $PPID $(ps -o ppid= -p $PPID); sleep 5"}),
    )]
    .concat();
    let (code, lines, stderr) = run(cmd, &input);
    let by_seq: BTreeMap<u64, &Value> = lines.iter().map(|l| (seq(l), l)).collect();
    assert_eq!(by_seq.len(), 1, "{stderr}\n{lines:#?}");
    let r = result(by_seq[&1]);
    assert_eq!(r["status"], "error", "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("lost under it 2 times"),
        "{r}"
    );
    assert_eq!(r["attempts"], 2, "{r}");
    assert_eq!(code, Some(1), "{stderr}");
}

#[test]
fn one_stream_to_a_file_and_the_other_captured_each_come_back_right() {
    let cluster = SshCluster::start(&["h1"]);
    let dir = tempdir();
    let mut cmd = bakapara(&cluster);
    cmd.current_dir(dir.path()).args(["-S", "h1/2"]);
    let input = [
        job_line(&json!({"cmd": "echo to-file; echo to-err >&2", "out": "o.txt"})),
        job_line(&json!({"cmd": "echo to-out; echo to-file >&2", "err": "e.txt"})),
    ]
    .concat();
    let (code, lines, stderr) = run(cmd, &input);
    assert_eq!(code, Some(0), "{stderr}");
    let by_seq: BTreeMap<u64, &Value> = lines.iter().map(|l| (seq(l), l)).collect();
    let first = result(by_seq[&1]);
    assert!(first.get("stdout").is_none(), "{first}");
    assert_eq!(first["stderr"], "to-err\n", "{first}");
    let second = result(by_seq[&2]);
    assert_eq!(second["stdout"], "to-out\n", "{second}");
    assert!(second.get("stderr").is_none(), "{second}");
    assert_eq!(read(&dir.path().join("o.txt")), "to-file\n");
    assert_eq!(read(&dir.path().join("e.txt")), "to-file\n");
}
