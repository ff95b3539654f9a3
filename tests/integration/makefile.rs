//! bakapara in a Makefile (SPEC §5, §6): a failed job's log line with the tail of its stderr,
//! `-q` showing failures only, and make's own view (exit status, output) under real GNU make.

use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use crate::common::bin::*;

/// The directory of the bakapara binary, for a Makefile's PATH.
fn bin_dir() -> String {
    let exe = Path::new(env!("CARGO_BIN_EXE_bakapara"));
    exe.parent()
        .expect("the binary's directory")
        .display()
        .to_string()
}

/// Runs GNU make in `dir` with `args`; returns (exit code, stdout and stderr together).
fn make(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let path = format!(
        "{}:{}",
        bin_dir(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("make")
        .args(args)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        .stdin(Stdio::null())
        .output()
        .expect("GNU make runs (apt-get install make)");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// A job script: prints what it builds, and for `b` fails with 12 lines on stderr.
const JOB_SH: &str = r#"echo "building $1"
if [ "$1" = b ]; then
  for i in $(seq 1 11); do echo "b.c:$i: warning: noise $i" >&2; done
  echo "b.c:12: error: expected ';' before '}'" >&2
  exit 2
fi
echo "$1 is fine" >&2
"#;

#[test]
fn a_failed_job_in_a_makefile_shows_its_name_and_stderr_tail_and_fails_make() {
    let dir = tempdir();
    std::fs::write(dir.path().join("job.sh"), JOB_SH).unwrap();
    std::fs::write(
        dir.path().join("Makefile"),
        "all:\n\tbakapara -j 2 'bash job.sh <>' ::: a b c d > results.jsonl\n\
         quiet:\n\tbakapara -q -j 2 'bash job.sh <>' ::: a b c d > results.jsonl\n",
    )
    .unwrap();
    for target in ["all", "quiet"] {
        let (code, text) = make(dir.path(), &[target]);
        assert_eq!(code, Some(2), "make fails: {text}");
        assert!(
            text.contains("Error 1"),
            "make names the failed recipe: {text}"
        );
        let lines: Vec<&str> = text.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.contains("returned 2 in") && l.ends_with(": bash job.sh b"))
            .unwrap_or_else(|| panic!("the failed job's line: {text}"));
        assert_eq!(
            &lines[at + 1..at + 12],
            [
                "    … (2 lines before)",
                "    b.c:3: warning: noise 3",
                "    b.c:4: warning: noise 4",
                "    b.c:5: warning: noise 5",
                "    b.c:6: warning: noise 6",
                "    b.c:7: warning: noise 7",
                "    b.c:8: warning: noise 8",
                "    b.c:9: warning: noise 9",
                "    b.c:10: warning: noise 10",
                "    b.c:11: warning: noise 11",
                "    b.c:12: error: expected ';' before '}'",
            ],
            "{text}"
        );
        assert!(
            !text.contains("is fine"),
            "jobs that succeeded show no stderr: {text}"
        );
        if target == "quiet" {
            assert!(
                !text.contains("returned 0"),
                "-q shows the failure only: {text}"
            );
        }
        let results = std::fs::read(dir.path().join("results.jsonl")).unwrap();
        assert_eq!(parse_lines(&results).len(), 4, "one result line per job");
    }
}

#[test]
fn a_failed_job_whose_stderr_went_to_a_file_gets_just_its_line() {
    let dir = tempdir();
    std::fs::write(dir.path().join("job.sh"), JOB_SH).unwrap();
    let out = Live::spawn(
        &["-q", "--err", "<>.err", "bash job.sh <>", ":::", "a", "b"],
        Vec::new(),
        dir.path(),
    )
    .finish();
    assert_eq!(out.code, Some(1));
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", out.stderr);
    assert!(lines[0].contains("returned 2 in"), "{}", out.stderr);
    let saved = std::fs::read_to_string(dir.path().join("b.err")).unwrap();
    assert!(saved.contains("b.c:12: error"), "{saved}");
}

#[test]
fn quiet_shows_jobs_that_returned_a_code_and_errors_but_not_successes() {
    let dir = tempdir();
    let jobs = b"echo ok >&2\nexit 3\n{\"cmd\": 5}\n".to_vec();
    let out = Live::spawn(&["-q"], jobs, dir.path()).finish();
    assert_eq!(out.code, Some(2));
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("returned 3 in"),
        "the job that returned 3: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("error: job 3 did not run"),
        "the bad job line: {}",
        out.stderr
    );
}

#[test]
fn quiet_ctrl_c_says_once_how_many_jobs_were_aborted() {
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let input: String = (1..=20).map(|i| format!("{i}\n")).collect();
    let template = format!(": <>; sleep 100{m}");
    let live = Live::spawn(
        &["-q", "-j", "2", &template],
        input.into_bytes(),
        dir.path(),
    );
    wait_until("two jobs running", || sleepers(&m).len() >= 2);
    live.signal(Signal::SIGINT);
    let out = live.finish();
    assert_eq!(out.signal, Some(Signal::SIGINT as i32), "{}", out.stderr);
    assert_eq!(out.lines.len(), 20, "every job read has its line");
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not one per job: {}", out.stderr);
    assert!(
        lines[0].ends_with(
            "aborted 20 jobs (2 stopped, 18 not started): bakapara was stopped by SIGINT"
        ),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------
// make's jobserver
// ---------------------------------------------------------------------------------------

/// A job that records when it ran (`start end`, seconds) in `stamps/NAME`.
const STAMP_SH: &str = r#"s=$(date +%s.%N); sleep 0.5; e=$(date +%s.%N); echo "$s $e" > "stamps/$1"
"#;

/// The most jobs that ran at once, from the stamps of `dir/stamps`; and how many jobs ran.
/// A stamp is taken inside the job, so the measured overlap is never more than the real one.
fn most_at_once(dir: &Path) -> (usize, usize) {
    let mut events = Vec::new();
    let mut jobs = 0;
    for entry in std::fs::read_dir(dir.join("stamps")).expect("the stamps") {
        let text = std::fs::read_to_string(entry.expect("a stamp").path()).expect("a stamp");
        let times: Vec<f64> = text
            .split_whitespace()
            .map(|t| t.parse().expect("a time"))
            .collect();
        assert_eq!(times.len(), 2, "{text}");
        // At equal times an end comes first: that job no longer holds its token.
        events.push((times[0], 1i32));
        events.push((times[1], -1i32));
        jobs += 1;
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, change) in events {
        now += change;
        most = most.max(now);
    }
    (usize::try_from(most).expect("not negative"), jobs)
}

fn stamp_dir() -> tempfile::TempDir {
    let dir = tempdir();
    std::fs::write(dir.path().join("stamp.sh"), STAMP_SH).unwrap();
    std::fs::create_dir(dir.path().join("stamps")).unwrap();
    dir
}

#[test]
fn make_j2_bounds_the_jobs_of_two_plus_recipes_together() {
    let dir = stamp_dir();
    std::fs::write(
        dir.path().join("Makefile"),
        "all: one two\n\
         one:\n\t+bakapara -j 4 'bash stamp.sh one<>' ::: a b c d > one.jsonl\n\
         two:\n\t+bakapara -j 4 'bash stamp.sh two<>' ::: a b c d > two.jsonl\n",
    )
    .unwrap();
    let (code, text) = make(dir.path(), &["-j2"]);
    assert_eq!(code, Some(0), "{text}");
    let (most, jobs) = most_at_once(dir.path());
    assert_eq!(jobs, 8, "{text}");
    assert!(
        most <= 2,
        "make -j2 allows 2 jobs at once; {most} ran: {text}"
    );
    for name in ["one", "two"] {
        let results = std::fs::read(dir.path().join(format!("{name}.jsonl"))).unwrap();
        let lines = parse_lines(&results);
        assert_eq!(lines.len(), 4);
        assert!(lines.iter().all(|l| l["result"]["code"] == 0), "{lines:?}");
    }
    assert!(
        !text.contains("jobserver"),
        "no complaint about the jobserver, by make or bakapara: {text}"
    );
}

#[test]
fn without_plus_a_recipe_runs_on_its_own_slots_and_says_why() {
    let dir = tempdir();
    // Each job waits until all four run at once: they pass only if nothing limits them to 2.
    std::fs::write(
        dir.path().join("Makefile"),
        "all:\n\tbakapara -j 4 'touch s<>; for i in $$(seq 6000); do \
         [ $$(ls s* | wc -l) -ge 4 ] && exit 0; sleep 0.01; done; exit 1' \
         ::: a b c d > out.jsonl\n",
    )
    .unwrap();
    let (code, text) = make(dir.path(), &["-j2"]);
    assert_eq!(code, Some(0), "four jobs ran at once: {text}");
    assert!(
        text.contains("mark the recipe with `+`"),
        "bakapara says why it does not share make's -j: {text}"
    );
}

/// A make 4.4 style jobserver: a FIFO holding `tokens` tokens, opened by the test (as make
/// holds it open), and the MAKEFLAGS that names it.
fn fifo_jobserver(dir: &Path, tokens: usize) -> (std::fs::File, String) {
    use std::io::Write;
    let path = dir.join("jobserver.fifo");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    // Read and write: opening a FIFO so never blocks (Linux), and keeps it alive.
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open the FIFO");
    fifo.write_all(&vec![b'+'; tokens]).expect("tokens in");
    let flags = format!(" -j{} --jobserver-auth=fifo:{}", tokens + 1, path.display());
    (fifo, flags)
}

/// How many tokens wait in the FIFO now.
fn tokens_in(fifo: &std::fs::File) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which points to `n`.
    let rc = unsafe { nix::libc::ioctl(fifo.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0, "FIONREAD on the FIFO");
    usize::try_from(n).expect("FIONREAD gives a count")
}

#[test]
fn a_fifo_jobserver_bounds_the_jobs_and_gets_its_tokens_back() {
    let dir = stamp_dir();
    let (fifo, flags) = fifo_jobserver(dir.path(), 1);
    let out = Live::spawn_with(
        bakapara()
            .args(["-j", "4", "bash stamp.sh <>", ":::", "a", "b", "c", "d"])
            .current_dir(dir.path())
            .env("MAKEFLAGS", flags)
            .env_remove("CARGO_MAKEFLAGS"),
        Vec::new(),
    )
    .finish();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let (most, jobs) = most_at_once(dir.path());
    assert_eq!(jobs, 4);
    assert!(
        most <= 2,
        "one token and bakapara's own: {most} ran at once"
    );
    assert_eq!(tokens_in(&fifo), 1, "the token is back in the FIFO");
}

#[test]
fn jobs_waiting_for_a_token_are_aborted_by_ctrl_c() {
    let dir = tempdir();
    let m = marker();
    let _reaper = Reaper(m.clone());
    let (fifo, flags) = fifo_jobserver(dir.path(), 0);
    let template = format!(": <>; sleep 100{m}");
    let live = Live::spawn_with(
        bakapara()
            .args(["-j", "4", &template, ":::", "1", "2", "3", "4"])
            .current_dir(dir.path())
            .env("MAKEFLAGS", flags)
            .env_remove("CARGO_MAKEFLAGS"),
        Vec::new(),
    );
    wait_until("the first job runs", || !sleepers(&m).is_empty());
    live.signal(Signal::SIGINT);
    let out = live.finish();
    assert_eq!(out.signal, Some(Signal::SIGINT as i32), "{}", out.stderr);
    assert_eq!(out.lines.len(), 4, "{}", out.stderr);
    let not_started = out
        .lines
        .iter()
        .filter(|l| l["result"]["status"] == "aborted" && l["result"]["started"].is_null())
        .count();
    assert_eq!(
        not_started, 3,
        "only one job ran without a token: {:?}",
        out.lines
    );
    assert_eq!(tokens_in(&fifo), 0);
}
