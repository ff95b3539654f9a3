//! The remote agent (issue 10) from the outside: what a user relies on when a host's link
//! is cut, when bakapara is stopped or killed, when a job keeps killing its host, and that
//! the agent's framing is binary-safe and its launcher replaceable.
//!
//! Partitions come from the relay (common/relay.rs) in front of a harness sshd: a cut link
//! stays open and silent, as a pulled cable, so only heartbeats and the agent's fence can tell.
//! The hosts are on this machine, so jobs leave their traces (stamps) in a shared temp dir.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::common::bin::{marker, sleepers, tempdir, Finished, Live, Reaper, RUN_TIMEOUT, WAIT};
use crate::common::relay::Relay;
use crate::common::sshd::{is_running, process_tree, wait_until, SshCluster, SshdHost};

fn bakapara(cluster: &SshCluster) -> Command {
    let mut cmd = crate::common::bin::bakapara();
    cmd.arg("--ssh-config").arg(cluster.ssh_config_path());
    cmd
}

fn start(mut cmd: Command, dir: &Path, stdin: String) -> Live {
    cmd.current_dir(dir);
    Live::spawn_with(&mut cmd, stdin.into_bytes())
}

fn result(line: &Value) -> &Value {
    &line["result"]
}

fn seq(line: &Value) -> u64 {
    result(line)["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq: {line}"))
}

fn by_seq(lines: &[Value]) -> BTreeMap<u64, Vec<&Value>> {
    let mut m: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for l in lines {
        m.entry(seq(l)).or_default().push(l);
    }
    m
}

fn now_epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `sleep` processes holding `marker` that run in `host`'s sessions.
fn sleepers_on(host: &SshdHost, marker: &str) -> Vec<u32> {
    let on_host: BTreeSet<u32> = host.session_pids().into_iter().collect();
    sleepers(marker)
        .into_iter()
        .filter(|p| on_host.contains(p))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The relay against a real sshd

#[test]
fn the_relay_carries_an_ssh_session_and_a_cut_silences_it_without_an_error() {
    let cluster = SshCluster::start(&["h1"]);
    let relay = Relay::in_front_of(&cluster, "h1");
    let out = cluster.ssh("h1", "echo $BAKAPARA_TEST_HOST");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"h1\n");
    assert_eq!(relay.connections(), 1, "the login went through the relay");
    // A session printing ticks: silent while cut, alive again after the restore.
    let dir = tempdir();
    let ticks = dir.path().join("ticks");
    let mut child = cluster
        .ssh_command("h1")
        .arg("while sleep 0.1; do echo tick; done")
        .stdin(std::process::Stdio::null())
        .stdout(fs::File::create(&ticks).expect("create ticks"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("run ssh");
    let count = || {
        fs::read_to_string(&ticks)
            .unwrap_or_default()
            .lines()
            .count()
    };
    wait_until(WAIT, "ticks through the relay", || count() >= 3);
    relay.cut();
    std::thread::sleep(Duration::from_millis(300));
    let at_cut = count();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(), at_cut, "no byte moves during a cut");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "ssh sees no error during a cut"
    );
    relay.restore();
    wait_until(WAIT, "ticks again after the restore", || {
        count() > at_cut + 3
    });
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// Partitions

/// One copy of a job, from its stamps: the host and the first and last moment it was seen
/// alive (its end stamp when it ended, else its last heartbeat stamp).
#[derive(Debug, Clone)]
struct JobCopy {
    pid: String,
    host: String,
    from: f64,
    to: f64,
    ended: bool,
}

/// The copies recorded in a stamps file of lines `PID HOST EVENT EPOCHREALTIME`.
fn copies(stamps: &str) -> Vec<JobCopy> {
    let mut by_pid: BTreeMap<String, JobCopy> = BTreeMap::new();
    for line in stamps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [pid, host, event, t] = f[..] else {
            panic!("a stamp line of four fields: {line:?}");
        };
        let t: f64 = t
            .parse()
            .unwrap_or_else(|e| panic!("a time in {line:?}: {e}"));
        let c = by_pid.entry(pid.to_string()).or_insert(JobCopy {
            pid: pid.to_string(),
            host: host.to_string(),
            from: t,
            to: t,
            ended: false,
        });
        c.from = c.from.min(t);
        c.to = c.to.max(t);
        c.ended |= event == "end";
    }
    by_pid.into_values().collect()
}

