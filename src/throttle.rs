//! When the next job may start besides a free slot: `--delay` between starts, `--memfree`
//! (MemAvailable of /proc/meminfo) and `--load` (the 1-minute load average of /proc/loadavg),
//! of this machine (remote hosts check their own in the remote agent); and `--shuf`'s shuffle.
//! The scheduler asks [`Throttle::may_start`] and sleeps until [`Throttle::wake_at`] when it
//! says no.

use std::time::Duration;

use tokio::time::Instant;

/// How often memory and load are looked at again while they hold jobs back.
const RECHECK: Duration = Duration::from_millis(200);

/// Limits on starting jobs; all off by default.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    /// `--delay`: at least this long between two job starts.
    pub delay: Option<Duration>,
    /// `--memfree`: start a job only when this many bytes of memory are available.
    pub memfree: Option<u64>,
    /// `--load`: start a job only while the 1-minute load average is below this.
    pub load: Option<f64>,
    last_start: Option<Instant>,
}

impl Throttle {
    #[must_use]
    pub fn new(delay: Option<Duration>, memfree: Option<u64>, load: Option<f64>) -> Throttle {
        Throttle {
            delay,
            memfree,
            load,
            last_start: None,
        }
    }

    /// True when no limit is set (the scheduler then never asks).
    #[must_use]
    pub fn is_off(&self) -> bool {
        self.delay.is_none() && self.memfree.is_none() && self.load.is_none()
    }

    /// Whether a job may start now.
    #[must_use]
    pub fn may_start(&self) -> bool {
        if self.is_off() {
            return true;
        }
        if let (Some(delay), Some(last)) = (self.delay, self.last_start) {
            if last.elapsed() < delay {
                return false;
            }
        }
        if let Some(want) = self.memfree {
            // Unreadable /proc: no reason to hold jobs back forever.
            if available_memory().is_some_and(|free| free < want) {
                return false;
            }
        }
        if let Some(max) = self.load {
            if load_average().is_some_and(|load| load >= max) {
                return false;
            }
        }
        true
    }

    /// A job started now.
    pub fn started(&mut self) {
        if self.delay.is_some() {
            self.last_start = Some(Instant::now());
        }
    }

    /// When to ask [`Throttle::may_start`] again after it said no.
    #[must_use]
    pub fn wake_at(&self) -> Instant {
        let now = Instant::now();
        let mut at = now + RECHECK;
        if let (Some(delay), Some(last)) = (self.delay, self.last_start) {
            let next = last + delay;
            if next > now && (self.memfree.is_none() && self.load.is_none() || next < at) {
                at = next;
            }
        }
        at
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes.
#[must_use]
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// The 1-minute load average of /proc/loadavg.
#[must_use]
pub fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Parses `--load MAX`: a load average (`2`, `1.5`), or as GNU Parallel a percentage of the
/// CPUs (`100%`: one per CPU).
pub fn parse_load(text: &str, cpus: usize) -> Result<f64, String> {
    let bad = || format!("`{text}` is not a load (examples: 4, 1.5, 100%)");
    let t = text.trim();
    let value = match t.strip_suffix('%') {
        Some(pct) => pct.trim().parse::<f64>().map_err(|_| bad())? / 100.0 * cpus as f64,
        None => t.parse::<f64>().map_err(|_| bad())?,
    };
    if !value.is_finite() || value <= 0.0 {
        return Err(bad());
    }
    Ok(value)
}

/// `--shuf`: shuffles `items` in place (Fisher-Yates, with a xorshift generator seeded from
/// the clock and the process id: a fresh order per run, no cryptographic strength needed).
pub fn shuffle<T>(items: &mut [T]) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(0)
        });
    let mut state = nanos ^ (u64::from(std::process::id()) << 32) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in (1..items.len()).rev() {
        // Below `i + 1`, a usize.
        let j = usize::try_from(next() % (i as u64 + 1)).unwrap_or(i);
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_is_a_number_or_a_share_of_the_cpus() {
        assert_eq!(parse_load("2.5", 4), Ok(2.5));
        assert_eq!(parse_load("50%", 4), Ok(2.0));
        assert!(parse_load("x", 4).is_err());
        assert!(parse_load("0", 4).is_err());
        assert!(parse_load("-1", 4).is_err());
    }

    #[test]
    fn shuffle_keeps_every_item() {
        let mut v: Vec<u32> = (0..100).collect();
        shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(v, sorted, "100 items in their own order: 1 chance in 100!");
    }

    #[test]
    fn this_machine_reports_memory_and_load() {
        assert!(available_memory().is_some_and(|m| m > 0));
        assert!(load_average().is_some());
    }
}
