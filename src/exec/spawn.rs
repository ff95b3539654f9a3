//! Starting a local job's process, and looking at how it is: clone(2) with `CLONE_VM |
//! CLONE_VFORK` into a session of its own, then execve(2) ([`start`]), and waitpid(2) for its
//! exit or stop ([`look`]).
//!
//! Neither std's `Command` nor Tokio's starts a process in a new session without a `pre_exec`
//! setsid, which makes std fork(2) instead of using `posix_spawn`: measured on two busy cores,
//! `seq 1000 | bakapara -q -j 2 true`, best of 6, fork + setsid took 2.47 s and `posix_spawn`
//! with `POSIX_SPAWN_SETSID` 2.13 s. This module does what glibc's `posix_spawn` does, less its
//! stack mapping per call (see [`start`]). Against the `posix_spawn` version it replaced, on 2000
//! `true` jobs: bakapara's own CPU at `-j 200` 183 ms where that took 208 (`perf stat
//! --no-inherit -e task-clock`, medians of 7 interleaved runs), the wall time at `-j 2` 0.97x
//! (`farm-bench -n 14`, median of pairs). The caller waits for the process by calling
//! [`look`] on each SIGCHLD, which also reports stops (std and Tokio only report exits).

use std::cell::Cell;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicI32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::libc;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{pipe2, Pid};
use tokio::net::unix::pipe::Receiver;

/// Where a job's stdout or stderr goes.
pub(crate) enum Sink {
    /// A pipe whose read end bakapara gets back.
    Pipe,
    /// A file the caller opened (an `out` file, or a spool file).
    File(File),
}

/// A started process: it leads its own session and process group (its pid is both ids).
pub(crate) struct Spawned {
    pub pid: Pid,
    /// The write end of the job's stdin pipe (non-blocking), when one was asked for.
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<Receiver>,
    pub stderr: Option<Receiver>,
}

/// How a started process is when looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    Running,
    /// Stopped by this signal since the last look.
    Stopped(Signal),
    /// Ended (and reaped): its exit code, or the signal that killed it.
    Ended {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// It can no longer be waited for (someone else reaped it).
    Lost(Errno),
}

/// bakapara's environment as `NAME=value` strings, read once per run rather than once per job
/// (reading and copying it was an eighth of bakapara's own instructions per local job).
#[derive(Debug)]
pub(crate) struct Environment {
    vars: Vec<CString>,
}

impl Environment {
    /// The process's environment now (a variable that is not valid in a C string, which the
    /// kernel cannot hold anyway, is left out).
    pub fn capture() -> Environment {
        let vars = std::env::vars_os()
            .filter_map(|(name, value)| {
                let mut entry = name.as_bytes().to_vec();
                entry.push(b'=');
                entry.extend_from_slice(value.as_bytes());
                CString::new(entry).ok()
            })
            .collect();
        Environment { vars }
    }
}

/// Starts `program` with `args` (stdin `/dev/null`, or with `piped_stdin` a pipe whose write
/// end comes back; the environment `base` plus `env`, in `dir`) in a session of its own. Must
/// be called inside a Tokio runtime (the pipes are registered there).
// Each argument is one part of the job's process; a struct of them would only be unpacked here.
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    program: &str,
    args: &[&str],
    base: &Environment,
    env: &[(String, String)],
    dir: Option<&Path>,
    piped_stdin: bool,
    stdout: Sink,
    stderr: Sink,
) -> io::Result<Spawned> {
    let mut argv = vec![c_string(program.as_bytes())?];
    for arg in args {
        argv.push(c_string(arg.as_bytes())?);
    }
    let extra = env
        .iter()
        .map(|(name, value)| c_string(format!("{name}={value}").as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let dir = dir
        .map(|d| c_string(d.as_os_str().as_bytes()))
        .transpose()?;
    let (out_read, out_write) = sink_fds(stdout)?;
    let (err_read, err_write) = sink_fds(stderr)?;
    let stdin = if piped_stdin {
        let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
        Some((above_stdio(read)?, write))
    } else {
        None
    };
    let argv_ptrs = pointers(&argv);
    let envp_ptrs = environment(base, env, &extra);
    let plan = Plan {
        path: argv[0].as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp_ptrs.as_ptr(),
        stdin: stdin.as_ref().map_or(-1, |(read, _)| read.as_raw_fd()),
        stdout: out_write.as_raw_fd(),
        stderr: err_write.as_raw_fd(),
        dir: dir.as_ref().map_or(std::ptr::null(), |d| d.as_ptr()),
        last_signal: libc::SIGRTMAX(),
        errno: AtomicI32::new(0),
    };
    let pid = start(&plan)?;
    // The child has its own copies now.
    drop((out_write, err_write));
    let stdin = match stdin {
        Some((read, write)) => {
            drop(read);
            fcntl(write.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
            Some(write)
        }
        None => None,
    };
    // Our ends are non-blocking since pipe2 (see `sink_fds`).
    let stdout = out_read
        .map(Receiver::from_owned_fd_unchecked)
        .transpose()?;
    let stderr = err_read
        .map(Receiver::from_owned_fd_unchecked)
        .transpose()?;
    Ok(Spawned {
        pid,
        stdin,
        stdout,
        stderr,
    })
}

/// How the started process `pid` is now; an exit is reaped (reported once), a stop too.
pub(crate) fn look(pid: Pid) -> State {
    let flags = WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED;
    match waitpid(pid, Some(flags)) {
        Ok(WaitStatus::Exited(_, code)) => State::Ended {
            code: Some(code),
            signal: None,
        },
        Ok(WaitStatus::Signaled(_, sig, _)) => State::Ended {
            code: None,
            signal: Some(sig as i32),
        },
        Ok(WaitStatus::Stopped(_, sig)) => State::Stopped(sig),
        Ok(_) | Err(Errno::EINTR) => State::Running,
        Err(e) => State::Lost(e),
    }
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "nul byte found in provided data",
        )
    })
}