#[test]
fn a_partition_runs_every_job_exactly_once_and_never_two_copies_at_a_time() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let relay = Relay::in_front_of(&cluster, "h2");
    let dir = tempdir();
    let d = dir.path().display().to_string();
    let n = 24;
    // Each copy stamps its start, a heartbeat every 0.1 s while it works (5 s: longer than
    // the fence, 3 s, plus the heartbeat interval, so that a copy cut off just after its start
    // is stopped by the fence before it ends; a copy that ended on the cut-off host and whose
    // report was lost is the one way a job may run twice, and this test leaves no room for
    // it), appends its seq to done.txt at its very end, then stamps its end.
    let job = format!(
        "f={d}/stamps.<#>; s() {{ echo \"$$ $BAKAPARA_TEST_HOST $1 $EPOCHREALTIME\" >> $f; }}; \
         s start; for i in $(seq 50); do sleep 0.1; s alive; done; \
         echo <#> >> {d}/done.txt; s end"
    );
    // One slot behind the relay, so that the one job cut off there has just started.
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/4,h2/1", &job]);
    let input: String = (1..=n).map(|i| format!("{i}\n")).collect();
    let live = start(cmd, dir.path(), input);
    let stamps = |i: u64| {
        copies(&fs::read_to_string(dir.path().join(format!("stamps.{i}"))).unwrap_or_default())
    };
    // Cut while a job on h2 is less than 0.5 s into its run.
    wait_until(WAIT, "a job just started on h2", || {
        let now = now_epoch();
        (1..=n).any(|i| {
            stamps(i)
                .iter()
                .any(|c| c.host == "h2" && !c.ended && now - c.from < 0.5)
        })
    });
    relay.cut();
    let cut_at = now_epoch();
    let cut_seqs: Vec<u64> = (1..=n)
        .filter(|&i| stamps(i).iter().any(|c| c.host == "h2" && !c.ended))
        .collect();
    // The partition lasts past the fence (3 s) and bakapara's requeue (fence + grace + 0.5 s),
    // and until the cut-off jobs started again elsewhere (at most 60 s: a bakapara without a
    // fence notices the loss only after ~20 s).
    let held = Instant::now();
    wait_until(
        Duration::from_secs(60),
        "the cut-off jobs started again on another host",
        || {
            held.elapsed() >= Duration::from_secs(8)
                && cut_seqs
                    .iter()
                    .all(|&i| stamps(i).iter().any(|c| c.from > cut_at))
        },
    );
    relay.restore();
    let Finished {
        code,
        lines,
        stderr,
        ..
    } = live.finish_within(RUN_TIMEOUT);

    let mut all: Vec<(u64, Vec<JobCopy>)> = Vec::new();
    for i in 1..=n {
        let text = fs::read_to_string(dir.path().join(format!("stamps.{i}")))
            .unwrap_or_else(|e| panic!("job {i} never started: {e}\n{stderr}"));
        all.push((i, copies(&text)));
    }
    let cut_off: Vec<&JobCopy> = all
        .iter()
        .flat_map(|(_, c)| c)
        .filter(|c| c.host == "h2" && c.from <= cut_at && c.to >= cut_at)
        .collect();
    assert!(
        !cut_off.is_empty(),
        "some job was running on h2 when the link was cut"
    );
    let cut_pids: Vec<&str> = cut_off.iter().map(|c| c.pid.as_str()).collect();
    eprintln!("cut off on h2: job copies with pids {cut_pids:?}");
    // No two copies of one job alive together.
    for (i, cs) in &all {
        let mut cs = cs.clone();
        cs.sort_by(|a, b| a.from.total_cmp(&b.from));
        for w in cs.windows(2) {
            assert!(
                w[0].to < w[1].from,
                "job {i}: two copies alive together: {:?} and {:?} (cut at {cut_at:.3})",
                w[0],
                w[1]
            );
        }
    }
    // Every seq appended exactly once.
    let done = fs::read_to_string(dir.path().join("done.txt")).unwrap_or_default();
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for l in done.lines() {
        *counts
            .entry(l.trim().parse().expect("a seq in done.txt"))
            .or_default() += 1;
    }
    let wrong: Vec<(u64, usize)> = (1..=n)
        .map(|i| (i, counts.get(&i).copied().unwrap_or(0)))
        .filter(|(_, c)| *c != 1)
        .collect();
    assert!(
        wrong.is_empty(),
        "every seq once in done.txt; (seq, times) off: {wrong:?}\n{stderr}"
    );
    // Exactly one result line per job, ok, exit code 0.
    let m = by_seq(&lines);
    assert_eq!(
        m.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "{stderr}"
    );
    for (i, ls) in &m {
        assert_eq!(ls.len(), 1, "job {i}: one result line: {ls:#?}");
        assert_eq!(result(ls[0])["status"], "ok", "{}", ls[0]);
        assert_eq!(result(ls[0])["code"], 0, "{}", ls[0]);
    }
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn ctrl_c_during_a_partition_exits_within_5_s_and_the_fence_ends_the_cut_off_job() {
    use std::os::unix::process::ExitStatusExt;
    let cluster = SshCluster::start(&["h1", "h2"]);
    let relay = Relay::in_front_of(&cluster, "h2");
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/1,h2/1", &format!("sleep 100{m}; :")]);
    let live = start(cmd, dir.path(), "a\nb\nc\nd\n".into());
    let (h1, h2) = (cluster.host("h1"), cluster.host("h2"));
    wait_until(WAIT, "a job on each host", || {
        !sleepers_on(h1, &m).is_empty() && !sleepers_on(h2, &m).is_empty()
    });
    let cut_off = sleepers_on(h2, &m);
    relay.cut();
    std::thread::sleep(Duration::from_millis(500));
    live.signal(Signal::SIGINT);
    let sent = Instant::now();
    let Finished {
        status,
        lines,
        stderr,
        ..
    } = live.finish_within(Duration::from_secs(5));
    assert_eq!(
        status.signal(),
        Some(2),
        "dies of SIGINT: {status:?}\n{stderr}"
    );
    let m2 = by_seq(&lines);
    assert_eq!(
        m2.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "every job one line: {lines:#?}\n{stderr}"
    );
    for ls in m2.values() {
        assert_eq!(ls.len(), 1, "{ls:#?}");
        assert_eq!(result(ls[0])["status"], "aborted", "{}", ls[0]);
    }
    // The link is still cut: only the agent's fence can stop the job there.
    wait_until(
        Duration::from_secs(8),
        "the cut-off job gone (the fence)",
        || {
            let left = sleepers(&m);
            cut_off.iter().all(|p| !left.contains(p))
        },
    );
    let fenced_after = sent.elapsed();
    wait_until(Duration::from_secs(5), "no job process left", || {
        sleepers(&m).is_empty()
    });
    eprintln!("the cut-off job was gone {fenced_after:?} after Ctrl-C");
    relay.restore();
}

