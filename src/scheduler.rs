//! The scheduler: hands jobs to free slots, collects outcomes, and stops the run on a signal.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use nix::sys::signal::Signal;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::exec::{Command, Ending, Executor, HostEvent, Limits, Outcome, Stop, Task};
use crate::halt::{HaltPolicy, What, When};
use crate::hosts::HostSpec;
use crate::input::{ReaderState, Templates};
use crate::job::{Body, Job, JobResult, Placement, Status, STOPPED_BY_BAKAPARA};
use crate::jobserver::{Jobserver, Tokens};
use crate::output::{Output, OutputFailure};
use crate::progress::{RunningGuard, RunningJobs};
use crate::signals::{Controls, Event};
use crate::throttle::Throttle;

/// A host jobs can run on.
#[derive(Debug)]
pub struct Host {
    /// The entry as given in `-S` (its `name` is what results report).
    pub spec: HostSpec,
    /// How jobs run there; `None` while it connects (`joining`), or when it was left out.
    pub executor: Option<Arc<dyn Executor>>,
    pub slots: usize,
    /// Still connecting in the background: it joins the run ([`HostEvent::Joined`]), or is
    /// left out ([`HostEvent::LeftOut`]).
    pub joining: bool,
}

/// What the scheduler knows of a host while the run goes on.
#[derive(Debug)]
struct HostState {
    host: Arc<Host>,
    /// Down since when, and why; `None` while it is up. A host connecting in the background
    /// is down since the start of the run.
    down: Option<(Instant, String)>,
    /// Connecting in the background (see [`Host::joining`]).
    joining: bool,
    /// Reported unreachable (its first connection failed; it is tried again).
    reported: bool,
    /// Counts the host's running jobs, for the progress display.
    running: RunningJobs,
    /// How many lanes the host has (its slots, times 1 + the jobs queued per slot).
    lanes: usize,
}

impl HostState {
    /// Whether jobs may count on this host: up, lost for now, or still connecting.
    fn usable(&self) -> bool {
        self.host.executor.is_some() || self.joining
    }
}

/// One place a job can run: a lane on a host. A host whose executor keeps `depth` jobs queued
/// per slot ([`Executor::queued_per_slot`]) has `slots × (1 + depth)` lanes; lane `l` runs on
/// the host's slot `l % slots`, so a job waits there, already sent, while the one before it
/// runs.
#[derive(Debug, Clone, Copy)]
pub struct Slot {
    /// Index into the host list.
    pub host: usize,
    /// The slot's number on its host, from 0 (the executor's slot).
    pub lane: usize,
    /// The slot's number in the whole run (`engine_id`, `<%>` − 1): lanes of one host slot
    /// share it.
    pub engine: usize,
    /// A lane for a job sent ahead, to wait at the host behind the one running in its slot.
    pub queued: bool,
}

/// The lanes of host `host` with `slots` slots, whose engine numbers start at `first_engine`.
fn lanes(
    host: usize,
    slots: usize,
    depth: usize,
    first_engine: usize,
) -> impl Iterator<Item = Slot> {
    (0..slots * (1 + depth)).map(move |l| Slot {
        host,
        lane: l % slots,
        engine: first_engine + l % slots,
        queued: l >= slots,
    })
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
    /// A job whose host was lost under it this many times fails (`--host-loss-limit`).
    pub host_loss_limit: u32,
    /// `--delay`, `--memfree`, `--load`: when a job may start besides a free slot.
    pub throttle: Throttle,
}

/// How the run ended, for the exit status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub done: u64,
    pub failed: u64,
    /// Set when SIGINT or SIGTERM stopped the run: the process should die of it.
    pub interrupted_by: Option<Signal>,
    /// A fatal problem found during the run (input could not be read, stdout or the joblog
    /// could not be written).
    pub fatal: Option<String>,
    /// Set when a `--halt` condition stopped the run: the exit status it calls for (the
    /// triggering job's exit code, 1 where it had none; 0 for `success=` and `done=`).
    pub halt_status: Option<u8>,
    /// The reader of stdout went away (broken pipe): the run stopped; exit quietly with 141.
    pub broken_pipe: bool,
}

