//! GNU Parallel's battery for other tools (`parallel_alternatives`(7), the tests MIX,
//! STDERRMERGE, RAM, CLEANUP, SPCCHAR, COMPOSED, ONEREP, INPUTSIZE and NUMWORDS), adapted to
//! bakapara's JSON result lines. The real binary runs real /bin/bash jobs.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::bin::*;

/// Processes whose command line starts with `prefix` (argv joined by spaces) and holds
/// `marker`.
fn procs(prefix: &str, marker: &str) -> Vec<u32> {
    pids_with(marker)
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c: Vec<u8> = c.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
                c.starts_with(prefix.as_bytes())
            })
        })
        .collect()
}

fn by_seq(mut lines: Vec<Value>) -> Vec<Value> {
    lines.sort_by_key(|l| l["result"]["seq"].as_u64());
    lines
}

fn run(args: &[&str], stdin: &[u8]) -> Finished {
    let dir = tempfile::tempdir().unwrap();
    Live::spawn_with(
        bakapara().args(args).current_dir(dir.path()),
        stdin.to_vec(),
    )
    .finish()
}

// ---------------------------------------------------------------------------------------
// MIX: output of parallel jobs never mixes.
// ---------------------------------------------------------------------------------------

#[test]
fn mix_outputs_of_30_parallel_jobs_never_mix() {
    // Each job writes 1 MB of a, b, c, d, e and f in turn, alternately to stdout and stderr,
    // each block followed by the job's number: 3 MB a stream.
    let job = "for c in a b c d e f; do \
                 case $c in [ace]) fd=1;; *) fd=2;; esac; \
                 { head -c 1000000 /dev/zero | tr '\\0' $c; echo \" <>\"; } >&$fd; \
               done";
    let args: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
    let mut argv = vec!["-j", "30", "--capture-limit", "4M", job, ":::"];
    argv.extend(args.iter().map(String::as_str));
    let out = run(&argv, b"");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines = by_seq(out.lines);
    assert_eq!(lines.len(), 30);
    let block = |c: char, n: &str| format!("{} {n}\n", c.to_string().repeat(1_000_000));
    for l in &lines {
        let n = l["input"].as_str().unwrap();
        let r = &l["result"];
        let want_out: String = ['a', 'c', 'e'].iter().map(|&c| block(c, n)).collect();
        let want_err: String = ['b', 'd', 'f'].iter().map(|&c| block(c, n)).collect();
        assert!(
            r["stdout"].as_str() == Some(want_out.as_str()),
            "job {n}: stdout is exactly its own bytes"
        );
        assert!(
            r["stderr"].as_str() == Some(want_err.as_str()),
            "job {n}: stderr is exactly its own bytes"
        );
        assert!(r.get("stdout_truncated").is_none() && r.get("stderr_truncated").is_none());
    }
}

// ---------------------------------------------------------------------------------------
// STDERRMERGE: stdout and stderr stay apart, unless the command merges them itself.
// ---------------------------------------------------------------------------------------

#[test]
fn stderrmerge_streams_stay_apart_and_2_to_1_inside_the_command_works() {
    let job = "echo stdout; echo stderr >&2; echo stdout; echo stderr >&2";
    let input = format!(
        "{{\"cmd\":\"{job}\"}}\n{{\"cmd\":\"{{ {job}; }} 2>&1\"}}\n{{\"cmd\":\"({job}) 2>&1 | tr a-z A-Z\"}}\n"
    );
    let out = run(&["-k"], input.as_bytes());
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r: Vec<&Value> = out.lines.iter().map(|l| &l["result"]).collect();
    assert_eq!(r[0]["stdout"], "stdout\nstdout\n");
    assert_eq!(r[0]["stderr"], "stderr\nstderr\n");
    assert_eq!(r[1]["stdout"], "stdout\nstderr\nstdout\nstderr\n");
    assert_eq!(r[1]["stderr"], "");
    assert_eq!(r[2]["stdout"], "STDOUT\nSTDERR\nSTDOUT\nSTDERR\n");
}

// ---------------------------------------------------------------------------------------
// RAM: output bigger than memory is not held in memory.
// ---------------------------------------------------------------------------------------