#[test]
fn a_timeout_during_a_partition_ends_the_run_and_the_fence_ends_the_job() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let relay = Relay::in_front_of(&cluster, "h2");
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let mut cmd = bakapara(&cluster);
    cmd.args([
        "-S",
        "h1/1,h2/1",
        "--timeout",
        "3s",
        &format!("sleep 100{m}; :"),
    ]);
    // Four jobs: with one queued behind each running one, both hosts get work whichever
    // comes up first.
    let live = start(cmd, dir.path(), "a\nb\nc\nd\n".into());
    let (h1, h2) = (cluster.host("h1"), cluster.host("h2"));
    wait_until(WAIT, "a job on each host", || {
        !sleepers_on(h1, &m).is_empty() && !sleepers_on(h2, &m).is_empty()
    });
    relay.cut();
    // Whether the cut-off job times out first or its host is lost first (and it reruns on h1
    // until its timeout), bakapara does not wait for the silent host.
    let Finished { lines, stderr, .. } = live.finish_within(Duration::from_secs(30));
    let by = by_seq(&lines);
    assert_eq!(by.len(), 4, "{lines:#?}\n{stderr}");
    for ls in by.values() {
        assert_eq!(ls.len(), 1, "{ls:#?}");
        assert_eq!(result(ls[0])["status"], "error", "{}", ls[0]);
    }
    wait_until(
        Duration::from_secs(8),
        "no job process left, the cut-off one included",
        || sleepers(&m).is_empty(),
    );
    relay.restore();
}

