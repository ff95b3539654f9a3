//! A test harness that runs real OpenSSH servers (`/usr/sbin/sshd`) on 127.0.0.1, each with a
//! throwaway host key and user key in its own temporary directory, plus a shared client
//! `ssh_config` naming them (`h1`, `h2`, ...), and failure injection (kill a host hard, stop it,
//! bring it back on the same port).
//!
//! ```ignore
//! let cluster = SshCluster::start(&["h1", "h2"]);
//! // bakapara --ssh-config <cluster.ssh_config_path()> -S h1/2,h2/2 ...
//! assert_eq!(cluster.ssh("h1", "echo $BAKAPARA_TEST_HOST").stdout, b"h1\n");
//! cluster.host("h2").kill_hard();           // the machine "dies": sshd and every session
//! cluster.host("h2").restart();             // back on the same port
//! ```
//!
//! Every session on a host has `BAKAPARA_TEST_HOST=<name>` (so a job can prove where it ran)
//! and `BAKAPARA_TEST_SSHD=<the host's temp dir>` (so the harness can find the host's session
//! processes, [`SshdHost::session_pids`], even when they escaped the process tree), and an
//! empty `HOME` of its own, so no `~/.bashrc` of the user running the tests slows its logins.
//!
//! Processes: dropping an [`SshdHost`] (or the [`SshCluster`] holding it) kills its listener
//! and every descendant, also when a test panics. All sshd listeners are spawned from one
//! long-lived helper thread with `PR_SET_PDEATHSIG`, so if the test process itself is killed,
//! the listeners die with it (sessions then still run out their commands).
//!
//! Needs: `openssh-server` and `openssh-client`. As root, sshd needs the privilege separation
//! directory `/run/sshd`, which [`SshdHost::start`] creates when it is missing.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// The sshd binary (it must be started by absolute path: it re-executes itself).
pub const SSHD: &str = "/usr/sbin/sshd";
/// How long a starting sshd may take to accept a login (generous: the machine may be busy
/// compiling and running other tests).
pub const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long to wait for killed processes to be gone.
const KILL_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// The alias the readiness probe pins the host key to.
const PROBE_ALIAS: &str = "bakapara-test-sshd";

// ---------------------------------------------------------------------------------------------
// Builder

/// Options for one sshd. Make one with [`SshdHost::builder`].
#[derive(Debug, Clone)]
pub struct SshdBuilder {
    name: String,
    config_lines: Vec<String>,
    env: Vec<(String, String)>,
    ipv6: bool,
}

impl SshdBuilder {
    /// Also listen on `[::1]` (same port); needs IPv6 on the loopback interface.
    pub fn ipv6(mut self) -> Self {
        self.ipv6 = true;
        self
    }

