//! The remote agent: one long-lived bash process per host (`agent.sh`), started over one SSH
//! session or a `--launcher` command, that runs the jobs it is sent. This side frames the
//! messages (one line each, every field a bash `$'...'` word), reads the agent's frames
//! (binary-safe: each result carries the byte counts of the output that follows), heartbeats
//! with it, and notices when it goes silent.
//!
//! Fencing: the agent stops its jobs and exits when it hears nothing for [`FENCE`]; bakapara
//! calls an agent lost when it has heard nothing for [`SILENCE`] (or its transport closed),
//! stops sending to it, and only [`FENCE`] + [`STOP_GRACE`] + 0.5 s after that hands its jobs
//! back for running elsewhere, so no job runs twice at the same time. Ctrl-Z is no silence:
//! bakapara says `P` before it stops (the agent stops its jobs and its fence) and `U` after.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::stopper::{Cause, Order, Stopper};
use super::{Captured, Command, Ending, Limits, Outcome, Stop};

/// The agent's script (see its header for the protocol).
pub const SCRIPT: &str = include_str!("agent.sh");

/// bakapara's heartbeat interval (the agent's is the same).
pub const HEARTBEAT: Duration = Duration::from_millis(500);
/// The agent stops its jobs when it has heard nothing from bakapara this long.
pub const FENCE: Duration = Duration::from_secs(3);
/// bakapara calls an agent lost when it has heard nothing from it this long.
pub const SILENCE: Duration = Duration::from_secs(3);
/// TERM to KILL when the agent stops its jobs on its own (fence, EOF, quit).
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// The longest frame line bakapara accepts from an agent.
const MAX_LINE: usize = 64 * 1024;

/// What an agent does with the jobs' working directory (their `BASE`), beyond going there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workdir {
    /// It creates the directory where it is missing (`--workdir`).
    pub make: bool,
    /// This directory (relative to the login directory, or absolute) goes when bakapara ends
    /// the run (`Q`): a `--workdir ...` directory with `--cleanup` on a host that has no
    /// master connection to remove it over (a launcher's).
    pub remove: Option<String>,
}

/// The script a host's bash reads first, with the fence and working-directory settings
/// before it, and the host's slot count where the host list gave one (`None`: its CPU count,
/// known once the agent said it), so that the agent makes every slot's FIFO with one command.
pub fn script(workdir: &Workdir, slots: Option<usize>) -> String {
    // (A path holds no NUL byte: it came from a command line.)
    let remove = workdir
        .remove
        .as_deref()
        .and_then(|dir| word(dir.as_bytes()).ok())
        .unwrap_or_else(|| "''".into());
    format!(
        "F={} D={} M={} R={remove} S={}\n{SCRIPT}",
        FENCE.as_secs(),
        STOP_GRACE.as_secs().max(1),
        u8::from(workdir.make),
        slots.unwrap_or(0),
    )
}

/// What a login shell (or a launcher) runs to start the agent: a bash that reads the script
/// (`len` bytes) from its stdin and runs it, the rest of stdin being the protocol.
pub fn boot_command(len: usize) -> String {
    format!("bash --norc --noprofile -c '{}'", read_script(len))
}

/// The bash line that reads the next `len` bytes of stdin in one go (`head -c`: bash itself
/// reads a pipe a byte per system call) and runs them.
fn read_script(len: usize) -> String {
    format!("eval \"$(head -c {len})\"")
}

/// What a launcher runs to start the agent: a bash that runs the script it reads on its stdin
/// (bash reads a pipe byte by byte, so the protocol after the script stays on stdin). It has no
/// quotes and no word that a shell would change, so it is the same whether the launcher passes
/// its arguments on as they are (`docker exec -i`, `srun`, `env`) or joins them for a shell on
/// the other side, as `ssh HOST` does. What it reads first is [`launched_script`].
pub const LAUNCHED_BOOT: &str = "bash --norc --noprofile -s";

/// The text a [`LAUNCHED_BOOT`] bash reads: one short line that has `head` read the script
/// `text` whole and evaluates it, then the script. Read by bash itself, the script would cost
/// a system call per byte (23,000 of them, 10 ms and more of a host's start); the line, read
/// that way, costs 30.
pub fn launched_script(text: &str) -> String {
    format!("{}\n{text}", read_script(text.len()))
}

