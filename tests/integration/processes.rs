//! Local job processes and what happens to them (SPEC §5): nothing outlives a killed
//! bakapara, SIGQUIT / SIGUSR1 / SIGALRM, Ctrl-Z and `fg`, jobs without a terminal, a job that
//! stops itself, and a process that leaves its job's group holding the output. Real bakapara,
//! real `/bin/bash` jobs; the terminal cases run an interactive bash in tmux.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::common::bin::*;
use crate::common::sshd::{process_tree, SshCluster};
use crate::common::tmux::{quote, Tmux};

/// The processes of jobs holding `marker`: their shells and their `sleep`s (not bakapara,
/// whose command line holds the template too).
fn job_processes(marker: &str) -> Vec<u32> {
    pids_with(marker)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.starts_with(b"sleep\0") || c.starts_with(b"/bin/bash\0-o\0pipefail")
            })
        })
        .collect()
}

/// How many process groups the watchdog of bakapara `pid` has in its record: the memory file
/// it holds as fd 3, read through /proc (an entry is `g` and the group id; a blank one is
/// spaces).
fn recorded_groups(pid: nix::unistd::Pid) -> usize {
    let under = process_tree(pid.as_raw().unsigned_abs());
    pids_with("bakapara's watchdog")
        .into_iter()
        .find(|w| under.contains(w))
        .and_then(|w| std::fs::read(format!("/proc/{w}/fd/3")).ok())
        .map_or(0, |record| {
            record
                .split(|&b| b == b'\n')
                .filter(|entry| entry.first() == Some(&b'g'))
                .count()
        })
}

/// A process's state letter from /proc (`S`, `R`, `T`...), `None` once it is gone.
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.chars().next()
}

fn status(l: &Value) -> &str {
    l["result"]["status"].as_str().expect("result.status")
}

fn error(l: &Value) -> &str {
    l["result"]["error"].as_str().unwrap_or("")
}

#[test]
fn no_job_outlives_a_bakapara_killed_by_sigkill_or_sigabrt() {
    // SIGABRT is how an abort() or a panic with panic=abort ends a process.
    for sig in [Signal::SIGKILL, Signal::SIGABRT] {
        // A core dump, if the machine writes one, lands in this directory.
        let dir = tempdir();
        let m = marker();
        let _reaper = Reaper(m.clone());
        // Each job leaves a background sleep, and its second sleep ignores TERM: the watchdog
        // must TERM the whole group, then KILL what is left.
        let template = format!("sleep 100{m} & trap '' TERM; sleep 100{m}; wait; : <>");
        let live = Live::spawn(
            &["-j", "2", &template, ":::", "1", "2", "3"],
            Vec::new(),
            dir.path(),
        );
        wait_until("both jobs and their children run", || {
            sleepers(&m).len() == 4
        });
        // A job is recorded just after its spawn returns: on a loaded machine its sleeps can
        // be up before bakapara has written its entry (a limit the README states).
        wait_until("both jobs are in the watchdog's record", || {
            recorded_groups(live.pid()) == 2
        });
        live.signal(sig);
        let out = live.finish_within(Duration::from_secs(60));
        assert_eq!(out.signal, Some(sig as i32), "{sig}");
        wait_until("every job process is gone", || sleepers(&m).is_empty());
    }
}

#[test]
fn sigquit_kills_the_jobs_at_once_writes_their_lines_and_dies_of_it() {
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    // The grace period is long and the jobs ignore TERM: only a KILL at once ends them.
    let template = format!("trap '' TERM; sleep 100{m}; : <>");
    let live = Live::spawn(
        &["-j", "2", "--grace", "1h", &template, ":::", "1", "2", "3"],
        Vec::new(),
        dir.path(),
    );
    wait_until("both jobs run", || sleepers(&m).len() == 2);
    live.signal(Signal::SIGQUIT);
    let out = live.finish_within(Duration::from_secs(60));
    assert_eq!(out.signal, Some(nix::libc::SIGQUIT), "{}", out.stderr);
    assert_eq!(out.lines.len(), 3, "every job gets its line: {:?}", out.raw);
    for l in &out.lines {
        assert_eq!(status(l), "aborted", "{l}");
        assert!(error(l).contains("SIGQUIT"), "{l}");
    }
    let killed = out
        .lines
        .iter()
        .filter(|l| l["result"]["signal"] == "SIGKILL")
        .count();
    assert_eq!(killed, 2, "the running jobs were killed at once");
    wait_until("every job process is gone", || sleepers(&m).is_empty());
}

