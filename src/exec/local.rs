//! The local executor: each job is `/bin/bash -o pipefail -c CMD` in its own session (so its
//! own process group, and no controlling terminal).

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::Local;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncRead;
use tokio::signal::unix::{signal as unix_signal, SignalKind};
use tokio::sync::watch;
use tokio::time::Instant;

use super::capture::read_capped;
use super::spawn::{look, spawn, Environment, Sink, State};
use super::stopper::{Cause, Order, Stopper};
use super::{Captured, Command, Ending, Executor, Limits, Outcome, RunFuture, Stop, Task};
use crate::live::{Fd, LiveSink};
use crate::watchdog::Watchdog;

/// Runs jobs on this machine.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    /// The directory relative `cd` values start from (bakapara's working directory).
    base: PathBuf,
    /// `--text`: a job's stdout / stderr go to temp files (see [`Captured::spooled`]).
    spool: bool,
    /// The run's record of job process groups (Ctrl-Z, and cleanup if bakapara dies).
    watchdog: Option<Arc<Watchdog>>,
    /// `--line-buffer` / `--ungroup`: uncaptured streams go to bakapara's own as they come.
    live: Option<LiveSink>,
    /// bakapara's environment, read when the executor is made: every job gets it.
    env: Arc<Environment>,
}

impl LocalExecutor {
    #[must_use]
    pub fn new(base: PathBuf) -> LocalExecutor {
        LocalExecutor {
            base,
            spool: false,
            watchdog: None,
            live: None,
            env: Arc::new(Environment::capture()),
        }
    }

    /// Records each job's process group in `watchdog` while the job runs.
    #[must_use]
    pub fn with_watchdog(mut self, watchdog: Arc<Watchdog>) -> LocalExecutor {
        self.watchdog = Some(watchdog);
        self
    }

    /// `--line-buffer` / `--ungroup`: a job's uncaptured streams are passed to `live` while
    /// it runs (and, with the spool on, also spooled, for `--results`).
    #[must_use]
    pub fn with_live(mut self, live: Option<LiveSink>) -> LocalExecutor {
        self.live = live;
        self
    }

    /// `--text`: spool each job's uncaptured streams to temp files instead of capturing them.
    #[must_use]
    pub fn with_spool(mut self, spool: bool) -> LocalExecutor {
        self.spool = spool;
        self
    }

