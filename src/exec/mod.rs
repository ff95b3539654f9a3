//! Executors: how one job's command is run on one host (local process groups, or SSH).

pub mod control_dir;
pub mod local;
mod spawn;
pub mod ssh;

use std::time::Duration;

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
    /// `--pipe`: what the job reads on its stdin (`None`: `/dev/null`). Local jobs only.
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
    pub fn new(file: std::fs::File) -> Spool {
        Spool(std::sync::Arc::new(file))
    }

    /// The file (`&File` reads, writes and seeks).
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
    /// The host was lost while the job ran (transport failure): the job should run again.
    /// `generation` names the host's connections that were lost.
    HostLost { why: String, generation: u64 },
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

/// A host's way of running jobs.
#[derive(Debug, Clone)]
pub enum Executor {
    Local(local::LocalExecutor),
    Ssh(std::sync::Arc<ssh::SshHost>),
}

impl Executor {
    /// Runs one job to its end in slot `lane` of the host (see [`local::LocalExecutor::run`]).
    pub async fn run(
        &self,
        lane: usize,
        job: &Command<'_>,
        limits: &Limits,
        stop: tokio::sync::watch::Receiver<Stop>,
    ) -> Outcome {
        match self {
            Executor::Local(local) => local.run(job, limits, stop).await,
            // Boxed: an SSH run's state is large, and a local job's future (moved into every
            // spawned task) should not be as large as it.
            Executor::Ssh(host) => Box::pin(host.run(lane, job, limits, stop)).await,
        }
    }
}
