//! Measures bakapara against the spawn floor, `xargs -P` and GNU Parallel on N trivial jobs,
//! locally and over SSH, and bakapara's peak RSS on a long run. Run: `cargo bench --bench
//! versus`, or e.g. `cargo bench --bench versus -- --jobs 2000 --parallel 2 --rounds 7`; the
//! SSH comparison with `-- --ssh`, the remote agent's figures with `-- --agent`, the memory
//! case with `-- --memory`, everything with
//! `-- --all` (`--help` lists the sizes that can be changed).
//!
//! A plain `main()` benchmark (no criterion): every round runs each tool once, in a rotating
//! order, so that whatever noise the machine has in a given second hits every tool alike. The
//! first round is a warm-up and is not counted. Per tool it prints the median and the min/max
//! wall time over the rounds and the ratio of medians to the baselines.
//!
//! Local cases (all run `N` jobs at parallelism `P`):
//! - `floor`: `/bin/bash -o pipefail -c true` spawned N times by P threads doing
//!   `std::process::Command` spawn + wait: what any job runner built on bash must pay.
//! - `xargs`: `xargs -P P -n 1 bash -o pipefail -c` fed N lines `true`, stdout to /dev/null.
//! - `bakapara`: `bakapara -j P true` fed `seq N`, stdout read through a pipe; afterwards (out
//!   of the timed region) the bench checks that there are exactly N result lines, each valid
//!   JSON with `result.status == "ok"`.
//! - `parallel`: GNU Parallel `parallel --will-cite -j P true` fed `seq N`, when installed.
//!
//! After the local table: bakapara's own CPU per job (user + system of the bakapara process,
//! its jobs excluded, read from `/proc/PID/stat` before it is reaped) on N jobs at `-j 200`,
//! beside xargs's at `-P 200` (target <= 0.1 ms), and beside the floor of that figure: what
//! starting the same job with both its streams captured costs the starting thread and nothing
//! more (std's `Command::output()`, one job at a time, this bench's own thread as
//! `getrusage(RUSAGE_THREAD)` counts it).
//!
//! SSH cases (`--ssh`, see [`ssh_cases`]): `--ssh-jobs` (default 300) `true` jobs over
//! `--ssh-hosts` (default 2) loopback sshd hosts with `--ssh-slots` (default 4) slots each:
//! - `ssh-floor`: `xargs -P <all slots> -n 2 ssh -F CONFIG -o ControlPath=DIR/%n.sock` fed
//!   lines `h1 true`, `h2 true`, ...: the system ssh on `ControlMaster` connections opened before
//!   the clock starts, one per host. A job costs one session on an open connection and the
//!   remote login shell running `true`, nothing else.
//! - `bakapara`: `bakapara --ssh-config CONFIG -S h1/P,h2/P -q --workdir '~' true` fed
//!   `seq N`, its own master connections included in its time; every result line is checked.
//! - `parallel`: `parallel --will-cite -S P/h1,P/h2 --ssh 'ssh -F CONFIG' true`: a new SSH
//!   login per job (GNU Parallel's default).
//! - `parallel-M`: the same with `--controlmaster`, and `--ssh DIR/ssh`, a script running
//!   `ssh -F CONFIG "$@"` (GNU Parallel starts its master with `--ssh` as one program name: with
//!   `--ssh 'ssh -F CONFIG'` the master never starts and every job logs in afresh).
//!
//! The hosts are real sshd processes on 127.0.0.1 (tests/integration/common/sshd.rs, throwaway keys). As
//! root the jobs log in as a dedicated user `bakabench` (created when missing, with an empty
//! `.bashrc`), so that root's shell start-up files do not dominate every tool's time.
//!
//! The remote agent's figures (`--agent`, issue 10, see [`agent_timing`]), each printed beside
//! its target, medians of `--ssh-rounds` interleaved rounds:
//! - 400 `true` jobs on 2 hosts x 4 slots, bakapara (logins included) against `ssh-floor`
//!   above: target at most 0.5x.
//! - one host behind a relay adding 100 ms of round trip (tests/integration/common/relay.rs in
//!   delay mode): 40 `true` jobs on 4 slots against 4 jobs, target at most 1 s more.
//! - the time from bakapara's start on 12 fresh hosts x 4 slots to its first result line:
//!   target under 1.5 s.
//!
//! The memory case (`--memory`, or `--all` to run it after the timing): bakapara on
//! `--memory-jobs` (default 100,000) `true` jobs at `-j 2`, reporting its peak RSS (target
//! < 30 MB). It is a separate mode because it is not cheap: bakapara does ~1,000 `true` jobs/s
//! on 2 cores, so 100,000 jobs take longer (~100 s) than the whole timing part (~80 s).
//!
//! Extension point: every contender is a [`Case`] built by a function in [`cases`] (local) or
//! [`ssh_cases`]; the rounds, statistics and table are shared ([`run_rounds`], [`print_table`]).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// The binary under test by default; cargo sets this for benches (`target/release/bakapara`
/// under `cargo bench`). `--bakapara PATH` measures another build instead.
const BAKAPARA: &str = env!("CARGO_BIN_EXE_bakapara");
static BAKAPARA_PATH: OnceLock<String> = OnceLock::new();

/// The bakapara binary being measured.
fn bakapara() -> &'static str {
    BAKAPARA_PATH.get().map_or(BAKAPARA, String::as_str)
}

/// The memory case runs at this parallelism whatever `--parallel` says, so that its figure is
/// comparable with the target, which is stated for `-j 2`.
const MEMORY_PARALLEL: usize = 2;
const MEMORY_TARGET_MB: f64 = 30.0;
/// Issue 8: at most the time of `xargs -P`, results captured and written.
const XARGS_TARGET: f64 = 1.00;

/// SSH targets: bakapara within 20% of xargs driving ssh on open master connections, and at
/// least 5 times faster than GNU Parallel logging in for every job.
const SSH_FLOOR_TARGET: f64 = 1.20;
const SSH_PARALLEL_TARGET: f64 = 5.0;
/// A stock sshd allows this many sessions per connection; the SSH floor runs every slot of a
/// host on one master connection.
const SSHD_MAX_SESSIONS: usize = 10;
/// The user the SSH jobs log in as when the bench runs as root.
const BENCH_USER: &str = "bakabench";

const USAGE: &str = "\
usage: cargo bench --bench versus [-- OPTIONS]
  --jobs N          jobs per run (default 2000)
  --parallel P      parallelism of every tool (default 2)
  --rounds R        counted rounds (default 5), after 1 warm-up round
  --ssh             run only the SSH comparison (loopback sshd hosts)
  --memory          run only the memory case (~100 s on 2 cores)
  --agent           run only the remote agent's three figures (issue 10; --ssh-rounds rounds)
  --local           run the local timing (the default when no mode is given)
  --all             run the local timing, the SSH comparison, the agent's figures, then
                    the memory case
  --ssh-jobs N      jobs per SSH run (default 300)
  --ssh-hosts H     loopback sshd hosts (default 2)
  --ssh-slots S     slots per host (default 4, at most 10)
  --ssh-rounds R    counted SSH rounds (default 3), after 1 warm-up round
  --memory-jobs M   jobs in the memory case (default 100000)
  --poll-rss        measure the peak RSS by polling /proc even if /usr/bin/time works
  --bakapara PATH   measure this bakapara binary instead of the one cargo built";

#[derive(Clone)]
struct Opts {
    jobs: usize,
    parallel: usize,
    rounds: usize,
    local: bool,
    ssh: bool,
    memory: bool,
    agent: bool,
    ssh_jobs: usize,
    ssh_hosts: usize,
    ssh_slots: usize,
    ssh_rounds: usize,
    memory_jobs: usize,
    poll_rss: bool,
}