    /// Runs one job to its end, stopping it when `stop` says so or its timeout passes.
    pub async fn run(
        &self,
        job: &Command<'_>,
        limits: &Limits,
        stop: watch::Receiver<Stop>,
    ) -> Outcome {
        let dir = job.cd.map(|cd| self.base.join(cd));
        if let Some(dir) = &dir {
            if !dir.is_dir() {
                return Outcome::not_run(Ending::CouldNotRun(format!(
                    "cannot cd to {}: no such directory",
                    dir.display()
                )));
            }
        }
        let job_dir = dir.as_deref().unwrap_or(&self.base);
        let (stdout, spooled_out) = match self.sink(job_dir, job.out) {
            Ok(sink) => sink,
            Err(e) => return Outcome::not_run(Ending::CouldNotRun(e)),
        };
        let (stderr, spooled_err) = match self.sink(job_dir, job.err) {
            Ok(sink) => sink,
            Err(e) => return Outcome::not_run(Ending::CouldNotRun(e)),
        };
        // Listening before the process starts, so that no SIGCHLD of its is missed.
        let sigchld = unix_signal(SignalKind::child()).ok();
        let args = ["-o", "pipefail", "-c", job.cmd];
        let piped = job.stdin.is_some();
        let spawned = match spawn(
            "/bin/bash",
            &args,
            &self.env,
            job.env,
            dir.as_deref(),
            piped,
            stdout,
            stderr,
        ) {
            Ok(spawned) => spawned,
            Err(e) => return Outcome::not_run(Ending::CouldNotRun(spawn_error(&e, job.cmd))),
        };
        // The job leads its own session and process group: its pid is the group id.
        let pid = spawned.pid;
        let _watched = self.watchdog.as_ref().map(|w| w.watch_group(pid));
        let started = Local::now();
        let limit = limits.capture_limit;
        let live = self.live.as_ref();
        let (out_spool, err_spool) = (spooled_out.as_ref(), spooled_err.as_ref());
        // What was read stays here even when the reading is given up (see [`supervise`]);
        // nothing is captured of a stream passed on live.
        let captured = |stream: bool| (stream && live.is_none()).then(Captured::default);
        let mut out = captured(spawned.stdout.is_some());
        let mut err = captured(spawned.stderr.is_some());
        let feeding = async {
            if let (Some(fd), Some(block)) = (spawned.stdin, job.stdin) {
                // A job that exits without reading its stdin is no error of the feeding.
                let _ = crate::pipe::feed(fd, block).await;
            }
        };
        let outputs = async {
            tokio::join!(
                feeding,
                take_output(
                    spawned.stdout,
                    limit,
                    live.map(|l| (l, Fd::Out, out_spool)),
                    job.live_tag,
                    out.as_mut(),
                ),
                take_output(
                    spawned.stderr,
                    limit,
                    live.map(|l| (l, Fd::Err, err_spool)),
                    job.live_tag,
                    err.as_mut(),
                ),
            );
        };
        let started_job = Started {
            pid,
            sigchld,
            watchdog: self.watchdog.as_deref(),
        };
        let (ending, held) = supervise(started_job, limits, stop, outputs).await;
        Outcome {
            ran: Some((started, Local::now())),
            ending,
            stdout: out.or(spooled_out.map(Captured::spooled)),
            stderr: err.or(spooled_err.map(Captured::spooled)),
            note: held.then(|| {
                "a process outside the job's process group held its output open; \
                 bakapara stopped waiting for it"
                    .to_string()
            }),
            transfer: None,
        }
    }
}

impl Executor for LocalExecutor {
    fn run<'a>(&'a self, task: Task<'a>) -> RunFuture<'a> {
        Box::pin(LocalExecutor::run(self, task.job, task.limits, task.stop))
    }
}

impl LocalExecutor {
    /// Where a job's stream goes (its `out` / `err` file, else a pipe or a spool file), and
    /// bakapara's handle of the spool file if there is one. With --text, an uncaptured stream
    /// goes straight into an unlinked temp file: the job writes it at full speed and bakapara
    /// holds none of it in memory.
    fn sink(&self, job_dir: &Path, path: Option<&str>) -> Result<(Sink, Option<File>), String> {
        match path {
            Some(path) => Ok((Sink::File(open_output(job_dir, path)?), None)),
            // Passed on live through a pipe; spooled as well for --results.
            None if self.live.is_some() && self.spool => Ok((Sink::Pipe, Some(spool_file()?.0))),
            None if self.live.is_some() => Ok((Sink::Pipe, None)),
            None if self.spool => {
                let (ours, theirs) = spool_file()?;
                Ok((Sink::File(theirs), Some(ours)))
            }
            None => Ok((Sink::Pipe, None)),
        }
    }
}

/// An unlinked temp file for a spooled stream: bakapara's handle and the job's.
fn spool_file() -> Result<(File, File), String> {
    let spool_error =
        |e: std::io::Error| format!("cannot create a temp file for the job's output: {e}");
    let ours = tempfile::tempfile().map_err(spool_error)?;
    let theirs = ours.try_clone().map_err(spool_error)?;
    Ok((ours, theirs))
}

/// A started job, as [`supervise`] watches it.
struct Started<'a> {
    /// The job's shell: it leads the job's process group.
    pid: Pid,
    /// SIGCHLD, listened for since before the job started: the shell's exit or stop.
    sigchld: Option<tokio::signal::unix::Signal>,
    watchdog: Option<&'a Watchdog>,
}

/// How often the group of a stopped job whose output stays open is looked at.
const HELD_CHECK: Duration = Duration::from_millis(20);