/// One word of a message: bash ANSI-C quoting, every byte outside printable ASCII as `\xHH`, so
/// a message is always one line. Fails on NUL, which no bash string can hold.
pub fn word(value: &[u8]) -> Result<String, ()> {
    let mut s = String::with_capacity(value.len() + 3);
    s.push_str("$'");
    for &b in value {
        match b {
            0 => return Err(()),
            b'\'' => s.push_str("\\'"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s.push('\'');
    Ok(s)
}

/// A byte pipe to an agent: its stdin, its stdout, and what ends with it.
pub struct Transport {
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    /// The agent's stderr, read and dropped (kept short for an error message).
    pub stderr: Option<Box<dyn AsyncRead + Send + Unpin>>,
    /// Ends when the process carrying the pipe (ssh, the launcher) has ended.
    pub ended: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Ends that process now (an agent that went silent).
    pub kill: Box<dyn FnOnce() + Send>,
}

impl Transport {
    /// A transport over a process's pipes. `ended(kill)` is the future that ends with the
    /// process: it must end the process once `kill` fires (an agent gone silent).
    pub fn new<F>(
        stdin: impl AsyncWrite + Send + Unpin + 'static,
        stdout: impl AsyncRead + Send + Unpin + 'static,
        stderr: Option<impl AsyncRead + Send + Unpin + 'static>,
        ended: impl FnOnce(oneshot::Receiver<()>) -> F,
    ) -> Transport
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (kill_tx, kill_rx) = oneshot::channel::<()>();
        Transport {
            stdin: Box::new(stdin),
            stdout: Box::new(stdout),
            stderr: stderr.map(|s| Box::new(s) as Box<dyn AsyncRead + Send + Unpin>),
            ended: Box::pin(ended(kill_rx)),
            kill: Box::new(move || {
                let _ = kill_tx.send(());
            }),
        }
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Transport")
    }
}

/// Why an agent was lost, and when its jobs may run elsewhere.
#[derive(Debug, Clone)]
pub struct Lost {
    pub why: String,
    /// The agent has stopped its jobs by then (it fenced), unless it still hears us.
    pub fenced_at: Instant,
    /// Its jobs may run again elsewhere from then on.
    pub safe_at: Instant,
    /// The agent said it stopped (`X`), so a job it had not reported started never ran there.
    pub said_stop: bool,
}

/// A message to the agent.
enum ToAgent {
    Line(Vec<u8>),
    /// A job line followed by its stdin block.
    Job(Vec<u8>, crate::pipe::Block),
    /// Said once every message before it was written.
    Flushed(oneshot::Sender<()>),
}

/// A job's news from the reader.
enum News {
    Started(DateTime<Local>),
    Ended(Box<Ended>),
}

struct Ended {
    at: DateTime<Local>,
    kind: String,
    rest: String,
    out: Captured,
    err: Captured,
}

/// Where the reader puts one job's output.
struct Waiting {
    news: mpsc::UnboundedSender<News>,
    /// `--text`: the streams go to these files whole.
    spool: (Option<std::fs::File>, Option<std::fs::File>),
}

#[derive(Default)]
struct Shared {
    jobs: HashMap<u64, Waiting>,
    lost: Option<Lost>,
    closing: bool,
    /// The agent said it stopped (an `X` frame): what it had not reported started never ran.
    said_stop: bool,
}

/// A running agent.
pub struct Agent {
    host: String,
    outbox: Mutex<Option<mpsc::UnboundedSender<ToAgent>>>,
    shared: Arc<Mutex<Shared>>,
    lost: watch::Receiver<Option<Lost>>,
    next_id: AtomicU64,
    /// The run is stopping and the agent was told (`A`): it starts nothing more.
    halted: AtomicBool,
    cpus: usize,
    /// Ends when the agent's transport is closed.
    gone: Mutex<Option<oneshot::Receiver<()>>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Agent {
    /// Starts the agent on a transport whose other end runs [`boot_command`]: sends the script
    /// `text` (see [`script`]), waits for its CPU count (at most `within`). `on_lost` hears
    /// once when it is lost.
    pub async fn start(
        host: &str,
        mut transport: Transport,
        within: Duration,
        on_lost: Box<dyn FnOnce(String) + Send>,
        text: &str,
    ) -> Result<Agent, String> {
        let mut first = Vec::with_capacity(text.len());
        first.extend_from_slice(text.as_bytes());
        let stderr_tail = Arc::new(Mutex::new(Vec::<u8>::new()));
        if let Some(mut stderr) = transport.stderr.take() {
            let tail = Arc::clone(&stderr_tail);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut t) = tail.lock() {
                        t.extend_from_slice(&buf[..n]);
                        let len = t.len();
                        if len > 2048 {
                            t.drain(..len - 2048);
                        }
                    }
                }
            });
        }
        let said = |tail: &Arc<Mutex<Vec<u8>>>| {
            tail.lock()
                .map(|t| String::from_utf8_lossy(&t).trim().to_string())
                .unwrap_or_default()
        };
        let mut stdin = transport.stdin;
        let mut frames = FrameReader::new(transport.stdout);
        let hello = async {
            stdin.write_all(&first).await.map_err(|e| e.to_string())?;
            stdin.flush().await.map_err(|e| e.to_string())?;
            // What the login shell's start-up files print before the agent runs is passed over.
            let mut said = Vec::new();
            loop {
                let line = frames.line().await.map_err(|e| {
                    let before: Vec<u8> = said.join(&b"\n"[..]);
                    let before = String::from_utf8_lossy(&before).trim().to_string();
                    if before.is_empty() {
                        e.to_string()
                    } else {
                        format!("{e}; it printed {before:?}")
                    }
                })?;
                let text = String::from_utf8_lossy(&line).to_string();
                match text.split_once(' ') {
                    Some(("C", n)) => {
                        break n
                            .trim()
                            .parse::<usize>()
                            .ok()
                            .filter(|&n| n > 0)
                            .ok_or_else(|| format!("it answered {text:?} for its CPU count"))
                    }
                    Some(("X", why)) => break Err(why.to_string()),
                    _ if said.len() < 100 => said.push(line),
                    _ => break Err(format!("it answered {text:?}")),
                }
            }
        };
        let cpus = match tokio::time::timeout(within, hello).await {
            Ok(Ok(n)) => n,
            Ok(Err(why)) => {
                (transport.kill)();
                tokio::time::sleep(Duration::from_millis(50)).await;
                let more = said(&stderr_tail);
                let more = if more.is_empty() {
                    String::new()
                } else {
                    format!(": {more}")
                };
                return Err(format!(
                    "cannot start bakapara's agent on {host} ({why}){more}"
                ));
            }
            Err(_) => {
                (transport.kill)();
                return Err(format!(
                    "cannot start bakapara's agent on {host}: no answer within {} s",
                    within.as_secs()
                ));
            }
        };
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (lost_tx, lost_rx) = watch::channel(None);
        let (outbox, from_us) = mpsc::unbounded_channel();
        let (gone_tx, gone_rx) = oneshot::channel();
        let supervise = supervise(
            host.to_string(),
            Arc::clone(&shared),
            frames,
            stdin,
            from_us,
            transport.ended,
            transport.kill,
        );
        let shared2 = Arc::clone(&shared);
        tokio::spawn(async move {
            let why = supervise.await;
            let now = Instant::now();
            let said_stop = shared2.lock().is_ok_and(|s| s.said_stop);
            let lost = Lost {
                why: why.clone(),
                fenced_at: now + STOP_GRACE,
                safe_at: now + FENCE + STOP_GRACE + Duration::from_millis(500),
                said_stop,
            };
            let closing = match shared2.lock() {
                Ok(mut s) => {
                    s.lost = Some(lost.clone());
                    s.jobs.clear();
                    s.closing
                }
                Err(_) => false,
            };
            lost_tx.send_replace(Some(lost));
            let _ = gone_tx.send(());
            if !closing {
                on_lost(why);
            }
        });
        Ok(Agent {
            host: host.to_string(),
            outbox: Mutex::new(Some(outbox)),
            shared,
            lost: lost_rx,
            next_id: AtomicU64::new(1),
            halted: AtomicBool::new(false),
            cpus,
            gone: Mutex::new(Some(gone_rx)),
        })
    }

    /// The host's CPU count, as the agent reported it.
    pub fn cpus(&self) -> usize {
        self.cpus
    }

    /// Whether the agent is still there.
    pub fn is_up(&self) -> bool {
        self.lost.borrow().is_none()
    }

    fn send(&self, message: ToAgent) -> bool {
        self.outbox
            .lock()
            .ok()
            .and_then(|s| s.as_ref().map(|s| s.send(message).is_ok()))
            .unwrap_or(false)
    }

    /// The run is stopping: the agent starts no job it holds, before any running job gets its
    /// TERM (whose end would free a slot for a queued job whose own T has not come yet). Once.
    fn halt_starts(&self) {
        if !self.halted.swap(true, Ordering::SeqCst) {
            self.send(ToAgent::Line(b"A\n".to_vec()));
        }
    }

    /// bakapara is about to stop (Ctrl-Z): the agent stops its jobs and keeps them through the
    /// silence (`P`). Returns once that was written, or after a second at most (a host whose
    /// link is stuck must not keep bakapara from stopping).
    pub async fn pause(&self) {
        let (said, written) = oneshot::channel();
        if self.send(ToAgent::Line(b"P\n".to_vec())) && self.send(ToAgent::Flushed(said)) {
            let _ = tokio::time::timeout(Duration::from_secs(1), written).await;
        }
    }

    /// bakapara goes on after a [`Agent::pause`]: the agent continues its jobs (`U`).
    pub fn resume(&self) {
        self.send(ToAgent::Line(b"U\n".to_vec()));
    }

    /// Ends the agent at the end of the run: `Q`, then its stdin closes.
    pub async fn close(&self) {
        if let Ok(mut s) = self.shared.lock() {
            s.closing = true;
        }
        self.send(ToAgent::Line(b"Q\n".to_vec()));
        let sender = self.outbox.lock().ok().and_then(|mut s| s.take());
        drop(sender);
        let gone = self.gone.lock().ok().and_then(|mut g| g.take());
        if let Some(gone) = gone {
            let _ = tokio::time::timeout(Duration::from_secs(3), gone).await;
        }
    }

    /// Runs one job on agent slot `slot`. `spool`: the streams go whole to temp files
    /// (`--text`); `base`, `memfree`, `load` and `env` are the host's run-wide settings;
    /// `paused` says how long bakapara has spent stopped (Ctrl-Z) so far, which its timeout
    /// does not count.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        slot: usize,
        job: &Command<'_>,
        limits: &Limits,
        stop: watch::Receiver<Stop>,
        spool: bool,
        base: &str,
        memfree: &str,
        load: &str,
        env: &[(String, String)],
        paused: &(dyn Fn() -> Duration + Sync),
    ) -> Outcome {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = match job_line(id, slot, job, limits, spool, base, memfree, load, env) {
            Ok(line) => line,
            Err(why) => return Outcome::not_run(Ending::CouldNotRun(why)),
        };
        let spool_file = |wanted: bool| -> Result<Option<std::fs::File>, Ending> {
            if !(wanted && spool) {
                return Ok(None);
            }
            tempfile::tempfile().map(Some).map_err(|e| {
                Ending::CouldNotRun(format!(
                    "cannot create a temp file for the job's output: {e}"
                ))
            })
        };
        let spools = match (spool_file(job.out.is_none()), spool_file(job.err.is_none())) {
            (Ok(out), Ok(err)) => (out, err),
            (Err(e), _) | (_, Err(e)) => return Outcome::not_run(e),
        };
        let (news_tx, mut news) = mpsc::unbounded_channel();
        let kept = (
            spools.0.as_ref().and_then(|f| f.try_clone().ok()),
            spools.1.as_ref().and_then(|f| f.try_clone().ok()),
        );
        {
            let Ok(mut shared) = self.shared.lock() else {
                return Outcome::not_run(Ending::HostLost("internal error".into()));
            };
            if let Some(lost) = &shared.lost {
                return Outcome::not_run(Ending::HostLost(format!(
                    "{} is down ({})",
                    self.host, lost.why
                )));
            }
            shared.jobs.insert(
                id,
                Waiting {
                    news: news_tx,
                    spool: spools,
                },
            );
        }
        let message = match job.stdin.filter(|b| !b.is_empty()) {
            Some(block) => ToAgent::Job(line, block.clone()),
            None => ToAgent::Line(line),
        };
        if !self.send(message) {
            if let Ok(mut shared) = self.shared.lock() {
                shared.jobs.remove(&id);
            }
            return Outcome::not_run(Ending::HostLost(format!("{} is down", self.host)));
        }
        // A stop of the run's (not this job's timeout) first tells the agent to start nothing
        // more.
        let send_order = |order: Order| {
            if *stop.borrow() != Stop::Run {
                self.halt_starts();
            }
            self.send(ToAgent::Line(
                match order {
                    Order::Term => format!("T {id} {slot}\n"),
                    Order::Kill => format!("K {id} {slot}\n"),
                }
                .into_bytes(),
            ));
        };
        let mut stop_open = true;
        // Before `S`: the run's stop alone (the timeout counts from the start).
        let mut waiting = stop.clone();
        let mut sent_before = Stop::Run;
        let mut started: Option<DateTime<Local>> = None;
        let mut stopper: Option<Stopper> = None;
        let ended = loop {
            if stopper.is_none() {
                let wanted = *waiting.borrow_and_update();
                if wanted > sent_before {
                    sent_before = wanted;
                    let order = if wanted == Stop::Kill {
                        Order::Kill
                    } else {
                        Order::Term
                    };
                    send_order(order);
                }
            }
            if let Some(s) = stopper.as_mut() {
                if let Some(order) = s.ordered() {
                    send_order(order);
                }
            }
            tokio::select! {
                item = news.recv() => match item {
                    Some(News::Started(at)) => {
                        started = Some(at);
                        let no_grace = Limits { grace: Duration::ZERO, ..*limits };
                        // The agent sends KILL after the grace period itself.
                        let mut s = Stopper::new(stop.clone(), &no_grace, false, paused());
                        if sent_before != Stop::Run {
                            // Already asked: no second order for the same stop.
                            let _ = s.ordered();
                        }
                        stopper = Some(s);
                    }
                    Some(News::Ended(ended)) => break Some(ended),
                    None => break None,
                },
                changed = waiting.changed(), if stopper.is_none() && stop_open => {
                    // A closed channel: the run's stop has nothing more to say.
                    stop_open = changed.is_ok();
                }
                order = async {
                    match stopper.as_mut() {
                        Some(s) => s.next(paused).await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Some(order) = order {
                        send_order(order);
                    }
                }
            }
        };
        let cause = stopper.as_ref().and_then(Stopper::cause).or(
            // Stopped before it started.
            (sent_before != Stop::Run).then_some(Cause::Abort),
        );
        let Some(ended) = ended else {
            return self.lost_under(stop, started).await;
        };
        let status = ended.rest.trim().parse::<i32>().ok();
        let split = |status: i32| {
            if status > 128 {
                (None, Some(status - 128))
            } else {
                (Some(status), None)
            }
        };
        let ending = match (ended.kind.as_str(), status, cause) {
            ("done", Some(code), _) => Ending::Exited(code),
            ("signaled", Some(signal), _) => Ending::Signaled(signal),
            ("stopped", Some(s), Some(Cause::Timeout)) => {
                let (code, signal) = split(s);
                Ending::TimedOut { code, signal }
            }
            // Stopped while it waited in its slot's queue there: it never ran.
            ("stopped", Some(_), _) if started.is_none() => Ending::Aborted {
                code: None,
                signal: None,
            },
            ("stopped", Some(s), _) => {
                let (code, signal) = split(s);
                Ending::Aborted { code, signal }
            }
            ("error", _, _) => Ending::CouldNotRun(ended.rest.clone()),
            (kind, _, _) => Ending::CouldNotRun(format!(
                "bakapara's agent on {} sent a report it should not: {kind} {}",
                self.host, ended.rest
            )),
        };
        let ran = match (&ending, started) {
            (Ending::CouldNotRun(_), _) | (_, None) => None,
            (_, Some(s)) => Some((s, ended.at)),
        };
        let Ended { out, err, .. } = *ended;
        let with_spool = |captured: Captured, file: Option<std::fs::File>| match file {
            Some(file) => Captured::spooled(file),
            None => captured,
        };
        let (stdout, stderr) = (
            job.out.is_none().then(|| with_spool(out, kept.0)),
            job.err.is_none().then(|| with_spool(err, kept.1)),
        );
        Outcome {
            ran,
            ending,
            stdout,
            stderr,
            note: None,
            transfer: None,
        }
    }

    /// A job whose agent was lost under it: given back to the scheduler once the agent has
    /// surely stopped it, or, when the run is stopping anyway, aborted once the fence is past.
    async fn lost_under(
        &self,
        mut stop: watch::Receiver<Stop>,
        started: Option<DateTime<Local>>,
    ) -> Outcome {
        let lost = self.lost.borrow().clone();
        let Some(lost) = lost else {
            return Outcome::not_run(Ending::HostLost(format!("{} is down", self.host)));
        };
        let aborted = || Outcome {
            ran: started.map(|s| (s, Local::now())),
            ending: Ending::Aborted {
                code: None,
                signal: None,
            },
            stdout: None,
            stderr: None,
            note: Some(format!(
                "{} was lost ({}): its agent stops the job there",
                self.host, lost.why
            )),
            transfer: None,
        };
        let stopping = *stop.borrow() != Stop::Run;
        if stopping {
            tokio::time::sleep_until(lost.fenced_at).await;
            return aborted();
        }
        let stopped = async { stop.wait_for(|s| *s != Stop::Run).await.is_ok() };
        let stopped = tokio::select! {
            () = tokio::time::sleep_until(lost.safe_at) => false,
            true = stopped => true,
        };
        if stopped {
            tokio::time::sleep_until(lost.fenced_at).await;
            return aborted();
        }
        let why = format!("lost {} ({})", self.host, lost.why);
        let mut outcome = Outcome::not_run(if started.is_none() && lost.said_stop {
            Ending::GivenBack(why)
        } else {
            Ending::HostLost(why)
        });
        outcome.ran = started.map(|s| (s, Local::now()));
        outcome
    }
}

