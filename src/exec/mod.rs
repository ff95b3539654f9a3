//! Executors: how one job's command is run on one host (local process groups, or SSH).

mod agent;
mod capture;
pub mod control_dir;
pub mod local;
mod spawn;
pub mod ssh;
mod stopper;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use chrono::{DateTime, Local};

/// What to run: a job after template expansion, as the executor sees it.
#[derive(Debug, Clone, Copy)]
pub struct Command<'a> {
    /// The shell command, run as `/bin/bash -o pipefail -c CMD`.
    pub cmd: &'a str,
    /// Directory to run in; relative paths are relative to the run's base directory.
    pub cd: Option<&'a str>,
    /// File for stdout (truncated, parents created); relative to the job's directory. `None`: capture.
    pub out: Option<&'a str>,
    /// File for stderr, as `out`.
    pub err: Option<&'a str>,
    /// Extra environment variables for the job.
    pub env: &'a [(String, String)],
    /// `--line-buffer --tag`: the prefix of each line of output passed on as it comes.
    pub live_tag: Option<&'a [u8]>,
    /// `--pipe`: what the job reads on its stdin (`None`: `/dev/null`).
    pub stdin: Option<&'a crate::pipe::Block>,
    /// Files to copy to a remote host before the job (local jobs ignore them).
    pub transfer: &'a [String],
    /// Files to copy back from a remote host after it.
    pub returns: &'a [String],
}

/// Per-run limits that every job of the run shares, plus the job's own timeout.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of stdout / stderr kept in the result; the rest is read and dropped.
    pub capture_limit: usize,
    /// Kill the job (TERM, then KILL after `grace`) when it runs longer than this.
    pub timeout: Option<Duration>,
    /// Time between TERM and KILL when a job is stopped.
    pub grace: Duration,
}

/// What the run wants from its running jobs; broadcast through a `tokio::sync::watch` channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// Keep running.
    Run,
    /// Stop: TERM the process group, KILL after the grace period.
    Term,
    /// Stop at once: KILL the process group.
    Kill,
}

/// Captured output of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Captured {
    pub bytes: Vec<u8>,
    /// True when the stream produced more than the capture limit.
    pub truncated: bool,
    /// With `--text`: the stream's whole output, spooled to a temp file (`bytes` stays empty).
    pub spool: Option<Spool>,
}

impl Captured {
    /// A stream spooled whole to `file` (`--text`).
    #[must_use]
    pub fn spooled(file: std::fs::File) -> Captured {
        Captured {
            bytes: Vec::new(),
            truncated: false,
            spool: Some(Spool::new(file)),
        }
    }
}

/// A job's output stream in an unlinked temp file (`--text`): written by the job (or by the
/// SSH channel reader) while it runs, printed whole when it ends. The file goes away when the
/// last handle is dropped. Two spools are equal when they are the same file.
#[derive(Debug, Clone)]
pub struct Spool(std::sync::Arc<std::fs::File>);

impl Spool {
    #[must_use]
    pub fn new(file: std::fs::File) -> Spool {
        Spool(std::sync::Arc::new(file))
    }

    /// The file (`&File` reads, writes and seeks).
    #[must_use]
    pub fn file(&self) -> &std::fs::File {
        &self.0
    }
}

impl PartialEq for Spool {
    fn eq(&self, other: &Spool) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Spool {}

/// How a job run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The command ran and exited with this code.
    Exited(i32),
    /// The command was killed by a signal that bakapara did not send.
    Signaled(i32),
    /// bakapara stopped the command because it ran past its timeout: its exit code or the
    /// signal that ended it.
    TimedOut {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// bakapara stopped the command (Ctrl-C, SIGTERM, --halt): its exit code or the signal
    /// that ended it.
    Aborted {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The command could not be started (bad `cd`, unwritable `out`, spawn failure): why.
    CouldNotRun(String),
    /// The host was lost while the job ran (transport failure): the job should run again
    /// (the executor reports the loss, and the host's return, as [`HostEvent`]s).
    HostLost(String),
    /// The host gave the job back without starting it: its agent stopped and said so before
    /// the job's start was reported. It runs again, and the loss does not count against it
    /// (`--host-loss-limit`): only the jobs that were running there could have caused it.
    GivenBack(String),
}

/// The outcome of one job run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When the job's process started and ended; `None` when it never started (a bad `cd`,
    /// an unwritable `out`, a lost host).
    pub ran: Option<(DateTime<Local>, DateTime<Local>)>,
    pub ending: Ending,
    /// Captured stdout, when `out` was not given.
    pub stdout: Option<Captured>,
    /// Captured stderr, when `err` was not given.
    pub stderr: Option<Captured>,
    /// Something the result's `error` should also say (e.g. why bakapara stopped waiting
    /// for the job's output).
    pub note: Option<String>,
    /// What the job's file transfers did (remote jobs with `--transferfile`/`--return`).
    pub transfer: Option<crate::transfer::TransferStats>,
}

impl Outcome {
    /// An outcome for a job that never got to run.
    #[must_use]
    pub fn not_run(ending: Ending) -> Outcome {
        Outcome {
            ran: None,
            ending,
            stdout: None,
            stderr: None,
            note: None,
            transfer: None,
        }
    }
}

/// One job run for an executor: the job in slot `lane` of the host (lanes count from 0), with
/// its limits, stopped when `stop` says so or its timeout passes.
#[derive(Debug)]
pub struct Task<'a> {
    pub lane: usize,
    pub job: &'a Command<'a>,
    pub limits: &'a Limits,
    pub stop: watch::Receiver<Stop>,
}

/// The future of one job run (see [`Executor::run`]).
pub type RunFuture<'a> = Pin<Box<dyn Future<Output = Outcome> + Send + 'a>>;

/// A host's way of running jobs: this machine, an SSH host, or (in tests) a fake with
/// scripted outcomes. The scheduler sees a host only through this trait and the
/// [`HostEvent`]s its executor sends; how the executor connects, notices a lost connection
/// and makes it again is its own business.
pub trait Executor: Send + Sync + std::fmt::Debug {
    /// Runs one job to its end (see [`Task`]).
    fn run<'a>(&'a self, task: Task<'a>) -> RunFuture<'a>;

    /// Whether jobs can start here now: false while a lost connection is being made again
    /// (a [`HostEvent::Up`] follows).
    fn is_up(&self) -> bool {
        true
    }

    /// How many jobs beyond the running one each slot holds queued (already sent to the
    /// host, so that on a slow link the next job costs no round trip): the scheduler gives
    /// the host `slots × (1 + this)` lanes. Lane `l` is the executor's slot `l % slots`.
    fn queued_per_slot(&self) -> usize {
        0
    }

    /// Ends the host's connections at the end of the run.
    fn close(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

/// News of a host's connection, from its executor (or from whatever connects it) to the
/// scheduler, with the host's index in the run's host list.
#[derive(Debug)]
pub enum HostEvent {
    /// A host that was connecting in the background is ready: jobs can run there now.
    Joined {
        executor: Arc<dyn Executor>,
        slots: usize,
    },
    /// A host connecting in the background cannot be reached for now (said once); it is
    /// tried again with back-off.
    Unreachable(String),
    /// The host cannot be used in this run (its key or the login was refused...): why.
    LeftOut(String),
    /// The host's connection was lost: why. The executor makes it again with back-off.
    Down(String),
    /// The host is back after [`HostEvent::Down`].
    Up,
}

/// Where executors send their [`HostEvent`]s.
pub type HostEvents = tokio::sync::mpsc::UnboundedSender<(usize, HostEvent)>;
