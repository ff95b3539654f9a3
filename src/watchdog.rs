//! The run's record of its local job processes, and the watchdog process that kills them when
//! bakapara dies without cleaning up (SIGKILL, a panic, any signal it does not handle).
//!
//! The watchdog is a small `/bin/bash` script started once per run, in a session of its own
//! (no terminal: Ctrl-C, Ctrl-Z and a hang-up do not reach it), ignoring the signals a user or
//! a terminal sends. Its stdin is one end of a socket pair; only bakapara holds the other end
//! (close-on-exec, so jobs never inherit it). bakapara writes one short line as each job's
//! process group starts (`+g123`) and ends (`-g123`). When the socket reaches end of file
//! (bakapara is gone, whatever killed it, or the run ended), the watchdog sends TERM (and
//! CONT, for stopped jobs) to every group still recorded, KILL after a second, and exits. At
//! the end of a clean run nothing is recorded any more, and it exits at once; a job whose
//! supervision was lost to a panic stays recorded, so it is killed then too.
//!
//! The same record lets Ctrl-Z stop every job with bakapara and `fg` continue them
//! ([`Watchdog::stop_jobs`], [`Watchdog::continue_jobs`]), and tracks how long bakapara was
//! stopped, so that job timeouts do not count that time ([`Watchdog::paused`]).
//!
//! The watchdog is part of every run, library runs included: a program that embeds bakapara
//! can die of SIGKILL too. When it cannot be started, the run goes on without it.

use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The watchdog's script: it reads the record from stdin, and acts when stdin ends. awk reads
/// it (in large reads, keeping only the live entries), where bash's `read` would make a
/// system call per byte; bash's loop is the fallback where there is no awk.
const SCRIPT: &str = r#"# bakapara's watchdog (src/watchdog.rs in bakapara)
trap '' INT TERM HUP QUIT TSTP TTIN TTOU USR1 USR2 ALRM PIPE
if command -v awk >/dev/null; then
    mapfile -t targets < <(awk '
        /^[+][gp][0-9]+$/ { live[substr($0, 2)] = 1; next }
        /^-[gp][0-9]+$/ { delete live[substr($0, 2)]; next }
        END { for (k in live) print (substr(k, 1, 1) == "g" ? "-" : "") substr(k, 2) }')
else
    declare -A watched=()
    while IFS= read -r line; do
        case $line in
            +[gp][0-9]*) watched[${line:1}]=1 ;;
            -[gp][0-9]*) unset "watched[${line:1}]" ;;
        esac
    done
    targets=()
    for key in "${!watched[@]}"; do
        case $key in
            g*) targets+=("-${key:1}") ;;
            p*) targets+=("${key:1}") ;;
        esac
    done