/// The NULL-terminated envp: `base` without the variables `env` sets, then `extra` (the
/// `NAME=value` strings of `env`), so that a job's own values win.
fn environment(
    base: &Environment,
    env: &[(String, String)],
    extra: &[CString],
) -> Vec<*mut libc::c_char> {
    let overridden = |var: &CString| {
        let bytes = var.as_bytes();
        env.iter().any(|(name, _)| {
            bytes.len() > name.len()
                && bytes.starts_with(name.as_bytes())
                && bytes[name.len()] == b'='
        })
    };
    let mut ptrs = Vec::with_capacity(base.vars.len() + extra.len() + 1);
    ptrs.extend(
        base.vars
            .iter()
            .filter(|var| env.is_empty() || !overridden(var))
            .chain(extra)
            .map(|s| s.as_ptr().cast_mut()),
    );
    ptrs.push(std::ptr::null_mut());
    ptrs
}

/// A NULL-terminated array of pointers into `strings`, for argv and envp.
fn pointers(strings: &[CString]) -> Vec<*mut libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr().cast_mut())
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

/// bakapara's end (for a pipe: non-blocking, for Tokio) and the child's end of a sink. The
/// child's end is moved above the standard descriptors, so that the dup2 actions cannot
/// overwrite one another when bakapara itself was started with one of 0, 1, 2 closed.
fn sink_fds(sink: Sink) -> io::Result<(Option<OwnedFd>, OwnedFd)> {
    let (ours, theirs) = match sink {
        Sink::Pipe => {
            // Both ends non-blocking, then the child's end blocking again: one fcntl per pipe
            // where setting our end alone takes two (get the flags, set them).
            let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
            fcntl(write.as_raw_fd(), FcntlArg::F_SETFL(OFlag::empty()))?;
            (Some(read), write)
        }
        Sink::File(file) => (None, OwnedFd::from(file)),
    };
    Ok((ours, above_stdio(theirs)?))
}

fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let raw = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(3))?;
    // SAFETY: fcntl just returned `raw` as a new descriptor, owned by nobody else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) })
}

/// Everything the child does between clone(2) and execve(2), prepared by the parent so that
/// the child only reads it (and writes `errno` when it fails): the child shares bakapara's
/// memory and must not allocate, lock or unwind.
struct Plan {
    path: *const libc::c_char,
    /// NULL-terminated.
    argv: *const *mut libc::c_char,
    /// NULL-terminated.
    envp: *const *mut libc::c_char,
    /// The read end of the job's stdin pipe, or -1 for `/dev/null`.
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    /// The directory to change to, or NULL.
    dir: *const libc::c_char,
    /// The highest signal number (`SIGRTMAX`).
    last_signal: libc::c_int,
    /// Set by the child to the error number of the step that failed, before it exits.
    errno: AtomicI32,
}

