//! Transfer throughput: 100 files of 1 MB copied to one loopback sshd host by bakapara's
//! `--transferfile` and by `scp` over an open `ControlMaster` connection. Run: `cargo bench
//! --bench transfer` (or `-- --files 100 --size-mb 1 --slots 4 --rounds 5`).
//!
//! A plain `main()` benchmark (no criterion), one warm-up round, then `--rounds` rounds of:
//! - `bakapara`: `bakapara -S h1/SLOTS --workdir xfer --transferfile <> true` fed the file
//!   names: each job copies its file over the host's master connection, then runs `true`.
//! - `bakapara-0`: the same jobs without `--transferfile` (connection, sessions and `true`):
//!   subtracted from `bakapara`, what the copies themselves cost.
//! - `scp-1`: one `scp -O` of all files on the open master (`-o ControlPath`): the best case
//!   of scp, one session for everything. `-O`: the classic scp protocol, since the test sshd
//!   has no SFTP subsystem.
//! - `scp-N`: one `scp` per file, SLOTS at a time (`xargs -P`), on the same master: what a
//!   job runner that called scp per job would pay.
//!
//! Each case gets a fresh remote directory; afterwards (untimed) every copy is checked byte
//! for byte. Throughput is total MB / median wall time.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/integration/common/sshd.rs"]
mod sshd;

const BAKAPARA: &str = env!("CARGO_BIN_EXE_bakapara");

struct Opts {
    files: usize,
    size_mb: usize,
    slots: usize,
    rounds: usize,
}

fn parse_args() -> Opts {
    let mut opts = Opts {
        files: 100,
        size_mb: 1,
        slots: 4,
        rounds: 5,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{arg} needs a number"))
        };
        match arg.as_str() {
            "--files" => opts.files = value(),
            "--size-mb" => opts.size_mb = value(),
            "--slots" => opts.slots = value(),
            "--rounds" => opts.rounds = value(),
            "--bench" => {}
            other => panic!("unknown option {other}"),
        }
    }
    opts
}

fn check(what: &str, status: std::process::ExitStatus) {
    assert!(status.success(), "{what} failed: {status}");
}

/// Writes the files: pseudo-random bytes, so that no layer can compress them away.
fn make_files(dir: &Path, opts: &Opts) -> Vec<String> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut names = Vec::new();
    for i in 0..opts.files {
        let mut bytes = vec![0u8; opts.size_mb << 20];
        for chunk in bytes.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let name = format!("f{i:03}.bin");
        std::fs::write(dir.join(&name), bytes).expect("write a file");
        names.push(name);
    }
    names
}