#[test]
fn sigusr1_and_sigalrm_stop_the_run_as_sigterm_does() {
    for sig in [Signal::SIGUSR1, Signal::SIGALRM] {
        let dir = tempdir();
        let m = marker();
        let _reaper = Reaper(m.clone());
        let template = format!("sleep 100{m}; : <>");
        let live = Live::spawn(
            &["-j", "2", &template, ":::", "1", "2"],
            Vec::new(),
            dir.path(),
        );
        wait_until("both jobs run", || sleepers(&m).len() == 2);
        live.signal(sig);
        let out = live.finish_within(Duration::from_secs(60));
        assert_eq!(out.signal, Some(sig as i32), "{sig}: {}", out.stderr);
        assert_eq!(out.lines.len(), 2, "{sig}: {:?}", out.raw);
        for l in &out.lines {
            assert_eq!(status(l), "aborted", "{l}");
            assert_eq!(l["result"]["signal"], "SIGTERM", "{l}");
        }
        wait_until("every job process is gone", || sleepers(&m).is_empty());
    }
}

#[test]
fn a_timed_out_job_whose_setsid_child_holds_its_output_is_reported() {
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let template = format!("setsid sleep 100{m} & echo started; : <>");
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
    let out = live.finish_within(Duration::from_secs(60));
    assert_eq!(out.lines.len(), 1);
    let l = &out.lines[0];
    assert_eq!(status(l), "error", "{l}");
    assert!(error(l).contains("timed out"), "{l}");
    assert!(
        error(l).contains("a process outside the job's process group held its output"),
        "{l}"
    );
    assert_eq!(
        l["result"]["stdout"], "started\n",
        "what was read is kept: {l}"
    );
}

#[test]
fn sigterm_stops_a_job_whose_setsid_child_holds_its_output() {
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let template = format!("setsid sleep 100{m} & echo started; wait; : <>");
    let live = Live::spawn(
        &["--grace", "300ms", &template, ":::", "x"],
        Vec::new(),
        dir.path(),
    );
    wait_until("the setsid child runs", || sleepers(&m).len() == 1);
    live.signal(Signal::SIGTERM);
    let out = live.finish_within(Duration::from_secs(60));
    assert_eq!(out.signal, Some(nix::libc::SIGTERM));
    assert_eq!(out.lines.len(), 1);
    let l = &out.lines[0];
    assert_eq!(status(l), "aborted", "{l}");
    assert!(error(l).contains("outside the job's process group"), "{l}");
}

#[test]
fn a_background_child_in_the_jobs_group_still_keeps_the_job_open() {
    let dir = tempdir();
    let out = Live::spawn(
        &["(sleep 0.5; echo late) & echo early; : <>", ":::", "x"],
        Vec::new(),
        dir.path(),
    )
    .finish();
    assert_eq!(out.lines.len(), 1);
    let l = &out.lines[0];
    assert_eq!(status(l), "ok", "{l}");
    assert_eq!(l["result"]["stdout"], "early\nlate\n", "{l}");
}

#[test]
fn a_job_that_stops_itself_is_continued_once_then_killed_and_reported() {
    let dir = tempdir();
    let jobs = "echo a; kill -STOP $$; echo b\n\
                echo a; kill -STOP $$; echo b; kill -STOP $$; echo c\n";
    let out = Live::spawn(&["-k"], jobs.as_bytes().to_vec(), dir.path())
        .finish_within(Duration::from_secs(60));
    assert_eq!(out.lines.len(), 2, "{:?}", out.raw);
    let once = &out.lines[0];
    assert_eq!(status(once), "ok", "{once}");
    assert_eq!(once["result"]["stdout"], "a\nb\n", "{once}");
    let twice = &out.lines[1];
    assert_eq!(status(twice), "error", "{twice}");
    assert!(error(twice).contains("stopped itself (SIGSTOP)"), "{twice}");
    assert_eq!(twice["result"]["stdout"], "a\nb\n", "{twice}");
}

#[test]
fn no_helper_of_bakapara_runs_the_users_bashrc() {
    // bash sources ~/.bashrc by itself when its stdin is a socket (its rshd heuristic); the
    // watchdog's stdin is one. A user's .bashrc may be slow (pyenv, conda) or print.
    let home = tempdir();
    let touched = home.path().join("bashrc-ran");
    std::fs::write(
        home.path().join(".bashrc"),
        format!("echo x >> '{}'\n", touched.display()),
    )
    .expect("write .bashrc");
    let mut cmd = bakapara();
    cmd.env("HOME", home.path())
        .args(["-j", "2", "true", ":::", "1", "2"]);
    let out = Live::spawn_with(&mut cmd, Vec::new()).finish_within(RUN_TIMEOUT);
    assert_eq!(out.lines.len(), 2, "{:?}", out.raw);
    assert!(
        !touched.exists(),
        "a process bakapara started ran $HOME/.bashrc"
    );
}

/// Types `bakapara ARGS > out.jsonl; echo $? > rc` into an interactive bash in tmux. In a
/// subshell: bash goes on with the rest of a list when its command is stopped by Ctrl-Z.
fn run_in_terminal(tmux: &Tmux, dir: &Path, args: &str) {
    tmux.type_line(&format!(
        "(cd {} && {} {args} > out.jsonl; echo $? > rc.tmp; mv rc.tmp rc)",
        quote(dir),
        quote(Path::new(env!("CARGO_BIN_EXE_bakapara"))),
    ));
}

fn result_lines(dir: &Path) -> Vec<Value> {
    parse_lines(&std::fs::read(dir.join("out.jsonl")).expect("read the results"))
}

