//! Signals: Ctrl-C / SIGTERM / SIGHUP turned into what the run should do next.

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

/// What a signal asks of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// First SIGINT or SIGTERM: start nothing new, stop running jobs (TERM, then KILL).
    Interrupt(Signal),
    /// A second SIGINT or SIGTERM: kill running jobs at once.
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
    interrupted: bool,
}

impl Signals {
    /// Must be called inside a Tokio runtime.
    pub fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
            interrupted: false,
        })
    }

    /// Waits for the next signal.
    pub async fn next(&mut self) -> Event {
        let sig = tokio::select! {
            _ = self.int.recv() => Signal::SIGINT,
            _ = self.term.recv() => Signal::SIGTERM,
            _ = self.hup.recv() => return Event::Hangup,
        };
        if self.interrupted {
            Event::KillNow(sig)
        } else {
            self.interrupted = true;
            Event::Interrupt(sig)
        }
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
    pub fn new(signals: Option<Signals>, abort: Option<AbortReceiver>) -> Controls {
        Controls {
            signals,
            abort: abort.map(|a| a.0),
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
    // The signal may be blocked in this thread (Tokio does not block it, but be sure).
    let mut set = SigSet::empty();
    set.add(sig);
    let _ = set.thread_unblock();
    let _ = nix::sys::signal::raise(sig);
    // Only reached if the signal could not kill us: exit as a shell would report it.
    std::process::exit(128 + sig as i32)
}
