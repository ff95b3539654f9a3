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

/// How a source combines with the one before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Join {
    /// Every item with every combination of the others (`:::`, `::::`): the cartesian product.
    #[default]
    Product,
    /// `--link`: paired element by element with the previous sources; the shorter ones wrap
    /// around to the length of the longest, as GNU Parallel's `--link`.
    Wrap,
    /// `:::+` / `::::+`: paired element by element with the previous source; the longer one is
    /// cut to the shorter, as GNU Parallel 20221122 does.
    Shortest,
}

/// `--trim`: white space removed from each value (each column with `--colsep`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trim {
    /// `n`: values as read.
    #[default]
    None,
    /// `l`: from the start.
    Left,
    /// `r`: from the end.
    Right,
    /// `lr` / `rl`: from both ends (the default with `--colsep`, as GNU Parallel's).
    Both,
}

impl Trim {
    /// `--trim`'s clap parser: its five spellings, which the help and completions list.
    #[must_use]
    pub fn value_parser() -> impl clap::builder::TypedValueParser<Value = Trim> {
        use clap::builder::TypedValueParser as _;
        clap::builder::PossibleValuesParser::new(["n", "l", "r", "lr", "rl"]).map(|s| {
            match s.as_str() {
                "l" => Trim::Left,
                "r" => Trim::Right,
                "lr" | "rl" => Trim::Both,
                _ => Trim::None,
            }
        })
    }

    /// Perl's `\s` (GNU Parallel trims with it): space, `\t`, `\n`, `\v`, `\f`, `\r`.
    fn is_space(c: char) -> bool {
        matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
    }

    fn apply(self, value: &str) -> &str {
        match self {
            Trim::None => value,
            Trim::Left => value.trim_start_matches(Trim::is_space),
            Trim::Right => value.trim_end_matches(Trim::is_space),
            Trim::Both => value.trim_matches(Trim::is_space),
        }
    }
}

/// Parses a `--colsep` regex (clap's `value_parser`).
pub fn parse_colsep(text: &str) -> Result<Regex, String> {
    Regex::new(text).map_err(|e| format!("bad regex {text:?}: {e}"))
}

/// Several input items per job (`-N`, `-n`, `-m`, `-X`, `--xargs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grouping {
    /// At most this many items per job (`-N n`); `None`: as many as fit `max_bytes` (`-m`,
    /// `-X`, `--xargs`).
    pub max_items: Option<usize>,
    /// The command-line bytes the items' values may take in one job.
    pub max_bytes: usize,
    /// How many times each value is inserted (the `<>` tokens of the command template).
    pub copies: usize,
    /// Bytes added per value besides the value itself (`-X`: the repeated word's text).
    pub extra_per_value: usize,
}

impl Grouping {
    /// The bytes one value adds to the command line (quoted, with its separating space).
    fn cost(&self, value: &str) -> usize {
        let quoted = crate::template::shell_quote(value).len() + 1;
        self.copies
            .max(1)
            .saturating_mul(quoted.saturating_add(self.extra_per_value))
    }
}

