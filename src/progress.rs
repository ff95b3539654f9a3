//! Progress on stderr: the original tool's log lines (`[3/100] returned 0 in ... on host: cmd`)
//! when stderr is not a terminal, a live progress display (done/total, running jobs per host,
//! failures, rate, ETA) when it is.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::Local;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::job::{JobResult, Status, STOPPED_BY_BAKAPARA};
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

/// How many jobs run on one host right now. Its executor holds a [`RunningGuard`] from
/// [`RunningJobs::enter`] for as long as a job runs; the progress display reads the count.
#[derive(Debug, Clone, Default)]
pub struct RunningJobs(Arc<AtomicUsize>);

impl RunningJobs {
    /// A job started: counted until the guard is dropped.
    #[must_use]
    pub fn enter(&self) -> RunningGuard {
        self.0.fetch_add(1, Ordering::SeqCst);
        RunningGuard(Arc::clone(&self.0))
    }

    #[must_use]
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A running job, counted in its host's [`RunningJobs`] until dropped.
#[derive(Debug)]
pub struct RunningGuard(Arc<AtomicUsize>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How often the live display is redrawn (rate, ETA and running counts change by themselves).
const REFRESH: Duration = Duration::from_millis(100);

/// Writes the log lines, or drives the live display. Each log line is written whole with one
/// `write` call; with the live display, above it.
#[derive(Debug)]
pub struct Logger {
    verbosity: Verbosity,
    started: Instant,
    /// True when stderr gets the live display rather than a line per job.
    live: bool,
    shared: Arc<Shared>,
    display: Mutex<Option<Display>>,
    /// With `-q`: jobs bakapara itself stopped or never started (Ctrl-C, `--halt`); told in
    /// one line at the end instead of one line each.
    quiet_aborts: Mutex<QuietAborts>,
    /// Writes nothing to stderr (see [`Logger::silent`]).
    silent: bool,
}

/// What the live display shows, updated by the run and read by the refresh thread.
#[derive(Debug)]
struct Shared {
    hosts: Mutex<Vec<(String, RunningJobs)>>,
    counts: Mutex<Counts>,
    /// The number of jobs, announced by the input reader when it hit the end of its input
    /// (before the scheduler has taken every job).
    input_total: Arc<OnceLock<u64>>,
    /// The live display's bar while it is shown, for [`Suspender`]s on other threads.
    bar: Mutex<Option<ProgressBar>>,
}

impl Shared {
    fn counts(&self) -> Counts {
        let mut counts = self.counts.lock().map(|c| *c).unwrap_or_default();
        if counts.total.is_none() {
            counts.total = self.input_total.get().copied();
        }
        counts
    }
}

#[derive(Debug, Clone, Default)]
struct QuietAborts {
    stopped: u64,
    not_started: u64,
    /// Why the first was (the rest share it: one signal or one halt stops them all).
    why: Option<String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    done: u64,
    failed: u64,
    total: Option<u64>,
    /// When the display started (rate and ETA count from there).
    since: Option<Instant>,
}

/// Takes the live display off the screen around a write from another thread (the live output
/// of `--line-buffer` / `--ungroup`).
#[derive(Debug, Clone)]
pub struct Suspender(Arc<Shared>);

impl Suspender {
    /// Runs `f` with the live display, if it is shown, off the screen.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        let bar = self.0.bar.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }
}

impl crate::live::Suspend for Suspender {
    fn around(&self, write: &mut dyn FnMut()) {
        self.suspend(write);
    }
}

/// The live display while it is shown: the bar and the thread that refreshes it.
#[derive(Debug)]
struct Display {
    bar: ProgressBar,
    stop: Option<mpsc::Sender<()>>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

impl Display {
    fn stop_refresher(&mut self) {
        self.stop = None;
        if let Some(thread) = self.refresher.take() {
            let _ = thread.join();
        }
    }
}

impl Logger {
    /// Log lines on stderr, whatever stderr is.
    #[must_use]
    pub fn new(verbosity: Verbosity) -> Logger {
        Logger {
            verbosity,
            started: Instant::now(),
            live: false,
            shared: Arc::new(Shared {
                hosts: Mutex::new(Vec::new()),
                counts: Mutex::new(Counts::default()),
                input_total: Arc::default(),
                bar: Mutex::new(None),
            }),
            display: Mutex::new(None),
            quiet_aborts: Mutex::default(),
            silent: false,
        }
    }

    /// No log line and no display at all: stderr is not touched (the library's default).
    #[must_use]
    pub fn silent() -> Logger {
        let mut logger = Logger::new(Verbosity::Quiet);
        logger.silent = true;
        logger
    }

    /// The live display when stderr is a terminal (not with `-q`, nor on a `TERM=dumb` one),
    /// else log lines.
    #[must_use]
    pub fn for_stderr(verbosity: Verbosity) -> Logger {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        let mut logger = Logger::new(verbosity);
        logger.live = verbosity != Verbosity::Quiet && !dumb && std::io::stderr().is_terminal();
        logger
    }

    /// Takes the total from `total` as soon as the input reader sets it (the reader's
    /// [`crate::input::ReaderState::total`]), for the display and the `[k/N]` of log lines.
    /// Call before the logger is shared.
    #[must_use]
    pub fn with_input_total(mut self, total: Arc<OnceLock<u64>>) -> Logger {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.input_total = total;
        }
        self
    }

    /// True when stderr shows the live display (output to the terminal must go through
    /// [`Logger::suspend`]).
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// The running-jobs counter of host `name`, shown per host in the live display; its
    /// executor counts its jobs there.
    pub fn running(&self, name: &str) -> RunningJobs {
        let counter = RunningJobs::default();
        if let Ok(mut hosts) = self.shared.hosts.lock() {
            hosts.push((name.to_string(), counter.clone()));
        }
        counter
    }

    /// Runs `f` (which writes to the terminal) with the live display taken off the screen, and
    /// draws it again afterwards.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match self.bar() {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// A handle for another thread that writes to the terminal (see [`Suspender::suspend`]).
    pub fn suspender(&self) -> Suspender {
        Suspender(Arc::clone(&self.shared))
    }

    fn bar(&self) -> Option<ProgressBar> {
        let display = self.display.lock().ok()?;
        display.as_ref().map(|d| d.bar.clone())
    }

    fn line(&self, text: std::fmt::Arguments<'_>) {
        self.line_and(text, "");
    }

    /// A log line followed by `more` (whole lines, each ending with a newline), written at once
    /// so that no other line comes between.
    fn line_and(&self, text: std::fmt::Arguments<'_>, more: &str) {
        if self.silent {
            return;
        }
        let line = format!("{} {}\n{more}", timefmt::log_stamp(&Local::now()), text);
        // A closed or full stderr must not stop the run.
        self.suspend(|| {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        });
    }

    fn update(&self, f: impl FnOnce(&mut Counts)) {
        if let Ok(mut counts) = self.shared.counts.lock() {
            f(&mut counts);
        }
    }

    /// Redraws the live display now (after a change the refresh thread would show late).
    fn redraw(&self) {
        if let Some(bar) = self.bar() {
            refresh(&bar, &self.shared);
        }
    }

    fn counts(&self) -> Counts {
        self.shared.counts()
    }

    /// The total given, or else the one the input reader announced.
    fn total_or_input(&self, total: Option<u64>) -> Option<u64> {
        total.or_else(|| self.shared.input_total.get().copied())
    }

    /// `total 100 jobs on 48 engines` (`?` while the total is not known yet; `engines`
    /// counts the slots of hosts still connecting, and `connecting` is how many of those have
    /// a slot count still to be asked: `... on 8 engines and 2 hosts still connecting`); with
    /// the live display, the display starts instead.
    pub fn start(&self, total: Option<u64>, engines: usize, connecting: usize) {
        if self.verbosity == Verbosity::Quiet {
            return;
        }
        if let Some(total) = total {
            self.update(|c| c.total = Some(total));
        }
        if !self.live {
            let hosts = match connecting {
                0 => String::new(),
                1 => " and 1 host still connecting".to_string(),
                n => format!(" and {n} hosts still connecting"),
            };
            self.line(format_args!(
                "total {} jobs on {} engines{hosts}",
                count(total),
                engines
            ));
            return;
        }
        let Ok(mut display) = self.display.lock() else {
            return;
        };
        if display.is_some() {
            return;
        }
        self.update(|c| c.since = Some(Instant::now()));
        let counts = self.counts();
        let bar = ProgressBar::with_draw_target(counts.total, ProgressDrawTarget::stderr());
        bar.set_style(bar_style(counts.total.is_some()));
        bar.set_position(counts.done);
        bar.set_message(render(&self.shared));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let refresher = {
            let bar = bar.clone();
            let shared = Arc::clone(&self.shared);
            std::thread::Builder::new()
                .name("bakapara-progress".into())
                .spawn(move || {
                    crate::signals::keep_off_this_thread();
                    while let Err(mpsc::RecvTimeoutError::Timeout) = stop_rx.recv_timeout(REFRESH) {
                        refresh(&bar, &shared);
                        bar.tick();
                    }
                })
                .ok()
        };
        if let Ok(mut shared) = self.shared.bar.lock() {
            *shared = Some(bar.clone());
        }
        *display = Some(Display {
            bar,
            stop: Some(stop_tx),
            refresher,
        });
    }

    /// The total number of jobs, once it is known.
    pub fn set_total(&self, total: u64) {
        self.update(|c| c.total = Some(total));
        self.redraw();
    }

    /// One line per finished job: `[3/100] returned 0 in 0:00:00.012 sec on host: cmd`. With
    /// the live display, only failed jobs get their line, above it (all do with `-v`).
    /// In log-line mode a failed job's line is followed by the tail of its captured stderr.
    /// With `-q` only failed jobs get their line, and jobs bakapara stopped or never started
    /// itself are counted into one line at the end ([`Logger::completed`]).
    pub fn finished(&self, done: u64, total: Option<u64>, result: &JobResult, cmd: &str) {
        let total = self.total_or_input(total);
        // Errors and aborts always get their line; with the live display or -q, so do jobs
        // that returned a code other than 0.
        let quiet = self.verbosity == Verbosity::Quiet;
        let failed = result.status != Status::Ok || ((self.live || quiet) && result.failed());
        let stopped_by_us = stopped_by_bakapara(result);
        self.update(|c| {
            c.done = done;
            c.failed += u64::from(result.failed());
            if total.is_some() {
                c.total = total;
            }
        });
        if self.live {
            self.redraw();
        }
        let hide = match (self.live, self.verbosity) {
            (_, Verbosity::Quiet) | (true, Verbosity::Normal) => true,
            (_, Verbosity::Verbose) | (false, Verbosity::Normal) => false,
        };
        if hide && !failed {
            return;
        }
        if stopped_by_us && self.verbosity == Verbosity::Quiet {
            if let Ok(mut aborts) = self.quiet_aborts.lock() {
                if result.started.is_some() {
                    aborts.stopped += 1;
                } else {
                    aborts.not_started += 1;
                }
                if aborts.why.is_none() {
                    // "not started: WHY" or "stopped before it ended: WHY".
                    let error = result.error.as_deref().unwrap_or("");
                    let why = error.split_once(": ").map_or(error, |(_, why)| why);
                    aborts.why = Some(why.to_string());
                }
            }
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
        let tail = match (self.live, result.failed() && !stopped_by_us) {
            (false, true) => stderr_tail(result),
            _ => String::new(),
        };
        self.line_and(
            format_args!(
                "[{done}/{}] {what} in {} sec on {host}: {}",
                count(total),
                timefmt::elapsed_hms(elapsed),
                one_line(cmd),
            ),
            &tail,
        );
    }

    /// A job skipped by `--resume` (its earlier result line is copied through).
    pub fn skipped(&self, done: u64, total: Option<u64>, cmd: &str) {
        let total = self.total_or_input(total);
        self.update(|c| {
            c.done = done;
            if total.is_some() {
                c.total = total;
            }
        });
        if self.live {
            self.redraw();
        }
        if self.verbosity == Verbosity::Quiet || (self.live && self.verbosity == Verbosity::Normal)
        {
            return;
        }
        self.line(format_args!(
            "[{done}/{}] skipped (already done, --resume): {}",
            count(total),
            one_line(cmd)
        ));
    }

    /// `-v`: a job started.
    pub fn started(&self, seq: u64, host: &str, cmd: &str) {
        if self.verbosity != Verbosity::Verbose {
            return;
        }
        self.line(format_args!(
            "job {seq} started on {host}: {}",
            one_line(cmd)
        ));
    }

    /// A warning or error about the run itself (shown even with `-q`).
    pub fn warn(&self, text: &str) {
        self.line(format_args!("{text}"));
    }

    /// `completed: 100 jobs, 2 failed, in 0:00:10.000000`; with the live display, its last
    /// state stays on the screen as one line: `completed: 100/100 done, 2 failed, in ...`.
    pub fn completed(&self, done: u64, failed: u64) {
        if self.verbosity == Verbosity::Quiet {
            let aborts = self
                .quiet_aborts
                .lock()
                .map(|a| a.clone())
                .unwrap_or_default();
            let aborted = aborts.stopped + aborts.not_started;
            if aborted > 0 {
                let why = aborts.why.as_deref().unwrap_or("bakapara stopped them");
                let jobs = if aborted == 1 { "job" } else { "jobs" };
                self.line(format_args!(
                    "aborted {aborted} {jobs} ({} stopped, {} not started): {why}",
                    aborts.stopped, aborts.not_started
                ));
            }
            return;
        }
        let taken = self.display.lock().ok().and_then(|mut d| d.take());
        if let Ok(mut shared) = self.shared.bar.lock() {
            *shared = None;
        }
        if let Some(mut display) = taken {
            display.stop_refresher();
            let total = self.counts().total.unwrap_or(done).max(done);
            let elapsed = self.started.elapsed();
            display.bar.set_style(
                ProgressStyle::with_template("{msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            display.bar.finish_with_message(format!(
                "completed: {done}/{total} done, {failed} failed, in {} ({})",
                timefmt::elapsed_hms(elapsed),
                rate_text(done, elapsed)
            ));
            return;
        }
        self.line(format_args!(
            "completed: {done} jobs, {failed} failed, in {}",
            timefmt::elapsed_hms(self.started.elapsed())
        ));
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        if let Ok(mut shared) = self.shared.bar.lock() {
            *shared = None;
        }
        // A run that ended without `completed` leaves the display as it was, without its thread.
        if let Some(mut display) = self.display.get_mut().ok().and_then(Option::take) {
            display.stop_refresher();
            display.bar.abandon();
        }
    }
}

/// True for a job bakapara stopped or never started itself (Ctrl-C, SIGTERM, `--halt`), as
/// opposed to one that failed on its own (killed by a signal bakapara did not send included).
fn stopped_by_bakapara(result: &JobResult) -> bool {
    result.status == Status::Aborted
        && (result.started.is_none()
            || result
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with(STOPPED_BY_BAKAPARA)))
}

/// How many lines of a failed job's stderr follow its log line, and how long each may be.
const TAIL_LINES: usize = 10;
const TAIL_WIDTH: usize = 200;

/// The last [`TAIL_LINES`] lines of a job's captured stderr, each indented by four spaces and
/// cut at [`TAIL_WIDTH`] characters; empty when nothing was captured (`--text` prints it
/// itself, an `err` file holds it). A line redrawn with `\r` (progress meters) shows as a
/// terminal would show it: its last part.
fn stderr_tail(result: &JobResult) -> String {
    let Some(stream) = &result.stderr else {
        return String::new();
    };
    let captured = &stream.captured;
    if captured.spool.is_some() {
        return String::new();
    }
    tail_text(&captured.bytes, captured.truncated)
}

/// See [`stderr_tail`]; `truncated`: the capture limit cut the stream.
fn tail_text(bytes: &[u8], truncated: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.trim_end_matches(['\n', '\r']).split('\n').collect();
    if lines == [""] {
        return String::new();
    }
    let mut tail = String::new();
    let skipped = lines.len().saturating_sub(TAIL_LINES);
    if skipped > 0 {
        let s = if skipped == 1 { "" } else { "s" };
        tail.push_str(&format!("    … ({skipped} line{s} before)\n"));
    }
    for line in &lines[skipped..] {
        let shown = line
            .rsplit('\r')
            .find(|part| !part.is_empty())
            .unwrap_or("");
        tail.push_str("    ");
        match shown.char_indices().nth(TAIL_WIDTH) {
            Some((cut, _)) => {
                tail.push_str(&shown[..cut]);
                tail.push('…');
            }
            None => tail.push_str(shown),
        }
        tail.push('\n');
    }
    if truncated {
        tail.push_str("    … (stderr was longer than --capture-limit: its end was not kept)\n");
    }
    tail
}

/// Brings the live display up to date: counts, text, and the bar once the total is known.
fn refresh(bar: &ProgressBar, shared: &Shared) {
    let counts = shared.counts();
    if let Some(total) = counts.total {
        if bar.length() != Some(total) {
            bar.set_style(bar_style(true));
            bar.set_length(total);
        }
    }
    bar.set_position(counts.done);
    bar.set_message(render(shared));
}

/// The live display's style: a bar once the total is known, a spinner before.
fn bar_style(total_known: bool) -> ProgressStyle {
    let template = if total_known {
        "{spinner} [{bar:24}] {wide_msg}"
    } else {
        "{spinner} {wide_msg}"
    };
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .tick_chars("|/-\\ ")
        .progress_chars("=> ")
}

/// The live display's text: `7/12 done · 1 failed · 3.4/s · ETA 0:00:02 · running 2 on host`.
/// What matters most comes first, as a narrow terminal cuts the end.
fn render(shared: &Shared) -> String {
    let counts = shared.counts();
    let elapsed = counts.since.map(|t| t.elapsed()).unwrap_or_default();
    let eta = match counts.total {
        Some(total) if counts.done >= total => "0:00:00".to_string(),
        Some(total) if counts.done > 0 => {
            let per_job = elapsed.as_secs_f64() / counts.done as f64;
            hms((total - counts.done) as f64 * per_job)
        }
        _ => "?".to_string(),
    };
    let mut text = format!(
        "{}/{} done · {} failed · {} · ETA {eta} · running ",
        counts.done,
        count(counts.total),
        counts.failed,
        rate_text(counts.done, elapsed),
    );
    let hosts = shared.hosts.lock();
    match hosts.as_ref().map(|h| h.as_slice()) {
        Ok([(name, running)]) => text.push_str(&format!("{} on {name}", running.count())),
        Ok(hosts) => {
            let total: usize = hosts.iter().map(|(_, r)| r.count()).sum();
            text.push_str(&total.to_string());
            for (i, (name, running)) in hosts.iter().enumerate() {
                text.push_str(if i == 0 { ": " } else { ", " });
                text.push_str(&format!("{name} {}", running.count()));
            }
        }
        Err(_) => text.push('?'),
    }
    text
}

fn rate_text(done: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs <= 0.0 {
        return "- jobs/s".to_string();
    }
    let rate = done as f64 / secs;
    if rate >= 10.0 {
        format!("{rate:.0} jobs/s")
    } else {
        format!("{rate:.2} jobs/s")
    }
}

/// Whole seconds as `H:MM:SS`.
fn hms(secs: f64) -> String {
    // Saturating: a NaN is 0, an absurd ETA the largest number.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let secs = secs.max(0.0).round() as u64;
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_jobs_count_until_the_guard_drops() {
        let running = RunningJobs::default();
        let a = running.enter();
        let b = running.enter();
        assert_eq!(running.count(), 2);
        drop(a);
        assert_eq!(running.count(), 1);
        drop(b);
        assert_eq!(running.count(), 0);
    }

    #[test]
    fn the_display_text_shows_counts_rate_eta_and_hosts() {
        let logger = Logger::new(Verbosity::Normal);
        let a = logger.running("mez01");
        let _job = a.enter();
        let text = render(&logger.shared);
        assert!(text.starts_with("0/? done · 0 failed · "), "{text}");
        assert!(text.contains("ETA ?"), "{text}");
        assert!(text.ends_with("running 1 on mez01"), "{text}");
        let _b = logger.running("mez02");
        logger.update(|c| {
            c.done = 3;
            c.failed = 1;
            c.total = Some(6);
        });
        let text = render(&logger.shared);
        assert!(text.starts_with("3/6 done · 1 failed · "), "{text}");
        assert!(text.ends_with("running 1: mez01 1, mez02 0"), "{text}");
        assert!(!text.contains("ETA ?"), "{text}");
    }

    #[test]
    fn a_stderr_tail_is_the_last_lines_indented_and_cut() {
        assert_eq!(tail_text(b"", false), "");
        assert_eq!(tail_text(b"\n", false), "");
        assert_eq!(tail_text(b"oops", false), "    oops\n");
        let many: String = (1..=12).map(|i| format!("e{i}\n")).collect();
        let tail = tail_text(many.as_bytes(), false);
        assert!(
            tail.starts_with("    … (2 lines before)\n    e3\n"),
            "{tail}"
        );
        assert!(tail.ends_with("    e12\n"), "{tail}");
        assert_eq!(tail.lines().count(), 11);
        let long = "é".repeat(300);
        let tail = tail_text(long.as_bytes(), true);
        let first = tail.lines().next().unwrap_or_default();
        assert_eq!(first.chars().count(), 4 + TAIL_WIDTH + 1, "{first}");
        assert!(first.ends_with('…'));
        assert!(tail.ends_with("its end was not kept)\n"), "{tail}");
        assert_eq!(tail_text(b"10%\r55%\r100%\r\n", false), "    100%\n");
        assert_eq!(
            tail_text(b"\xff\xfebad\n", false),
            "    \u{fffd}\u{fffd}bad\n"
        );
    }

    #[test]
    fn the_total_the_input_reader_announces_is_shown() {
        let total = Arc::new(OnceLock::new());
        let logger = Logger::new(Verbosity::Normal).with_input_total(Arc::clone(&total));
        assert!(render(&logger.shared).starts_with("0/? done"));
        assert_eq!(logger.total_or_input(None), None);
        total.set(20).unwrap();
        assert!(render(&logger.shared).starts_with("0/20 done"));
        assert_eq!(logger.total_or_input(None), Some(20));
        // A total the run gives itself wins.
        assert_eq!(logger.total_or_input(Some(19)), Some(19));
    }

    #[test]
    fn hms_rounds_to_whole_seconds() {
        assert_eq!(hms(0.4), "0:00:00");
        assert_eq!(hms(3725.6), "1:02:06");
    }
}
