//! Slurm: the harness (a real slurmctld and two slurmd, common/slurm.rs), `-S @slurm` and
//! `--slurm` inside and outside an allocation, and jobs run as one step per node.

use std::collections::{BTreeSet, HashMap};
use std::process::Output;
use std::time::Duration;

use crate::common::bin::{bakapara, sleepers, tempdir, wait_until, Live, Reaper};
use crate::common::slurm::{shared, SlurmCluster};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn bakapara_path() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("bakapara")
}

/// `salloc ARGS` (stdin from /dev/null), waited for.
fn salloc(c: &SlurmCluster, args: &[&str]) -> Output {
    c.command("salloc").args(args).output().expect("run salloc")
}

/// The environment `salloc ALLOC env -0` gives its command.
fn allocation_env(c: &SlurmCluster, alloc: &[&str]) -> HashMap<String, String> {
    let mut args = alloc.to_vec();
    args.extend(["env", "-0"]);
    let out = salloc(c, &args);
    assert!(
        out.status.success(),
        "salloc failed: {}\n{}",
        text(&out.stderr),
        c.logs()
    );
    out.stdout
        .split(|&b| b == 0)
        .filter_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn harness_steps_run_on_both_nodes() {
    let c = shared();
    let out = salloc(c, &["-N2", "srun", "hostname"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stderr), c.logs());
    let names: BTreeSet<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(names, BTreeSet::from(["n1".to_string(), "n2".to_string()]));
}

#[test]
fn harness_stops_everything_it_started() {
    // a cluster of its own (one node), dropped while a step runs
    let c = SlurmCluster::start(&["d1"]);
    let m = crate::common::bin::marker();
    let _reaper = Reaper(m.clone());
    let mut client = c
        .command("salloc")
        // through bash, so that the task's argv[0] is `sleep` (srun runs /usr/bin/sleep)
        .args(["-N1", "srun", "bash", "-c"])
        .arg(format!("sleep 100{m}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn salloc");
    wait_until("the step's sleep", || {
        if let Ok(Some(st)) = client.try_wait() {
            panic!("salloc ended: {st}\n{}", c.logs());
        }
        sleepers(&m).len() == 1
    });
    let hostname = std::fs::read_link(format!("/proc/{}/ns/uts", sleepers(&m)[0]))
        .expect("the step's UTS namespace");
    let mine = std::fs::read_link("/proc/self/ns/uts").expect("our UTS namespace");
    assert_ne!(hostname, mine, "the step runs in the node's namespace");
    let daemons = c.daemon_pids();
    assert_eq!(daemons.len(), 3, "munged, slurmctld, one slurmd");
    let dir = c.dir().to_path_buf();
    drop(c);
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    assert!(
        sleepers(&m).is_empty(),
        "the step's task outlived the cluster"
    );
    for pid in daemons {
        assert!(!alive(pid), "daemon {pid} outlived the cluster");
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
    // the client was killed with the cluster
    wait_until("salloc ends", || matches!(client.try_wait(), Ok(Some(_))));
}

#[test]
fn slurm_outside_an_allocation_is_a_usage_error() {
    let dir = tempdir();
    let flag = dir.path().join("ran");
    for args in [&["-S", "@slurm"][..], &["--slurm"], &["-S", "a,@slurm/2"]] {
        let mut cmd = bakapara();
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SLURM_") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .args(args)
            .arg(format!("touch {}", flag.display()))
            .arg(":::")
            .arg("x")
            .output()
            .expect("run bakapara");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{args:?}: {err}");
        assert!(
            err.contains("not inside a Slurm allocation") && err.contains("SLURM_JOB_NODELIST"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!flag.exists(), "{args:?}: a job ran");
    }
}

#[test]
fn allocation_environment_gives_nodes_and_slots() {
    let c = shared();
    // -n3 asks for tasks: 2 on the first node (2 CPUs), 1 on the second
    let env = allocation_env(c, &["-N2", "-n3"]);
    assert_eq!(
        env.get("SLURM_JOB_NODELIST").map(String::as_str),
        Some("n[1-2]")
    );
    let lookup = |k: &str| env.get(k).cloned();
    let hosts = bakapara::hosts::parse_sshlogin_list_env("@slurm", &lookup).expect("@slurm");
    let got: Vec<(String, Option<usize>)> =
        hosts.iter().map(|h| (h.name.clone(), h.slots)).collect();
    assert_eq!(
        got,
        [("n1".to_string(), Some(2)), ("n2".to_string(), Some(1))],
        "{env:?}"
    );
    assert!(hosts.iter().all(|h| !h.local));
    assert_eq!(
        hosts[0].launcher.as_deref(),
        Some("srun --overlap -u -N1 -n1 -w <host> --")
    );
    // -N2 alone: one CPU per node, so one slot each; /3 overrides
    let env = allocation_env(c, &["-N2"]);
    let lookup = |k: &str| env.get(k).cloned();
    let hosts = bakapara::hosts::parse_sshlogin_list_env("@slurm", &lookup).expect("@slurm");
    assert_eq!(
        hosts.iter().map(|h| h.slots).collect::<Vec<_>>(),
        [Some(1), Some(1)]
    );
    let hosts = bakapara::hosts::parse_sshlogin_list_env("@slurm/3", &lookup).expect("@slurm/3");
    assert_eq!(
        hosts.iter().map(|h| h.slots).collect::<Vec<_>>(),
        [Some(3), Some(3)]
    );
}

#[test]
fn the_binary_reads_the_allocation() {
    // A node of the allocation named again is a duplicate: bakapara expanded @slurm from
    // salloc's environment, and stopped with a usage error before any job.
    let c = shared();
    let bin = bakapara_path();
    for hosts in [&["-S", "@slurm,n1"][..], &["--slurm", "-S", "n2/4"]] {
        let mut args = vec!["-N2".to_string(), bin.display().to_string()];
        args.extend(hosts.iter().map(std::string::ToString::to_string));
        args.extend(["true".to_string(), ":::".to_string(), "x".to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = salloc(c, &args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(255), "{hosts:?}: {err}");
        assert!(err.contains("given twice"), "{hosts:?}: {err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn a_workdir_is_made_on_the_nodes() {
    // The nodes are reached through srun, not over a master connection: each node's agent
    // makes the directory. (This used to give every job "files cannot be copied there".)
    let c = shared();
    let dir = tempdir();
    let made = dir.path().canonicalize().unwrap().join("made/on/the/nodes");
    let bin = bakapara_path();
    let bin = bin.display().to_string();
    let made_str = made.display().to_string();
    let out = salloc(
        c,
        &[
            "-N2",
            &bin,
            "-S",
            "@slurm",
            "--workdir",
            &made_str,
            "echo \"$(pwd) $SLURM_STEP_ID\"",
            ":::",
            "1",
            "2",
            "3",
            "4",
        ],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 4, "{err}");
    for l in &lines {
        assert_eq!(l["result"]["status"], "ok", "{l}");
        let said = l["result"]["stdout"].as_str().unwrap_or("");
        let (pwd, step) = said.trim().split_once(' ').unwrap_or((said, ""));
        assert_eq!(std::path::Path::new(pwd), made, "{l}");
        // run as a step of the allocation
        assert!(!step.is_empty(), "{l}");
    }
    assert!(made.is_dir());
}

/// Steps of allocation `job` (from `squeue -s`): (step id, node list).
fn steps_of(c: &SlurmCluster, job: &str) -> Vec<(String, String)> {
    let out = c
        .command("squeue")
        .args(["-h", "-s", "-j", job, "-o", "%i %N"])
        .output()
        .expect("run squeue");
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.trim().to_string()))
        .collect()
}

#[test]
fn jobs_run_as_one_step_per_node() {
    let c = shared();
    let m = crate::common::bin::marker();
    let _reaper = Reaper(m.clone());
    let dir = tempdir();
    let mut input = String::new();
    for _ in 0..20 {
        input.push_str("hostname\n");
    }
    // two long jobs, one per slot, to look at the steps while they run
    input.push_str(&format!("sleep 100{m}\nsleep 100{m}\n"));
    let bin = bakapara_path();
    // a job name of our own: other tests' allocations may be in squeue at the same time
    let name = format!("bakapara-steps-{m}");
    let mut cmd = c.command("salloc");
    cmd.args(["-N2", "-J", &name, "--"])
        .arg(&bin)
        .args(["-S", "@slurm"])
        .current_dir(dir.path());
    let mut live = Live::spawn_with(&mut cmd, input.into_bytes());
    live.wait_for_lines("the 20 hostname jobs", |l| l.len() >= 20);
    // pipelining may queue the second long job behind the first on one node: one is enough
    wait_until("a long job running", || !sleepers(&m).is_empty());
    let jobs = c
        .command("squeue")
        .args(["-h", "-n", &name, "-o", "%i"])
        .output()
        .expect("run squeue");
    let job = text(&jobs.stdout)
        .lines()
        .next()
        .expect("our allocation in squeue")
        .trim()
        .to_string();
    let steps = steps_of(c, &job);
    let mut nodes: Vec<&str> = steps.iter().map(|(_, n)| n.as_str()).collect();
    nodes.sort_unstable();
    assert_eq!(
        nodes,
        ["n1", "n2"],
        "one step per node, not per job: {steps:?}"
    );
    live.wait_for_lines("the long jobs, killed as they start", |l| {
        for pid in sleepers(&m) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid is an i32")),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        l.len() >= 22
    });
    let done = live.finish_within(Duration::from_secs(60));
    assert_eq!(done.lines.len(), 22, "stderr: {}", done.stderr);
    let seqs: BTreeSet<u64> = done
        .lines
        .iter()
        .filter_map(|l| l["result"]["seq"].as_u64())
        .collect();
    assert_eq!(
        seqs,
        (1..=22).collect::<BTreeSet<u64>>(),
        "exactly one line per job"
    );
    let hosts: BTreeSet<String> = done.lines[..]
        .iter()
        .filter(|l| l["cmd"] == "hostname")
        .map(|l| {
            assert_eq!(l["result"]["status"], "ok", "{l}");
            let out = l["result"]["stdout"]
                .as_str()
                .unwrap_or("")
                .trim()
                .to_string();
            assert_eq!(l["result"]["host"].as_str(), Some(out.as_str()), "{l}");
            out
        })
        .collect();
    assert_eq!(hosts, BTreeSet::from(["n1".to_string(), "n2".to_string()]));
}
