//! `--halt` policies: when a run stops early, in GNU Parallel's syntax.

use std::fmt;

/// Stop starting jobs (`soon`), or also stop the running ones (`now`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Soon,
    Now,
}

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    /// Jobs that failed (status not ok, or a code other than 0).
    Fail,
    /// Jobs that succeeded.
    Success,
    /// Jobs that ended, either way.
    Done,
}

/// A threshold: a number of jobs, or a percentage of all jobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    Count(u64),
    Percent(f64),
}

/// A `--halt` policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HaltPolicy {
    pub when: When,
    pub what: What,
    pub threshold: Threshold,
}

/// A `--halt` value: a policy, or none (`0`, `never`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Halt(pub Option<HaltPolicy>);

impl Halt {
    /// Parses a `--halt` value (clap's `value_parser`): see [`HaltPolicy::parse`].
    pub fn parse(text: &str) -> Result<Halt, String> {
        HaltPolicy::parse(text).map(Halt)
    }
}

impl HaltPolicy {
    /// Parses `now|soon,fail|success|done=N|N%`; `=N` may be left out (1). GNU's old numeric
    /// forms are accepted too: `0` (never: `None`), `1` (soon,fail=1), `2` (now,fail=1).
    pub fn parse(text: &str) -> Result<Option<HaltPolicy>, String> {
        let bad = || {
            format!("`{text}` is not a halt policy (examples: now,fail=1  soon,fail=10%  now,success=1  now,done=5)")
        };
        match text.trim() {
            "0" | "never" => return Ok(None),
            "1" => {
                return Ok(Some(HaltPolicy {
                    when: When::Soon,
                    what: What::Fail,
                    threshold: Threshold::Count(1),
                }))
            }
            "2" => {
                return Ok(Some(HaltPolicy {
                    when: When::Now,
                    what: What::Fail,
                    threshold: Threshold::Count(1),
                }))
            }
            _ => {}
        }
        let (when, rest) = text.trim().split_once(',').ok_or_else(bad)?;
        let when = match when {
            "now" => When::Now,
            "soon" => When::Soon,
            _ => return Err(bad()),
        };
        let (what, n) = rest.split_once('=').unwrap_or((rest, "1"));
        let what = match what {
            "fail" => What::Fail,
            "success" => What::Success,
            "done" => What::Done,
            _ => return Err(bad()),
        };
        let threshold = match n.strip_suffix('%') {
            Some(p) => match p.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Threshold::Percent(p),
                _ => return Err(bad()),
            },
            None => match n.parse::<u64>() {
                Ok(n) if n > 0 => Threshold::Count(n),
                _ => return Err(bad()),
            },
        };
        Ok(Some(HaltPolicy {
            when,
            what,
            threshold,
        }))
    }

    /// Whether the run must halt, given the counts so far and the total number of jobs when it
    /// is known (all `:::` or file input, or once input has ended).
    ///
    /// A percentage is taken of the total. While the total is unknown (input still streaming)
    /// it is taken of the jobs finished so far, and only once [`PERCENT_MIN_FINISHED`] have
    /// finished: of 1 finished job, any percentage is reached by its failure.
    #[must_use]
    pub fn reached(&self, failed: u64, succeeded: u64, total: Option<u64>) -> bool {
        let count = match self.what {
            What::Fail => failed,
            What::Success => succeeded,
            What::Done => failed + succeeded,
        };
        match self.threshold {
            Threshold::Count(n) => count >= n,
            Threshold::Percent(p) => {
                let of = match total {
                    Some(total) => total,
                    None if failed + succeeded >= PERCENT_MIN_FINISHED => failed + succeeded,
                    None => return false,
                };
                count > 0 && (count as f64) * 100.0 >= p * of.max(1) as f64
            }
        }
    }
}

/// How many jobs must have finished before a percentage is judged while the total is still
/// unknown. Ten, so that one job is 10 %: a `fail=20%` is not reached by a first failure,
/// yet a streamed run that fails badly stops early. Once input ends, the total decides.
pub const PERCENT_MIN_FINISHED: u64 = 10;

impl fmt::Display for HaltPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = match self.when {
            When::Now => "now",
            When::Soon => "soon",
        };
        let what = match self.what {
            What::Fail => "fail",
            What::Success => "success",
            What::Done => "done",
        };
        match self.threshold {
            Threshold::Count(n) => write!(f, "{when},{what}={n}"),
            Threshold::Percent(p) => write!(f, "{when},{what}={p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gnu_syntax() {
        let p = HaltPolicy::parse("now,fail=1").unwrap().unwrap();
        assert_eq!(
            (p.when, p.what, p.threshold),
            (When::Now, What::Fail, Threshold::Count(1))
        );
        let p = HaltPolicy::parse("soon,fail=10%").unwrap().unwrap();
        assert_eq!(p.threshold, Threshold::Percent(10.0));
        let p = HaltPolicy::parse("now,success").unwrap().unwrap();
        assert_eq!((p.what, p.threshold), (What::Success, Threshold::Count(1)));
        assert_eq!(
            HaltPolicy::parse("2").unwrap().unwrap().to_string(),
            "now,fail=1"
        );
        assert_eq!(
            HaltPolicy::parse("1").unwrap().unwrap().to_string(),
            "soon,fail=1"
        );
        assert_eq!(HaltPolicy::parse("0").unwrap(), None);
        for bad in [
            "",
            "now",
            "later,fail=1",
            "now,oops=1",
            "now,fail=0",
            "now,fail=x",
            "soon,done=101%",
        ] {
            assert!(HaltPolicy::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn thresholds() {
        let p = HaltPolicy::parse("now,fail=2").unwrap().unwrap();
        assert!(!p.reached(1, 10, Some(100)));
        assert!(p.reached(2, 0, Some(100)));
        assert!(p.reached(2, 0, None));
        let p = HaltPolicy::parse("soon,done=50%").unwrap().unwrap();
        assert!(!p.reached(10, 39, Some(100)));
        assert!(p.reached(10, 40, Some(100)));
    }

    #[test]
    fn a_percentage_is_of_the_total_when_it_is_known() {
        let p = HaltPolicy::parse("soon,fail=20%").unwrap().unwrap();
        assert!(!p.reached(1, 0, Some(10)), "1 of 10 is 10 %");
        assert!(p.reached(2, 0, Some(10)));
        assert!(p.reached(2, 3, Some(10)));
    }

    #[test]
    fn a_percentage_of_an_unknown_total_waits_for_enough_finished_jobs() {
        let p = HaltPolicy::parse("soon,fail=20%").unwrap().unwrap();
        assert!(!p.reached(1, 0, None));
        assert!(!p.reached(5, 4, None), "9 finished: too few to judge");
        assert!(p.reached(5, 5, None));
        assert!(!p.reached(1, 9, None), "1 of 10 finished is 10 %");
    }
}
