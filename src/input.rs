//! Input: stdin lines, `:::` / `::::` sources or JSON lines, read lazily into a stream of jobs.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use chrono::Local;
use regex::Regex;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use crate::job::{Body, Job, Spec};
use crate::template::{Context, Quoting, Template};

/// One input source: a `:::` argument list, a `::::` file, or stdin.
#[derive(Debug, Clone)]
pub enum Source {
    Stdin,
    Args(Vec<String>),
    File(PathBuf),
}

/// How input lines become jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A TEMPLATE was given: every item (line or argument) is a job made from it.
    Template,
    /// No TEMPLATE: every line is a JSON job object or a plain command line.
    Commands,
    /// `--jsonl` with a TEMPLATE: every line is a JSON object whose fields feed the template.
    Jsonl,
}

/// The templates that turn an input item into a job object.
#[derive(Debug, Clone)]
pub struct Templates {
    pub cmd: Option<Template>,
    pub cd: Option<Template>,
    pub out: Option<Template>,
    pub err: Option<Template>,
    pub quoting: Quoting,
}

impl Templates {
    /// Expands a `Pending` job for the slot it got (1-based), making it `Ready`, or `Invalid`
    /// when a value is missing. Other jobs are left alone.
    pub fn materialize(&self, job: &mut Job, slot: usize) {
        let Body::Pending(args) = &job.body else {
            return;
        };
        match self.expand(job, args, slot) {
            Ok((object, spec)) => {
                job.object = object;
                job.body = Body::Ready(spec);
            }
            Err(why) => job.body = Body::Invalid(why),
        }
    }

    fn expand(
        &self,
        job: &Job,
        args: &[String],
        slot: usize,
    ) -> Result<(Map<String, Value>, Spec), String> {
        let ctx = Context {
            args,
            fields: if args.is_empty() {
                Some(&job.object)
            } else {
                None
            },
            seq: job.seq,
            slot,
        };
        let run = |t: &Option<Template>, quoting: Quoting| -> Result<Option<String>, String> {
            match t {
                Some(t) => t.expand(&ctx, quoting).map(Some).map_err(|e| e.to_string()),
                None => Ok(None),
            }
        };
        let mut object;
        if args.is_empty() {
            // A --jsonl object: its own keys win; templates fill the ones it lacks.
            object = job.object.clone();
            for (key, t, quoting) in [
                ("cmd", &self.cmd, self.quoting),
                ("cd", &self.cd, Quoting::Verbatim),
                ("out", &self.out, Quoting::Verbatim),
                ("err", &self.err, Quoting::Verbatim),
            ] {
                if !object.contains_key(key) {
                    if let Some(value) = run(t, quoting)? {
                        object.insert(key.to_string(), Value::String(value));
                    }
                }
            }
        } else {
            object = Map::new();
            if let Some(cmd) = run(&self.cmd, self.quoting)? {
                object.insert("cmd".into(), Value::String(cmd));
            }
            let input = match args {
                [one] => Value::String(one.clone()),
                many => Value::Array(many.iter().cloned().map(Value::String).collect()),
            };
            object.insert("input".into(), input);
            for (key, t) in [("cd", &self.cd), ("out", &self.out), ("err", &self.err)] {
                if let Some(value) = run(t, Quoting::Verbatim)? {
                    object.insert(key.to_string(), Value::String(value));
                }
            }
        }
        let spec = Spec::from_object(&object)?;
        Ok((object, spec))
    }
}

/// Everything the reader needs to turn input into jobs.
#[derive(Debug, Clone)]
pub struct InputSpec {
    pub mode: Mode,
    /// The sources, combined as a cartesian product (the first one varies slowest). Empty
    /// means stdin.
    pub sources: Vec<Source>,
    /// `--colsep`: split each item into columns.
    pub colsep: Option<Regex>,
}

impl InputSpec {
    /// True when jobs are read from stdin (no sources, or a `:::: -` source).
    pub fn reads_stdin(&self) -> bool {
        self.sources.is_empty()
            || self.sources.iter().any(|s| match s {
                Source::Stdin => true,
                Source::File(path) => path.as_os_str() == "-",
                Source::Args(_) => false,
            })
    }

