//! The one writer of stdout: result lines, whole and flushed, in completion or input order;
//! or with `--text`, each job's own output, whole per job (result lines then go to
//! `--joblog FILE` only). The scheduler's side ([`Output`]) orders and counts; a thread of its
//! own ([`Writer`]) does every write that could wait for a reader, so a slow or stuck reader
//! never holds up job supervision, and the scheduler learns of a failed write from
//! [`WriterState`]. A result line that cannot wait (stdout is a file, `/dev/null`, or a pipe
//! with room for it, and nothing is queued before it) is written by the scheduler itself,
//! without a thread wake-up per job (2000 short jobs at `-j 2` took about 6 % less time).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::Value;

use crate::exec::Spool;
use crate::job::{encode_line, Job, JobResult, Stream};
use crate::live::LiveSink;
use crate::progress::Logger;
use crate::results::{capture_from_spool, ResultsDir};
use crate::signals::{Controls, Event};
use crate::template::{Context, Quoting, Template};

/// Bytes of output the writer may have waiting before no new job starts (back-pressure): the
/// jobs already running still get their lines queued, so memory stays within this plus one
/// line per slot.
const MAX_QUEUED_BYTES: usize = 8 << 20;

/// What a `--text` entry weighs in the queue beyond its result line: it holds spool files
/// open, so a stuck reader must not let thousands of them pile up.
const TEXT_ENTRY_WEIGHT: usize = 64 << 10;

/// After a signal stopped the run, how long its last lines may take to be written before
/// bakapara gives up on a reader that does not read (and dies of the signal all the same).
const DRAIN_AFTER_SIGNAL: Duration = Duration::from_secs(1);

/// With `-k --text`: how many spool files finished jobs may hold open while they wait for an
/// earlier job; the output of later ones is copied into one shared file instead, so a slow
/// first job cannot make bakapara run out of file descriptors.
const MAX_HELD_SPOOLS: usize = 64;

/// Orders result lines (`-k`), counts what the exit status needs, and hands every write to
/// the [`Writer`] thread.
pub struct Output {
    keep_order: bool,
    /// `--text` (and `--tag`): job output to stdout / stderr instead of result lines.
    text: Option<TextMode>,
    /// `--joblog FILE`, until [`Output::writer`] hands it to the writer.
    joblog: Option<Joblog>,
    /// `--results DIR`, and the capture limit for result lines of streams spooled for it.
    results: Option<(ResultsDir, usize)>,
    /// `--line-buffer` / `--ungroup`: the writer of jobs' output as it comes, whose write
    /// errors count as this writer's own.
    live: Option<LiveSink>,
    /// With `-k`: finished jobs waiting for an earlier job, by seq.
    pending: BTreeMap<u64, Entry>,
    /// With `-k`: the seq of the next line to write.
    next_seq: u64,
    logger: Arc<Logger>,
    done: u64,
    failed: u64,
    total: Option<u64>,
    /// With `-k --text`: output of waiting jobs beyond [`MAX_HELD_SPOOLS`].
    spill: Option<Arc<File>>,
    /// With `-k --text`: spool files waiting entries hold open.
    held_spools: usize,
    /// The writer's queue; `None` once closed (or before [`Output::writer`]).
    tx: Option<mpsc::Sender<Piece>>,
    /// The writer's own state, for the pieces written here (see [`Output::send`]).
    inline: Option<Arc<Mutex<dyn TakeNow>>>,
    state: Arc<WriterState>,
    /// Failures already reported by [`Output::new_failure`].
    reported: Reported,
    /// `--gather`: every job's stdout, printed folded by host at the end.
    gathered: Option<crate::gather::Gathered>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Reported {
    stdout: bool,
    joblog: bool,
}

/// What the writer thread and the scheduler share: how much waits to be written, what failed,
/// and a wake-up for the scheduler when either changes.
#[derive(Debug, Default)]
pub struct WriterState {
    queued: AtomicUsize,
    failures: Mutex<Failures>,
    wake: tokio::sync::Notify,
    /// The writer thread has written (or dropped) everything and ended.
    finished: AtomicBool,
    /// bakapara gave up waiting for a writer stuck in a write (see [`Output::flush`]).
    abandoned: AtomicBool,
}

#[derive(Debug, Default)]
struct Failures {
    stdout: Option<std::io::Error>,
    joblog: Option<String>,
}

impl WriterState {
    /// True when bakapara stopped waiting for a writer that is stuck writing to a reader that
    /// does not read: the thread cannot be joined.
    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }
}

/// A failed output, as the run must act on it (SPEC §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputFailure {
    /// The reader of stdout went away (EPIPE): stop, quietly, and exit 141.
    BrokenPipe,
    /// stdout or the joblog cannot be written (disk full...): this message, stop, exit 255.
    Failed(String),
}

/// One unit of work for the writer thread.
enum Piece {
    /// A finished job: its result line (stdout unless `--text`, and the joblog) and, with
    /// `--text`, what it printed.
    Entry(Box<Entry>),
    /// A line for stdout only (`--dry-run`).
    Raw(Vec<u8>),
}

