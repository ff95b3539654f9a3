//! A test harness that runs a real Slurm cluster on loopback, from Debian's packages: a
//! private `munged` (own key and socket), one `slurmctld` and one `slurmd -N NAME` per node
//! (own port and spool dir each: Debian builds Slurm with `--enable-multiple-slurmd`), every
//! slurmd in its own UTS namespace so that `hostname` in a step prints the node name.
//!
//! ```ignore
//! let c = slurm::shared();                  // n1 and n2, idle, one cluster per test process
//! let out = c.command("salloc").args(["-N2", "srun", "hostname"]).output();
//! ```
//!
//! Client commands made by [`SlurmCluster::command`] carry `SLURM_CONF` of this cluster and
//! none of the caller's other `SLURM_*` variables (a test run inside an allocation must not
//! act on it).
//!
//! Processes: every daemon runs in the foreground (`-D`/`-F`), spawned from the sshd
//! harness's keeper thread with `PR_SET_PDEATHSIG`, so they die with the test process even
//! when it is killed. [`SlurmCluster::stop`] (on drop, and for the [`shared`] cluster at the
//! test process's exit) kills by pid: first the clients of this cluster (processes whose
//! environment holds its `SLURM_CONF`: salloc, srun, what they run), then every process in a
//! node's UTS namespace (slurmd, slurmstepd, tasks, anything that escaped), then slurmctld
//! and its children, then munged, and removes the temp dir.
//!
//! Needs: `slurmd slurmctld slurm-client munge` (`.ci/run` installs them), root, and
//! `unshare --uts`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::io;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use super::sshd::spawn_from_keeper;

/// How long the cluster may take to have every node idle (the machine may be busy).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One daemon this harness started.
struct Daemon {
    name: String,
    child: Child,
    /// For a node: its UTS namespace (`uts:[N]`), once read.
    uts: Option<String>,
}

/// A running Slurm cluster of fake nodes on 127.0.0.1.
pub struct SlurmCluster {
    nodes: Vec<String>,
    conf: PathBuf,
    dir_path: PathBuf,
    daemons: Mutex<Vec<Daemon>>,
    /// Removed by [`stop`](Self::stop), after every process is gone.
    dir: Mutex<Option<TempDir>>,
}

