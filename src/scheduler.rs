//! The scheduler: hands jobs to free slots, collects outcomes, and stops the run on a signal.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::exec::{Command, Ending, Executor, Limits, Outcome, Stop};
use crate::input::{ReaderState, Templates};
use crate::job::{Body, Job, JobResult, Placement, Status};
use crate::output::Output;
use crate::signals::{Event, Signals};

/// A host jobs can run on.
#[derive(Debug)]
pub struct Host {
    /// The name as written in `-S` (`localhost` for this machine); results report it.
    pub name: String,
    /// Other names a job's `host` key may use for it (e.g. the bare host name).
    pub aliases: Vec<String>,
    pub executor: Executor,
}

impl Host {
    fn answers_to(&self, wanted: &str) -> bool {
        self.name == wanted || self.aliases.iter().any(|a| a == wanted)
    }
}

/// One place a job can run: a slot on a host.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// Index into the host list.
    pub host: usize,
}

/// Settings every job of the run shares.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub capture_limit: usize,
    pub grace: Duration,
    /// The default timeout (`--timeout`); a job's own `timeout` key wins.
    pub timeout: Option<Duration>,
}

/// How the run ended, for the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub done: u64,
    pub failed: u64,
    /// Set when SIGINT or SIGTERM stopped the run: the process should die of it.
    pub interrupted_by: Option<Signal>,
    /// A fatal problem found during the run (input could not be read, stdout closed).
    pub fatal: Option<String>,
}

/// How many jobs may wait in the scheduler for a host of their own, beyond the input channel.
const LOOKAHEAD: usize = 1024;

struct Done {
    slot: usize,
    job: Job,
    outcome: Outcome,
}

/// Why no new job starts.
#[derive(Debug, Clone, Copy)]
enum Halt {
    Signal(Signal),
    Hangup,
}

pub struct Scheduler<W: Write> {
    hosts: Vec<Arc<Host>>,
    slots: Vec<Slot>,
    /// Free slot indices; the lowest is used first, as GNU Parallel's `{%}` does.
    free: BinaryHeap<Reverse<usize>>,
    /// Jobs received but waiting for a slot on one of their hosts.
    queue: VecDeque<Job>,
    running: JoinSet<Done>,
    rx: mpsc::Receiver<Job>,
    reader: Arc<ReaderState>,
    reader_thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    input_open: bool,
    received: u64,
    stop_tx: watch::Sender<Stop>,
    halt: Option<Halt>,
    templates: Arc<Templates>,
    settings: RunSettings,
    output: Output<W>,
    run_id: String,
    fatal: Option<String>,
}

impl<W: Write> Scheduler<W> {
    pub fn new(
        hosts: Vec<(Host, usize)>,
        templates: Templates,
        settings: RunSettings,
        rx: mpsc::Receiver<Job>,
        reader: Arc<ReaderState>,
        reader_thread: Option<std::thread::JoinHandle<Result<(), String>>>,
        output: Output<W>,
    ) -> Scheduler<W> {
        let mut slots = Vec::new();
        let mut host_list = Vec::new();
        for (index, (host, count)) in hosts.into_iter().enumerate() {
            slots.extend((0..count).map(|_| Slot { host: index }));
            host_list.push(Arc::new(host));
        }
        let free = (0..slots.len()).map(Reverse).collect();
        let (stop_tx, _) = watch::channel(Stop::Run);
        Scheduler {
            hosts: host_list,
            slots,
            free,
            queue: VecDeque::new(),
            running: JoinSet::new(),
            rx,
            reader,
            reader_thread,
            input_open: true,
            received: 0,
            stop_tx,
            halt: None,
            templates: Arc::new(templates),
            settings,
            output,
            run_id: run_id(),
            fatal: None,
        }
    }