fi
(( ${#targets[@]} )) || exit 0
kill -TERM -- "${targets[@]}" 2>/dev/null
kill -CONT -- "${targets[@]}" 2>/dev/null
for _ in {1..20}; do
    alive=0
    for t in "${targets[@]}"; do kill -0 -- "$t" 2>/dev/null && alive=1; done
    (( alive )) || exit 0
    sleep 0.05
done
kill -KILL -- "${targets[@]}" 2>/dev/null
exit 0
"#;

/// The run's live job processes, and the watchdog that outlives bakapara to kill them.
#[derive(Debug, Default)]
pub struct Watchdog {
    /// bakapara's end of the watchdog's stdin; `None` without a watchdog process.
    link: Option<UnixStream>,
    process: Mutex<Option<tokio::process::Child>>,
    /// Process groups of the local jobs that run now.
    groups: Mutex<HashSet<i32>>,
    /// How long bakapara has been stopped (Ctrl-Z) during the run, in total.
    paused: Mutex<Duration>,
}

/// What the watchdog is told to kill: a job's process group, or a single process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Group(Pid),
    Process(Pid),
}

impl Target {
    fn line(self, sign: char) -> String {
        match self {
            Target::Group(pgid) => format!("{sign}g{pgid}\n"),
            Target::Process(pid) => format!("{sign}p{pid}\n"),
        }
    }
}

impl Watchdog {
    /// Starts the watchdog process. Must be called inside a Tokio runtime.
    pub fn start() -> std::io::Result<Watchdog> {
        let (ours, theirs) = UnixStream::pair()?;
        let mut command = tokio::process::Command::new("/bin/bash");
        // `--norc`: bash sources ~/.bashrc on its own when its stdin is a socket (its rshd/sshd
        // heuristic), and this stdin is one. A user's heavy .bashrc (pyenv, conda) cost every
        // run 0.2-0.4 s of CPU there, and could print or fail. (HOME stays, as the one place
        // bash would look, so that a test can point it at a .bashrc.)
        command
            .args(["--norc", "--noprofile", "-c"])
            .arg(SCRIPT)
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .envs(std::env::var_os("HOME").map(|home| ("HOME", home)))
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        own_session(&mut command);
        let process = command.spawn()?;
        Ok(Watchdog {
            link: Some(ours),
            process: Mutex::new(Some(process)),
            ..Watchdog::default()
        })
    }

    /// A record with no watchdog process (Ctrl-Z still stops the jobs).
    #[must_use]
    pub fn without_process() -> Watchdog {
        Watchdog::default()
    }

    /// Records a local job's process group until the returned guard is dropped.
    pub fn watch_group(self: &Arc<Self>, pgid: Pid) -> Watched {
        lock(&self.groups).insert(pgid.as_raw());
        self.watch(Target::Group(pgid))
    }

    /// Has the watchdog kill `target` (a process group or a process, e.g. an SSH master) if
    /// bakapara dies before the returned guard is dropped. Ctrl-Z does not stop it.
    pub fn watch(self: &Arc<Self>, target: Target) -> Watched {
        self.tell(&target.line('+'));
        Watched {
            watchdog: Arc::clone(self),
            target,
        }
    }

    /// The run ended: the watchdog kills what is still recorded (nothing, unless a job's
    /// supervision was lost) and exits.
    pub async fn finish(&self) {
        if let Some(link) = &self.link {
            let _ = link.shutdown(std::net::Shutdown::Write);
        }
        let process = lock(&self.process).take();
        if let Some(mut process) = process {
            // With nothing recorded it exits at once; one that does not is left to Tokio's
            // reaper.
            let _ = tokio::time::timeout(Duration::from_secs(2), process.wait()).await;
        }
    }

    /// Ctrl-Z: stops every job's process group. SIGSTOP, since a job's group has no
    /// terminal and is orphaned, so the kernel would discard a SIGTSTP.
    pub fn stop_jobs(&self) {
        self.signal_jobs(Signal::SIGSTOP);
    }

    /// `fg` / SIGCONT: continues every job's process group.
    pub fn continue_jobs(&self) {
        self.signal_jobs(Signal::SIGCONT);
    }

    /// How long bakapara has been stopped (by Ctrl-Z) during the run so far.
    pub fn paused(&self) -> Duration {
        *lock(&self.paused)
    }

    /// Adds a time bakapara spent stopped.
    pub fn add_paused(&self, stopped: Duration) {
        *lock(&self.paused) += stopped;
    }

    fn signal_jobs(&self, signal: Signal) {
        let groups: Vec<i32> = lock(&self.groups).iter().copied().collect();
        for pgid in groups {
            // ESRCH: the group ended meanwhile.
            let _ = killpg(Pid::from_raw(pgid), signal);
        }
    }

    /// Sends one record line. Never blocks and never raises SIGPIPE: a watchdog that is gone
    /// or stuck costs its protection, never the run.
    fn tell(&self, line: &str) {
        if let Some(link) = &self.link {
            use nix::libc::{send, MSG_DONTWAIT, MSG_NOSIGNAL};
            let flags = MSG_NOSIGNAL | MSG_DONTWAIT;
            // SAFETY: the descriptor is the open socket `link` owns, and the pointer and length
            // describe `line`, which is borrowed for the whole call; send(2) only reads it.
            let _ = unsafe { send(link.as_raw_fd(), line.as_ptr().cast(), line.len(), flags) };
        }
    }
}

/// Makes the command's process lead a new session: no terminal signal (Ctrl-C, Ctrl-Z, a
/// hang-up) reaches it. (Jobs get theirs from `posix_spawn`, see `exec::spawn`; this runs once
/// per run, where fork's cost does not matter.)
fn own_session(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called: setsid(2) is one (POSIX lists it), and the
    // closure allocates nothing and takes no lock (an Errno converts to an io::Error in place).
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
}

/// A process group or process the watchdog kills if bakapara dies; forgotten when dropped,
/// unless dropped by a panic (then whoever supervised it is gone, and the watchdog kills it
/// at the end of the run).
#[derive(Debug)]
pub struct Watched {
    watchdog: Arc<Watchdog>,
    target: Target,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Target::Group(pgid) = self.target {
            lock(&self.watchdog.groups).remove(&pgid.as_raw());
        }
        self.watchdog.tell(&self.target.line('-'));
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked (plain sets and numbers).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    /// A `sleep` in a session of its own, as a job is.
    fn sleeper() -> (tokio::process::Child, Pid) {
        let mut command = tokio::process::Command::new("sleep");
        command.arg("1000");
        own_session(&mut command);
        let child = command.spawn().expect("sleep starts");
        let pid =
            Pid::from_raw(i32::try_from(child.id().expect("a pid")).expect("a pid is an i32"));
        (child, pid)
    }

    #[test]
    fn a_group_still_recorded_when_bakapara_is_gone_is_killed() {
        runtime().block_on(async {
            let watchdog = Arc::new(Watchdog::start().expect("the watchdog starts"));
            let (mut child, pgid) = sleeper();
            // As a panic or SIGKILL leaves it: recorded, never forgotten.
            std::mem::forget(watchdog.watch_group(pgid));
            // bakapara's end closes as when bakapara dies.
            let link = watchdog.link.as_ref().expect("a link");
            link.shutdown(std::net::Shutdown::Both).expect("shutdown");
            let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
                .await
                .expect("the job is killed")
                .expect("wait");
            assert_eq!(status.signal(), Some(nix::libc::SIGTERM));
        });
    }

    #[test]
    fn a_group_that_ended_is_forgotten() {
        runtime().block_on(async {
            let watchdog = Arc::new(Watchdog::start().expect("the watchdog starts"));
            let (mut child, pgid) = sleeper();
            drop(watchdog.watch_group(pgid));
            watchdog.finish().await;
            assert!(child.try_wait().expect("try_wait").is_none(), "still runs");
            child.kill().await.expect("kill");
        });
    }
}