/// The longest job message: its length goes in 8 digits.
const MAX_JOB_MESSAGE: usize = 99_999_999;

/// The `J` message of a job: `J`, the length of the rest in 8 digits, the rest (a line). Fails
/// with a sentence on a NUL byte (naming the field) or a message too long.
#[allow(clippy::too_many_arguments)]
fn job_line(
    id: u64,
    slot: usize,
    job: &Command<'_>,
    limits: &Limits,
    spool: bool,
    base: &str,
    memfree: &str,
    load: &str,
    env: &[(String, String)],
) -> Result<Vec<u8>, String> {
    let nul = |what: &str| {
        format!("the job's {what} holds a NUL byte, which a command line cannot carry")
    };
    let grace_ms = limits.grace.as_millis().min(u128::from(u32::MAX));
    let len = job.stdin.map_or(0, super::super::pipe::Block::len);
    let cap: i64 = if spool {
        -1
    } else {
        i64::try_from(limits.capture_limit).unwrap_or(i64::MAX)
    };
    // What follows `J` and its length: the agent reads it whole, in one read (see agent.sh).
    // ID, SLOT and LEN come first, as plain numbers: the agent's main loop takes them apart
    // without an `eval`, which only the slot's runner does.
    let mut line = format!(" {id} {slot} {len} {grace_ms}");
    for (what, value) in [
        ("working directory", base),
        ("cd", job.cd.unwrap_or("")),
        ("out", job.out.unwrap_or("")),
        ("err", job.err.unwrap_or("")),
    ] {
        line.push(' ');
        line.push_str(&word(value.as_bytes()).map_err(|()| nul(what))?);
    }
    line.push_str(&format!(" {cap} "));
    line.push_str(&word(memfree.as_bytes()).map_err(|()| nul("memfree"))?);
    line.push(' ');
    line.push_str(&word(load.as_bytes()).map_err(|()| nul("load"))?);
    line.push(' ');
    line.push_str(&word(job.cmd.as_bytes()).map_err(|()| nul("command"))?);
    for (name, value) in env.iter().chain(job.env.iter()) {
        line.push(' ');
        line.push_str(
            &word(format!("{name}={value}").as_bytes()).map_err(|()| nul("environment"))?,
        );
    }
    line.push('\n');
    if line.len() > MAX_JOB_MESSAGE {
        return Err(format!(
            "the job (its command, environment and paths) is {} bytes as a message to the \
             agent, more than the {MAX_JOB_MESSAGE} it takes",
            line.len()
        ));
    }
    Ok(format!("J{:08}{line}", line.len()).into_bytes())
}

