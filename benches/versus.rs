//! Measures bakapara against the spawn floor, `xargs -P` and GNU Parallel on N trivial jobs,
//! and bakapara's peak RSS on a long run. Run: `cargo bench --bench versus`, or e.g.
//! `cargo bench --bench versus -- --jobs 2000 --parallel 2 --rounds 7`; the memory case with
//! `cargo bench --bench versus -- --memory` (or `--all` for both, `--memory-jobs` to resize).
//!
//! A plain `main()` benchmark (no criterion): every round runs each tool once, in a rotating
//! order, so that whatever noise the machine has in a given second hits every tool alike. The
//! first round is a warm-up and is not counted. Per tool it prints the median and the min/max
//! wall time over the rounds and the ratio of medians to `xargs` and to the floor.
//!
//! Cases (all run `N` jobs at parallelism `P`):
//! - `floor`: `/bin/bash -o pipefail -c true` spawned N times by P threads doing
//!   `std::process::Command` spawn + wait: what any job runner built on bash must pay.
//! - `xargs`: `xargs -P P -n 1 bash -o pipefail -c` fed N lines `true`, stdout to /dev/null.
//! - `bakapara`: `bakapara -j P true` fed `seq N`, stdout read through a pipe; afterwards (out
//!   of the timed region) the bench checks that there are exactly N result lines, each valid
//!   JSON with `result.status == "ok"`.
//! - `parallel`: GNU Parallel `parallel --will-cite -j P true` fed `seq N`, when installed.
//!
//! The memory case (`--memory`, or `--all` to run it after the timing): bakapara on
//! `--memory-jobs` (default 100,000) `true` jobs at `-j 2`, reporting its peak RSS (target
//! < 30 MB). It is a separate mode because it is not cheap: bakapara does ~1,000 `true` jobs/s
//! on 2 cores, so 100,000 jobs take longer (~100 s) than the whole timing part (~80 s).
//!
//! Extension point: every contender is a [`Case`] built by a function in [`cases`]; see there
//! for the SSH comparison still to be written.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test; cargo sets this for benches (`target/release/bakapara` under
/// `cargo bench`).
const BAKAPARA: &str = env!("CARGO_BIN_EXE_bakapara");

/// The memory case runs at this parallelism whatever `--parallel` says, so that its figure is
/// comparable with the target, which is stated for `-j 2`.
const MEMORY_PARALLEL: usize = 2;
const MEMORY_TARGET_MB: f64 = 30.0;
const XARGS_TARGET: f64 = 1.10;

const USAGE: &str = "\
usage: cargo bench --bench versus [-- OPTIONS]
  --jobs N          jobs per run (default 2000)
  --parallel P      parallelism of every tool (default 2)
  --rounds R        counted rounds (default 5), after 1 warm-up round
  --memory          run only the memory case (~100 s on 2 cores)
  --all             run the timing, then the memory case
  --memory-jobs M   jobs in the memory case (default 100000)
  --poll-rss        measure the peak RSS by polling /proc even if /usr/bin/time works";

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Timing,
    Memory,
    All,
}

struct Opts {
    jobs: usize,
    parallel: usize,
    rounds: usize,
    mode: Mode,
    memory_jobs: usize,
    poll_rss: bool,
}

fn parse_args() -> Opts {
    let mut opts = Opts {
        jobs: 2000,
        parallel: 2,
        rounds: 5,
        mode: Mode::Timing,
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
            "--memory-jobs" => opts.memory_jobs = number("--memory-jobs"),
            "--memory" => opts.mode = Mode::Memory,
            "--all" => opts.mode = Mode::All,
            "--poll-rss" => opts.poll_rss = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => die(&format!("unknown argument {other:?}")),
        }
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
    /// Short name for the table; `xargs` and `floor` are the baselines of the ratio columns.
    name: &'static str,
    /// The command line, as a user would type it, for the header.
    shown: String,
    run: Box<dyn FnMut() -> Duration>,
}

/// The contenders, in their order in the table, plus notes on the ones that cannot run here.
///
/// To add the SSH comparison ("N trivial jobs over loopback ssh hosts through bakapara -S,
/// beside xargs -P driving ssh on a ControlMaster connection, and GNU Parallel -S"): write
/// `fn ssh_cases(opts: &Opts, notes: &mut Vec<String>) -> Vec<Case>` that sets up the loopback
/// hosts once (an sshd on 127.0.0.1 with a throwaway key, see tests/sshd_harness.rs, and a
/// `ssh -o ControlMaster=yes -o ControlPersist=...` master whose guard the xargs closure
/// owns), returns the three cases plus an `ssh floor` (P threads running
/// `ssh -S ctl host true`), and pushes a note instead when sshd is missing. Gate it behind an
/// `--ssh` flag and chain it here; the round loop, statistics and table need no change, apart
/// from the ratio columns, which should then compare against the SSH floor / SSH xargs.
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
/// with std's `Command` (posix_spawn/vfork on Linux) and waiting for it. No pipes, no
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
    Command::new(BAKAPARA)
        .args(["-j", &p.to_string(), "true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {BAKAPARA}: {e}"))
}