#[test]
fn jobs_over_a_slow_link_all_come_back_whole_and_in_their_own_results() {
    // A 100 ms round trip: pipelined jobs must not mix their outputs or results up.
    let cluster = SshCluster::start(&["h1"]);
    let relay = Relay::in_front_of(&cluster, "h1");
    relay.set(crate::common::relay::Mode::Delay(Duration::from_millis(
        100,
    )));
    let dir = tempdir();
    let mut cmd = bakapara(&cluster);
    cmd.args([
        "-S",
        "h1/4",
        "printf '%s:%s' <#> \"$(seq <#>)\"; echo err<#> >&2",
    ]);
    let n = 40;
    let input: String = (1..=n).map(|i| format!("{i}\n")).collect();
    let Finished {
        code,
        lines,
        stderr,
        ..
    } = start(cmd, dir.path(), input).finish_within(RUN_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}");
    let by = by_seq(&lines);
    assert_eq!(by.len(), usize::try_from(n).expect("a count"), "{stderr}");
    for (i, ls) in &by {
        assert_eq!(ls.len(), 1, "{ls:#?}");
        let r = result(ls[0]);
        let seq_text: Vec<String> = (1..=*i).map(|k| k.to_string()).collect();
        assert_eq!(r["stdout"], format!("{i}:{}", seq_text.join("\n")), "{r}");
        assert_eq!(r["stderr"], format!("err{i}\n"), "{r}");
    }
    assert!(relay.connections() > 0);
}

// ---------------------------------------------------------------------------------------------
// SIGKILL of bakapara

#[test]
fn kill_9_of_bakapara_leaves_nothing_on_any_host_after_5_s() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/2,h2/2", &format!("sleep 100{m}; :")]);
    let input: String = (1..=8).map(|i| format!("{i}\n")).collect();
    let live = start(cmd, dir.path(), input);
    wait_until(WAIT, "jobs running on both hosts", || {
        sleepers_on(cluster.host("h1"), &m).len() == 2
            && sleepers_on(cluster.host("h2"), &m).len() == 2
    });
    live.signal(Signal::SIGKILL);
    let _ = live.finish_within(RUN_TIMEOUT);
    wait_until(
        Duration::from_secs(5),
        "no job and no session process on any host 5 s after kill -9",
        || sleepers(&m).is_empty() && cluster.session_pids().is_empty(),
    );
}

