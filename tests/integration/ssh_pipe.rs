//! `--pipe` and `--pipe-part` over SSH (each block on the remote job's stdin), and `--memfree` /
//! `--load` checked by the wrapper on the remote host, against real sshd instances.

use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::bin::{Finished, Live};
use crate::common::sshd::{pids_with_cmdline_containing, wait_until, SshCluster};
use serde_json::Value;

const RUN_TIMEOUT: Duration = Duration::from_secs(180);
const WAIT: Duration = Duration::from_secs(60);

fn bakapara(cluster: &SshCluster, dir: &Path) -> Command {
    let mut cmd = crate::common::bin::bakapara();
    cmd.arg("--ssh-config")
        .arg(cluster.ssh_config_path())
        .current_dir(dir);
    cmd
}

fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("bakapara-ssh-pipe-")
        .tempdir()
        .expect("a temp dir")
}

/// Several MB of lines with NUL bytes and every byte value in them, and no trailing newline.
fn binary_input() -> Vec<u8> {
    let mut data = Vec::new();
    let mut x: u32 = 12345;
    let mut n = 0u64;
    while data.len() < 3 * 1024 * 1024 {
        data.extend_from_slice(format!("record {n} ").as_bytes());
        for _ in 0..(x % 200) {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let b = x.to_be_bytes()[1];
            data.push(if b == b'\n' { 0 } else { b });
        }
        data.push(b'\n');
        n += 1;
    }
    data.extend_from_slice(b"last\0record without a newline");
    data
}

fn result(line: &Value) -> &Value {
    &line["result"]
}

/// The blocks the jobs wrote to `dir/block.SEQ`, joined in sequence order.
fn joined_blocks(dir: &Path, lines: &[Value]) -> Vec<u8> {
    let mut seqs: Vec<u64> = lines
        .iter()
        .map(|l| result(l)["seq"].as_u64().expect("a seq"))
        .collect();
    seqs.sort_unstable();
    let mut all = Vec::new();
    for s in seqs {
        let path = dir.join(format!("block.{s}"));
        all.extend(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    }
    all
}

/// The end of a job that must not finish before a job has run on both h1 and h2.
const BOTH_HOSTS: &str = "touch on.$BAKAPARA_TEST_HOST; w=0; \
    until [ -e on.h1 ] && [ -e on.h2 ] || [ $w -ge 400 ]; do sleep 0.05; w=$((w + 1)); done";

fn assert_all_done_on(lines: &[Value], hosts: &[&str], stderr: &str) {
    let mut seen = BTreeSet::new();
    for l in lines {
        assert_eq!(result(l)["status"], "ok", "{l}\n{stderr}");
        seen.insert(result(l)["host"].as_str().unwrap_or("").to_string());
    }
    for h in hosts {
        assert!(seen.contains(*h), "jobs ran on {h}: {seen:?}");
    }
}

#[test]
fn pipe_over_ssh_gives_every_record_to_exactly_one_remote_job_byte_exact() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let dir = tempdir();
    let input = binary_input();
    let mut cmd = bakapara(&cluster, dir.path());
    cmd.args([
        "--json",
        "--block",
        "200k",
        "-S",
        "h1/2,h2/2",
        "--pipe",
        // Each job waits (up to 20 s) until both hosts have run one: h2 may join after h1 has
        // started, and short jobs could all be done on h1 before it does.
        &format!("cat > block.<#>; wc -c < block.<#>; {BOTH_HOSTS}"),
    ]);
    let Finished {
        code,
        lines,
        stderr,
        ..
    } = Live::spawn_with(&mut cmd, input.clone()).finish_within(RUN_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        lines.len() >= 10,
        "the input is cut into blocks: {}",
        lines.len()
    );
    assert_all_done_on(&lines, &["h1", "h2"], &stderr);
    for l in &lines {
        let seq = result(l)["seq"].as_u64().expect("seq");
        let size = std::fs::metadata(dir.path().join(format!("block.{seq}")))
            .expect("the block's file")
            .len();
        assert_eq!(
            result(l)["stdout"].as_str().map(str::trim),
            Some(size.to_string().as_str()),
            "{l}"
        );
    }
    let joined = joined_blocks(dir.path(), &lines);
    assert_eq!(joined.len(), input.len());
    assert!(
        joined == input,
        "the blocks joined are the input, byte for byte"
    );
}

#[test]
fn pipe_part_over_ssh_sends_each_file_range_to_a_remote_job() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let dir = tempdir();
    let input = binary_input();
    let file = dir.path().join("input.bin");
    std::fs::write(&file, &input).expect("write the input");
    let mut cmd = bakapara(&cluster, dir.path());
    cmd.args([
        "--json",
        "--block",
        "300k",
        "-S",
        "h1/2,h2/2",
        "--pipe-part",
        "-a",
    ])
    .arg(&file)
    .arg(format!("cat > block.<#>; {BOTH_HOSTS}"));
    let Finished {
        code,
        lines,
        stderr,
        ..
    } = Live::spawn_with(&mut cmd, Vec::new()).finish_within(RUN_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        lines.len() >= 8,
        "the file is cut into ranges: {}",
        lines.len()
    );
    assert_all_done_on(&lines, &["h1", "h2"], &stderr);
    assert!(
        joined_blocks(dir.path(), &lines) == input,
        "the ranges joined are the file, byte for byte"
    );
}