/// Count bakapara's result lines, asserting that each is a JSON object whose `result.status`
/// is `"ok"` with exit code 0.
fn count_ok_results(out: impl Read) -> usize {
    let mut count = 0;
    for line in BufReader::new(out).lines() {
        let line = line.expect("bakapara's output is UTF-8 text");
        let value: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("result line is not JSON ({e}): {line}"));
        let result = &value["result"];
        assert!(
            result["status"] == "ok" && result["code"] == 0,
            "job did not succeed: {line}"
        );
        count += 1;
    }
    count
}

/// GNU Parallel, when it is on PATH. `--will-cite` silences the citation notice. Parallel
/// appends the argument too (`true 7`) and starts each job through the shell it detects
/// (`bash -c`, like the others, on a machine whose login shell is bash).
fn gnu_parallel_case(opts: &Opts) -> Option<Case> {
    let installed = Command::new("parallel")
        .args(["--will-cite", "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
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

fn timing(opts: &Opts) {
    let mut notes = Vec::new();
    let mut cases = cases(opts, &mut notes);
    println!(
        "versus: {} jobs, -P {}, {} rounds + 1 warm-up, {} CPUs; bakapara = {BAKAPARA}",
        opts.jobs,
        opts.parallel,
        opts.rounds,
        thread::available_parallelism().map_or(0, |n| n.get()),
    );
    for case in &cases {
        println!("  {:<9} {}", case.name, case.shown);
    }
    for note in &notes {
        println!("  {note}");
    }

    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for round in 0..=opts.rounds {
        let label = if round == 0 {
            "warm-up".to_string()
        } else {
            format!("round {round}/{}", opts.rounds)
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

    let stats: Vec<(Duration, Duration, Duration)> = times
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.sort();
            (median(&t), t[0], t[t.len() - 1])
        })
        .collect();
    let index = |name: &str| cases.iter().position(|c| c.name == name);
    let median_of = |name: &str| index(name).map(|i| stats[i].0.as_secs_f64());
    let xargs = median_of("xargs");
    let floor = median_of("floor");
    let ratio = |base: Option<f64>, m: f64| base.map_or("-".into(), |b| format!("{:.2}x", m / b));

    println!();
    println!(
        "{:<10} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "tool", "median", "min", "max", "us/job", "/xargs", "/floor"
    );
    for (case, &(med, min, max)) in cases.iter().zip(&stats) {
        let m = med.as_secs_f64();
        println!(
            "{:<10} {:>8.3}s {:>8.3}s {:>8.3}s {:>9.0} {:>8} {:>8}",
            case.name,
            m,
            min.as_secs_f64(),
            max.as_secs_f64(),
            m * 1e6 / opts.jobs as f64,
            ratio(xargs, m),
            ratio(floor, m),
        );
    }
    for note in &notes {
        println!("{note}");
    }
    if let (Some(b), Some(x)) = (median_of("bakapara"), xargs) {
        let r = b / x;
        println!(
            "bakapara/xargs = {r:.2}x (target <= {XARGS_TARGET:.2}x){}",
            if r <= XARGS_TARGET { "" } else { "  MISSED" }
        );
    }
    // Two noise-robust views of the same ratio, for a busy machine: the ratio of the best
    // runs (noise only ever adds time), and the median over rounds of the per-round ratio
    // (the two runs of a round are seconds apart, so they share most of the noise).
    if let (Some(b), Some(x)) = (index("bakapara"), index("xargs")) {
        let mut paired: Vec<f64> = times[b]
            .iter()
            .zip(&times[x])
            .map(|(b, x)| b.as_secs_f64() / x.as_secs_f64())
            .collect();
        paired.sort_by(f64::total_cmp);
        let mid = paired.len() / 2;
        let paired = if paired.len() % 2 == 1 {
            paired[mid]
        } else {
            (paired[mid - 1] + paired[mid]) / 2.0
        };
        println!(
            "  (ratio of mins {:.2}x, median of per-round ratios {paired:.2}x)",
            stats[b].1.as_secs_f64() / stats[x].1.as_secs_f64()
        );
    }
}

/// How the peak RSS was measured.
enum RssProbe {
    /// GNU time's `%M`: ru_maxrss from wait4(), kept by the kernel, so exact. It is the max
    /// over bakapara and the children it reaped, but those are `bash -c true` (a few MB), far
    /// below the figure that matters.
    GnuTime,
    /// Polling `/proc/PID/status` every few ms and keeping the last `VmHWM` read. VmHWM is the
    /// high-water mark, so it only grows: the last value read is the peak except for any
    /// growth in the final interval. We do not reap the child until polling stops, so its
    /// pid cannot be reused meanwhile; once it exits, the zombie's status has no VmHWM line
    /// and polling ends. (Reading VmHWM once "just before it exits" is racy: there is no
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
            c.args(["-f", "%M", "-o"]).arg(&rss_file).arg(BAKAPARA);
            c
        }
        RssProbe::Poll => Command::new(BAKAPARA),
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
    if opts.mode != Mode::Memory {
        timing(&opts);
    }
    if opts.mode != Mode::Timing {
        memory(&opts);
    } else {
        println!(
            "(peak RSS on {} jobs: add `-- --memory` or `-- --all`)",
            opts.memory_jobs
        );
    }
    println!("(bench took {:.0}s)", start.elapsed().as_secs_f64());
}
