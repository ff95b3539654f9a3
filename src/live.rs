//! `--line-buffer` and `-u/--ungroup`: jobs' output passed to bakapara's stdout and stderr
//! while the jobs run, by a writer thread of its own. Executors forward their jobs' pipes to a
//! [`LiveSink`]; the thread writes each message whole, so with `--line-buffer` (messages of
//! whole lines) a line is never split, and with `--ungroup` chunks pass as they come.
//!
//! The thread writes to duplicates of file descriptors 1 and 2, not through `std::io::stdout()`,
//! whose lock the result writer may hold for the whole run. A slow reader of stdout holds the
//! thread, then the bounded channel, then the jobs' pipes (the jobs wait, as they would under
//! GNU Parallel); job supervision goes on meanwhile on the run's own thread.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, oneshot};

/// How live output is cut into writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiveMode {
    /// `--line-buffer`: whole lines only (a last line without a newline at the job's end).
    Lines,
    /// `-u/--ungroup`: every chunk as it is read.
    Chunks,
}

/// Which of bakapara's streams a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fd {
    Out,
    Err,
}

/// With `--line-buffer`, a line longer than this is passed on in pieces rather than held
/// whole (memory stays bounded whatever a job prints).
const MAX_LINE: usize = 1 << 20;

/// Messages waiting for the writer thread, at most (each up to a read's worth of bytes).
const QUEUE: usize = 64;

enum Message {
    Write(Fd, Vec<u8>),
    /// Answered once everything sent before it is written.
    Flush(oneshot::Sender<()>),
}

/// Where executors send their jobs' output; cheap to clone.
#[derive(Debug, Clone)]
pub struct LiveSink {
    mode: LiveMode,
    tx: mpsc::Sender<Message>,
    /// The first write error (stdout closed, disk full): later output is dropped.
    error: Arc<Mutex<Option<std::io::Error>>>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Write(fd, bytes) => write!(f, "Write({fd:?}, {} bytes)", bytes.len()),
            Message::Flush(_) => write!(f, "Flush"),
        }
    }
}

/// Whatever else draws on the terminal (the progress display): it takes itself off the screen
/// around each write of live output. This module knows it only through this trait.
pub trait Suspend: Send + 'static {
    /// Runs `write` with the other drawing off the screen.
    fn around(&self, write: &mut dyn FnMut());
}

impl LiveSink {
    /// Starts the writer thread. `suspend` takes the live progress display off the screen
    /// around writes to a terminal it is drawn on.
    pub fn start(mode: LiveMode, suspend: impl Suspend) -> std::io::Result<LiveSink> {
        let stdout = File::from(std::io::stdout().as_fd().try_clone_to_owned()?);
        let stderr = File::from(std::io::stderr().as_fd().try_clone_to_owned()?);
        let (tx, rx) = mpsc::channel(QUEUE);
        let error = Arc::new(Mutex::new(None));
        let thread_error = Arc::clone(&error);
        std::thread::Builder::new()
            .name("bakapara-live".into())
            .spawn(move || {
                crate::signals::keep_off_this_thread();
                write_all(rx, stdout, stderr, &suspend, &thread_error);
            })?;
        Ok(LiveSink { mode, tx, error })
    }

    /// Reads `stream` to its end, passing it to `fd` as the mode says, and returns once all of
    /// it is written; with `spool`, also writes it there (for `--results`). With `tag`
    /// (`--line-buffer` only), each line passed on starts with it.
    pub async fn forward(
        &self,
        mut stream: impl AsyncRead + Unpin,
        fd: Fd,
        mut spool: Option<&File>,
        tag: Option<&[u8]>,
    ) {
        let mut tagger = Tagger {
            tag,
            at_line_start: true,
        };
        let mut pending: Vec<u8> = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let read = &chunk[..n];
            if let Some(file) = &mut spool {
                // A spool that cannot be written loses only the --results copy.
                let _ = file.write_all(read);
            }
            if self.mode == LiveMode::Chunks {
                self.send(fd, tagger.apply(read.to_vec())).await;
                continue;
            }
            pending.extend_from_slice(read);
            match pending.iter().rposition(|&b| b == b'\n') {
                Some(end) => {
                    let rest = pending.split_off(end + 1);
                    let lines = std::mem::replace(&mut pending, rest);
                    self.send(fd, tagger.apply(lines)).await;
                }
                None if pending.len() >= MAX_LINE => {
                    let piece = std::mem::take(&mut pending);
                    self.send(fd, tagger.apply(piece)).await;
                }
                None => {}
            }
        }
        if !pending.is_empty() {
            self.send(fd, tagger.apply(pending)).await;
        }
        // The job's result (and the run's last line) comes after its output, never before.
        self.flush().await;
    }

    async fn send(&self, fd: Fd, bytes: Vec<u8>) {
        // The thread is gone only after a panic; the output is then lost, the job goes on.
        let _ = self.tx.send(Message::Write(fd, bytes)).await;
    }

    /// Waits until everything sent so far is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// The first error writing job output, if any.
    #[must_use]
    pub fn take_error(&self) -> Option<std::io::Error> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }
}

/// Puts a tag before each line of the pieces of one stream, in order.
struct Tagger<'a> {
    tag: Option<&'a [u8]>,
    /// The next piece starts a line.
    at_line_start: bool,
}

impl Tagger<'_> {
    fn apply(&mut self, piece: Vec<u8>) -> Vec<u8> {
        let Some(tag) = self.tag else {
            return piece;
        };
        let lines = piece.split_inclusive(|&b| b == b'\n');
        let mut out = Vec::with_capacity(piece.len() + tag.len() * 2);
        for line in lines {
            if self.at_line_start {
                out.extend_from_slice(tag);
            }
            out.extend_from_slice(line);
            self.at_line_start = line.last() == Some(&b'\n');
        }
        out
    }
}

fn write_all(
    mut rx: mpsc::Receiver<Message>,
    mut stdout: File,
    mut stderr: File,
    suspend: &impl Suspend,
    error: &Mutex<Option<std::io::Error>>,
) {
    let mut failed = false;
    while let Some(message) = rx.blocking_recv() {
        match message {
            Message::Flush(done) => {
                let _ = done.send(());
            }
            // After a failure, output is read and dropped so that jobs do not block.
            Message::Write(..) if failed => {}
            Message::Write(fd, bytes) => {
                let to = match fd {
                    Fd::Out => &mut stdout,
                    Fd::Err => &mut stderr,
                };
                let mut written = Ok(());
                suspend.around(&mut || written = to.write_all(&bytes));
                if let Err(e) = written {
                    if fd == Fd::Out {
                        failed = true;
                        if let Ok(mut slot) = error.lock() {
                            slot.get_or_insert(e);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_goes_before_every_line_across_pieces() {
        let mut tagger = Tagger {
            tag: Some(b"t\t"),
            at_line_start: true,
        };
        assert_eq!(tagger.apply(b"a\nb".to_vec()), b"t\ta\nt\tb");
        assert_eq!(tagger.apply(b"c\n\n".to_vec()), b"c\nt\t\n");
        assert_eq!(tagger.apply(b"d".to_vec()), b"t\td");
        let mut untagged = Tagger {
            tag: None,
            at_line_start: true,
        };
        assert_eq!(untagged.apply(b"x\ny".to_vec()), b"x\ny");
    }
}
