//! The stop / timeout / grace state machine every executor's supervision of a job shares: it
//! turns what the run wants ([`Stop`]), the job's timeout and the grace period into orders
//! (TERM, KILL) that each executor carries out its own way (signals to a process group, lines
//! to the remote agent).

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

use super::{Limits, Stop};

/// Why bakapara is stopping a job, once it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    Timeout,
    Abort,
    /// The job's shell stopped itself (SIGSTOP) again after it was continued once.
    Stopped(Signal),
}

/// What the executor must do to the job now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Ask it to stop (TERM); KILL follows after the grace period where the executor
    /// escalates itself.
    Term,
    /// Kill it at once.
    Kill,
}

/// One job's stopping state: the cause once there is one, the timeout's deadline, and (for
/// an executor that escalates itself) when TERM turns into KILL.
#[derive(Debug)]
pub(crate) struct Stopper {
    stop: watch::Receiver<Stop>,
    stop_open: bool,
    deadline: Option<Instant>,
    grace: Duration,
    /// Whether this side sends KILL after the grace period (the remote agent does it on the
    /// host instead).
    escalate: bool,
    kill_at: Option<Instant>,
    /// Time bakapara had spent stopped (Ctrl-Z) when the deadline was last set.
    counted_pause: Duration,
    cause: Option<Cause>,
}

impl Stopper {
    /// The state of a job that starts now. `paused` is the time bakapara has spent stopped so
    /// far (it does not count against the timeout).
    pub(crate) fn new(
        stop: watch::Receiver<Stop>,
        limits: &Limits,
        escalate: bool,
        paused: Duration,
    ) -> Stopper {
        Stopper {
            stop,
            stop_open: true,
            deadline: limits.timeout.map(|t| Instant::now() + t),
            grace: limits.grace,
            escalate,
            kill_at: None,
            counted_pause: paused,
            cause: None,
        }
    }

    /// Why the job is being stopped, once it is.
    pub(crate) fn cause(&self) -> Option<Cause> {
        self.cause
    }

    /// When TERM turns into KILL, while it has not yet.
    pub(crate) fn kill_at(&self) -> Option<Instant> {
        self.kill_at
    }

    /// The run's stop, as it stands now (a stop ordered before the job started is seen at
    /// once): the order it calls for, if it is news.
    pub(crate) fn ordered(&mut self) -> Option<Order> {
        if !self.stop_open {
            return None;
        }
        let wanted = *self.stop.borrow_and_update();
        match wanted {
            Stop::Term if self.cause.is_none() => Some(self.stop_for(Cause::Abort)),
            Stop::Run | Stop::Term => None,
            Stop::Kill => {
                self.cause.get_or_insert(Cause::Abort);
                self.kill_at = None;
                self.stop_open = false;
                Some(Order::Kill)
            }
        }
    }

    /// Starts stopping the job for `cause` (TERM now, KILL after the grace period).
    pub(crate) fn stop_for(&mut self, cause: Cause) -> Order {
        self.cause = Some(cause);
        if self.escalate {
            self.kill_at = Some(Instant::now() + self.grace);
        }
        Order::Term
    }

    /// Waits for the next order: the run's stop changing, the timeout passing (less the time
    /// `paused` says bakapara spent stopped), or the grace period ending. Cancel-safe: nothing
    /// changes until an order (or the end of the run's stop channel) is returned.
    pub(crate) async fn next(&mut self, paused: impl Fn() -> Duration) -> Option<Order> {
        let timing = self.deadline.filter(|_| self.cause.is_none());
        tokio::select! {
            changed = self.stop.changed(), if self.stop_open => if let Ok(()) = changed { self.ordered() } else {
                self.stop_open = false;
                None
            },
            () = sleep_until(timing.unwrap_or_else(Instant::now)), if timing.is_some() => {
                let now_paused = paused();
                if now_paused > self.counted_pause {
                    self.deadline = self.deadline.map(|d| d + now_paused.checked_sub(self.counted_pause).unwrap());
                    self.counted_pause = now_paused;
                    None
                } else {
                    Some(self.stop_for(Cause::Timeout))
                }
            }
            () = sleep_until(self.kill_at.unwrap_or_else(Instant::now)), if self.kill_at.is_some() => {
                self.kill_at = None;
                Some(Order::Kill)
            }
            else => std::future::pending().await,
        }
    }

    /// The run's stop channel, for waiting on a KILL while the job's group is reaped.
    pub(crate) fn stop_channel(&mut self) -> &mut watch::Receiver<Stop> {
        &mut self.stop
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(timeout: Option<u64>) -> Limits {
        Limits {
            capture_limit: 0,
            timeout: timeout.map(Duration::from_secs),
            grace: Duration::from_secs(2),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_timeout_is_term_then_kill_after_the_grace_period() {
        let (_tx, rx) = watch::channel(Stop::Run);
        let mut s = Stopper::new(rx, &limits(Some(5)), true, Duration::ZERO);
        let t0 = Instant::now();
        assert_eq!(s.next(|| Duration::ZERO).await, Some(Order::Term));
        assert_eq!(t0.elapsed(), Duration::from_secs(5));
        assert_eq!(s.cause(), Some(Cause::Timeout));
        assert_eq!(s.next(|| Duration::ZERO).await, Some(Order::Kill));
        assert_eq!(t0.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn time_spent_stopped_does_not_count() {
        let (_tx, rx) = watch::channel(Stop::Run);
        let mut s = Stopper::new(rx, &limits(Some(5)), false, Duration::ZERO);
        let t0 = Instant::now();
        assert_eq!(s.next(|| Duration::from_secs(3)).await, None);
        assert_eq!(s.next(|| Duration::from_secs(3)).await, Some(Order::Term));
        assert_eq!(t0.elapsed(), Duration::from_secs(8));
        assert_eq!(s.kill_at(), None, "no escalation asked for");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_before_the_start_is_seen_at_once_and_kill_wins() {
        let (tx, rx) = watch::channel(Stop::Term);
        let mut s = Stopper::new(rx, &limits(None), true, Duration::ZERO);
        assert_eq!(s.ordered(), Some(Order::Term));
        assert_eq!(s.cause(), Some(Cause::Abort));
        tx.send_replace(Stop::Kill);
        assert_eq!(s.next(|| Duration::ZERO).await, Some(Order::Kill));
        assert_eq!(s.kill_at(), None);
    }
}
