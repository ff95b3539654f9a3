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