/// Reads frames, writes messages and heartbeats, until the agent is lost: why.
async fn supervise(
    host: String,
    shared: Arc<Mutex<Shared>>,
    mut frames: FrameReader,
    mut stdin: Box<dyn AsyncWrite + Send + Unpin>,
    mut from_us: mpsc::UnboundedReceiver<ToAgent>,
    ended: Pin<Box<dyn Future<Output = ()> + Send>>,
    kill: Box<dyn FnOnce() + Send>,
) -> String {
    let writer = async {
        let mut beat = tokio::time::interval(HEARTBEAT);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let message = tokio::select! {
                m = from_us.recv() => m,
                _ = beat.tick() => Some(ToAgent::Line(b"H\n".to_vec())),
            };
            let written = match message {
                None => {
                    let _ = stdin.shutdown().await;
                    // Closed by us: the agent quits; wait for the transport to end.
                    std::future::pending::<()>().await;
                    Ok(())
                }
                Some(ToAgent::Line(line)) => stdin.write_all(&line).await,
                Some(ToAgent::Job(line, block)) => match stdin.write_all(&line).await {
                    Ok(()) => crate::pipe::feed_writer(&mut stdin, &block).await,
                    Err(e) => Err(e),
                },
                Some(ToAgent::Flushed(said)) => {
                    let flushed = stdin.flush().await;
                    let _ = said.send(());
                    flushed
                }
            };
            if let Err(e) = written.and(stdin.flush().await) {
                return format!("cannot write to bakapara's agent on {host}: {e}");
            }
        }
    };
    let reader = async {
        loop {
            if let Err(why) = read_frame(&mut frames, &shared).await {
                return why;
            }
        }
    };
    let why = tokio::select! {
        why = writer => why,
        why = reader => why,
        () = ended => "the connection closed".to_string(),
    };
    kill();
    why
}