impl Piece {
    fn weight(&self) -> usize {
        match self {
            Piece::Entry(entry) => {
                entry.line.len() + entry.text.as_ref().map_or(0, |_| TEXT_ENTRY_WEIGHT)
            }
            Piece::Raw(line) => line.len(),
        }
    }
}

#[derive(Debug, Clone)]
struct TextMode {
    tag: bool,
    /// `--tagstring`: the tag as a template instead of the job's input.
    tagstring: Option<Template>,
    /// `--line-buffer` / `--ungroup`: jobs on these hosts had their output passed on as it
    /// came; what they spooled (for `--results`) is not printed again.
    printed_live: Vec<String>,
}

struct Joblog {
    file: File,
    path: PathBuf,
    /// Whether a write to it may wait (a FIFO named as the joblog).
    reach: Reach,
}

/// Whether a write to a descriptor can wait for someone else to read, as told by what the
/// descriptor is. A regular file or `/dev/null` never waits for a reader (a hung network file
/// system would stall bakapara's scheduler as it stalls any program writing there); a pipe
/// takes a line of at most `PIPE_BUF` bytes without waiting when poll(2) says it has room; a
/// terminal (flow control), a socket or a writer bakapara knows nothing of may always wait.
#[derive(Debug)]
pub enum Reach {
    /// A regular file, a block device, `/dev/null` or `/dev/zero`.
    Never,
    /// A pipe or FIFO: a copy of its descriptor, polled before each write.
    IfRoom(OwnedFd),
    /// Anything else.
    Maybe,
}

impl Reach {
    /// What a write to `fd` may do.
    #[must_use]
    pub fn of(fd: BorrowedFd<'_>) -> Reach {
        use nix::sys::stat::{fstat, major, minor, SFlag};
        let Ok(st) = fstat(fd.as_raw_fd()) else {
            return Reach::Maybe;
        };
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        // /dev/null and /dev/zero are character devices 1:3 and 1:5 on Linux.
        let null_or_zero = major(st.st_rdev) == 1 && matches!(minor(st.st_rdev), 3 | 5);
        if kind == SFlag::S_IFREG
            || kind == SFlag::S_IFBLK
            || (kind == SFlag::S_IFCHR && null_or_zero)
        {
            Reach::Never
        } else if kind == SFlag::S_IFIFO {
            fd.try_clone_to_owned().map_or(Reach::Maybe, Reach::IfRoom)
        } else {
            Reach::Maybe
        }
    }

    /// True when `bytes` can be written now without waiting.
    fn takes(&self, bytes: usize) -> bool {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        match self {
            Reach::Never => true,
            // A pipe with a free buffer takes PIPE_BUF bytes whole; with no reader left the
            // write fails at once (EPIPE), which is no wait either.
            Reach::IfRoom(fd) if bytes <= nix::libc::PIPE_BUF => {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
                poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n == 1)
                    && fds[0]
                        .revents()
                        .is_some_and(|r| r.intersects(PollFlags::POLLOUT | PollFlags::POLLERR))
            }
            Reach::IfRoom(_) | Reach::Maybe => false,
        }
    }
}

/// A finished job's output: its result line and, with `--text`, what it printed.
struct Entry {
    line: Vec<u8>,
    text: Option<TextBlock>,
    /// With `--text` (not `-k`): the job's log line, written by the writer just before what
    /// the job printed, so that each block on stderr stays next to its own log line.
    log: Option<LogLine>,
}

/// The arguments of [`Logger::finished`] for a log line written later.
struct LogLine {
    done: u64,
    total: Option<u64>,
    result: JobResult,
    cmd: String,
}

/// What a job printed (`--text`), and the `--tag` prefix of its lines.
struct TextBlock {
    tag: Option<Vec<u8>>,
    stdout: Option<Held>,
    stderr: Option<Held>,
}