/// The templates that turn an input item into a job object.
#[derive(Debug, Clone)]
pub struct Templates {
    pub cmd: Option<Template>,
    pub cd: Option<Template>,
    pub out: Option<Template>,
    pub err: Option<Template>,
    /// `--transferfile` / `--transfer`: the `transfer` key's paths.
    pub transfer: Vec<Template>,
    /// `--return`: the `return` key's paths.
    pub returns: Vec<Template>,
    pub quoting: Quoting,
    /// `-N`, `-m`...: a job holds several items, so its `input` is always an array.
    pub grouped: bool,
    /// `-N0` / `-n0`: one job per item, its values inserted nowhere.
    pub insert_none: bool,
    /// The number of jobs, for `<##>` and `<0#>`: set by the reader at the end of input (the
    /// same cell as [`ReaderState::total`]).
    pub total: Arc<OnceLock<u64>>,
    /// `--header`: the names of the values (`<name>`), set by the reader from the first item
    /// of each source before it sends any job (the same cell as [`InputSpec::header`]).
    pub names: Arc<OnceLock<Vec<String>>>,
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
        let named: Option<Map<String, Value>> = match self.names.get() {
            Some(names) if !args.is_empty() => Some(
                names
                    .iter()
                    .zip(args)
                    .map(|(name, value)| (name.clone(), Value::String(value.clone())))
                    .collect(),
            ),
            _ => None,
        };
        let ctx = Context {
            args: if self.insert_none { &[] } else { args },
            fields: if args.is_empty() {
                Some(&job.object)
            } else {
                named.as_ref()
            },
            seq: job.seq,
            slot,
            total: self.total.get().copied(),
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
                [one] if !self.grouped => Value::String(one.clone()),
                many => Value::Array(many.iter().cloned().map(Value::String).collect()),
            };
            object.insert("input".into(), input);
            for (key, t) in [("cd", &self.cd), ("out", &self.out), ("err", &self.err)] {
                if let Some(value) = run(t, Quoting::Verbatim)? {
                    object.insert(key.to_string(), Value::String(value));
                }
            }
            // `--onall` gave the job its host.
            if let Some(host) = job.object.get("host") {
                object.insert("host".into(), host.clone());
            }
        }
        for (key, list) in [("transfer", &self.transfer), ("return", &self.returns)] {
            if list.is_empty() || object.contains_key(key) {
                continue;
            }
            let mut paths = Vec::with_capacity(list.len());
            for t in list {
                let path = t
                    .expand(&ctx, Quoting::Verbatim)
                    .map_err(|e| e.to_string())?;
                paths.push(Value::String(path));
            }
            object.insert(key.to_string(), Value::Array(paths));
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
    /// How each source combines with the one before it (parallel to `sources`; the first
    /// entry means nothing). Shorter than `sources`: the rest are [`Join::Product`].
    pub joins: Vec<Join>,
    /// `--colsep`: split each item into columns.
    pub colsep: Option<Regex>,
    /// `--trim`, applied to every value (after `--colsep`).
    pub trim: Trim,
    /// `-0`, `-d DELIM`: what ends an item of stdin or a `::::` file (default: a newline).
    pub delimiter: Vec<u8>,
    /// `-N`, `-m`...: several items per job.
    pub grouping: Option<Grouping>,
    /// `--header`: the first item of each source names its values instead of being one, and
    /// the names go into this cell (shared with [`Templates::names`]).
    pub header: Option<Arc<OnceLock<Vec<String>>>>,
    /// A template uses `<##>` or `<0#>`: every job waits for the end of input, when their
    /// number is known (so the reader holds them all until then).
    pub needs_total: bool,
    /// `--pipe` / `--pipe-part`: the input is cut into blocks, one job's stdin each.
    pub pipe: Option<crate::pipe::PipeSpec>,
    /// `--shuf`: all input is read, then the jobs go in a random order (numbered in it).
    pub shuffle: bool,
    /// `--onall` / `--nonall`: each job runs once on each of these hosts (its `host` key set),
    /// as jobs of their own.
    pub every_host: Option<Vec<String>>,
}

impl Default for InputSpec {
    fn default() -> InputSpec {
        InputSpec {
            mode: Mode::Template,
            sources: Vec::new(),
            joins: Vec::new(),
            colsep: None,
            trim: Trim::None,
            delimiter: b"\n".to_vec(),
            grouping: None,
            header: None,
            needs_total: false,
            pipe: None,
            shuffle: false,
            every_host: None,
        }
    }
}

impl InputSpec {
    /// True when jobs are read from stdin (no sources, or a `:::: -` source).
    #[must_use]
    pub fn reads_stdin(&self) -> bool {
        self.sources.is_empty()
            || self.sources.iter().any(|s| match s {
                Source::Stdin => true,
                Source::File(path) => path.as_os_str() == "-",
                Source::Args(_) => false,
            })
    }

    /// The number of jobs, when it is known before reading (only `:::` arguments).
    #[must_use]
    pub fn known_total(&self) -> Option<u64> {
        if self.sources.is_empty() {
            return None;
        }
        let mut items: u64 = 1;
        for group in self.link_groups() {
            let mut lens = Vec::with_capacity(group.len());
            for &i in &group {
                match &self.sources[i] {
                    Source::Args(a) => lens.push(a.len() as u64),
                    _ => return None,
                }
            }
            let len = match self.group_join(&group) {
                Join::Shortest => lens.iter().copied().min(),
                _ => lens.iter().copied().max(),
            };
            items = items.saturating_mul(len.unwrap_or(0));
        }
        let jobs = match self.grouping {
            None => Some(items),
            Some(Grouping {
                max_items: Some(n), ..
            }) => Some(items.div_ceil(n.max(1) as u64)),
            Some(_) => None,
        };
        let copies = self
            .every_host
            .as_ref()
            .map_or(1, |hosts| hosts.len() as u64);
        jobs.map(|n| n.saturating_mul(copies))
    }

    fn join_of(&self, source: usize) -> Join {
        self.joins.get(source).copied().unwrap_or_default()
    }

    /// The sources as groups of linked ones (indices), in order: each group is one factor of
    /// the cartesian product.
    fn link_groups(&self) -> Vec<Vec<usize>> {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for i in 0..self.sources.len() {
            match groups.last_mut() {
                Some(group) if self.join_of(i) != Join::Product => group.push(i),
                _ => groups.push(vec![i]),
            }
        }
        groups
    }