/// `VmHWM` (peak resident set) of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs `args` and polls bakapara's `VmHWM` until it ends; returns the run and the peak in KiB.
fn run_measuring_peak_rss(cmd: &mut Command) -> (Finished, u64) {
    let mut live = Live::spawn_with(cmd, Vec::new());
    let pid = live.pid().as_raw().unsigned_abs();
    let mut peak = 0;
    let start = Instant::now();
    while live.child.try_wait().expect("wait").is_none() {
        if let Some(kib) = vm_hwm_kib(pid) {
            peak = peak.max(kib);
        }
        assert!(start.elapsed() < RUN_TIMEOUT, "bakapara did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    (live.finish(), peak)
}

/// The peak RSS bakapara may reach while its jobs write gigabytes.
const RSS_LIMIT_KIB: u64 = 60 * 1024;

#[test]
fn ram_jobs_writing_1_gb_each_do_not_grow_bakapara() {
    // `yes` of a 30 000-character line, as GNU's test does; a process substitution keeps
    // yes's SIGPIPE out of the job's status (pipefail).
    let job = ": <>; head -c 1G < <(yes \"$(printf 'c%.0s' {1..30000})\")";
    let (out, peak) =
        run_measuring_peak_rss(bakapara().args(["-j", "4", job, ":::", "1", "2", "3", "4"]));
    eprintln!("RAM: 4 jobs x 1 GiB captured (1M limit): bakapara peak VmHWM {peak} KiB");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.lines.len(), 4);
    let line = format!("{}\n", "c".repeat(30_000));
    for l in &out.lines {
        let r = &l["result"];
        assert_eq!(r["stdout_truncated"], true, "the cut is marked");
        let kept = r["stdout"].as_str().unwrap();
        assert_eq!(kept.len(), 1 << 20, "the first 1 MiB is kept");
        assert!(line.repeat(40).starts_with(kept));
    }
    assert!(
        peak > 0 && peak < RSS_LIMIT_KIB,
        "bakapara's peak RSS {peak} KiB stays under {RSS_LIMIT_KIB} KiB"
    );
}

#[test]
fn ram_jobs_writing_1_gb_each_to_stdout_with_text_do_not_grow_bakapara() {
    // --text prints each job's output whole: 2 GiB go through bakapara to /dev/null.
    let devnull = std::fs::File::create("/dev/null").unwrap();
    let job = ": <>; head -c 1G < <(yes \"$(printf 'c%.0s' {1..30000})\")";
    let dir = tempfile::tempdir().unwrap();
    let mut live_cmd = bakapara();
    live_cmd
        .args(["--text", "-j", "2", job, ":::", "1", "2"])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(devnull)
        .stderr(Stdio::piped());
    let mut child = live_cmd.spawn().unwrap();
    let pid = child.id();
    let mut peak = 0;
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if let Some(kib) = vm_hwm_kib(pid) {
            peak = peak.max(kib);
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            panic!("bakapara --text did not end");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    eprintln!("RAM: --text, 2 jobs x 1 GiB printed: bakapara peak VmHWM {peak} KiB");
    assert_eq!(status.code(), Some(0));
    assert!(
        peak > 0 && peak < RSS_LIMIT_KIB,
        "bakapara's peak RSS {peak} KiB stays under {RSS_LIMIT_KIB} KiB"
    );
}

// ---------------------------------------------------------------------------------------
// CLEANUP: kill -9 of bakapara leaves no temp files; what happens to its jobs.
// ---------------------------------------------------------------------------------------

/// What became of the jobs of a bakapara killed with `kill -9`.
#[derive(Debug)]
struct AfterKill9 {
    /// The job writing to its stdout every 50 ms still runs once the 3 s sleep has ended.
    writer_outlives: bool,
    /// The job sleeping "for ever" still runs once the 3 s sleep has ended.
    sleeper_outlives: bool,
}

/// Runs three jobs, kills bakapara with SIGKILL, checks that TMPDIR (a fresh directory) is
/// left empty, and reports what happened to the jobs (the test's Reaper kills what is left).
fn kill_9_during_jobs(extra: &[&str]) -> AfterKill9 {
    let tmp = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let m = marker();
    let _reaper = Reaper(m.clone());
    // A job that keeps writing, one that sleeps 3 s and one that would sleep for ever.
    let jobs = format!(
        "{{\"cmd\":\"while :; do echo {m}; sleep 0.05; done\"}}\n\
         {{\"cmd\":\"sleep 3.00{m}\"}}\n\
         {{\"cmd\":\"sleep 100{m}\"}}\n"
    );
    let mut cmd = bakapara();
    cmd.args(["-j", "3"])
        .args(extra)
        .env("TMPDIR", tmp.path())
        .current_dir(work.path());
    let mut live = Live::spawn_with(&mut cmd, jobs.into_bytes());
    let writer = || procs("/bin/bash -o pipefail -c while", &m);
    wait_until("the three jobs run", || {
        procs("sleep 3.00", &m).len() == 1
            && procs("sleep 100", &m).len() == 1
            && writer().len() == 1
    });
    live.child.kill().expect("kill -9 bakapara");
    let out = live.finish();
    assert_eq!(out.signal, Some(nix::libc::SIGKILL));
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "files left in TMPDIR: {left:?}");
    // Nothing tells the sleeping jobs: they run to their own end.
    wait_until("the 3 s sleep ends by itself", || {
        procs("sleep 3.00", &m).is_empty()
    });
    let after = AfterKill9 {
        writer_outlives: !writer().is_empty(),
        sleeper_outlives: !procs("sleep 100", &m).is_empty(),
    };
    eprintln!(
        "CLEANUP {extra:?}: after kill -9 of bakapara and the 3 s job's end: the writing job \
         still runs: {}; the job sleeping for ever still runs: {}",
        after.writer_outlives, after.sleeper_outlives
    );
    after
}

#[test]
fn cleanup_kill_9_leaves_no_temp_files_and_writing_jobs_die() {
    let after = kill_9_during_jobs(&[]);
    // Its stdout pipe has no reader any more: the writer dies of SIGPIPE.
    assert!(!after.writer_outlives, "{after:?}");
}

#[test]
fn cleanup_kill_9_with_text_leaves_no_temp_files() {
    // --text spools output to unlinked temp files: nothing is left to see in TMPDIR. (A job
    // writing to its spool file is not stopped by bakapara's death: see the report.)
    kill_9_during_jobs(&["--text"]);
}

// ---------------------------------------------------------------------------------------
// SPCCHAR: special characters reach the command byte for byte.
// ---------------------------------------------------------------------------------------

const SPECIAL: &[&str] = &[
    "My Brother's 12\" *** record  (costs $$$).jpg",
    "$(touch pwned)",
    "`touch pwned`",
    "a;touch pwned",
    "a|b&c>d<e",
    "-n",
    "-e \\n",
    "*",
    "~",
    "~root",
    "{a,b}",
    "!!",
    "#not a comment",
    "  leading and trailing  ",
    "tab\there",
    "back\\slash\\",
    "'single' \"double\"",
    "$HOME ${HOME} $1 $@",
    "ünïcödé ☃ 日本",
    "\u{1}\u{7f}\u{1b}[31m",
    "%s %d %%",
    "<>",
    "<1>",
    "<#>",
    "=",
    "a=b",
    "",
];

#[test]
fn spcchar_special_characters_reach_the_command_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["-k", "printf %s <>", ":::"];
    args.extend(SPECIAL.iter().copied());
    args.push("two\nlines");
    let out = Live::spawn_with(bakapara().args(&args).current_dir(dir.path()), Vec::new()).finish();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.lines.len(), SPECIAL.len() + 1);
    for (l, want) in out
        .lines
        .iter()
        .zip(SPECIAL.iter().copied().chain(["two\nlines"]))
    {
        assert_eq!(l["input"], want);
        assert_eq!(l["result"]["stdout"], want, "{l}");
    }
    // The same as stdin lines.
    let input: String = SPECIAL.iter().map(|s| format!("{s}\n")).collect();
    let out = Live::spawn_with(
        bakapara()
            .args(["-k", "printf %s <>"])
            .current_dir(dir.path()),
        input.into_bytes(),
    )
    .finish();
    assert_eq!(out.lines.len(), SPECIAL.len());
    for (l, want) in out.lines.iter().zip(SPECIAL) {
        assert_eq!(l["result"]["stdout"], *want, "{l}");
    }
    assert!(!dir.path().join("pwned").exists(), "no argument ran code");
}