    /// The number of jobs, when it is known before reading (only `:::` arguments).
    pub fn known_total(&self) -> Option<u64> {
        if self.sources.is_empty() {
            return None;
        }
        let mut total: u64 = 1;
        for s in &self.sources {
            match s {
                Source::Args(a) => total = total.saturating_mul(a.len() as u64),
                _ => return None,
            }
        }
        Some(total)
    }
}

/// Bytes of jobs the reader may have sent ahead of the scheduler (besides the channel's bound
/// in jobs), so that long lines cannot pile up: one job always goes, however big.
const READ_AHEAD_BYTES: usize = 16 << 20;

/// A source after the first is kept in memory up to this many bytes, then in a temp file (it
/// is read again for every item of the sources before it).
const KEEP_IN_MEMORY: usize = 4 << 20;

/// Shared between the reader thread and the scheduler, so that a stop loses no job that was
/// read: the scheduler sets `stop`, then drains the channel until `in_flight` is zero. It also
/// bounds the bytes read ahead: the scheduler reports each job it takes ([`ReaderState::taken`]).
#[derive(Debug, Default)]
pub struct ReaderState {
    pub stop: AtomicBool,
    pub in_flight: AtomicUsize,
    /// Set by the reader when it hit the end of its input: how many jobs it produced. Jobs may
    /// still wait in the channel; the progress display and log lines read the total from here
    /// (see [`crate::progress::Logger::with_input_total`]).
    pub total: Arc<OnceLock<u64>>,
    /// [`weight`] of the jobs sent and not yet taken.
    ahead: Mutex<usize>,
    room: Condvar,
}

impl ReaderState {
    /// The number of jobs of the run, once the reader has read its whole input.
    pub fn total(&self) -> Option<u64> {
        self.total.get().copied()
    }

    /// The scheduler took `job` from the channel: its bytes no longer count as read ahead.
    pub fn taken(&self, job: &Job) {
        let w = weight(job);
        if let Ok(mut ahead) = self.ahead.lock() {
            *ahead = ahead.saturating_sub(w);
        }
        self.room.notify_all();
    }

    /// Wakes a reader waiting for room, so that it sees `stop`.
    pub fn wake(&self) {
        self.room.notify_all();
    }

    /// Waits until `w` more bytes fit in the read-ahead (or a stop was asked: then the job is
    /// sent at once, for the scheduler's drain to give it its line).
    fn reserve(&self, w: usize) {
        let Ok(mut ahead) = self.ahead.lock() else {
            return;
        };
        while *ahead > 0
            && ahead.saturating_add(w) > READ_AHEAD_BYTES
            && !self.stop.load(Ordering::SeqCst)
        {
            ahead = match self.room.wait_timeout(ahead, Duration::from_millis(100)) {
                Ok((guard, _)) => guard,
                Err(_) => return,
            };
        }
        *ahead = ahead.saturating_add(w);
    }
}

/// About how many bytes of memory a job holds while it waits: its strings, keys and values.
pub fn weight(job: &Job) -> usize {
    fn value(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len() + 24,
            Value::Array(items) => items.iter().map(value).sum::<usize>() + 24,
            Value::Object(map) => map.iter().map(|(k, v)| k.len() + value(v)).sum::<usize>() + 48,
            _ => 16,
        }
    }
    let body = match &job.body {
        Body::Ready(spec) => spec.cmd.len() + spec.cd.as_ref().map_or(0, String::len),
        Body::Pending(args) => args.iter().map(|a| a.len() + 24).sum(),
        Body::Invalid(why) => why.len(),
    };
    body + job
        .object
        .iter()
        .map(|(k, v)| k.len() + value(v))
        .sum::<usize>()
        + 128
}

/// Starts the reader thread: it sends jobs in input order, numbered from 1, and ends the
/// channel at the end of input. A send blocks while the channel is full, which keeps memory
/// bounded whatever the input length.
pub fn spawn_reader(
    spec: InputSpec,
    tx: mpsc::Sender<Job>,
    state: Arc<ReaderState>,
) -> std::io::Result<std::thread::JoinHandle<Result<(), String>>> {
    std::thread::Builder::new()
        .name("bakapara-input".into())
        .spawn(move || {
            Reader {
                spec: &spec,
                tx,
                state,
                seq: 0,
            }
            .run()
        })
}