/// Reads one frame and hands it to its job. Fails with why the agent is lost.
async fn read_frame(frames: &mut FrameReader, shared: &Mutex<Shared>) -> Result<(), String> {
    let line = frames.line().await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&line);
    let mut fields = text.splitn(8, ' ');
    let kind = fields.next().unwrap_or("");
    let now = Local::now();
    match kind {
        "H" | "C" => Ok(()),
        "X" => {
            if let Ok(mut s) = shared.lock() {
                s.said_stop = true;
            }
            Err(format!(
                "bakapara's agent stopped: {}",
                text.get(2..).unwrap_or("").trim()
            ))
        }
        "S" => {
            let id = fields.next().and_then(|i| i.parse::<u64>().ok());
            if let Some(w) =
                id.and_then(|id| shared.lock().ok()?.jobs.get(&id).map(|w| w.news.clone()))
            {
                let _ = w.send(News::Started(now));
            }
            Ok(())
        }
        "R" => {
            let bad = || format!("bakapara's agent sent a bad frame: {text:?}");
            let id: u64 = fields.next().and_then(|i| i.parse().ok()).ok_or_else(bad)?;
            let state = fields.next().ok_or_else(bad)?.to_string();
            let mut num = || -> Result<u64, String> {
                fields.next().and_then(|n| n.parse().ok()).ok_or_else(bad)
            };
            let (out_len, err_len, out_total, err_total) = (num()?, num()?, num()?, num()?);
            let rest = fields.next().unwrap_or("").to_string();
            let waiting = shared.lock().ok().and_then(|mut s| s.jobs.remove(&id));
            let (news, spool) = match waiting {
                Some(w) => (Some(w.news), w.spool),
                None => (None, (None, None)),
            };
            let out = frames
                .payload(out_len, out_total, spool.0)
                .await
                .map_err(|e| e.to_string())?;
            let err = frames
                .payload(err_len, err_total, spool.1)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(news) = news {
                let _ = news.send(News::Ended(Box::new(Ended {
                    at: now,
                    kind: state,
                    rest,
                    out,
                    err,
                })));
            }
            Ok(())
        }
        _ => Err(format!("bakapara's agent sent a bad frame: {text:?}")),
    }
}