/// Waits until the job's process has ended and its output is closed, sending TERM and then
/// KILL to its process group on timeout or when the run stops. That goes on after the job's
/// shell has exited while a process it left behind still holds the output open. After a
/// stopped job's shell has exited, members of its group that outlive it are killed too, so
/// nothing is left behind. A process that left the group (setsid) cannot be killed that way:
/// once the group is empty, the output is given up on (returns true then).
///
/// A job's shell that stops itself is continued once (a job has no terminal to be continued
/// from); stopped again, it is killed and reported. Time bakapara spent stopped by Ctrl-Z
/// (see `watchdog`) does not count against the timeout.
async fn supervise(
    job: Started<'_>,
    limits: &Limits,
    stop: watch::Receiver<Stop>,
    outputs: impl Future<Output = ()>,
) -> (Ending, bool) {
    tokio::pin!(outputs);
    let Started {
        pid,
        mut sigchld,
        watchdog,
    } = job;
    let group = Some(pid);
    let paused = || watchdog.map_or(Duration::ZERO, Watchdog::paused);
    let mut stopper = Stopper::new(stop, limits, true, paused());
    let carry_out = |order: Order| match order {
        Order::Term => signal_group(group, Signal::SIGTERM),
        Order::Kill => signal_group(group, Signal::SIGKILL),
    };
    let mut status = None;
    let mut closed = false;
    let mut held = false;
    let mut empty_checks = 0;
    let mut self_stops = 0;
    let status = loop {
        if closed {
            if let Some(exited) = status.take() {
                break exited;
            }
        }
        // A stop that was ordered before this job started is seen at once.
        if let Some(order) = stopper.ordered() {
            carry_out(order);
        }
        // Killed, the shell gone, and still the output is open: who holds it?
        let check_held =
            stopper.cause().is_some() && stopper.kill_at().is_none() && status.is_some();
        tokio::select! {
            () = &mut outputs, if !closed => closed = true,
            order = stopper.next(paused) => {
                if let Some(order) = order {
                    carry_out(order);
                }
            }
            Some(()) = next_signal(&mut sigchld), if status.is_none() => match look(pid) {
                State::Running => {}
                State::Ended { code, signal } => status = Some(Ok((code, signal))),
                State::Lost(e) => status = Some(Err(e)),
                State::Stopped(_) if stopper.cause().is_some() => {}
                State::Stopped(sig) => {
                    self_stops += 1;
                    if self_stops == 1 {
                        signal_group(group, Signal::SIGCONT);
                    } else {
                        carry_out(stopper.stop_for(Cause::Stopped(sig)));
                    }
                }
            },
            () = tokio::time::sleep(HELD_CHECK), if check_held && !closed => {
                // Twice in a row, so that output still buffered in the pipe is read first.
                empty_checks = if group.is_some_and(group_alive) { 0 } else { empty_checks + 1 };
                if empty_checks >= 2 {
                    held = true;
                    closed = true;
                }
            }
        }
    };
    let cause = stopper.cause();
    if cause.is_some() {
        let kill_at = stopper.kill_at();
        reap_group(group, kill_at, stopper.stop_channel()).await;
    }
    let (code, signal) = match status {
        Ok(ended) => ended,
        Err(e) => {
            let why = format!("lost track of the job's process: {e}");
            return (Ending::CouldNotRun(why), held);
        }
    };
    let ending = match cause {
        None => match (code, signal) {
            (Some(code), _) => Ending::Exited(code),
            (None, Some(sig)) => Ending::Signaled(sig),
            (None, None) => Ending::CouldNotRun("the job ended with no exit status".to_string()),
        },
        Some(Cause::Timeout) => Ending::TimedOut { code, signal },
        Some(Cause::Abort) => Ending::Aborted { code, signal },
        Some(Cause::Stopped(sig)) => Ending::CouldNotRun(format!(
            "the job stopped itself ({}) again after bakapara had continued it (a job has \
             no terminal to be continued from), so bakapara killed it",
            sig.as_str()
        )),
    };
    (ending, held)
}