struct Reader<'a> {
    spec: &'a InputSpec,
    tx: mpsc::Sender<Job>,
    state: Arc<ReaderState>,
    seq: u64,
}

/// Raised inside the reader when the scheduler no longer wants jobs.
struct Stopped;

impl Reader<'_> {
    fn run(mut self) -> Result<(), String> {
        let sources = self.spec.sources.clone();
        let outcome = if sources.is_empty() {
            self.each_line(&Source::Stdin, |r, line| r.line_job(line))
        } else {
            self.product(&sources)
        };
        match outcome {
            Ok(Ok(())) => {
                let _ = self.state.total.set(self.seq);
                Ok(())
            }
            Ok(Err(Stopped)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The cartesian product of the sources: the first is streamed, the others are read whole
    /// first (they are repeated for each of its items), into memory or a temp file.
    fn product(&mut self, sources: &[Source]) -> Result<Result<(), Stopped>, String> {
        let mut rest = Vec::with_capacity(sources.len() - 1);
        for s in &sources[1..] {
            rest.push(Kept::read(s)?);
        }
        if rest.iter().any(Kept::is_empty) {
            return Ok(Ok(()));
        }
        let mut failed = None;
        let outcome = self.each_line(&sources[0], |r, first| {
            let mut parts = vec![first.to_vec()];
            match r.combine(&rest, &mut parts) {
                Ok(outcome) => outcome,
                Err(e) => {
                    failed = Some(e);
                    Err(Stopped)
                }
            }
        });
        match failed {
            Some(e) => Err(e),
            None => outcome,
        }
    }

    /// Sends a job for `parts` followed by each combination of the `rest` sources' items (the
    /// last source varies fastest).
    fn combine(
        &mut self,
        rest: &[Kept],
        parts: &mut Vec<Vec<u8>>,
    ) -> Result<Result<(), Stopped>, String> {
        let Some((source, later)) = rest.split_first() else {
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            return Ok(self.item_job(&refs));
        };
        let mut failed = None;
        let outcome = source.for_each(|item| {
            parts.push(item.to_vec());
            let outcome = match self.combine(later, parts) {
                Ok(outcome) => outcome,
                Err(e) => {
                    failed = Some(e);
                    Err(Stopped)
                }
            };
            parts.pop();
            outcome
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    fn each_line(
        &mut self,
        source: &Source,
        mut f: impl FnMut(&mut Self, &[u8]) -> Result<(), Stopped>,
    ) -> Result<Result<(), Stopped>, String> {
        let mut stopped = Ok(());
        for_each_item(source, |item| {
            if stopped.is_ok() {
                self.state.in_flight.fetch_add(1, Ordering::SeqCst);
                stopped = f(self, item);
                self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(stopped.is_ok())
        })
        .map(|_| stopped)
    }

    /// A stdin line when no `:::` source is given.
    fn line_job(&mut self, line: &[u8]) -> Result<(), Stopped> {
        match self.spec.mode {
            Mode::Template => self.item_job(&[line]),
            Mode::Commands | Mode::Jsonl => {
                // Files joined with `cat` may carry a BOM on any line, not only the first.
                let line = line.strip_prefix(BOM).unwrap_or(line);
                if is_blank(line) {
                    return Ok(());
                }
                let job = self.object_job(line);
                self.send(job)
            }
        }
    }

    /// One item of the sources (one part per source).
    fn item_job(&mut self, parts: &[&[u8]]) -> Result<(), Stopped> {
        let seq = self.next_seq();
        let mut args = Vec::with_capacity(parts.len());
        for part in parts {
            match std::str::from_utf8(part) {
                Ok(text) => match &self.spec.colsep {
                    Some(re) => args.extend(re.split(text).map(str::to_string)),
                    None => args.push(text.to_string()),
                },
                Err(_) => {
                    let mut object = Map::new();
                    let raw: Vec<u8> = parts.join(&b' ');
                    object.insert(
                        "input_base64".into(),
                        Value::String(base64::engine::general_purpose::STANDARD.encode(raw)),
                    );
                    let why = "the input item is not valid UTF-8 (its bytes are in `input_base64`)";
                    return self.send(invalid(seq, object, why.to_string()));
                }
            }
        }
        let body = if self.spec.mode == Mode::Commands {
            // `:::` arguments without a template: the item is the command line.
            let mut object = Map::new();
            object.insert("cmd".into(), Value::String(args.join(" ")));
            let spec = Spec::from_object(&object);
            return self.send(match spec {
                Ok(spec) => ready(seq, object, spec),
                Err(why) => invalid(seq, object, why),
            });
        } else {
            Body::Pending(args)
        };
        self.send(Job {
            seq,
            object: Map::new(),
            body,
            submitted: Local::now(),
            attempts: 0,
            host_losses: 0,
            last_host: None,
        })
    }

    /// A JSON job line or a plain command line (no TEMPLATE), or a `--jsonl` object.
    fn object_job(&mut self, line: &[u8]) -> Job {
        let seq = self.next_seq();
        let Ok(text) = std::str::from_utf8(line) else {
            let mut object = Map::new();
            object.insert(
                "line_base64".into(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(line)),
            );
            return invalid(
                seq,
                object,
                "the input line is not valid UTF-8 (its bytes are in `line_base64`)".into(),
            );
        };
        let trimmed = text.trim_start();
        if !trimmed.starts_with('{') {
            if self.spec.mode == Mode::Jsonl {
                let mut object = Map::new();
                object.insert("line".into(), Value::String(text.to_string()));
                return invalid(seq, object, "--jsonl: the line is not a JSON object".into());
            }
            let mut object = Map::new();
            object.insert("cmd".into(), Value::String(text.to_string()));
            let spec = Spec {
                cmd: text.to_string(),
                ..Spec::default()
            };
            return ready(seq, object, spec);
        }
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => {
                if self.spec.mode == Mode::Jsonl {
                    return Job {
                        seq,
                        object,
                        body: Body::Pending(Vec::new()),
                        submitted: Local::now(),
                        attempts: 0,
                        host_losses: 0,
                        last_host: None,
                    };
                }
                match Spec::from_object(&object) {
                    Ok(spec) => ready(seq, object, spec),
                    Err(why) => invalid(seq, object, why),
                }
            }
            Ok(_) | Err(_) => {
                let why = match serde_json::from_str::<Value>(text) {
                    Err(e) => format!("the line is not valid JSON: {e}"),
                    Ok(_) => "the line is not a JSON object".to_string(),
                };
                let mut object = Map::new();
                object.insert("line".into(), Value::String(text.to_string()));
                invalid(seq, object, why)
            }
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    fn send(&mut self, job: Job) -> Result<(), Stopped> {
        self.state.reserve(weight(&job));
        if self.tx.blocking_send(job).is_err() {
            return Err(Stopped);
        }
        if self.state.stop.load(Ordering::SeqCst) {
            return Err(Stopped);
        }
        Ok(())
    }
}

/// The UTF-8 byte order mark some editors put at the start of a file; it is no part of the
/// first item (nor, without a TEMPLATE, of any line).
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A line of nothing but ASCII whitespace as C's `isspace` counts it (vertical tab included),
/// which is blank: no job.
fn is_blank(line: &[u8]) -> bool {
    line.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0b' | b'\x0c'))
}

/// A source after the first, read whole: its items in memory, or past [`KEEP_IN_MEMORY`] in an
/// unlinked temp file, one item a line (items from files and stdin hold no newline).
enum Kept {
    Memory(Vec<Vec<u8>>),
    Spilled(File),
}

impl Kept {
    fn read(source: &Source) -> Result<Kept, String> {
        if let Source::Args(args) = source {
            // Already in memory, and an argument may hold a newline.
            return Ok(Kept::Memory(
                args.iter().map(|a| a.as_bytes().to_vec()).collect(),
            ));
        }
        let spill_error = |e: std::io::Error| format!("cannot keep input in a temp file: {e}");
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut spill: Option<std::io::BufWriter<File>> = None;
        let mut failed = None;
        for_each_item(source, |item| {
            let written = match &mut spill {
                Some(file) => file.write_all(item).and_then(|_| file.write_all(b"\n")),
                None => {
                    bytes += item.len();
                    items.push(item.to_vec());
                    if bytes <= KEEP_IN_MEMORY {
                        return Ok(true);
                    }
                    tempfile::tempfile().and_then(|file| {
                        let mut file = std::io::BufWriter::with_capacity(64 * 1024, file);
                        for kept in std::mem::take(&mut items) {
                            file.write_all(&kept)?;
                            file.write_all(b"\n")?;
                        }
                        spill = Some(file);
                        Ok(())
                    })
                }
            };
            match written {
                Ok(()) => Ok(true),
                Err(e) => {
                    failed = Some(spill_error(e));
                    Ok(false)
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        match spill {
            None => Ok(Kept::Memory(items)),
            Some(file) => file
                .into_inner()
                .map(Kept::Spilled)
                .map_err(|e| spill_error(e.into_error())),
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Kept::Memory(items) => items.is_empty(),
            // Spilled only past KEEP_IN_MEMORY bytes: it has items.
            Kept::Spilled(_) => false,
        }
    }

    /// Calls `f` with each item, from the first, until it stops.
    fn for_each(
        &self,
        mut f: impl FnMut(&[u8]) -> Result<(), Stopped>,
    ) -> Result<Result<(), Stopped>, String> {
        match self {
            Kept::Memory(items) => Ok(items.iter().try_for_each(|item| f(item))),
            Kept::Spilled(file) => {
                // One pass at a time reads this file: the shared offset is ours.
                let mut file: &File = file;
                let read_error =
                    |e: std::io::Error| format!("cannot read input back from a temp file: {e}");
                file.seek(SeekFrom::Start(0)).map_err(read_error)?;
                let mut reader = BufReader::with_capacity(64 * 1024, file);
                let mut line = Vec::new();
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) => return Ok(Ok(())),
                        Ok(_) => {
                            line.pop();
                            if let Err(stopped) = f(&line) {
                                return Ok(Err(stopped));
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(read_error(e)),
                    }
                }
            }
        }
    }
}

fn ready(seq: u64, object: Map<String, Value>, spec: Spec) -> Job {
    Job {
        seq,
        object,
        body: Body::Ready(spec),
        submitted: Local::now(),
        attempts: 0,
        host_losses: 0,
        last_host: None,
    }
}

fn invalid(seq: u64, object: Map<String, Value>, why: String) -> Job {
    Job {
        seq,
        object,
        body: Body::Invalid(why),
        submitted: Local::now(),
        attempts: 0,
        host_losses: 0,
        last_host: None,
    }
}

/// Calls `f` with each item of a source (a line without its newline, or an argument) until it
/// returns `Ok(false)`.
fn for_each_item(
    source: &Source,
    mut f: impl FnMut(&[u8]) -> Result<bool, String>,
) -> Result<(), String> {
    let read_lines =
        |reader: &mut dyn BufRead, name: &str, f: &mut dyn FnMut(&[u8]) -> Result<bool, String>| {
            let mut line = Vec::with_capacity(256);
            let mut first = true;
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => return Ok(()),
                    Ok(_) => {
                        if line.last() == Some(&b'\n') {
                            line.pop();
                        }
                        let item = match std::mem::take(&mut first) {
                            true => line.strip_prefix(BOM).unwrap_or(&line),
                            false => &line,
                        };
                        if !f(item)? {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(format!("cannot read {name}: {e}")),
                }
            }
        };
    match source {
        Source::Args(args) => {
            for a in args {
                if !f(a.as_bytes())? {
                    break;
                }
            }
            Ok(())
        }
        Source::Stdin => {
            let stdin = std::io::stdin();
            let mut reader = BufReader::with_capacity(64 * 1024, stdin.lock());
            read_lines(&mut reader, "standard input", &mut f)
        }
        Source::File(path) if path.as_os_str() == "-" => for_each_item(&Source::Stdin, f),
        Source::File(path) => {
            let file: Box<dyn Read> = Box::new(
                File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?,
            );
            let mut reader = BufReader::with_capacity(64 * 1024, file);
            read_lines(&mut reader, &path.display().to_string(), &mut f)
        }
    }
}
