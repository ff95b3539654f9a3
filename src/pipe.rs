//! `--pipe` and `--pipe-part`: input cut into blocks of whole records, each block the stdin of
//! one job. Owns where records end (`--recend`, `--recstart`, `--regexp`), what a block holds
//! (`--block`, `-N`, `--header`, `--remove-rec-sep`), the byte budget that bounds the blocks
//! in memory, and feeding a block into a job's stdin pipe. The input reader calls [`cut`] or
//! [`cut_file`]; the local executor calls [`feed`].

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use memchr::memmem;
use regex::bytes::Regex;

/// Where records end: GNU Parallel's `--recend` / `--recstart`, as strings or (`--regexp`)
/// regexes. A block is cut only where a record end is followed by a record start.
#[derive(Debug, Clone)]
pub enum Separator {
    /// `recend` then `recstart`, as bytes; the cut falls between the two.
    Plain { recend: Vec<u8>, recstart: Vec<u8> },
    /// `--regexp`: `(?:END)()(?:START)`, the cut at the empty group; `start` and `end` are
    /// the two alone, anchored (for `--remove-rec-sep` at a block's ends).
    Regex {
        split: Regex,
        start: Regex,
        end: Regex,
    },
}

impl Separator {
    /// GNU's defaults: with neither given, records end with a newline; with only one given,
    /// the other is empty.
    pub fn new(
        recend: Option<&[u8]>,
        recstart: Option<&[u8]>,
        regexp: bool,
    ) -> Result<Separator, String> {
        let (recend, recstart) = match (recend, recstart) {
            (None, None) => (&b"\n"[..], &b""[..]),
            (end, start) => (end.unwrap_or(b""), start.unwrap_or(b"")),
        };
        if !regexp {
            return Ok(Separator::Plain {
                recend: recend.to_vec(),
                recstart: recstart.to_vec(),
            });
        }
        let text = |b: &[u8], what: &str| {
            String::from_utf8(b.to_vec()).map_err(|_| format!("{what}: the regex is not UTF-8"))
        };
        let (end, start) = (text(recend, "--recend")?, text(recstart, "--recstart")?);
        let build =
            |re: String| Regex::new(&re).map_err(|e| format!("bad --recend/--recstart regex: {e}"));
        Ok(Separator::Regex {
            split: build(format!("(?:{end})()(?:{start})"))?,
            start: build(format!("^(?:{start})"))?,
            end: build(format!("(?:{end})$"))?,
        })
    }

    /// Every cut position in `buf` after `from` (a cut at 0 would make an empty record).
    fn cuts<'a>(&'a self, buf: &'a [u8], from: usize) -> Box<dyn Iterator<Item = usize> + 'a> {
        match self {
            Separator::Plain { recend, recstart } if recend.is_empty() && recstart.is_empty() => {
                // `--recend ''`: no record structure, a cut may go anywhere.
                Box::new((from.max(1)..=buf.len()).rev().take(1))
            }
            Separator::Plain { recend, recstart } => {
                let offset = recend.len();
                let start = from.saturating_sub(offset).min(buf.len());
                let needle = [&recend[..], &recstart[..]].concat();
                let found: Vec<usize> = memmem::find_iter(&buf[start..], &needle)
                    .map(|i| start + i + offset)
                    .filter(|&cut| cut > from && cut > 0)
                    .collect();
                Box::new(found.into_iter())
            }
            Separator::Regex { split, .. } => Box::new(
                split
                    .captures_iter(buf)
                    .filter_map(|c| c.get(1).map(|m| m.start()))
                    .filter(move |&cut| cut > from && cut > 0),
            ),
        }
    }