#[test]
fn jobs_have_no_controlling_terminal() {
    let dir = tempdir();
    let tmux = Tmux::bash("notty");
    // With the terminal as its controlling terminal, `cat` would be stopped (SIGTTIN) and the
    // run would hang; without one, opening /dev/tty fails.
    run_in_terminal(&tmux, dir.path(), "'cat /dev/tty; echo rc=$?; : <>' ::: x");
    tmux.wait_for_file(&dir.path().join("rc"));
    let lines = result_lines(dir.path());
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["result"]["stdout"], "rc=1\n", "{}", lines[0]);
}

/// Ctrl-Z in `tmux` while at least `procs` job processes holding `m` run: waits until they are
/// all stopped, keeps bakapara stopped for `hold` (time passing while stopped is what the
/// callers test), checks the jobs stayed stopped, types `fg` and returns the run's exit status
/// as the terminal's shell wrote it.
fn stopped_for(tmux: &Tmux, dir: &Path, m: &str, procs: usize, hold: Duration) -> String {
    tmux.keys("C-z");
    tmux.wait_for_screen("bash to report bakapara stopped", |s| s.contains("Stopped"));
    wait_until("every job process is stopped", || {
        let found = job_processes(m);
        found.len() >= procs && found.iter().all(|&p| state(p) == Some('T'))
    });
    std::thread::sleep(hold);
    let found = job_processes(m);
    assert!(
        found.len() >= procs && found.iter().all(|&p| state(p) == Some('T')),
        "the jobs stay stopped while bakapara is: {found:?}"
    );
    tmux.type_line("fg");
    tmux.wait_for_file(&dir.join("rc"));
    std::fs::read_to_string(dir.join("rc")).expect("rc")
}

/// Ctrl-Z with a job running on a remote host (`hosts`: the options that name it): the
/// job's processes stop with bakapara, and stay stopped for longer than its agent's fence
/// waits for a silent bakapara; `fg` continues them, the stopped time does not count against
/// the timeout, and the job ran once.
fn ctrl_z_stops_a_remote_job(session: &str, hosts: &str) {
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let tmux = Tmux::bash(session);
    run_in_terminal(
        &tmux,
        dir.path(),
        &format!("{hosts} --timeout 3s 'sleep 1.0{m}; sleep 1.0{m}; echo ok <>' ::: 1"),
    );
    wait_until("the job runs", || sleepers(&m).len() == 1);
    // Stopped past the agent's fence (3 s).
    let rc = stopped_for(&tmux, dir.path(), &m, 2, Duration::from_secs(5));
    let lines = result_lines(dir.path());
    assert_eq!(lines.len(), 1, "{}", tmux.screen());
    let l = &lines[0];
    assert_eq!(status(l), "ok", "not timed out, not lost: {l}");
    assert_eq!(l["result"]["stdout"], "ok 1\n", "{l}");
    assert_eq!(l["result"]["attempts"], 1, "it ran once: {l}");
    assert_eq!(rc.trim(), "0", "{}", tmux.screen());
    wait_until("no job process is left", || job_processes(&m).is_empty());
}

#[test]
fn ctrl_z_stops_the_jobs_of_an_ssh_host_and_fg_continues_them() {
    let cluster = SshCluster::start(&["h1"]);
    let hosts = format!("--ssh-config {} -S h1/1", quote(cluster.ssh_config_path()));
    ctrl_z_stops_a_remote_job("ctrlzssh", &hosts);
}

#[test]
fn ctrl_z_stops_the_jobs_of_a_launcher_host_and_fg_continues_them() {
    // The launcher runs the agent here; it is in a process group of its own, so the terminal's
    // Ctrl-Z reaches bakapara alone, which tells the agent.
    ctrl_z_stops_a_remote_job("ctrlzlaunch", "-S l1/1 --launcher 'env L=<host>'");
}

#[test]
fn ctrl_z_stops_the_jobs_with_bakapara_and_fg_continues_them() {
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let tmux = Tmux::bash("ctrlz");
    // About 2 s of work per job, against a 3 s timeout; bakapara stays stopped for 4 s, which
    // must not count: the second sleep then still has its second to run after `fg`.
    run_in_terminal(
        &tmux,
        dir.path(),
        &format!("-j 2 --timeout 3s 'sleep 1.0{m}; sleep 1.0{m}; echo ok <>' ::: 1 2"),
    );
    wait_until("both jobs run", || sleepers(&m).len() == 2);
    let rc = stopped_for(&tmux, dir.path(), &m, 4, Duration::from_secs(4));
    let lines = result_lines(dir.path());
    assert_eq!(lines.len(), 2);
    for l in &lines {
        assert_eq!(status(l), "ok", "not timed out: {l}");
        assert!(l["result"]["stdout"]
            .as_str()
            .unwrap_or("")
            .starts_with("ok"));
    }
    assert_eq!(rc.trim(), "0", "{}", tmux.screen());
    assert!(job_processes(&m).is_empty());
}