/// Starts the child that `plan` describes and returns its pid once it has replaced itself with
/// the program (or the error that stopped it, the child reaped).
///
/// This is `posix_spawn(3)` as glibc does it (clone(2) with `CLONE_VM | CLONE_VFORK`: the child
/// borrows bakapara's memory until its execve, and the calling thread waits for that), with one
/// difference that is the point: the child's stack is this thread's [`ChildStack`], mapped once,
/// where glibc maps and unmaps one per call. Unmapping memory of a process with several
/// threads costs a TLB shootdown on every CPU running one of them; measured at `-j 200`, the
/// map and unmap were 7% of bakapara's own CPU per job. The child also resets only the
/// signals that have a handler (glibc writes every one): about 80 system calls instead of 128.
fn start(plan: &Plan) -> io::Result<Pid> {
    let stack = STACK.with(Cell::take).map_or_else(ChildStack::new, Ok)?;
    // SAFETY: sigset_t is plain storage that sigfillset initialises; pthread_sigmask gets
    // valid pointers to it and to `old`, which it fills. Blocking every signal on this thread
    // means no signal handler can run in the child before it has reset the handlers (the
    // child starts with this thread's mask): a handler running there would run on the child's
    // stack in bakapara's memory. glibc's own two signals (thread cancellation, setxid) cannot
    // be blocked, but glibc sends them only to its threads' ids, and the child is none of them.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut all);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const all, &raw mut old);
        old
    };
    // SAFETY: `child` is an extern "C" fn that never returns into Rust code that could unwind
    // (it ends in execve or _exit). The stack pointer is the top of a mapping of
    // `CHILD_STACK` bytes that this thread owns (taken out of STACK, so no other spawn on this
    // thread can use it, and the thread itself waits in clone until the child has exec'd or
    // exited, so the child is its only user); the child's use of it is bounded (see
    // `child`). `plan` outlives the call, and everything it points to lives in the caller's
    // frame or in `base`, borrowed for the whole of `spawn`. With CLONE_VFORK, clone returns
    // only once the child no longer uses bakapara's memory: after its execve, the memory is
    // the new program's; after _exit, it has none.
    let pid = unsafe {
        libc::clone(
            child,
            stack.top(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_ref(plan).cast_mut().cast(),
        )
    };
    let cloned = if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(Pid::from_raw(pid))
    };
    // SAFETY: `old` is the mask pthread_sigmask returned above.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &raw const old, std::ptr::null_mut());
    }
    STACK.with(|cell| cell.set(Some(stack)));
    let pid = cloned?;
    match plan.errno.load(Ordering::Relaxed) {
        0 => Ok(pid),
        errno => {
            // The child has exited (or is about to): reap it, so that no zombie is left.
            let _ = waitpid(pid, None);
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The child's side of [`start`]: it resets the signals bakapara handles to their default
/// action (and SIGPIPE, which Rust ignores in bakapara and a job's `yes | head` needs), leads
/// a new session, wires its standard streams, changes directory, clears its signal mask and
/// becomes the program. Each step is one async-signal-safe libc call on data the parent
/// prepared; the deepest of them (sigaction, execve) are thin system-call wrappers, so the
/// child needs well under a page of its [`CHILD_STACK`] bytes (and a guard page below them
/// turns an overrun into a fault rather than a write into other memory).
extern "C" fn child(plan: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `plan` is the `&Plan` that `start` passed to clone, alive while the parent
    // waits (CLONE_VFORK); the child only reads it and stores into its atomic `errno`.
    let plan = unsafe { &*plan.cast::<Plan>() };
    // SAFETY (for the whole block): every call is async-signal-safe and gets pointers to
    // locals or to the parent's prepared, NUL-terminated strings and arrays. No call allocates,
    // takes a lock or can unwind; the errno that libc sets lands in the parent's thread-local
    // slot, which the parent (suspended in clone) does not read until afterwards.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        for signal in 1..=plan.last_signal {
            if signal == libc::SIGKILL || signal == libc::SIGSTOP {
                continue;
            }
            let mut now: libc::sigaction = std::mem::zeroed();
            // glibc refuses its own two signals (EINVAL): they are not the job's business.
            if libc::sigaction(signal, std::ptr::null(), &raw mut now) != 0 {
                continue;
            }
            let handled = now.sa_sigaction != libc::SIG_DFL && now.sa_sigaction != libc::SIG_IGN;
            if (handled || signal == libc::SIGPIPE)
                && libc::sigaction(signal, &raw const default, std::ptr::null_mut()) != 0
            {
                fail(plan);
            }
        }
        if libc::setsid() < 0 {
            fail(plan);
        }
        if plan.stdin < 0 {
            // Close-on-exec, so that the copy above 0 does not reach the job; when bakapara
            // runs with 0 closed, open returns 0 itself, which must then stay open.
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            let wired = match null {
                0 => libc::fcntl(0, libc::F_SETFD, 0),
                _ if null < 0 => null,
                _ => libc::dup2(null, 0),
            };
            if wired < 0 {
                fail(plan);
            }
        } else if libc::dup2(plan.stdin, 0) < 0 {
            fail(plan);
        }
        // The sources are above 2 (see `above_stdio`), so no dup2 overwrites another's source.
        if libc::dup2(plan.stdout, 1) < 0 || libc::dup2(plan.stderr, 2) < 0 {
            fail(plan);
        }
        if !plan.dir.is_null() && libc::chdir(plan.dir) < 0 {
            fail(plan);
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &raw const empty, std::ptr::null_mut()) < 0 {
            fail(plan);
        }
        libc::execve(plan.path, plan.argv.cast(), plan.envp.cast());
        fail(plan)
    }
}

