//! Signals: Ctrl-C / SIGTERM / SIGHUP / SIGQUIT turned into what the run should do next, and
//! Ctrl-Z / SIGCONT passed on to the jobs.
//!
//! SIGUSR1 and SIGALRM would kill bakapara by default: they stop the run as SIGTERM does
//! (every job gets its line), and bakapara then dies of that same signal. SIGQUIT (Ctrl-\)
//! kills the jobs at once, as a second Ctrl-C, and bakapara dies of it without a core dump.

use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

use crate::watchdog::Watchdog;

/// The signals sent to the process as a whole: those bakapara acts on, a job's SIGCHLD, and
/// the few a user or a terminal sends that it leaves as they are. Not SIGTTIN and SIGTTOU: the
/// kernel sends them to the thread that reads or writes the terminal from the background, and
/// blocked there, they would turn the stop a shell user expects into an error (or a write).
const PROCESS_SIGNALS: [Signal; 11] = [
    Signal::SIGCHLD,
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGTSTP,
    Signal::SIGCONT,
    Signal::SIGWINCH,
];

/// Blocks the process-wide signals in the calling thread, one of bakapara's helper threads
/// (input reader, output writer, progress, ...), so that the kernel hands them to a thread
/// that waits for them, where the run's Tokio driver runs, instead of waking a helper that
/// sleeps in a read or a wait. (strace showed the SIGCHLD of about half of the jobs handled on
/// the sleeping output writer, whose handler then had to wake the scheduler: two wake-ups for
/// one.) Faults and SIGPIPE stay as they are: they belong to the thread that caused them. No
/// job inherits this mask: none is started from a helper thread, and the spawn sets the
/// job's mask anyway (see `exec::spawn`).
pub fn keep_off_this_thread() {
    let mut set = nix::sys::signal::SigSet::empty();
    for signal in PROCESS_SIGNALS {
        set.add(signal);
    }
    // Only fails for an invalid `how`, which this is not.
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&set),
        None,
    );
}

/// What a signal asks of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// First SIGINT, SIGTERM, SIGUSR1 or SIGALRM: start nothing new, stop running jobs (TERM,
    /// then KILL).
    Interrupt(Signal),
    /// A second such signal, or SIGQUIT: kill running jobs at once.
    KillNow(Signal),
    /// SIGHUP: start nothing new, let running jobs finish.
    Hangup,
}

/// The run's signal listener. Creating it replaces the default actions, so bakapara can clean
/// up before it dies of the signal (see [`die_of`]).
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    alrm: tokio::signal::unix::Signal,
    tstp: tokio::signal::unix::Signal,
    cont: tokio::signal::unix::Signal,
    /// The jobs Ctrl-Z stops and SIGCONT continues.
    jobs: Option<Arc<Watchdog>>,
    interrupted: bool,
}

impl Signals {
    /// Must be called inside a Tokio runtime.
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
            usr1: signal(SignalKind::user_defined1())?,
            alrm: signal(SignalKind::alarm())?,
            tstp: signal(SignalKind::from_raw(nix::libc::SIGTSTP))?,
            cont: signal(SignalKind::from_raw(nix::libc::SIGCONT))?,
            jobs: None,
            interrupted: false,
        })
    }

    /// Ctrl-Z (SIGTSTP) stops the jobs recorded in `jobs` along with bakapara, and SIGCONT
    /// continues them. Without it, Ctrl-Z stops bakapara alone.
    pub fn suspend_jobs_with(&mut self, jobs: Arc<Watchdog>) {
        self.jobs = Some(jobs);
    }

    /// Waits for the next signal that asks something of the run.
    pub async fn next(&mut self) -> Event {
        let sig = loop {
            tokio::select! {
                _ = self.int.recv() => break Signal::SIGINT,
                _ = self.term.recv() => break Signal::SIGTERM,
                _ = self.usr1.recv() => break Signal::SIGUSR1,
                _ = self.alrm.recv() => break Signal::SIGALRM,
                _ = self.hup.recv() => return Event::Hangup,
                _ = self.quit.recv() => {
                    self.interrupted = true;
                    return Event::KillNow(Signal::SIGQUIT);
                }
                _ = self.tstp.recv() => match &self.jobs {
                    // Remote hosts are told first, which takes the runtime's turns: in a task
                    // of its own, which the caller's next `select!` cannot cancel midway.
                    Some(jobs) if jobs.has_remote() => {
                        tokio::spawn(suspend(Some(Arc::clone(jobs))));
                    }
                    jobs => suspend_now(jobs.as_deref()),
                },
                _ = self.cont.recv() => {
                    if let Some(jobs) = &self.jobs {
                        jobs.continue_jobs();
                        jobs.resume_remote();
                    }
                }
            }
        };
        if self.interrupted {
            Event::KillNow(sig)
        } else {
            self.interrupted = true;
            Event::Interrupt(sig)
        }
    }
}

/// Ctrl-Z, as a shell's job control does it: stop the jobs (remote hosts' through their
/// agents, which are told first), stop bakapara, and continue the jobs when bakapara is
/// continued (`fg`, `bg`, SIGCONT). The time stopped is recorded, so that it does not count
/// against the jobs' timeouts.
async fn suspend(jobs: Option<Arc<Watchdog>>) {
    if let Some(jobs) = &jobs {
        jobs.pause_remote().await;
    }
    suspend_now(jobs.as_deref());
    if let Some(jobs) = &jobs {
        jobs.resume_remote();
    }
}