#[test]
fn spcchar_a_file_with_a_special_name_is_found() {
    // GNU's own: touch the file, list it through the tool.
    let dir = tempfile::tempdir().unwrap();
    let name = SPECIAL[0];
    std::fs::write(dir.path().join(name), "x").unwrap();
    let out = Live::spawn_with(
        bakapara().args(["ls -l"]).current_dir(dir.path()),
        format!("{name}\n").into_bytes(),
    )
    .finish();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let r = &out.lines[0]["result"];
    assert!(r["stdout"].as_str().unwrap().contains(name), "{r}");
}

// ---------------------------------------------------------------------------------------
// COMPOSED: composed commands work without `bash -c`.
// ---------------------------------------------------------------------------------------

#[test]
fn composed_commands_work_in_templates() {
    let cases: &[(&str, &str, i64)] = &[
        ("echo foo; echo <>", "foo\nbar\n", 0),
        ("true && echo <>", "bar\n", 0),
        ("false || echo <>", "bar\n", 0),
        ("false && echo <>", "", 1),
        ("echo <> | tr a-z A-Z", "BAR\n", 0),
        ("echo <> | rev | tr a-z A-Z", "RAB\n", 0),
        ("(cd / && pwd; echo <>)", "/\nbar\n", 0),
        ("{ echo a; echo <>; } | wc -l", "2\n", 0),
        ("for i in 1 2; do echo <>$i; done", "bar1\nbar2\n", 0),
        (
            "if [ <> = bar ]; then echo yes; else echo no; fi",
            "yes\n",
            0,
        ),
        ("x=$(echo <>); echo ${#x}", "3\n", 0),
        ("f() { echo \"[$1]\"; }; f <>", "[bar]\n", 0),
        ("cat <<< <>", "bar\n", 0),
        ("echo <> > f && cat < f", "bar\n", 0),
        // -o pipefail: a failing stage fails the pipeline.
        ("false | echo <>", "bar\n", 1),
        ("echo <>; exit 3", "bar\n", 3),
    ];
    let mut input = String::new();
    for (template, _, _) in cases {
        input.push_str(&format!(
            "{{\"cmd\":{}}}\n",
            serde_json::to_string(&template.replace("<>", "bar")).unwrap()
        ));
    }
    let out = run(&["-k"], input.as_bytes());
    assert_eq!(out.lines.len(), cases.len(), "{}", out.stderr);
    for (l, (template, stdout, code)) in out.lines.iter().zip(cases) {
        assert_eq!(l["result"]["stdout"], *stdout, "{template}: {l}");
        assert_eq!(l["result"]["code"], *code, "{template}: {l}");
    }
    // The same through templates, one job each.
    for (template, stdout, code) in cases {
        let out = run(&[template, ":::", "bar"], b"");
        let r = &out.lines[0]["result"];
        assert_eq!(r["stdout"], *stdout, "{template}: {r}");
        assert_eq!(r["code"], *code, "{template}: {r}");
    }
}