/// Reads an agent's stdout with a deadline on every read: silence for [`SILENCE`] is a loss.
struct FrameReader {
    inner: Box<dyn AsyncRead + Send + Unpin>,
    buf: Vec<u8>,
    start: usize,
}

impl FrameReader {
    fn new(inner: Box<dyn AsyncRead + Send + Unpin>) -> FrameReader {
        FrameReader {
            inner,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
        }
    }

    /// Reads more bytes into the buffer.
    async fn fill(&mut self) -> std::io::Result<()> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        if self.buf.capacity() - self.buf.len() < 16 * 1024 {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            self.buf.reserve(64 * 1024);
        }
        match tokio::time::timeout(SILENCE, self.inner.read_buf(&mut self.buf)).await {
            Ok(Ok(0)) => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the agent's output ended",
            )),
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("heard nothing from it for {} s", SILENCE.as_secs()),
            )),
        }
    }

    /// One line, without its newline.
    async fn line(&mut self) -> std::io::Result<Vec<u8>> {
        let mut scanned = 0;
        loop {
            let pending = &self.buf[self.start..];
            if let Some(at) = pending[scanned..].iter().position(|&b| b == b'\n') {
                let line = pending[..scanned + at].to_vec();
                self.start += scanned + at + 1;
                return Ok(line);
            }
            scanned = pending.len();
            if scanned > MAX_LINE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "bakapara's agent sent a line too long",
                ));
            }
            self.fill().await?;
        }
    }

    /// `len` bytes of a stream whose whole length was `total`: kept, or written to `spool`.
    async fn payload(
        &mut self,
        len: u64,
        total: u64,
        mut spool: Option<std::fs::File>,
    ) -> std::io::Result<Captured> {
        let mut left = len;
        let mut bytes = Vec::new();
        if spool.is_none() {
            bytes.reserve(usize::try_from(len.min(16 << 20)).unwrap_or(0));
        }
        while left > 0 {
            if self.start == self.buf.len() {
                self.fill().await?;
            }
            let have = (self.buf.len() - self.start) as u64;
            let take = usize::try_from(have.min(left)).unwrap_or(usize::MAX);
            let chunk = &self.buf[self.start..self.start + take];
            match spool.as_mut() {
                // A full disk: the rest of this stream is lost, the run goes on.
                Some(file) => {
                    if file.write_all(chunk).is_err() {
                        spool = None;
                    }
                }
                None => bytes.extend_from_slice(chunk),
            }
            self.start += take;
            left -= take as u64;
        }
        Ok(Captured {
            bytes,
            truncated: total > len,
            spool: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_one_line_and_refuse_nul() {
        assert_eq!(word(b"").unwrap(), "$''");
        assert_eq!(word(b"a b'c\\").unwrap(), "$'a b\\'c\\\\'");
        assert_eq!(word(b"x\ny\xff").unwrap(), "$'x\\x0ay\\xff'");
        assert!(word(b"a\0b").is_err());
    }

    /// bash reads every word back as it was.
    #[test]
    fn bash_reads_the_words_back() {
        let values: [&[u8]; 5] = [
            b"",
            b"plain",
            b"it's \"q\" $x `y` \\",
            b"\n\t\x01\x7f\xc3\xa9",
            b"\xff\xfe",
        ];
        let mut line = String::from("set --");
        for v in values {
            line.push(' ');
            line.push_str(&word(v).unwrap());
        }
        let script = "eval \"$(head -n1)\"; for a; do printf '%s|' \"$a\"; done";
        let mut child = std::process::Command::new("bash")
            .args(["--norc", "-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{line}\n").as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let mut want = Vec::new();
        for v in values {
            want.extend_from_slice(v);
            want.push(b'|');
        }
        assert_eq!(out.stdout, want);
    }

    /// Processes whose command line holds `needle`.
    fn running_with(needle: &str) -> usize {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline")).is_ok_and(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
            })
            .count()
    }

    /// A real bash running the agent script, sent a first J message with `rest` after its
    /// length: the agent, its stdin and its stdout.
    fn agent_with(
        rest: &str,
    ) -> (
        std::process::Child,
        std::process::ChildStdin,
        std::io::BufReader<std::process::ChildStdout>,
    ) {
        agent_with_workdir(rest, &Workdir::default())
    }

    /// [`agent_with`], for an agent with these working-directory duties.
    fn agent_with_workdir(
        rest: &str,
        workdir: &Workdir,
    ) -> (
        std::process::Child,
        std::process::ChildStdin,
        std::io::BufReader<std::process::ChildStdout>,
    ) {
        use std::io::Write;
        let mut child = std::process::Command::new("bash")
            .args(["--norc", "--noprofile", "-s"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        write!(
            stdin,
            "{}J{:08}{rest}",
            script(workdir, Some(2)),
            rest.len()
        )
        .unwrap();
        stdin.flush().unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        (child, stdin, out)
    }

    /// Reads the agent's lines until `last` says this one is the last wanted: every line read.
    fn lines_until(
        out: &mut std::io::BufReader<std::process::ChildStdout>,
        mut last: impl FnMut(&str) -> bool,
    ) -> Vec<String> {
        use std::io::BufRead;
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "the agent ended early: {lines:?}"
            );
            let done = last(&line);
            lines.push(line);
            if done {
                return lines;
            }
        }
    }

    /// A real bash runs the agent and a job; then bakapara's link dies with `cut` the last
    /// bytes that came: the fence must still stop the job and the agent.
    fn cut_midway(cut: &[u8]) {
        use std::io::Write;
        let arg = format!("98{}.{}", cut.len(), std::process::id());
        let rest = format!(" 1 0 0 2000 $'' $'' $'' $'' -1 $'' $'' $'sleep {arg}'\n");
        let (mut child, mut stdin, mut out) = agent_with(&rest);
        lines_until(&mut out, |l| l == "S 1\n");
        let started = std::time::Instant::now();
        while running_with(&format!("sleep {arg}")) == 0 {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the job never ran"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        stdin.write_all(cut).unwrap();
        stdin.flush().unwrap();
        let cut = std::time::Instant::now();
        let limit = FENCE + STOP_GRACE + Duration::from_secs(3);
        while child.try_wait().unwrap().is_none() {
            assert!(
                cut.elapsed() < limit,
                "the agent still runs {limit:?} after the cut"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            cut.elapsed() >= FENCE.saturating_sub(Duration::from_millis(500)),
            "not before the fence"
        );
        assert_eq!(running_with(&format!("sleep {arg}")), 0, "the job is gone");
        drop(stdin);
    }

    #[test]
    fn a_message_cut_off_midway_still_ends_in_the_fence() {
        cut_midway(b"J0000");
    }

    #[test]
    fn pipe_input_cut_off_midway_still_ends_in_the_fence() {
        // A job for slot 1 with 10 bytes of --pipe input, of which 3 come.
        let rest = " 2 1 10 2000 $'' $'' $'' $'' -1 $'' $'' $'cat'\n";
        cut_midway(format!("J{:08}{rest}abc", rest.len()).as_bytes());
    }

    /// --pipe input that takes longer than the fence to come (a slow link) is not cut: the
    /// agent sees it coming.
    #[test]
    fn pipe_input_slower_than_the_fence_comes_whole() {
        use std::io::{BufRead, Write};
        let total = 600_000;
        let rest = format!(" 1 0 {total} 2000 $'' $'' $'' $'' -1 $'' $'' $'wc -c'\n");
        let (mut child, mut stdin, mut out) = agent_with(&rest);
        // A sixth of it every F/3: the last pieces come well after the fence time.
        let pieces = 6;
        for _ in 0..pieces {
            stdin.write_all(&vec![b'x'; total / pieces]).unwrap();
            stdin.flush().unwrap();
            std::thread::sleep(FENCE / 3);
        }
        stdin.write_all(b"Q\n").unwrap();
        stdin.flush().unwrap();
        let lines = lines_until(&mut out, |l| l.starts_with("R 1 "));
        let line = lines.last().unwrap();
        assert!(line.starts_with("R 1 done "), "{line}");
        let mut output = String::new();
        out.read_line(&mut output).unwrap();
        assert_eq!(output, format!("{total}\n"));
        drop(stdin);
        child.wait().unwrap();
    }

    /// After `A` (the run stops), a job queued in a slot is reported stopped without starting
    /// when the slot's running job ends, though no T for it came.
    #[test]
    fn after_a_no_queued_job_starts() {
        use std::io::Write;
        let arg = format!("97.{}", std::process::id());
        let first = format!(" 1 0 0 2000 $'' $'' $'' $'' -1 $'' $'' $'sleep {arg}'\n");
        let (mut child, mut stdin, mut out) = agent_with(&first);
        let queued = " 2 0 0 2000 $'' $'' $'' $'' -1 $'' $'' $'echo ran'\n";
        write!(stdin, "J{:08}{queued}", queued.len()).unwrap();
        stdin.flush().unwrap();
        let mut lines = lines_until(&mut out, |l| l == "S 1\n");
        stdin.write_all(b"A\nT 1 0\n").unwrap();
        stdin.flush().unwrap();
        let mut ended = 0;
        lines.extend(lines_until(&mut out, |l| {
            ended += usize::from(l.starts_with("R "));
            ended == 2
        }));
        assert!(!lines.iter().any(|l| l == "S 2\n"), "{lines:?}");
        assert!(
            lines.iter().any(|l| l.starts_with("R 2 stopped ")),
            "{lines:?}"
        );
        stdin.write_all(b"Q\n").unwrap();
        drop(stdin);
        child.wait().unwrap();
    }

    /// The agent makes a missing working directory when told to (M=1), and removes the one it
    /// was given (R) when bakapara ends the run (Q), but not when its link ends (EOF: a lost
    /// host, where another host entry may be the same machine and still use it).
    #[test]
    fn the_workdir_is_made_and_removed_only_at_the_end_of_the_run() {
        use std::io::{BufRead, Write};
        let top = tempfile::tempdir().unwrap();
        let dir = top.path().join("a/b");
        let duties = Workdir {
            make: true,
            remove: Some(dir.display().to_string()),
        };
        let base = word(dir.display().to_string().as_bytes()).unwrap();
        let rest = format!(" 1 0 0 2000 {base} $'' $'' $'' -1 $'' $'' $'pwd'\n");
        for (end, removed) in [(&b""[..], false), (&b"Q\n"[..], true)] {
            let (mut child, mut stdin, mut out) = agent_with_workdir(&rest, &duties);
            let lines = lines_until(&mut out, |l| l.starts_with("R 1 "));
            let line = lines.last().unwrap();
            assert!(line.starts_with("R 1 done "), "{line}");
            let mut said = String::new();
            out.read_line(&mut said).unwrap();
            assert_eq!(said.trim(), dir.display().to_string());
            stdin.write_all(end).unwrap();
            drop(stdin);
            child.wait().unwrap();
            assert_eq!(!dir.exists(), removed, "ended with {end:?}");
            assert!(
                top.path().join("a").is_dir(),
                "only the directory itself goes"
            );
        }
    }

    /// The text of J message `id` for slot 0: `cmd` in `base`, then `dir` (bash words).
    fn job_message(id: u32, base: &str, dir: &str, cmd: &str) -> String {
        let rest = format!(" {id} 0 0 2000 {base} {dir} $'' $'' -1 $'' $'' {cmd}\n");
        format!("J{:08}{rest}", rest.len())
    }

    /// A runner goes to its job's directory itself (the fast path), again as the directory
    /// changes from job to job, and notices one that went (or was made anew) since the job
    /// before: each job runs where its own BASE and CD say, or fails saying it cannot.
    #[test]
    fn each_job_of_a_slot_runs_in_its_own_directory() {
        use std::io::Write;
        let top = tempfile::tempdir().unwrap();
        let (a, b) = (top.path().join("a"), top.path().join("b"));
        let sub = a.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let w = |p: &std::path::Path| word(p.display().to_string().as_bytes()).unwrap();
        let (mut child, mut stdin, mut out) =
            agent_with(&job_message(1, &w(&a), "$''", "pwd")[9..]);
        let mut ran = |id: u32, stdin: &mut std::process::ChildStdin, msg: Option<String>| {
            if let Some(msg) = msg {
                stdin.write_all(msg.as_bytes()).unwrap();
                stdin.flush().unwrap();
            }
            let end = format!("R {id} ");
            let line = lines_until(&mut out, |l| l.starts_with(&end))
                .pop()
                .unwrap();
            if line.starts_with(&format!("R {id} done ")) {
                lines_until(&mut out, |_| true).pop().unwrap()
            } else {
                line
            }
        };
        let at = |p: &std::path::Path| format!("{}\n", p.display());
        assert_eq!(ran(1, &mut stdin, None), at(&a));
        let to_b = job_message(2, &w(&b), "$''", "pwd");
        assert_eq!(ran(2, &mut stdin, Some(to_b)), at(&b));
        let to_sub = job_message(3, &w(&a), "sub", "pwd");
        assert_eq!(ran(3, &mut stdin, Some(to_sub)), at(&sub));
        std::fs::remove_dir(&sub).unwrap();
        let gone = ran(4, &mut stdin, Some(job_message(4, &w(&a), "sub", "pwd")));
        assert!(
            gone.starts_with("R 4 error 0 0 0 0 cannot cd to sub"),
            "{gone}"
        );
        std::fs::create_dir(&sub).unwrap();
        let again = job_message(5, &w(&a), "sub", "pwd");
        assert_eq!(ran(5, &mut stdin, Some(again)), at(&sub));
        let home = job_message(6, "$''", "$''", "pwd");
        let want = format!("{}\n", std::env::var("HOME").unwrap());
        assert_eq!(ran(6, &mut stdin, Some(home)), want);
        stdin.write_all(b"Q\n").unwrap();
        drop(stdin);
        child.wait().unwrap();
    }

    /// The agent's CPU count is nproc's: the CPUs it may run on (here all of this test's, then
    /// the first of them alone, by taskset).
    #[test]
    fn the_cpu_count_is_the_cpus_the_agent_may_run_on() {
        use std::io::{BufRead, Write};
        let nproc = std::process::Command::new("nproc")
            .env_remove("OMP_NUM_THREADS")
            .env_remove("OMP_THREAD_LIMIT")
            .output()
            .unwrap();
        let all = String::from_utf8(nproc.stdout).unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim();
        let first = allowed.split([',', '-']).next().unwrap();
        for (pin, want) in [(None, all.trim()), (Some(first), "1")] {
            let mut cmd =
                std::process::Command::new(if pin.is_some() { "taskset" } else { "bash" });
            if let Some(cpu) = pin {
                cmd.args(["-c", cpu, "bash"]);
            }
            let mut child = cmd
                .args(["--norc", "--noprofile", "-s"])
                .env_remove("OMP_NUM_THREADS")
                .env_remove("OMP_THREAD_LIMIT")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            writeln!(stdin, "{}Q", script(&Workdir::default(), None)).unwrap();
            drop(stdin);
            let mut first = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut first)
                .unwrap();
            child.wait().unwrap();
            assert_eq!(first, format!("C {want}\n"), "pinned to {pin:?}");
        }
    }

    #[tokio::test]
    async fn frames_are_read_byte_exact() {
        let data: &[u8] = b"C 4\nS 1\nR 1 done 3 2 5 2 0\na\0bxyH\n";
        let shared = Mutex::new(Shared::default());
        let (tx, mut rx) = mpsc::unbounded_channel();
        shared.lock().unwrap().jobs.insert(
            1,
            Waiting {
                news: tx,
                spool: (None, None),
            },
        );
        let mut frames = FrameReader::new(Box::new(data));
        for _ in 0..4 {
            read_frame(&mut frames, &shared).await.unwrap();
        }
        assert!(matches!(rx.recv().await, Some(News::Started(_))));
        let Some(News::Ended(ended)) = rx.recv().await else {
            panic!("no end")
        };
        assert_eq!(ended.kind, "done");
        assert_eq!(ended.rest, "0");
        assert_eq!(ended.out.bytes, b"a\0b");
        assert!(ended.out.truncated);
        assert_eq!(ended.err.bytes, b"xy");
        assert!(!ended.err.truncated);
        assert!(read_frame(&mut frames, &shared).await.is_err(), "EOF");
    }
}
