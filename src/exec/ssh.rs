//! The SSH executor: jobs on a remote host through multiplexed OpenSSH master connections.
//!
//! Each host gets enough master connections for its slots ([`JOBS_PER_MASTER`] job sessions
//! each, under sshd's stock `MaxSessions 10`), opened one after another so a host never sees
//! more than one unauthenticated connection of ours (`MaxStartups`). Every master also holds a
//! keepalive session: when it ends, the connection is gone and the host is reported lost at
//! once. A job runs through a small bash wrapper (`wrapper.sh`) that gives it its own process
//! group and kills that group when bakapara asks, or when the channel closes.

// TEMP(i8): pedantic fixes after the agent merge
#![allow(clippy::pedantic)]

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Local};
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use tokio::io::{AsyncRead, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::capture::read_capped;
use super::control_dir::ControlDir;
use super::stopper::{Cause, Order, Stopper};
use super::{
    Captured, Command, Ending, Executor, HostEvent, HostEvents, Limits, Outcome, RunFuture, Stop,
    Task,
};
use crate::hosts::HostSpec;
use crate::template::shell_quote;
use crate::transfer::{Clock, Copier, CopyError, RemoteFiles, TransferStats};

/// Job sessions per master connection. Stock sshd allows 10 sessions a connection: one is the
/// keepalive, and the sessions of jobs that just ended take a moment to close, so some are
/// kept spare.
pub const JOBS_PER_MASTER: usize = 6;

const WRAPPER: &str = include_str!("wrapper.sh");

/// Settings shared by every SSH host of a run.
#[derive(Debug, Clone, Default)]
pub struct SshOptions {
    /// `--ssh-config FILE`.
    pub config_file: Option<PathBuf>,
    /// The directory remote jobs start in: bakapara's working directory, or `--workdir`
    /// (`None`: the login directory).
    pub workdir: Option<String>,
    /// `--env NAME` values, set for every remote job.
    pub env: Vec<(String, String)>,
    /// bakapara's `ConnectTimeout` where the user's ssh config sets none.
    pub connect_timeout: Duration,
    /// Where the master connections' control sockets and the generated ssh config live (the
    /// run's own directory, see [`generated_config`]).
    pub control_dir: Option<Arc<ControlDir>>,
    /// `--basefile`, `--cleanup`, `--workdir ...` (see [`crate::transfer`]).
    pub files: RemoteFiles,
    /// `--memfree` in bytes: the wrapper holds each job until the host has that much available.
    pub memfree: Option<u64>,
    /// `--load`: the wrapper holds each job while the host's 1-minute load average is not below.
    pub load: Option<f64>,
}

/// The generated ssh config's name in the control directory.
pub const CONFIG_NAME: &str = "ssh_config";

/// The ssh config every connection of the run uses: the user's configuration first, then
/// bakapara's defaults. ssh keeps the first value it reads for a setting, so the user's wins
/// and a default applies only where the user's configuration sets none.
pub fn generated_config(options: &SshOptions) -> String {
    let quote = |p: &std::path::Path| format!("\"{}\"", p.display());
    let mut text = String::from(
        "# Written by bakapara for one run: the user's configuration, then bakapara's defaults\n\
         # (ssh keeps the first value it reads for a setting).\n",
    );
    match &options.config_file {
        // `-F FILE` reads that file alone, so the system's file is not included then either.
        Some(file) => {
            let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
            text.push_str(&format!("Include {}\n", quote(&file)));
        }
        None => text.push_str("Include ~/.ssh/config\nInclude /etc/ssh/ssh_config\n"),
    }
    text.push_str(&format!(
        "Host *\n\
         \x20   StrictHostKeyChecking accept-new\n\
         \x20   ConnectTimeout {connect}\n\
         \x20   ServerAliveInterval 5\n\
         \x20   ControlPersist {persist}\n",
        connect = options.connect_timeout.as_secs().max(1),
        persist = DEFAULT_PERSIST_SECS,
    ));
    text
}

/// Whether a failure to connect will not go away by trying again: ssh refused the host's key
/// or the login, the name does not resolve, or the configuration is broken. Anything else (a
/// refused or timed-out connection, a host that is rebooting) is worth retrying.
pub fn lasting_failure(why: &str) -> bool {
    [
        "Host key verification failed",
        "REMOTE HOST IDENTIFICATION HAS CHANGED",
        "Permission denied (",
        "Could not resolve hostname",
        "Bad owner or permissions",
        "ssh cannot read its configuration",
        "cannot count its CPUs",
    ]
    .iter()
    .any(|sign| why.contains(sign))
}

/// How long a master with no session left stays (ssh's `ControlPersist`), where the user's
/// config sets nothing: a run always holds a keepalive session, so this counts only once
/// bakapara is gone without closing its masters (`kill -9`).
const DEFAULT_PERSIST_SECS: usize = 2;

/// The settings the `openssh` crate always passes on ssh's command line (where they would
/// beat any config file), as the run's effective ssh config has them for one host.
#[derive(Debug, Clone)]
struct Settings {
    known_hosts: KnownHosts,
    persist: ControlPersist,
}

impl Settings {
    /// Asks `ssh -G` what the config says for this host.
    async fn of(spec: &HostSpec, options: &SshOptions) -> Result<Settings, String> {
        if let Some(dir) = &options.control_dir {
            // The generated config lives there.
            dir.ensure()
                .map_err(|e| format!("cannot recreate {}: {e}", dir.path().display()))?;
        }
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.arg("-G");
        if let Some(file) = config_path(options) {
            cmd.arg("-F").arg(file);
        }
        if let Some(user) = &spec.user {
            cmd.arg("-l").arg(user);
        }
        if let Some(port) = spec.port {
            cmd.arg("-p").arg(port.to_string());
        }
        let out = cmd
            .arg("--")
            .arg(&spec.hostname)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("cannot run ssh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "ssh cannot read its configuration: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Settings::parse(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Reads `ssh -G` output. `ask` cannot be asked in batch mode, where ssh refuses an
    /// unknown key: that is `yes`.
    fn parse(text: &str) -> Settings {
        let mut settings = Settings {
            known_hosts: KnownHosts::Add,
            persist: ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(DEFAULT_PERSIST_SECS)
                    .unwrap_or(std::num::NonZeroUsize::MIN),
            ),
        };
        for line in text.lines() {
            let Some((key, value)) = line.split_once(' ') else {
                continue;
            };
            match (key, value.trim()) {
                ("stricthostkeychecking", "true" | "yes" | "ask") => {
                    settings.known_hosts = KnownHosts::Strict;
                }
                ("stricthostkeychecking", "false" | "no" | "off") => {
                    settings.known_hosts = KnownHosts::Accept;
                }
                ("stricthostkeychecking", _) => settings.known_hosts = KnownHosts::Add,
                ("controlpersist", "no" | "false") => {
                    settings.persist = ControlPersist::ClosedAfterInitialConnection;
                }
                ("controlpersist", "yes" | "true") => settings.persist = ControlPersist::Forever,
                ("controlpersist", secs) => {
                    if let Some(n) = secs.parse().ok().and_then(std::num::NonZeroUsize::new) {
                        settings.persist = ControlPersist::IdleFor(n);
                    }
                }
                _ => {}
            }
        }
        settings
    }
}

/// The config file ssh reads: the generated one when the run has a control directory.
fn config_path(options: &SshOptions) -> Option<PathBuf> {
    match &options.control_dir {
        Some(dir) => Some(dir.path().join(CONFIG_NAME)),
        None => options.config_file.clone(),
    }
}

/// A loss of the connections of one generation, from a keepalive or a job, to the host's own
/// reconnect loop (see [`SshHost::start`]).
type Loss = (u64, String);

/// One remote host and its master connections.
#[derive(Debug)]
pub struct SshHost {
    index: usize,
    spec: HostSpec,
    options: SshOptions,
    settings: Settings,
    slots: usize,
    state: Arc<Mutex<Connections>>,
    /// Marks the wrapper's report on stderr; random per run so no job can forge it.
    nonce: String,
    /// The scheduler's side: the host is down, or back.
    events: HostEvents,
    /// Losses, to the reconnect loop; its receiving end until [`SshHost::start`] takes it.
    loss_tx: mpsc::UnboundedSender<Loss>,
    loss_rx: Mutex<Option<mpsc::UnboundedReceiver<Loss>>>,
    /// `--text`: a job's streams are written to temp files (see [`Captured::spooled`]).
    spool: bool,
    /// The working directory made and the base files copied (`Some(Ok)`), or why that failed
    /// for good; `None` until the first job that needs them.
    prepared: tokio::sync::Mutex<Option<Result<(), String>>>,
}

#[derive(Debug, Default)]
struct Connections {
    generation: u64,
    masters: Vec<Arc<Session>>,
    /// The keepalive sessions' stdin: dropping them ends the keepalives.
    keepalives: Vec<openssh::ChildStdin>,
}

impl SshHost {
    /// Connects to a host: opens the first master, asks for the CPU count when `-S` gave no
    /// slot count, then opens the other masters. Fails with a sentence for the user.
    pub async fn connect(
        index: usize,
        spec: HostSpec,
        options: SshOptions,
        nonce: String,
        events: HostEvents,
    ) -> Result<SshHost, String> {
        let (loss_tx, loss_rx) = mpsc::unbounded_channel();
        let settings = Settings::of(&spec, &options)
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", spec.name))?;
        let first = open_master(&spec, &options, &settings).await?;
        let slots = match spec.slots {
            Some(n) => n,
            None => cpu_count(&first)
                .await
                .map_err(|e| format!("{}: cannot count its CPUs: {e}", spec.name))?,
        };
        let host = SshHost {
            index,
            spec,
            options,
            settings,
            slots,
            state: Arc::new(Mutex::new(Connections::default())),
            nonce,
            events,
            loss_tx,
            loss_rx: Mutex::new(Some(loss_rx)),
            spool: false,
            prepared: tokio::sync::Mutex::new(None),
        };
        host.install(first).await?;
        Ok(host)
    }

    /// `--text`: spool each job's uncaptured streams to temp files instead of capturing them.
    pub fn with_spool(mut self, spool: bool) -> SshHost {
        self.spool = spool;
        self
    }

    /// Makes the host an executor of the run: from now on it watches its own connections,
    /// and when they are lost it says so ([`HostEvent::Down`]), connects again with back-off
    /// (250 ms doubling to 10 s) and says when it is back ([`HostEvent::Up`]).
    pub fn start(self) -> Arc<SshHost> {
        let losses = self.loss_rx.lock().ok().and_then(|mut rx| rx.take());
        let host = Arc::new(self);
        if let Some(losses) = losses {
            tokio::spawn(reconnect_loop(Arc::downgrade(&host), losses));
        }
        host
    }

    pub fn spec(&self) -> &HostSpec {
        &self.spec
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Opens the masters this host needs (the first one given) and starts their keepalives.
    /// Each master gets its keepalive at once: a master with no session is idle, and an idle
    /// master goes away after `ControlPersist`.
    async fn install(&self, first: Session) -> Result<(), String> {
        let needed = self.slots.div_ceil(JOBS_PER_MASTER).max(1);
        let generation = {
            let state = self
                .state
                .lock()
                .map_err(|_| "internal error: poisoned lock".to_string())?;
            state.generation + 1
        };
        let mut masters = vec![Arc::new(first)];
        let mut keepalives = Vec::with_capacity(needed);
        keepalives.push(self.keepalive(Arc::clone(&masters[0]), generation).await?);
        while masters.len() < needed {
            let opened = open_master(&self.spec, &self.options, &self.settings).await;
            let master = match opened {
                Ok(master) => Arc::new(master),
                Err(e) => {
                    drop(keepalives);
                    close_masters(masters).await;
                    return Err(e);
                }
            };
            keepalives.push(self.keepalive(Arc::clone(&master), generation).await?);
            masters.push(master);
        }
        let mut state = self
            .state
            .lock()
            .map_err(|_| "internal error: poisoned lock".to_string())?;
        state.generation = generation;
        state.masters = masters;
        state.keepalives = keepalives;
        Ok(())
    }

    /// Starts a session that waits for EOF on its stdin; when it ends while bakapara still
    /// holds that stdin, the connection was lost.
    async fn keepalive(
        &self,
        master: Arc<Session>,
        generation: u64,
    ) -> Result<openssh::ChildStdin, String> {
        let mut child = Session::to_raw_command(master, "exec bash --norc -c 'read -r _'")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .await
            .map_err(|e| format!("{}: cannot start a session: {e}", self.spec.name))?;
        let stdin = child
            .stdin()
            .take()
            .ok_or_else(|| format!("{}: the keepalive session has no stdin", self.spec.name))?;
        let losses = self.loss_tx.clone();
        let state = Arc::clone(&self.state);
        tokio::spawn(async move {
            let why = match child.wait().await {
                Ok(_) => "the connection closed".to_string(),
                Err(e) => format!("the connection was lost ({e})"),
            };
            if mark_lost(&state, generation) {
                let _ = losses.send((generation, why));
            }
        });
        Ok(stdin)
    }

    /// Whether the host's connections are up.
    fn connected(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|state| !state.masters.is_empty())
    }

    /// Closes the connections at the end of a run: the masters exit at once, ending their
    /// sessions on the host (nothing of the run stays there for `ControlPersist`).
    pub async fn close(&self) {
        self.clean_up_run().await;
        let masters = match self.state.lock() {
            Ok(mut state) => {
                state.keepalives.clear();
                std::mem::take(&mut state.masters)
            }
            Err(_) => return,
        };
        close_masters(masters).await;
    }

    /// Opens new connections after a loss.
    async fn reconnect(&self) -> Result<(), String> {
        let first = open_master(&self.spec, &self.options, &self.settings).await?;
        self.install(first).await
    }

    fn master_for(&self, lane: usize) -> Option<(Arc<Session>, u64)> {
        let state = self.state.lock().ok()?;
        let master = state
            .masters
            .get(lane / JOBS_PER_MASTER)
            .or_else(|| state.masters.first())?;
        Some((Arc::clone(master), state.generation))
    }

    /// Runs one job in slot `lane` of this host: its files copied there first and back after
    /// it (see [`crate::transfer`]).
    async fn run_with_files(
        &self,
        lane: usize,
        job: &Command<'_>,
        limits: &Limits,
        stop: watch::Receiver<Stop>,
    ) -> Outcome {
        let files = &self.options.files;
        let copies = !job.transfer.is_empty() || !job.returns.is_empty();
        let prepare = files.create_workdir || !files.basefiles.is_empty();
        let Some((master, generation)) = self.master_for(lane).filter(|_| copies || prepare) else {
            return self.run_job(lane, job, limits, stop).await;
        };
        let copier = self.copier(&master);
        let mut watch = stop.clone();
        let failed = |e: CopyError, stats: Option<TransferStats>| {
            let mut outcome = Outcome::not_run(self.copy_failure(e, generation));
            outcome.transfer = stats;
            outcome
        };
        if prepare {
            if let Err(e) = unless_stopped(&mut watch, self.prepare(&copier)).await {
                return failed(e, None);
            }
        }
        let mut stats = TransferStats::default();
        let clock = Clock::start();
        let sent = send_files(&copier, job.transfer, &mut stats, &mut watch).await;
        clock.add_to(&mut stats);
        if let Err(e) = sent {
            if files.cleanup && !matches!(e, CopyError::Lost(_)) {
                let sent: Vec<&str> = job.transfer.iter().map(String::as_str).collect();
                copier.remove(&sent, false).await;
            }
            return failed(e, copies.then_some(stats));
        }
        let mut outcome = self.run_job(lane, job, limits, stop).await;
        if matches!(outcome.ending, Ending::HostLost(_)) {
            outcome.transfer = copies.then_some(stats);
            return outcome;
        }
        let clock = Clock::start();
        if outcome.ran.is_some() {
            let fetched = self
                .return_files(&copier, job.returns, &mut stats, &mut outcome, &mut watch)
                .await;
            if let Err(why) = fetched {
                outcome.ending = self.copy_failure(CopyError::Lost(why), generation);
                clock.add_to(&mut stats);
                outcome.transfer = Some(stats);
                return outcome;
            }
        }
        if files.cleanup && copies {
            let paths: Vec<&str> = job
                .transfer
                .iter()
                .chain(job.returns)
                .map(String::as_str)
                .collect();
            copier.remove(&paths, false).await;
        }
        clock.add_to(&mut stats);
        outcome.transfer = copies.then_some(stats);
        outcome
    }

    /// Copies a job's files back after it ran; a file that does not come back is noted in
    /// the outcome. Fails (why) only when the connection is lost.
    async fn return_files(
        &self,
        copier: &Copier<'_>,
        paths: &[String],
        stats: &mut TransferStats,
        outcome: &mut Outcome,
        stop: &mut watch::Receiver<Stop>,
    ) -> Result<(), String> {
        for path in paths {
            match unless_stopped(stop, copier.fetch(path)).await {
                Ok(bytes) => {
                    stats.returned += 1;
                    stats.returned_bytes += bytes;
                }
                Err(CopyError::Lost(why)) => return Err(why),
                Err(CopyError::Failed(why)) => note_return_failure(outcome, why),
                Err(CopyError::Stopped) => note_return_failure(
                    outcome,
                    format!(
                        "the run stopped before {path} came back from {}",
                        self.spec.name
                    ),
                ),
            }
        }
        Ok(())
    }

    fn copier<'a>(&'a self, master: &'a Arc<Session>) -> Copier<'a> {
        Copier {
            master,
            host: &self.spec.name,
            workdir: self.options.workdir.as_deref(),
        }
    }

    /// Once per host, before its first job: the working directory made, the base files
    /// copied. A failure that is no lost connection stays: every job there gets it.
    async fn prepare(&self, copier: &Copier<'_>) -> Result<(), CopyError> {
        let mut prepared = self.prepared.lock().await;
        if let Some(done) = &*prepared {
            return done.clone().map_err(CopyError::Failed);
        }
        let result = async {
            if self.options.files.create_workdir {
                copier.make_workdir().await?;
            }
            for file in &self.options.files.basefiles {
                copier.send(file).await?;
            }
            Ok(())
        }
        .await;
        match &result {
            Ok(()) => *prepared = Some(Ok(())),
            Err(CopyError::Failed(why)) => *prepared = Some(Err(why.clone())),
            Err(CopyError::Lost(_) | CopyError::Stopped) => {}
        }
        result
    }

    /// The ending of a job whose files could not be copied.
    fn copy_failure(&self, e: CopyError, generation: u64) -> Ending {
        match e {
            CopyError::Failed(why) => Ending::CouldNotRun(why),
            CopyError::Stopped => Ending::Aborted {
                code: None,
                signal: None,
            },
            CopyError::Lost(why) => {
                if mark_lost(&self.state, generation) {
                    let _ = self.loss_tx.send((generation, why.clone()));
                }
                Ending::HostLost(why)
            }
        }
    }

    /// `--cleanup` at the end of the run: the base files and a `--workdir ...` directory go.
    async fn clean_up_run(&self) {
        let files = &self.options.files;
        if !files.cleanup || (files.basefiles.is_empty() && !files.fresh_workdir) {
            return;
        }
        if !matches!(&*self.prepared.lock().await, Some(Ok(()))) {
            return;
        }
        let Some((master, _)) = self.master_for(0) else {
            return;
        };
        let copier = self.copier(&master);
        if files.fresh_workdir {
            copier.remove_workdir().await;
        } else {
            let bases: Vec<&str> = files.basefiles.iter().map(String::as_str).collect();
            copier.remove(&bases, false).await;
        }
    }

    /// Runs one job in slot `lane` of this host.
    async fn run_job(
        &self,
        lane: usize,
        job: &Command<'_>,
        limits: &Limits,
        stop: watch::Receiver<Stop>,
    ) -> Outcome {
        let Some((master, generation)) = self.master_for(lane) else {
            return Outcome::not_run(Ending::HostLost(format!("{} is down", self.spec.name)));
        };
        let remote = self.remote_command(job, limits);
        let spool = |wanted: bool| -> Result<Option<std::fs::File>, Ending> {
            if !(wanted && self.spool) {
                return Ok(None);
            }
            tempfile::tempfile().map(Some).map_err(|e| {
                Ending::CouldNotRun(format!(
                    "cannot create a temp file for the job's output: {e}"
                ))
            })
        };
        let (out_spool, err_spool) = match (spool(job.out.is_none()), spool(job.err.is_none())) {
            (Ok(out), Ok(err)) => (out, err),
            (Err(e), _) | (_, Err(e)) => return Outcome::not_run(e),
        };
        // sshd may refuse a session for a moment ("no more sessions") while the sessions of
        // jobs that just ended are still closing: try again a few times before calling it a
        // failure.
        let mut pause = Duration::from_millis(10);
        let mut child = loop {
            let spawned = Session::to_raw_command(Arc::clone(&master), remote.as_str())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .await;
            match spawned {
                Ok(child) => break child,
                Err(openssh::Error::SshMux(_)) if pause < Duration::from_secs(1) => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                Err(e) => {
                    return Outcome::not_run(self.transport_failure(&master, generation, &e).await)
                }
            }
        };
        let started = Local::now();
        let mut stdin = child.stdin().take();
        let stdout = child.stdout().take();
        let stderr = child.stderr().take();
        let limit = limits.capture_limit;
        // The wrapper on the host sends KILL after the grace period itself.
        let mut stopper = Stopper::new(stop, limits, false, Duration::ZERO);
        let order_line = |order: Order| -> &'static [u8] {
            match order {
                Order::Term => b"T\n",
                Order::Kill => b"K\n",
            }
        };
        // The wrapper keeps the channel open after its report until it hears back: OpenSSH's
        // multiplexing master may drop stderr that arrives together with the channel's close,
        // so bakapara acknowledges the report (the end of stderr) before the channel closes.
        // The same holds for stdout (openssh-rust/openssh#103): the wrapper ends it with an end
        // line, and the acknowledgement waits for that too.
        let marker = report_marker(&self.nonce);
        let (report_tx, report_rx) = tokio::sync::oneshot::channel::<DateTime<Local>>();
        let (end_tx, end_rx) = tokio::sync::oneshot::channel::<DateTime<Local>>();
        // When the report came: the job's end. The channel may close much later (the
        // acknowledgement has to reach the host first), and that wait is no part of the job.
        let mut reported_at = None;
        let supervise = async {
            // --pipe: the block goes first, before any control line (see wrapper.sh). A stop
            // while it goes closes the channel's stdin: the wrapper, short of bytes, stops.
            let block = job.stdin.filter(|b| !b.is_empty());
            if let (Some(block), Some(pipe)) = (block, stdin.as_mut()) {
                let fed = {
                    let feeding = crate::pipe::feed_writer(pipe, block);
                    tokio::pin!(feeding);
                    loop {
                        tokio::select! {
                            fed = &mut feeding => break fed.is_ok(),
                            order = stopper.next(|| Duration::ZERO) => if order.is_some() { break false },
                        }
                    }
                };
                if !fed {
                    stdin = None;
                }
            }
            let wait = child.wait();
            tokio::pin!(wait);
            tokio::pin!(report_rx);
            tokio::pin!(end_rx);
            let (mut report_done, mut stdout_ended, mut acknowledged) = (false, false, false);
            loop {
                if let Some(order) = stopper.ordered() {
                    send_line(&mut stdin, order_line(order)).await;
                }
                if !acknowledged && stdout_ended && reported_at.is_some() {
                    acknowledged = true;
                    send_line(&mut stdin, b"A\n").await;
                }
                tokio::select! {
                    status = &mut wait => break status,
                    seen = &mut report_rx, if !report_done => {
                        report_done = true;
                        reported_at = seen.ok();
                    }
                    // The end line, or stdout ended without one: nothing more to wait for.
                    _ = &mut end_rx, if !stdout_ended => stdout_ended = true,
                    order = stopper.next(|| Duration::ZERO) => {
                        if let Some(order) = order {
                            send_line(&mut stdin, order_line(order)).await;
                        }
                    }
                }
            }
        };
        let (status, stdout, stderr) = tokio::join!(
            supervise,
            async {
                match stdout {
                    Some(s) => {
                        let (captured, tail, total) =
                            read_stream(s, limit, out_spool, Some((&marker, end_tx))).await;
                        // The wrapper's end line goes (it cuts the capture where it starts).
                        Some(split_report(captured, &tail, total, &self.nonce).0)
                    }
                    None => None,
                }
            },
            async {
                match stderr {
                    Some(s) => {
                        Some(read_stream(s, limit, err_spool, Some((&marker, report_tx))).await)
                    }
                    None => None,
                }
            },
        );
        drop(stdin);
        let cause = stopper.cause();
        let completed = reported_at.unwrap_or_else(Local::now);
        let (stderr, report) = match stderr {
            Some((captured, tail, total)) => {
                let (captured, report) = split_report(captured, &tail, total, &self.nonce);
                (Some(captured), report)
            }
            None => (None, None),
        };
        let ending = match (report, status) {
            (Some(report), _) => report.ending(cause),
            (None, Ok(status)) => Ending::CouldNotRun(format!(
                "the job's wrapper on {} ended without a report (exit {:?}): is bash there?",
                self.spec.name,
                status.code()
            )),
            (None, Err(e)) => self.transport_failure(&master, generation, &e).await,
        };
        let (stdout, stderr) = match (&job.out, &job.err) {
            (Some(_), Some(_)) => (None, None),
            (Some(_), None) => (None, stderr),
            (None, Some(_)) => (stdout, None),
            (None, None) => (stdout, stderr),
        };
        Outcome {
            ran: Some((started, completed)),
            ending,
            stdout,
            stderr,
            note: None,
            transfer: None,
        }
    }

    /// Tells a lost connection (the job should run again) from a command that failed.
    async fn transport_failure(
        &self,
        master: &Session,
        generation: u64,
        e: &openssh::Error,
    ) -> Ending {
        match master.check().await {
            Err(_) => {
                if mark_lost(&self.state, generation) {
                    let _ = self
                        .loss_tx
                        .send((generation, format!("the connection was lost ({e})")));
                }
                Ending::HostLost(format!("lost the connection to {} ({e})", self.spec.name))
            }
            Ok(()) => Ending::CouldNotRun(format!(
                "cannot run the job on {}: {}",
                self.spec.name,
                error_chain(e)
            )),
        }
    }

    /// The command line the remote login shell runs: the wrapper and its arguments.
    fn remote_command(&self, job: &Command<'_>, limits: &Limits) -> String {
        let grace_ms = limits
            .grace
            .as_millis()
            .min(u128::from(u32::MAX))
            .to_string();
        let base = self.options.workdir.as_deref().unwrap_or("");
        let block_len = job.stdin.map_or(0, |b| b.len()).to_string();
        let memfree = self
            .options
            .memfree
            .map(|m| m.to_string())
            .unwrap_or_default();
        // The wrapper compares in hundredths (/proc/loadavg has two decimals): "below L" is
        // "below ceil(L × 100) hundredths". `as` saturates a huge limit.
        let load = self
            .options
            .load
            .map(|l| ((l * 100.0).ceil().max(0.0) as u64).to_string())
            .unwrap_or_default();
        let mut s = String::with_capacity(WRAPPER.len() + job.cmd.len() + 128);
        // --norc: the login shell has read ~/.bashrc already (Debian's bash reads it again for a
        // shell started over ssh, which costs every job its time once more).
        s.push_str("exec bash --norc -c ");
        s.push_str(&shell_quote(WRAPPER));
        s.push_str(" bakapara");
        for arg in [
            self.nonce.as_str(),
            grace_ms.as_str(),
            base,
            job.cd.unwrap_or(""),
            job.out.unwrap_or(""),
            job.err.unwrap_or(""),
            block_len.as_str(),
            memfree.as_str(),
            load.as_str(),
            job.cmd,
        ] {
            s.push(' ');
            s.push_str(&shell_quote(arg));
        }
        for (name, value) in self.options.env.iter().chain(job.env.iter()) {
            s.push(' ');
            s.push_str(&shell_quote(&format!("{name}={value}")));
        }
        s
    }
}

/// Copies a job's files to the host, one after another, until one fails or the run stops.
async fn send_files(
    copier: &Copier<'_>,
    paths: &[String],
    stats: &mut TransferStats,
    stop: &mut watch::Receiver<Stop>,
) -> Result<(), CopyError> {
    for path in paths {
        let bytes = unless_stopped(stop, copier.send(path)).await?;
        stats.sent += 1;
        stats.sent_bytes += bytes;
    }
    Ok(())
}

/// A copy, given up when the run stops (Ctrl-C, `--halt`): a big file need not hold it up.
async fn unless_stopped<T>(
    stop: &mut watch::Receiver<Stop>,
    copy: impl std::future::Future<Output = Result<T, CopyError>>,
) -> Result<T, CopyError> {
    tokio::select! {
        done = copy => done,
        Ok(_) = stop.wait_for(|s| *s != Stop::Run) => Err(CopyError::Stopped),
    }
}

/// A file the job should have left could not be returned: a job that exited 0 fails with
/// that error (its output is not here); a job that failed already keeps its code, and its
/// error says so too.
fn note_return_failure(outcome: &mut Outcome, why: String) {
    match &outcome.ending {
        Ending::Exited(0) => outcome.ending = Ending::CouldNotRun(why),
        Ending::CouldNotRun(first) => {
            outcome.ending = Ending::CouldNotRun(format!("{first}; {why}"));
        }
        _ => {
            outcome.note = Some(match outcome.note.take() {
                Some(note) => format!("{note}; {why}"),
                None => why,
            });
        }
    }
}

impl Executor for SshHost {
    fn run<'a>(&'a self, task: Task<'a>) -> RunFuture<'a> {
        Box::pin(self.run_with_files(task.lane, task.job, task.limits, task.stop))
    }

    fn is_up(&self) -> bool {
        self.connected()
    }

    fn close(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(SshHost::close(self))
    }
}

/// Drops the connections of `generation` when they are the current ones and still up: true
/// when this is the news of their loss (said once, whoever noticed it first).
fn mark_lost(state: &Mutex<Connections>, generation: u64) -> bool {
    let Ok(mut state) = state.lock() else {
        return false;
    };
    if state.generation != generation || state.masters.is_empty() {
        return false;
    }
    state.masters.clear();
    state.keepalives.clear();
    true
}

/// A host's life after a loss: it says it is down, connects again with back-off until it is
/// back (and says so), and waits for the next loss. Ends with the run (the scheduler gone) or
/// the host.
async fn reconnect_loop(host: Weak<SshHost>, mut losses: mpsc::UnboundedReceiver<Loss>) {
    while let Some((_generation, why)) = losses.recv().await {
        let Some(events) = host.upgrade().map(|h| (h.index, h.events.clone())) else {
            return;
        };
        let (index, events) = events;
        if events.send((index, HostEvent::Down(why))).is_err() {
            return;
        }
        let mut pause = Duration::from_millis(250);
        loop {
            tokio::time::sleep(pause).await;
            let Some(ssh) = host.upgrade() else {
                return;
            };
            if ssh.reconnect().await.is_ok() {
                let _ = events.send((index, HostEvent::Up));
                break;
            }
            if events.is_closed() {
                return;
            }
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }
}

async fn send_line(stdin: &mut Option<openssh::ChildStdin>, line: &[u8]) {
    if let Some(pipe) = stdin {
        if pipe.write_all(line).await.is_err() {
            *stdin = None;
            return;
        }
        let _ = pipe.flush().await;
    }
}

/// Opens one master connection. `ConnectTimeout`, `ServerAliveInterval` and the rest come
/// from the run's generated config; the crate's command-line options are given the values that
/// config has (see [`Settings`]).
async fn open_master(
    spec: &HostSpec,
    options: &SshOptions,
    settings: &Settings,
) -> Result<Session, String> {
    let mut builder = SessionBuilder::default();
    builder
        .known_hosts_check(settings.known_hosts.clone())
        .control_persist(settings.persist.clone());
    if let Some(dir) = &options.control_dir {
        dir.ensure().map_err(|e| {
            format!(
                "cannot connect to {}: cannot recreate the control directory {}: {e}",
                spec.name,
                dir.path().display()
            )
        })?;
        builder.control_directory(dir.path());
    }
    if let Some(file) = config_path(options) {
        builder.config_file(file);
    }
    if let Some(user) = &spec.user {
        builder.user(user.clone());
    }
    if let Some(port) = spec.port {
        builder.port(port);
    }
    // ssh takes an IPv6 address bare (`::1`, with `-p` for the port); `[::1]` would be looked
    // up as a name.
    builder
        .connect_mux(&spec.hostname)
        .await
        .map_err(|e| format!("cannot connect to {}: {}", spec.name, error_chain(&e)))
}

/// Stops the ssh processes of this run that are still connecting (a host that hangs keeps
/// ssh waiting until its `ConnectTimeout`): children of this process whose command line names
/// the run's control directory. A master that is up has left this process (`ssh -f`) and is
/// closed by [`SshHost::close`].
pub fn stop_connecting(control_dir: &std::path::Path) {
    let me = std::process::id().to_string();
    let needle = control_dir.as_os_str().as_encoded_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // The parent pid is the second field after the command name, which ends at the last ')'.
        let parent = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                let rest = stat.rsplit_once(')')?.1;
                rest.split_whitespace().nth(1).map(str::to_string)
            });
        if parent.as_deref() != Some(me.as_str()) {
            continue;
        }
        let named = std::fs::read(entry.path().join("cmdline"))
            .is_ok_and(|cmdline| cmdline.windows(needle.len()).any(|w| w == needle));
        if named {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// Makes masters exit now (`ssh -O exit`): their sessions end with them. The crate's own close
/// only stops a master listening, and leaves it to `ControlPersist`.
async fn close_masters(masters: Vec<Arc<Session>>) {
    for master in masters {
        let exit = tokio::process::Command::new("ssh")
            .args(["-F", "/dev/null", "-O", "exit", "-S"])
            .arg(master.control_socket())
            .arg("bakapara-master")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(5), exit).await;
        if let Ok(session) = Arc::try_unwrap(master) {
            let _ = session.close().await;
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(more.trim());
        }
        source = s.source();
    }
    text
}

async fn cpu_count(master: &Session) -> Result<usize, String> {
    let out = master
        .raw_command("nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || grep -c ^processor /proc/cpuinfo")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("it answered {:?}", text.trim()))
}

/// The wrapper's report: how the job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Report {
    Done(i32),
    Stopped(i32),
    Error(String),
}