    /// How a linked group pairs its sources: cut to the shortest only when every link in it
    /// is a `:::+`.
    fn group_join(&self, group: &[usize]) -> Join {
        if group[1..].iter().any(|&i| self.join_of(i) == Join::Wrap) {
            Join::Wrap
        } else if group.len() > 1 {
            Join::Shortest
        } else {
            Join::Product
        }
    }
}

/// Bytes of jobs the reader may have sent ahead of the scheduler (besides the channel's bound
/// in jobs), so that long lines cannot pile up: one job always goes, however big.
const READ_AHEAD_BYTES: usize = 16 << 20;

/// Jobs the reader may have sent ahead of the scheduler: the bound of the channel between
/// them. A reader that reached it waits until half of them were taken, so that it is woken
/// once per `READ_AHEAD_JOBS / 2` jobs, not once per job (each wake-up is a context switch
/// and a futex call on both sides, and its thread then competes with the jobs for a core).
pub const READ_AHEAD_JOBS: usize = 256;

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
    /// [`weight`] and number of the jobs sent and not yet taken, and whether the reader waits
    /// for room.
    ahead: Mutex<Ahead>,
    room: Condvar,
}

#[derive(Debug, Default)]
struct Ahead {
    bytes: usize,
    jobs: usize,
    /// The reader waits on `room`: only then is it notified (a notify is a system call even
    /// with no one to wake, and [`ReaderState::taken`] runs once per job).
    waiting: bool,
}

impl Ahead {
    /// Whether a job of weight `w` must wait while `jobs_bound` jobs are ahead: one job always
    /// goes, however big.
    fn must_wait(&self, w: usize, jobs_bound: usize) -> bool {
        (self.bytes > 0 && self.bytes.saturating_add(w) > READ_AHEAD_BYTES)
            || self.jobs >= jobs_bound
    }
}

impl ReaderState {
    /// A reader state whose end-of-input total goes into `total` (shared with the templates,
    /// for `<##>`).
    pub fn with_total(total: Arc<OnceLock<u64>>) -> ReaderState {
        ReaderState {
            total,
            ..ReaderState::default()
        }
    }

    /// The number of jobs of the run, once the reader has read its whole input.
    pub fn total(&self) -> Option<u64> {
        self.total.get().copied()
    }

    /// The scheduler took `job` from the channel: its bytes no longer count as read ahead.
    pub fn taken(&self, job: &Job) {
        let w = weight(job);
        if let Ok(mut ahead) = self.ahead.lock() {
            ahead.bytes = ahead.bytes.saturating_sub(w);
            ahead.jobs = ahead.jobs.saturating_sub(1);
            if ahead.waiting && ahead.jobs <= READ_AHEAD_JOBS / 2 {
                self.room.notify_all();
            }
        }
    }

    /// Wakes a reader waiting for room, so that it sees `stop`.
    pub fn wake(&self) {
        self.room.notify_all();
    }

    /// Stops the reader and takes from `rx` every job it had read: nothing it reads from now
    /// on is sent. The reader may be blocked reading a terminal or a pipe: it is left there.
    pub fn stop_and_drain(&self, rx: &mut mpsc::Receiver<Job>) -> Vec<Job> {
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
        let mut jobs = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(job) => {
                    self.taken(&job);
                    jobs.push(job);
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
                Err(mpsc::error::TryRecvError::Empty) => {
                    // The reader may be between reading a line and sending its job: that
                    // takes it microseconds, on its own thread.
                    if self.in_flight.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        jobs
    }

    /// Waits until `w` more bytes and one more job fit in the read-ahead (or a stop was asked:
    /// then the job is sent at once, for the scheduler's drain to give it its line). Once it
    /// had to wait for a job's room, it waits until half of the jobs ahead were taken.
    fn reserve(&self, w: usize) {
        let Ok(mut ahead) = self.ahead.lock() else {
            return;
        };
        let mut jobs_bound = READ_AHEAD_JOBS;
        while ahead.must_wait(w, jobs_bound) && !self.stop.load(Ordering::SeqCst) {
            if ahead.jobs >= jobs_bound {
                jobs_bound = READ_AHEAD_JOBS / 2 + 1;
            }
            ahead.waiting = true;
            ahead = match self.room.wait_timeout(ahead, Duration::from_millis(100)) {
                Ok((guard, _)) => guard,
                Err(_) => return,
            };
        }
        ahead.waiting = false;
        ahead.bytes = ahead.bytes.saturating_add(w);
        ahead.jobs += 1;
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
    let stdin = job.stdin.as_ref().map_or(0, crate::pipe::Block::memory);
    stdin
        + body
        + job
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
            crate::signals::keep_off_this_thread();
            Reader {
                spec: &spec,
                tx,
                state,
                seq: 0,
                group: Vec::new(),
                group_items: 0,
                group_bytes: 0,
                held: Vec::new(),
                read_error: None,
            }
            .run()
        })
}

struct Reader<'a> {
    spec: &'a InputSpec,
    tx: mpsc::Sender<Job>,
    state: Arc<ReaderState>,
    seq: u64,
    /// `-N`, `-m`...: the values of the items read for the next job (not a job yet), how many
    /// items they are and the command-line bytes they take.
    group: Vec<String>,
    group_items: usize,
    group_bytes: usize,
    /// [`InputSpec::needs_total`]: the jobs read so far, sent once input has ended.
    held: Vec<Job>,
    /// A source kept in a temp file could not be read back: the input fails with this.
    read_error: Option<String>,
}