/// Records the error of the child's last call for the parent, and ends the child.
fn fail(plan: &Plan) -> ! {
    plan.errno
        .store(Errno::last_raw().max(1), Ordering::Relaxed);
    // SAFETY: _exit ends the child at once, running nothing of bakapara's (no atexit
    // handlers, no buffers flushed): the right end for a child sharing its parent's memory.
    unsafe { libc::_exit(127) }
}

/// The usable size of a child's stack.
const CHILD_STACK: usize = 64 * 1024;

thread_local! {
    /// This thread's child stack, out of the cell while a child runs on it.
    static STACK: Cell<Option<ChildStack>> = const { Cell::new(None) };
}

/// A mapping of [`CHILD_STACK`] bytes with a guard page below, unmapped when dropped.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let len = CHILD_STACK + page;
        // SAFETY: an anonymous private mapping at an address of the kernel's choosing touches
        // no existing memory.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = ChildStack { base, len };
        // SAFETY: the first page of the mapping just made, which nothing uses yet.
        if unsafe { libc::mprotect(base, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }

    /// The stack's highest address (it grows down), 16-byte aligned as the ABIs want.
    fn top(&self) -> *mut libc::c_void {
        // The mapping is page-aligned and its length a multiple of the page size.
        self.base.wrapping_byte_add(self.len)
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once, when no child uses it (a stack in
        // use is out of STACK and owned by `start`, which waits for the child before it drops
        // or returns it).
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// `/proc/self/status` and `/proc/self/stat` of a program started as jobs are.
    async fn started_state(env: &[(String, String)]) -> String {
        let spawned = spawn(
            "/bin/cat",
            &["/proc/self/status", "/proc/self/stat", "/proc/self/environ"],
            &Environment::capture(),
            env,
            Some(Path::new("/")),
            false,
            Sink::Pipe,
            Sink::Pipe,
        )
        .expect("cat starts");
        let mut text = String::new();
        let mut out = spawned.stdout.expect("stdout is a pipe");
        out.read_to_string(&mut text).await.expect("cat's output");
        loop {
            match look(spawned.pid) {
                State::Running => tokio::task::yield_now().await,
                State::Ended { code, .. } => {
                    assert_eq!(code, Some(0), "{text}");
                    break;
                }
                other => panic!("cat is {other:?}"),
            }
        }
        text
    }

    fn field<'a>(status: &'a str, name: &str) -> &'a str {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map_or("", str::trim)
    }

    #[tokio::test]
    async fn a_job_starts_with_no_blocked_signal_sigpipe_and_a_session_of_its_own() {
        // (Handlers the kernel resets at execve itself: what the child's reset of them
        // prevents, a handler running before the execve, cannot be seen from the job.)
        let text = started_state(&[("BAKAPARA_SPAWN_TEST".into(), "1".into())]).await;
        assert_eq!(field(&text, "SigBlk:"), "0000000000000000", "{text}");
        let ignored = u64::from_str_radix(field(&text, "SigIgn:"), 16).expect("SigIgn");
        assert_eq!(
            ignored & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE is default: {text}"
        );
        // stat: "pid (cat) S ppid pgrp session ..."
        let stat = text.lines().find(|l| l.contains(" (cat) ")).expect("stat");
        let after = stat.rsplit_once(") ").expect("stat fields").1;
        let fields: Vec<&str> = after.split(' ').collect();
        let pid = field(&text, "Pid:");
        assert_eq!(
            (fields[2], fields[3]),
            (pid, pid),
            "group and session: {stat}"
        );
        assert!(text.contains("BAKAPARA_SPAWN_TEST=1"), "{text}");
    }

    #[tokio::test]
    async fn a_program_that_cannot_start_is_its_error_not_a_child() {
        let failed = spawn(
            "/nonexistent/bakapara-test",
            &[],
            &Environment::capture(),
            &[],
            None,
            true,
            Sink::Pipe,
            Sink::Pipe,
        );
        assert_eq!(
            failed.err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
        let bad_dir = spawn(
            "/bin/true",
            &[],
            &Environment::capture(),
            &[],
            Some(Path::new("/nonexistent/dir")),
            false,
            Sink::Pipe,
            Sink::Pipe,
        );
        assert_eq!(
            bad_dir.err().map(|e| e.kind()),
            Some(io::ErrorKind::NotFound)
        );
    }
}