fn parse_args() -> Opts {
    let mut opts = Opts {
        jobs: 2000,
        parallel: 2,
        rounds: 5,
        local: false,
        ssh: false,
        memory: false,
        agent: false,
        ssh_jobs: 300,
        ssh_hosts: 2,
        ssh_slots: 4,
        ssh_rounds: 3,
        memory_jobs: 100_000,
        poll_rss: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> usize {
            match args.next().map(|v| v.parse::<usize>()) {
                Some(Ok(n)) if n > 0 => n,
                _ => die(&format!("{name} needs a positive integer")),
            }
        };
        match arg.as_str() {
            // `cargo bench` passes `--bench` to every bench binary.
            "--bench" => {}
            "--jobs" | "-n" => opts.jobs = number("--jobs"),
            "--parallel" | "-j" | "-P" => opts.parallel = number("--parallel"),
            "--rounds" => opts.rounds = number("--rounds"),
            "--ssh-jobs" => opts.ssh_jobs = number("--ssh-jobs"),
            "--ssh-hosts" => opts.ssh_hosts = number("--ssh-hosts"),
            "--ssh-slots" => opts.ssh_slots = number("--ssh-slots"),
            "--ssh-rounds" => opts.ssh_rounds = number("--ssh-rounds"),
            "--memory-jobs" => opts.memory_jobs = number("--memory-jobs"),
            "--local" => opts.local = true,
            "--ssh" => opts.ssh = true,
            "--memory" => opts.memory = true,
            "--agent" => opts.agent = true,
            "--all" => (opts.local, opts.ssh, opts.agent, opts.memory) = (true, true, true, true),
            "--poll-rss" => opts.poll_rss = true,
            "--bakapara" => {
                let path = args
                    .next()
                    .unwrap_or_else(|| die("--bakapara needs a path"));
                let _ = BAKAPARA_PATH.set(path);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other:?}")),
        }
    }
    if !opts.ssh && !opts.memory && !opts.agent {
        opts.local = true;
    }
    if opts.ssh_slots > SSHD_MAX_SESSIONS {
        die(&format!(
            "--ssh-slots is at most {SSHD_MAX_SESSIONS}: the SSH floor runs a host's slots on one \
             master connection, and a stock sshd allows {SSHD_MAX_SESSIONS} sessions on one"
        ));
    }
    opts
}

fn die(msg: &str) -> ! {
    eprintln!("versus: {msg}\n{USAGE}");
    std::process::exit(2);
}

/// One contender of the timing table.
///
/// `run` performs one complete run of N jobs at parallelism P and returns its wall time; it
/// panics when the tool did not do the work (non-zero exit, missing result lines), so a
/// broken tool can never post a good time. Anything a case needs across rounds lives in the
/// closure (and is cleaned up by its `Drop`).
struct Case {
    /// Short name for the table; the ratio columns name their baseline case (`xargs` and
    /// `floor` locally, `ssh-floor` and `bakapara` over SSH).
    name: &'static str,
    /// The command line, as a user would type it, for the header.
    shown: String,
    run: Box<dyn FnMut() -> Duration>,
}

/// The local contenders, in their order in the table, plus notes on the ones that cannot run
/// here. (The SSH ones are in [`ssh_cases`].)
fn cases(opts: &Opts, notes: &mut Vec<String>) -> Vec<Case> {
    let mut cases = vec![floor_case(opts), xargs_case(opts), bakapara_case(opts)];
    match gnu_parallel_case(opts) {
        Some(case) => cases.push(case),
        None => notes.push("GNU Parallel: not installed".into()),
    }
    cases
}

/// `seq 1 n` as bytes, the input of bakapara and GNU Parallel.
fn seq_input(n: usize) -> Arc<[u8]> {
    let mut s = String::with_capacity(n * 7);
    for i in 1..=n {
        s.push_str(&i.to_string());
        s.push('\n');
    }
    s.into_bytes().into()
}

/// Write `input` to the child's stdin from a thread, closing it at the end, so a child that
/// reads lazily is never blocked by the bench.
fn feed(child: &mut Child, input: Arc<[u8]>) -> thread::JoinHandle<()> {
    let mut stdin = child.stdin.take().expect("stdin piped");
    thread::spawn(move || {
        stdin.write_all(&input).expect("writing the job list");
    })
}

fn check_exit(tool: &str, status: ExitStatus) {
    assert!(status.success(), "{tool} failed: {status}");
}

/// The spawn floor: P threads taking job numbers from a shared counter, each spawning bash
/// with std's `Command` (`posix_spawn/vfork` on Linux) and waiting for it. No pipes, no
/// process groups, no output capture: the least any runner that starts bash per job can do.
fn floor_case(opts: &Opts) -> Case {
    let (n, p) = (opts.jobs, opts.parallel);
    Case {
        name: "floor",
        shown: format!("{p} threads x Command::new(\"/bin/bash\") -o pipefail -c true"),
        run: Box::new(move || {
            let next = AtomicUsize::new(0);
            let start = Instant::now();
            thread::scope(|s| {
                for _ in 0..p {
                    s.spawn(|| {
                        while next.fetch_add(1, Ordering::Relaxed) < n {
                            let status = Command::new("/bin/bash")
                                .args(["-o", "pipefail", "-c", "true"])
                                .stdin(Stdio::null())
                                .stdout(Stdio::null())
                                .stderr(Stdio::null())
                                .status()
                                .expect("spawning /bin/bash");
                            check_exit("bash", status);
                        }
                    });
                }
            });
            start.elapsed()
        }),
    }
}

/// `xargs -P P -n 1 bash -o pipefail -c` fed N lines `true`: each job is exactly the floor's
/// `bash -o pipefail -c true`. xargs exits 123 if any of them failed.
fn xargs_case(opts: &Opts) -> Case {
    let (n, p) = (opts.jobs, opts.parallel);
    let input: Arc<[u8]> = "true\n".repeat(n).into_bytes().into();
    Case {
        name: "xargs",
        shown: format!("yes true | head -{n} | xargs -P {p} -n 1 bash -o pipefail -c"),
        run: Box::new(move || {
            let start = Instant::now();
            let mut child = Command::new("xargs")
                .args([
                    "-P",
                    &p.to_string(),
                    "-n",
                    "1",
                    "bash",
                    "-o",
                    "pipefail",
                    "-c",
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning xargs");
            let feeder = feed(&mut child, input.clone());
            let status = child.wait().expect("waiting for xargs");
            let elapsed = start.elapsed();
            feeder.join().expect("feeder thread");
            check_exit("xargs", status);
            elapsed
        }),
    }
}

/// `seq N | bakapara -j P true`: every job is `/bin/bash -o pipefail -c 'true 7'` (a template
/// without a token gets ` <>` appended), stdout and stderr captured into the result line.
/// The bench only collects the output bytes while the clock runs and checks them afterwards,
/// so its own JSON parsing neither slows bakapara down nor counts in its time.
fn bakapara_case(opts: &Opts) -> Case {
    let (n, p) = (opts.jobs, opts.parallel);
    let input = seq_input(n);
    Case {
        name: "bakapara",
        shown: format!("seq {n} | bakapara -j {p} true"),
        run: Box::new(move || {
            let start = Instant::now();
            let mut child = spawn_bakapara(p);
            let feeder = feed(&mut child, input.clone());
            let mut out = Vec::with_capacity(n * 512);
            child
                .stdout
                .take()
                .expect("stdout piped")
                .read_to_end(&mut out)
                .expect("reading bakapara's output");
            let status = child.wait().expect("waiting for bakapara");
            let elapsed = start.elapsed();
            feeder.join().expect("feeder thread");
            check_exit("bakapara", status);
            let lines = count_ok_results(&out[..]);
            assert_eq!(lines, n, "bakapara wrote {lines} result lines for {n} jobs");
            elapsed
        }),
    }
}

fn spawn_bakapara(p: usize) -> Child {
    Command::new(bakapara())
        .args(["-j", &p.to_string(), "true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", bakapara()))
}

/// Count bakapara's result lines, asserting that each is a JSON object whose `result.status`
/// is `"ok"` with exit code 0.
fn count_ok_results(out: impl Read) -> usize {
    ok_results_by_host(out).values().sum()
}

/// [`count_ok_results`] per `result.host`.
fn ok_results_by_host(out: impl Read) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in BufReader::new(out).lines() {
        let line = line.expect("bakapara's output is UTF-8 text");
        let value: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("result line is not JSON ({e}): {line}"));
        let result = &value["result"];
        assert!(
            result["status"] == "ok" && result["code"] == 0,
            "job did not succeed: {line}"
        );
        let host = result["host"].as_str().unwrap_or("?").to_string();
        *counts.entry(host).or_insert(0) += 1;
    }
    counts
}