#[test]
fn an_agent_stopped_by_sigterm_stops_its_jobs_and_leaves_no_process_of_its_own() {
    // A launcher's end or a watchdog may TERM the agent itself: it stops its jobs as on EOF,
    // and its helpers (one per slot, the sender) do not stay behind as orphans.
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let host = format!("x{m}");
    let mut cmd = crate::common::bin::bakapara();
    cmd.args([
        "-S",
        &format!("{host}/2"),
        "--launcher",
        "env X=<host>",
        &format!("sleep 100{m}; :"),
    ]);
    let live = start(cmd, dir.path(), "1\n2\n".into());
    wait_until(WAIT, "both jobs running", || sleepers(&m).len() == 2);
    // The launcher's shell holds the host's name; the agent is its child.
    let launcher = crate::common::bin::pids_with(&format!("X={host} "));
    assert_eq!(launcher.len(), 1, "one launcher: {launcher:?}");
    let agent = process_tree(launcher[0]);
    assert!(
        agent.len() > 4,
        "the agent, its helpers and the jobs: {agent:?}"
    );
    let jobs = sleepers(&m);
    assert!(
        jobs.iter().all(|j| agent.contains(j)),
        "{jobs:?} in {agent:?}"
    );
    let main = agent[1];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(main).expect("a pid")),
        Signal::SIGTERM,
    )
    .expect("the agent is there to signal");
    wait_until(
        Duration::from_secs(5),
        "the agent, its helpers and its jobs gone within 5 s of its TERM",
        || agent[1..].iter().all(|&p| !is_running(p)),
    );
    live.signal(Signal::SIGKILL);
    let _ = live.finish_within(RUN_TIMEOUT);
}

// ---------------------------------------------------------------------------------------------
// --host-loss-limit

/// Kills the SSH connection the job came through (its nearest sshd ancestor, whatever runs in
/// between): the host is lost under the job.
const KILL_MY_CONNECTION: &str = "p=$$; while [ \"$p\" -gt 1 ]; do \
     p=$(ps -o ppid= -p \"$p\" | tr -d ' '); [ -n \"$p\" ] || break; \
     case $(ps -o comm= -p \"$p\") in sshd*) kill -9 \"$p\"; break;; esac; done";

#[test]
fn a_job_that_kills_its_host_fails_after_the_host_loss_limit_instead_of_every_host() {
    let cluster = SshCluster::start(&["h1", "h2", "h3"]);
    let dir = tempdir();
    let d = dir.path().display().to_string();
    let killer = format!(
        "echo \"$BAKAPARA_TEST_HOST\" >> {d}/killer.attempts; {KILL_MY_CONNECTION}; sleep 30"
    );
    let mut input = format!("{}\n", json!({ "cmd": killer }));
    for i in 2..=7 {
        input.push_str(&format!(
            "{}\n",
            json!({ "cmd": format!("sleep 0.3; echo fine {i}") })
        ));
    }
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/1,h2/1,h3/1", "--host-loss-limit", "2"]);
    let finished = start(cmd, dir.path(), input).finish_within(RUN_TIMEOUT);
    killer_failed_at_limit_2_and_the_rest_ran_once(&finished, dir.path(), 7);
}

/// Job 1 (the killer, which appends to `killer.attempts`) ran twice and failed at
/// `--host-loss-limit 2`; jobs 2..=n (`echo fine N`) each ended `ok` once.
fn killer_failed_at_limit_2_and_the_rest_ran_once(
    finished: &Finished,
    dir: &std::path::Path,
    n: u64,
) {
    let (lines, stderr) = (&finished.lines, &finished.stderr);
    let m = by_seq(lines);
    assert_eq!(
        m.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "{stderr}"
    );
    let k = result(m[&1][0]);
    assert_eq!(m[&1].len(), 1, "{:#?}", m[&1]);
    assert_eq!(k["status"], "error", "{k}\n{stderr}");
    let err = k["error"].as_str().unwrap_or("").to_lowercase();
    assert!(
        (err.contains("host-loss-limit") || err.contains("host loss limit")) && err.contains('2'),
        "the error names the limit: {err:?}"
    );
    assert_eq!(k["attempts"], 2, "{k}");
    let attempts = fs::read_to_string(dir.join("killer.attempts")).unwrap_or_default();
    assert_eq!(
        attempts.lines().count(),
        2,
        "the killer ran twice, on: {attempts:?}"
    );
    for i in 2..=n {
        let r = result(m[&i][0]);
        assert_eq!(m[&i].len(), 1, "{:#?}", m[&i]);
        assert_eq!(r["status"], "ok", "{r}\n{stderr}");
        assert_eq!(r["stdout"], format!("fine {i}\n"), "{r}");
    }
    assert_eq!(finished.code, Some(1), "one job failed: {stderr}");
}

