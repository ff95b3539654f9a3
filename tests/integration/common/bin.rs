//! Running the real bakapara binary from tests: a run watched while it goes on ([`Live`]),
//! its end ([`Finished`]), and finding (and reaping) job processes by a marker in /proc.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use assert_cmd::cargo::CommandCargoExt;
use nix::sys::signal::Signal;
use serde_json::Value;

/// How long one run may take before the test gives up (the machine may be busy).
pub const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long to wait for a condition (jobs running, processes gone, lines written).
pub const WAIT: Duration = Duration::from_secs(60);

pub fn bakapara() -> Command {
    Command::cargo_bin("bakapara").expect("the bakapara binary is built")
}

/// A digits-only token unique to this test process and call: it goes into `sleep` arguments
/// (`sleep 100<marker>`), so that the job's processes can be found in /proc.
pub fn marker() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    format!("{}{:03}", std::process::id(), n)
}

/// Pids of processes (other than this test) whose command line, NULs read as spaces,
/// contains `needle`.
pub fn pids_with(needle: &str) -> Vec<u32> {
    super::sshd::pids_with_cmdline_containing(needle)
}

/// `sleep` processes whose argument holds `marker` (not bakapara, whose command line may hold
/// the template).
pub fn sleepers(marker: &str) -> Vec<u32> {
    pids_with(marker)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
        })
        .collect()
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temp dir")
}

/// Kills (by pid) the processes whose command line holds a test's marker when the test ends,
/// so that a failing test leaves no `sleep` behind.
pub struct Reaper(pub String);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in pids_with(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a pid is an i32")),
                Signal::SIGKILL,
            );
        }
    }
}

/// Polls `cond` until it holds; panics with `what` after [`WAIT`].
pub fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    super::sshd::wait_until(WAIT, what, cond);
}

pub fn parse_lines(stdout: &[u8]) -> Vec<Value> {
    stdout
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).unwrap_or_else(|e| {
                panic!(
                    "not a JSON line: {:?}: {e}",
                    String::from_utf8_lossy(&l[..l.len().min(300)])
                )
            })
        })
        .collect()
}

/// A bakapara run whose output can be watched while it goes on (a thread collects its stdout
/// lines as they come). Dropping it kills bakapara if it still runs, so a failed test leaves
/// nothing behind.
pub struct Live {
    pub child: Child,
    /// Raw stdout lines (newline included) so far.
    got: Arc<Mutex<Vec<Vec<u8>>>>,
    stdout: Option<JoinHandle<()>>,
    stderr: Option<JoinHandle<String>>,
    writer: Option<JoinHandle<()>>,
}

/// How a finished run ended.
pub struct Finished {
    pub status: ExitStatus,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// Raw stdout lines, newline included.
    pub raw: Vec<Vec<u8>>,
    pub lines: Vec<Value>,
    pub stderr: String,
}

impl Live {
    pub fn spawn(args: &[&str], stdin: Vec<u8>, dir: &Path) -> Live {
        Live::spawn_with(bakapara().args(args).current_dir(dir), stdin)
    }

    pub fn spawn_with(cmd: &mut Command, stdin: Vec<u8>) -> Live {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("bakapara starts");
        let mut input = child.stdin.take().expect("stdin");
        let writer = std::thread::spawn(move || {
            let _ = input.write_all(&stdin);
        });
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let stdout = std::thread::spawn(move || loop {
            let mut line = Vec::new();
            match out.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => lock(&sink).push(line),
            }
        });
        let mut err = child.stderr.take().expect("stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = err.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        });
        Live {
            child,
            got,
            stdout: Some(stdout),
            stderr: Some(stderr),
            writer: Some(writer),
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("a pid is an i32"))
    }

    pub fn signal(&self, sig: Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("signal bakapara");
    }

    /// The lines so far, parsed.
    pub fn lines(&self) -> Vec<Value> {
        parse_lines(&lock(&self.got).concat())
    }

    /// Waits (up to [`WAIT`]) until `cond` holds for the result lines so far; on a timeout
    /// kills bakapara and panics with the lines and its stderr, which tell what it was doing.
    pub fn wait_for_lines(&mut self, what: &str, cond: impl Fn(&[Value]) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond(&self.lines()) {
            if Instant::now() > deadline {
                let stderr = self.kill_for_stderr();
                panic!(
                    "timed out after {WAIT:?} waiting for result lines: {what}; got {:?}\nstderr:\n{stderr}",
                    String::from_utf8_lossy(&lock(&self.got).concat())
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for bakapara to end (killing it and failing after `RUN_TIMEOUT`).
    pub fn finish(self) -> Finished {
        self.finish_within(RUN_TIMEOUT)
    }

    /// Waits for bakapara to end (killing it and failing, with its stderr, after `limit`).
    pub fn finish_within(mut self, limit: Duration) -> Finished {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > limit {
                let stderr = self.kill_for_stderr();
                panic!(
                    "bakapara did not end within {limit:?}; {} lines so far\nstderr:\n{stderr}",
                    lock(&self.got).len()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if let Some(t) = self.stdout.take() {
            t.join().expect("stdout reader");
        }
        if let Some(t) = self.writer.take() {
            t.join().expect("stdin writer");
        }
        let stderr = self
            .stderr
            .take()
            .map(|t| t.join().expect("stderr reader"))
            .unwrap_or_default();
        let raw = std::mem::take(&mut *lock(&self.got));
        Finished {
            status,
            code: status.code(),
            signal: status.signal(),
            lines: parse_lines(&raw.concat()),
            raw,
            stderr,
        }
    }

    /// Kills bakapara and returns what it wrote to stderr.
    fn kill_for_stderr(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