fn gnu_parallel_installed() -> bool {
    Command::new("parallel")
        .args(["--will-cite", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// GNU Parallel, when it is on PATH. `--will-cite` silences the citation notice. Parallel
/// appends the argument too (`true 7`) and starts each job through the shell it detects
/// (`bash -c`, like the others, on a machine whose login shell is bash).
fn gnu_parallel_case(opts: &Opts) -> Option<Case> {
    if !gnu_parallel_installed() {
        return None;
    }
    let (n, p) = (opts.jobs, opts.parallel);
    let input = seq_input(n);
    Some(Case {
        name: "parallel",
        shown: format!("seq {n} | parallel --will-cite -j {p} true"),
        run: Box::new(move || {
            let start = Instant::now();
            let mut child = Command::new("parallel")
                .args(["--will-cite", "-j", &p.to_string(), "true"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning parallel");
            let feeder = feed(&mut child, input.clone());
            let status = child.wait().expect("waiting for parallel");
            let elapsed = start.elapsed();
            feeder.join().expect("feeder thread");
            check_exit("GNU Parallel", status);
            elapsed
        }),
    })
}

fn median(sorted: &[Duration]) -> Duration {
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2
    }
}

/// Runs 1 warm-up round and `rounds` counted ones, each tool once per round in a rotating
/// order, printing each round's times; returns the counted times, per case.
fn run_rounds(cases: &mut [Case], rounds: usize) -> Vec<Vec<Duration>> {
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for round in 0..=rounds {
        let label = if round == 0 {
            "warm-up".to_string()
        } else {
            format!("round {round}/{rounds}")
        };
        let mut line = format!("{label:>12}:");
        // Rotate the starting tool every round so that none always runs first (cold caches)
        // or right after the heaviest one.
        for k in 0..cases.len() {
            let i = (round + k) % cases.len();
            let t = (cases[i].run)();
            line += &format!("  {} {:.3}s", cases[i].name, t.as_secs_f64());
            if round > 0 {
                times[i].push(t);
            }
        }
        println!("{line}");
    }
    times
}

/// Median, min and max of each case's times.
#[derive(Clone, Copy)]
struct Stats {
    median: Duration,
    min: Duration,
    max: Duration,
}

fn stats(times: &[Vec<Duration>]) -> Vec<Stats> {
    times
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.sort();
            Stats {
                median: median(&t),
                min: t[0],
                max: t[t.len() - 1],
            }
        })
        .collect()
}

fn index_of(cases: &[Case], name: &str) -> Option<usize> {
    cases.iter().position(|c| c.name == name)
}

fn median_secs(cases: &[Case], stats: &[Stats], name: &str) -> Option<f64> {
    index_of(cases, name).map(|i| stats[i].median.as_secs_f64())
}

/// The table: one row per case, with the ratio of its median to the median of each baseline
/// case (column title, case name); `-` where a baseline did not run.
fn print_table(cases: &[Case], stats: &[Stats], jobs: usize, baselines: &[(&str, &str)]) {
    let bases: Vec<Option<f64>> = baselines
        .iter()
        .map(|(_, name)| median_secs(cases, stats, name))
        .collect();
    let mut header = format!(
        "{:<10} {:>9} {:>9} {:>9} {:>9}",
        "tool", "median", "min", "max", "us/job"
    );
    for (title, _) in baselines {
        header += &format!(" {title:>9}");
    }
    println!("{header}");
    for (case, st) in cases.iter().zip(stats) {
        let m = st.median.as_secs_f64();
        let mut row = format!(
            "{:<10} {:>8.3}s {:>8.3}s {:>8.3}s {:>9.0}",
            case.name,
            m,
            st.min.as_secs_f64(),
            st.max.as_secs_f64(),
            m * 1e6 / jobs as f64,
        );
        for base in &bases {
            let r = base.map_or("-".into(), |b| format!("{:.2}x", m / b));
            row += &format!(" {r:>9}");
        }
        println!("{row}");
    }
}

/// Two noise-robust views of the ratio of case `a` to case `b`, for a busy machine: the ratio
/// of the best runs (noise only ever adds time), and the median over rounds of the per-round
/// ratio (the two runs of a round are seconds apart, so they share most of the noise).
fn print_robust_ratios(cases: &[Case], times: &[Vec<Duration>], stats: &[Stats], a: &str, b: &str) {
    let (Some(a), Some(b)) = (index_of(cases, a), index_of(cases, b)) else {
        return;
    };
    let mut paired: Vec<f64> = times[a]
        .iter()
        .zip(&times[b])
        .map(|(a, b)| a.as_secs_f64() / b.as_secs_f64())
        .collect();
    paired.sort_by(f64::total_cmp);
    let mid = paired.len() / 2;
    let paired = if paired.len() % 2 == 1 {
        paired[mid]
    } else {
        f64::midpoint(paired[mid - 1], paired[mid])
    };
    println!(
        "  (ratio of mins {:.2}x, median of per-round ratios {paired:.2}x)",
        stats[a].min.as_secs_f64() / stats[b].min.as_secs_f64()
    );
}

fn cpus() -> usize {
    thread::available_parallelism().map_or(0, std::num::NonZero::get)
}

fn timing(opts: &Opts) {
    let mut notes = Vec::new();
    let mut cases = cases(opts, &mut notes);
    println!(
        "versus: {} jobs, -P {}, {} rounds + 1 warm-up, {} CPUs; bakapara = {}",
        opts.jobs,
        opts.parallel,
        opts.rounds,
        cpus(),
        bakapara(),
    );
    for case in &cases {
        println!("  {:<9} {}", case.name, case.shown);
    }
    for note in &notes {
        println!("  {note}");
    }

    let times = run_rounds(&mut cases, opts.rounds);
    let stats = stats(&times);
    println!();
    print_table(
        &cases,
        &stats,
        opts.jobs,
        &[("/xargs", "xargs"), ("/floor", "floor")],
    );
    for note in &notes {
        println!("{note}");
    }
    let xargs = median_secs(&cases, &stats, "xargs");
    if let (Some(b), Some(x)) = (median_secs(&cases, &stats, "bakapara"), xargs) {
        let r = b / x;
        println!(
            "bakapara/xargs = {r:.2}x (target <= {XARGS_TARGET:.2}x){}",
            if r <= XARGS_TARGET { "" } else { "  MISSED" }
        );
    }
    print_robust_ratios(&cases, &times, &stats, "bakapara", "xargs");
    own_cpu(opts);
}

// ---------------------------------------------------------------------------------------------
// Own CPU per job

/// The slots of the own-CPU figure: many jobs at once, where per-job bookkeeping that grows
/// with the number of running jobs shows.
const OWN_CPU_SLOTS: usize = 200;

/// Target for bakapara's own CPU (user + system, its jobs excluded) per job at `-j 200`.
const OWN_CPU_TARGET_MS: f64 = 0.1;

/// The user + system CPU time of the process `pid` itself (not its children), in clock ticks,
/// read from `/proc/PID/stat` of the zombie: the bench waits with `WNOWAIT`, so the figures
/// are final and the process not yet reaped.
fn own_ticks_at_exit(child: &mut Child) -> (ExitStatus, u64) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("a pid is an i32"));
    waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).expect("waitid");
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    // The fields after the command name in parentheses, which may hold spaces: utime and
    // stime are fields 14 and 15, the 12th and 13th after it.
    let after = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks = |i: usize| fields[i].parse::<u64>().expect("a tick count");
    let own = ticks(11) + ticks(12);
    (child.wait().expect("reaping"), own)
}