/// Spooled output: the job's own temp file, or (with `-k`, past [`MAX_HELD_SPOOLS`]) a range
/// of the shared spill file (read at its offset: the scheduler appends to it meanwhile).
enum Held {
    Spool(Spool),
    Spilled {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

impl Output {
    pub fn new(keep_order: bool, logger: Logger) -> Output {
        Output {
            keep_order,
            text: None,
            joblog: None,
            results: None,
            live: None,
            pending: BTreeMap::new(),
            next_seq: 1,
            logger: Arc::new(logger),
            done: 0,
            failed: 0,
            total: None,
            spill: None,
            held_spools: 0,
            tx: None,
            inline: None,
            state: Arc::new(WriterState::default()),
            reported: Reported::default(),
            gathered: None,
        }
    }

    /// `--gather` (with `--text`): jobs' stdout is kept until the end of the run, then
    /// printed once per distinct output under the range of the hosts that printed it.
    #[must_use]
    pub fn gather(mut self) -> Output {
        self.gathered = Some(crate::gather::Gathered::folded());
        self
    }

    /// `--onall` (with `--text`): each host's output printed in one piece at the end of the
    /// run, as GNU Parallel groups it per server.
    #[must_use]
    pub fn group_by_host(mut self) -> Output {
        self.gathered = Some(crate::gather::Gathered::by_host());
        self
    }

    /// `--text`: each job's stdout goes to `out` and its stderr to stderr, whole per job
    /// (spooled by the executors, see [`crate::exec::Captured::spooled`]); with `tag`, each
    /// line is prefixed with the job's input and a TAB. Result lines go to the joblog only.
    #[must_use]
    pub fn text(mut self, tag: bool) -> Output {
        self.text = Some(TextMode {
            tag,
            tagstring: None,
            printed_live: Vec::new(),
        });
        self
    }

    /// `--tagstring`: with `--text`, each line's tag is `template` expanded for the job (its
    /// values inserted as text, never quoted), then a TAB.
    #[must_use]
    pub fn tagstring(mut self, template: Template) -> Output {
        if let Some(mode) = &mut self.text {
            mode.tag = true;
            mode.tagstring = Some(template);
        }
        self
    }

    /// `--line-buffer` / `--ungroup`: the output of jobs that ran on `hosts` (by name) was
    /// passed on while they ran.
    #[must_use]
    pub fn printed_live(mut self, hosts: Vec<String>, live: LiveSink) -> Output {
        if let Some(mode) = &mut self.text {
            mode.printed_live = hosts;
        }
        self.live = Some(live);
        self
    }

    /// With `--line-buffer --tag`: the prefix of the lines of `job`, starting in slot `slot`
    /// (from 0), which its executor passes on as they come.
    #[must_use]
    pub fn live_tag(&self, job: &Job, slot: usize) -> Option<Vec<u8>> {
        let mode = self.text.as_ref()?;
        if !mode.tag || mode.printed_live.is_empty() {
            return None;
        }
        let cmd = match job.object.get("cmd") {
            Some(Value::String(cmd)) => cmd.as_str(),
            _ => "",
        };
        Some(tag_of(job, slot + 1, cmd, mode.tagstring.as_ref()))
    }

    /// `--joblog FILE`: every result line is also written to `file` (opened by the caller),
    /// flushed per line.
    #[must_use]
    pub fn joblog(mut self, file: File, path: PathBuf) -> Output {
        let reach = Reach::of(file.as_fd());
        self.joblog = Some(Joblog { file, path, reach });
        self
    }

    /// `--results DIR`: each finished job's stdout, stderr and seq also go under `dir`. The
    /// executors spool the streams whole for it; without `--text`, the result line then gets
    /// the first `capture_limit` bytes of each, as without `--results`.
    #[must_use]
    pub fn results(mut self, dir: ResultsDir, capture_limit: usize) -> Output {
        self.results = Some((dir, capture_limit));
        self
    }

    /// The writer of this output, to run on a thread of its own ([`Writer::run`]); it writes
    /// to `out` (and the joblog) what this side queues. Every write goes through that thread.
    pub fn writer<W: Write + Send>(&mut self, out: W) -> Writer<W> {
        let (tx, rx) = mpsc::channel();
        self.tx = Some(tx);
        let core = Arc::new(Mutex::new(Core {
            out: std::io::BufWriter::with_capacity(64 * 1024, out),
            reach: Reach::Maybe,
            stdout_on_terminal: std::io::stdout().is_terminal(),
            result_lines_to_stdout: self.text.is_none(),
            joblog: self.joblog.take(),
            logger: Arc::clone(&self.logger),
            state: Arc::clone(&self.state),
            stdout_failed: false,
        }));
        Writer {
            rx,
            core,
            state: Arc::clone(&self.state),
        }
    }

    /// As [`Output::writer`], for an `out` that writes to a descriptor which is `reach`: a
    /// line that cannot wait there is written by this side at once (see [`Output::send`]).
    pub fn writer_to<W: Write + Send + 'static>(&mut self, out: W, reach: Reach) -> Writer<W> {
        let writer = self.writer(out);
        writer.core().reach = reach;
        let inline: Arc<Mutex<dyn TakeNow>> = writer.core.clone();
        self.inline = Some(inline);
        writer
    }

    /// What the writer thread and this side share.
    #[must_use]
    pub fn state(&self) -> Arc<WriterState> {
        Arc::clone(&self.state)
    }

    #[must_use]
    pub fn logger(&self) -> &Logger {
        &self.logger
    }

    /// The total number of jobs, once it is known.
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
        self.logger.set_total(total);
    }

    /// Writes (or, with `-k`, queues) the result line of a finished job; with `--text`, what
    /// the job printed.
    pub fn emit(&mut self, job: &Job, result: &JobResult) {
        self.emit_counting(job, result, result.failed());
    }

    /// As [`Output::emit`], for a job a `--halt` stopped (or never started): not counted as
    /// failed, since the job that triggered the halt decides the exit status.
    pub fn emit_halted(&mut self, job: &Job, result: &JobResult) {
        self.emit_counting(job, result, false);
    }