impl Report {
    fn ending(self, cause: Option<Cause>) -> Ending {
        let split = |status: i32| {
            if status > 128 {
                (None, Some(status - 128))
            } else {
                (Some(status), None)
            }
        };
        match (self, cause) {
            (Report::Done(code), _) => Ending::Exited(code),
            (Report::Stopped(status), Some(Cause::Timeout)) => {
                let (code, signal) = split(status);
                Ending::TimedOut { code, signal }
            }
            (Report::Stopped(status), _) => {
                let (code, signal) = split(status);
                Ending::Aborted { code, signal }
            }
            (Report::Error(why), _) => Ending::CouldNotRun(why),
        }
    }
}

/// Bytes kept from the end of stderr to find the wrapper's report in.
const TAIL: usize = 8 * 1024;

/// Reads a stream to its end (see [`read_capped`]), keeping the first `limit` bytes, the last
/// [`TAIL`] bytes, and the total length. With a `spool` file, the whole stream goes there
/// instead of the first `limit` bytes (see [`Captured::spooled`]). `report_seen` hears when
/// the wrapper's report (starting with its marker) has come whole.
async fn read_stream(
    stream: impl AsyncRead + Unpin,
    limit: usize,
    spool: Option<std::fs::File>,
    mut report_seen: Option<(&[u8], tokio::sync::oneshot::Sender<DateTime<Local>>)>,
) -> (Captured, Vec<u8>, usize) {
    let limit = if spool.is_some() { 0 } else { limit };
    let mut sink = spool.as_ref();
    let mut tail: Vec<u8> = Vec::new();
    let mut total = 0usize;
    let mut captured = Captured::default();
    read_capped(stream, limit, &mut captured, |chunk| {
        total += chunk.len();
        if let Some(mut file) = sink {
            // A temp file: the write goes to the page cache. A full disk: the rest of this
            // stream is lost, the job goes on.
            if file.write_all(chunk).is_err() {
                sink = None;
            }
        }
        tail.extend_from_slice(chunk);
        if tail.len() > 2 * TAIL {
            tail.drain(..tail.len() - TAIL);
        }
        // The wrapper's report is its last line: say so once it is here whole.
        let complete = report_seen.as_ref().is_some_and(|(marker, _)| {
            tail.ends_with(b"\n") && tail.windows(marker.len()).any(|w| w == *marker)
        });
        if complete {
            if let Some((_, seen)) = report_seen.take() {
                let _ = seen.send(Local::now());
            }
        }
    })
    .await;
    let captured = match spool {
        Some(file) => Captured::spooled(file),
        None => captured,
    };
    (captured, tail, total)
}