/// `seq N | TOOL` at `-j 200` (xargs: `-P 200`): the tool's own CPU per job in milliseconds,
/// the median of `rounds` runs.
fn own_cpu_ms(mut command: Command, input: &Arc<[u8]>, n: usize, rounds: usize) -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = u32::try_from(unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }).unwrap_or(100);
    let mut per_job: Vec<f64> = (0..rounds)
        .map(|_| {
            let mut child = command
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawning the tool");
            let feeder = feed(&mut child, input.clone());
            let mut out = Vec::with_capacity(n * 512);
            child
                .stdout
                .take()
                .expect("stdout piped")
                .read_to_end(&mut out)
                .expect("reading the output");
            let (status, ticks) = own_ticks_at_exit(&mut child);
            feeder.join().expect("feeder thread");
            assert!(status.success(), "the tool failed: {status}");
            Duration::from_secs(ticks).as_secs_f64() * 1000.0 / f64::from(hz) / n as f64
        })
        .collect();
    per_job.sort_by(f64::total_cmp);
    per_job[per_job.len() / 2]
}

/// bakapara's own CPU per job at `-j 200`, results captured and written, beside xargs's.
fn own_cpu(opts: &Opts) {
    let (n, p) = (opts.jobs, OWN_CPU_SLOTS);
    let rounds = opts.rounds.max(1);
    let mut bakapara_cmd = Command::new(bakapara());
    bakapara_cmd.args(["-j", &p.to_string(), "true"]);
    let bakapara_ms = own_cpu_ms(bakapara_cmd, &seq_input(n), n, rounds);
    let mut xargs_cmd = Command::new("xargs");
    xargs_cmd.args([
        "-P",
        &p.to_string(),
        "-n",
        "1",
        "bash",
        "-o",
        "pipefail",
        "-c",
    ]);
    let trues: Arc<[u8]> = "true\n".repeat(n).into_bytes().into();
    let xargs_ms = own_cpu_ms(xargs_cmd, &trues, n, rounds);
    let floor_ms = floor_own_cpu_ms(n, rounds);
    println!(
        "own CPU per job at -j {p} (user+sys of the tool itself, jobs excluded; median of \
         {rounds}): bakapara {bakapara_ms:.3} ms (target <= {OWN_CPU_TARGET_MS:.2} ms){}, \
         xargs {xargs_ms:.3} ms, floor {floor_ms:.3} ms (Command::output(), both streams \
         captured, one job at a time)",
        if bakapara_ms <= OWN_CPU_TARGET_MS {
            ""
        } else {
            "  MISSED"
        }
    );
}

/// The floor of the own-CPU figure: the CPU that starting `bash -o pipefail -c true` with its
/// stdout and stderr captured, and waiting for it, costs the thread that does it when it does
/// nothing else: std's `Command::output()` (`posix_spawn`, two pipes read to their end, waitpid),
/// `n` jobs one after another on this thread, per job in milliseconds, median of `rounds`.
/// Every job runner that captures both streams pays at least this (more descriptors open, as
/// with many jobs at once, make each spawn dearer).
fn floor_own_cpu_ms(n: usize, rounds: usize) -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let thread_cpu = || {
        let usage = getrusage(UsageWho::RUSAGE_THREAD).expect("getrusage");
        let seconds = |t: nix::sys::time::TimeVal| {
            Duration::new(
                u64::try_from(t.tv_sec()).unwrap_or(0),
                u32::try_from(t.tv_usec()).unwrap_or(0) * 1000,
            )
        };
        seconds(usage.user_time()) + seconds(usage.system_time())
    };
    let mut per_job: Vec<f64> = (0..rounds)
        .map(|_| {
            let before = thread_cpu();
            for _ in 0..n {
                let output = Command::new("/bin/bash")
                    .args(["-o", "pipefail", "-c", "true"])
                    .stdin(Stdio::null())
                    .output()
                    .expect("spawning bash");
                assert!(output.status.success(), "bash -c true failed");
            }
            thread_cpu().saturating_sub(before).as_secs_f64() * 1000.0 / n as f64
        })
        .collect();
    per_job.sort_by(f64::total_cmp);
    per_job[per_job.len() / 2]
}

// ---------------------------------------------------------------------------------------------
// SSH

#[path = "../tests/integration/common/sshd.rs"]
mod sshd;

/// A remote command that proves where and as whom a job ran: `<host name> <user>` (the test
/// sshd sets `BAKAPARA_TEST_HOST` in its sessions). It takes a while, so that a tool given
/// twice as many of them as it has slots must use every host. The trailing `:` swallows the
/// argument that bakapara and GNU Parallel append.
const WHERE_AM_I: &str = r#"sleep 0.3; echo "$BAKAPARA_TEST_HOST $(id -un)"; :"#;

/// The loopback hosts of the SSH comparison, the client config naming them, and the floor's
/// master connections. Dropping it closes the masters, then stops the sshd servers (also when
/// a case panics: the cases own it).
struct SshHosts {
    /// The floor's `ssh -M -N` master connections, one per host (our children).
    masters: Mutex<Vec<Child>>,
    names: Vec<String>,
    user: String,
    slots: usize,
    /// The client config: `Host h1` ... with port, user and key, no `ControlPath`.
    config: PathBuf,
    /// The floor's `ControlPath` (`%n` = the host name as given).
    control_path: String,
    /// A script running `ssh -F CONFIG "$@"`, for GNU Parallel's `--controlmaster` (see
    /// [`SshTool::ParallelMaster`]).
    ssh_script: PathBuf,
    /// Holds the config, the control sockets and the masters' logs.
    dir: TempDir,
    /// Last: the servers stop after everything that talks to them.
    cluster: sshd::SshCluster,
}

impl Drop for SshHosts {
    fn drop(&mut self) {
        let masters = self.masters.get_mut().unwrap_or_else(|e| e.into_inner());
        for master in masters.iter_mut() {
            let _ = master.kill();
            let _ = master.wait();
        }
    }
}

impl SshHosts {
    /// Starts the sshd servers (as root, for [`BENCH_USER`]) and the floor's masters.
    fn start(opts: &Opts, notes: &mut Vec<String>) -> SshHosts {
        let user = bench_user(notes);
        let names: Vec<String> = (1..=opts.ssh_hosts).map(|i| format!("h{i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let cluster = sshd::SshCluster::start(&refs);
        // sshd reads AuthorizedKeysFile as the user who logs in: let that user through the
        // servers' directories (0700 temp dirs of root) to the public key, and no further.
        for host in cluster.hosts() {
            fs::set_permissions(host.dir(), fs::Permissions::from_mode(0o711))
                .expect("chmod the sshd directory");
            fs::set_permissions(
                host.dir().join("authorized_keys"),
                fs::Permissions::from_mode(0o644),
            )
            .expect("chmod authorized_keys");
        }
        let dir = tempfile::Builder::new()
            .prefix("bakapara-versus-ssh-")
            .tempdir()
            .expect("create a temp dir for the ssh config");
        let config = dir.path().join("ssh_config");
        let mut text = String::from("# written by benches/versus.rs\n");
        for host in cluster.hosts() {
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
                name = host.name(),
                port = host.port(),
                key = host.identity_file().display(),
            ));
        }
        fs::write(&config, text).expect("write ssh_config");
        let control_path = format!("{}/%n.sock", dir.path().display());
        let ssh_script = dir.path().join("ssh");
        fs::write(
            &ssh_script,
            format!("#!/bin/sh\nexec ssh -F '{}' \"$@\"\n", config.display()),
        )
        .expect("write the ssh script");
        fs::set_permissions(&ssh_script, fs::Permissions::from_mode(0o755))
            .expect("chmod the ssh script");
        let hosts = SshHosts {
            masters: Mutex::new(Vec::new()),
            names,
            user,
            slots: opts.ssh_slots,
            config,
            control_path,
            ssh_script,
            dir,
            cluster,
        };
        for name in &hosts.names {
            hosts.open_master(name);
        }
        hosts
    }