    /// The last cut in `buf`, if any.
    fn last_cut(&self, buf: &[u8]) -> Option<usize> {
        match self {
            Separator::Plain { recend, recstart } if !recend.is_empty() || !recstart.is_empty() => {
                let needle = [&recend[..], &recstart[..]].concat();
                let mut hay = buf;
                // The last occurrence whose cut is past 0 (a record start at 0 is no cut).
                while let Some(i) = memmem::rfind(hay, &needle) {
                    if i + recend.len() > 0 {
                        return Some(i + recend.len());
                    }
                    hay = &hay[..i + needle.len() - 1];
                }
                None
            }
            _ => self.cuts(buf, 0).last(),
        }
    }

    /// The `n`-th cut in `buf` after `from`, or how many were found.
    fn nth_cut(&self, buf: &[u8], from: usize, n: usize) -> Result<usize, usize> {
        let mut found = 0;
        for cut in self.cuts(buf, from) {
            found += 1;
            if found == n {
                return Ok(cut);
            }
        }
        Err(found)
    }

    /// `--remove-rec-sep`: `block` without the record start at the front of each record and
    /// the record end at the back of each.
    fn remove_separators(&self, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(block.len());
        let mut start = 0;
        let cuts: Vec<usize> = self
            .cuts(block, 0)
            .filter(|&c| c < block.len())
            .chain(std::iter::once(block.len()))
            .collect();
        for cut in cuts {
            let record = &block[start..cut];
            out.extend_from_slice(self.strip(record));
            start = cut;
        }
        out
    }

    fn strip<'a>(&self, record: &'a [u8]) -> &'a [u8] {
        match self {
            Separator::Plain { recend, recstart } => {
                let r = record.strip_prefix(&recstart[..]).unwrap_or(record);
                r.strip_suffix(&recend[..]).unwrap_or(r)
            }
            Separator::Regex { start, end, .. } => {
                let from = start.find(record).map_or(0, |m| m.end());
                let r = &record[from..];
                let to = end.find(r).map_or(r.len(), |m| m.start());
                &r[..to]
            }
        }
    }
}

/// `--header`: what starts the input and is repeated before every block.
#[derive(Debug, Clone)]
pub enum Header {
    /// `--header :`: the first line.
    FirstLine,
    /// A regex, matched at the start of the input (`'(.*\n){2}'`: two lines).
    Regex(Regex),
}

impl Header {
    /// Parses a `--header` value (clap's `value_parser`): `:` is the first line, anything else
    /// a regex.
    pub fn parse(text: &str) -> Result<Header, String> {
        match text {
            ":" => Ok(Header::FirstLine),
            re => Regex::new(re)
                .map(Header::Regex)
                .map_err(|e| format!("bad regex {re:?}: {e}")),
        }
    }

    /// The header's length at the start of `buf`, when it is there.
    fn length(&self, buf: &[u8]) -> Option<usize> {
        match self {
            Header::FirstLine => memchr::memchr(b'\n', buf).map(|i| i + 1),
            Header::Regex(re) => re.find(buf).filter(|m| m.start() == 0).map(|m| m.end()),
        }
    }
}

/// How `--pipe` / `--pipe-part` cut the input.
#[derive(Debug, Clone)]
pub struct PipeSpec {
    /// `--block`: the bytes read for a block (GNU's meaning: a block is what was read, cut
    /// back to its last record end; a record longer than this makes its block longer).
    pub block: usize,
    pub separator: Separator,
    /// `--remove-rec-sep`.
    pub remove_separators: bool,
    /// `-N n`: exactly `n` records per block (the last one fewer), whatever their size.
    pub records: Option<usize>,
    pub header: Option<Header>,
    /// `--pipe-part`: the file cut by byte ranges (each job's stdin is spliced from it).
    pub part: Option<PathBuf>,
    /// The bytes that blocks read into memory may take at once (blocks in flight × size).
    pub budget: usize,
}

/// What a job gets on its stdin: a block (shared by the tries of the job), or with
/// `--pipe-part` a byte range of a file after the header.
#[derive(Debug, Clone)]
pub struct Block(Arc<Held>);

#[derive(Debug)]
struct Held {
    data: Data,
    /// The budget the bytes count against; given back when the last handle goes.
    budget: Option<Arc<Budget>>,
}