#[test]
fn a_job_that_kills_its_agent_slot_is_a_lost_host_not_a_hang() {
    // The job's parent is the agent's runner for its slot. Killed, that slot would never
    // report again: the agent stops instead, bakapara runs its jobs again (the killer too, up
    // to the host loss limit), and every job ends with exactly one result.
    let dir = tempdir();
    let d = dir.path().display().to_string();
    let killer = format!("echo x >> {d}/killer.attempts; kill -9 $PPID; sleep 1; echo survived");
    let mut input = format!("{}\n", json!({ "cmd": killer }));
    for i in 2..=4 {
        input.push_str(&format!("{}\n", json!({ "cmd": format!("echo fine {i}") })));
    }
    let mut cmd = crate::common::bin::bakapara();
    cmd.args([
        "-S",
        "fake1/1",
        "--launcher",
        "env X=<host>",
        "--host-loss-limit",
        "2",
    ]);
    let finished = start(cmd, dir.path(), input).finish_within(RUN_TIMEOUT);
    killer_failed_at_limit_2_and_the_rest_ran_once(&finished, dir.path(), 4);
}

#[test]
fn a_host_loss_limit_of_zero_or_junk_is_a_usage_error() {
    let dir = tempdir();
    // (`=`: a value starting with `-` would be taken for an option otherwise.)
    for bad in ["0", "-1", "x", "99999999999999999999"] {
        let out = crate::common::bin::bakapara()
            .args(["-S", "h1/1", &format!("--host-loss-limit={bad}"), "true"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run bakapara");
        assert_eq!(out.status.code(), Some(255), "--host-loss-limit {bad}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("host-loss-limit"), "names the option: {err}");
        assert!(out.stdout.is_empty(), "no job ran: {:?}", out.stdout);
    }
}

// ---------------------------------------------------------------------------------------------
// Framing

/// `1 2 3 ... n ` (every number followed by a space): what `seq n | tr '\n' ' '` prints.
fn numbers(n: u32) -> Vec<u8> {
    let mut s = Vec::new();
    for i in 1..=n {
        s.extend_from_slice(i.to_string().as_bytes());
        s.push(b' ');
    }
    s
}

#[test]
fn remote_output_with_nul_bytes_invalid_utf8_and_a_10_mb_line_comes_back_byte_exact() {
    let cluster = SshCluster::start(&["h1"]);
    let dir = tempdir();
    let jobs = [
        // NUL bytes, no final newline, on both streams
        r"printf 'a\0b\n\0c'; printf 'e\0f' >&2",
        // not UTF-8, no final newline
        r"printf '\xff\xfe ok\x80'",
        // one line of 10,088,896 bytes and its newline
        "seq 1400000 | tr '\\n' ' '; echo",
        // nothing at all
        "true",
    ];
    let input: String = jobs
        .iter()
        .map(|c| format!("{}\n", json!({ "cmd": c })))
        .collect();
    let mut cmd = bakapara(&cluster);
    cmd.args(["-S", "h1/2", "--capture-limit", "20M"]);
    let Finished {
        code,
        lines,
        stderr,
        ..
    } = start(cmd, dir.path(), input).finish_within(RUN_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}");
    let m = by_seq(&lines);
    assert_eq!(m.len(), 4, "{stderr}");
    let r = |i: u64| result(m[&i][0]);
    assert_eq!(r(1)["stdout"], "a\0b\n\0c", "{}", r(1));
    assert_eq!(r(1)["stderr"], "e\0f", "{}", r(1));
    let b64 = r(2)["stdout_base64"]
        .as_str()
        .unwrap_or_else(|| panic!("invalid UTF-8 comes as stdout_base64: {}", r(2)));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("valid base64");
    assert_eq!(bytes, b"\xff\xfe ok\x80");
    assert!(r(2).get("stdout").is_none(), "{}", r(2));
    let mut want = numbers(1_400_000);
    want.push(b'\n');
    assert!(want.len() > 10_000_000);
    let got = r(3)["stdout"].as_str().expect("the 10 MB line, as text");
    assert!(
        got.as_bytes() == want.as_slice(),
        "the 10 MB line byte-exact: {} bytes of {}",
        got.len(),
        want.len()
    );
    assert!(
        r(3).get("stdout_truncated").is_none(),
        "{}",
        r(3)["stdout_truncated"]
    );
    for i in 1..=4 {
        assert_eq!(r(i)["status"], "ok");
        assert_eq!(r(i)["host"], "h1");
    }
    assert_eq!(r(4)["stdout"], "");
}

#[test]
fn each_job_of_a_slot_gets_its_own_output_also_after_one_left_a_writer_behind() {
    // One slot, so every job runs after the one before it and (the agent reuses a slot's empty
    // spools) where it ran. Job 1 leaves a process behind that writes once job 2 runs.
    let dir = tempdir();
    let (go, done) = (dir.path().join("go"), dir.path().join("done"));
    let left_behind = format!(
        "(while [ ! -e {go} ]; do sleep 0.05; done; echo late; echo late >&2; touch {done}) & echo early",
        go = go.display(),
        done = done.display()
    );
    let waits = format!(
        "touch {go}; while [ ! -e {done} ]; do sleep 0.05; done; echo second",
        go = go.display(),
        done = done.display()
    );
    let jobs = [
        json!({"cmd": left_behind}),
        json!({"cmd": waits}),
        json!({"cmd": "echo third >&2"}),
        json!({"cmd": "true"}),
        json!({"cmd": "echo fifth; echo fifth >&2", "out": "to-file.txt"}),
        json!({"cmd": "printf sixth"}),
        json!({"cmd": "exit 3"}),
    ];
    let input: String = jobs.iter().map(|j| format!("{j}\n")).collect();
    let mut cmd = crate::common::bin::bakapara();
    cmd.args(["-S", "fake1/1", "--launcher", "env X=<host>"]);
    let Finished { lines, stderr, .. } = start(cmd, dir.path(), input).finish_within(RUN_TIMEOUT);
    let m = by_seq(&lines);
    assert_eq!(m.len(), 7, "{stderr}\n{lines:#?}");
    let out = |i: u64| {
        (
            result(m[&i][0])["stdout"].clone(),
            result(m[&i][0])["stderr"].clone(),
        )
    };
    assert_eq!(out(1), (json!("early\n"), json!("")), "{}", m[&1][0]);
    assert_eq!(out(2), (json!("second\n"), json!("")), "{}", m[&2][0]);
    assert_eq!(out(3), (json!(""), json!("third\n")), "{}", m[&3][0]);
    assert_eq!(out(4), (json!(""), json!("")), "{}", m[&4][0]);
    assert_eq!(result(m[&5][0])["stderr"], "fifth\n", "{}", m[&5][0]);
    assert_eq!(
        fs::read_to_string(dir.path().join("to-file.txt")).unwrap_or_default(),
        "fifth\n"
    );
    assert_eq!(out(6), (json!("sixth"), json!("")), "{}", m[&6][0]);
    assert_eq!(out(7), (json!(""), json!("")), "{}", m[&7][0]);
    assert_eq!(result(m[&7][0])["code"], 3);
}

#[test]
fn jobs_with_a_long_command_and_a_100_kb_value_reach_the_agent_whole() {
    // A job's message is one line; a long one goes to the agent's slot through a file, not its
    // fifo, and an environment value of 100 KB must arrive byte for byte.
    let dir = tempdir();
    let big: String = (0..100_000u32)
        .map(|i| char::from(b'a' + u8::try_from(i % 26).expect("a letter")))
        .collect();
    let padding = ": ".to_string() + &"x".repeat(3000) + "; ";
    let jobs = [
        json!({"cmd": format!("{padding}printf %s \"$BIG\" | md5sum"), "env": {"BIG": big}}),
        json!({"cmd": "echo short"}),
        json!({"cmd": format!("{padding}echo long")}),
    ];
    let input: String = jobs.iter().map(|j| format!("{j}\n")).collect();
    let mut want = Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("md5sum runs");
    {
        use std::io::Write as _;
        let mut stdin = want.stdin.take().expect("its stdin");
        stdin.write_all(big.as_bytes()).expect("md5sum reads");
    }
    let want = String::from_utf8(want.wait_with_output().expect("md5sum ends").stdout)
        .expect("md5sum prints text");
    let mut cmd = crate::common::bin::bakapara();
    cmd.args(["-S", "fake1/2", "--launcher", "env X=<host>"]);
    let Finished { lines, stderr, .. } = start(cmd, dir.path(), input).finish_within(RUN_TIMEOUT);
    let m = by_seq(&lines);
    assert_eq!(m.len(), 3, "{stderr}\n{lines:#?}");
    assert_eq!(result(m[&1][0])["stdout"], want, "{stderr}");
    assert_eq!(result(m[&2][0])["stdout"], "short\n");
    assert_eq!(result(m[&3][0])["stdout"], "long\n");
}

// ---------------------------------------------------------------------------------------------
// --launcher

#[test]
fn a_plain_local_launcher_starts_the_agent_with_the_host_substituted() {
    // No SSH at all: the hosts are names only, and the launcher a local command that sets a
    // variable from <host> and runs the agent it is given.
    let dir = tempdir();
    let input: String = (1..=8).map(|i| format!("{i}\n")).collect();
    let mut cmd = crate::common::bin::bakapara();
    cmd.args([
        "-S",
        "fake1/2,fake2/2",
        "--launcher",
        "env BAKAPARA_LAUNCHED=<host>",
        "echo \"$BAKAPARA_LAUNCHED\"; :",
    ]);
    let Finished {
        code,
        lines,
        stderr,
        ..
    } = start(cmd, dir.path(), input).finish_within(RUN_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    assert_eq!(lines.len(), 8, "{stderr}");
    let mut hosts = BTreeSet::new();
    for l in &lines {
        let r = result(l);
        assert_eq!(r["status"], "ok", "{l}");
        let host = r["host"].as_str().expect("a host").to_string();
        assert_eq!(r["stdout"], format!("{host}\n"), "<host> substituted: {l}");
        hosts.insert(host);
    }
    assert_eq!(
        hosts,
        ["fake1", "fake2"].map(String::from).into(),
        "both hosts' agents ran jobs"
    );
}

#[test]
fn an_ssh_launcher_reaches_the_harness_hosts() {
    // ssh joins its arguments into one string for the remote login shell: the command the
    // launcher is given must survive that second round of shell parsing.
    let cluster = SshCluster::start(&["h1", "h2"]);
    let dir = tempdir();
    let launcher = format!("ssh -F {} <host>", cluster.ssh_config_path().display());
    let input: String = (1..=8).map(|i| format!("{i}\n")).collect();
    let mut cmd = crate::common::bin::bakapara();
    cmd.args([
        "-S",
        "h1/2,h2/2",
        "--host-timeout",
        "10s",
        "--launcher",
        &launcher,
        "echo \"$BAKAPARA_TEST_HOST\"; :",
    ]);
    let Finished {
        code,
        lines,
        stderr,
        ..
    } = start(cmd, dir.path(), input).finish_within(RUN_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}\n{lines:#?}");
    assert_eq!(lines.len(), 8, "{stderr}");
    for l in &lines {
        let r = result(l);
        assert_eq!(r["status"], "ok", "{l}");
        let host = r["host"].as_str().expect("a host");
        assert_eq!(r["stdout"], format!("{host}\n"), "ran on its host: {l}");
    }
}
