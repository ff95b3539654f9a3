//! End-to-end tests of SSH runs against real sshd instances started by the test harness.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use assert_cmd::cargo::CommandCargoExt;
use common::sshd::SshCluster;
use serde_json::Value;

fn bakapara(cluster: &SshCluster) -> Command {
    let mut cmd = Command::cargo_bin("bakapara").expect("the bakapara binary is built");
    cmd.arg("--ssh-config").arg(cluster.ssh_config_path());
    cmd
}

fn run(mut cmd: Command, stdin: &str) -> (Option<i32>, Vec<Value>, String) {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("bakapara starts");
    let mut input = child.stdin.take().expect("stdin");
    let text = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let out = child.wait_with_output().expect("bakapara runs");
    writer.join().expect("writer");
    let lines = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect();
    (
        out.status.code(),
        lines,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    assert_eq!(code, Some(0), "{stderr}");
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
}
