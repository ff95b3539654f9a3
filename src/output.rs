//! The one writer of stdout: result lines, whole and flushed, in completion or input order;
//! or with `--text`, each job's own output, whole per job (result lines then go to
//! `--joblog FILE` only).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use serde_json::Value;

use crate::exec::{Captured, Spool};
use crate::job::{encode_line, Job, JobResult, Stream};
use crate::live::LiveSink;
use crate::progress::Logger;
use crate::results::{capture_from_spool, ResultsDir};
use crate::template::{Context, Quoting, Template};

/// With `-k --text`: how many spool files finished jobs may hold open while they wait for an
/// earlier job; the output of later ones is copied into one shared file instead, so a slow
/// first job cannot make bakapara run out of file descriptors.
const MAX_HELD_SPOOLS: usize = 64;

/// Writes result lines and counts what the exit status needs.
pub struct Output<W: Write> {
    out: W,
    keep_order: bool,
    /// `--text` (and `--tag`): job output to stdout / stderr instead of result lines.
    text: Option<TextMode>,
    /// `--joblog FILE`: every result line goes there too.
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
    logger: Logger,
    /// Our stdout is the terminal the live progress display is drawn on.
    stdout_on_terminal: bool,
    done: u64,
    failed: u64,
    total: Option<u64>,
    /// Set when stdout could not be written: the run stops starting jobs.
    broken: Option<std::io::Error>,
    /// With `-k --text`: output of waiting jobs beyond [`MAX_HELD_SPOOLS`].
    spill: Option<File>,
    /// With `-k --text`: spool files waiting entries hold open.
    held_spools: usize,
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
}

/// A finished job's output: its result line and, with `--text`, what it printed.
struct Entry {
    line: Vec<u8>,
    text: Option<TextBlock>,
}

/// What a job printed (`--text`), and the `--tag` prefix of its lines.
struct TextBlock {
    tag: Option<Vec<u8>>,
    stdout: Option<Held>,
    stderr: Option<Held>,
}

/// Spooled output: the job's own temp file, or (with `-k`, past [`MAX_HELD_SPOOLS`]) a range
/// of the shared spill file.
enum Held {
    Spool(Spool),
    Spilled { offset: u64, len: u64 },
}

impl<W: Write> Output<W> {
    pub fn new(out: W, keep_order: bool, logger: Logger) -> Output<W> {
        Output {
            out,
            keep_order,
            text: None,
            joblog: None,
            results: None,
            live: None,
            pending: BTreeMap::new(),
            next_seq: 1,
            logger,
            stdout_on_terminal: std::io::stdout().is_terminal(),
            done: 0,
            failed: 0,
            total: None,
            broken: None,
            spill: None,
            held_spools: 0,
        }
    }

    /// `--text`: each job's stdout goes to `out` and its stderr to stderr, whole per job
    /// (spooled by the executors, see [`crate::exec::Captured::spooled`]); with `tag`, each
    /// line is prefixed with the job's input and a TAB. Result lines go to the joblog only.
    pub fn text(mut self, tag: bool) -> Output<W> {
        self.text = Some(TextMode {
            tag,
            tagstring: None,
            printed_live: Vec::new(),
        });
        self
    }

    /// `--tagstring`: with `--text`, each line's tag is `template` expanded for the job (its
    /// values inserted as text, never quoted), then a TAB.
    pub fn tagstring(mut self, template: Template) -> Output<W> {
        if let Some(mode) = &mut self.text {
            mode.tag = true;
            mode.tagstring = Some(template);
        }
        self
    }

    /// `--line-buffer` / `--ungroup`: the output of jobs that ran on `hosts` (by name) was
    /// passed on while they ran.
    pub fn printed_live(mut self, hosts: Vec<String>, live: LiveSink) -> Output<W> {
        if let Some(mode) = &mut self.text {
            mode.printed_live = hosts;
        }
        self.live = Some(live);
        self
    }

    /// With `--line-buffer --tag`: the prefix of the lines of `job`, starting in slot `slot`
    /// (from 0), which its executor passes on as they come.
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
    pub fn joblog(mut self, file: File, path: PathBuf) -> Output<W> {
        self.joblog = Some(Joblog { file, path });
        self
    }