#[derive(Debug)]
enum Data {
    Bytes(Vec<u8>),
    Range {
        header: Vec<u8>,
        file: Arc<File>,
        start: u64,
        len: u64,
    },
}

impl Block {
    /// The bytes the job's stdin gets.
    #[must_use]
    pub fn len(&self) -> u64 {
        match &self.0.data {
            Data::Bytes(b) => b.len() as u64,
            Data::Range { header, len, .. } => header.len() as u64 + len,
        }
    }

    /// A block of no bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes of memory it holds.
    #[must_use]
    pub fn memory(&self) -> usize {
        match &self.0.data {
            Data::Bytes(b) => b.len(),
            Data::Range { header, .. } => header.len(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let (Some(budget), Data::Bytes(b)) = (&self.budget, &self.data) {
            budget.give_back(b.len());
        }
    }
}

/// Bytes of blocks in memory: the reader waits for room before it reads the next block.
#[derive(Debug)]
struct Budget {
    used: Mutex<usize>,
    room: Condvar,
    limit: usize,
}

impl Budget {
    /// Waits until `bytes` more fit (one block always fits when none is held), or `stop`.
    fn wait_for(&self, bytes: usize, stop: &AtomicBool) -> bool {
        let Ok(mut used) = self.used.lock() else {
            return true;
        };
        while *used > 0 && used.saturating_add(bytes) > self.limit {
            if stop.load(Ordering::SeqCst) {
                return false;
            }
            used = match self.room.wait_timeout(used, Duration::from_millis(100)) {
                Ok((guard, _)) => guard,
                Err(_) => return true,
            };
        }
        !stop.load(Ordering::SeqCst)
    }

    fn take(&self, bytes: usize) {
        if let Ok(mut used) = self.used.lock() {
            *used = used.saturating_add(bytes);
        }
    }

    fn give_back(&self, bytes: usize) {
        if let Ok(mut used) = self.used.lock() {
            *used = used.saturating_sub(bytes);
        }
        self.room.notify_all();
    }
}

/// Raised by the caller's `emit` when no more blocks are wanted.
pub struct Stopped;

/// Cuts `input` into blocks as `spec` says, calling `emit` with each, in order, until the
/// input ends or `emit` (or `stop`) says to stop. The read error, if any, is returned.
pub fn cut(
    spec: &PipeSpec,
    mut input: impl Read,
    stop: &AtomicBool,
    mut emit: impl FnMut(Block) -> Result<(), Stopped>,
) -> Result<(), String> {
    let budget = Arc::new(Budget {
        used: Mutex::new(0),
        room: Condvar::new(),
        limit: spec.budget.max(spec.block),
    });
    let read_error = |e: io::Error| format!("cannot read the input: {e}");
    let mut buf: Vec<u8> = Vec::new();
    let mut eof = false;
    let mut header = Vec::new();
    if let Some(h) = &spec.header {
        eof = fill(&mut input, &mut buf, spec.block.max(1)).map_err(read_error)?;
        while h.length(&buf).is_none() && !eof {
            let want = buf.len().saturating_mul(2).max(spec.block);
            eof = fill(&mut input, &mut buf, want).map_err(read_error)?;
        }
        let n = h.length(&buf).unwrap_or(buf.len());
        header = buf.drain(..n).collect();
    }
    loop {
        if !budget.wait_for(spec.block, stop) {
            return Ok(());
        }
        let (cut, ended) = next_cut(spec, &mut input, &mut buf, eof).map_err(read_error)?;
        eof = ended;
        if cut == 0 {
            return Ok(());
        }
        let rest = buf.split_off(cut);
        let mut bytes = std::mem::replace(&mut buf, rest);
        if spec.remove_separators {
            bytes = spec.separator.remove_separators(&bytes);
        }
        if !header.is_empty() {
            bytes.splice(0..0, header.iter().copied());
        }
        budget.take(bytes.len());
        let block = Block(Arc::new(Held {
            data: Data::Bytes(bytes),
            budget: Some(Arc::clone(&budget)),
        }));
        if emit(block).is_err() {
            return Ok(());
        }
    }
}

/// Reads into `buf` as needed and says where its next block ends (0: the input is over), and
/// whether the input has ended.
fn next_cut(
    spec: &PipeSpec,
    input: &mut impl Read,
    buf: &mut Vec<u8>,
    mut eof: bool,
) -> io::Result<(usize, bool)> {
    let block = spec.block.max(1);
    if let Some(n) = spec.records {
        let n = n.max(1);
        let mut searched = 0;
        let mut found = 0;
        loop {
            if buf.len() < block && !eof {
                eof = fill(input, buf, block)?;
            }
            match spec.separator.nth_cut(buf, searched, n - found) {
                Ok(cut) => return Ok((cut, eof)),
                Err(more) if !eof => {
                    found += more;
                    searched = cut_search_resume(spec, buf, searched, more);
                    let want = buf.len().saturating_add(block);
                    eof = fill(input, buf, want)?;
                }
                Err(_) => return Ok((buf.len(), eof)),
            }
        }
    }
    if !eof {
        eof = fill(input, buf, block)?;
    }
    if eof && buf.len() <= block {
        // The rest of the input is the last block, record end or not.
        return Ok((buf.len(), eof));
    }
    if let Some(cut) = spec.separator.last_cut(&buf[..block]) {
        return Ok((cut, eof));
    }
    // No record ends within a whole block: this record is longer; read on until it ends.
    loop {
        let sure = spec.separator.cut_at_end_is_sure();
        let len = buf.len();
        let found = spec
            .separator
            .cuts(buf, block - 1)
            .find(|&c| c < len || eof || sure);
        if let Some(cut) = found {
            return Ok((cut, eof));
        }
        if eof {
            return Ok((buf.len(), eof));
        }
        let grown = buf.len().saturating_mul(2);
        eof = fill(input, buf, grown)?;
    }
}

/// Where the search for more cuts starts again after `more` were found past `from`.
fn cut_search_resume(spec: &PipeSpec, buf: &[u8], from: usize, more: usize) -> usize {
    match more {
        0 => from,
        _ => spec.separator.cuts(buf, from).last().unwrap_or(from),
    }
}

impl Separator {
    /// A cut found at the very end of what was read stands whatever follows (there is no
    /// record start to wait for).
    fn cut_at_end_is_sure(&self) -> bool {
        matches!(self, Separator::Plain { recstart, .. } if recstart.is_empty())
    }
}

/// Reads into `buf` until it holds `want` bytes or the input ends (then true).
fn fill(input: &mut impl Read, buf: &mut Vec<u8>, want: usize) -> io::Result<bool> {
    if buf.capacity() < want {
        buf.reserve_exact(want - buf.len());
    }
    while buf.len() < want {
        let len = buf.len();
        buf.resize(want, 0);
        match input.read(&mut buf[len..]) {
            Ok(0) => {
                buf.truncate(len);
                return Ok(true);
            }
            Ok(n) => buf.truncate(len + n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => buf.truncate(len),
            Err(e) => {
                buf.truncate(len);
                return Err(e);
            }
        }
    }
    Ok(false)
}

/// `--pipe-part`: cuts the file `spec.part` into byte ranges of about `--block` bytes, each
/// ending at the first record end at or after that size; only the bytes around each end are
/// read here, the ranges themselves go from the file to the jobs.
pub fn cut_file(
    spec: &PipeSpec,
    mut emit: impl FnMut(Block) -> Result<(), Stopped>,
) -> Result<(), String> {
    let Some(path) = &spec.part else {
        return Ok(());
    };
    let shown = path.display();
    let file = File::open(path).map_err(|e| format!("--pipe-part {shown}: cannot open: {e}"))?;
    let size = file
        .metadata()
        .map_err(|e| format!("--pipe-part {shown}: {e}"))?
        .len();
    let file = Arc::new(file);
    let read_error = |e: io::Error| format!("--pipe-part {shown}: cannot read: {e}");
    let mut header = Vec::new();
    let mut start = 0u64;
    if let Some(h) = &spec.header {
        let mut head = Vec::new();
        let mut reader: &File = &file;
        let mut eof = false;
        let mut want = spec.block.max(4096);
        while !eof {
            eof = fill(&mut reader, &mut head, want).map_err(read_error)?;
            if h.length(&head).is_some() {
                break;
            }
            want = want.saturating_mul(2);
        }
        let n = h.length(&head).unwrap_or(head.len());
        header = head[..n].to_vec();
        start = n as u64;
    }
    while start < size {
        let end = range_end(spec, &file, start, size).map_err(read_error)?;
        let block = Block(Arc::new(Held {
            data: Data::Range {
                header: header.clone(),
                file: Arc::clone(&file),
                start,
                len: end - start,
            },
            budget: None,
        }));
        if emit(block).is_err() {
            return Ok(());
        }
        start = end;
    }
    Ok(())
}

/// The end of the range that starts at `start`: the first cut at or after `start + block`.
fn range_end(spec: &PipeSpec, file: &File, start: u64, size: u64) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let block = spec.block.max(1) as u64;
    let target = start.saturating_add(block);
    if target >= size {
        return Ok(size);
    }
    // Read from a little before the target, so that a separator across it is seen whole.
    let back = 1024u64.min(target - start);
    let mut pos = target - back;
    let mut window = vec![0u8; 64 * 1024];
    let mut carried = 0usize;
    loop {
        let n = file.read_at(&mut window[carried..], pos + carried as u64)?;
        let len = carried + n;
        let seen = &window[..len];
        // Less than the window: `back` is at most its length.
        let from = usize::try_from(target - pos).unwrap_or(usize::MAX);
        let at_end = pos + len as u64 >= size;
        if let Some(cut) = spec
            .separator
            .cuts(seen, from.saturating_sub(1))
            .find(|&c| c >= from && (c < len || at_end || spec.separator.cut_at_end_is_sure()))
        {
            return Ok(pos + cut as u64);
        }
        if at_end || n == 0 {
            return Ok(size);
        }
        // Keep the window's tail: a separator may run across into the next read.
        let keep = 1024.min(len);
        window.copy_within(len - keep..len, 0);
        pos += (len - keep) as u64;
        carried = keep;
        if window.len() < carried + 4096 {
            window.resize(carried + 64 * 1024, 0);
        }
    }
}

/// Writes `block` into the job's stdin pipe `fd` (non-blocking), then closes it. A job that
/// stops reading (`head -1`) ends the feeding quietly.
pub async fn feed(fd: OwnedFd, block: &Block) -> io::Result<()> {
    // SAFETY: `register` asks that the descriptor stay open while registered: the OwnedFd
    // moves into the AsyncFd, which deregisters it before closing it when dropped.
    let fd = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::WRITABLE)?
    };
    let quiet = |r: io::Result<()>| match r {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    };
    match &block.0.data {
        Data::Bytes(bytes) => quiet(write_all(&fd, bytes).await),
        Data::Range {
            header,
            file,
            start,
            len,
        } => {
            quiet(write_all(&fd, header).await)?;
            quiet(splice_all(&fd, file, *start, *len).await)
        }
    }
}

