//! The run's record of its local job processes, and the watchdog process that kills them when
//! bakapara dies without cleaning up (SIGKILL, a panic, any signal it does not handle).
//!
//! The watchdog is a small `/bin/bash` script started once per run, in a session of its own
//! (no terminal: Ctrl-C, Ctrl-Z and a hang-up do not reach it), ignoring the signals a user or
//! a terminal sends. Its stdin is one end of a socket pair; only bakapara holds the other end
//! (close-on-exec, so jobs never inherit it), and never writes to it. The record itself is a
//! memory file (`memfd_create(2)`) the watchdog holds as fd 3: bakapara writes a fixed-size
//! entry into a free place of it as each job's process group starts (`g123`) and blanks the
//! entry when the group ends, with one `pwrite(2)` each, so that the watchdog, blocked in its
//! read, is never woken while the run goes on. (It was told by a line on the socket before:
//! waking it twice per job cost bakapara 0.03-0.07 ms of CPU per job at `-j 200`, and the
//! watchdog's own CPU came on top.) When the socket reaches
//! end of file (bakapara is gone, whatever killed it, or the run ended), the watchdog reads the
//! record, sends TERM (and CONT, for stopped jobs) to every group still in it, KILL after a
//! second, and exits. At the end of a clean run the record is blank, and it exits at once; a
//! job whose supervision was lost to a panic stays recorded, so it is killed then too.
//!
//! The same record lets Ctrl-Z stop every job with bakapara and `fg` continue them
//! ([`Watchdog::stop_jobs`], [`Watchdog::continue_jobs`]), and tracks how long bakapara was
//! stopped, so that job timeouts do not count that time ([`Watchdog::paused`]). Remote hosts
//! are on its list too ([`Watchdog::pause_with`]): their agents are told to stop their jobs
//! before bakapara stops, and to continue them after.
//!
//! The watchdog is part of every run, library runs included: a program that embeds bakapara
//! can die of SIGKILL too. When it cannot be started, the run goes on without it.

use std::collections::HashSet;
use std::fs::File;
use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// The watchdog's script: it waits for end of file on stdin, then reads the record from fd 3
/// (entries `g<pgid>` or `p<pid>`, padded with spaces; blank ones are free places).
const SCRIPT: &str = r#"# bakapara's watchdog (src/watchdog.rs in bakapara)
trap '' INT TERM HUP QUIT TSTP TTIN TTOU USR1 USR2 ALRM PIPE
while read -r _; do :; done
targets=()
while read -r entry; do
    case $entry in
        g[0-9]*) targets+=("-${entry:1}") ;;
        p[0-9]*) targets+=("${entry:1}") ;;
    esac
done <&3
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

/// The size of one entry of the record: a kind letter, a pid (at most 10 digits) padded with
/// spaces, a newline.
const ENTRY: usize = 16;

/// The run's live job processes, and the watchdog that outlives bakapara to kill them.
#[derive(Debug, Default)]
pub struct Watchdog {
    /// bakapara's end of the watchdog's stdin; `None` without a watchdog process.
    link: Option<UnixStream>,
    /// The record the watchdog reads when bakapara is gone (its fd 3).
    record: Option<File>,
    process: Mutex<Option<tokio::process::Child>>,
    /// Process groups of the local jobs that run now, and the record's free places.
    state: Mutex<State>,
    /// How long bakapara has been stopped (Ctrl-Z) during the run, in total.
    paused: Mutex<Duration>,
    /// The remote hosts whose jobs Ctrl-Z stops too (weak: a host holds this record).
    remote: Mutex<Vec<Weak<dyn Pausable>>>,
}

/// A host whose jobs run elsewhere, which Ctrl-Z stops through its agent.
pub trait Pausable: Send + Sync + std::fmt::Debug {
    /// Tells the host to stop its jobs (bakapara is about to stop); done once it was said.
    fn pause(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
    /// Tells the host to continue its jobs.
    fn resume(&self);
}

/// What is live, and where in the record there is room.
#[derive(Debug, Default)]
struct State {
    groups: HashSet<i32>,
    /// Places (entry numbers) that were used and are blank again.
    free: Vec<u64>,
    /// The first place never used.
    next: u64,
}

/// What the watchdog is told to kill: a job's process group, or a single process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Group(Pid),
    Process(Pid),
}

impl Target {
    /// The record's entry for this target.
    fn entry(self) -> [u8; ENTRY] {
        use std::io::Write;
        let mut entry = BLANK;
        // A pid has at most 10 digits (pid_t is an i32): it always fits before the newline.
        let mut text = &mut entry[..ENTRY - 1];
        let _ = match self {
            Target::Group(pgid) => write!(text, "g{pgid}"),
            Target::Process(pid) => write!(text, "p{pid}"),
        };
        entry
    }
}

/// A free place in the record.
const BLANK: [u8; ENTRY] = *b"               \n";

