//! The typed library API: a [`Runner`] built in code, typed [`Job`]s in, typed [`JobResult`]s
//! out, through the same scheduler, executors and result lines as the command line. A blocking
//! [`Runner::run`], or [`Runner::spawn`] on the caller's Tokio runtime with a [`Handle`]: its
//! [`Event`]s, [`Handle::status`], [`Handle::abort`], [`Handle::kill`] and [`Handle::wait`].

use std::collections::BTreeMap;
use std::io::Write;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use futures_core::Stream;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::halt::HaltPolicy;
use crate::scheduler::RunEvent;
use crate::signals::AbortHandle;

/// Why a run could not be made or ended in a fatal error, with the exit status the command
/// line gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A setting is wrong (a bad host entry, a bad `--halt` policy...): nothing ran.
    #[error("{0}")]
    Usage(String),
    /// The run could not start or could not go on (a file could not be written...).
    #[error("{0}")]
    Fatal(String),
}

impl Error {
    /// The command line's exit status for this error: 255.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        255
    }
}

/// One job, as SPEC §3 has it: the known keys, and every other key carried through to its
/// result unchanged. `Deserialize` reads a job object (`{"cmd": ..., "cd": ..., "env": {...},
/// "timeout": 2.5, ...}`); `Serialize` writes one back.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct Job {
    /// The shell command, run as `/bin/bash -o pipefail -c CMD`.
    pub cmd: String,
    /// The directory to run in (relative to the working directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cd: Option<String>,
    /// A file for stdout (relative to the job's directory); `None`: captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<String>,
    /// A file for stderr, as `out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<String>,
    /// The hosts (names as given to [`Runner::host`]) the job may run on; `None`: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<Vec<String>>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Stop the job when it runs longer (seconds in JSON).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub timeout: Option<Duration>,
    /// How many more times the job runs when it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Every other key, carried through to the result line (a `result` key is dropped).
    #[serde(flatten)]
    pub carried: Map<String, Value>,
}

impl Job {
    /// A job that runs `cmd`.
    pub fn new(cmd: impl Into<String>) -> Job {
        Job {
            cmd: cmd.into(),
            ..Job::default()
        }
    }

    /// The job object, as a result line carries it.
    fn to_object(&self) -> Map<String, Value> {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut object)) => {
                object.remove("result");
                object
            }
            _ => Map::new(),
        }
    }

    fn from_object(object: &Map<String, Value>) -> Job {
        if let Ok(job) = Job::try_from(object.clone()) {
            return job;
        }
        let fallback = |object: &Map<String, Value>| Job {
            cmd: object
                .get("cmd")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            carried: object.clone(),
            ..Job::default()
        };
        fallback(object)
    }
}

/// Reads the known keys (SPEC §3) of a job object; the others are carried. (By hand rather
/// than with `#[serde(flatten)]`, which cannot read numbers with `serde_json`'s
/// `arbitrary_precision`.)
impl TryFrom<Map<String, Value>> for Job {
    type Error = String;

    fn try_from(mut object: Map<String, Value>) -> Result<Job, String> {
        fn take<T: serde::de::DeserializeOwned>(
            object: &mut Map<String, Value>,
            key: &str,
        ) -> Result<Option<T>, String> {
            match object.remove(key) {
                None | Some(Value::Null) => Ok(None),
                Some(value) => serde_json::from_value(value)
                    .map(Some)
                    .map_err(|e| format!("`{key}`: {e}")),
            }
        }
        let cmd = take(&mut object, "cmd")?.ok_or("the job has no `cmd`")?;
        let host = match object.remove("host") {
            None | Some(Value::Null) => None,
            Some(Value::String(one)) => Some(vec![one]),
            Some(many) => Some(serde_json::from_value(many).map_err(|e| format!("`host`: {e}"))?),
        };
        let timeout = match take::<f64>(&mut object, "timeout")? {
            Some(secs) => {
                Some(Duration::try_from_secs_f64(secs).map_err(|e| format!("`timeout`: {e}"))?)
            }
            None => None,
        };
        Ok(Job {
            cmd,
            cd: take(&mut object, "cd")?,
            out: take(&mut object, "out")?,
            err: take(&mut object, "err")?,
            host,
            env: take(&mut object, "env")?.unwrap_or_default(),
            timeout,
            retries: take(&mut object, "retries")?,
            carried: object,
        })
    }
}

