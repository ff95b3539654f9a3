//! The scheduler: hands jobs to free slots, collects outcomes, and stops the run on a signal.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::exec::ssh::HostDown;
use crate::exec::{Command, Ending, Executor, Limits, Outcome, Stop};
use crate::halt::{HaltPolicy, When};
use crate::hosts::HostSpec;
use crate::input::{ReaderState, Templates};
use crate::job::{Body, Job, JobResult, Placement, Status};
use crate::output::{Output, OutputFailure};
use crate::signals::{Controls, Event};

/// A host jobs can run on.
#[derive(Debug)]
pub struct Host {
    /// The entry as given in `-S` (its `name` is what results report).
    pub spec: HostSpec,
    /// How jobs run there; `None` when the host could not be reached at start (left out).
    pub executor: Option<Executor>,
    pub slots: usize,
}

/// What the scheduler knows of a host while the run goes on.
#[derive(Debug)]
struct HostState {
    host: Arc<Host>,
    /// Down since when, and why; `None` while it is up.
    down: Option<(Instant, String)>,
}

impl HostState {
    fn usable(&self) -> bool {
        self.host.executor.is_some()
    }
}

/// One place a job can run: a slot on a host.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// Index into the host list.
    pub host: usize,
    /// The slot's number on its host, from 0 (picks the master connection).
    pub lane: usize,
}

/// Settings every job of the run shares.
#[derive(Debug, Clone)]
pub struct RunSettings {
    pub capture_limit: usize,
    pub grace: Duration,
    /// The default timeout (`--timeout`); a job's own `timeout` key wins.
    pub timeout: Option<Duration>,
    /// How many more times a failed job runs (`--retries`); a job's own `retries` key wins.
    pub retries: u32,
    /// How long a job waits for a lost host to come back before it fails.
    pub host_timeout: Duration,
}

/// How the run ended, for the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub done: u64,
    pub failed: u64,
    /// Set when SIGINT or SIGTERM stopped the run: the process should die of it.
    pub interrupted_by: Option<Signal>,
    /// A fatal problem found during the run (input could not be read, stdout or the joblog
    /// could not be written).
    pub fatal: Option<String>,
    /// The reader of stdout went away (broken pipe): the run stopped; exit quietly with 141.
    pub broken_pipe: bool,
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
    Policy(HaltPolicy),
    /// stdout or the joblog could not be written.
    Output,
}

pub struct Scheduler {
    hosts: Vec<HostState>,
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
    output: Output,
    run_id: String,
    fatal: Option<String>,
    broken_pipe: bool,
    /// Lost connections, reported by keepalives and by jobs.
    down_rx: mpsc::UnboundedReceiver<HostDown>,
    /// Hosts that came back after a loss.
    up_tx: mpsc::UnboundedSender<usize>,
    up_rx: mpsc::UnboundedReceiver<usize>,
    halt_policy: Option<HaltPolicy>,
    /// `--resume`: earlier ok result lines by (cmd, cd), each usable once.
    resume: Resume,
}

/// Result lines of an earlier run (`--resume FILE`) whose jobs need not run again.
pub type Resume = std::collections::HashMap<(String, Option<String>), VecDeque<Vec<u8>>>;