    fn emit_counting(&mut self, job: &Job, result: &JobResult, failed: bool) {
        if let Some(e) = self.live.as_ref().and_then(LiveSink::take_error) {
            // Job output that could not be written stops the run as a result line would.
            if let Ok(mut failures) = self.state.failures.lock() {
                failures.stdout.get_or_insert(e);
            }
            self.state.wake.notify_one();
        }
        let captured;
        let result = match (&self.results, &self.text) {
            (Some((dir, limit)), text) => {
                self.write_results(dir, job, result);
                if text.is_some() {
                    result
                } else {
                    captured = JobResult {
                        stdout: result.stdout.clone().map(|s| capture(s, *limit)),
                        stderr: result.stderr.clone().map(|s| capture(s, *limit)),
                        ..result.clone()
                    };
                    &captured
                }
            }
            (None, _) => result,
        };
        self.done += 1;
        if failed {
            self.failed += 1;
        }
        let cmd = match job.object.get("cmd") {
            Some(Value::String(cmd)) => cmd.as_str(),
            _ => "",
        };
        let mut line = Vec::with_capacity(256);
        let entry = match &self.text {
            None => {
                self.logger.finished(self.done, self.total, result, cmd);
                encode_line(&job.object, result, &mut line);
                Entry {
                    line,
                    text: None,
                    log: None,
                }
            }
            Some(mode) => {
                // The output was printed, not captured: the result line leaves it out.
                let bare = JobResult {
                    stdout: None,
                    stderr: None,
                    ..result.clone()
                };
                encode_line(&job.object, &bare, &mut line);
                let mut block = TextBlock {
                    tag: mode.tag.then(|| {
                        let slot = result.engine_id.map_or(0, |e| e + 1);
                        tag_of(job, slot, cmd, mode.tagstring.as_ref())
                    }),
                    stdout: held(result.stdout.as_ref()),
                    stderr: held(result.stderr.as_ref()),
                };
                if let (Some(gathered), Some(host)) = (&mut self.gathered, &result.host) {
                    let mut bytes = Vec::new();
                    if let Some(held) = block.stdout.take() {
                        // (Writing into memory fails only when the spool cannot be read.)
                        let _ = copy_held(&held, block.tag.as_deref(), &mut bytes);
                    }
                    gathered.add(job.seq, host.clone(), bytes);
                }
                let live = result
                    .host
                    .as_ref()
                    .is_some_and(|h| mode.printed_live.contains(h));
                let has_text = !live && (block.stdout.is_some() || block.stderr.is_some());
                let log = LogLine {
                    done: self.done,
                    total: self.total,
                    // With its spooled streams: the log line may show the end of stderr.
                    result: result.clone(),
                    cmd: cmd.to_string(),
                };
                let log = if self.keep_order {
                    self.logger
                        .finished(log.done, log.total, &log.result, &log.cmd);
                    None
                } else {
                    Some(log)
                };
                Entry {
                    line,
                    text: has_text.then_some(block),
                    log,
                }
            }
        };
        self.place(job.seq, entry);
    }

    /// `--results`: the files of a job that ran. A failure is a warning: the job's output is
    /// still in its result line or was printed.
    fn write_results(&self, dir: &ResultsDir, job: &Job, result: &JobResult) {
        if result.started.is_none() {
            return;
        }
        let cmd = match job.object.get("cmd") {
            Some(Value::String(cmd)) => cmd.as_str(),
            _ => "",
        };
        let written = dir.write(
            &job_args(job, cmd),
            job.seq,
            result.stdout.as_ref().map(|s| &s.captured),
            result.stderr.as_ref().map(|s| &s.captured),
        );
        if let Err(why) = written {
            self.logger.warn(&format!("bakapara: --results: {why}"));
        }
    }

    /// Copies a result line from `--resume FILE` through unchanged for job `seq` (it counts as
    /// done and ok). `line` ends with a newline. With `--text` it goes to the joblog only (the
    /// job's output was printed by the earlier run).
    pub fn emit_copied(&mut self, seq: u64, line: Vec<u8>, cmd: &str) {
        self.done += 1;
        self.logger.skipped(self.done, self.total, cmd);
        self.place(
            seq,
            Entry {
                line,
                text: None,
                log: None,
            },
        );
    }

    /// Writes an entry now, or with `-k` once every earlier job's entry is written.
    fn place(&mut self, seq: u64, mut entry: Entry) {
        if !self.keep_order {
            self.write(entry);
            return;
        }
        if seq != self.next_seq {
            self.hold(&mut entry);
            self.pending.insert(seq, entry);
            return;
        }
        self.write(entry);
        self.next_seq += 1;
        while let Some(entry) = self.pending.remove(&self.next_seq) {
            self.release(&entry);
            self.write(entry);
            self.next_seq += 1;
        }
    }