/// Writes `block` into `w` (an SSH channel's stdin) and flushes it; a `--pipe-part` range is
/// read from its file piece by piece, off the runtime's threads.
pub async fn feed_writer<W>(w: &mut W, block: &Block) -> io::Result<()>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    match &block.0.data {
        Data::Bytes(bytes) => w.write_all(bytes).await?,
        Data::Range {
            header,
            file,
            start,
            len,
        } => {
            w.write_all(header).await?;
            let (mut offset, end) = (*start, start.saturating_add(*len));
            while offset < end {
                let want = usize::try_from((end - offset).min(256 * 1024)).unwrap_or(256 * 1024);
                let file = Arc::clone(file);
                let piece = tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0; want];
                    let n = file.read_at(&mut buf, offset)?;
                    buf.truncate(n);
                    Ok::<_, io::Error>(buf)
                })
                .await
                .map_err(io::Error::other)??;
                if piece.is_empty() {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the --pipe-part file got shorter",
                    ));
                }
                w.write_all(&piece).await?;
                offset += piece.len() as u64;
            }
        }
    }
    w.flush().await
}

async fn write_all(fd: &tokio::io::unix::AsyncFd<OwnedFd>, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        let mut ready = fd.writable().await?;
        match ready
            .try_io(|fd| nix::unistd::write(fd.get_ref().as_fd(), bytes).map_err(io::Error::from))
        {
            Ok(Ok(n)) => bytes = &bytes[n..],
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

/// Moves `len` bytes of `file` from `start` into the pipe with splice(2): the kernel copies
/// them; they never pass through bakapara's memory.
async fn splice_all(
    fd: &tokio::io::unix::AsyncFd<OwnedFd>,
    file: &File,
    start: u64,
    len: u64,
) -> io::Result<()> {
    use nix::fcntl::{splice, SpliceFFlags};
    let mut offset = i64::try_from(start).map_err(io::Error::other)?;
    let mut left = len;
    while left > 0 {
        let mut ready = fd.writable().await?;
        let chunk = usize::try_from(left.min(1 << 20)).unwrap_or(1 << 20);
        match ready.try_io(|fd| {
            splice(
                file,
                Some(&mut offset),
                fd.get_ref(),
                None,
                chunk,
                SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE,
            )
            .map_err(io::Error::from)
        }) {
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(n)) => left -= n as u64,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(block: usize, sep: Separator) -> PipeSpec {
        PipeSpec {
            block,
            separator: sep,
            remove_separators: false,
            records: None,
            header: None,
            part: None,
            budget: 1 << 30,
        }
    }

    fn blocks(spec: &PipeSpec, input: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let stop = AtomicBool::new(false);
        cut(spec, input, &stop, |b| {
            match &b.0.data {
                Data::Bytes(v) => out.push(v.clone()),
                Data::Range { .. } => unreachable!(),
            }
            Ok(())
        })
        .expect("no read error");
        out
    }

    fn lines() -> Separator {
        Separator::new(None, None, false).expect("plain")
    }

    #[test]
    fn blocks_are_cut_at_the_last_record_end_as_gnu() {
        let input: Vec<u8> = (1..=40)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let sizes: Vec<usize> = blocks(&spec(20, lines()), &input)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [18, 18, 18, 18, 18, 18, 3]);
    }

    #[test]
    fn a_long_record_makes_a_longer_block() {
        let input = [&[b'a'; 35][..], b"\nb\nc\n"].concat();
        let sizes: Vec<usize> = blocks(&spec(10, lines()), &input)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [36, 4]);
    }

    #[test]
    fn records_per_block_and_removed_separators() {
        let sep = Separator::new(Some(b";"), None, false).expect("plain");
        let mut s = spec(1, sep);
        s.records = Some(2);
        s.remove_separators = true;
        assert_eq!(
            blocks(&s, b"a;b;c;d;e"),
            [b"ab".to_vec(), b"cd".to_vec(), b"e".to_vec()]
        );
    }

    #[test]
    fn record_start_alone_cuts_before_it() {
        let sep = Separator::new(None, Some(b">"), false).expect("plain");
        let mut s = spec(1 << 20, sep);
        s.records = Some(1);
        assert_eq!(
            blocks(&s, b">x\n1\n>y\n2\n"),
            [b">x\n1\n".to_vec(), b">y\n2\n".to_vec()]
        );
    }
}