    /// `ssh -F CONFIG -o ControlPath=...`, to which the host and command are added.
    fn ssh(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F")
            .arg(&self.config)
            .arg("-o")
            .arg(format!("ControlPath={}", self.control_path));
        cmd
    }

    /// Opens the floor's master connection to `name` and waits until it answers `-O check`.
    /// The master is spawned from the main thread, which lives as long as the bench, with
    /// `PR_SET_PDEATHSIG`: it dies with the bench even on SIGKILL.
    fn open_master(&self, name: &str) {
        let log_path = self.dir.path().join(format!("master-{name}.log"));
        let log = fs::File::create(&log_path).expect("create the master's log");
        let mut cmd = self.ssh();
        cmd.args([
            "-o",
            "ControlMaster=yes",
            "-o",
            "ControlPersist=no",
            "-N",
            name,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn().expect("spawning the ssh master");
        let mut masters = self
            .masters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        masters.push(child);
        let master = masters.last_mut().expect("just pushed");
        let deadline = Instant::now() + sshd::READY_TIMEOUT;
        loop {
            if let Ok(Some(status)) = master.try_wait() {
                panic!(
                    "the ssh master to {name} exited ({status}): {}\nsshd log:\n{}",
                    fs::read_to_string(&log_path).unwrap_or_default().trim(),
                    self.cluster.host(name).log()
                );
            }
            if self.master_ok(name) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the ssh master to {name} did not come up within {:?}",
                sshd::READY_TIMEOUT
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the master connection to `name` is up (`ssh -O check`).
    fn master_ok(&self, name: &str) -> bool {
        self.ssh()
            .args(["-O", "check", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn total_slots(&self) -> usize {
        self.slots * self.names.len()
    }
}

/// The login used for the SSH jobs. As root: [`BENCH_USER`], created when missing (home
/// directory, bash, an empty `.bashrc`, and `*` as password so that sshd does not take the
/// account for locked). Otherwise the current user, start-up files and all.
fn bench_user(notes: &mut Vec<String>) -> String {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root {
        let me = sshd::current_user();
        notes.push(format!(
            "not root: the jobs log in as {me}, whose shell start-up files count in every time"
        ));
        return me;
    }
    if passwd_entry(BENCH_USER).is_none() {
        let status = Command::new("useradd")
            .args(["-m", "-s", "/bin/bash", "-p", "*", BENCH_USER])
            .status()
            .expect("running useradd");
        check_exit("useradd", status);
        let entry = passwd_entry(BENCH_USER).expect("the user useradd just created");
        let bashrc = Path::new(&entry[5]).join(".bashrc");
        fs::write(&bashrc, "").expect("writing the bench user's .bashrc");
        let id = |i: usize| entry[i].parse::<u32>().expect("numeric uid/gid");
        std::os::unix::fs::chown(&bashrc, Some(id(2)), Some(id(3))).expect("chown .bashrc");
        notes.push(format!(
            "created the local user {BENCH_USER} (home {}, empty .bashrc) for the SSH logins",
            entry[5]
        ));
    } else if let Some(entry) = passwd_entry(BENCH_USER) {
        let bashrc = Path::new(&entry[5]).join(".bashrc");
        if fs::metadata(&bashrc).is_ok_and(|m| m.len() > 0) {
            notes.push(format!(
                "{} is not empty: it runs at every SSH login, in every tool's time",
                bashrc.display()
            ));
        }
    }
    BENCH_USER.to_string()
}

/// The `getent passwd` fields of `user`, if it exists.
fn passwd_entry(user: &str) -> Option<Vec<String>> {
    let out = Command::new("getent")
        .args(["passwd", user])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let line = String::from_utf8(out.stdout).ok()?;
    let fields: Vec<String> = line.trim_end().split(':').map(String::from).collect();
    (out.status.success() && fields.len() >= 7).then_some(fields)
}

/// The contenders of the SSH table.
#[derive(Clone, Copy, PartialEq)]
enum SshTool {
    Floor,
    Bakapara,
    Parallel,
    ParallelMaster,
}

impl SshTool {
    fn name(self) -> &'static str {
        match self {
            SshTool::Floor => "ssh-floor",
            SshTool::Bakapara => "bakapara",
            SshTool::Parallel => "parallel",
            SshTool::ParallelMaster => "parallel-M",
        }
    }

    /// The command that runs `remote` `n` times over the hosts, its input, and how to show it.
    fn command(self, hosts: &SshHosts, remote: &str, n: usize) -> (Command, Arc<[u8]>, String) {
        let cfg = hosts.config.display().to_string();
        match self {
            SshTool::Floor => {
                // One xargs over all slots; each input line is `HOST 'REMOTE'` (xargs strips
                // the quotes), jobs spread round-robin. ssh picks the host's master by `%n`.
                assert!(!remote.contains('\''), "xargs input quoting: {remote}");
                let mut input = String::with_capacity(n * (remote.len() + 8));
                for i in 0..n {
                    let host = &hosts.names[i % hosts.names.len()];
                    input.push_str(&format!("{host} '{remote}'\n"));
                }
                let total = hosts.total_slots().to_string();
                let mut cmd = Command::new("xargs");
                cmd.args(["-P", &total, "-n", "2", "ssh", "-F", &cfg, "-o"])
                    .arg(format!("ControlPath={}", hosts.control_path));
                let shown = format!(
                    "printf '{} {remote}\\n' ... | xargs -P {total} -n 2 ssh -F {cfg} -o \
                     ControlPath={}  ({} masters opened beforehand)",
                    hosts.names.join(" true\\n"),
                    hosts.control_path,
                    hosts.names.len()
                );
                (cmd, input.into_bytes().into(), shown)
            }
            SshTool::Bakapara => {
                let logins = hosts
                    .names
                    .iter()
                    .map(|h| format!("{h}/{}", hosts.slots))
                    .collect::<Vec<_>>()
                    .join(",");
                let mut cmd = Command::new(bakapara());
                cmd.args([
                    "--ssh-config",
                    &cfg,
                    "-S",
                    &logins,
                    "-q",
                    "--workdir",
                    "~",
                    remote,
                ]);
                let shown = format!(
                    "seq {n} | bakapara --ssh-config {cfg} -S {logins} -q --workdir '~' {remote}"
                );
                (cmd, seq_input(n), shown)
            }
            SshTool::Parallel | SshTool::ParallelMaster => {
                let logins = hosts
                    .names
                    .iter()
                    .map(|h| format!("{}/{h}", hosts.slots))
                    .collect::<Vec<_>>()
                    .join(",");
                // GNU Parallel (20221122) execs the master of `--controlmaster` with `--ssh` as
                // one program name, so `--ssh 'ssh -F CONFIG'` silently never gets a master and
                // every job logs in afresh: -M gets a script without spaces instead.
                let ssh = match self {
                    SshTool::ParallelMaster => hosts.ssh_script.display().to_string(),
                    _ => format!("ssh -F {cfg}"),
                };
                let mut cmd = Command::new("parallel");
                cmd.args(["--will-cite", "-S", &logins, "--ssh", &ssh]);
                let mut shown = format!("seq {n} | parallel --will-cite -S {logins} --ssh '{ssh}'");
                if self == SshTool::ParallelMaster {
                    cmd.arg("--controlmaster");
                    shown += " --controlmaster";
                }
                cmd.arg(remote);
                shown += &format!(" {remote}");
                (cmd, seq_input(n), shown)
            }
        }
    }

    /// Runs `remote` `n` times; returns the wall time and the tool's stdout. Panics when the
    /// tool failed, and checks bakapara's result lines (after the clock stopped): exactly `n`,
    /// all ok, all on our hosts.
    fn run(self, hosts: &SshHosts, remote: &str, n: usize) -> (Duration, Vec<u8>) {
        let (mut cmd, input, _) = self.command(hosts, remote, n);
        let start = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.name()));
        let feeder = feed(&mut child, input);
        let watchdog = Watchdog::start(child.id(), ssh_run_limit(n));
        let mut out = Vec::with_capacity(n * 512);
        child
            .stdout
            .take()
            .expect("stdout piped")
            .read_to_end(&mut out)
            .expect("reading the tool's output");
        let fired = watchdog.stop();
        let status = child.wait().expect("waiting for the tool");
        let elapsed = start.elapsed();
        feeder.join().expect("feeder thread");
        if let Some(limit) = fired {
            panic!(
                "{} did not finish {n} jobs within {limit:?}: killed it after {} output lines \
                 ({status}); a job or the tool hangs",
                self.name(),
                memchr::memchr_iter(b'\n', &out).count()
            );
        }
        // xargs: 123 if a job failed, 124 if ssh exited 255 (no connection); parallel and
        // bakapara: the number of failed jobs.
        check_exit(self.name(), status);
        match self {
            SshTool::Bakapara => {
                let by_host = ok_results_by_host(&out[..]);
                let lines: usize = by_host.values().sum();
                assert_eq!(lines, n, "bakapara wrote {lines} result lines for {n} jobs");
                for host in by_host.keys() {
                    assert!(hosts.names.contains(host), "bakapara ran a job on {host}");
                }
            }
            SshTool::Floor => {
                // A master that died would let ssh log in afresh for each job, unnoticed.
                for name in &hosts.names {
                    assert!(
                        hosts.master_ok(name),
                        "the floor's master to {name} is gone"
                    );
                }
            }
            SshTool::Parallel | SshTool::ParallelMaster => {}
        }
        (elapsed, out)
    }

    /// Before timing: runs [`WHERE_AM_I`] a few times and checks that every job ran on one of
    /// our sshd hosts as the bench user, and that every host got jobs.
    fn check_remote(self, hosts: &SshHosts) {
        let n = 2 * hosts.total_slots();
        let (_, out) = self.run(hosts, WHERE_AM_I, n);
        let text = String::from_utf8_lossy(&out).into_owned();
        let lines: Vec<String> = if self == SshTool::Bakapara {
            text.lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).expect("JSON result");
                    v["result"]["stdout"]
                        .as_str()
                        .unwrap_or("")
                        .trim_end()
                        .to_string()
                })
                .collect()
        } else {
            text.lines().map(str::to_string).collect()
        };
        assert_eq!(lines.len(), n, "{}: {n} jobs printed {text:?}", self.name());
        let mut seen = std::collections::BTreeSet::new();
        for line in &lines {
            let (host, user) = line.split_once(' ').unwrap_or((line, ""));
            assert!(
                hosts.names.iter().any(|h| h == host) && user == hosts.user,
                "{}: a job did not run on a test host as {}: {line:?}",
                self.name(),
                hosts.user
            );
            seen.insert(host.to_string());
        }
        assert_eq!(
            seen.len(),
            hosts.names.len(),
            "{}: hosts used {seen:?}",
            self.name()
        );
    }
}

/// How long an SSH run of `n` jobs may take before the bench calls it hung: far more than any
/// tool needs (GNU Parallel without `ControlMaster` takes ~30 ms a job on 2 cores).
fn ssh_run_limit(n: usize) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(200) * u32::try_from(n).unwrap_or(u32::MAX)
}