    /// Keeps a waiting entry's spool files open, or past [`MAX_HELD_SPOOLS`] copies them
    /// into the spill file and closes them.
    fn hold(&mut self, entry: &mut Entry) {
        let Some(block) = &mut entry.text else { return };
        for stream in [&mut block.stdout, &mut block.stderr] {
            let Some(Held::Spool(spool)) = stream else {
                continue;
            };
            if self.held_spools < MAX_HELD_SPOOLS {
                self.held_spools += 1;
                continue;
            }
            match spill(&mut self.spill, spool) {
                Ok(range) => *stream = Some(range),
                // No room to spill: keep the file open rather than lose the output.
                Err(_) => self.held_spools += 1,
            }
        }
    }

    fn release(&mut self, entry: &Entry) {
        if let Some(block) = &entry.text {
            for stream in [&block.stdout, &block.stderr] {
                if let Some(Held::Spool(_)) = stream {
                    self.held_spools = self.held_spools.saturating_sub(1);
                }
            }
        }
    }

    fn write(&mut self, entry: Entry) {
        self.send(Piece::Entry(Box::new(entry)));
    }

    /// Queues a line for stdout alone (`--dry-run`).
    pub fn write_raw(&mut self, line: Vec<u8>) {
        self.send(Piece::Raw(line));
    }

    /// Hands `piece` to the writer: written here and now when nothing waits before it and it
    /// cannot wait for a reader ([`Core::take_now`]), else queued for the writer thread. The
    /// thread counts a piece as queued until it has written it, so nothing queued earlier is
    /// still unwritten when the count is 0.
    fn send(&mut self, piece: Piece) {
        let Some(tx) = &self.tx else { return };
        let piece = match &self.inline {
            // try_lock: the thread may hold the core in a write that waits; then queue.
            Some(core) if self.state.queued.load(Ordering::SeqCst) == 0 => match core.try_lock() {
                Ok(mut core) => match core.take_now(piece) {
                    None => return,
                    Some(piece) => piece,
                },
                Err(_) => piece,
            },
            _ => piece,
        };
        let weight = piece.weight();
        self.state.queued.fetch_add(weight, Ordering::SeqCst);
        if tx.send(piece).is_err() {
            // The writer thread is gone (it panicked): nothing more can be written.
            self.state.queued.fetch_sub(weight, Ordering::SeqCst);
        }
    }

    /// True while the writer has more waiting than [`MAX_QUEUED_BYTES`]: no new job should
    /// start until it catches up.
    #[must_use]
    pub fn backlogged(&self) -> bool {
        self.state.queued.load(Ordering::SeqCst) > MAX_QUEUED_BYTES
    }

    /// Writes what `-k` still holds (lines after a gap that will never be filled), in order,
    /// and closes the writer's queue (see [`Output::flush`]).
    pub fn finish(&mut self) {
        for (_, entry) in std::mem::take(&mut self.pending) {
            self.write(entry);
        }
        if let Some(gathered) = self.gathered.take() {
            let text = gathered.render();
            if !text.is_empty() {
                self.write_raw(text);
            }
        }
        self.held_spools = 0;
        self.tx = None;
        // The writer thread's handle is then the last: `out` closes when the thread ends.
        self.inline = None;
    }

    /// Waits until the writer (after [`Output::finish`]) has written everything. A reader that
    /// does not read is waited for as long as it takes, unless a signal stopped the run
    /// (`stopped`, or a signal while waiting): then it gets [`DRAIN_AFTER_SIGNAL`], a second
    /// signal ends the wait at once, and the lines still waiting are given up. Returns the
    /// signal that came while waiting. Then logs the run's `completed:` line.
    pub async fn flush(
        &mut self,
        controls: &mut Controls,
        stopped: bool,
    ) -> Option<nix::sys::signal::Signal> {
        let state = Arc::clone(&self.state);
        let mut deadline = stopped.then(|| tokio::time::Instant::now() + DRAIN_AFTER_SIGNAL);
        let mut signal = None;
        while !state.finished.load(Ordering::SeqCst) {
            let give_up = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = state.wake.notified() => {}
                event = controls.next() => match event {
                    Event::Interrupt(sig) if deadline.is_none() => {
                        signal = Some(sig);
                        deadline = Some(tokio::time::Instant::now() + DRAIN_AFTER_SIGNAL);
                    }
                    Event::Interrupt(sig) | Event::KillNow(sig) => {
                        signal.get_or_insert(sig);
                        deadline = Some(tokio::time::Instant::now());
                    }
                    Event::Hangup => {}
                },
                () = give_up => {
                    state.abandoned.store(true, Ordering::SeqCst);
                    self.logger.warn(
                        "bakapara: stdout is not being read: giving up on the result lines \
                         still waiting to be written",
                    );
                    break;
                }
            }
        }
        // Only now: the writer thread draws on the same terminal, and a last job's output
        // written during the display's last drawing could wipe the `completed:` line.
        self.logger.completed(self.done, self.failed);
        signal
    }

    /// Waits until the writer's state changed: a failed write, or its queue back under the
    /// back-pressure limit. Spurious wake-ups happen; check [`Output::new_failure`] and
    /// [`Output::backlogged`] after.
    pub async fn changed(&self) {
        self.state.wake.notified().await;
    }

    /// A failure of stdout or the joblog not reported before, as the run must act on it.
    pub fn new_failure(&mut self) -> Option<OutputFailure> {
        let failures = self.state.failures.lock().ok()?;
        if let (Some(e), false) = (&failures.stdout, self.reported.stdout) {
            self.reported.stdout = true;
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Some(OutputFailure::BrokenPipe);
            }
            return Some(OutputFailure::Failed(format!(
                "cannot write results to stdout: {e}"
            )));
        }
        if let (Some(why), false) = (&failures.joblog, self.reported.joblog) {
            self.reported.joblog = true;
            return Some(OutputFailure::Failed(why.clone()));
        }
        None
    }

    #[must_use]
    pub fn done(&self) -> u64 {
        self.done
    }

    #[must_use]
    pub fn failed(&self) -> u64 {
        self.failed
    }
}