/// How a job ended (SPEC §3 `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The command ran and exited (any exit code).
    Ok,
    /// It could not run, timed out, or its host was lost for good.
    Error,
    /// Stopped by an abort or `halt` before it ended.
    Aborted,
}

/// A job's result: the `"result"` object of its line (SPEC §3), typed. `Serialize` writes the
/// result object, `Deserialize` reads it back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    /// How it ended.
    pub status: Status,
    /// Its exit code, where there is one.
    pub code: Option<i32>,
    /// The signal that killed it (`"SIGKILL"`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<String>,
    /// Why, when the status is not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its position in the input, from 1.
    pub seq: u64,
    /// The host it ran on.
    pub host: Option<String>,
    /// The global slot index it ran in.
    pub engine_id: Option<usize>,
    /// How many times it was started.
    pub attempts: u32,
    /// When the run got it.
    #[serde(with = "ts")]
    pub submitted: DateTime<FixedOffset>,
    /// When it started (last start).
    #[serde(with = "opt_ts")]
    pub started: Option<DateTime<FixedOffset>>,
    /// When it ended.
    #[serde(with = "opt_ts")]
    pub completed: Option<DateTime<FixedOffset>>,
    /// When its result was made.
    #[serde(with = "ts")]
    pub received: DateTime<FixedOffset>,
    /// Completed minus started (seconds in JSON).
    #[serde(default, with = "opt_secs")]
    pub elapsed: Option<Duration>,
    /// A unique id of this job run.
    pub msg_id: String,
    /// Captured stdout (UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    /// Captured stdout that is not UTF-8, in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_base64: Option<String>,
    /// Stdout was cut at the capture limit.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stdout_truncated: bool,
    /// Captured stderr (UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
    /// Captured stderr that is not UTF-8, in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_base64: Option<String>,
    /// Stderr was cut at the capture limit.
    #[serde(default, skip_serializing_if = "is_false")]
    pub stderr_truncated: bool,
}

impl JobResult {
    /// Whether the job counts as failed: it did not run to exit code 0.
    #[must_use]
    pub fn failed(&self) -> bool {
        self.status != Status::Ok || self.code != Some(0)
    }
}

/// Reads one result line (`{...job keys..., "result": {...}}`) into its job and result.
///
/// # Errors
///
/// When the line is not a JSON object, or its `result` is not a result.
pub fn parse_result_line(line: &str) -> Result<(Job, JobResult), serde_json::Error> {
    let mut object: Map<String, Value> = serde_json::from_str(line)?;
    let result = object.remove("result").unwrap_or(Value::Null);
    let result = serde_json::from_value(result)?;
    Ok((Job::from_object(&object), result))
}

/// What happens in a spawned run, in the order it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A job (by input position, from 1) started on a host.
    Started {
        /// Its position in the input.
        seq: u64,
        /// The host's name.
        host: String,
    },
    /// A job has its result.
    Finished(Box<(Job, JobResult)>),
    /// A host's connection was lost.
    HostDown {
        /// The host's name.
        host: String,
        /// What happened.
        why: String,
    },
    /// A host is back.
    HostUp {
        /// The host's name.
        host: String,
    },
}

/// Where a spawned run stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunStatus {
    /// Jobs with a result.
    pub done: u64,
    /// Of those, the failed ones (see [`JobResult::failed`]).
    pub failed: u64,
    /// Jobs running now, by host name.
    pub running: BTreeMap<String, u64>,
    /// The number of jobs, once the input has ended.
    pub total: Option<u64>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Every job that was read, with its result, in input order.
    pub results: Vec<(Job, JobResult)>,
    /// Jobs with a result.
    pub done: u64,
    /// Of those, the failed ones (a job a `halt` policy stopped does not count).
    pub failed: u64,
    /// An abort or a kill stopped the run.
    pub aborted: bool,
    /// A `halt` policy stopped the run: the exit status it calls for.
    pub halt_status: Option<u8>,
    /// The exit status the command line would give this run (see [`Summary::exit_code`]).
    code: u8,
}