/// Kills a child that runs longer than a limit (SIGTERM, so that bakapara can stop its remote
/// jobs, then SIGKILL 10 s later), so that a hung tool fails the bench instead of hanging it.
/// The child must not be reaped before [`stop`](Self::stop) returns, so that its pid cannot
/// have been reused when the watchdog fires.
struct Watchdog {
    done: mpsc::Sender<()>,
    thread: thread::JoinHandle<Option<Duration>>,
}

impl Watchdog {
    fn start(pid: u32, limit: Duration) -> Watchdog {
        let (done, rx) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            if rx.recv_timeout(limit) != Err(mpsc::RecvTimeoutError::Timeout) {
                return None;
            }
            let pid = Pid::from_raw(i32::try_from(pid).expect("a pid is an i32"));
            let _ = kill(pid, Signal::SIGTERM);
            if rx.recv_timeout(Duration::from_secs(10)) == Err(mpsc::RecvTimeoutError::Timeout) {
                let _ = kill(pid, Signal::SIGKILL);
            }
            Some(limit)
        });
        Watchdog { done, thread }
    }

    /// Stops the watchdog; the limit if it fired.
    fn stop(self) -> Option<Duration> {
        let _ = self.done.send(());
        self.thread.join().expect("watchdog thread")
    }
}

/// The SSH contenders over freshly started loopback hosts, after checking that each really
/// runs its jobs there; a note instead of the cases when sshd or ssh is missing, and for GNU
/// Parallel when it is not installed.
fn ssh_cases(opts: &Opts, notes: &mut Vec<String>) -> Vec<Case> {
    if !Path::new(sshd::SSHD).exists() {
        notes.push(format!(
            "SSH: {} not found (install openssh-server)",
            sshd::SSHD
        ));
        return Vec::new();
    }
    let hosts = Arc::new(SshHosts::start(opts, notes));
    let mut tools = vec![SshTool::Floor, SshTool::Bakapara];
    if gnu_parallel_installed() {
        tools.extend([SshTool::Parallel, SshTool::ParallelMaster]);
    } else {
        notes.push("GNU Parallel: not installed".into());
    }
    let n = opts.ssh_jobs;
    tools
        .into_iter()
        .map(|tool| {
            tool.check_remote(&hosts);
            let hosts = hosts.clone();
            Case {
                name: tool.name(),
                shown: tool.command(&hosts, "true", n).2,
                run: Box::new(move || tool.run(&hosts, "true", n).0),
            }
        })
        .collect()
}

fn ssh_timing(opts: &Opts) {
    let mut notes = Vec::new();
    let mut cases = ssh_cases(opts, &mut notes);
    println!(
        "versus --ssh: {} jobs over {} loopback sshd hosts x {} slots, {} rounds + 1 warm-up, \
         {} CPUs",
        opts.ssh_jobs,
        opts.ssh_hosts,
        opts.ssh_slots,
        opts.ssh_rounds,
        cpus(),
    );
    for case in &cases {
        println!("  {:<10} {}", case.name, case.shown);
    }
    for note in &notes {
        println!("  {note}");
    }
    if cases.is_empty() {
        return;
    }
    let times = run_rounds(&mut cases, opts.ssh_rounds);
    let stats = stats(&times);
    println!();
    print_table(
        &cases,
        &stats,
        opts.ssh_jobs,
        &[("/floor", "ssh-floor"), ("/bakapara", "bakapara")],
    );
    let floor = median_secs(&cases, &stats, "ssh-floor");
    let bakapara = median_secs(&cases, &stats, "bakapara");
    let parallel = median_secs(&cases, &stats, "parallel");
    if let (Some(b), Some(f)) = (bakapara, floor) {
        let r = b / f;
        println!(
            "bakapara/ssh-floor = {r:.2}x (target <= {SSH_FLOOR_TARGET:.2}x){}",
            if r <= SSH_FLOOR_TARGET {
                ""
            } else {
                "  MISSED"
            }
        );
        print_robust_ratios(&cases, &times, &stats, "bakapara", "ssh-floor");
    }
    if let (Some(p), Some(b)) = (parallel, bakapara) {
        let r = p / b;
        println!(
            "parallel(no ControlMaster)/bakapara = {r:.1}x (target >= {SSH_PARALLEL_TARGET:.0}x){}",
            if r >= SSH_PARALLEL_TARGET {
                ""
            } else {
                "  MISSED"
            }
        );
    }
    // The cases own the hosts: dropping them closes the masters and stops the servers.
    drop(cases);
}