// ---------------------------------------------------------------------------------------
// ONEREP: a replacement string may be used several times.
// ---------------------------------------------------------------------------------------

#[test]
fn onerep_one_replacement_string_used_several_times() {
    let out = run(&["-k", "echo <> foo <>; echo <> <> <>"], b"bar\nb a z\n");
    assert_eq!(
        out.lines[0]["result"]["stdout"],
        "bar foo bar\nbar bar bar\n"
    );
    assert_eq!(
        out.lines[1]["result"]["stdout"],
        "b a z foo b a z\nb a z b a z b a z\n"
    );
    let out = run(
        &[
            "printf '%s|' <> <.> </> <//> </.> <> <#> <#>",
            ":::",
            "dir/a.01.txt",
        ],
        b"",
    );
    assert_eq!(
        out.lines[0]["result"]["stdout"],
        "dir/a.01.txt|dir/a.01|a.01.txt|dir|a.01|dir/a.01.txt|1|1|"
    );
}

// ---------------------------------------------------------------------------------------
// INPUTSIZE: long input lines are not limited.
// ---------------------------------------------------------------------------------------

#[test]
fn inputsize_a_100_mb_line_does_not_crash() {
    // GNU's: `perl -e 'print "foo."."x"x100_000_000' | parallel echo {.}` prints `foo`.
    let mut input = b"foo.".to_vec();
    input.resize(4 + 100_000_000, b'x');
    input.push(b'\n');
    let out = run(&["echo <.>"], &input);
    assert_eq!(out.lines.len(), 1, "{}", out.stderr);
    let l = &out.lines[0];
    assert_eq!(l["cmd"], "echo foo");
    assert_eq!(l["input"].as_str().map(str::len), Some(100_000_004));
    assert_eq!(l["result"]["stdout"], "foo\n");
}