/// What the scheduler tells a library caller as the run goes on (results come from the
/// result lines, see `api`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEvent {
    /// A job (by input position) started on a host (its name as given).
    Started { seq: u64, host: String },
    /// A host's connection was lost (why); jobs wait for it or move to other hosts.
    HostDown { host: String, why: String },
    /// A host is back after [`RunEvent::HostDown`].
    HostUp { host: String },
}

impl Summary {
    /// The exit status a run that ended this way calls for (when no signal stopped it, see
    /// [`Summary::interrupted_by`]): 255 after a fatal problem, 141 when the reader of stdout
    /// went away, a `--halt` policy's status, else the number of failed jobs up to 101.
    #[must_use]
    pub fn exit_code(&self) -> u8 {
        if self.fatal.is_some() {
            return 255;
        }
        if self.broken_pipe {
            // As a filter killed by SIGPIPE is seen by its shell, without the noise of dying of it.
            return 141;
        }
        if let Some(status) = self.halt_status {
            return status;
        }
        u8::try_from(self.failed.min(101)).unwrap_or(101)
    }
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
    /// Slots of the run's hosts so far (engine numbers handed out).
    engines: usize,
    /// Per engine: its jobs (running, or queued on the host behind the running one), and while
    /// it has any, its count in the host's running jobs (a slot runs one job at a time).
    occupied: Vec<(usize, Option<RunningGuard>)>,
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
    /// The number of jobs, once known (all `:::`/file input, or input ended).
    total: Option<u64>,
    /// The exit status the latest failed job calls for under `--halt ...fail=`.
    last_failure_status: u8,
    /// Set once a `--halt` policy was reached; see [`Summary::halt_status`].
    halt_status: Option<u8>,
    stop_tx: watch::Sender<Stop>,
    halt: Option<Halt>,
    templates: Arc<Templates>,
    settings: RunSettings,
    output: Output,
    run_id: String,
    fatal: Option<String>,
    broken_pipe: bool,
    /// News of the hosts' connections (by index in the host list), from their executors and
    /// from the background connects: joined, left out, down, back.
    host_events: mpsc::UnboundedReceiver<(usize, HostEvent)>,
    /// The last start (time, slot) of each job waiting to run again after its host was lost.
    lost_runs: std::collections::HashMap<u64, (chrono::DateTime<chrono::Local>, usize)>,
    halt_policy: Option<HaltPolicy>,
    /// `--resume`: earlier ok result lines by (cmd, cd), each usable once.
    resume: Resume,
    /// make's jobserver tokens, under `make -jN` (see [`Scheduler::with_jobserver`]).
    tokens: Option<Tokens>,
    /// `--delay`, `--memfree`, `--load` (a copy of the settings' one, with its own state).
    throttle: Throttle,
    /// Job keys that look like misspelt known keys, reported once each.
    near_misses: crate::job::NearMisses,
    /// Where [`RunEvent`]s go, when someone listens.
    events: Option<mpsc::UnboundedSender<RunEvent>>,
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
        host_events: mpsc::UnboundedReceiver<(usize, HostEvent)>,
        halt_policy: Option<HaltPolicy>,
        resume: Resume,
    ) -> Scheduler {
        let mut slots = Vec::new();
        let mut host_list = Vec::new();
        let mut engines = 0;
        for (index, host) in hosts.into_iter().enumerate() {
            let mut host_lanes = 0;
            if let Some(executor) = &host.executor {
                let before = slots.len();
                slots.extend(lanes(
                    index,
                    host.slots,
                    executor.queued_per_slot(),
                    engines,
                ));
                host_lanes = slots.len() - before;
                engines += host.slots;
            }
            let joining = host.joining;
            let running = output.logger().running(&host.spec.name);
            host_list.push(HostState {
                host: Arc::new(host),
                down: joining.then(|| (Instant::now(), "still connecting".to_string())),
                joining,
                reported: false,
                running,
                lanes: host_lanes,
            });
        }
        let free = (0..slots.len()).map(Reverse).collect();
        let (stop_tx, _) = watch::channel(Stop::Run);
        Scheduler {
            hosts: host_list,
            slots,
            engines,
            occupied: Vec::new(),
            free,
            queue: VecDeque::new(),
            running: JoinSet::new(),
            rx,
            reader,
            reader_thread,
            input_open: true,
            received: 0,
            total: None,
            last_failure_status: 1,
            halt_status: None,
            stop_tx,
            halt: None,
            templates: Arc::new(templates),
            throttle: settings.throttle.clone(),
            settings,
            output,
            run_id: run_id(),
            fatal: None,
            broken_pipe: false,
            host_events,
            lost_runs: std::collections::HashMap::new(),
            halt_policy,
            resume,
            tokens: None,
            near_misses: crate::job::NearMisses::default(),
            events: None,
        }
    }

    /// Sends [`RunEvent`]s to `events` as the run goes on.
    #[must_use]
    pub fn with_events(mut self, events: Option<mpsc::UnboundedSender<RunEvent>>) -> Scheduler {
        self.events = events;
        self
    }

    fn tell(&self, event: impl FnOnce() -> RunEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event());
        }
    }

    /// Shares make's `-jN` (its jobserver): each job beyond the first running one waits, as
    /// queued, for a token of make's and holds it while it runs. The slots still cap the run.
    #[must_use]
    pub fn with_jobserver(mut self, jobserver: Option<&Jobserver>) -> Scheduler {
        if let Some(jobserver) = jobserver {
            match Tokens::new(jobserver) {
                Ok(tokens) => self.tokens = Some(tokens),
                Err(e) => self.output.logger().warn(&format!(
                    "bakapara: cannot use make's jobserver ({e}): running on -j slots alone"
                )),
            }
        }
        self
    }

    /// Runs every job to its result line.
    pub async fn run(mut self, known_total: Option<u64>, mut controls: Controls) -> Summary {
        // News from the first connections, so the count of engines includes them.
        while let Ok((host, news)) = self.host_events.try_recv() {
            self.host_event(host, news);
        }
        // Hosts still connecting count with the slots `-S` gives them; one whose slot count
        // it will ask for is named as still connecting.
        let connecting = self.hosts.iter().filter(|h| h.joining);
        let coming: usize = connecting.clone().filter_map(|h| h.host.spec.slots).sum();
        let unknown = connecting.filter(|h| h.host.spec.slots.is_none()).count();
        self.output
            .logger()
            .start(known_total, self.engines + coming, unknown);
        self.total = known_total;
        // Checks jobs waiting for lost hosts against --host-timeout; a steady tick, so that a
        // busy run (other events all the time) still gets to it.
        let mut host_check = tokio::time::interval(Duration::from_millis(500));
        host_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // Before anything starts: a result settled since the last turn may reach it.
            self.check_halt_policy();
            self.dispatch();
            self.balance_tokens();
            if self.running.is_empty()
                && self.queue.is_empty()
                && (!self.input_open || self.halt.is_some())
            {
                break;
            }
            // Before any host has connected, jobs are read into the queue anyway: they wait
            // there for a host, and fail when none comes within --host-timeout.
            let want_input = self.input_open
                && self.halt.is_none()
                && (!self.free.is_empty() || self.slots.is_empty())
                && self.queue.len() < LOOKAHEAD
                && !self.output.backlogged();
            let want_token = self.tokens.as_ref().is_some_and(Tokens::awaited);
            // Jobs held back by --delay, --memfree or --load: look again later.
            let throttled = (!self.throttle.is_off()
                && !self.queue.is_empty()
                && !self.free.is_empty()
                && self.halt.is_none())
            .then(|| self.throttle.wake_at());
            tokio::select! {
                () = tokio::time::sleep_until(throttled.unwrap_or_else(tokio::time::Instant::now)), if throttled.is_some() => {}
                token = arrival(&mut self.tokens), if want_token => self.token_arrived(token),
                Some(done) = self.running.join_next(), if !self.running.is_empty() => match done {
                    Ok(done) => self.finish(done),
                    Err(e) => self.output.logger().warn(&format!("bakapara: internal error: a job task failed: {e}")),
                },
                job = self.rx.recv(), if want_input => match job {
                    Some(job) => self.receive(job),
                    None => self.input_closed(),
                },
                event = controls.next() => self.on_signal(event),
                Some((host, news)) = self.host_events.recv() => self.host_event(host, news),
                _ = host_check.tick(), if self.waiting_on_down_hosts() => {
                    self.fail_jobs_of_dead_hosts();
                }
                () = self.output.changed() => self.output_changed(),
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
        // All at once: each SSH host's close waits for its agent to quit and its master to
        // exit (tens of ms), which adds up over hosts one after another.
        let mut closing = tokio::task::JoinSet::new();
        for h in &self.hosts {
            if let Some(executor) = &h.host.executor {
                let executor = Arc::clone(executor);
                closing.spawn(async move { executor.close().await });
            }
        }
        // A host that joined after the last job, its news not read, is closed too (left to
        // itself, its master outlived bakapara by `ControlPersist`); from here on, a host
        // that joins finds the channel closed and closes itself (see `run::join`).
        self.host_events.close();
        while let Ok((_, news)) = self.host_events.try_recv() {
            if let HostEvent::Joined { executor, .. } = news {
                closing.spawn(async move { executor.close().await });
            }
        }
        while closing.join_next().await.is_some() {}
        Summary {
            done: self.output.done(),
            failed: self.output.failed(),
            interrupted_by: match self.halt {
                Some(Halt::Signal(sig)) => Some(sig),
                _ => None,
            },
            fatal: self.fatal,
            halt_status: self.halt_status,
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
        while i < self.queue.len() && !self.free.is_empty() && self.may_start() {
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
        for warning in self.near_misses.check(&job.object) {
            self.output.logger().warn(&warning);
        }
        if let Body::Invalid(why) = &job.body {
            let why = why.clone();
            return self.settle(job, Status::Error, why);
        }
        if self.halt.is_some() {
            return self.settle_halted(job);
        }
        if let Some(why) = self.no_host_for(wanted_hosts(&job).as_deref()) {
            return self.settle(job, Status::Error, why);
        }
        if !self.resume.is_empty() && self.copy_earlier_result(&job) {
            return;
        }
        if !self.may_start() {
            return self.queue.push_back(job);
        }
        match self.take_slot(wanted_hosts(&job).as_deref(), None) {
            Some(slot) => self.start(job, slot),
            None => self.queue.push_back(job),
        }
    }

    /// Why no host of the run can ever run a job that asks for `wanted` (`None`: any host),
    /// or `None` when some host may.
    fn no_host_for(&self, wanted: Option<&[String]>) -> Option<String> {
        let fits = |h: &HostState| wanted.is_none_or(|w| w.iter().any(|w| h.host.spec.matches(w)));
        if self.hosts.iter().any(|h| h.usable() && fits(h)) {
            return None;
        }
        let left_out: Vec<String> = self
            .hosts
            .iter()
            .filter(|h| !h.usable() && fits(h))
            .map(|h| match &h.down {
                Some((_, why)) => format!("{} was left out: {why}", h.host.spec.name),
                None => format!("{} was left out", h.host.spec.name),
            })
            .collect();
        let Some(wanted) = wanted else {
            return Some(format!(
                "no host of the run can be used ({})",
                left_out.join("; ")
            ));
        };
        let names: Vec<&str> = self
            .hosts
            .iter()
            .filter(|h| h.usable())
            .map(|h| h.host.spec.name.as_str())
            .collect();
        let mut why = format!(
            "no configured host may run this job: it asks for {} but the hosts are {}",
            wanted.join(", "),
            names.join(", ")
        );
        if !left_out.is_empty() {
            why.push_str(&format!(" ({})", left_out.join("; ")));
        }
        Some(why)
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
        self.output
            .emit_copied(job.seq, with_seq(line, job.seq), &key.0);
        true
    }

    /// False while a job must wait for a token of make's jobserver, or for the throttle.
    fn may_start(&self) -> bool {
        self.tokens
            .as_ref()
            .is_none_or(|t| t.may_start(self.running.len()))
            && self.throttle.may_start()
    }

    /// Holds the jobserver tokens the running jobs and the queued ones that could start need.
    fn balance_tokens(&mut self) {
        let startable = if self.halt.is_some() {
            0
        } else {
            self.free.len().min(self.queue.len())
        };
        let running = self.running.len();
        if let Some(tokens) = &mut self.tokens {
            tokens.balance(running, startable);
        }
    }

    fn token_arrived(&mut self, token: Option<std::io::Result<jobserver::Acquired>>) {
        let Some(tokens) = &mut self.tokens else {
            return;
        };
        if let Some(why) = tokens.arrived(token) {
            self.output.logger().warn(&format!(
                "bakapara: make's jobserver failed ({why}): running on -j slots alone"
            ));
        }
    }

    /// A free slot on an up host the job may run on (`wanted`: `None` for any), taken from
    /// the free set: on the least loaded such host (fewest running jobs for its slot count, so
    /// the last jobs of a run spread over hosts), its lowest free slot there (a slot number
    /// stays a stable per-slot index for `<%>`).
    /// A retry passes the host it failed on as `avoid`: another host is taken when one has a
    /// free slot, or waited for while it is making its first connection.
    fn take_slot(&mut self, wanted: Option<&[String]>, avoid: Option<usize>) -> Option<usize> {
        if self.hosts.len() == 1 && wanted.is_none() && self.hosts[0].down.is_none() {
            return self.free.pop().map(|Reverse(s)| s);
        }
        let fits = |h: &HostState| wanted.is_none_or(|w| w.iter().any(|w| h.host.spec.matches(w)));
        let mut free_on = vec![0usize; self.hosts.len()];
        let mut lowest = vec![usize::MAX; self.hosts.len()];
        for Reverse(s) in &self.free {
            let h = self.slots[*s].host;
            free_on[h] += 1;
            lowest[h] = lowest[h].min(*s);
        }
        let busy = |h: usize| self.hosts[h].lanes.saturating_sub(free_on[h]);
        let open =
            |h: usize| free_on[h] > 0 && self.hosts[h].down.is_none() && fits(&self.hosts[h]);
        // A job is sent ahead to wait behind a running one only when no slot that fits is
        // idle and no host that fits is still making its first connection: a queued job
        // would otherwise wait for a slot while another one sits idle (or joins soon).
        let idle_elsewhere = (0..self.hosts.len())
            .any(|h| open(h) && !self.slots[lowest[h]].queued)
            || self
                .hosts
                .iter()
                .any(|h| h.joining && !h.reported && fits(h));
        let pick = |skip: Option<usize>| {
            (0..self.hosts.len())
                .filter(|&h| {
                    open(h) && Some(h) != skip && !(idle_elsewhere && self.slots[lowest[h]].queued)
                })
                .min_by(|&a, &b| {
                    let (slots_a, slots_b) = (self.hosts[a].lanes, self.hosts[b].lanes);
                    (busy(a) * slots_b)
                        .cmp(&(busy(b) * slots_a))
                        .then(lowest[a].cmp(&lowest[b]))
                })
        };
        let host = if let Some(h) = pick(avoid) {
            h
        } else {
            let connecting = self
                .hosts
                .iter()
                .enumerate()
                .any(|(i, h)| Some(i) != avoid && h.joining && !h.reported && fits(h));
            if avoid.is_some() && connecting {
                return None;
            }
            pick(None)?
        };
        let slot = lowest[host];
        self.free.retain(|Reverse(s)| *s != slot);
        Some(slot)
    }

    /// Runs a job on a slot (expanding its template for that slot first).
    fn start(&mut self, mut job: Job, slot: usize) {
        let engine = self.slots[slot].engine;
        self.templates.materialize(&mut job, engine + 1);
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
        self.throttle.started();
        let Slot { host, lane, .. } = self.slots[slot];
        let engine_index = self.slots[slot].engine;
        if self.occupied.len() <= engine_index {
            self.occupied.resize_with(engine_index + 1, || (0, None));
        }
        let occupied = &mut self.occupied[engine_index];
        occupied.0 += 1;
        if occupied.1.is_none() {
            occupied.1 = Some(self.hosts[host].running.enter());
        }
        let host = Arc::clone(&self.hosts[host].host);
        self.output
            .logger()
            .started(job.seq, &host.spec.name, &spec.cmd);
        self.tell(|| RunEvent::Started {
            seq: job.seq,
            host: host.spec.name.clone(),
        });
        let live_tag = self.output.live_tag(&job, engine);
        let stop = self.stop_tx.subscribe();
        let limits = Limits {
            capture_limit: self.settings.capture_limit,
            timeout: spec.timeout.or(self.settings.timeout),
            grace: self.settings.grace,
        };
        let stdin = job.stdin.clone();
        self.running.spawn(async move {
            let command = Command {
                stdin: stdin.as_ref(),
                cmd: &spec.cmd,
                cd: spec.cd.as_deref(),
                out: spec.out.as_deref(),
                err: spec.err.as_deref(),
                env: &spec.env,
                live_tag: live_tag.as_deref(),
                transfer: &spec.transfer,
                returns: &spec.returns,
            };
            let outcome = match &host.executor {
                Some(executor) => {
                    let task = Task {
                        lane,
                        job: &command,
                        limits: &limits,
                        stop,
                    };
                    executor.run(task).await
                }
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
        if let Some(occupied) = self.occupied.get_mut(self.slots[slot].engine) {
            occupied.0 = occupied.0.saturating_sub(1);
            if occupied.0 == 0 {
                occupied.1 = None;
            }
        }
        let host = self.slots[slot].host;
        if let Ending::HostLost(why) | Ending::GivenBack(why) = &outcome.ending {
            // The executor says so too (a HostEvent), but no job may start there meanwhile.
            let up = self.hosts[host]
                .host
                .executor
                .as_ref()
                .is_some_and(|e| e.is_up());
            if !up {
                self.host_down(host, why.clone());
            }
            if matches!(outcome.ending, Ending::HostLost(_)) {
                job.host_losses += 1;
            }
            if let Some((started, _)) = outcome.ran {
                self.lost_runs.insert(job.seq, (started, slot));
            }
            if job.host_losses >= self.settings.host_loss_limit && self.halt.is_none() {
                let why = format!(
                    "its host was lost under it {} times (--host-loss-limit {}); last: {why}",
                    job.host_losses, self.settings.host_loss_limit
                );
                return self.settle(job, Status::Error, why);
            }
            if self.halt.is_none() {
                self.queue.push_front(job);
                return;
            }
            outcome.ending = Ending::Aborted {
                code: None,
                signal: None,
            };
        }
        if outcome.ran.is_none() && matches!(outcome.ending, Ending::Aborted { .. }) {
            // Stopped while it waited, queued on its host: it never started.
            job.attempts = job.attempts.saturating_sub(1);
            return self.settle_halted(job);
        }
        if outcome.ran.is_some() {
            self.lost_runs.remove(&job.seq);
        }
        let stopped_by_us = matches!(outcome.ending, Ending::Aborted { .. });
        let timed_out = matches!(outcome.ending, Ending::TimedOut { .. });
        let place = Placement {
            host: self.hosts[host].host.spec.name.clone(),
            engine_id: self.slots[slot].engine,
        };
        let msg_id = self.msg_id(&job);
        let note = outcome.note.take();
        let mut result = JobResult::from_outcome(&job, &place, outcome, msg_id);
        if stopped_by_us {
            result.error = Some(format!("{STOPPED_BY_BAKAPARA}: {}", self.halt_reason()));
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
        if let Some(note) = note {
            result.error = Some(match result.error.take() {
                Some(error) => format!("{error}; {note}"),
                None => note,
            });
        }
        if result.failed()
            && !stopped_by_us
            && self.halt.is_none()
            && self.retry(&mut job, host, &result)
        {
            self.queue.push_back(job);
            return;
        }
        self.emit(&job, &result, stopped_by_us);
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
        if !policy.reached(failed, succeeded, self.total) {
            return;
        }
        self.halt = Some(Halt::Policy(policy));
        self.halt_status = Some(match policy.what {
            What::Fail => self.last_failure_status,
            What::Success | What::Done => 0,
        });
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

    /// News of a host's connection.
    fn host_event(&mut self, host: usize, news: HostEvent) {
        match news {
            HostEvent::Down(why) => self.host_down(host, why),
            HostEvent::Up => self.host_up(host),
            news => self.host_joining(host, news),
        }
    }

    /// A host's connection was lost: no job starts there until it is back (its executor
    /// reconnects with back-off).
    fn host_down(&mut self, host: usize, why: String) {
        let state = &mut self.hosts[host];
        if state.down.is_some() || state.host.executor.is_none() {
            return; // Already known.
        }
        let name = state.host.spec.name.clone();
        state.down = Some((Instant::now(), why.clone()));
        self.output.logger().warn(&format!(
            "bakapara: host {name} is down: {why}; reconnecting"
        ));
        self.tell(|| RunEvent::HostDown { host: name, why });
    }

    fn host_up(&mut self, host: usize) {
        let state = &mut self.hosts[host];
        if state.down.take().is_some() {
            let name = &state.host.spec.name;
            self.output
                .logger()
                .warn(&format!("bakapara: host {name} is back"));
            let host = name.clone();
            self.tell(|| RunEvent::HostUp { host });
        }
    }

    /// A host that was connecting in the background joined the run, failed for now, or was
    /// left out.
    fn host_joining(&mut self, host: usize, news: HostEvent) {
        let state = &mut self.hosts[host];
        let name = state.host.spec.name.clone();
        match news {
            HostEvent::Joined { executor, slots } => {
                if !state.joining {
                    return;
                }
                let depth = executor.queued_per_slot();
                let reported = state.reported;
                state.down = None;
                state.joining = false;
                state.host = Arc::new(Host {
                    spec: state.host.spec.clone(),
                    executor: Some(executor),
                    slots,
                    joining: false,
                });
                let first = self.slots.len();
                self.slots.extend(lanes(host, slots, depth, self.engines));
                self.engines += slots;
                state.lanes = self.slots.len() - first;
                self.free.extend((first..self.slots.len()).map(Reverse));
                if reported {
                    self.output
                        .logger()
                        .warn(&format!("bakapara: host {name} joined the run"));
                }
            }
            HostEvent::Unreachable(why) => {
                state.reported = true;
                self.output.logger().warn(&format!(
                    "bakapara: host {name} cannot be reached: {why}; trying again in the background"
                ));
                let since = state
                    .down
                    .as_ref()
                    .map_or_else(Instant::now, |(since, _)| *since);
                state.down = Some((
                    since,
                    format!("could not be reached since the start ({why})"),
                ));
            }
            HostEvent::LeftOut(why) => {
                self.output
                    .logger()
                    .warn(&format!("bakapara: leaving out host {name}: {why}"));
                state.joining = false;
                state.down = Some((Instant::now(), why));
                self.fail_jobs_no_host_can_run();
            }
            HostEvent::Down(_) | HostEvent::Up => {}
        }
    }

    /// Fails the queued jobs that no host of the run can ever run (their hosts were left out).
    fn fail_jobs_no_host_can_run(&mut self) {
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for job in std::mem::take(&mut self.queue) {
            match self.no_host_for(wanted_hosts(&job).as_deref()) {
                Some(why) => self.settle(job, Status::Error, why),
                None => kept.push_back(job),
            }
        }
        self.queue = kept;
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

    /// Writes a result line. A job that a `--halt` policy stopped (`halted`) is not counted
    /// as failed; any other failure is remembered as the one a `fail=` halt would exit with.
    fn emit(&mut self, job: &Job, result: &JobResult, halted: bool) {
        if halted && matches!(self.halt, Some(Halt::Policy(_))) {
            return self.output.emit_halted(job, result);
        }
        if result.failed() {
            self.last_failure_status = match (result.status, result.code) {
                (Status::Ok, Some(code)) => u8::try_from(code).ok().filter(|&c| c != 0),
                _ => None,
            }
            .unwrap_or(1);
        }
        self.output.emit(job, result);
    }

    /// Writes the result of a job that never ran.
    #[allow(clippy::needless_pass_by_value)] // callers hand their sentence over
    fn settle(&mut self, job: Job, status: Status, why: String) {
        let msg_id = self.msg_id(&job);
        let halted = status == Status::Aborted;
        let mut result = JobResult::not_started(&job, status, why, msg_id);
        // A job that lost its host and waited in vain to run again did start: say when, where.
        if let Some((started, slot)) = self.lost_runs.remove(&job.seq) {
            result.started = Some(crate::timefmt::rfc3339(&started));
            result.host = Some(self.hosts[self.slots[slot].host].host.spec.name.clone());
            result.engine_id = Some(self.slots[slot].engine);
        }
        self.emit(&job, &result, halted);
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
        self.total = Some(self.received);
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
        for job in self.reader.stop_and_drain(&mut self.rx) {
            self.received += 1;
            if let Body::Invalid(why) = &job.body {
                let why = why.clone();
                self.settle(job, Status::Error, why);
            } else {
                self.settle_halted(job);
            }
        }
        // The reader may be blocked reading a terminal or a pipe: leave it; nothing it reads
        // from now on is taken.
        self.input_open = false;
        self.reader_thread = None;
        self.total = Some(self.received);
        self.output.set_total(self.received);
    }

    fn msg_id(&self, job: &Job) -> String {
        format!("{}-{}-{}", self.run_id, job.seq, job.attempts)
    }
}

/// The next jobserver token (see [`Tokens::arrival`]); a free function, so that `select!`
/// borrows only this field of the scheduler.
async fn arrival(tokens: &mut Option<Tokens>) -> Option<std::io::Result<jobserver::Acquired>> {
    match tokens {
        Some(tokens) => tokens.arrival().await,
        None => std::future::pending().await,
    }
}

/// An earlier result line (newline-terminated) with `result.seq` set to `seq`, this run's
/// position of the job, so that the seqs of one output stay unique. A line whose seq is
/// already right is kept byte for byte; any other is rewritten with only that value changed
/// (keys keep their order, numbers their text).
fn with_seq(line: Vec<u8>, seq: u64) -> Vec<u8> {
    let Ok(Value::Object(mut object)) = serde_json::from_slice::<Value>(&line) else {
        return line;
    };
    let Some(Value::Object(result)) = object.get_mut("result") else {
        return line;
    };
    if result.get("seq").and_then(Value::as_u64) == Some(seq) {
        return line;
    }
    result.insert("seq".to_string(), Value::from(seq));
    match serde_json::to_vec(&object) {
        Ok(mut rewritten) => {
            rewritten.push(b'\n');
            rewritten
        }
        Err(_) => line,
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
        .map_or(0, |d| d.as_secs() ^ u64::from(d.subsec_nanos()) << 32);
    let mixed = (nanos ^ (u64::from(std::process::id()) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{mixed:016x}")
}

#[cfg(test)]
#[path = "scheduler_tests.rs"]
mod tests;