/// The thread that does every write of a run's output that could wait, in the order the
/// pieces were queued. A failed stdout is written no more (the joblog still is), and the
/// reverse; the scheduler hears of each failure through [`WriterState`].
pub struct Writer<W: Write> {
    rx: mpsc::Receiver<Piece>,
    core: Arc<Mutex<Core<W>>>,
    state: Arc<WriterState>,
}

/// What writes: stdout's buffer, the joblog, and what failed. The writer thread holds it while
/// it writes a piece; [`Output::send`] takes it only when it is free.
struct Core<W: Write> {
    out: std::io::BufWriter<W>,
    /// What a write to `out` may do.
    reach: Reach,
    /// Our stdout is the terminal the live progress display is drawn on.
    stdout_on_terminal: bool,
    /// False with `--text`: result lines go to the joblog only.
    result_lines_to_stdout: bool,
    joblog: Option<Joblog>,
    logger: Arc<Logger>,
    state: Arc<WriterState>,
    stdout_failed: bool,
}

/// A [`Core`] of any writer, as [`Output`] holds it.
trait TakeNow: Send {
    /// Writes `piece` (and whatever stdout's buffer holds) now if none of it can wait for a
    /// reader; else gives it back, unwritten.
    fn take_now(&mut self, piece: Piece) -> Option<Piece>;
}

impl<W: Write + Send> TakeNow for Core<W> {
    fn take_now(&mut self, piece: Piece) -> Option<Piece> {
        let now = match &piece {
            Piece::Raw(line) => self.stdout_takes(line.len()),
            // --text blocks and their log lines go to stdout and stderr, which may wait.
            Piece::Entry(entry) => {
                entry.text.is_none()
                    && entry.log.is_none()
                    && (!self.result_lines_to_stdout || self.stdout_takes(entry.line.len()))
                    && self
                        .joblog
                        .as_ref()
                        .is_none_or(|log| log.reach.takes(entry.line.len()))
            }
        };
        if !now {
            return Some(piece);
        }
        self.write_piece(piece);
        self.flush_stdout();
        None
    }
}

impl<W: Write> Writer<W> {
    /// Writes pieces until [`Output::finish`] closed the queue and it is empty.
    /// Lines that come together are written together; stdout is flushed whenever nothing more
    /// waits, so no line is held back.
    pub fn run(self) {
        crate::signals::keep_off_this_thread();
        let mut next = self.rx.recv().ok();
        while let Some(piece) = next {
            let weight = piece.weight();
            self.core().write_piece(piece);
            let before = self.state.queued.fetch_sub(weight, Ordering::SeqCst);
            if before > MAX_QUEUED_BYTES && before - weight <= MAX_QUEUED_BYTES {
                self.state.wake.notify_one();
            }
            next = match self.rx.try_recv() {
                Ok(piece) => Some(piece),
                Err(mpsc::TryRecvError::Empty) => {
                    self.core().flush_stdout();
                    self.rx.recv().ok()
                }
                Err(mpsc::TryRecvError::Disconnected) => None,
            };
        }
        self.core().flush_stdout();
        self.state.finished.store(true, Ordering::SeqCst);
        self.state.wake.notify_one();
    }