impl Summary {
    /// The command line's exit status for this run: 0 when every job succeeded, the number of
    /// failed jobs up to 101, the halt policy's status when one stopped the run.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        self.code
    }
}

/// A run to be made: how many local slots, which hosts, limits. Build one, then
/// [`Runner::run`] or [`Runner::spawn`] it as often as needed.
#[derive(Debug, Clone, Default)]
pub struct Runner {
    slots: Option<usize>,
    hosts: Vec<String>,
    timeout: Option<Duration>,
    retries: u32,
    capture_limit: Option<usize>,
    halt: Option<String>,
    keep_order: bool,
    log_to_stderr: bool,
    launcher: Option<String>,
    host_loss_limit: Option<u32>,
}

impl Runner {
    /// A run on this machine, one slot per CPU.
    #[must_use]
    pub fn new() -> Runner {
        Runner::default()
    }

    /// Jobs running at once on this machine (`-j`).
    #[must_use]
    pub fn slots(mut self, slots: usize) -> Runner {
        self.slots = Some(slots.max(1));
        self
    }

    /// A host entry, as `-S` takes it (`4/user@host`, `:` for this machine).
    #[must_use]
    pub fn host(mut self, entry: impl Into<String>) -> Runner {
        self.hosts.push(entry.into());
        self
    }