/// The cluster shared by the tests of this process: nodes `n1` and `n2`, started on first
/// use and stopped when the test process exits.
pub fn shared() -> &'static SlurmCluster {
    static SHARED: OnceLock<SlurmCluster> = OnceLock::new();
    extern "C" fn stop_shared() {
        // No panic may unwind out of an `extern "C"` function.
        let _ = std::panic::catch_unwind(|| {
            if let Some(c) = SHARED.get() {
                c.stop();
            }
        });
    }
    SHARED.get_or_init(|| {
        let cluster = SlurmCluster::start(&["n1", "n2"]);
        // SAFETY: `atexit` only stores the pointer of a function that takes no arguments and
        // lives for the whole program; `stop_shared` catches every panic, so none unwinds
        // through the C caller. Registering twice is impossible (inside `get_or_init`).
        unsafe {
            nix::libc::atexit(stop_shared);
        }
        cluster
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

fn need(program: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = Path::new(dir).join(program);
        if p.exists() {
            return p;
        }
    }
    panic!("{program} is not installed: apt-get install slurmd slurmctld slurm-client munge (.ci/run does)");
}

fn uts_of(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/uts"))
        .ok()
        .map(|p| p.display().to_string())
}

fn all_pids() -> Vec<u32> {
    fs::read_dir("/proc")
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `pid` is gone or a zombie.
fn dead(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rfind(')')
            .and_then(|i| s[i + 1..].split_whitespace().next())
            .is_none_or(|st| st == "Z" || st == "X"),
    }
}

fn ppid_of(pid: u32) -> Option<u32> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..]
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Stops (SIGSTOP, so none forks away) then SIGKILLs `pids`, and waits until they are gone.
fn kill_all(pids: &[u32]) {
    let me = std::process::id();
    let pids: Vec<u32> = pids.iter().copied().filter(|&p| p != me && p > 1).collect();
    for &p in &pids {
        let _ = kill(
            Pid::from_raw(i32::try_from(p).expect("a pid is an i32")),
            Signal::SIGSTOP,
        );
    }
    for &p in &pids {
        let _ = kill(
            Pid::from_raw(i32::try_from(p).expect("a pid is an i32")),
            Signal::SIGKILL,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&p| !dead(p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// SIGTERM, then SIGKILL after `grace`; reaps the child.
fn terminate(child: &mut Child, grace: Duration) {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid is an i32"));
    if let Ok(None) = child.try_wait() {
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while let Ok(None) = child.try_wait() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let _ = child.wait();
}

impl SlurmCluster {
    /// Starts munged, slurmctld and one slurmd per name in `nodes`, and waits (up to
    /// [`READY_TIMEOUT`]) until every node is idle; panics with the daemons' logs if not.
    pub fn start(nodes: &[&str]) -> SlurmCluster {
        let dir = tempfile::Builder::new()
            .prefix("bakapara-slurm-")
            .tempdir()
            .expect("a temp dir for Slurm");
        let d = dir.path().to_path_buf();
        // munged refuses a socket or key in a directory others may write to.
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).expect("chmod the temp dir");
        for sub in ["munge", "log", "run", "ctld", "spool"] {
            fs::create_dir(d.join(sub)).expect("create a Slurm dir");
        }
        let cluster = SlurmCluster {
            nodes: nodes.iter().map(std::string::ToString::to_string).collect(),
            conf: d.join("slurm.conf"),
            dir_path: d.clone(),
            daemons: Mutex::new(Vec::new()),
            dir: Mutex::new(Some(dir)),
        };
        cluster.start_munged();
        cluster.write_conf();
        let mut ctld = Command::new(need("slurmctld"));
        ctld.arg("-D").arg("-f").arg(&cluster.conf);
        cluster.spawn("slurmctld", ctld);
        for n in nodes {
            // `unshare` execs the shell, which execs slurmd: one pid, in a fresh UTS namespace.
            let mut cmd = Command::new("unshare");
            cmd.args(["--uts", "--", "sh", "-c"]).arg(format!(
                "hostname {n} && exec {} -D -f '{}' -N {n}",
                need("slurmd").display(),
                cluster.conf.display()
            ));
            cluster.spawn(&format!("slurmd-{n}"), cmd);
        }
        cluster.wait_ready();
        cluster
    }

    /// The node names.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The `slurm.conf` path (what clients get as `SLURM_CONF`).
    pub fn conf(&self) -> &Path {
        &self.conf
    }

    /// A client command (`salloc`, `srun`, `squeue`, ...) for this cluster: `SLURM_CONF`
    /// set, every other `SLURM_*` variable of this process removed.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SLURM_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("SLURM_CONF", &self.conf).stdin(Stdio::null());
        cmd
    }

    /// The pids of the daemons (munged, slurmctld, each slurmd) while they run.
    pub fn daemon_pids(&self) -> Vec<u32> {
        lock(&self.daemons).iter().map(|d| d.child.id()).collect()
    }

    /// The cluster's temp dir (configuration, logs, spool), removed by [`stop`](Self::stop).
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// The daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(rd) = fs::read_dir(self.dir_path.join("log")) {
            for e in rd.flatten() {
                let text = fs::read_to_string(e.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!("--- {}\n", e.path().display()));
                for l in tail.into_iter().rev() {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    fn spawn(&self, name: &str, mut cmd: Command) {
        let log = fs::File::create(self.dir_path.join("log").join(format!("{name}.out")))
            .expect("create a daemon log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .process_group(0);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("SLURM_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("SLURM_CONF", &self.conf);
        // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
        // which is async-signal-safe; it allocates nothing and touches no lock.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(io::Error::from)
            });
        }
        let child = spawn_from_keeper(cmd).unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        lock(&self.daemons).push(Daemon {
            name: name.to_string(),
            child,
            uts: None,
        });
    }

    fn start_munged(&self) {
        let m = self.dir_path.join("munge");
        let key = m.join("munge.key");
        let out = Command::new(need("mungekey"))
            .args(["-c", "-f", "-k"])
            .arg(&key)
            .output()
            .expect("run mungekey");
        assert!(
            out.status.success(),
            "mungekey: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        fs::set_permissions(&key, fs::Permissions::from_mode(0o400)).expect("chmod the key");
        let mut cmd = Command::new(need("munged"));
        cmd.arg("-F")
            .arg(format!("--socket={}", m.join("munge.socket").display()))
            .arg(format!("--key-file={}", key.display()))
            .arg(format!(
                "--log-file={}",
                self.dir_path.join("log/munged.log").display()
            ))
            .arg(format!("--pid-file={}", m.join("munged.pid").display()))
            .arg(format!("--seed-file={}", m.join("munged.seed").display()));
        self.spawn("munged", cmd);
        let socket = m.join("munge.socket");
        let deadline = Instant::now() + READY_TIMEOUT;
        while !socket.exists() {
            self.check_alive();
            assert!(
                Instant::now() < deadline,
                "munged did not start\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn write_conf(&self) {
        let d = self.dir_path.display();
        // fixed, not nproc (config_overrides lets slurmd accept it): the tests count on 2
        let cpus = 2;
        let mut text = format!(
            "# written by the bakapara test harness (tests/integration/common/slurm.rs)\n\
             ClusterName=bakapara\n\
             SlurmctldHost=localhost(127.0.0.1)\n\
             SlurmctldPort={ctld}\n\
             SlurmUser=root\n\
             SlurmdUser=root\n\
             AuthType=auth/munge\n\
             CredType=cred/munge\n\
             AuthInfo=socket={d}/munge/munge.socket\n\
             StateSaveLocation={d}/ctld\n\
             SlurmdSpoolDir={d}/spool/%n\n\
             SlurmctldPidFile={d}/run/slurmctld.pid\n\
             SlurmdPidFile={d}/run/slurmd-%n.pid\n\
             SlurmctldLogFile={d}/log/slurmctld.log\n\
             SlurmdLogFile={d}/log/slurmd-%n.log\n\
             SlurmdParameters=config_overrides\n\
             SelectType=select/cons_tres\n\
             SelectTypeParameters=CR_Core\n\
             ProctrackType=proctrack/linuxproc\n\
             TaskPlugin=task/none\n\
             MpiDefault=none\n\
             MailProg=/bin/true\n\
             JobAcctGatherType=jobacct_gather/none\n\
             AccountingStorageType=accounting_storage/none\n\
             ReturnToService=2\n\
             InactiveLimit=0\n\
             SchedulerParameters=batch_sched_delay=0\n\
             KillWait=2\n\
             MinJobAge=300\n\
             SlurmdTimeout=30\n\
             SlurmctldTimeout=30\n",
            ctld = free_port(),
        );
        for n in &self.nodes {
            fs::create_dir_all(self.dir_path.join("spool").join(n)).expect("create a spool dir");
            text.push_str(&format!(
                "NodeName={n} NodeHostname={n} NodeAddr=127.0.0.1 Port={port} CPUs={cpus} \
                 Boards=1 SocketsPerBoard=1 CoresPerSocket={cpus} ThreadsPerCore=1 \
                 RealMemory=1000 State=UNKNOWN\n",
                port = free_port(),
            ));
        }
        text.push_str("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n");
        fs::write(&self.conf, text).expect("write slurm.conf");
    }

    /// Panics (with the logs) if a daemon has exited.
    fn check_alive(&self) {
        let mut daemons = lock(&self.daemons);
        for d in daemons.iter_mut() {
            if let Ok(Some(status)) = d.child.try_wait() {
                let name = d.name.clone();
                drop(daemons);
                panic!("{name} exited ({status})\n{}", self.logs());
            }
        }
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.check_alive();
            let out = self
                .command("sinfo")
                .args(["-h", "-N", "-o", "%N %T"])
                .output()
                .expect("run sinfo");
            let last = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            let states: HashMap<&str, &str> =
                last.lines().filter_map(|l| l.split_once(' ')).collect();
            if out.status.success()
                && self
                    .nodes
                    .iter()
                    .all(|n| states.get(n.as_str()) == Some(&"idle"))
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Slurm nodes not idle after {READY_TIMEOUT:?}: {last}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let me = uts_of(std::process::id());
        for d in lock(&self.daemons).iter_mut() {
            if d.name.starts_with("slurmd-") {
                d.uts = uts_of(d.child.id()).filter(|ns| Some(ns) != me.as_ref());
                assert!(
                    d.uts.is_some(),
                    "{} is not in a UTS namespace of its own",
                    d.name
                );
            }
        }
    }

    /// Processes (other than this one) whose environment holds this cluster's `SLURM_CONF`.
    pub fn client_pids(&self) -> Vec<u32> {
        let want = format!("SLURM_CONF={}", self.conf.display());
        all_pids()
            .into_iter()
            .filter(|&p| p != std::process::id())
            .filter(|&p| {
                fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|raw| raw.split(|&b| b == 0).any(|e| e == want.as_bytes()))
            })
            .collect()
    }

    /// Stops everything this cluster started (by pid) and removes its directory; idempotent.
    pub fn stop(&self) {
        let mut daemons = std::mem::take(&mut *lock(&self.daemons));
        if daemons.is_empty() {
            return;
        }
        // 1. clients, and the node namespaces (slurmd, slurmstepd, tasks)
        let spaces: Vec<String> = daemons.iter().filter_map(|d| d.uts.clone()).collect();
        let daemon_pids: Vec<u32> = daemons
            .iter()
            .filter(|d| !d.name.starts_with("slurmd-"))
            .map(|d| d.child.id())
            .collect();
        for _round in 0..3 {
            let mut victims: Vec<u32> = self
                .client_pids()
                .into_iter()
                .filter(|p| !daemon_pids.contains(p))
                .collect();
            victims.extend(
                all_pids()
                    .into_iter()
                    .filter(|&p| uts_of(p).is_some_and(|ns| spaces.contains(&ns))),
            );
            if victims.is_empty() {
                break;
            }
            kill_all(&victims);
        }
        // 2. slurmctld (with its slurmscriptd), then munged
        for name in ["slurmctld", "munged"] {
            for d in daemons.iter_mut().filter(|d| d.name == name) {
                let kids: Vec<u32> = all_pids()
                    .into_iter()
                    .filter(|&p| ppid_of(p) == Some(d.child.id()))
                    .collect();
                terminate(&mut d.child, Duration::from_secs(5));
                kill_all(&kids);
            }
        }
        for d in &mut daemons {
            let _ = d.child.kill();
            let _ = d.child.wait();
        }
        drop(lock(&self.dir).take());
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
