//! The local executor: each job is `/bin/bash -o pipefail -c CMD` in its own process group.

use std::fs::File;
use std::future::Future;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chrono::Local;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use super::{Captured, Command, Ending, Limits, Outcome, Stop};
use crate::live::{Fd, LiveSink};
use crate::progress::RunningJobs;

/// Runs jobs on this machine.
#[derive(Debug, Clone)]
pub struct LocalExecutor {
    /// The directory relative `cd` values start from (bakapara's working directory).
    base: PathBuf,
    /// `--text`: a job's stdout / stderr go to temp files (see [`Captured::spooled`]).
    spool: bool,
    /// Counts this host's running jobs (for the progress display).
    running: Option<RunningJobs>,
    /// `--line-buffer` / `--ungroup`: uncaptured streams go to bakapara's own as they come.
    live: Option<LiveSink>,
}

impl LocalExecutor {
    pub fn new(base: PathBuf) -> LocalExecutor {
        LocalExecutor {
            base,
            spool: false,
            running: None,
            live: None,
        }
    }

    /// `--line-buffer` / `--ungroup`: a job's uncaptured streams are passed to `live` while
    /// it runs (and, with the spool on, also spooled, for `--results`).
    pub fn with_live(mut self, live: Option<LiveSink>) -> LocalExecutor {
        self.live = live;
        self
    }

    /// `--text`: spool each job's uncaptured streams to temp files instead of capturing them.
    pub fn with_spool(mut self, spool: bool) -> LocalExecutor {
        self.spool = spool;
        self
    }