    /// An extra `sshd_config` line, e.g. `"MaxSessions 2"` or `"ForceCommand echo hi"`. Extra
    /// lines come before the harness's own, and sshd keeps the first value it reads for a
    /// keyword, so they override the defaults. No `Match` blocks, and no `SetEnv` (use
    /// [`env`](Self::env)): sshd only honours the first `SetEnv` line.
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.config_lines.push(line.into());
        self
    }

    /// An extra variable set in every session on this host (sshd's `SetEnv`).
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Starts the server and waits until a login works; panics (with sshd's stderr) if it
    /// does not within [`READY_TIMEOUT`].
    pub fn start(self) -> SshdHost {
        let mut hosts = vec![self.prepare()];
        boot_all(&mut hosts);
        hosts.pop().expect("one host")
    }

    /// Keys and files, no process yet.
    fn prepare(self) -> SshdHost {
        let dir = tempfile::Builder::new()
            .prefix(&format!("bakapara-sshd-{}-", sanitize(&self.name)))
            .tempdir()
            .expect("create a temp dir for sshd");
        let d = dir.path();
        keygen(&d.join("host_key"), &format!("host key of {}", self.name));
        keygen(&d.join("user_key"), &format!("user key for {}", self.name));
        let host_pub = read(&d.join("host_key.pub"));
        let user_pub = read(&d.join("user_key.pub"));
        fs::write(d.join("authorized_keys"), &user_pub).expect("write authorized_keys");
        fs::create_dir(d.join("home")).expect("create the sessions' empty HOME");
        fs::write(
            d.join("known_hosts"),
            format!("{PROBE_ALIAS} {}", host_pub.trim()),
        )
        .expect("write known_hosts");
        SshdHost {
            name: self.name,
            config_lines: self.config_lines,
            env: self.env,
            ipv6: self.ipv6,
            port: 0,
            listener: Mutex::new(None),
            orphans: Mutex::new(Vec::new()),
            dir,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One server

/// One running (or stopped) OpenSSH server on 127.0.0.1.
#[derive(Debug)]
pub struct SshdHost {
    name: String,
    config_lines: Vec<String>,
    env: Vec<(String, String)>,
    ipv6: bool,
    port: u16,
    /// The sshd listener while it runs.
    listener: Mutex<Option<Child>>,
    /// Process trees that outlived their listener after [`stop`](Self::stop): (pid, start
    /// time) of the listener's children at that moment.
    orphans: Mutex<Vec<(u32, u64)>>,
    /// Last field: removed only after `Drop::drop` has killed every process.
    dir: TempDir,
}

#[derive(Debug)]
struct PortTaken;

impl SshdHost {
    /// Starts a server with the default options (see [`SshdBuilder::start`]).
    pub fn start(name: &str) -> SshdHost {
        Self::builder(name).start()
    }

    /// Options for a server named `name` (the name its sessions see in `BAKAPARA_TEST_HOST`).
    pub fn builder(name: &str) -> SshdBuilder {
        SshdBuilder {
            name: name.to_string(),
            config_lines: Vec::new(),
            env: Vec::new(),
            ipv6: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The host's temporary directory (keys, configs, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The private key that logs in (as the current user).
    pub fn identity_file(&self) -> PathBuf {
        self.dir().join("user_key")
    }

    /// The `sshd_config` path; it appears in the listener's command line.
    pub fn config_path(&self) -> PathBuf {
        self.dir().join("sshd_config")
    }

    /// The value of `BAKAPARA_TEST_SSHD` in this host's sessions.
    pub fn marker(&self) -> String {
        self.dir().display().to_string()
    }

    /// What sshd wrote on stderr since it was last (re)started.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("sshd.log")).unwrap_or_default()
    }

    /// The listener's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        let mut guard = lock(&self.listener);
        let child = guard.as_mut()?;
        match child.try_wait() {
            Ok(None) => Some(child.id()),
            _ => None,
        }
    }

    /// Whether the listener runs (new logins possible).
    pub fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// Processes started in this host's SSH sessions (the user's shells and jobs and their
    /// descendants, also ones that left the process tree, found by `BAKAPARA_TEST_SSHD` in
    /// their environment), not the sshd processes. Empty = "nothing left on this host".
    pub fn session_pids(&self) -> Vec<u32> {
        let me = std::process::id();
        let table = proc_table();
        let mut pids: Vec<u32> = table
            .iter()
            .filter(|(pid, e)| **pid != me && !e.zombie && environ_has(**pid, &self.env_marker()))
            .map(|(pid, _)| *pid)
            .collect();
        pids.sort_unstable();
        pids
    }

    /// The listener's children: one sshd process per client connection (authenticated or
    /// not). Empty when the listener is down. Use it to count a client's connections, e.g.
    /// that bakapara's master connections are closed after a run.
    pub fn connection_pids(&self) -> Vec<u32> {
        let Some(listener) = self.pid() else {
            return Vec::new();
        };
        let mut pids: Vec<u32> = proc_table()
            .into_iter()
            .filter(|(_, e)| e.ppid == listener && !e.zombie)
            .map(|(p, _)| p)
            .collect();
        pids.sort_unstable();
        pids
    }

    /// Simulates the machine dying: SIGKILL for the listener and every process under it (the
    /// per-connection sshd processes, the sessions, the jobs) and every session process that
    /// left the tree. Returns once they are gone; clients see their connections reset and new
    /// logins get "connection refused" (ssh exit 255). No-op on a stopped host apart from
    /// killing what is left of its sessions.
    pub fn kill_hard(&self) {
        let child = lock(&self.listener).take();
        let mut roots: Vec<(u32, Option<u64>)> = lock(&self.orphans)
            .drain(..)
            .map(|(p, s)| (p, Some(s)))
            .collect();
        if let Some(c) = &child {
            // our own unreaped child: its pid cannot have been reused
            roots.push((c.id(), None));
        }
        kill_trees(&roots, Some(&self.env_marker()));
        if let Some(mut c) = child {
            let _ = c.wait();
        }
    }

    /// Stops the listener the way `systemctl stop ssh` does: SIGTERM to the listener only, so
    /// new logins are refused (ssh exit 255) while established connections and their jobs go
    /// on (until [`kill_hard`](Self::kill_hard), [`restart`](Self::restart)... or drop).
    pub fn stop(&self) {
        let Some(mut child) = lock(&self.listener).take() else {
            return;
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid is an i32"));
        // Freeze it so that no new connection forks while we note its children.
        let _ = kill(pid, Signal::SIGSTOP);
        let table = proc_table();
        lock(&self.orphans).extend(
            table
                .iter()
                .filter(|(_, e)| e.ppid == child.id())
                .map(|(p, e)| (*p, e.start)),
        );
        let _ = kill(pid, Signal::SIGTERM);
        let _ = kill(pid, Signal::SIGCONT);
        if wait_child(&mut child, KILL_TIMEOUT).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, with the same keys, after
    /// [`kill_hard`](Self::kill_hard) or [`stop`](Self::stop) (if it still runs, it is
    /// `kill_hard`ed first). Waits until a login works; retries for [`READY_TIMEOUT`] while
    /// the port is still taken.
    pub fn restart(&self) {
        if lock(&self.listener).is_some() {
            self.kill_hard();
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.spawn();
            if let Ok(()) = self.wait_ready(deadline) {
                return;
            }
            assert!(
                Instant::now() <= deadline,
                "sshd {} could not bind its port {} again within {:?}:\n{}",
                self.name,
                self.port,
                READY_TIMEOUT,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `ssh` to this host directly (without a config file): `remote_cmd` through the
    /// login shell, stdin from /dev/null.
    pub fn ssh(&self, remote_cmd: &str) -> Output {
        self.direct_ssh(&[
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .arg(remote_cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh")
    }

    fn env_marker(&self) -> String {
        format!("BAKAPARA_TEST_SSHD={}", self.marker())
    }

    fn direct_ssh(&self, extra: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(self.identity_file())
            .args(["-o", "IdentitiesOnly=yes"])
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "ConnectTimeout=5"])
            .args(["-o", "LogLevel=ERROR"])
            .args(["-o", "ControlMaster=no", "-o", "ControlPath=none"])
            .args(extra)
            .arg("-p")
            .arg(self.port.to_string())
            .arg(format!("{}@127.0.0.1", current_user()));
        cmd
    }

    /// A login that pins our host key, so a server that stole our port cannot pass.
    fn probe(&self) -> Output {
        let kh = format!(
            "UserKnownHostsFile={}",
            self.dir().join("known_hosts").display()
        );
        let alias = format!("HostKeyAlias={PROBE_ALIAS}");
        self.direct_ssh(&["-o", "StrictHostKeyChecking=yes", "-o", &kh, "-o", &alias])
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    fn write_config(&self) {
        let d = self.dir();
        let q = |p: &Path| format!("\"{}\"", p.display());
        // Sessions get an empty HOME of their own: the login shell then reads no ~/.bashrc of
        // the user running the tests. Root's on these machines runs `pyenv init`, whose rehash
        // lock, left behind by a session killed mid-login, makes every later login wait 60 s.
        let mut setenv = format!(
            "SetEnv \"BAKAPARA_TEST_HOST={}\" \"{}\" \"HOME={}\"",
            self.name,
            self.env_marker(),
            d.join("home").display()
        );
        for (k, v) in &self.env {
            setenv.push_str(&format!(" \"{k}={v}\""));
        }
        let mut text = String::from(
            "# written by the bakapara test harness; extra lines first (first value wins)\n",
        );
        for line in &self.config_lines {
            text.push_str(line);
            text.push('\n');
        }
        if self.ipv6 {
            text.push_str(&format!("ListenAddress [::1]:{}\n", self.port));
        }
        text.push_str(&format!(
            "ListenAddress 127.0.0.1:{port}\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {auth}\n\
             StrictModes no\n\
             PermitRootLogin prohibit-password\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             PidFile {pid}\n\
             {setenv}\n\
             LogLevel ERROR\n",
            port = self.port,
            host_key = q(&d.join("host_key")),
            auth = q(&d.join("authorized_keys")),
            pid = q(&d.join("sshd.pid")),
        ));
        fs::write(self.config_path(), text).expect("write sshd_config");
    }

    /// Writes the config and starts the listener (stored at once, so that a panic anywhere
    /// later still kills it).
    fn spawn(&self) {
        ensure_privsep_dir();
        self.write_config();
        let log = fs::File::create(self.dir().join("sshd.log")).expect("create sshd.log");
        let mut cmd = Command::new(SSHD);
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .process_group(0);
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
            });
        }
        let child = spawn_from_keeper(cmd)
            .unwrap_or_else(|e| panic!("cannot run {SSHD} (install openssh-server): {e}"));
        *lock(&self.listener) = Some(child);
    }

    /// Waits until the just-spawned listener accepts a login. `Err(PortTaken)` when sshd died
    /// because its port was taken (the child is reaped and cleared); panics on anything else.
    fn wait_ready(&self, deadline: Instant) -> Result<(), PortTaken> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut last_probe = String::from("(sshd never accepted a connection)");
        loop {
            let exited: Option<ExitStatus> = {
                let mut guard = lock(&self.listener);
                let child = guard.as_mut().expect("listener spawned");
                match child.try_wait().expect("try_wait on sshd") {
                    Some(status) => {
                        *guard = None;
                        Some(status)
                    }
                    None => None,
                }
            };
            if let Some(status) = exited {
                let log = self.log();
                if log.contains("Address already in use") || log.contains("Cannot bind any address")
                {
                    return Err(PortTaken);
                }
                panic!(
                    "sshd {} ({SSHD} -D -e -f {}) exited with {status} before it was ready; \
                     its stderr:\n{log}",
                    self.name,
                    self.config_path().display()
                );
            }
            // Try before looking at the clock: the deadline is shared by the hosts booting
            // together, and one that was ready long ago must not fail untried.
            if TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok() {
                let out = self.probe();
                if out.status.success() {
                    return Ok(());
                }
                last_probe = format!(
                    "ssh exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            assert!(
                Instant::now() <= deadline,
                "sshd {} on port {} was not ready within {READY_TIMEOUT:?}; last login \
                 attempt: {last_probe}\nsshd stderr:\n{}",
                self.name,
                self.port,
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for SshdHost {
    fn drop(&mut self) {
        self.kill_hard();
    }
}

/// Boots prepared hosts on fresh ports: all listeners are spawned first, then awaited, so
/// they start up concurrently. A host whose port was taken meanwhile moves to another one.
fn boot_all(hosts: &mut [SshdHost]) {
    let deadline = Instant::now() + READY_TIMEOUT;
    for h in hosts.iter_mut() {
        h.port = free_port();
        h.spawn();
    }
    for h in hosts.iter_mut() {
        let mut attempts = 0;
        while let Err(PortTaken) = h.wait_ready(deadline) {
            attempts += 1;
            assert!(
                attempts < 20,
                "sshd {}: 20 ports in a row were taken:\n{}",
                h.name,
                h.log()
            );
            h.port = free_port();
            h.spawn();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Several servers and one client config

/// Several [`SshdHost`]s and one client `ssh_config` with a `Host <name>` block for each, so
/// `ssh -F <config> h1` (and `bakapara --ssh-config <config> -S h1`) reach them by name.
#[derive(Debug)]
pub struct SshCluster {
    hosts: Vec<SshdHost>,
    config: PathBuf,
    /// Hosts whose config entry names another port than their sshd's (a relay in front of
    /// it, see [`route_through`](Self::route_through)).
    routes: Mutex<HashMap<String, u16>>,
    dir: TempDir,
}

impl SshCluster {
    /// Starts one server per name, concurrently, and writes the client config.
    pub fn start(names: &[&str]) -> SshCluster {
        Self::from_builders(names.iter().map(|n| SshdHost::builder(n)).collect())
    }

    /// Like [`start`](Self::start), with per-host options.
    pub fn from_builders(builders: Vec<SshdBuilder>) -> SshCluster {
        let mut seen = HashSet::new();
        for b in &builders {
            assert!(seen.insert(b.name.clone()), "host {} given twice", b.name);
        }
        let mut hosts: Vec<SshdHost> = builders.into_iter().map(SshdBuilder::prepare).collect();
        boot_all(&mut hosts);
        let dir = tempfile::Builder::new()
            .prefix("bakapara-sshcfg-")
            .tempdir()
            .expect("create a temp dir for ssh_config");
        let config = dir.path().join("ssh_config");
        let cluster = SshCluster {
            hosts,
            config,
            routes: Mutex::new(HashMap::new()),
            dir,
        };
        cluster.write_client_config();
        cluster
    }

    /// Points the client config's entry for `name` at `port` on 127.0.0.1 instead of the
    /// host's sshd: a relay in front of it (tests/integration/common/relay.rs). Connections
    /// opened from then on go through it; open ones are not touched.
    pub fn route_through(&self, name: &str, port: u16) {
        let _ = self.host(name);
        lock(&self.routes).insert(name.to_string(), port);
        self.write_client_config();
    }

    /// Undoes [`route_through`](Self::route_through): `name` is reached directly again.
    pub fn route_direct(&self, name: &str) {
        lock(&self.routes).remove(name);
        self.write_client_config();
    }

    fn write_client_config(&self) {
        let routes = lock(&self.routes).clone();
        let user = current_user();
        let mut text = String::from("# written by the bakapara test harness\n");
        for h in &self.hosts {
            text.push_str(&format!(
                "\nHost {name}\n\
                 \x20   HostName 127.0.0.1\n\
                 \x20   Port {port}\n\
                 \x20   User {user}\n\
                 \x20   IdentityFile \"{key}\"\n\
                 \x20   IdentitiesOnly yes\n\
                 \x20   StrictHostKeyChecking no\n\
                 \x20   UserKnownHostsFile /dev/null\n\
                 \x20   GlobalKnownHostsFile /dev/null\n\
                 \x20   LogLevel ERROR\n\
                 \x20   BatchMode yes\n\
                 \x20   ConnectTimeout 5\n",
                name = h.name,
                port = routes.get(&h.name).copied().unwrap_or(h.port),
                key = h.identity_file().display(),
            ));
        }
        // Written whole under another name, then renamed: a reader never sees half a file.
        let tmp = self.config.with_extension("new");
        fs::write(&tmp, text).expect("write ssh_config");
        fs::rename(&tmp, &self.config).expect("rename ssh_config into place");
    }

    /// The client config to pass as `ssh -F` / `bakapara --ssh-config`.
    pub fn ssh_config_path(&self) -> &Path {
        &self.config
    }

    /// The host named `name`; panics if there is none.
    pub fn host(&self, name: &str) -> &SshdHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in this cluster"))
    }

    pub fn hosts(&self) -> &[SshdHost] {
        &self.hosts
    }

    pub fn names(&self) -> Vec<&str> {
        self.hosts.iter().map(|h| h.name.as_str()).collect()
    }

    /// An `-S` list giving every host `slots` slots: `h1/2,h2/2`.
    pub fn sshlogins(&self, slots: usize) -> String {
        self.hosts
            .iter()
            .map(|h| format!("{}/{slots}", h.name))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// `ssh -F <config> <name>` without the command, to add arguments to.
    pub fn ssh_command(&self, name: &str) -> Command {
        let _ = self.host(name);
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(&self.config).arg(name);
        cmd
    }

    /// Runs `ssh -F <config> <name> <remote_cmd>` (stdin from /dev/null) and waits for it.
    pub fn ssh(&self, name: &str, remote_cmd: &str) -> Output {
        self.ssh_command(name)
            .arg(remote_cmd)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// Processes in the sessions of every host (see [`SshdHost::session_pids`]).
    pub fn session_pids(&self) -> Vec<u32> {
        self.hosts.iter().flat_map(SshdHost::session_pids).collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Assertion helpers

/// Pids of the processes whose command line (arguments joined by spaces) contains `needle`,
/// except this test process. Zombies have no command line and never match.
pub fn pids_with_cmdline_containing(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids: Vec<u32> = list_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let line: Vec<u8> = raw.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
                String::from_utf8_lossy(&line).contains(needle)
            })
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// Polls `cond` every few milliseconds until it holds; panics with `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        assert!(
            Instant::now() <= deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The current user's login name (the `User` of every host).
pub fn current_user() -> String {
    static USER: OnceLock<String> = OnceLock::new();
    USER.get_or_init(|| {
        let out = Command::new("id").arg("-un").output().expect("run id -un");
        assert!(out.status.success(), "id -un failed");
        String::from_utf8(out.stdout)
            .expect("user name is UTF-8")
            .trim()
            .to_string()
    })
    .clone()
}

// ---------------------------------------------------------------------------------------------
// Processes

#[derive(Debug, Clone, Copy)]
struct ProcEntry {
    ppid: u32,
    /// Start time in clock ticks since boot (field 22 of /proc/PID/stat).
    start: u64,
    zombie: bool,
}

fn list_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn read_stat(pid: u32) -> Option<ProcEntry> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ..."; comm may hold spaces and parentheses
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcEntry {
        zombie: matches!(f.first().copied(), Some("Z" | "X")),
        ppid: f.get(1)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

/// The processes under `pid` (itself first), as /proc shows them now.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let table = proc_table();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            table
                .iter()
                .filter(|(_, e)| e.ppid == parent)
                .map(|(&child, _)| child),
        );
        i += 1;
    }
    tree
}

/// Whether `pid` is a process (a zombie nobody reaped yet is not).
pub fn is_running(pid: u32) -> bool {
    read_stat(pid).is_some_and(|e| !e.zombie)
}

fn proc_table() -> HashMap<u32, ProcEntry> {
    list_pids()
        .into_iter()
        .filter_map(|pid| Some((pid, read_stat(pid)?)))
        .collect()
}

/// Whether `/proc/PID/environ` holds the entry `var` (`NAME=value`). sshd processes rewrite
/// that memory with their process title, so only session processes keep the marker.
fn environ_has(pid: u32, var: &str) -> bool {
    fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|raw| raw.split(|&b| b == 0).any(|e| e == var.as_bytes()))
}

/// SIGKILLs the trees under `roots` (pid, start time when the pid may have been reused) and
/// every process holding `marker` in its environment, with their descendants. Processes are
/// frozen (SIGSTOP) round by round until no new one appears, so none can fork or be
/// reparented out of sight, then all are killed; returns once they are gone or zombies.
fn kill_trees(roots: &[(u32, Option<u64>)], marker: Option<&str>) {
    let me = std::process::id();
    let mut frozen: HashSet<u32> = HashSet::new();
    for _round in 0..100 {
        let table = proc_table();
        let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
        for (pid, e) in &table {
            children.entry(e.ppid).or_default().push(*pid);
        }
        let mut todo: Vec<u32> = roots
            .iter()
            .filter(|(pid, start)| match (table.get(pid), start) {
                (Some(_), None) => true,
                (Some(e), Some(s)) => e.start == *s,
                (None, _) => false,
            })
            .map(|(pid, _)| *pid)
            .collect();
        if let Some(m) = marker {
            todo.extend(
                table
                    .iter()
                    .filter(|(pid, e)| !e.zombie && environ_has(**pid, m))
                    .map(|(pid, _)| *pid),
            );
        }
        let mut found: HashSet<u32> = HashSet::new();
        while let Some(pid) = todo.pop() {
            if pid == me || pid <= 1 || !found.insert(pid) {
                continue;
            }
            if let Some(kids) = children.get(&pid) {
                todo.extend(kids);
            }
        }
        let new: Vec<u32> = found.into_iter().filter(|p| !frozen.contains(p)).collect();
        if new.is_empty() {
            break;
        }
        for pid in new {
            let _ = kill(
                Pid::from_raw(i32::try_from(pid).expect("a pid is an i32")),
                Signal::SIGSTOP,
            );
            frozen.insert(pid);
        }
    }
    for &pid in &frozen {
        let _ = kill(
            Pid::from_raw(i32::try_from(pid).expect("a pid is an i32")),
            Signal::SIGKILL,
        );
    }
    let deadline = Instant::now() + KILL_TIMEOUT;
    loop {
        let left: Vec<u32> = frozen
            .iter()
            .copied()
            .filter(|&p| read_stat(p).is_some_and(|e| !e.zombie))
            .collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("sshd harness: processes {left:?} survived SIGKILL for {KILL_TIMEOUT:?}");
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_child(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Spawns `cmd` from one thread that lives as long as the process: `PR_SET_PDEATHSIG` fires
/// when the *thread* that forked the child ends, and test threads end early.
pub fn spawn_from_keeper(cmd: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static KEEPER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let sender = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("sshd-keeper".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the sshd keeper thread");
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    lock(sender)
        .send((cmd, reply_tx))
        .expect("sshd keeper thread alive");
    reply_rx.recv().expect("sshd keeper thread replies")
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// sshd refuses to run as root without its privilege separation directory. (Not needed when
/// not root; if creating it fails, sshd's own message says so in the panic.)
fn ensure_privsep_dir() {
    let dir = Path::new("/run/sshd");
    if dir.is_dir() {
        return;
    }
    if fs::create_dir_all(dir).is_ok() {
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o755));
    }
}

fn keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen (install openssh-client): {e}"));
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}