/// The local part of [`suspend`].
fn suspend_now(jobs: Option<&Watchdog>) {
    if let Some(jobs) = jobs {
        jobs.stop_jobs();
    }
    let stopped = std::time::Instant::now();
    stop_self();
    if let Some(jobs) = jobs {
        jobs.add_paused(stopped.elapsed());
        jobs.continue_jobs();
    }
}

/// Stops this process with SIGTSTP's default action (so the shell reports it as stopped by
/// Ctrl-Z) and returns once it is continued, with the run's SIGTSTP handler back in place.
/// In an orphaned process group the kernel does not stop it: it returns at once.
fn stop_self() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_DFL runs no handler code of ours; the action put back afterwards
    // is exactly the one that was installed (Tokio's), so its own safety holds as before.
    let Ok(previous) = (unsafe { sigaction(Signal::SIGTSTP, &default) }) else {
        return;
    };
    let mut set = SigSet::empty();
    set.add(Signal::SIGTSTP);
    let _ = set.thread_unblock();
    let _ = nix::sys::signal::raise(Signal::SIGTSTP);
    // SAFETY: as above: this restores the handler that was installed before.
    unsafe {
        let _ = sigaction(Signal::SIGTSTP, &previous);
    }
}

/// Where a run's stop requests come from: the process's signals (the command line), an
/// [`AbortHandle`] (library use), or both.
#[derive(Default)]
pub struct Controls {
    signals: Option<Signals>,
    abort: Option<tokio::sync::mpsc::UnboundedReceiver<Event>>,
}

impl Controls {
    #[must_use]
    pub fn new(signals: Option<Signals>, abort: Option<AbortReceiver>) -> Controls {
        Controls {
            signals,
            abort: abort.map(|a| a.0),
        }
    }

    /// Ctrl-Z stops the jobs recorded in `jobs` (see [`Signals::suspend_jobs_with`]).
    pub fn suspend_jobs_with(&mut self, jobs: std::sync::Arc<crate::watchdog::Watchdog>) {
        if let Some(signals) = &mut self.signals {
            signals.suspend_jobs_with(jobs);
        }
    }

    /// Waits for the next stop request (forever when there is no source).
    pub async fn next(&mut self) -> Event {
        let from_signals = async {
            match &mut self.signals {
                Some(s) => s.next().await,
                None => std::future::pending().await,
            }
        };
        let from_handle = async {
            match &mut self.abort {
                Some(rx) => match rx.recv().await {
                    Some(event) => event,
                    // Every handle is gone: no request can come from there any more.
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = from_signals => event,
            event = from_handle => event,
        }
    }
}

/// Stops a run from another thread or task, as a signal would. Cloneable.
#[derive(Debug, Clone)]
pub struct AbortHandle(tokio::sync::mpsc::UnboundedSender<Event>);

/// The run's end of an [`AbortHandle`]; pass it to [`crate::run::run_with`].
#[derive(Debug)]
pub struct AbortReceiver(tokio::sync::mpsc::UnboundedReceiver<Event>);

impl AbortHandle {
    #[must_use]
    pub fn new() -> (AbortHandle, AbortReceiver) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (AbortHandle(tx), AbortReceiver(rx))
    }

    /// As Ctrl-C: start nothing new; TERM running jobs, KILL them after the grace period.
    /// The summary then says `interrupted_by: SIGINT`.
    pub fn abort(&self) {
        let _ = self.0.send(Event::Interrupt(Signal::SIGINT));
    }

    /// As a second Ctrl-C: KILL running jobs at once.
    pub fn kill(&self) {
        let _ = self.0.send(Event::KillNow(Signal::SIGINT));
    }

    /// As SIGHUP: start nothing new, let running jobs finish.
    pub fn finish(&self) {
        let _ = self.0.send(Event::Hangup);
    }
}

/// Ends the process by `sig` with its default action, so the parent sees "killed by SIGINT"
/// (a shell's `$?` of 130) rather than an exit code.
pub fn die_of(sig: Signal) -> ! {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_DFL runs no handler code of ours, so none of the async-signal
    // safety rules that make `sigaction` unsafe can be broken; the old action is not needed.
    unsafe {
        let _ = sigaction(sig, &default);
    }
    if sig == Signal::SIGQUIT {
        // SIGQUIT's default action dumps core: bakapara handled the signal, there is nothing
        // to debug, and the caller should still see "killed by SIGQUIT" (131).
        use nix::sys::resource::{setrlimit, Resource};
        let _ = setrlimit(Resource::RLIMIT_CORE, 0, 0);
    }
    // The signal may be blocked in this thread (Tokio does not block it, but be sure).
    let mut set = SigSet::empty();
    set.add(sig);
    let _ = set.thread_unblock();
    let _ = nix::sys::signal::raise(sig);
    // Only reached if the signal could not kill us: exit as a shell would report it.
    std::process::exit(128 + sig as i32)
}