#[test]
fn inputsize_a_line_just_under_the_argument_limit_runs() {
    // GNU's: `perl -e 'print "x"x131_000' | parallel echo {} | wc`: the command (131 005
    // bytes) is just under the kernel's 128 KiB limit for one argument.
    let mut input = vec![b'x'; 131_000];
    input.push(b'\n');
    let out = run(&["echo <>"], &input);
    let r = &out.lines[0]["result"];
    assert_eq!(r["status"], "ok", "{}", r["error"]);
    assert_eq!(r["stdout"].as_str().map(str::len), Some(131_001));
}

// ---------------------------------------------------------------------------------------
// NUMWORDS: very many arguments, and output lines of many words.
// ---------------------------------------------------------------------------------------

fn assert_one_line_each(lines: &[Value], n: u64) {
    let seqs: BTreeSet<u64> = lines
        .iter()
        .map(|l| l["result"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(lines.len() as u64, n, "one line per item");
    assert_eq!(seqs.len() as u64, n, "no seq twice");
    assert_eq!(seqs.first().copied(), Some(1));
    assert_eq!(seqs.last().copied(), Some(n));
}

#[test]
fn numwords_10000_arguments_all_run() {
    let args: Vec<String> = (1..=10_000).map(|i| i.to_string()).collect();
    let mut argv = vec!["-j", "2", "true", ":::"];
    argv.extend(args.iter().map(String::as_str));
    let out = run(&argv, b"");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_one_line_each(&out.lines, 10_000);
    assert!(out.lines.iter().all(|l| l["result"]["code"] == 0));
}

/// 100 000 items whose jobs cannot start (their `--cd` does not exist): every item goes
/// through the scheduler and gets its line, without 100 000 process starts.
#[test]
fn numwords_100000_arguments_and_lines_each_get_one_line() {
    let args: Vec<String> = (1..=100_000).map(|i| i.to_string()).collect();
    let mut argv = vec!["-j", "2", "--cd", "no-such-dir-<>", "true", ":::"];
    argv.extend(args.iter().map(String::as_str));
    let out = run(&argv, b"");
    assert_one_line_each(&out.lines, 100_000);
    assert!(out.lines.iter().all(|l| l["result"]["status"] == "error"));
    assert_eq!(out.code, Some(101), "more than 100 failed");

    let input: String = args.iter().map(|a| format!("{a}\n")).collect();
    let out = run(
        &["-j", "2", "-k", "--cd", "no-such-dir-<>", "true"],
        input.as_bytes(),
    );
    assert_one_line_each(&out.lines, 100_000);
    for (i, l) in out.lines.iter().enumerate() {
        assert_eq!(l["input"], (i + 1).to_string(), "-k keeps input order");
    }
}

#[test]
fn numwords_output_lines_of_1000_words() {
    // GNU's: 30 jobs each writing 10 MB of lines of 1000 words.
    let job = ": <>; head -c 10M < <(yes \"$(seq 1000)\")";
    let args: Vec<String> = (1..=30).map(|i| i.to_string()).collect();
    let mut argv = vec!["-j", "30", job, ":::"];
    argv.extend(args.iter().map(String::as_str));
    let out = run(&argv, b"");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.lines.len(), 30);
    let words: String = (1..=1000).map(|i| format!("{i}\n")).collect();
    let whole = words.repeat((1 << 20) / words.len() + 1);
    for l in &out.lines {
        let r = &l["result"];
        assert_eq!(r["stdout_truncated"], true);
        assert_eq!(r["stdout"].as_str(), Some(&whole[..1 << 20]));
    }
}