    fn core(&self) -> MutexGuard<'_, Core<W>> {
        // A panic while writing left nothing half-done that matters here: write on.
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<W: Write> Core<W> {
    fn write_piece(&mut self, piece: Piece) {
        match piece {
            Piece::Entry(entry) => self.write_entry(&entry),
            Piece::Raw(line) => self.write_stdout(|out| out.write_all(&line)),
        }
    }

    /// True when `bytes` more (after what the buffer holds) can go to stdout without waiting,
    /// or need not go at all (it failed).
    fn stdout_takes(&self, bytes: usize) -> bool {
        self.stdout_failed || self.reach.takes(self.out.buffer().len() + bytes)
    }

    fn write_entry(&mut self, entry: &Entry) {
        if entry.log.is_some() || entry.text.is_some() {
            // What goes to stderr next must not pass earlier stdout (a terminal shows both).
            self.flush_stdout();
        }
        if let Some(log) = &entry.log {
            self.logger
                .finished(log.done, log.total, &log.result, &log.cmd);
        }
        if let Some(block) = &entry.text {
            self.write_text(block);
        }
        if self.result_lines_to_stdout {
            self.write_stdout(|out| out.write_all(&entry.line));
        }
        let Some(log) = &mut self.joblog else { return };
        if let Err(e) = log
            .file
            .write_all(&entry.line)
            .and_then(|()| log.file.flush())
        {
            let why = format!("cannot write to --joblog {}: {e}", log.path.display());
            self.joblog = None;
            self.fail(|f| f.joblog = Some(why));
        }
    }

    /// Prints a job's stdout to stdout and its stderr to stderr, each whole.
    fn write_text(&mut self, block: &TextBlock) {
        let tag = block.tag.as_deref();
        if let Some(held) = &block.stdout {
            self.write_stdout(|out| copy_held(held, tag, out));
        }
        if let Some(held) = &block.stderr {
            self.flush_stdout();
            // A closed or full stderr must not stop the run.
            let _ = self.logger.suspend(|| {
                let mut err = std::io::stderr().lock();
                copy_held(held, tag, &mut err).and_then(|()| err.flush())
            });
        }
    }

    /// Writes to stdout (flushed at once on the terminal of the live display, else by
    /// [`Writer::flush_stdout`]), unless it failed before; a failure is recorded.
    fn write_stdout(&mut self, write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) {
        if self.stdout_failed {
            return;
        }
        let out = &mut self.out;
        let written = if self.stdout_on_terminal {
            self.logger
                .suspend(|| write(&mut *out).and_then(|()| out.flush()))
        } else {
            write(&mut *out)
        };
        if let Err(e) = written {
            self.stdout_failed = true;
            self.fail(|f| f.stdout = Some(e));
        }
    }

    fn flush_stdout(&mut self) {
        if self.stdout_failed {
            return;
        }
        if let Err(e) = self.out.flush() {
            self.stdout_failed = true;
            self.fail(|f| f.stdout = Some(e));
        }
    }

    fn fail(&self, record: impl FnOnce(&mut Failures)) {
        if let Ok(mut failures) = self.state.failures.lock() {
            record(&mut failures);
        }
        self.state.wake.notify_one();
    }
}

fn capture(stream: Stream, limit: usize) -> Stream {
    Stream {
        name: stream.name,
        captured: capture_from_spool(stream.captured, limit),
    }
}

/// A stream's spool, unless it is empty (nothing to print, no file to keep open).
fn held(stream: Option<&Stream>) -> Option<Held> {
    let spool = stream?.captured.spool.as_ref()?;
    match spool.file().metadata() {
        Ok(meta) if meta.len() == 0 => None,
        _ => Some(Held::Spool(spool.clone())),
    }
}

/// The `--tag` prefix: the job's input (several sources or columns joined by one space), or
/// its command when it has no input (command lines and JSON jobs), then a TAB. With
/// `--tagstring`, that template expanded with the same values (`<>` the input, `<1>`... its
/// sources or columns, `<name>` a field, `<#>`, `<%>`); a value it cannot expand (a missing
/// field) leaves the default tag.
fn tag_of(job: &Job, slot: usize, cmd: &str, tagstring: Option<&Template>) -> Vec<u8> {
    let args = job_args(job, cmd);
    let expanded = tagstring.and_then(|template| {
        let ctx = Context {
            args: &args,
            fields: Some(&job.object),
            seq: job.seq,
            slot,
            total: None,
        };
        template.expand(&ctx, Quoting::Verbatim).ok()
    });
    let mut tag = expanded.unwrap_or_else(|| args.join(" "));
    tag.push('\t');
    tag.into_bytes()
}

/// A job's input item as its sources or columns; its command when it has none.
fn job_args(job: &Job, cmd: &str) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match job.object.get("input") {
        Some(Value::Array(items)) => items.iter().map(text).collect(),
        Some(Value::Null) | None => vec![cmd.to_string()],
        Some(other) => vec![text(other)],
    }
}

/// Appends a spool's content to the spill file (created on first use); returns its range.
fn spill(spill: &mut Option<Arc<File>>, spool: &Spool) -> std::io::Result<Held> {
    let file = match spill {
        Some(file) => file,
        None => spill.insert(Arc::new(tempfile::tempfile()?)),
    };
    // Only this side moves the spill file's offset; the writer reads at offsets.
    let mut end: &File = file;
    let offset = end.seek(SeekFrom::End(0))?;
    let mut source = spool.file();
    source.seek(SeekFrom::Start(0))?;
    let len = std::io::copy(&mut source, &mut end)?;
    Ok(Held::Spilled {
        file: Arc::clone(file),
        offset,
        len,
    })
}