    /// `--results DIR`: each finished job's stdout, stderr and seq also go under `dir`. The
    /// executors spool the streams whole for it; without `--text`, the result line then gets
    /// the first `capture_limit` bytes of each, as without `--results`.
    pub fn results(mut self, dir: ResultsDir, capture_limit: usize) -> Output<W> {
        self.results = Some((dir, capture_limit));
        self
    }

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
        if let (None, Some(live)) = (&self.broken, &self.live) {
            // Job output that could not be written stops the run as a result line would.
            self.broken = live.take_error();
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
        self.logger.finished(self.done, self.total, result, cmd);
        let mut line = Vec::with_capacity(256);
        let entry = match &self.text {
            None => {
                encode_line(&job.object, result, &mut line);
                Entry { line, text: None }
            }
            Some(mode) => {
                // The output was printed, not captured: the result line leaves it out.
                let bare = JobResult {
                    stdout: None,
                    stderr: None,
                    ..result.clone()
                };
                encode_line(&job.object, &bare, &mut line);
                let block = TextBlock {
                    tag: mode.tag.then(|| {
                        let slot = result.engine_id.map_or(0, |e| e + 1);
                        tag_of(job, slot, cmd, mode.tagstring.as_ref())
                    }),
                    stdout: held(result.stdout.as_ref()),
                    stderr: held(result.stderr.as_ref()),
                };
                let live = result
                    .host
                    .as_ref()
                    .is_some_and(|h| mode.printed_live.contains(h));
                let has_text = !live && (block.stdout.is_some() || block.stderr.is_some());
                Entry {
                    line,
                    text: has_text.then_some(block),
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
        fn stream(s: &Option<Stream>) -> Option<&Captured> {
            s.as_ref().map(|s| &s.captured)
        }
        let written = dir.write(
            &job_args(job, cmd),
            job.seq,
            stream(&result.stdout),
            stream(&result.stderr),
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
        self.place(seq, Entry { line, text: None });
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
        if self.broken.is_some() {
            return;
        }
        if let Some(block) = &entry.text {
            self.write_text(block);
        }
        if self.broken.is_some() {
            return;
        }
        if self.text.is_none() {
            let (out, on_terminal) = (&mut self.out, self.stdout_on_terminal);
            let written = suspend_if(&self.logger, on_terminal, || {
                out.write_all(&entry.line).and_then(|_| out.flush())
            });
            if let Err(e) = written {
                self.broken = Some(e);
                return;
            }
        }
        if let Some(log) = &mut self.joblog {
            if let Err(e) = log
                .file
                .write_all(&entry.line)
                .and_then(|_| log.file.flush())
            {
                self.broken = Some(std::io::Error::new(
                    e.kind(),
                    format!("--joblog {}: {e}", log.path.display()),
                ));
            }
        }
    }

    /// Prints a job's stdout to stdout and its stderr to stderr, each whole.
    fn write_text(&mut self, block: &TextBlock) {
        let tag = block.tag.as_deref();
        if let Some(held) = &block.stdout {
            let (out, spill, on_terminal) = (&mut self.out, &self.spill, self.stdout_on_terminal);
            let written = suspend_if(&self.logger, on_terminal, || {
                copy_held(held, spill.as_ref(), tag, out).and_then(|_| out.flush())
            });
            if let Err(e) = written {
                self.broken = Some(e);
                return;
            }
        }
        if let Some(held) = &block.stderr {
            let spill = &self.spill;
            // A closed or full stderr must not stop the run.
            let _ = self.logger.suspend(|| {
                let mut err = std::io::stderr().lock();
                copy_held(held, spill.as_ref(), tag, &mut err).and_then(|_| err.flush())
            });
        }
    }

    /// Writes what `-k` still holds (lines after a gap that will never be filled), in order.
    pub fn finish(&mut self) {
        for (_, entry) in std::mem::take(&mut self.pending) {
            self.write(entry);
        }
        self.held_spools = 0;
        self.logger.completed(self.done, self.failed);
    }

    /// Set once stdout failed (a closed pipe): no further line can be written.
    pub fn broken(&self) -> Option<&std::io::Error> {
        self.broken.as_ref()
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    pub fn failed(&self) -> u64 {
        self.failed
    }
}

fn suspend_if<R>(logger: &Logger, terminal: bool, f: impl FnOnce() -> R) -> R {
    if terminal {
        logger.suspend(f)
    } else {
        f()
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
fn spill(spill: &mut Option<File>, spool: &Spool) -> std::io::Result<Held> {
    let file = match spill {
        Some(file) => file,
        None => spill.insert(tempfile::tempfile()?),
    };
    let offset = file.seek(SeekFrom::End(0))?;
    let mut source = spool.file();
    source.seek(SeekFrom::Start(0))?;
    let len = std::io::copy(&mut source, file)?;
    Ok(Held::Spilled { offset, len })
}

/// Copies spooled output to `to`, each line prefixed with `tag` when given.
fn copy_held(
    held: &Held,
    spill: Option<&File>,
    tag: Option<&[u8]>,
    to: &mut dyn Write,
) -> std::io::Result<()> {
    match held {
        Held::Spool(spool) => {
            let mut file = spool.file();
            file.seek(SeekFrom::Start(0))?;
            copy_tagged(&mut file, tag, to)
        }
        Held::Spilled { offset, len } => {
            let Some(mut file) = spill else {
                return Err(std::io::Error::other(
                    "internal error: the spill file is gone",
                ));
            };
            file.seek(SeekFrom::Start(*offset))?;
            copy_tagged(&mut file.take(*len), tag, to)
        }
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
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    to.write_all(&rest[..=i])?;
                    rest = &rest[i + 1..];
                    at_line_start = true;
                }
                None => {
                    to.write_all(rest)?;
                    rest = &[];
                    at_line_start = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