// ---------------------------------------------------------------------------------------------
// The remote agent's figures (issue 10)

#[path = "../tests/integration/common/relay.rs"]
mod relay;

/// 400 `true` jobs on 2 hosts x 4 slots: bakapara at most half the time of the floor (xargs
/// driving ssh over open `ControlMaster` connections), its own logins included.
const AGENT_JOBS: usize = 400;
const AGENT_HOSTS: usize = 2;
const AGENT_SLOTS: usize = 4;
const AGENT_FLOOR_TARGET: f64 = 0.5;
/// A host at this round-trip time (the relay in delay mode): 40 `true` jobs on 4 slots take at
/// most 1 s more than 4 jobs do (a job costs no round trip beyond the first: pipelining).
const SLOW_RTT: Duration = Duration::from_millis(100);
const SLOW_SLOTS: usize = 4;
const SLOW_MANY: usize = 40;
const SLOW_FEW: usize = 4;
const SLOW_EXTRA_TARGET_S: f64 = 1.0;
/// Time to the first result line from a start on 12 hosts x 4 slots, logins included.
const START_HOSTS: usize = 12;
const START_SLOTS: usize = 4;
const FIRST_RESULT_TARGET_S: f64 = 1.5;

/// `opts` with another host count and slot count for [`SshHosts::start`].
fn with_hosts(opts: &Opts, hosts: usize, slots: usize) -> Opts {
    Opts {
        ssh_hosts: hosts,
        ssh_slots: slots,
        ..opts.clone()
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        ""
    } else {
        "  MISSED"
    }
}

/// Median of unsorted figures.
fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    }
}

/// The three figures of issue 10, each with its target, medians over `--ssh-rounds`
/// interleaved rounds after a warm-up.
fn agent_timing(opts: &Opts) {
    if !Path::new(sshd::SSHD).exists() {
        println!(
            "versus --agent: {} not found (install openssh-server)",
            sshd::SSHD
        );
        return;
    }
    let rounds = opts.ssh_rounds;
    println!(
        "versus --agent: the remote agent's figures, {rounds} rounds + 1 warm-up, {} CPUs",
        cpus()
    );
    agent_vs_floor(opts);
    println!();
    slow_link(opts);
    println!();
    first_result(opts);
}

/// Figure 1: [`AGENT_JOBS`] `true` jobs, bakapara against the `ControlMaster` floor.
fn agent_vs_floor(opts: &Opts) {
    let mut notes = Vec::new();
    let hosts = Arc::new(SshHosts::start(
        &with_hosts(opts, AGENT_HOSTS, AGENT_SLOTS),
        &mut notes,
    ));
    let n = AGENT_JOBS;
    let mut cases: Vec<Case> = [SshTool::Floor, SshTool::Bakapara]
        .into_iter()
        .map(|tool| {
            tool.check_remote(&hosts);
            let hosts = hosts.clone();
            Case {
                name: tool.name(),
                shown: tool.command(&hosts, "true", n).2,
                run: Box::new(move || tool.run(&hosts, "true", n).0),
            }
        })
        .collect();
    // Beside them, what bakapara's logins and start cost: the same run with one job per slot.
    let few = AGENT_HOSTS * AGENT_SLOTS;
    let login_hosts = hosts.clone();
    cases.push(Case {
        name: "bakapara-1/slot",
        shown: SshTool::Bakapara.command(&hosts, "true", few).2,
        run: Box::new(move || SshTool::Bakapara.run(&login_hosts, "true", few).0),
    });
    drop(hosts);
    println!("agent 1/3: {n} true jobs on {AGENT_HOSTS} hosts x {AGENT_SLOTS} slots");
    for case in &cases {
        println!("  {:<10} {}", case.name, case.shown);
    }
    for note in &notes {
        println!("  {note}");
    }
    let times = run_rounds(&mut cases, opts.ssh_rounds);
    let stats = stats(&times);
    print_table(&cases, &stats, n, &[("/floor", "ssh-floor")]);
    if let (Some(b), Some(f)) = (
        median_secs(&cases, &stats, "bakapara"),
        median_secs(&cases, &stats, "ssh-floor"),
    ) {
        let r = b / f;
        println!(
            "bakapara/ssh-floor = {r:.2}x (target <= {AGENT_FLOOR_TARGET:.2}x){}",
            verdict(r <= AGENT_FLOOR_TARGET)
        );
        print_robust_ratios(&cases, &times, &stats, "bakapara", "ssh-floor");
    }
}

/// Figure 2: one host behind a relay adding [`SLOW_RTT`]; [`SLOW_MANY`] jobs against
/// [`SLOW_FEW`] on [`SLOW_SLOTS`] slots (each run pays its own logins, so the difference is
/// what the extra jobs cost).
fn slow_link(opts: &Opts) {
    let mut notes = Vec::new();
    let mut hosts = SshHosts::start(&with_hosts(opts, 1, SLOW_SLOTS), &mut notes);
    let direct = hosts.cluster.hosts()[0].port();
    let relay = Arc::new(relay::Relay::to_port(direct));
    relay.set(relay::Mode::Delay(SLOW_RTT));
    let text = fs::read_to_string(&hosts.config).expect("read the bench's ssh_config");
    let slow = hosts.dir.path().join("ssh_config.slow");
    fs::write(
        &slow,
        text.replace(
            &format!("Port {direct}\n"),
            &format!("Port {}\n", relay.port()),
        ),
    )
    .expect("write the slow ssh_config");
    // bakapara goes through the relay (the floor's master, unused here, does not).
    hosts.config = slow;
    let hosts = Arc::new(hosts);
    SshTool::Bakapara.check_remote(&hosts);
    assert!(relay.connections() > 0, "bakapara went through the relay");
    let case = |name: &'static str, n: usize| {
        let (hosts, relay) = (hosts.clone(), relay.clone());
        Case {
            name,
            shown: SshTool::Bakapara.command(&hosts, "true", n).2,
            run: Box::new(move || {
                let _link = &relay;
                SshTool::Bakapara.run(&hosts, "true", n).0
            }),
        }
    };
    let mut cases = vec![case("bakapara-40", SLOW_MANY), case("bakapara-4", SLOW_FEW)];
    println!(
        "agent 2/3: a host at {} ms RTT (relay), {SLOW_MANY} vs {SLOW_FEW} true jobs on \
         {SLOW_SLOTS} slots",
        SLOW_RTT.as_millis()
    );
    for case in &cases {
        println!("  {:<12} {}", case.name, case.shown);
    }
    for note in &notes {
        println!("  {note}");
    }
    let times = run_rounds(&mut cases, opts.ssh_rounds);
    let stats = stats(&times);
    print_table(&cases, &stats, SLOW_MANY, &[("/4 jobs", "bakapara-4")]);
    let extra = stats[0].median.as_secs_f64() - stats[1].median.as_secs_f64();
    let paired = median_f64(
        times[0]
            .iter()
            .zip(&times[1])
            .map(|(a, b)| a.as_secs_f64() - b.as_secs_f64())
            .collect(),
    );
    println!(
        "{SLOW_MANY} jobs - {SLOW_FEW} jobs at {} ms RTT = {extra:.3}s by medians, {paired:.3}s \
         median of per-round differences (target <= {SLOW_EXTRA_TARGET_S:.1}s){}",
        SLOW_RTT.as_millis(),
        verdict(extra <= SLOW_EXTRA_TARGET_S)
    );
}