    /// Counts running jobs in `running` (from start to end of each job).
    pub fn with_running(mut self, running: RunningJobs) -> LocalExecutor {
        self.running = Some(running);
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
        let mut command = tokio::process::Command::new("/bin/bash");
        command
            .arg("-o")
            .arg("pipefail")
            .arg("-c")
            .arg(job.cmd)
            .process_group(0)
            .stdin(Stdio::null())
            .envs(job.env.iter().map(|(k, v)| (k, v)));
        if let Some(dir) = &dir {
            command.current_dir(dir);
        }
        // With --text, an uncaptured stream goes straight into an unlinked temp file: the job
        // writes it at full speed and bakapara holds none of it in memory.
        let mut spooled_out = None;
        let mut spooled_err = None;
        let live_spool = || match self.spool {
            true => tempfile::tempfile()
                .map(Some)
                .map_err(|e| format!("cannot create a temp file for the job's output: {e}")),
            false => Ok(None),
        };
        match job.out {
            Some(path) => match open_output(job_dir, path) {
                Ok(f) => command.stdout(f),
                Err(e) => return Outcome::not_run(Ending::CouldNotRun(e)),
            },
            None if self.live.is_some() => match live_spool() {
                Ok(spool) => {
                    spooled_out = spool;
                    command.stdout(Stdio::piped())
                }
                Err(e) => return Outcome::not_run(Ending::CouldNotRun(e)),
            },
            None if self.spool => match spool_file() {
                Ok((ours, theirs)) => {
                    spooled_out = Some(ours);
                    command.stdout(theirs)
                }
                Err(e) => return Outcome::not_run(Ending::CouldNotRun(e)),
            },
            None => command.stdout(Stdio::piped()),
        };
        match job.err {
            Some(path) => match open_output(job_dir, path) {
                Ok(f) => command.stderr(f),
                Err(e) => return Outcome::not_run(Ending::CouldNotRun(e)),
            },
            None if self.live.is_some() => match live_spool() {
                Ok(spool) => {
                    spooled_err = spool;
                    command.stderr(Stdio::piped())
                }
                Err(e) => return Outcome::not_run(Ending::CouldNotRun(e)),
            },
            None if self.spool => match spool_file() {
                Ok((ours, theirs)) => {
                    spooled_err = Some(ours);
                    command.stderr(theirs)
                }
                Err(e) => return Outcome::not_run(Ending::CouldNotRun(e)),
            },
            None => command.stderr(Stdio::piped()),
        };
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => return Outcome::not_run(Ending::CouldNotRun(spawn_error(e, job.cmd))),
        };
        // The child holds its own copies of the spool files now.
        drop(command);
        let _running = self.running.as_ref().map(RunningJobs::enter);
        let started = Local::now();
        // The child leads its own process group, so its pid is the group id.
        let group = child.id().map(|pid| Pid::from_raw(pid as i32));
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let limit = limits.capture_limit;
        let live = self.live.as_ref();
        let (out_spool, err_spool) = (spooled_out.as_ref(), spooled_err.as_ref());
        let outputs = async {
            tokio::join!(
                take_output(
                    stdout,
                    limit,
                    live.map(|l| (l, Fd::Out, out_spool)),
                    job.live_tag
                ),
                take_output(
                    stderr,
                    limit,
                    live.map(|l| (l, Fd::Err, err_spool)),
                    job.live_tag
                ),
            )
        };
        let (ending, (stdout, stderr)) = supervise(&mut child, group, limits, stop, outputs).await;
        Outcome {
            ran: Some((started, Local::now())),
            ending,
            stdout: stdout.or(spooled_out.map(Captured::spooled)),
            stderr: stderr.or(spooled_err.map(Captured::spooled)),
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

/// Why bakapara is stopping a job, once it is.
#[derive(Clone, Copy, PartialEq)]
enum Cause {
    Timeout,
    Abort,
}

/// Waits until the job's process has ended and its output is closed, sending TERM and then
/// KILL to its process group on timeout or when the run stops. That goes on after the job's
/// shell has exited while a process it left behind still holds the output open. After a
/// stopped job's shell has exited, members of its group that outlive it are killed too, so
/// nothing is left behind.
async fn supervise<O>(
    child: &mut tokio::process::Child,
    group: Option<Pid>,
    limits: &Limits,
    mut stop: watch::Receiver<Stop>,
    outputs: impl Future<Output = O>,
) -> (Ending, O) {
    tokio::pin!(outputs);
    let deadline = limits.timeout.map(|t| Instant::now() + t);
    let mut cause: Option<Cause> = None;
    let mut kill_at: Option<Instant> = None;
    let mut stop_open = true;
    let mut status = None;
    let mut output = None;
    let (status, output) = loop {
        match (status.take(), output.take()) {
            (Some(exited), Some(closed)) => break (exited, closed),
            (exited, closed) => (status, output) = (exited, closed),
        }
        // A stop that was ordered before this job started is seen at once.
        if stop_open {
            let wanted = *stop.borrow_and_update();
            match wanted {
                Stop::Run => {}
                Stop::Term if cause.is_none() => {
                    cause = Some(Cause::Abort);
                    signal_group(group, Signal::SIGTERM);
                    kill_at = Some(Instant::now() + limits.grace);
                }
                Stop::Term => {}
                Stop::Kill => {
                    cause.get_or_insert(Cause::Abort);
                    signal_group(group, Signal::SIGKILL);
                    kill_at = None;
                    stop_open = false;
                }
            }
        }
        tokio::select! {
            exited = child.wait(), if status.is_none() => status = Some(exited),
            closed = &mut outputs, if output.is_none() => output = Some(closed),
            changed = stop.changed(), if stop_open => {
                if changed.is_err() {
                    stop_open = false;
                }
            }
            _ = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() && cause.is_none() => {
                cause = Some(Cause::Timeout);
                signal_group(group, Signal::SIGTERM);
                kill_at = Some(Instant::now() + limits.grace);
            }
            _ = sleep_until(kill_at.unwrap_or_else(Instant::now)), if kill_at.is_some() => {
                signal_group(group, Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    if cause.is_some() {
        reap_group(group, kill_at, &mut stop).await;
    }
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            let why = format!("lost track of the job's process: {e}");
            return (Ending::CouldNotRun(why), output);
        }
    };
    let (code, signal) = (status.code(), status.signal());
    let ending = match cause {
        None => match (code, signal) {
            (Some(code), _) => Ending::Exited(code),
            (None, Some(sig)) => Ending::Signaled(sig),
            (None, None) => Ending::CouldNotRun("the job ended with no exit status".to_string()),
        },
        Some(Cause::Timeout) => Ending::TimedOut { code, signal },
        Some(Cause::Abort) => Ending::Aborted { code, signal },
    };
    (ending, output)
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

fn spawn_error(e: std::io::Error, cmd: &str) -> String {
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
) -> Option<Captured> {
    match (stream, live) {
        (Some(stream), Some((sink, fd, spool))) => {
            sink.forward(stream, fd, spool, tag).await;
            None
        }
        (stream, _) => read_optional(stream, limit).await,
    }
}

/// [`read_capped`] for a stream that may not be there (it went to a file).
async fn read_optional(stream: Option<impl AsyncRead + Unpin>, limit: usize) -> Option<Captured> {
    match stream {
        Some(s) => Some(read_capped(s, limit).await),
        None => None,
    }
}

/// Reads a stream to its end, keeping the first `limit` bytes. The buffer grows with what
/// comes (most jobs print little), and what is past the limit is read and dropped.
async fn read_capped(mut stream: impl AsyncRead + Unpin, limit: usize) -> Captured {
    let mut kept: Vec<u8> = Vec::new();
    let mut truncated = false;
    let mut scratch: Vec<u8> = Vec::new();
    loop {
        let read = if kept.len() < limit {
            if kept.len() == kept.capacity() {
                kept.reserve((limit - kept.len()).min(kept.len().max(1024)));
            }
            stream.read_buf(&mut kept).await
        } else {
            if scratch.is_empty() {
                scratch = vec![0; 16 * 1024];
            }
            stream.read(&mut scratch).await
        };
        match read {
            Ok(0) => break,
            Ok(_) if kept.len() >= limit => {
                truncated |= kept.len() > limit || !scratch.is_empty();
                kept.truncate(limit);
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    Captured {
        bytes: kept,
        truncated,
        spool: None,
    }
}