/// `NUL NONCE SPACE`: how the wrapper's report starts.
fn report_marker(nonce: &str) -> Vec<u8> {
    let mut marker = Vec::with_capacity(nonce.len() + 2);
    marker.push(0);
    marker.extend_from_slice(nonce.as_bytes());
    marker.push(b' ');
    marker
}

/// Finds the wrapper's report at the end of stderr (or its end line at the end of stdout) and
/// removes it from what was captured.
fn split_report(
    mut captured: Captured,
    tail: &[u8],
    total: usize,
    nonce: &str,
) -> (Captured, Option<Report>) {
    let marker = report_marker(nonce);
    let Some(at) = tail
        .windows(marker.len())
        .rposition(|w| w == marker.as_slice())
    else {
        return (captured, None);
    };
    let body = &tail[at + marker.len()..];
    let body = String::from_utf8_lossy(body.strip_suffix(b"\n").unwrap_or(body));
    let report = match body.split_once(' ') {
        Some(("done", s)) => s.trim().parse().ok().map(Report::Done),
        Some(("stopped", s)) => s.trim().parse().ok().map(Report::Stopped),
        Some(("error", why)) => Some(Report::Error(why.to_string())),
        _ => None,
    };
    // Where the report starts in the whole stream: cut the capture there. The capture was
    // cut by the limit only if the job's own stderr (before the report) did not fit.
    let start = total - (tail.len() - at);
    if let Some(spool) = &captured.spool {
        // The spooled stream ends where the report starts.
        let _ = spool.file().set_len(start as u64);
    }
    let kept = captured.bytes.len();
    if captured.truncated {
        captured.truncated = start > kept;
    }
    captured.bytes.truncate(start);
    (captured, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `ssh -G` makes of the generated config for `host`.
    fn effective(generated: &std::path::Path, host: &str) -> String {
        let out = std::process::Command::new("ssh")
            .arg("-G")
            .arg("-F")
            .arg(generated)
            .arg(host)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn the_users_ssh_config_wins_and_defaults_fill_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let user = dir.path().join("user_config");
        std::fs::write(
            &user,
            "Host special\n    ConnectTimeout 3\n    ServerAliveInterval 7\n\
             \x20   ControlPersist 42\n    StrictHostKeyChecking yes\n",
        )
        .unwrap();
        let options = SshOptions {
            config_file: Some(user),
            connect_timeout: Duration::from_secs(10),
            ..SshOptions::default()
        };
        let generated = dir.path().join(CONFIG_NAME);
        std::fs::write(&generated, generated_config(&options)).unwrap();
        let special = effective(&generated, "special");
        for line in [
            "connecttimeout 3",
            "serveraliveinterval 7",
            "controlpersist 42",
            "stricthostkeychecking true",
        ] {
            assert!(special.lines().any(|l| l == line), "{line}:\n{special}");
        }
        let settings = Settings::parse(&special);
        assert!(matches!(settings.known_hosts, KnownHosts::Strict));
        assert!(matches!(settings.persist, ControlPersist::IdleFor(n) if n.get() == 42));
        let other = effective(&generated, "other");
        for line in [
            "connecttimeout 10",
            "serveraliveinterval 5",
            "controlpersist 2",
            "stricthostkeychecking accept-new",
        ] {
            assert!(other.lines().any(|l| l == line), "{line}:\n{other}");
        }
        let settings = Settings::parse(&other);
        assert!(matches!(settings.known_hosts, KnownHosts::Add));
    }

    fn cap(bytes: &[u8], truncated: bool) -> Captured {
        Captured {
            bytes: bytes.to_vec(),
            truncated,
            spool: None,
        }
    }

    #[test]
    fn the_report_is_found_and_cut_off() {
        let stream = b"job err\n\0abc done 3\n";
        let (c, r) = split_report(cap(stream, false), stream, stream.len(), "abc");
        assert_eq!(c.bytes, b"job err\n");
        assert_eq!(r, Some(Report::Done(3)));
        let stream = b"\0abc error cannot cd to /x y\n";
        let (c, r) = split_report(cap(stream, false), stream, stream.len(), "abc");
        assert_eq!(c.bytes, b"");
        assert_eq!(r, Some(Report::Error("cannot cd to /x y".into())));
    }

    #[test]
    fn a_forged_or_missing_report_is_not_taken() {
        let stream = b"\0xyz done 0\n";
        let (c, r) = split_report(cap(stream, false), stream, stream.len(), "abc");
        assert_eq!(r, None);
        assert_eq!(c.bytes, stream);
    }

    #[test]
    fn a_report_past_the_capture_limit_leaves_the_capture_alone() {
        let mut stream = vec![b'x'; 100];
        stream.extend_from_slice(b"\0abc stopped 143\n");
        let (c, r) = split_report(cap(&stream[..10], true), &stream, stream.len(), "abc");
        assert_eq!(c.bytes.len(), 10);
        assert!(c.truncated);
        assert_eq!(r, Some(Report::Stopped(143)));
        assert_eq!(
            Report::Stopped(143).ending(Some(Cause::Abort)),
            Ending::Aborted {
                code: None,
                signal: Some(15)
            }
        );
    }

    #[test]
    fn a_report_split_by_the_capture_limit_is_cut() {
        let stream = b"ab\0abc done 0\n";
        let (c, _) = split_report(cap(&stream[..5], true), stream, stream.len(), "abc");
        assert_eq!(c.bytes, b"ab");
        assert!(!c.truncated, "the job's own stderr fit");
    }
}
