//! bakapara in a Makefile (SPEC §5, §6): a failed job's log line with the tail of its stderr,
//! `-q` showing failures only, and make's own view (exit status, output) under real GNU make.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::Signal;

use common::bin::*;

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("a temp dir")
}

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
    wait_until("two jobs running", || {
        pids_with(&format!("sleep 100{m}")).len() >= 2
    });
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