    /// The default timeout of a job (`--timeout`).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Runner {
        self.timeout = Some(timeout);
        self
    }

    /// How many more times a failed job runs (`--retries`).
    #[must_use]
    pub fn retries(mut self, retries: u32) -> Runner {
        self.retries = retries;
        self
    }

    /// Bytes of stdout and of stderr kept in each result (`--capture-limit`).
    #[must_use]
    pub fn capture_limit(mut self, bytes: usize) -> Runner {
        self.capture_limit = Some(bytes);
        self
    }

    /// A `--halt` policy (`now,fail=1`, `soon,success=50%`...).
    #[must_use]
    pub fn halt(mut self, policy: impl Into<String>) -> Runner {
        self.halt = Some(policy.into());
        self
    }

    /// Results (and [`Event::Finished`]) in input order (`-k`).
    #[must_use]
    pub fn keep_order(mut self, keep: bool) -> Runner {
        self.keep_order = keep;
        self
    }

    /// Log lines (and the progress display on a terminal) on stderr, as the command line
    /// writes them; off by default.
    #[must_use]
    pub fn log_to_stderr(mut self, on: bool) -> Runner {
        self.log_to_stderr = on;
        self
    }

    /// Start the remote hosts' agents with this command instead of SSH (`--launcher`): a
    /// template where `<host>` is the host's name, e.g. `docker exec -i <host>`.
    #[must_use]
    pub fn launcher(mut self, template: impl Into<String>) -> Runner {
        self.launcher = Some(template.into());
        self
    }

    /// Fail a job once its host was lost under it this many times (`--host-loss-limit`,
    /// default 5; at least 1).
    #[must_use]
    pub fn host_loss_limit(mut self, limit: u32) -> Runner {
        self.host_loss_limit = Some(limit);
        self
    }

    fn config(&self) -> Result<Config, Error> {
        let mut config = Config::local().map_err(|e| Error::Usage(e.to_string()))?;
        for entry in &self.hosts {
            let list = crate::hosts::parse_sshlogin_list(entry)
                .map_err(|e| Error::Usage(format!("host {entry:?}: {e}")))?;
            config.hosts.extend(list);
        }
        crate::hosts::check_unique(&config.hosts).map_err(|e| Error::Usage(e.to_string()))?;
        if let Some(launcher) = &self.launcher {
            if launcher.trim().is_empty() {
                return Err(Error::Usage("launcher: the command is empty".into()));
            }
            config.ssh.launcher = Some(launcher.clone());
        }
        if let Some(limit) = self.host_loss_limit {
            if limit == 0 {
                return Err(Error::Usage("host_loss_limit: give at least 1".into()));
            }
            config.settings.host_loss_limit = limit;
        }
        if let Some(slots) = self.slots {
            config.jobs = slots;
        }
        config.keep_order = self.keep_order;
        config.settings.timeout = self.timeout;
        config.settings.retries = self.retries;
        if let Some(limit) = self.capture_limit {
            config.settings.capture_limit = limit;
        }
        if let Some(policy) = &self.halt {
            config.halt = HaltPolicy::parse(policy).map_err(Error::Usage)?;
        }
        config.verbosity = if self.log_to_stderr {
            crate::progress::Verbosity::Normal
        } else {
            crate::progress::Verbosity::Quiet
        };
        Ok(config)
    }

    /// Runs `jobs` to their end and returns each with its result, in input order. Blocks the
    /// calling thread (the run has a runtime of its own, on a thread of its own, so this works
    /// inside a Tokio runtime too).
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when a setting is wrong (a host entry, a halt policy), [`Error::Fatal`]
    /// when the run cannot start or ends in a fatal error (a runtime that cannot start).
    pub fn run(&self, jobs: impl IntoIterator<Item = Job>) -> Result<Vec<(Job, JobResult)>, Error> {
        let jobs: Vec<Job> = jobs.into_iter().collect();
        let runner = self.clone();
        std::thread::scope(|scope| {
            let thread = scope.spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .on_thread_start(crate::signals::keep_off_this_thread)
                    .build()
                    .map_err(|e| Error::Fatal(format!("cannot start a runtime: {e}")))?;
                runtime.block_on(async move { runner.spawn(iter(jobs))?.wait().await })
            });
            thread
                .join()
                .unwrap_or_else(|_| Err(Error::Fatal("internal error: the run failed".into())))
                .map(|summary| summary.results)
        })
    }

    /// Starts a run of the jobs `jobs` yields on the current Tokio runtime (its IO and time
    /// drivers enabled) and returns its handle. Must be called from within that runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when a setting is wrong (a host entry, a halt policy).
    pub fn spawn(&self, jobs: impl Stream<Item = Job> + Send + 'static) -> Result<Handle, Error> {
        let config = self.config()?;
        let (abort, abort_rx) = AbortHandle::new();
        let (job_tx, job_rx) = mpsc::channel(256);
        let (run_tx, run_rx) = mpsc::unbounded_channel();
        let (line_tx, line_rx) = mpsc::unbounded_channel();
        let (event_tx, event_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let plumbing = crate::run::Plumbing {
            handle_signals: false,
            abort: Some(abort_rx),
            jobs: Some(job_rx),
            silent: !self.log_to_stderr,
            events: Some(run_tx),
        };
        tokio::spawn(feed(jobs, job_tx, Arc::clone(&shared)));
        tokio::spawn(pump(run_rx, line_rx, event_tx, Arc::clone(&shared)));
        let run = tokio::spawn(crate::run::run_spawned(
            config,
            Lines::new(line_tx),
            // An unbounded channel: a line never waits for the reader.
            crate::output::Reach::Never,
            plumbing,
        ));
        Ok(Handle {
            events: event_rx,
            shared,
            abort,
            run,
        })
    }
}

/// A spawned run.
#[derive(Debug)]
pub struct Handle {
    events: mpsc::UnboundedReceiver<Event>,
    shared: Arc<Mutex<Shared>>,
    abort: AbortHandle,
    run: tokio::task::JoinHandle<anyhow::Result<crate::scheduler::Summary>>,
}

