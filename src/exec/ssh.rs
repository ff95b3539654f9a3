//! The remote executor: jobs on a host through one long-lived bash agent there (see
//! [`super::agent`]), started over one session of the host's multiplexed OpenSSH master
//! connection, or through a `--launcher` command (`docker exec -i <host>`, `srun ...`). The
//! master also carries file transfers; a launcher host has none.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder, Stdio};
use tokio::sync::{mpsc, watch};

use super::agent::{self, Agent, Transport};
use super::control_dir::ControlDir;
use super::{
    Command, Ending, Executor, HostEvent, HostEvents, Limits, Outcome, RunFuture, Stop, Task,
};
use crate::hosts::HostSpec;
use crate::template::shell_quote;
use crate::transfer::{Clock, Copier, CopyError, RemoteFiles, TransferStats};

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
    /// `--memfree` in bytes: the agent holds each job until the host has that much available.
    pub memfree: Option<u64>,
    /// `--load`: the agent holds each job while the host's 1-minute load average is not below.
    pub load: Option<f64>,
    /// `--launcher CMD`: how agents start on hosts whose entry names no launcher of its own.
    pub launcher: Option<String>,
}

/// The generated ssh config's name in the control directory.
pub const CONFIG_NAME: &str = "ssh_config";

/// The ssh config every connection of the run uses: the user's configuration first, then
/// bakapara's defaults. ssh keeps the first value it reads for a setting, so the user's wins
/// and a default applies only where the user's configuration sets none.
#[must_use]
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
#[must_use]
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
        // A /tmp cleaner may remove the control directory between `ensure` and ssh reading the
        // generated config there: that is not a broken config, so the directory is recreated
        // and ssh asked again (a few times, then the error stands).
        let mut tries = 0;
        loop {
            tries += 1;
            match Self::ask(spec, options).await {
                Err(_) if tries < 3 && config_vanished(options) => {}
                done => return done,
            }
        }
    }

    async fn ask(spec: &HostSpec, options: &SshOptions) -> Result<Settings, String> {
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

/// Whether the run's generated config is gone from its control directory (removed while ssh
/// was starting); never for a run without one.
fn config_vanished(options: &SshOptions) -> bool {
    options
        .control_dir
        .as_ref()
        .is_some_and(|dir| !dir.path().join(CONFIG_NAME).exists())
}

/// The config file ssh reads: the generated one when the run has a control directory.
fn config_path(options: &SshOptions) -> Option<PathBuf> {
    match &options.control_dir {
        Some(dir) => Some(dir.path().join(CONFIG_NAME)),
        None => options.config_file.clone(),
    }
}

/// A loss of the connection of one generation, from its agent to the host's own reconnect
/// loop (see [`SshHost::start`]).
type Loss = (u64, String);

/// One remote host: its master connection (none for a launcher host) and its agent.
#[derive(Debug)]
pub struct SshHost {
    index: usize,
    spec: HostSpec,
    options: SshOptions,
    /// `None` for a launcher host.
    settings: Option<Settings>,
    slots: usize,
    state: Arc<Mutex<Connections>>,
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
    /// How long bakapara was stopped by Ctrl-Z, which job timeouts do not count.
    watchdog: Option<Arc<crate::watchdog::Watchdog>>,
}

#[derive(Debug, Default)]
struct Connections {
    generation: u64,
    master: Option<Arc<Session>>,
    agent: Option<Arc<Agent>>,
}

/// The launcher template for a host, with `<host>` replaced by its shell-quoted name.
#[must_use]
pub fn launcher_command(template: &str, host: &str) -> String {
    let quoted = shell_quote(host);
    format!(
        "{} {}",
        template.replace("<host>", &quoted),
        agent::LAUNCHED_BOOT
    )
}

impl SshHost {
    /// Connects to a host: opens its master (or runs its launcher) and starts its agent there,
    /// which also counts the host's CPUs when `-S` gave no slot count. Fails with a sentence
    /// for the user.
    pub async fn connect(
        index: usize,
        spec: HostSpec,
        options: SshOptions,
        events: HostEvents,
    ) -> Result<SshHost, String> {
        let (loss_tx, loss_rx) = mpsc::unbounded_channel();
        let settings = if launcher_of(&spec, &options).is_some() {
            None
        } else {
            Some(
                Settings::of(&spec, &options)
                    .await
                    .map_err(|e| format!("cannot connect to {}: {e}", spec.name))?,
            )
        };
        let mut host = SshHost {
            index,
            spec,
            options,
            settings,
            slots: 0,
            state: Arc::new(Mutex::new(Connections::default())),
            events,
            loss_tx,
            loss_rx: Mutex::new(Some(loss_rx)),
            spool: false,
            prepared: tokio::sync::Mutex::new(None),
            watchdog: None,
        };
        let cpus = host.install().await?;
        host.slots = host.spec.slots.unwrap_or(cpus);
        Ok(host)
    }

    /// `--text`: spool each job's uncaptured streams to temp files instead of capturing them.
    #[must_use]
    pub fn with_spool(mut self, spool: bool) -> SshHost {
        self.spool = spool;
        self
    }

    /// Job timeouts here leave out the time bakapara was stopped, which `watchdog` records.
    #[must_use]
    pub fn with_watchdog(mut self, watchdog: Arc<crate::watchdog::Watchdog>) -> SshHost {
        self.watchdog = Some(watchdog);
        self
    }

    /// Makes the host an executor of the run: from now on it watches its agent, and when it
    /// is lost it says so ([`HostEvent::Down`]), connects again with back-off (250 ms
    /// doubling to 10 s) and says when it is back ([`HostEvent::Up`]).
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

    /// Opens the master (SSH) and starts the agent on it, or runs the launcher: the host's
    /// connection of a new generation. Returns the host's CPU count.
    async fn install(&self) -> Result<usize, String> {
        let generation = {
            let state = self
                .state
                .lock()
                .map_err(|_| "internal error: poisoned lock".to_string())?;
            state.generation + 1
        };
        let losses = self.loss_tx.clone();
        let state = Arc::clone(&self.state);
        let on_lost = Box::new(move |why: String| {
            if mark_lost(&state, generation) {
                let _ = losses.send((generation, why));
            }
        });
        // Starting the agent may need a login first (a launcher's ssh, srun's queue): give it
        // the connect timeout and then some.
        let within =
            self.options.connect_timeout.max(Duration::from_secs(1)) + Duration::from_secs(20);
        let script = agent::script(&self.workdir_duties(), self.spec.slots);
        let (master, agent) = match (&self.settings, launcher_of(&self.spec, &self.options)) {
            (_, Some(template)) => {
                let transport = launch(template, &self.spec)?;
                let text = agent::launched_script(&script);
                let agent =
                    Agent::start(&self.spec.name, transport, within, on_lost, &text).await?;
                (None, agent)
            }
            (Some(settings), None) => {
                let master = Arc::new(open_master(&self.spec, &self.options, settings).await?);
                let transport = match agent_session(&master, script.len()).await {
                    Ok(t) => t,
                    Err(e) => {
                        close_masters(vec![master]).await;
                        return Err(format!("{}: cannot start a session: {e}", self.spec.name));
                    }
                };
                match Agent::start(&self.spec.name, transport, within, on_lost, &script).await {
                    Ok(agent) => (Some(master), agent),
                    Err(e) => {
                        close_masters(vec![master]).await;
                        return Err(e);
                    }
                }
            }
            (None, None) => return Err("internal error: no way to reach the host".into()),
        };
        let cpus = agent.cpus();
        let mut state = self
            .state
            .lock()
            .map_err(|_| "internal error: poisoned lock".to_string())?;
        state.generation = generation;
        state.master = master;
        state.agent = Some(Arc::new(agent));
        Ok(cpus)
    }

    /// What this host's agent does with the working directory. A host with a master
    /// connection has it made (and removed) over that connection, before any file is copied
    /// there, so its agent finds it made; a launcher's host has no other way than its agent.
    fn workdir_duties(&self) -> agent::Workdir {
        let files = &self.options.files;
        let launched = launcher_of(&self.spec, &self.options).is_some();
        agent::Workdir {
            make: files.create_workdir,
            remove: self
                .options
                .workdir
                .clone()
                .filter(|_| launched && files.cleanup && files.fresh_workdir),
        }
    }

    /// Whether the host's agent is up.
    fn connected(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|state| state.agent.as_ref().is_some_and(|a| a.is_up()))
    }

    /// Closes the connection at the end of a run: the agent quits (stopping anything left),
    /// the master exits at once (nothing of the run stays there for `ControlPersist`).
    pub async fn close(&self) {
        self.clean_up_run().await;
        let (agent, master) = match self.state.lock() {
            Ok(mut state) => (state.agent.take(), state.master.take()),
            Err(_) => return,
        };
        if let Some(agent) = agent {
            agent.close().await;
        }
        if let Some(master) = master {
            close_masters(vec![master]).await;
        }
    }

    /// Opens a new connection after a loss.
    async fn reconnect(&self) -> Result<(), String> {
        self.install().await.map(|_| ())
    }

    fn master(&self) -> Option<(Arc<Session>, u64)> {
        let state = self.state.lock().ok()?;
        let master = state.master.as_ref()?;
        Some((Arc::clone(master), state.generation))
    }

    fn agent(&self) -> Option<Arc<Agent>> {
        let state = self.state.lock().ok()?;
        state.agent.clone()
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
        // (A launcher's host has its working directory made by its agent.)
        let launched = launcher_of(&self.spec, &self.options).is_some();
        let prepare = (files.create_workdir && !launched) || !files.basefiles.is_empty();
        if !(copies || prepare) {
            return self.run_job(lane, job, limits, stop).await;
        }
        let Some((master, generation)) = self.master() else {
            if launcher_of(&self.spec, &self.options).is_some() {
                return Outcome::not_run(Ending::CouldNotRun(format!(
                    "{} is reached through a launcher: files cannot be copied there",
                    self.spec.name
                )));
            }
            return Outcome::not_run(Ending::HostLost(format!("{} is down", self.spec.name)));
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
        if matches!(outcome.ending, Ending::HostLost(_) | Ending::GivenBack(_)) {
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
        let Some((master, _)) = self.master() else {
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

    /// Runs one job in slot `lane` of this host, through its agent.
    async fn run_job(
        &self,
        lane: usize,
        job: &Command<'_>,
        limits: &Limits,
        stop: watch::Receiver<Stop>,
    ) -> Outcome {
        let Some(agent) = self.agent() else {
            return Outcome::not_run(Ending::HostLost(format!("{} is down", self.spec.name)));
        };
        let base = self.options.workdir.as_deref().unwrap_or("");
        let memfree = self
            .options
            .memfree
            .map(|m| m.to_string())
            .unwrap_or_default();
        // The agent compares in hundredths (/proc/loadavg has two decimals): "below L" is
        // "below ceil(L × 100) hundredths". `as` saturates a huge limit (and clamps below 0).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let load = self
            .options
            .load
            .map(|l| ((l * 100.0).ceil().max(0.0) as u64).to_string())
            .unwrap_or_default();
        let watchdog = self.watchdog.as_deref();
        let paused = || watchdog.map_or(Duration::ZERO, crate::watchdog::Watchdog::paused);
        agent
            .run(
                lane,
                job,
                limits,
                stop,
                self.spool,
                base,
                &memfree,
                &load,
                &self.options.env,
                &paused,
            )
            .await
    }
}

/// The launcher a host's agent starts through, if any.
fn launcher_of<'a>(spec: &'a HostSpec, options: &'a SshOptions) -> Option<&'a str> {
    spec.launcher.as_deref().or(options.launcher.as_deref())
}

/// Runs a launcher here: `/bin/sh -c "LAUNCHER BOOT"`.
fn launch(template: &str, spec: &HostSpec) -> Result<Transport, String> {
    // In a process group of its own, as a job is: the terminal's Ctrl-C and Ctrl-Z are
    // bakapara's to pass on (a stopped launcher would silence its agent, whose fence would
    // then stop the jobs there).
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(launcher_command(template, &spec.hostname))
        .process_group(0)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run the launcher for {}: {e}", spec.name))?;
    let (Some(stdin), Some(stdout), stderr) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(format!("the launcher for {} has no pipes", spec.name));
    };
    // The whole group goes with the transport, also when it is dropped unused (a run that
    // ended while this host was still starting): `/bin/sh -c` forks the launcher's command,
    // which kill_on_drop (the shell alone) would leave running.
    let group = LauncherGroup(child.id().and_then(|id| i32::try_from(id).ok()));
    Ok(Transport::new(stdin, stdout, stderr, |kill| async move {
        let _group = group;
        tokio::select! {
            _ = child.wait() => {}
            _ = kill => {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }))
}

/// A launcher's process group (its pid: it leads it), killed when this is dropped.
struct LauncherGroup(Option<i32>);

impl Drop for LauncherGroup {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The agent's session on a master: `exec BOOT` in the login shell, for a script of `len`
/// bytes.
async fn agent_session(master: &Arc<Session>, len: usize) -> Result<Transport, openssh::Error> {
    let command = format!("exec {}", agent::boot_command(len));
    let mut child = Session::to_raw_command(Arc::clone(master), command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .await?;
    let stdin = child.stdin().take();
    let stdout = child.stdout().take();
    let stderr = child.stderr().take();
    let (Some(stdin), Some(stdout)) = (stdin, stdout) else {
        return Err(openssh::Error::ChildIo(std::io::Error::other(
            "the session has no pipes",
        )));
    };
    let socket = master.control_socket().to_path_buf();
    Ok(Transport::new(stdin, stdout, stderr, |kill| async move {
        tokio::select! {
            _ = child.wait() => {}
            _ = kill => {
                // An agent gone silent: the master goes, and the session with it; the agent
                // sees EOF (or, cut off, hears nothing and fences).
                exit_master(&socket).await;
            }
        }
    }))
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

impl crate::watchdog::Pausable for SshHost {
    fn pause(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async {
            if let Some(agent) = self.agent() {
                agent.pause().await;
            }
        })
    }

    fn resume(&self) {
        if let Some(agent) = self.agent() {
            agent.resume();
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

    /// One job queued per slot at the agent while the slot's job runs.
    fn queued_per_slot(&self) -> usize {
        1
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
    if state.generation != generation || state.agent.is_none() {
        return false;
    }
    let master = state.master.take();
    state.agent = None;
    drop(state);
    // The master of a lost agent goes too (a new one comes with the reconnection).
    if let Some(master) = master {
        tokio::spawn(close_masters(vec![master]));
    }
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
        exit_master(master.control_socket()).await;
        if let Ok(session) = Arc::try_unwrap(master) {
            let _ = session.close().await;
        }
    }
}

/// `ssh -O exit` on a master's control socket.
async fn exit_master(socket: &std::path::Path) {
    let exit = tokio::process::Command::new("ssh")
        .args(["-F", "/dev/null", "-O", "exit", "-S"])
        .arg(socket)
        .arg("bakapara-master")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(5), exit).await;
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

    #[test]
    fn a_launcher_gets_the_quoted_host_and_the_boot_command() {
        let command = launcher_command("docker exec -i <host>", "it's");
        assert!(
            command.ends_with("docker exec -i 'it'\\''s' bash --norc --noprofile -s"),
            "{command}"
        );
    }
}