impl Watchdog {
    /// Starts the watchdog process. Must be called inside a Tokio runtime.
    pub fn start() -> std::io::Result<Watchdog> {
        let (ours, theirs) = UnixStream::pair()?;
        let record = nix::sys::memfd::memfd_create(
            c"bakapara-watchdog",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )?;
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
        own_session(&mut command, Some(&record));
        let process = command.spawn()?;
        Ok(Watchdog {
            link: Some(ours),
            record: Some(File::from(record)),
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
        self.watch(Target::Group(pgid))
    }

    /// Has the watchdog kill `target` (a process group or a process, e.g. an SSH master) if
    /// bakapara dies before the returned guard is dropped. Ctrl-Z does not stop it.
    pub fn watch(self: &Arc<Self>, target: Target) -> Watched {
        let place = {
            let mut state = lock(&self.state);
            if let Target::Group(pgid) = target {
                state.groups.insert(pgid.as_raw());
            }
            state.free.pop().unwrap_or_else(|| {
                state.next += 1;
                state.next - 1
            })
        };
        self.write_entry(place, &target.entry());
        Watched {
            watchdog: Arc::clone(self),
            target,
            place,
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

    /// Puts a remote host on the list Ctrl-Z stops (see [`Watchdog::pause_remote`]).
    pub fn pause_with(&self, host: &Arc<dyn Pausable>) {
        lock(&self.remote).push(Arc::downgrade(host));
    }

    /// Whether some remote host is on the list.
    pub fn has_remote(&self) -> bool {
        !self.remote_hosts().is_empty()
    }

    fn remote_hosts(&self) -> Vec<Arc<dyn Pausable>> {
        lock(&self.remote)
            .iter()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Tells every remote host to stop its jobs, all at once; returns when each was told.
    pub async fn pause_remote(&self) {
        let hosts = self.remote_hosts();
        let mut telling = tokio::task::JoinSet::new();
        for host in hosts {
            telling.spawn(async move { host.pause().await });
        }
        while telling.join_next().await.is_some() {}
    }

    /// Tells every remote host to continue its jobs.
    pub fn resume_remote(&self) {
        for host in self.remote_hosts() {
            host.resume();
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
        let groups: Vec<i32> = lock(&self.state).groups.iter().copied().collect();
        for pgid in groups {
            // ESRCH: the group ended meanwhile.
            let _ = killpg(Pid::from_raw(pgid), signal);
        }
    }

    /// Writes one entry of the record. A record that cannot be written costs its protection,
    /// never the run.
    fn write_entry(&self, place: u64, entry: &[u8; ENTRY]) {
        if let Some(record) = &self.record {
            // ENTRY is 16: the offset overflows no u64 for any place a run can use.
            let _ = record.write_all_at(entry, place * ENTRY as u64);
        }
    }
}

/// Makes the command's process lead a new session: no terminal signal (Ctrl-C, Ctrl-Z, a
/// hang-up) reaches it; and gives it `record` as its fd 3. (Jobs get their session from
/// their spawn, see `exec::spawn`; this runs once per run, where fork's cost does not
/// matter.)
fn own_session(command: &mut tokio::process::Command, record: Option<&OwnedFd>) {
    let record = record.map(AsRawFd::as_raw_fd);
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called: setsid(2), dup2(2) and fcntl(2) are (POSIX
    // lists them), and the closure allocates nothing and takes no lock (an Errno converts to
    // an io::Error in place). `record` is a descriptor number the parent keeps open until
    // spawn returns, so it is open in the child too.
    unsafe {
        command.pre_exec(move || {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            match record {
                // dup2 onto itself would leave close-on-exec set: clear it instead.
                Some(3) => {
                    nix::fcntl::fcntl(
                        3,
                        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
                    )
                    .map_err(std::io::Error::from)?;
                }
                Some(fd) => {
                    nix::unistd::dup2(fd, 3).map_err(std::io::Error::from)?;
                }
                None => {}
            }
            Ok(())
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
    /// Its entry's place in the record.
    place: u64,
}

impl Drop for Watched {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // Blanked before the place is free again, so that no other entry can be overwritten.
        self.watchdog.write_entry(self.place, &BLANK);
        let mut state = lock(&self.watchdog.state);
        if let Target::Group(pgid) = self.target {
            state.groups.remove(&pgid.as_raw());
        }
        state.free.push(self.place);
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
        own_session(&mut command, None);
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
    fn a_place_freed_by_an_ended_group_records_the_next_one() {
        runtime().block_on(async {
            let watchdog = Arc::new(Watchdog::start().expect("the watchdog starts"));
            let (mut first, first_pgid) = sleeper();
            let (mut ended, ended_pgid) = sleeper();
            let (mut next, next_pgid) = sleeper();
            std::mem::forget(watchdog.watch_group(first_pgid));
            drop(watchdog.watch_group(ended_pgid));
            // Takes the place the ended group left.
            std::mem::forget(watchdog.watch_group(next_pgid));
            assert_eq!(
                lock(&watchdog.state).next,
                2,
                "the freed place is used again"
            );
            let link = watchdog.link.as_ref().expect("a link");
            link.shutdown(std::net::Shutdown::Both).expect("shutdown");
            for child in [&mut first, &mut next] {
                let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
                    .await
                    .expect("the job is killed")
                    .expect("wait");
                assert_eq!(status.signal(), Some(nix::libc::SIGTERM));
            }
            assert!(ended.try_wait().expect("try_wait").is_none(), "still runs");
            ended.kill().await.expect("kill");
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