    /// Runs every job to its result line.
    pub async fn run(mut self, known_total: Option<u64>, mut signals: Option<Signals>) -> Summary {
        self.output.logger().start(known_total, self.slots.len());
        loop {
            self.dispatch();
            if self.running.is_empty()
                && self.queue.is_empty()
                && (!self.input_open || self.halt.is_some())
            {
                break;
            }
            let want_input = self.input_open
                && self.halt.is_none()
                && !self.free.is_empty()
                && self.queue.len() < LOOKAHEAD;
            tokio::select! {
                Some(done) = self.running.join_next(), if !self.running.is_empty() => match done {
                    Ok(done) => self.finish(done),
                    Err(e) => self.output.logger().warn(&format!("bakapara: internal error: a job task failed: {e}")),
                },
                job = self.rx.recv(), if want_input => match job {
                    Some(job) => self.receive(job),
                    None => self.input_closed(),
                },
                event = next_signal(&mut signals) => self.on_signal(event).await,
            }
        }
        self.output.finish();
        if let Some(e) = self.output.broken() {
            self.fatal
                .get_or_insert_with(|| format!("cannot write results to stdout: {e}"));
        }
        Summary {
            done: self.output.done(),
            failed: self.output.failed(),
            interrupted_by: match self.halt {
                Some(Halt::Signal(sig)) => Some(sig),
                _ => None,
            },
            fatal: self.fatal,
        }
    }

    /// Starts queued and incoming jobs while slots are free.
    fn dispatch(&mut self) {
        if self.halt.is_some() {
            return;
        }
        let mut i = 0;
        while i < self.queue.len() && !self.free.is_empty() {
            let wanted = wanted_hosts(&self.queue[i]);
            match self.take_slot(wanted.as_deref()) {
                Some(slot) => {
                    if let Some(job) = self.queue.remove(i) {
                        self.start(job, slot);
                    }
                }
                None => i += 1,
            }
        }
        while !self.free.is_empty() && self.input_open && self.queue.len() < LOOKAHEAD {
            match self.rx.try_recv() {
                Ok(job) => self.receive(job),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.input_closed(),
            }
        }
    }

    /// A job from the input: settled at once when it cannot run, else started or queued.
    fn receive(&mut self, job: Job) {
        self.received += 1;
        if let Body::Invalid(why) = &job.body {
            let why = why.clone();
            return self.settle(job, Status::Error, why);
        }
        if self.halt.is_some() {
            return self.settle_halted(job);
        }
        if let Some(wanted) = wanted_hosts(&job) {
            if !self
                .hosts
                .iter()
                .any(|h| wanted.iter().any(|w| h.answers_to(w)))
            {
                let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
                let why = format!(
                    "no configured host may run this job: it asks for {} but the hosts are {}",
                    wanted.join(", "),
                    names.join(", ")
                );
                return self.settle(job, Status::Error, why);
            }
        }
        match self.take_slot(wanted_hosts(&job).as_deref()) {
            Some(slot) => self.start(job, slot),
            None => self.queue.push_back(job),
        }
    }

    /// The lowest free slot on a host the job may run on (`None`: any); takes it from the
    /// free set.
    fn take_slot(&mut self, wanted: Option<&[String]>) -> Option<usize> {
        match wanted {
            None => self.free.pop().map(|Reverse(s)| s),
            Some(wanted) => {
                let fits = |s: usize| {
                    let host = &self.hosts[self.slots[s].host];
                    wanted.iter().any(|w| host.answers_to(w))
                };
                let mut free: Vec<usize> = self.free.iter().map(|Reverse(s)| *s).collect();
                free.sort_unstable();
                let slot = free.into_iter().find(|&s| fits(s))?;
                self.free.retain(|Reverse(s)| *s != slot);
                Some(slot)
            }
        }
    }

    /// Runs a job on a slot (expanding its template for that slot first).
    fn start(&mut self, mut job: Job, slot: usize) {
        self.templates.materialize(&mut job, slot + 1);
        let spec = match &job.body {
            Body::Ready(spec) => spec.clone(),
            Body::Invalid(why) => {
                let why = why.clone();
                self.free.push(Reverse(slot));
                return self.settle(job, Status::Error, why);
            }
            Body::Pending(_) => {
                self.free.push(Reverse(slot));
                return self.settle(
                    job,
                    Status::Error,
                    "internal error: the job was not expanded".into(),
                );
            }
        };
        job.attempts += 1;
        let host = Arc::clone(&self.hosts[self.slots[slot].host]);
        let stop = self.stop_tx.subscribe();
        let limits = Limits {
            capture_limit: self.settings.capture_limit,
            timeout: spec.timeout.or(self.settings.timeout),
            grace: self.settings.grace,
        };
        self.running.spawn(async move {
            let command = Command {
                cmd: &spec.cmd,
                cd: spec.cd.as_deref(),
                out: spec.out.as_deref(),
                err: spec.err.as_deref(),
                env: &spec.env,
            };
            let outcome = host.executor.run(&command, &limits, stop).await;
            Done { slot, job, outcome }
        });
    }

