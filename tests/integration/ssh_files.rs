//! Hosts without a shared filesystem (SPEC §4): `--transferfile`/`--return`/`--cleanup`/
//! `--trc`/`--basefile`, `--workdir ...`, `--env` of a function, and one command on every host
//! (`--nonall`, `--onall`, `--gather`), against real sshd instances of the test harness.
//!
//! The harness's hosts share this machine's filesystem, but each gives its sessions a HOME of
//! its own: a relative `--workdir` is a different directory on each host, one the local side
//! never reads. A job there can only see a local file that went through the transfer, and a
//! file it writes is only here when it came back through the return.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::bin::{bakapara, Live};
use crate::common::sshd::{wait_until, SshCluster, SshdHost};
use serde_json::Value;

fn command(cluster: &SshCluster, dir: &Path) -> std::process::Command {
    let mut cmd = bakapara();
    cmd.current_dir(dir)
        .arg("--ssh-config")
        .arg(cluster.ssh_config_path());
    cmd
}

fn run(mut cmd: std::process::Command, stdin: &str) -> crate::common::bin::Finished {
    Live::spawn_with(&mut cmd, stdin.as_bytes().to_vec()).finish()
}

/// The sessions' HOME on a host: where a relative --workdir lives.
fn home(host: &SshdHost) -> PathBuf {
    host.dir().join("home")
}

fn result(line: &Value) -> &Value {
    &line["result"]
}

/// Every file under `dir`, as paths relative to it.
fn files_under(dir: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                found.insert(rel);
            }
        }
    }
    found
}

#[test]
fn trc_sends_inputs_returns_outputs_and_leaves_nothing_on_the_hosts() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let dir = tempfile::tempdir().unwrap();
    let mut names = Vec::new();
    // One name that a shell would split or run: it must go through quoted.
    let stem = |i: usize| match i {
        6 => "six 's $(x)".to_string(),
        i => format!("f{i}"),
    };
    for i in 1..=6 {
        let name = format!("{}.txt", stem(i));
        std::fs::write(dir.path().join(&name), "line\n".repeat(i)).unwrap();
        names.push(name);
    }
    let mut cmd = command(&cluster, dir.path());
    cmd.args([
        "-S",
        "h1/2,h2/2",
        "--workdir",
        "work",
        "--trc",
        "<.>.out",
        "wc -l < <> > <.>.out; echo \"$PWD\"",
    ]);
    let done = run(cmd, &(names.join("\n") + "\n"));
    assert_eq!(done.code, Some(0), "{}\n{:#?}", done.stderr, done.lines);
    assert_eq!(done.lines.len(), 6);
    let mut hosts_used = BTreeSet::new();
    for line in &done.lines {
        let r = result(line);
        let host = r["host"].as_str().unwrap().to_string();
        // The job ran in the host's own working directory, not here.
        let expected = home(cluster.host(&host)).join("work");
        assert_eq!(
            r["stdout"].as_str().unwrap().trim(),
            expected.to_str().unwrap(),
            "{line}"
        );
        assert_eq!(r["transfer"]["sent"], 1, "{line}");
        assert_eq!(r["transfer"]["returned"], 1, "{line}");
        assert!(r["transfer"]["sent_bytes"].as_u64().unwrap() > 0, "{line}");
        hosts_used.insert(host);
    }
    assert_eq!(hosts_used.len(), 2, "both hosts ran jobs");
    for i in 1..=6 {
        let out = std::fs::read_to_string(dir.path().join(format!("{}.out", stem(i)))).unwrap();
        assert_eq!(out.trim(), i.to_string());
    }
    for host in cluster.hosts() {
        let left = files_under(&home(host).join("work"));
        assert!(
            left.is_empty(),
            "--cleanup left {left:?} on {}",
            host.name()
        );
    }
    let here = files_under(dir.path());
    assert!(
        here.iter()
            .all(|f| [".txt", ".out"].iter().any(|ext| f.ends_with(ext))),
        "no temp file stays here: {here:?}"
    );
}