#[test]
fn a_piped_remote_job_still_stops_on_timeout_and_on_ctrl_c() {
    let cluster = SshCluster::start(&["h1"]);
    let dir = tempdir();
    let marker = format!("777.{}", std::process::id());
    // --timeout: the job read its block, then sleeps.
    let mut cmd = bakapara(&cluster, dir.path());
    cmd.args([
        "--json",
        "--timeout",
        "1",
        "-S",
        "h1/1",
        "--pipe",
        &format!("wc -c > got; sleep {marker}1"),
    ]);
    let started = Instant::now();
    let Finished { lines, stderr, .. } =
        Live::spawn_with(&mut cmd, b"a\nb\nc\n".to_vec()).finish_within(RUN_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(60), "{stderr}");
    assert_eq!(lines.len(), 1, "{stderr}");
    let r = result(&lines[0]);
    assert_eq!(r["status"], "error", "{}", lines[0]);
    assert_eq!(r["signal"], "SIGTERM", "{}", lines[0]);
    assert!(
        r["error"].as_str().unwrap_or("").contains("timed out"),
        "{}",
        lines[0]
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("got"))
            .map(|s| s.trim().to_string())
            .ok(),
        Some("6".to_string())
    );
    // Ctrl-C while the job runs.
    let mut cmd = bakapara(&cluster, dir.path());
    cmd.args([
        "--json",
        "-S",
        "h1/1",
        "--pipe",
        &format!("cat > /dev/null; sleep {marker}2"),
    ]);
    let live = Live::spawn_with(&mut cmd, b"x\ny\n".to_vec());
    let needle = format!("{marker}2");
    // The job's own `sleep` (the wrapper's command line holds the job's text too).
    let sleeping = || {
        pids_with_cmdline_containing(&needle)
            .into_iter()
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|raw| raw == format!("sleep\0{needle}\0").as_bytes())
            })
            .count()
    };
    wait_until(WAIT, "the remote sleep", || sleeping() > 0);
    nix::sys::signal::kill(live.pid(), nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let Finished {
        status,
        lines,
        stderr,
        ..
    } = live.finish_within(Duration::from_secs(60));
    assert_eq!(status.signal(), Some(2), "{stderr}");
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(result(&lines[0])["status"], "aborted", "{}", lines[0]);
    wait_until(Duration::from_secs(10), "no job process left", || {
        pids_with_cmdline_containing(&needle).is_empty()
    });
}

#[test]
fn memfree_holds_a_remote_job_on_its_host_until_stopped() {
    let cluster = SshCluster::start(&["h1"]);
    let dir = tempdir();
    let mut cmd = bakapara(&cluster, dir.path());
    cmd.args(["--json", "--memfree", "1P", "-S", "h1/1", "touch started"]);
    let live = Live::spawn_with(&mut cmd, b"x\n".to_vec());
    // The wrapper waits on the host: its session is there, the job is not.
    let h1 = cluster.host("h1");
    wait_until(WAIT, "a session on h1", || !h1.session_pids().is_empty());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !dir.path().join("started").exists(),
        "the job waits for memory"
    );
    nix::sys::signal::kill(live.pid(), nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let Finished { lines, stderr, .. } = live.finish_within(Duration::from_secs(60));
    assert_eq!(lines.len(), 1, "{stderr}");
    assert_eq!(result(&lines[0])["status"], "aborted", "{}", lines[0]);
    assert!(!dir.path().join("started").exists());
    wait_until(Duration::from_secs(10), "no session left on h1", || {
        h1.session_pids().is_empty()
    });
}

#[test]
fn a_load_limit_the_host_is_below_lets_remote_jobs_run() {
    let cluster = SshCluster::start(&["h1"]);
    let dir = tempdir();
    let mut cmd = bakapara(&cluster, dir.path());
    cmd.args([
        "--json",
        "--load",
        "1000",
        "--memfree",
        "1k",
        "-S",
        "h1/1",
        "touch started.<>",
    ]);
    let Finished {
        code,
        lines,
        stderr,
        ..
    } = Live::spawn_with(&mut cmd, b"a\nb\n".to_vec()).finish_within(RUN_TIMEOUT);
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(lines.len(), 2, "{stderr}");
    assert_all_done_on(&lines, &["h1"], &stderr);
    for name in ["started.a", "started.b"] {
        assert!(dir.path().join(name).exists(), "{name}: the job ran");
    }
}