    /// A job run ended: free its slot and write its result.
    fn finish(&mut self, done: Done) {
        let Done { slot, job, outcome } = done;
        self.free.push(Reverse(slot));
        if let Ending::HostLost(_) = outcome.ending {
            // Put back in the queue: a lost host is not the job's failure.
            if self.halt.is_none() {
                self.queue.push_front(job);
                return;
            }
        }
        let place = Placement {
            host: self.hosts[self.slots[slot].host].name.clone(),
            engine_id: slot,
        };
        let msg_id = self.msg_id(&job);
        let result = JobResult::from_outcome(&job, &place, outcome, msg_id);
        self.output.emit(&job, &result);
    }

    /// Writes the result of a job that never ran.
    fn settle(&mut self, job: Job, status: Status, why: String) {
        let msg_id = self.msg_id(&job);
        let result = JobResult::not_started(&job, status, why, msg_id);
        self.output.emit(&job, &result);
    }

    fn settle_halted(&mut self, job: Job) {
        let why = match self.halt {
            Some(Halt::Signal(sig)) => {
                format!("not started: bakapara was stopped by {}", sig.as_str())
            }
            _ => "not started: bakapara got SIGHUP and starts no new jobs".to_string(),
        };
        self.settle(job, Status::Aborted, why);
    }

    fn input_closed(&mut self) {
        if !self.input_open {
            return;
        }
        self.input_open = false;
        self.output.set_total(self.received);
        if let Some(thread) = self.reader_thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    self.output.logger().warn(&format!("bakapara: {e}"));
                    self.fatal.get_or_insert(e);
                }
                Err(_) => {
                    let e = "internal error: the input reader failed".to_string();
                    self.output.logger().warn(&format!("bakapara: {e}"));
                    self.fatal.get_or_insert(e);
                }
            }
        }
    }

    async fn on_signal(&mut self, event: Event) {
        match event {
            Event::Interrupt(sig) => {
                self.halt = Some(Halt::Signal(sig));
                self.stop_tx.send_replace(Stop::Term);
                self.abandon_input().await;
            }
            Event::KillNow(sig) => {
                self.halt = Some(Halt::Signal(sig));
                self.stop_tx.send_replace(Stop::Kill);
                self.abandon_input().await;
            }
            Event::Hangup => {
                if self.halt.is_none() {
                    self.halt = Some(Halt::Hangup);
                }
                self.abandon_input().await;
            }
        }
    }

    /// Gives every job that was read but not started its `aborted` line, and reads no more.
    async fn abandon_input(&mut self) {
        for job in std::mem::take(&mut self.queue) {
            self.settle_halted(job);
        }
        if !self.input_open {
            return;
        }
        self.reader.stop.store(true, Ordering::SeqCst);
        loop {
            match self.rx.try_recv() {
                Ok(job) => {
                    self.received += 1;
                    if let Body::Invalid(why) = &job.body {
                        let why = why.clone();
                        self.settle(job, Status::Error, why);
                    } else {
                        self.settle_halted(job);
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // The reader may be between reading a line and sending its job.
                    if self.reader.in_flight.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        // The reader may be blocked reading a terminal or a pipe: leave it; nothing it reads
        // from now on is taken.
        self.input_open = false;
        self.reader_thread = None;
        self.output.set_total(self.received);
    }

    fn msg_id(&self, job: &Job) -> String {
        format!("{}-{}-{}", self.run_id, job.seq, job.attempts)
    }
}

/// The hosts a job asks for (`host` key), or `None` for any.
fn wanted_hosts(job: &Job) -> Option<Vec<String>> {
    match &job.body {
        Body::Ready(spec) => spec.hosts.clone(),
        // A --jsonl object not expanded yet: read its `host` key (checked fully at expansion).
        _ => match job.object.get("host") {
            Some(Value::String(s)) => Some(vec![s.clone()]),
            Some(Value::Array(list)) => Some(
                list.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
            ),
            _ => None,
        },
    }
}

async fn next_signal(signals: &mut Option<Signals>) -> Event {
    match signals {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// A short id for this run, unique enough to tell runs apart in `msg_id`.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mixed = (nanos ^ (u64::from(std::process::id()) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{mixed:016x}")
}