#[test]
fn a_file_that_cannot_be_transferred_fails_its_job_naming_the_file_and_host() {
    let cluster = SshCluster::start(&["h1"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("here.txt"), "x\n").unwrap();
    let mut cmd = command(&cluster, dir.path());
    cmd.args([
        "-S",
        "h1/1",
        "--workdir",
        "work",
        "--transfer",
        "-k",
        "cat <>",
    ]);
    let done = run(cmd, "here.txt\nmissing.txt\n");
    assert_eq!(done.code, Some(1), "{}\n{:#?}", done.stderr, done.lines);
    let ok = result(&done.lines[0]);
    assert_eq!(ok["status"], "ok");
    assert_eq!(ok["stdout"], "x\n");
    let bad = result(&done.lines[1]);
    assert_eq!(bad["status"], "error", "{bad}");
    assert!(bad["started"].is_null(), "the job never ran: {bad}");
    let why = bad["error"].as_str().unwrap();
    assert!(
        why.contains("missing.txt") && why.contains("h1"),
        "the error names the file and the host: {why}"
    );
    // Without --cleanup the transferred file stays on the host, where the job read it.
    let sent = home(cluster.host("h1")).join("work/here.txt");
    assert_eq!(std::fs::read_to_string(sent).unwrap(), "x\n");
}

#[test]
fn a_host_crash_during_a_return_leaves_no_truncated_file() {
    let cluster = SshCluster::start(&["h1"]);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(&cluster, dir.path());
    cmd.args([
        "-S",
        "h1/1",
        "--workdir",
        "work",
        "--host-timeout",
        "2s",
        "--return",
        "big.out",
        "head -c 800M /dev/zero > big.out",
    ]);
    let live = Live::spawn_with(&mut cmd, b"x\n".to_vec());
    let partial = |dir: &Path| {
        files_under(dir)
            .into_iter()
            .find(|f| f.contains("big.out") && f.ends_with(".bakapara-part"))
    };
    wait_until(Duration::from_secs(120), "the return has begun", || {
        partial(dir.path())
            .is_some_and(|f| std::fs::metadata(dir.path().join(f)).is_ok_and(|m| m.len() > 0))
    });
    cluster.host("h1").kill_hard();
    let done = live.finish_within(Duration::from_secs(120));
    assert_eq!(done.code, Some(1), "{}\n{:#?}", done.stderr, done.lines);
    let r = result(&done.lines[0]);
    assert_eq!(r["status"], "error", "{r}");
    assert!(
        !dir.path().join("big.out").exists(),
        "no file under the real name"
    );
    assert_eq!(partial(dir.path()), None, "the temp file is gone");
}

#[test]
fn nonall_runs_once_on_every_host_and_gather_folds_identical_output() {
    let builders = ["h1", "h2", "h3", "h5"]
        .iter()
        .map(|n| SshdHost::builder(n))
        .collect();
    let cluster = SshCluster::from_builders(builders);
    let dir = tempfile::tempdir().unwrap();
    let logins = "h1,h2,h3,h5";
    let mut cmd = command(&cluster, dir.path());
    cmd.args(["-S", logins, "--nonall", "echo \"$BAKAPARA_TEST_HOST\""]);
    let done = run(cmd, "");
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let hosts: BTreeSet<(String, String)> = done
        .lines
        .iter()
        .map(|l| {
            (
                result(l)["host"].as_str().unwrap().to_string(),
                result(l)["stdout"].as_str().unwrap().trim().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = ["h1", "h2", "h3", "h5"]
        .iter()
        .map(|h| (h.to_string(), h.to_string()))
        .collect();
    assert_eq!(done.lines.len(), 4);
    assert_eq!(hosts, expected, "one line per host, run there");

    let mut cmd = command(&cluster, dir.path());
    cmd.args([
        "-S",
        logins,
        "--nonall",
        "--gather",
        "if [ \"$BAKAPARA_TEST_HOST\" = h3 ]; then echo other; else echo same; echo lines; fi",
    ]);
    let done = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(0), "{stderr}");
    let text = String::from_utf8(done.stdout).unwrap();
    let rule = "-".repeat(15);
    let same = format!("{rule}\nh[1-2,5]\n{rule}\nsame\nlines\n");
    let other = format!("{rule}\nh3\n{rule}\nother\n");
    assert!(
        text == format!("{same}{other}") || text == format!("{other}{same}"),
        "two blocks, the identical outputs folded:\n{text}"
    );
}

#[test]
fn onall_runs_every_job_on_every_host() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(&cluster, dir.path());
    cmd.args([
        "-S",
        "h1,h2",
        "--onall",
        "echo <> \"$BAKAPARA_TEST_HOST\"",
        ":::",
        "a",
        "b",
    ]);
    let done = run(cmd, "");
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let got: BTreeSet<String> = done
        .lines
        .iter()
        .map(|l| {
            assert_eq!(l["host"], result(l)["host"], "{l}");
            result(l)["stdout"].as_str().unwrap().trim().to_string()
        })
        .collect();
    let want: BTreeSet<String> = ["a h1", "a h2", "b h1", "b h2"]
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    assert_eq!(got, want);
    let seqs: BTreeSet<u64> = done
        .lines
        .iter()
        .map(|l| result(l)["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=4).collect(), "each (job, host) has its own seq");

    // --text: each host's output together, as GNU Parallel's --onall --group (hosts in -S
    // order), whatever order the jobs ended in.
    let mut cmd = command(&cluster, dir.path());
    cmd.args([
        "-S",
        "h1,h2",
        "--onall",
        "--text",
        "echo <> \"$BAKAPARA_TEST_HOST\"",
        ":::",
        "a",
        "b",
        "c",
    ]);
    let done = cmd.stdin(std::process::Stdio::null()).output().unwrap();
    assert_eq!(done.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&done.stdout),
        "a h1\nb h1\nc h1\na h2\nb h2\nc h2\n"
    );
}

#[test]
fn env_ships_an_exported_bash_function_to_remote_jobs() {
    let cluster = SshCluster::start(&["h1"]);
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(&cluster, dir.path());
    // What `greet() { echo "hello, $1 from $BAKAPARA_TEST_HOST"; }; export -f greet` puts in
    // the environment.
    cmd.env(
        "BASH_FUNC_greet%%",
        "() {  echo \"hello, $1 from $BAKAPARA_TEST_HOST\"\n}",
    )
    .args(["-S", "h1", "--env", "greet", "greet <>", ":::", "world"]);
    let done = run(cmd, "");
    assert_eq!(done.code, Some(0), "{}\n{:#?}", done.stderr, done.lines);
    assert_eq!(result(&done.lines[0])["stdout"], "hello, world from h1\n");

    let mut cmd = command(&cluster, dir.path());
    cmd.args(["-S", "h1", "--env", "no_such_function_here", "true"]);
    let done = run(cmd, "");
    assert_eq!(done.code, Some(255));
    assert!(
        done.stderr.contains("no_such_function_here"),
        "{}",
        done.stderr
    );
}

#[test]
fn basefiles_and_a_fresh_workdir_are_there_for_every_job_and_cleaned_up() {
    let cluster = SshCluster::start(&["h1", "h2"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.txt"), "shared data\n").unwrap();
    let mut cmd = command(&cluster, dir.path());
    cmd.args([
        "-S",
        "h1/2,h2/2",
        "--workdir",
        "...",
        "--basefile",
        "base.txt",
        "--cleanup",
        "cat base.txt; echo <> \"$PWD\"",
        ":::",
        "1",
        "2",
        "3",
        "4",
    ]);
    let done = run(cmd, "");
    assert_eq!(done.code, Some(0), "{}\n{:#?}", done.stderr, done.lines);
    let mut dirs = BTreeSet::new();
    let mut hosts = BTreeSet::new();
    for line in &done.lines {
        let r = result(line);
        let out = r["stdout"].as_str().unwrap();
        let mut it = out.lines();
        assert_eq!(it.next(), Some("shared data"), "{line}");
        let pwd = it.next().unwrap().split_once(' ').unwrap().1.to_string();
        let host = cluster.host(r["host"].as_str().unwrap());
        assert!(
            pwd.starts_with(home(host).join(".bakapara/tmp").to_str().unwrap()),
            "{pwd}"
        );
        dirs.insert(pwd);
        hosts.insert(host.name().to_string());
    }
    // (A host that connects late may run no job.)
    assert_eq!(
        dirs.len(),
        hosts.len(),
        "one fresh directory per host: {dirs:?}"
    );
    for host in cluster.hosts() {
        assert!(
            !home(host).join(".bakapara").exists(),
            "the run's directory is removed on {}",
            host.name()
        );
    }
}

#[test]
fn local_jobs_skip_transfers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "1\n2\n").unwrap();
    let mut cmd = bakapara();
    cmd.current_dir(dir.path())
        .args(["--trc", "<.>.out", "wc -l < <> > <.>.out", ":::", "a.txt"]);
    let done = run(cmd, "");
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(result(&done.lines[0]).get("transfer").is_none());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("a.out"))
            .unwrap()
            .trim(),
        "2"
    );
    assert!(
        dir.path().join("a.txt").exists(),
        "local files are no transfer to clean up"
    );
}

#[test]
fn bad_file_and_every_host_options_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (vec!["--basefile", "nope.txt", "true"], "nope.txt"),
        (vec!["--nonall", "echo", ":::", "a"], "--nonall"),
        (vec!["--nonall"], "--nonall needs a TEMPLATE"),
        (vec!["--nonall", "--onall", "true"], "--onall"),
        (vec!["--gather", "--json", "true"], "--gather"),
        (vec!["--trc", "x.out"], "need a TEMPLATE"),
    ] {
        let out = bakapara()
            .current_dir(dir.path())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{args:?}: {stderr}");
        assert!(
            stderr.contains(says),
            "{args:?} names the problem: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: no job ran");
    }
}