/// Copies spooled output to `to`, each line prefixed with `tag` when given.
fn copy_held(held: &Held, tag: Option<&[u8]>, to: &mut dyn Write) -> std::io::Result<()> {
    match held {
        Held::Spool(spool) => {
            let mut file = spool.file();
            file.seek(SeekFrom::Start(0))?;
            copy_tagged(&mut file, tag, to)
        }
        Held::Spilled { file, offset, len } => {
            let mut range = Range {
                file,
                at: *offset,
                end: offset + len,
            };
            copy_tagged(&mut range, tag, to)
        }
    }
}

/// A range of a file, read at its offsets (the file's own offset is left alone).
struct Range<'a> {
    file: &'a File,
    at: u64,
    end: u64,
}

impl Read for Range<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = usize::try_from(self.end.saturating_sub(self.at)).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Copies `from` to `to`; with a `tag`, writes it before each line (a last line without a
/// newline is tagged too, and left without one). Works in fixed-size chunks, however long the
/// lines.
fn copy_tagged(from: &mut dyn Read, tag: Option<&[u8]>, to: &mut dyn Write) -> std::io::Result<()> {
    let Some(tag) = tag else {
        std::io::copy(from, to)?;
        return Ok(());
    };
    let mut chunk = vec![0u8; 64 * 1024];
    let mut at_line_start = true;
    loop {
        let n = match from.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mut rest = &chunk[..n];
        while !rest.is_empty() {
            if at_line_start {
                to.write_all(tag)?;
            }
            if let Some(i) = rest.iter().position(|&b| b == b'\n') {
                to.write_all(&rest[..=i])?;
                rest = &rest[i + 1..];
                at_line_start = true;
            } else {
                to.write_all(rest)?;
                rest = &[];
                at_line_start = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Verbosity;
    use std::io::BufRead;

    fn tagged(input: &[u8], tag: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        copy_tagged(&mut &input[..], Some(tag), &mut out).unwrap();
        out
    }

    #[test]
    fn tags_go_before_every_line() {
        assert_eq!(tagged(b"a\nb\n", b"x\t"), b"x\ta\nx\tb\n");
        assert_eq!(tagged(b"a\n\nb", b"x\t"), b"x\ta\nx\t\nx\tb");
        assert_eq!(tagged(b"", b"x\t"), b"");
    }

    #[test]
    fn tags_work_across_chunks() {
        let mut input = vec![b'y'; 100_000];
        input.push(b'\n');
        input.extend_from_slice(b"z\n");
        let out = tagged(&input, b"t\t");
        assert_eq!(&out[..3], b"t\ty");
        assert_eq!(out.len(), input.len() + 4);
        assert!(out.ends_with(b"\nt\tz\n"));
    }

    fn pipe() -> (File, File) {
        let (read, write) = nix::unistd::pipe().expect("a pipe");
        (File::from(read), File::from(write))
    }

    #[test]
    fn files_and_dev_null_never_wait_and_a_pipe_waits_only_when_full() {
        let file = tempfile::tempfile().expect("a temp file");
        assert!(matches!(Reach::of(file.as_fd()), Reach::Never));
        let null = File::create("/dev/null").expect("/dev/null");
        assert!(matches!(Reach::of(null.as_fd()), Reach::Never));

        let (read, mut write) = pipe();
        let reach = Reach::of(write.as_fd());
        assert!(matches!(reach, Reach::IfRoom(_)));
        assert!(reach.takes(100), "an empty pipe has room");
        assert!(
            !reach.takes(nix::libc::PIPE_BUF + 1),
            "a line past PIPE_BUF may wait"
        );
        nix::fcntl::fcntl(
            write.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .expect("non-blocking");
        while write.write(&[b'x'; 4096]).is_ok() {}
        assert!(!reach.takes(100), "a full pipe has no room");
        drop(read);
        assert!(
            reach.takes(100),
            "a pipe without reader fails at once: no wait"
        );
    }

    /// A reader that falls behind makes lines queue for the writer thread, and the lines the
    /// scheduler's side writes itself once the pipe has room again do not pass them.
    #[test]
    fn lines_written_at_once_never_pass_queued_ones() {
        let (read, write) = pipe();
        let mut output = Output::new(false, Logger::new(Verbosity::Quiet));
        let reach = Reach::of(write.as_fd());
        let writer = output.writer_to(write, reach);
        let thread = std::thread::spawn(move || writer.run());
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in std::io::BufReader::new(read).lines() {
                lines.push(line.expect("a line"));
                if lines.len() % 50 == 0 {
                    // Fall behind now and then, so the pipe fills.
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            lines
        });
        let n = 2000;
        let mut queued = 0;
        for i in 0..n {
            output.write_raw(format!("{i:0>1000}\n").into_bytes());
            queued += usize::from(output.state.queued.load(Ordering::SeqCst) > 0);
        }
        output.finish();
        thread.join().expect("the writer ends");
        let lines = reader.join().expect("the reader ends");
        let expected: Vec<String> = (0..n).map(|i| format!("{i:0>1000}")).collect();
        assert!(lines == expected, "every line once, in order");
        assert!(queued > 0, "the reader fell behind: some lines were queued");
        assert!(queued < n, "some lines were written at once");
    }
}
