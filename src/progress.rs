//! Progress on stderr: the original tool's log lines (`[3/100] returned 0 in ... on host: cmd`).

use std::io::Write;
use std::time::Instant;

use chrono::Local;

use crate::job::{JobResult, Status};
use crate::timefmt;

/// How much goes to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Errors only (`-q`).
    Quiet,
    /// A line at start, one per finished job, one at the end.
    Normal,
    /// Normal, plus a line when each job starts (`-v`).
    Verbose,
}

/// Writes the log lines. Each line is written whole with one `write` call.
#[derive(Debug)]
pub struct Logger {
    verbosity: Verbosity,
    started: Instant,
}

impl Logger {
    pub fn new(verbosity: Verbosity) -> Logger {
        Logger {
            verbosity,
            started: Instant::now(),
        }
    }

    fn line(&self, text: std::fmt::Arguments<'_>) {
        let line = format!("{} {}\n", timefmt::log_stamp(&Local::now()), text);
        // A closed or full stderr must not stop the run.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    /// `total 100 jobs on 48 engines` (`?` while the total is not known yet).
    pub fn start(&self, total: Option<u64>, engines: usize) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        self.line(format_args!(
            "total {} jobs on {} engines",
            count(total),
            engines
        ));
    }

    /// One line per finished job: `[3/100] returned 0 in 0:00:00.012 sec on host: cmd`.
    pub fn finished(&self, done: u64, total: Option<u64>, result: &JobResult, cmd: &str) {
        let failed = result.status != Status::Ok;
        if self.verbosity == Verbosity::Quiet && !failed {
            return;
        }
        if result.started.is_none() {
            let why = result.error.as_deref().unwrap_or("not run");
            let seq = result.seq;
            let status = if result.status == Status::Aborted {
                "aborted"
            } else {
                "error"
            };
            self.line(format_args!(
                "[{done}/{}] {status}: job {seq} did not run: {why}",
                count(total)
            ));
            return;
        }
        let host = result.host.as_deref().unwrap_or("-");
        let elapsed = std::time::Duration::from_secs_f64(result.elapsed.unwrap_or(0.0));
        let what = match (result.status, result.code, &result.signal) {
            (Status::Ok, Some(code), _) => format!("returned {code}"),
            (Status::Ok, None, _) => "returned".to_string(),
            (Status::Error, ..) => {
                format!("failed ({})", result.error.as_deref().unwrap_or("error"))
            }
            (Status::Aborted, _, Some(sig)) => format!("aborted ({sig})"),
            (Status::Aborted, ..) => {
                format!("aborted ({})", result.error.as_deref().unwrap_or("stopped"))
            }
        };
        self.line(format_args!(
            "[{done}/{}] {what} in {} sec on {host}: {}",
            count(total),
            timefmt::elapsed_hms(elapsed),
            one_line(cmd),
        ));
    }

    /// A job skipped by `--resume` (its earlier result line is copied through).
    pub fn skipped(&self, done: u64, total: Option<u64>, cmd: &str) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        self.line(format_args!("[{done}/{}] skipped (already done, --resume): {}", count(total), one_line(cmd)));
    }

    /// `-v`: a job started.
    pub fn started(&self, seq: u64, host: &str, cmd: &str) {
        if self.verbosity != Verbosity::Verbose {
            return;
        }
        self.line(format_args!("job {seq} started on {host}: {}", one_line(cmd)));
    }

    /// A warning or error about the run itself (shown even with `-q`).
    pub fn warn(&self, text: &str) {
        self.line(format_args!("{text}"));
    }

    /// `completed: 100 jobs, 2 failed, in 0:00:10.000000`.
    pub fn completed(&self, done: u64, failed: u64) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        self.line(format_args!(
            "completed: {done} jobs, {failed} failed, in {}",
            timefmt::elapsed_hms(self.started.elapsed())
        ));
    }
}

fn count(total: Option<u64>) -> String {
    total.map_or_else(|| "?".to_string(), |t| t.to_string())
}

/// A command as one log line: newlines shown as `\n`, very long commands cut.
fn one_line(cmd: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 200;
    if cmd.len() <= MAX && !cmd.contains(['\n', '\r']) {
        return cmd.into();
    }
    let mut s: String = cmd.replace('\n', "\\n").replace('\r', "\\r");
    if s.len() > MAX {
        let mut cut = MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s.into()
}