/// The next SIGCHLD, or a short pause when it could not be listened for (then the process is
/// looked at on every pause).
async fn next_signal(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    if let Some(signal) = signal {
        signal.recv().await
    } else {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Some(())
    }
}

/// After a stopped job's shell is gone, waits for the rest of its process group to go, and
/// KILLs what is left when the grace period ends (or at once when the run says Kill). Returns
/// once the group is empty, so that no process of the job outlives bakapara.
async fn reap_group(
    group: Option<Pid>,
    kill_at: Option<Instant>,
    stop: &mut watch::Receiver<Stop>,
) {
    let Some(pgid) = group else { return };
    let kill_at = kill_at.unwrap_or_else(Instant::now);
    let mut killed: Option<Instant> = None;
    let mut pause = Duration::from_millis(1);
    while group_alive(pgid) {
        let now = Instant::now();
        match killed {
            None if now >= kill_at || *stop.borrow() == Stop::Kill => {
                let _ = killpg(pgid, Signal::SIGKILL);
                killed = Some(now);
                pause = Duration::from_millis(1);
            }
            // SIGKILL cannot be caught: what is still listed is on its way out.
            Some(at) if now - at > Duration::from_secs(1) => return,
            _ => {}
        }
        let until_kill = kill_at
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        tokio::time::sleep(pause.min(until_kill)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// Whether a process of group `pgid` is alive. Zombies (dead, waiting for a parent to reap
/// them, which an init that never reaps leaves for ever) do not count.
fn group_alive(pgid: Pid) -> bool {
    // killpg with no signal tells whether the group has any member, zombies included.
    if killpg(pgid, None).is_err() {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return true;
    };
    let want = pgid.as_raw().to_string();
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            return false;
        };
        let mut fields = rest.split(' ');
        let state = fields.next();
        let pgrp = fields.nth(1);
        pgrp == Some(want.as_str()) && state != Some("Z")
    })
}

fn signal_group(group: Option<Pid>, signal: Signal) {
    if let Some(pgid) = group {
        // ESRCH means the group is already gone: nothing to do.
        let _ = killpg(pgid, signal);
        if signal == Signal::SIGTERM {
            // A stopped process acts on TERM only once continued, as a shell's `kill` does.
            let _ = killpg(pgid, Signal::SIGCONT);
        }
    }
}

/// Opens an `out` / `err` file: relative to the job's directory, parents created, truncated.
fn open_output(job_dir: &Path, path: &str) -> Result<File, String> {
    let full = job_dir.join(path);
    if let Some(parent) = full.parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create directory {}: {e}", parent.display()))?;
        }
    }
    File::create(&full).map_err(|e| format!("cannot write {}: {e}", full.display()))
}

fn spawn_error(e: &std::io::Error, cmd: &str) -> String {
    if e.raw_os_error() == Some(nix::libc::E2BIG) {
        format!(
            "cannot start the job: its command ({} bytes) is longer than the kernel allows for one argument",
            cmd.len()
        )
    } else {
        format!("cannot start /bin/bash: {e}")
    }
}

/// A job's stream to its end: passed to the live output (then nothing is captured), or
/// [`read_optional`].
async fn take_output(
    stream: Option<impl AsyncRead + Unpin>,
    limit: usize,
    live: Option<(&LiveSink, Fd, Option<&File>)>,
    tag: Option<&[u8]>,
    into: Option<&mut Captured>,
) {
    match (stream, live) {
        (Some(stream), Some((sink, fd, spool))) => sink.forward(stream, fd, spool, tag).await,
        (stream, _) => read_optional(stream, limit, into).await,
    }
}

/// [`read_capped`] for a stream that may not be there (it went to a file).
async fn read_optional(
    stream: Option<impl AsyncRead + Unpin>,
    limit: usize,
    into: Option<&mut Captured>,
) {
    if let (Some(stream), Some(into)) = (stream, into) {
        read_capped(stream, limit, into, |_| {}).await;
    }
}