/// Figure 3: from bakapara's start on [`START_HOSTS`] fresh hosts to its first result line;
/// the run then completes and every line is checked.
fn first_result(opts: &Opts) {
    let mut notes = Vec::new();
    let hosts = Arc::new(SshHosts::start(
        &with_hosts(opts, START_HOSTS, START_SLOTS),
        &mut notes,
    ));
    SshTool::Bakapara.check_remote(&hosts);
    let n = START_HOSTS * START_SLOTS;
    let h = hosts.clone();
    let mut cases = vec![Case {
        name: "first-line",
        shown: SshTool::Bakapara.command(&hosts, "true", n).2,
        run: Box::new(move || first_line_time(&h, n)),
    }];
    println!(
        "agent 3/3: time to the first result line, {START_HOSTS} hosts x {START_SLOTS} slots, \
         {n} true jobs"
    );
    println!("  {:<10} {}", cases[0].name, cases[0].shown);
    for note in &notes {
        println!("  {note}");
    }
    let times = run_rounds(&mut cases, opts.ssh_rounds);
    let stats = stats(&times);
    let m = stats[0].median.as_secs_f64();
    println!(
        "first result line after {m:.3}s median (min {:.3}s, max {:.3}s) (target < \
         {FIRST_RESULT_TARGET_S:.1}s){}",
        stats[0].min.as_secs_f64(),
        stats[0].max.as_secs_f64(),
        verdict(m < FIRST_RESULT_TARGET_S)
    );
}

/// Starts bakapara on every host of `hosts` with `n` `true` jobs; returns the time from the
/// spawn to its first stdout line, after checking the whole run (n ok lines, exit 0).
fn first_line_time(hosts: &SshHosts, n: usize) -> Duration {
    let (mut cmd, input, _) = SshTool::Bakapara.command(hosts, "true", n);
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning bakapara: {e}"));
    let feeder = feed(&mut child, input);
    let watchdog = Watchdog::start(child.id(), ssh_run_limit(n));
    let mut out = BufReader::new(child.stdout.take().expect("stdout piped"));
    let mut first = Vec::new();
    out.read_until(b'\n', &mut first)
        .expect("reading bakapara's output");
    let took = start.elapsed();
    let mut rest = Vec::new();
    out.read_to_end(&mut rest)
        .expect("reading bakapara's output");
    let fired = watchdog.stop();
    let status = child.wait().expect("waiting for bakapara");
    feeder.join().expect("feeder thread");
    assert!(fired.is_none(), "bakapara did not finish {n} jobs: killed");
    check_exit("bakapara", status);
    first.extend_from_slice(&rest);
    let lines = count_ok_results(&first[..]);
    assert_eq!(lines, n, "bakapara wrote {lines} result lines for {n} jobs");
    took
}

/// How the peak RSS was measured.
enum RssProbe {
    /// GNU time's `%M`: `ru_maxrss` from `wait4()`, kept by the kernel, so exact. It is the max
    /// over bakapara and the children it reaped, but those are `bash -c true` (a few MB), far
    /// below the figure that matters.
    GnuTime,
    /// Polling `/proc/PID/status` every few ms and keeping the last `VmHWM` read. `VmHWM` is the
    /// high-water mark, so it only grows: the last value read is the peak except for any
    /// growth in the final interval. We do not reap the child until polling stops, so its
    /// pid cannot be reused meanwhile; once it exits, the zombie's status has no `VmHWM` line
    /// and polling ends. (Reading `VmHWM` once "just before it exits" is racy: there is no
    /// hook for "just before".)
    Poll,
}

fn gnu_time_works() -> bool {
    let out = std::env::temp_dir().join(format!("bakapara-versus-probe-{}", std::process::id()));
    let ok = Path::new("/usr/bin/time").exists()
        && Command::new("/usr/bin/time")
            .args(["-f", "%M", "-o"])
            .arg(&out)
            .arg("true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        && fs::read_to_string(&out).is_ok_and(|s| s.trim().parse::<u64>().is_ok());
    let _ = fs::remove_file(&out);
    ok
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn memory(opts: &Opts) {
    let n = opts.memory_jobs;
    let probe = if !opts.poll_rss && gnu_time_works() {
        RssProbe::GnuTime
    } else {
        RssProbe::Poll
    };
    let rss_file = std::env::temp_dir().join(format!("bakapara-versus-rss-{}", std::process::id()));
    let p = MEMORY_PARALLEL.to_string();
    let mut cmd = match probe {
        RssProbe::GnuTime => {
            let mut c = Command::new("/usr/bin/time");
            c.args(["-f", "%M", "-o"]).arg(&rss_file).arg(bakapara());
            c
        }
        RssProbe::Poll => Command::new(bakapara()),
    };
    let start = Instant::now();
    let mut child = cmd
        .args(["-j", &p, "true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning bakapara for the memory case");
    let feeder = feed(&mut child, seq_input(n));
    // Check the output as it streams (100,000 lines would be ~40 MB to hold).
    let stdout: ChildStdout = child.stdout.take().expect("stdout piped");
    let reader = thread::spawn(move || count_ok_results(stdout));

    let mut polled_kb = 0;
    if let RssProbe::Poll = probe {
        while let Some(kb) = vm_hwm_kb(child.id()) {
            polled_kb = kb;
            if reader.is_finished() {
                break;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
    let status = child.wait().expect("waiting for bakapara");
    let elapsed = start.elapsed();
    feeder.join().expect("feeder thread");
    let lines = reader.join().expect("result reader");
    check_exit("bakapara (memory case)", status);
    assert_eq!(lines, n, "bakapara wrote {lines} result lines for {n} jobs");

    let (kb, how) = match probe {
        RssProbe::GnuTime => {
            let text = fs::read_to_string(&rss_file).expect("reading /usr/bin/time's output");
            let _ = fs::remove_file(&rss_file);
            let kb = text
                .lines()
                .last()
                .and_then(|l| l.trim().parse::<u64>().ok())
                .unwrap_or_else(|| panic!("unexpected /usr/bin/time output: {text:?}"));
            (kb, "max RSS from /usr/bin/time -f %M")
        }
        RssProbe::Poll => (polled_kb, "last VmHWM polled from /proc"),
    };
    let mb = kb as f64 / 1024.0;
    println!();
    println!(
        "memory: {n} jobs at -j {MEMORY_PARALLEL} in {:.1}s ({:.0} jobs/s), all ok",
        elapsed.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64()
    );
    println!(
        "bakapara peak RSS = {mb:.1} MB ({how}) (target < {MEMORY_TARGET_MB:.0} MB){}",
        if mb < MEMORY_TARGET_MB {
            ""
        } else {
            "  MISSED"
        }
    );
}

fn main() {
    let opts = parse_args();
    let start = Instant::now();
    if opts.local {
        timing(&opts);
    }
    if opts.ssh {
        if opts.local {
            println!();
        }
        ssh_timing(&opts);
    }
    if opts.agent {
        if opts.local || opts.ssh {
            println!();
        }
        agent_timing(&opts);
    }
    if opts.memory {
        memory(&opts);
    } else {
        println!(
            "(peak RSS on {} jobs: add `-- --memory` or `-- --all`)",
            opts.memory_jobs
        );
    }
    println!("(bench took {:.0}s)", start.elapsed().as_secs_f64());
}