/// Raised inside the reader when the scheduler no longer wants jobs.
struct Stopped;

impl Reader<'_> {
    fn run(mut self) -> Result<(), String> {
        let spec = self.spec;
        let outcome = if let Some(pipe) = &spec.pipe {
            self.pipe_jobs(pipe)
        } else if self.spec.sources.is_empty() {
            let mut header = self.spec.header.is_some() && self.spec.mode == Mode::Template;
            self.each_line(&Source::Stdin, |r, line| {
                if std::mem::take(&mut header) {
                    let names = r.names_of(&Source::Stdin, line);
                    r.set_names(names);
                    return Ok(true);
                }
                r.line_job(line).map(|()| true)
            })
        } else {
            self.product()
        };
        let outcome = match outcome {
            // The items of a last, partial group make its job.
            Ok(Ok(())) => {
                self.state.in_flight.fetch_add(1, Ordering::SeqCst);
                let flushed = self.flush_group();
                self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok(flushed)
            }
            other => other,
        };
        let outcome = match outcome {
            Ok(Ok(())) if self.spec.shuffle => Ok(self.send_shuffled()),
            Ok(Ok(())) if self.spec.needs_total => {
                let _ = self.state.total.set(self.seq);
                Ok(self.send_held())
            }
            other => other,
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

    /// The cartesian product of the groups of linked sources. The first source is streamed;
    /// every other one is read whole first (the other groups are repeated for each of its
    /// items; the sources linked to it are paired with its items by position).
    fn product(&mut self) -> Result<Result<(), Stopped>, String> {
        let spec = self.spec;
        let groups = spec.link_groups();
        let header = spec.header.is_some();
        // `--header`: each source's first item, as the names of its values (in the order of
        // the values: the first group's sources, then the other groups').
        let mut names_of: Vec<Vec<String>> = vec![Vec::new(); spec.sources.len()];
        let mut read = |i: usize| -> Result<Vec<Vec<u8>>, String> {
            let mut items = read_all(&spec.sources[i], &spec.delimiter)?;
            if header && !items.is_empty() {
                let first = items.remove(0);
                names_of[i] = names_in(spec, &spec.sources[i], &first);
            }
            Ok(items)
        };
        let first = &groups[0];
        let mut partners = Vec::with_capacity(first.len() - 1);
        for &i in &first[1..] {
            partners.push(read(i)?);
        }
        let mut rest: Vec<Group> = Vec::with_capacity(groups.len() - 1);
        let mut singles = Vec::new();
        for group in &groups[1..] {
            if let [i] = group[..] {
                // A source of its own is repeated for every item before it: kept in memory
                // while small, in a temp file beyond (memory stays bounded in bytes).
                let (kept, first) = Kept::read(&spec.sources[i], &spec.delimiter, header)?;
                rest.push(Group::Single(kept));
                if let Some(first) = first {
                    singles.push((i, first));
                }
                continue;
            }
            let mut sources = Vec::with_capacity(group.len());
            for &i in group {
                sources.push(read(i)?);
            }
            rest.push(Group::Linked(link(spec.group_join(group), &sources)));
        }
        for (i, first) in singles {
            names_of[i] = names_in(spec, &spec.sources[i], &first);
        }
        let join = spec.group_join(first);
        let mut header_pending = header;
        if rest.iter().any(Group::is_empty) || partners.iter().any(Vec::is_empty) {
            return Ok(Ok(()));
        }
        let longest = partners.iter().map(Vec::len).max().unwrap_or(0);
        let shortest = partners.iter().map(Vec::len).min().unwrap_or(usize::MAX);
        // The first source's items, kept only while a longer partner may need them again
        // (bounded by that partner, which is in memory anyway).
        let mut seen: Vec<Vec<u8>> = Vec::new();
        let mut count = 0usize;
        let first_source = &spec.sources[first[0]];
        let outcome = self.each_line(first_source, |r, item| {
            if std::mem::take(&mut header_pending) {
                names_of[first[0]] = r.names_of(first_source, item);
                r.set_names(names_of.concat());
                return Ok(true);
            }
            if join == Join::Wrap && count < longest {
                seen.push(item.to_vec());
            }
            r.linked_job(item, count, &partners, &rest)?;
            count += 1;
            Ok(!(join == Join::Shortest && count >= shortest))
        })?;
        if let Some(e) = self.read_error.take() {
            return Err(e);
        }
        if outcome.is_err() || join != Join::Wrap || count == 0 {
            return Ok(outcome);
        }
        // --link: a shorter first source wraps around to the longest partner.
        for k in count..longest {
            self.state.in_flight.fetch_add(1, Ordering::SeqCst);
            let sent = self.linked_job(&seen[k % count], k, &partners, &rest);
            self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
            if let Some(e) = self.read_error.take() {
                return Err(e);
            }
            if sent.is_err() {
                return Ok(sent);
            }
        }
        Ok(Ok(()))
    }

    /// `--header`: the names in a source's first item (its columns' with `--colsep`).
    fn names_of(&self, source: &Source, item: &[u8]) -> Vec<String> {
        names_in(self.spec, source, item)
    }

    fn set_names(&self, names: Vec<String>) {
        if let Some(cell) = &self.spec.header {
            let _ = cell.set(names);
        }
    }

    /// The jobs of the `k`-th item of the first source (`first`): paired with the `k`-th item
    /// of each partner (wrapping around), times every combination of the other groups.
    fn linked_job(
        &mut self,
        first: &[u8],
        k: usize,
        partners: &[Vec<Vec<u8>>],
        rest: &[Group],
    ) -> Result<(), Stopped> {
        let mut parts: Vec<Vec<u8>> = Vec::with_capacity(1 + partners.len() + rest.len());
        parts.push(first.to_vec());
        parts.extend(partners.iter().map(|items| items[k % items.len()].clone()));
        match self.combine(rest, &mut parts) {
            Ok(outcome) => outcome,
            Err(e) => {
                self.read_error.get_or_insert(e);
                Err(Stopped)
            }
        }
    }

    /// Sends a job for `parts` followed by each combination of the `rest` groups' tuples (the
    /// last group varies fastest).
    fn combine(
        &mut self,
        rest: &[Group],
        parts: &mut Vec<Vec<u8>>,
    ) -> Result<Result<(), Stopped>, String> {
        let Some((group, later)) = rest.split_first() else {
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            return Ok(self.item_job(&refs));
        };
        let mut failed = None;
        let outcome = group.for_each(|tuple| {
            let len = parts.len();
            parts.extend(tuple.iter().map(|item| item.to_vec()));
            let outcome = match self.combine(later, parts) {
                Ok(outcome) => outcome,
                Err(e) => {
                    failed = Some(e);
                    Err(Stopped)
                }
            };
            parts.truncate(len);
            outcome
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    /// Calls `f` with each item of `source` while it returns `Ok(true)`.
    fn each_line(
        &mut self,
        source: &Source,
        mut f: impl FnMut(&mut Self, &[u8]) -> Result<bool, Stopped>,
    ) -> Result<Result<(), Stopped>, String> {
        let mut stopped = Ok(());
        let delimiter = self.spec.delimiter.clone();
        for_each_item(source, &delimiter, |item| {
            self.state.in_flight.fetch_add(1, Ordering::SeqCst);
            let more = f(self, item);
            self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
            if let Ok(more) = more {
                Ok(more)
            } else {
                stopped = Err(Stopped);
                Ok(false)
            }
        })
        .map(|()| stopped)
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
        let mut args = Vec::with_capacity(parts.len());
        for part in parts {
            if let Ok(text) = std::str::from_utf8(part) {
                let trim = self.spec.trim;
                match &self.spec.colsep {
                    Some(re) => args.extend(re.split(text).map(|c| trim.apply(c).to_string())),
                    None => args.push(trim.apply(text).to_string()),
                }
            } else {
                let seq = self.next_seq();
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
        if let Some(grouping) = self.spec.grouping {
            self.group_item(grouping, args)
        } else {
            let seq = self.next_seq();
            self.args_job(seq, args)
        }
    }

    /// Adds an item to the next job of several (`-N`, `-m`...), sending that job when it is
    /// full: `-N n` items, or as many as fit the command-line limit.
    fn group_item(&mut self, grouping: Grouping, args: Vec<String>) -> Result<(), Stopped> {
        let bytes = args
            .iter()
            .map(|a| grouping.cost(a))
            .fold(0usize, usize::saturating_add);
        if self.group_items > 0 && self.group_bytes.saturating_add(bytes) > grouping.max_bytes {
            self.flush_group()?;
        }
        self.group.extend(args);
        self.group_items += 1;
        self.group_bytes = self.group_bytes.saturating_add(bytes);
        match grouping.max_items {
            Some(n) if self.group_items >= n.max(1) => self.flush_group(),
            _ => Ok(()),
        }
    }

    /// Sends the items gathered for the next job, if any, as that job.
    fn flush_group(&mut self) -> Result<(), Stopped> {
        if self.group_items == 0 {
            return Ok(());
        }
        let args = std::mem::take(&mut self.group);
        self.group_items = 0;
        self.group_bytes = 0;
        let seq = self.next_seq();
        self.args_job(seq, args)
    }

    /// The job of one item's (or group's) values.
    fn args_job(&mut self, seq: u64, args: Vec<String>) -> Result<(), Stopped> {
        if self.spec.mode == Mode::Commands {
            // `:::` arguments without a template: the item is the command line.
            let mut object = Map::new();
            object.insert("cmd".into(), Value::String(args.join(" ")));
            let spec = Spec::from_object(&object);
            return self.send(match spec {
                Ok(spec) => ready(seq, object, spec),
                Err(why) => invalid(seq, object, why),
            });
        }
        self.send(Job {
            seq,
            object: Map::new(),
            body: Body::Pending(args),
            submitted: Local::now(),
            attempts: 0,
            host_losses: 0,
            last_host: None,
            stdin: None,
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
        if let Ok(Value::Object(object)) = serde_json::from_str::<Value>(text) {
            if self.spec.mode == Mode::Jsonl {
                return Job {
                    seq,
                    object,
                    body: Body::Pending(Vec::new()),
                    submitted: Local::now(),
                    attempts: 0,
                    host_losses: 0,
                    last_host: None,
                    stdin: None,
                };
            }
            match Spec::from_object(&object) {
                Ok(spec) => ready(seq, object, spec),
                Err(why) => invalid(seq, object, why),
            }
        } else {
            let why = match serde_json::from_str::<Value>(text) {
                Err(e) => format!("the line is not valid JSON: {e}"),
                Ok(_) => "the line is not a JSON object".to_string(),
            };
            let mut object = Map::new();
            object.insert("line".into(), Value::String(text.to_string()));
            invalid(seq, object, why)
        }
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Sends the jobs held for the end of input ([`InputSpec::needs_total`]).
    fn send_held(&mut self) -> Result<(), Stopped> {
        self.state.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut sent = Ok(());
        for job in std::mem::take(&mut self.held) {
            sent = self.send_now(job);
            if sent.is_err() {
                break;
            }
        }
        self.state.in_flight.fetch_sub(1, Ordering::SeqCst);
        sent
    }

    /// `--pipe`: a job per block of stdin (or of the `::::` file), or per range of the
    /// `--pipe-part` file.
    fn pipe_jobs(&mut self, pipe: &crate::pipe::PipeSpec) -> Result<Result<(), Stopped>, String> {
        let mut stopped = Ok(());
        let mut emit = |r: &mut Self, block: crate::pipe::Block| {
            r.state.in_flight.fetch_add(1, Ordering::SeqCst);
            let seq = r.next_seq();
            let sent = r.send(Job {
                seq,
                object: Map::new(),
                body: Body::Pending(Vec::new()),
                submitted: Local::now(),
                attempts: 0,
                host_losses: 0,
                last_host: None,
                stdin: Some(block),
            });
            r.state.in_flight.fetch_sub(1, Ordering::SeqCst);
            sent.map_err(|Stopped| {
                stopped = Err(Stopped);
                crate::pipe::Stopped
            })
        };
        if pipe.part.is_some() {
            crate::pipe::cut_file(pipe, |block| emit(self, block))?;
            return Ok(stopped);
        }
        let stop = Arc::clone(&self.state);
        match self.spec.sources.first() {
            Some(Source::File(path)) if path.as_os_str() != "-" => {
                let file = File::open(path)
                    .map_err(|e| format!(":::: {}: cannot open: {e}", path.display()))?;
                crate::pipe::cut(pipe, file, &stop.stop, |block| emit(self, block))?;
            }
            _ => {
                let stdin = std::io::stdin().lock();
                crate::pipe::cut(pipe, stdin, &stop.stop, |block| emit(self, block))?;
            }
        }
        Ok(stopped)
    }

    /// `--shuf`: the jobs held until the end of input, sent in a random order and numbered
    /// in it (as GNU Parallel's `{#}` counts them).
    fn send_shuffled(&mut self) -> Result<(), Stopped> {
        let mut jobs = std::mem::take(&mut self.held);
        crate::throttle::shuffle(&mut jobs);
        for (i, job) in jobs.iter_mut().enumerate() {
            job.seq = i as u64 + 1;
        }
        self.held = jobs;
        let _ = self.state.total.set(self.seq);
        self.send_held()
    }

    fn send(&mut self, job: Job) -> Result<(), Stopped> {
        let Some(hosts) = self.spec.every_host.clone() else {
            return self.send_one(job);
        };
        if matches!(job.body, Body::Invalid(_)) {
            return self.send_one(job);
        }
        for (i, host) in hosts.iter().enumerate() {
            let mut copy = job.clone();
            if i > 0 {
                copy.seq = self.next_seq();
            }
            copy.object
                .insert("host".into(), Value::String(host.clone()));
            if let Body::Ready(spec) = &mut copy.body {
                spec.hosts = Some(vec![host.clone()]);
            }
            self.send_one(copy)?;
        }
        Ok(())
    }

    fn send_one(&mut self, job: Job) -> Result<(), Stopped> {
        if self.spec.needs_total || self.spec.shuffle {
            self.held.push(job);
            return if self.state.stop.load(Ordering::SeqCst) {
                Err(Stopped)
            } else {
                Ok(())
            };
        }
        self.send_now(job)
    }

    fn send_now(&mut self, job: Job) -> Result<(), Stopped> {
        // Jobs held for the total are not counted: nothing takes them before input ends.
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
/// unlinked temp file, each item behind its length (items may hold any byte with `-0`/`-d`).
enum Kept {
    Memory(Vec<Vec<u8>>),
    Spilled(File),
}

impl Kept {
    /// Reads `source` whole; with `header`, its first item is returned apart (the names).
    fn read(
        source: &Source,
        delimiter: &[u8],
        header: bool,
    ) -> Result<(Kept, Option<Vec<u8>>), String> {
        let spill_error = |e: std::io::Error| format!("cannot keep input in a temp file: {e}");
        let mut first = None;
        let mut items = Vec::new();
        let mut bytes = 0usize;
        let mut spill: Option<std::io::BufWriter<File>> = None;
        let mut failed = None;
        for_each_item(source, delimiter, |item| {
            if header && first.is_none() {
                first = Some(item.to_vec());
                return Ok(true);
            }
            let written = if let Some(file) = &mut spill {
                write_item(file, item)
            } else {
                bytes += item.len();
                items.push(item.to_vec());
                if bytes <= KEEP_IN_MEMORY {
                    return Ok(true);
                }
                tempfile::tempfile().and_then(|file| {
                    let mut file = std::io::BufWriter::with_capacity(64 * 1024, file);
                    for kept in std::mem::take(&mut items) {
                        write_item(&mut file, &kept)?;
                    }
                    spill = Some(file);
                    Ok(())
                })
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
        let kept = match spill {
            None => Kept::Memory(items),
            Some(file) => file
                .into_inner()
                .map(Kept::Spilled)
                .map_err(|e| spill_error(e.into_error()))?,
        };
        Ok((kept, first))
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
                let mut item = Vec::new();
                loop {
                    let mut len = [0u8; 8];
                    match reader.read_exact(&mut len) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            return Ok(Ok(()))
                        }
                        Err(e) => return Err(read_error(e)),
                    }
                    let len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| {
                        read_error(std::io::Error::other("a kept item is too long"))
                    })?;
                    item.resize(len, 0);
                    reader.read_exact(&mut item).map_err(read_error)?;
                    if let Err(stopped) = f(&item) {
                        return Ok(Err(stopped));
                    }
                }
            }
        }
    }
}

/// `--header`: the names in a source's first item (its columns' with `--colsep`).
fn names_in(spec: &InputSpec, _source: &Source, item: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(item);
    match &spec.colsep {
        Some(re) => re.split(&text).map(str::to_string).collect(),
        None => vec![text.into_owned()],
    }
}

/// One item of a spilled source: its length (8 bytes, little-endian), then its bytes.
fn write_item(file: &mut impl Write, item: &[u8]) -> std::io::Result<()> {
    file.write_all(&(item.len() as u64).to_le_bytes())?;
    file.write_all(item)
}

/// A group of the product after the first: one source of its own (kept in memory or a temp
/// file), or sources linked to each other (`--link`, `:::+`), as tuples in memory.
enum Group {
    Single(Kept),
    Linked(Vec<Vec<Vec<u8>>>),
}

impl Group {
    fn is_empty(&self) -> bool {
        match self {
            Group::Single(kept) => kept.is_empty(),
            Group::Linked(tuples) => tuples.is_empty(),
        }
    }

    /// Calls `f` with each tuple of the group's values, in order, until it stops.
    fn for_each(
        &self,
        mut f: impl FnMut(&[&[u8]]) -> Result<(), Stopped>,
    ) -> Result<Result<(), Stopped>, String> {
        match self {
            Group::Single(kept) => kept.for_each(|item| f(&[item])),
            Group::Linked(tuples) => Ok(tuples.iter().try_for_each(|tuple| {
                let refs: Vec<&[u8]> = tuple.iter().map(Vec::as_slice).collect();
                f(&refs)
            })),
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
        stdin: None,
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
        stdin: None,
    }
}

/// Every item of a source, in memory (a source that is repeated or paired by position).
fn read_all(source: &Source, delimiter: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut items = Vec::new();
    for_each_item(source, delimiter, |item| {
        items.push(item.to_vec());
        Ok(true)
    })?;
    Ok(items)
}

/// A group of linked sources, read whole, as its tuples (one part per source).
fn link(join: Join, sources: &[Vec<Vec<u8>>]) -> Vec<Vec<Vec<u8>>> {
    if sources.iter().any(Vec::is_empty) {
        return Vec::new();
    }
    let lens = sources.iter().map(Vec::len);
    let len = match join {
        Join::Shortest => lens.min(),
        _ => lens.max(),
    }
    .unwrap_or(0);
    (0..len)
        .map(|k| {
            sources
                .iter()
                .map(|items| items[k % items.len()].clone())
                .collect()
        })
        .collect()
}

/// Calls `f` with each item of a source (a line without its delimiter, or an argument) until
/// it returns `Ok(false)`. `delimiter` (never empty) ends the items of stdin and files.
fn for_each_item(
    source: &Source,
    delimiter: &[u8],
    mut f: impl FnMut(&[u8]) -> Result<bool, String>,
) -> Result<(), String> {
    let read_lines =
        |reader: &mut dyn BufRead, name: &str, f: &mut dyn FnMut(&[u8]) -> Result<bool, String>| {
            let last = delimiter.last().copied().unwrap_or(b'\n');
            let mut line = Vec::with_capacity(256);
            let mut first = true;
            loop {
                line.clear();
                // True: the item ended with the delimiter; false: with the input.
                let delimited = loop {
                    match reader.read_until(last, &mut line) {
                        Ok(0) => break false,
                        Ok(_) if line.ends_with(delimiter) => break true,
                        // Only the last byte of a longer delimiter: the item goes on.
                        Ok(_) if line.last() == Some(&last) => {}
                        Ok(_) => break false,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(format!("cannot read {name}: {e}")),
                    }
                };
                if delimited {
                    line.truncate(line.len() - delimiter.len());
                } else if line.is_empty() {
                    return Ok(());
                }
                let item = if std::mem::take(&mut first) {
                    line.strip_prefix(BOM).unwrap_or(&line)
                } else {
                    &line
                };
                if !f(item)? || !delimited {
                    return Ok(());
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
        Source::File(path) if path.as_os_str() == "-" => {
            for_each_item(&Source::Stdin, delimiter, f)
        }
        Source::File(path) => {
            let file: Box<dyn Read> = Box::new(
                File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?,
            );
            let mut reader = BufReader::with_capacity(64 * 1024, file);
            read_lines(&mut reader, &path.display().to_string(), &mut f)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reader_waits_at_the_bound_then_until_half_were_taken() {
        let full = Ahead {
            jobs: READ_AHEAD_JOBS,
            ..Ahead::default()
        };
        assert!(full.must_wait(1, READ_AHEAD_JOBS));
        let one_taken = Ahead {
            jobs: READ_AHEAD_JOBS - 1,
            ..Ahead::default()
        };
        // Not yet for a reader that waits (its bound is half), at once for one that did not.
        assert!(one_taken.must_wait(1, READ_AHEAD_JOBS / 2 + 1));
        assert!(!one_taken.must_wait(1, READ_AHEAD_JOBS));
        let half = Ahead {
            jobs: READ_AHEAD_JOBS / 2,
            ..Ahead::default()
        };
        assert!(!half.must_wait(1, READ_AHEAD_JOBS / 2 + 1));
        // Bytes: one job always goes, however big.
        assert!(!Ahead::default().must_wait(READ_AHEAD_BYTES * 2, READ_AHEAD_JOBS));
        let heavy = Ahead {
            bytes: READ_AHEAD_BYTES,
            jobs: 1,
            ..Ahead::default()
        };
        assert!(heavy.must_wait(1, READ_AHEAD_JOBS));
    }

    #[test]
    fn a_waiting_reader_goes_on_once_half_of_the_jobs_ahead_were_taken() {
        let state = Arc::new(ReaderState::default());
        let job = Job {
            seq: 1,
            object: Map::new(),
            body: Body::Invalid(String::new()),
            submitted: Local::now(),
            attempts: 0,
            host_losses: 0,
            last_host: None,
            stdin: None,
        };
        for _ in 0..READ_AHEAD_JOBS {
            state.reserve(weight(&job));
        }
        let reader = {
            let state = Arc::clone(&state);
            std::thread::spawn(move || state.reserve(1))
        };
        let waiting = || state.ahead.lock().is_ok_and(|a| a.waiting);
        while !waiting() {
            std::thread::yield_now();
        }
        for _ in 0..READ_AHEAD_JOBS / 2 {
            state.taken(&job);
        }
        reader.join().expect("the reader thread");
        let ahead = state.ahead.lock().expect("the lock");
        assert_eq!(ahead.jobs, READ_AHEAD_JOBS / 2 + 1);
        assert!(!ahead.waiting);
    }
}