impl Handle {
    /// The next event, or `None` once the run is over and every event was taken. Events wait
    /// here until taken (none is lost by taking them late).
    pub async fn next_event(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Where the run stands now.
    #[must_use]
    pub fn status(&self) -> RunStatus {
        self.shared
            .lock()
            .map(|s| s.status.clone())
            .unwrap_or_default()
    }

    /// Stops the run as Ctrl-C does: no job starts any more, running jobs get TERM (KILL after
    /// the grace period), every job read gets its result (`aborted`).
    pub fn abort(&self) {
        self.abort.abort();
    }

    /// Stops the run at once: running jobs get KILL.
    pub fn kill(&self) {
        self.abort.kill();
    }

    /// Waits for the end of the run.
    ///
    /// # Errors
    ///
    /// [`Error::Fatal`] when the run ended in a fatal error.
    pub async fn wait(self) -> Result<Summary, Error> {
        let Handle {
            mut events,
            shared,
            run,
            ..
        } = self;
        let summary = match run.await {
            Ok(Ok(summary)) => summary,
            Ok(Err(e)) => return Err(Error::Fatal(format!("{e:#}"))),
            Err(e) => return Err(Error::Fatal(format!("internal error: {e}"))),
        };
        // Every event is in once the channel closes: the results too.
        while events.recv().await.is_some() {}
        if let Some(fatal) = summary.fatal.clone() {
            return Err(Error::Fatal(fatal));
        }
        let mut results = shared
            .lock()
            .map(|mut s| std::mem::take(&mut s.results))
            .unwrap_or_default();
        results.sort_by_key(|(_, r)| r.seq);
        Ok(Summary {
            done: summary.done,
            failed: summary.failed,
            results,
            aborted: summary.interrupted_by.is_some(),
            halt_status: summary.halt_status,
            code: summary.exit_code(),
        })
    }
}

/// What the handle's side knows of the run.
#[derive(Debug, Default)]
struct Shared {
    status: RunStatus,
    results: Vec<(Job, JobResult)>,
}

/// A stream of the jobs of a list.
fn iter(jobs: Vec<Job>) -> impl Stream<Item = Job> + Send + 'static {
    struct Iter(std::vec::IntoIter<Job>);
    impl Stream for Iter {
        type Item = Job;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Job>> {
            Poll::Ready(self.0.next())
        }
    }
    Iter(jobs.into_iter())
}

/// Hands the caller's jobs to the run, numbered from 1, checked as a job line is.
async fn feed(
    jobs: impl Stream<Item = Job> + Send + 'static,
    tx: mpsc::Sender<crate::job::Job>,
    shared: Arc<Mutex<Shared>>,
) {
    let mut jobs = std::pin::pin!(jobs);
    let mut seq = 0;
    while let Some(job) = std::future::poll_fn(|cx| jobs.as_mut().poll_next(cx)).await {
        seq += 1;
        let object = job.to_object();
        let body = match crate::job::Spec::from_object(&object) {
            Ok(spec) => crate::job::Body::Ready(spec),
            Err(why) => crate::job::Body::Invalid(why),
        };
        let job = crate::job::Job {
            seq,
            object,
            body,
            submitted: chrono::Local::now(),
            attempts: 0,
            host_losses: 0,
            last_host: None,
            stdin: None,
        };
        if tx.send(job).await.is_err() {
            return; // The run stopped reading.
        }
    }
    if let Ok(mut shared) = shared.lock() {
        shared.status.total = Some(seq);
    }
}

/// Turns the scheduler's events and the result lines into [`Event`]s, keeping the status.
// TEMP(i8): pedantic fixes after the agent merge (the executor/event plumbing is being rewritten)
#[allow(clippy::single_match_else)]
async fn pump(
    mut run: mpsc::UnboundedReceiver<RunEvent>,
    mut lines: mpsc::UnboundedReceiver<(Job, JobResult)>,
    events: mpsc::UnboundedSender<Event>,
    shared: Arc<Mutex<Shared>>,
) {
    let (mut run_open, mut lines_open) = (true, true);
    while run_open || lines_open {
        let event = tokio::select! {
            biased;
            event = run.recv(), if run_open => match event {
                Some(RunEvent::Started { seq, host }) => {
                    if let Ok(mut shared) = shared.lock() {
                        *shared.status.running.entry(host.clone()).or_default() += 1;
                    }
                    Event::Started { seq, host }
                }
                Some(RunEvent::HostDown { host, why }) => Event::HostDown { host, why },
                Some(RunEvent::HostUp { host }) => Event::HostUp { host },
                None => {
                    run_open = false;
                    continue;
                }
            },
            line = lines.recv(), if lines_open => match line {
                Some((job, result)) => {
                    if let Ok(mut shared) = shared.lock() {
                        let status = &mut shared.status;
                        status.done += 1;
                        status.failed += u64::from(result.failed());
                        if let (Some(host), Some(_)) = (&result.host, &result.started) {
                            if let Some(n) = status.running.get_mut(host) {
                                *n = n.saturating_sub(1);
                            }
                        }
                        shared.results.push((job.clone(), result.clone()));
                    }
                    Event::Finished(Box::new((job, result)))
                }
                None => {
                    lines_open = false;
                    continue;
                }
            },
        };
        let _ = events.send(event);
    }
}