fn same_files(local: &Path, remote: &Path, names: &[String]) -> bool {
    names
        .iter()
        .all(|n| std::fs::read(local.join(n)).ok() == std::fs::read(remote.join(n)).ok())
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn main() {
    type Case<'a> = (&'a str, Box<dyn FnMut(&str, &Path) + 'a>);
    use std::io::Write;
    let opts = parse_args();
    let cluster = sshd::SshCluster::start(&["h1"]);
    let host = cluster.host("h1");
    let home = host.dir().join("home");
    let config = cluster.ssh_config_path().to_path_buf();
    let local = tempfile::tempdir().expect("temp dir");
    let names = make_files(local.path(), &opts);
    let input = names.join("\n") + "\n";
    let control = local.path().join("master.sock");
    let mut master = Command::new("ssh")
        .arg("-F")
        .arg(&config)
        .args(["-M", "-N", "-o"])
        .arg(format!("ControlPath={}", control.display()))
        .arg("h1")
        .stdin(Stdio::null())
        .spawn()
        .expect("ssh master");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !control.exists() {
        assert!(Instant::now() < deadline, "the ssh master did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let total_mb = (opts.files * opts.size_mb) as f64;
    println!(
        "transfer: {} files x {} MB to one loopback sshd host, {} slots, {} rounds + 1 warm-up",
        opts.files, opts.size_mb, opts.slots, opts.rounds
    );
    let mut round_dir = 0usize;
    let mut fresh = |home: &Path| -> (String, PathBuf) {
        round_dir += 1;
        let name = format!("xfer{round_dir}");
        (name.clone(), home.join(name))
    };
    // Each case gets the directory's name relative to the sessions' HOME (bakapara's
    // --workdir) and its absolute path (for scp, whose relative paths start at sshd's cwd).
    let slots = opts.slots.to_string();
    let cases: Vec<Case> = vec![
        (
            "bakapara",
            Box::new(|workdir: &str, _: &Path| {
                let mut child = Command::new(BAKAPARA)
                    .arg("--ssh-config")
                    .arg(&config)
                    .args(["-q", "-S", &format!("h1/{slots}"), "--workdir", workdir])
                    .args(["--transferfile", "<>", "true"])
                    .current_dir(local.path())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("bakapara");
                let mut stdin = child.stdin.take().expect("stdin");
                stdin.write_all(input.as_bytes()).expect("feed bakapara");
                drop(stdin);
                check("bakapara", child.wait().expect("wait"));
            }),
        ),
        (
            "bakapara-0",
            Box::new(|workdir: &str, _: &Path| {
                let mut child = Command::new(BAKAPARA)
                    .arg("--ssh-config")
                    .arg(&config)
                    .args(["-q", "-S", &format!("h1/{slots}"), "--workdir", workdir])
                    .args(["true"])
                    .current_dir(local.path())
                    .stdin(Stdio::piped())
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("bakapara");
                let mut stdin = child.stdin.take().expect("stdin");
                stdin.write_all(input.as_bytes()).expect("feed bakapara");
                drop(stdin);
                check("bakapara", child.wait().expect("wait"));
            }),
        ),
        (
            "scp-1",
            Box::new(|_: &str, remote: &Path| {
                let workdir = remote.display();
                let mkdir = Command::new("ssh")
                    .arg("-F")
                    .arg(&config)
                    .arg("-o")
                    .arg(format!("ControlPath={}", control.display()))
                    .args(["h1", "mkdir", "-p", &workdir.to_string()])
                    .status()
                    .expect("ssh mkdir");
                check("ssh mkdir", mkdir);
                let status = Command::new("scp")
                    .args(["-q", "-O"])
                    .arg("-F")
                    .arg(&config)
                    .arg("-o")
                    .arg(format!("ControlPath={}", control.display()))
                    .args(&names)
                    .arg(format!("h1:{workdir}/"))
                    .current_dir(local.path())
                    .status()
                    .expect("scp");
                check("scp", status);
            }),
        ),
        (
            "scp-N",
            Box::new(|_: &str, remote: &Path| {
                let workdir = remote.display();
                let mkdir = Command::new("ssh")
                    .arg("-F")
                    .arg(&config)
                    .arg("-o")
                    .arg(format!("ControlPath={}", control.display()))
                    .args(["h1", "mkdir", "-p", &workdir.to_string()])
                    .status()
                    .expect("ssh mkdir");
                check("ssh mkdir", mkdir);
                let script = format!(
                    "exec scp -q -O -F '{}' -o 'ControlPath={}' \"$1\" 'h1:{workdir}/'",
                    config.display(),
                    control.display()
                );
                let mut child = Command::new("xargs")
                    .args(["-P", &slots, "-n", "1", "bash", "-c", &script, "scp"])
                    .current_dir(local.path())
                    .stdin(Stdio::piped())
                    .spawn()
                    .expect("xargs scp");
                let mut stdin = child.stdin.take().expect("stdin");
                stdin.write_all(input.as_bytes()).expect("feed xargs");
                drop(stdin);
                check("xargs scp", child.wait().expect("wait"));
            }),
        ),
    ];
    let mut cases = cases;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for round in 0..=opts.rounds {
        for (i, (name, run)) in cases.iter_mut().enumerate() {
            let (workdir, remote) = fresh(&home);
            let start = Instant::now();
            run(&workdir, &remote);
            let took = start.elapsed();
            if *name != "bakapara-0" {
                assert!(
                    same_files(local.path(), &remote, &names),
                    "{name}: the copies differ"
                );
            }
            let _ = std::fs::remove_dir_all(&remote);
            if round > 0 {
                times[i].push(took);
            }
        }
    }
    println!("{:<12} {:>10} {:>12}", "case", "median s", "MB/s");
    let mut medians = Vec::new();
    for ((name, _), t) in cases.iter().zip(times) {
        let m = median(t).as_secs_f64();
        medians.push(m);
        let rate = if *name == "bakapara-0" {
            String::from("-")
        } else {
            format!("{:.1}", total_mb / m)
        };
        println!("{name:<12} {m:>10.3} {rate:>12}");
    }
    let copies = medians[0] - medians[1];
    if copies > 0.0 {
        println!(
            "bakapara copies alone (bakapara - bakapara-0): {copies:.3} s, {:.1} MB/s",
            total_mb / copies
        );
    }
    let _ = master.kill();
    let _ = master.wait();
}