#[test]
fn ctrl_c_during_a_transfer_stops_it_and_leaves_no_partial_file_on_the_host() {
    let cluster = SshCluster::start(&["h1"]);
    let dir = tempfile::tempdir().unwrap();
    // Sparse here (no disk used), but 2 GB of bytes to send: the copy takes a while.
    let big = std::fs::File::create(dir.path().join("big.bin")).unwrap();
    big.set_len(2 << 30).unwrap();
    let mut cmd = command(&cluster, dir.path());
    cmd.args([
        "-S",
        "h1",
        "--workdir",
        "work",
        "--transfer",
        "cat <> | wc -c",
    ]);
    let live = Live::spawn_with(&mut cmd, b"big.bin\n".to_vec());
    let work = home(cluster.host("h1")).join("work");
    let partial = |work: &Path| {
        files_under(work)
            .into_iter()
            .find(|f| f.starts_with("big.bin.bakapara-part"))
    };
    wait_until(Duration::from_secs(120), "the transfer has begun", || {
        partial(&work).is_some_and(|f| std::fs::metadata(work.join(f)).is_ok_and(|m| m.len() > 0))
    });
    live.signal(nix::sys::signal::Signal::SIGINT);
    let done = live.finish_within(Duration::from_secs(30));
    assert_eq!(
        done.signal,
        Some(2),
        "bakapara dies of SIGINT: {}",
        done.stderr
    );
    let r = result(&done.lines[0]);
    assert_eq!(r["status"], "aborted", "{r}");
    assert!(r["started"].is_null(), "the job never ran: {r}");
    wait_until(
        Duration::from_secs(30),
        "the partial copy is removed",
        || partial(&work).is_none(),
    );
    assert!(
        !work.join("big.bin").exists(),
        "no file under the real name"
    );
}