/// The run's stdout, as the library sees it: each result line read back into its typed job
/// and result.
struct Lines {
    buf: Vec<u8>,
    tx: mpsc::UnboundedSender<(Job, JobResult)>,
}

impl Lines {
    fn new(tx: mpsc::UnboundedSender<(Job, JobResult)>) -> Lines {
        Lines {
            buf: Vec::new(),
            tx,
        }
    }
}

impl Write for Lines {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let text = String::from_utf8_lossy(&line);
            match parse_result_line(text.trim_end()) {
                Ok(parsed) => {
                    let _ = self.tx.send(parsed);
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("internal error: a result line does not read back: {e}"),
                    ))
                }
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// serde's `skip_serializing_if` passes a reference.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_false(b: &bool) -> bool {
    !*b
}

/// A timestamp as the result line has it: RFC 3339, microseconds, with offset.
mod ts {
    use super::{DateTime, Deserialize, Deserializer, FixedOffset, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<FixedOffset>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<FixedOffset>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

/// An optional timestamp (null when the job never started), as [`ts`].
mod opt_ts {
    use super::{DateTime, Deserialize, Deserializer, FixedOffset, Serializer};

    // serde's `serialize_with` passes the field by reference.
    #[allow(clippy::ref_option)]
    pub fn serialize<S: Serializer>(
        t: &Option<DateTime<FixedOffset>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::ts::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<FixedOffset>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(text) => DateTime::parse_from_rfc3339(&text)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// An optional duration as seconds (a JSON number).
mod opt_secs {
    use super::{Deserialize, Deserializer, Duration, Serializer};

    // serde's `serialize_with` passes the field by reference.
    #[allow(clippy::ref_option)]
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_f64(d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<f64>::deserialize(d)? {
            None => Ok(None),
            Some(secs) => Duration::try_from_secs_f64(secs)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_reads_the_spec_keys_and_carries_the_rest() {
        let job: Job = serde_json::from_str(
            r#"{"cmd":"make","cd":"src","env":{"A":"1"},"timeout":2.5,"host":"h1","tag":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(job.cd.as_deref(), Some("src"));
        assert_eq!(job.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(job.host, Some(vec!["h1".to_string()]));
        assert_eq!(job.env["A"], "1");
        assert_eq!(job.carried["tag"], serde_json::json!([1, 2]));
        let back: Job = serde_json::from_value(serde_json::to_value(&job).unwrap()).unwrap();
        assert_eq!(back, job);
    }

    #[test]
    fn a_result_line_reads_back_and_writes_the_same_result() {
        let line = r#"{"cmd":"echo hi","k":"v","result":{"status":"ok","code":0,"seq":1,"host":"localhost","engine_id":0,"attempts":1,"submitted":"2026-01-02T03:04:05.000006+01:00","started":"2026-01-02T03:04:05.000100+01:00","completed":"2026-01-02T03:04:05.250100+01:00","received":"2026-01-02T03:04:05.250200+01:00","elapsed":0.25,"msg_id":"x-1-1","stdout":"hi\n","stderr":""}}"#;
        let (job, result) = parse_result_line(line).unwrap();
        assert_eq!(job.carried["k"], "v");
        assert_eq!(result.elapsed, Some(Duration::from_millis(250)));
        assert_eq!(result.stdout.as_deref(), Some("hi\n"));
        assert!(!result.failed());
        let again: JobResult =
            serde_json::from_value(serde_json::to_value(&result).unwrap()).unwrap();
        assert_eq!(again, result);
    }
}