impl Scheduler {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        hosts: Vec<Host>,
        templates: Templates,
        settings: RunSettings,
        rx: mpsc::Receiver<Job>,
        reader: Arc<ReaderState>,
        reader_thread: Option<std::thread::JoinHandle<Result<(), String>>>,
        output: Output,
        down_rx: mpsc::UnboundedReceiver<HostDown>,
        halt_policy: Option<HaltPolicy>,
        resume: Resume,
    ) -> Scheduler {
        let mut slots = Vec::new();
        let mut host_list = Vec::new();
        for (index, host) in hosts.into_iter().enumerate() {
            if host.executor.is_some() {
                slots.extend((0..host.slots).map(|lane| Slot { host: index, lane }));
            }
            host_list.push(HostState {
                host: Arc::new(host),
                down: None,
            });
        }
        let (up_tx, up_rx) = mpsc::unbounded_channel();
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
            broken_pipe: false,
            down_rx,
            up_tx,
            up_rx,
            halt_policy,
            resume,
        }
    }

    /// Runs every job to its result line.
    pub async fn run(mut self, known_total: Option<u64>, mut controls: Controls) -> Summary {
        self.output.logger().start(known_total, self.slots.len());
        // Checks jobs waiting for lost hosts against --host-timeout; a steady tick, so that a
        // busy run (other events all the time) still gets to it.
        let mut host_check = tokio::time::interval(Duration::from_millis(500));
        host_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                && self.queue.len() < LOOKAHEAD
                && !self.output.backlogged();
            tokio::select! {
                Some(done) = self.running.join_next(), if !self.running.is_empty() => match done {
                    Ok(done) => self.finish(done),
                    Err(e) => self.output.logger().warn(&format!("bakapara: internal error: a job task failed: {e}")),
                },
                job = self.rx.recv(), if want_input => match job {
                    Some(job) => self.receive(job),
                    None => self.input_closed(),
                },
                event = controls.next() => self.on_signal(event),
                Some(down) = self.down_rx.recv() => self.host_down(down.host, down.generation, down.why),
                Some(host) = self.up_rx.recv() => self.host_up(host),
                _ = host_check.tick(), if self.waiting_on_down_hosts() => {
                    self.fail_jobs_of_dead_hosts();
                }
                _ = self.output.changed() => self.output_changed(),
            }
        }
        self.output.finish();
        let stopped = matches!(self.halt, Some(Halt::Signal(_)));
        if let Some(sig) = self.output.flush(&mut controls, stopped).await {
            if !stopped {
                self.halt = Some(Halt::Signal(sig));
            }
        }
        self.output_changed();
        for h in &self.hosts {
            if let Some(Executor::Ssh(ssh)) = &h.host.executor {
                ssh.close().await;
            }
        }
        Summary {
            done: self.output.done(),
            failed: self.output.failed(),
            interrupted_by: match self.halt {
                Some(Halt::Signal(sig)) => Some(sig),
                _ => None,
            },
            fatal: self.fatal,
            broken_pipe: self.broken_pipe,
        }
    }

    /// The writer reported a failed write: stop the run as SIGTERM would (SPEC §5). A broken
    /// pipe is quiet; any other failure is said at once. The other output goes on getting
    /// the remaining lines (stdout the aborted ones when the joblog failed, and the reverse).
    fn output_changed(&mut self) {
        while let Some(failure) = self.output.new_failure() {
            match failure {
                OutputFailure::BrokenPipe => self.broken_pipe = true,
                OutputFailure::Failed(why) => {
                    self.output
                        .logger()
                        .warn(&format!("bakapara: error: {why}; stopping the run"));
                    self.fatal.get_or_insert(why);
                }
            }
            if !matches!(self.halt, Some(Halt::Signal(_))) {
                self.halt = Some(Halt::Output);
            }
            if *self.stop_tx.borrow() == Stop::Run {
                self.stop_tx.send_replace(Stop::Term);
            }
            self.abandon_input();
        }
    }

    /// Starts queued and incoming jobs while slots are free.
    fn dispatch(&mut self) {
        // A writer that fell behind: no new job until it catches up (back-pressure).
        if self.halt.is_some() || self.output.backlogged() {
            return;
        }
        let mut i = 0;
        while i < self.queue.len() && !self.free.is_empty() {
            let wanted = wanted_hosts(&self.queue[i]);
            let avoid = self.queue[i].last_host;
            match self.take_slot(wanted.as_deref(), avoid) {
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
        self.reader.taken(&job);
        self.received += 1;
        if let Body::Invalid(why) = &job.body {
            let why = why.clone();
            return self.settle(job, Status::Error, why);
        }
        if self.halt.is_some() {
            return self.settle_halted(job);
        }
        if let Some(wanted) = wanted_hosts(&job) {
            let fits = |h: &HostState| wanted.iter().any(|w| h.host.spec.matches(w));
            if !self.hosts.iter().any(|h| h.usable() && fits(h)) {
                let names: Vec<&str> = self
                    .hosts
                    .iter()
                    .filter(|h| h.usable())
                    .map(|h| h.host.spec.name.as_str())
                    .collect();
                let left_out: Vec<&str> = self
                    .hosts
                    .iter()
                    .filter(|h| !h.usable() && fits(h))
                    .map(|h| h.host.spec.name.as_str())
                    .collect();
                let mut why = format!(
                    "no configured host may run this job: it asks for {} but the hosts are {}",
                    wanted.join(", "),
                    names.join(", ")
                );
                if !left_out.is_empty() {
                    why.push_str(&format!(
                        " ({} could not be reached at start)",
                        left_out.join(", ")
                    ));
                }
                return self.settle(job, Status::Error, why);
            }
        }
        if !self.resume.is_empty() && self.copy_earlier_result(&job) {
            return;
        }
        match self.take_slot(wanted_hosts(&job).as_deref(), None) {
            Some(slot) => self.start(job, slot),
            None => self.queue.push_back(job),
        }
    }

    /// `--resume`: when an earlier run has an ok result for this job's cmd (and cd), copies
    /// that line through instead of running the job.
    fn copy_earlier_result(&mut self, job: &Job) -> bool {
        let key = match &job.body {
            Body::Ready(spec) => (spec.cmd.clone(), spec.cd.clone()),
            Body::Pending(_) => {
                // Expanded as for the first slot: a template using <%> may not match.
                let mut probe = job.clone();
                self.templates.materialize(&mut probe, 1);
                match probe.body {
                    Body::Ready(spec) => (spec.cmd, spec.cd),
                    _ => return false,
                }
            }
            Body::Invalid(_) => return false,
        };
        let Some(lines) = self.resume.get_mut(&key) else {
            return false;
        };
        let Some(line) = lines.pop_front() else {
            return false;
        };
        if lines.is_empty() {
            self.resume.remove(&key);
        }
        self.output.emit_copied(job.seq, line, &key.0);
        true
    }

    /// The lowest free slot on an up host the job may run on (`wanted`: `None` for any);
    /// takes it from the free set.
    /// A retry passes the host it failed on as `avoid`: another host is taken when one has a
    /// free slot.
    fn take_slot(&mut self, wanted: Option<&[String]>, avoid: Option<usize>) -> Option<usize> {
        let all_up = self.hosts.iter().all(|h| h.down.is_none());
        if wanted.is_none() && all_up && (avoid.is_none() || self.hosts.len() == 1) {
            return self.free.pop().map(|Reverse(s)| s);
        }
        let fits = |s: usize| {
            let host = &self.hosts[self.slots[s].host];
            host.down.is_none()
                && wanted.is_none_or(|w| w.iter().any(|w| host.host.spec.matches(w)))
        };
        let mut free: Vec<usize> = self.free.iter().map(|Reverse(s)| *s).collect();
        free.sort_unstable();
        let elsewhere = free
            .iter()
            .copied()
            .find(|&s| fits(s) && Some(self.slots[s].host) != avoid);
        let slot = elsewhere.or_else(|| free.into_iter().find(|&s| fits(s)))?;
        self.free.retain(|Reverse(s)| *s != slot);
        Some(slot)
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
        let Slot { host, lane } = self.slots[slot];
        let host = Arc::clone(&self.hosts[host].host);
        self.output
            .logger()
            .started(job.seq, &host.spec.name, &spec.cmd);
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
            let outcome = match &host.executor {
                Some(executor) => executor.run(lane, &command, &limits, stop).await,
                None => Outcome::not_run(Ending::CouldNotRun(
                    "internal error: the host was left out".into(),
                )),
            };
            Done { slot, job, outcome }
        });
    }

    /// A job run ended: free its slot and write its result, or put it back in the queue when
    /// its host was lost (that is no failure of the job's own).
    fn finish(&mut self, done: Done) {
        let Done {
            slot,
            mut job,
            mut outcome,
        } = done;
        self.free.push(Reverse(slot));
        let host = self.slots[slot].host;
        if let Ending::HostLost { why, generation } = &outcome.ending {
            self.host_down(host, *generation, why.clone());
            job.host_losses += 1;
            if self.halt.is_none() {
                self.queue.push_front(job);
                return;
            }
            outcome.ending = Ending::Aborted {
                code: None,
                signal: None,
            };
        }
        let stopped_by_us = matches!(outcome.ending, Ending::Aborted { .. });
        let timed_out = matches!(outcome.ending, Ending::TimedOut { .. });
        let place = Placement {
            host: self.hosts[host].host.spec.name.clone(),
            engine_id: slot,
        };
        let msg_id = self.msg_id(&job);
        let mut result = JobResult::from_outcome(&job, &place, outcome, msg_id);
        if stopped_by_us {
            result.error = Some(format!("stopped before it ended: {}", self.halt_reason()));
        }
        if timed_out {
            let limit = match &job.body {
                Body::Ready(spec) => spec.timeout.or(self.settings.timeout),
                _ => self.settings.timeout,
            };
            if let Some(limit) = limit {
                result.error = Some(format!("timed out after {} s", limit.as_secs_f64()));
            }
        }
        if result.failed()
            && !stopped_by_us
            && self.halt.is_none()
            && self.retry(&mut job, host, &result)
        {
            self.queue.push_back(job);
            return;
        }
        self.output.emit(&job, &result);
        self.check_halt_policy();
    }

    /// Puts a failed job back in the queue when it has retries left (host losses do not
    /// count); it then prefers another host.
    fn retry(&mut self, job: &mut Job, host: usize, result: &JobResult) -> bool {
        let allowed = match &job.body {
            Body::Ready(spec) => spec.retries.unwrap_or(self.settings.retries),
            _ => self.settings.retries,
        };
        let failed_runs = job.attempts.saturating_sub(job.host_losses);
        if failed_runs > allowed {
            return false;
        }
        let what = match (result.code, &result.signal, &result.error) {
            (_, _, Some(error)) => error.clone(),
            (Some(code), _, None) => format!("returned {code}"),
            (None, Some(sig), None) => format!("killed by {sig}"),
            (None, None, None) => "failed".to_string(),
        };
        let name = &self.hosts[host].host.spec.name;
        self.output.logger().warn(&format!(
            "bakapara: job {} failed on {name} ({what}); retry {failed_runs} of {allowed}",
            job.seq
        ));
        job.last_host = Some(host);
        true
    }

    /// `--halt`: stops the run when the policy's threshold is reached.
    fn check_halt_policy(&mut self) {
        let Some(policy) = self.halt_policy else {
            return;
        };
        if self.halt.is_some() {
            return;
        }
        let failed = self.output.failed();
        let succeeded = self.output.done() - failed;
        if !policy.reached(failed, succeeded, self.received) {
            return;
        }
        self.halt = Some(Halt::Policy(policy));
        self.output.logger().warn(&format!(
            "bakapara: --halt {policy} reached: starting no new jobs"
        ));
        if policy.when == When::Now {
            self.stop_tx.send_replace(Stop::Term);
        }
        self.abandon_input();
    }

    fn halt_reason(&self) -> String {
        match self.halt {
            Some(Halt::Signal(sig)) => format!("bakapara was stopped by {}", sig.as_str()),
            Some(Halt::Hangup) => "bakapara got SIGHUP".to_string(),
            Some(Halt::Policy(policy)) => format!("--halt {policy} was reached"),
            Some(Halt::Output) if self.broken_pipe => "the reader of stdout went away".to_string(),
            Some(Halt::Output) => "the output could not be written".to_string(),
            None => "bakapara stopped it".to_string(),
        }
    }

    /// A host's connections of `generation` were lost: stop using it, and reconnect with
    /// back-off until it is back.
    fn host_down(&mut self, host: usize, generation: u64, why: String) {
        let state = &mut self.hosts[host];
        let Some(Executor::Ssh(ssh)) = &state.host.executor else {
            return;
        };
        if ssh.generation_if_up() != Some(generation) {
            return; // Already known, or a newer connection is up.
        }
        ssh.mark_down(generation);
        let name = state.host.spec.name.clone();
        state.down = Some((Instant::now(), why.clone()));
        self.output.logger().warn(&format!(
            "bakapara: host {name} is down: {why}; reconnecting"
        ));
        let ssh = Arc::clone(ssh);
        let up = self.up_tx.clone();
        tokio::spawn(async move {
            let mut pause = Duration::from_millis(250);
            loop {
                tokio::time::sleep(pause).await;
                if ssh.reconnect().await.is_ok() {
                    let _ = up.send(host);
                    return;
                }
                if up.is_closed() {
                    return;
                }
                pause = (pause * 2).min(Duration::from_secs(10));
            }
        });
    }

    fn host_up(&mut self, host: usize) {
        let state = &mut self.hosts[host];
        if state.down.take().is_some() {
            let name = &state.host.spec.name;
            self.output
                .logger()
                .warn(&format!("bakapara: host {name} is back"));
        }
    }

    /// True when jobs wait and some host is down (the host timeout may have to fail them).
    fn waiting_on_down_hosts(&self) -> bool {
        !self.queue.is_empty() && self.hosts.iter().any(|h| h.down.is_some())
    }

    /// Fails the queued jobs whose every allowed host has been down past `--host-timeout`.
    fn fail_jobs_of_dead_hosts(&mut self) {
        let limit = self.settings.host_timeout;
        let dead = |h: &HostState| {
            !h.usable()
                || h.down
                    .as_ref()
                    .is_some_and(|(since, _)| since.elapsed() >= limit)
        };
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for job in std::mem::take(&mut self.queue) {
            let wanted = wanted_hosts(&job);
            let allowed = |h: &HostState| {
                wanted
                    .as_ref()
                    .is_none_or(|w| w.iter().any(|w| h.host.spec.matches(w)))
            };
            if self.hosts.iter().filter(|h| allowed(h)).all(dead) {
                let reasons: Vec<String> = self
                    .hosts
                    .iter()
                    .filter(|h| allowed(h) && h.usable())
                    .filter_map(|h| {
                        h.down
                            .as_ref()
                            .map(|(_, why)| format!("{}: {why}", h.host.spec.name))
                    })
                    .collect();
                let why = format!(
                    "every host this job may run on stayed down for more than {} s ({})",
                    limit.as_secs_f64(),
                    reasons.join("; ")
                );
                self.settle(job, Status::Error, why);
            } else {
                kept.push_back(job);
            }
        }
        self.queue = kept;
    }

    /// Writes the result of a job that never ran.
    fn settle(&mut self, job: Job, status: Status, why: String) {
        let msg_id = self.msg_id(&job);
        let result = JobResult::not_started(&job, status, why, msg_id);
        self.output.emit(&job, &result);
    }

    fn settle_halted(&mut self, job: Job) {
        let why = format!("not started: {}", self.halt_reason());
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

    fn on_signal(&mut self, event: Event) {
        match event {
            Event::Interrupt(sig) => {
                self.halt = Some(Halt::Signal(sig));
                self.stop_tx.send_replace(Stop::Term);
                self.abandon_input();
            }
            Event::KillNow(sig) => {
                self.halt = Some(Halt::Signal(sig));
                self.stop_tx.send_replace(Stop::Kill);
                self.abandon_input();
            }
            Event::Hangup => {
                if self.halt.is_none() {
                    self.halt = Some(Halt::Hangup);
                }
                self.abandon_input();
            }
        }
    }

    /// Gives every job that was read but not started its `aborted` line, and reads no more.
    fn abandon_input(&mut self) {
        for job in std::mem::take(&mut self.queue) {
            self.settle_halted(job);
        }
        if !self.input_open {
            return;
        }
        self.reader.stop.store(true, Ordering::SeqCst);
        self.reader.wake();
        loop {
            match self.rx.try_recv() {
                Ok(job) => {
                    self.reader.taken(&job);
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
                    // The reader may be between reading a line and sending its job: that
                    // takes it microseconds, on its own thread.
                    if self.reader.in_flight.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
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
            // A list with something else than names (or an empty one) is rejected when the job
            // is expanded, naming the key; until then it restricts nothing.
            Some(Value::Array(list)) if !list.is_empty() => {
                list.iter().map(|v| v.as_str().map(String::from)).collect()
            }
            _ => None,
        },
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
