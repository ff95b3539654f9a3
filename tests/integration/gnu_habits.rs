//! Habits users bring from GNU Parallel (SPEC §2, §4): `-j` in its GNU forms, `{}` in a `<>`
//! template, `--braces`, and job keys that are near-misses of known ones. The real binary, real
//! `/bin/bash` jobs.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::common::bin::{bakapara, parse_lines};

/// Runs bakapara in `dir` with stdin from `/dev/null`.
fn run_in(dir: &Path, args: &[&str]) -> Output {
    bakapara()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("running bakapara")
}

fn stderr_of(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The slot numbers (`<%>`) that `2 × expected` jobs ran in, when each job waits until
/// `expected` jobs have started before it ends. With exactly `expected` slots the first wave
/// fills slots 1..=expected and the barrier opens; fewer slots never open it (each job gives
/// up after a minute, and the test fails), more slots show slot numbers above `expected`.
fn slots_used(
    args_before_template: &[&str],
    expected: usize,
    ulimit_files: Option<u32>,
) -> Vec<usize> {
    let dir = tempfile::tempdir().expect("temporary folder");
    let started = dir.path().join("started");
    std::fs::create_dir(&started).expect("creating the barrier folder");
    let template = format!(
        "touch {s}/<#>; for i in $(seq 1200); do [ $(ls {s} | wc -l) -ge {expected} ] && break; sleep 0.05; done; echo <%>",
        s = started.display()
    );
    let items: Vec<String> = (1..=2 * expected).map(|i| i.to_string()).collect();
    let bin = env!("CARGO_BIN_EXE_bakapara");
    let mut command = Command::new("bash");
    let ulimit = ulimit_files.map_or(String::new(), |n| format!("ulimit -n {n} && "));
    command
        .arg("-c")
        .arg(format!("{ulimit}exec \"$0\" \"$@\""))
        .arg(bin)
        .args(args_before_template)
        .arg(&template)
        .arg(":::")
        .args(&items)
        .current_dir(dir.path())
        .stdin(Stdio::null());
    let output = command.output().expect("running bakapara");
    assert_eq!(
        output.status.code(),
        Some(0),
        "bakapara {args_before_template:?} failed: {}",
        stderr_of(&output)
    );
    let mut slots: Vec<usize> = parse_lines(&output.stdout)
        .iter()
        .map(|r| {
            r["result"]["stdout"]
                .as_str()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or_else(|| panic!("no slot number in {r}"))
        })
        .collect();
    slots.sort_unstable();
    slots.dedup();
    slots
}

fn one_to(n: usize) -> Vec<usize> {
    (1..=n).collect()
}

#[test]
fn j_plus_minus_and_percent_are_relative_to_the_cpu_count() {
    let n = cpus();
    assert_eq!(
        slots_used(&["-j", "+1"], n + 1, None),
        one_to(n + 1),
        "-j +1"
    );
    assert_eq!(slots_used(&["-j+2"], n + 2, None), one_to(n + 2), "-j+2");
    let minus = n.saturating_sub(1).max(1);
    assert_eq!(
        slots_used(&["-j", "-1"], minus, None),
        one_to(minus),
        "-j -1"
    );
    assert_eq!(
        slots_used(&["--jobs=-64"], 1, None),
        one_to(1),
        "-j -64: at least 1"
    );
    let half = n.div_ceil(2);
    assert_eq!(
        slots_used(&["-j", "50%"], half, None),
        one_to(half),
        "-j 50%"
    );
    let more = (n * 3).div_ceil(2);
    assert_eq!(
        slots_used(&["-j", "150%"], more, None),
        one_to(more),
        "-j 150%"
    );
    assert_eq!(
        slots_used(&["-j", "1%"], 1, None),
        one_to(1),
        "-j 1%: rounded up"
    );
}

/// `-j 0` is as many as the open-file limit leaves room for: (limit − 64) / 3.
#[test]
fn j_zero_is_as_many_as_the_open_file_limit_allows() {
    assert_eq!(slots_used(&["-j", "0"], 12, Some(100)), one_to(12));
}

/// More jobs than the open files allow would fail to start one by one ("Too many open
/// files"): as GNU Parallel does, bakapara runs as many as fit and says so.
#[test]
fn j_beyond_the_open_file_limit_runs_as_many_as_fit_with_a_warning() {
    assert_eq!(slots_used(&["-j", "50"], 12, Some(100)), one_to(12));
    let dir = tempfile::tempdir().expect("temporary folder");
    let items: Vec<String> = (1..=60).map(|i| i.to_string()).collect();
    let output = Command::new("bash")
        .arg("-c")
        .arg("ulimit -n 100 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_bakapara"))
        .args(["-q", "-j", "60", "true <>", ":::"])
        .args(&items)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .expect("running bakapara");
    let err = stderr_of(&output);
    assert_eq!(output.status.code(), Some(0), "every job runs: {err}");
    assert_eq!(parse_lines(&output.stdout).len(), 60);
    assert!(
        err.contains("warning") && err.contains("ulimit -n 100") && err.contains("12 jobs"),
        "{err}"
    );
}

#[test]
fn j_beyond_the_bound_or_malformed_is_a_usage_error_before_any_job() {
    let dir = tempfile::tempdir().expect("temporary folder");
    for (value, needle) in [
        ("1e9", "not \"1e9\""),
        ("18446744073709551615", "more than the 4096"),
        ("99999999999999999999999", "more than the 4096"),
        ("4097", "more than the 4096"),
        ("+1000000", "more than the 4096"),
        ("-99999999999999999999999", "more than the 4096"),
        ("100000000%", "more than the 4096"),
        ("abc", "+N or -N"),
        ("", "+N or -N"),
        ("1.5", "+N or -N"),
        ("+", "+N or -N"),
        ("%", "+N or -N"),
        ("-1.5%", "+N or -N"),
    ] {
        let flag = format!("--jobs={value}");
        let output = run_in(dir.path(), &[&flag, "touch ran-<#>", ":::", "a"]);
        let err = stderr_of(&output);
        assert_eq!(output.status.code(), Some(255), "-j {value:?}: {err}");
        assert!(
            err.contains("--jobs") && err.contains(needle),
            "-j {value:?}: the message should name --jobs and say {needle:?}: {err}"
        );
        assert!(!err.contains("panicked"), "-j {value:?}: {err}");
        assert!(output.stdout.is_empty(), "-j {value:?}");
        assert!(!dir.path().join("ran-1").exists(), "-j {value:?} ran a job");
    }
    // The largest accepted value starts, and allocates nothing proportional up front.
    let output = run_in(dir.path(), &["-j", "4096", "echo <%>", ":::", "a"]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
    let lines = parse_lines(&output.stdout);
    assert_eq!(lines[0]["result"]["stdout"], Value::from("1\n"));
}

// ---- `{}` in a `<>` template, and --braces ------------------------------------------------

/// The `stdout` of each result line, in input order (run with `-k`).
fn stdouts(output: &Output) -> Vec<String> {
    parse_lines(&output.stdout)
        .iter()
        .map(|r| {
            r["result"]["stdout"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

#[test]
fn gnu_braces_in_an_angle_template_run_as_text_with_a_warning() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let output = run_in(dir.path(), &["-k", "echo {}", ":::", "a.txt"]);
    let err = stderr_of(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert_eq!(
        stdouts(&output),
        ["{} a.txt\n"],
        "run as today, with <> appended"
    );
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "one warning: {err}");
    assert!(
        warnings[0].contains("`{}`") && warnings[0].contains("--braces"),
        "the warning names {{}} and --braces: {err}"
    );
    // Other GNU tokens, and in --out.
    let output = run_in(
        dir.path(),
        &["--out", "{.}.out", "cat {/.} -", ":::", "a.txt"],
    );
    let err = stderr_of(&output);
    assert!(
        err.contains("`{/.}`") && err.contains("--out") && err.contains("`{.}`"),
        "{err}"
    );
    // With --jsonl, {name} is the GNU habit for <name>.
    let output = run_with_input(dir.path(), &["--jsonl", "echo {f}"], "{\"f\":1}\n");
    let err = stderr_of(&output);
    assert!(
        err.contains("`{f}`") && err.contains("--braces") && !err.contains("appended"),
        "{err}"
    );
    // Brace groups that are not GNU tokens, or a template with a token: no warning.
    for template in [
        "awk '{print $1}'",
        "echo {a,b} ${HOME}",
        "find <> -exec echo {} ;",
    ] {
        let output = run_in(dir.path(), &[template, ":::", "."]);
        let err = stderr_of(&output);
        assert!(!err.contains("warning"), "{template}: {err}");
    }
}

#[test]
fn braces_make_angle_brackets_and_awk_groups_plain_text() {
    let dir = tempfile::tempdir().expect("temporary folder");
    std::fs::write(dir.path().join("page.html"), "<html> one\n<b>two</b>\n").expect("writing");
    let output = run_in(
        dir.path(),
        &[
            "--braces",
            "-k",
            "grep -c '<html>' {}; awk '{print $1}' {} | tr '\\n' ' '; echo '<b>{/.}</b>'",
            ":::",
            "page.html",
        ],
    );
    let err = stderr_of(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    assert_eq!(stdouts(&output), ["1\n<html> <b>two</b> <b>page</b>\n"]);
    assert!(!err.contains("warning"), "{err}");
    // No token: " {}" is appended, as GNU Parallel does.
    let output = run_in(dir.path(), &["--braces", "-k", "echo '<x>'", ":::", "a"]);
    assert_eq!(stdouts(&output), ["<x> a\n"], "{}", stderr_of(&output));
    // {name} with --jsonl.
    let output = bakapara()
        .args(["--braces", "--jsonl", "echo {name.} {name/.} {n}"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped stdin")
                .write_all(b"{\"name\":\"d/x.txt\",\"n\":3}\n")?;
            child.wait_with_output()
        })
        .expect("running bakapara");
    assert_eq!(stdouts(&output), ["d/x x 3\n"], "{}", stderr_of(&output));
}

#[test]
fn an_unknown_angle_token_is_refused_naming_braces() {
    let dir = tempfile::tempdir().expect("temporary folder");
    for template in ["grep '<html>' <>", "echo <x-y>", "echo <b>bold</b>"] {
        let output = run_in(dir.path(), &[template, ":::", "a"]);
        let err = stderr_of(&output);
        assert_eq!(output.status.code(), Some(255), "{template}: {err}");
        assert!(err.contains("--braces"), "{template}: {err}");
        assert!(output.stdout.is_empty(), "{template}");
    }
    // With --braces, a token with a bad regex is still refused before any job.
    let output = run_in(
        dir.path(),
        &["--braces", "touch ran; echo {/(/x}", ":::", "a"],
    );
    let err = stderr_of(&output);
    assert_eq!(output.status.code(), Some(255), "{err}");
    assert!(err.contains("{/(/x}") && err.contains("bad regex"), "{err}");
    assert!(!dir.path().join("ran").exists());
}

/// Runs GNU Parallel (`parallel`, from .ci/run's install list) with `args`.
fn gnu_parallel(args: &[&str]) -> String {
    let output = match Command::new("parallel")
        .arg("--will-cite")
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("GNU Parallel is not installed: apt-get install parallel (.ci/run does this)")
        }
        Err(e) => panic!("running parallel: {e}"),
    };
    assert!(
        output.status.success(),
        "parallel {args:?}: {}",
        stderr_of(&output)
    );
    String::from_utf8(output.stdout).expect("parallel prints UTF-8 here")
}

/// `--braces` gives what GNU Parallel gives for the same tokens on the same input: the path
/// operators, the regex replacements (GNU's `--plus`), columns from both ends and `{#}`.
#[test]
fn braces_match_gnu_parallel() {
    let items = [
        "dir/a01.txt",
        "a.b.c",
        ".bashrc",
        "/",
        "a/",
        "dir/sub/",
        "x",
        "..x",
        "a b/c d.e",
        "it's $(x) \"q\".txt",
        "",
        "/abs/p.tar.gz",
        "dir.x/file",
        "ééa/ü.ö",
    ];
    let cases: &[(&[&str], &[&[&str]])] = &[
        (&["{}", "{.}", "{/}", "{//}", "{/.}"], &[&items]),
        (&["{/a/b}", "{//a/b}", "{/\\./_}", "{//[.]/_}"], &[&items]),
        (
            &[
                "{1}", "{2}", "{-1}", "{-2}", "{1.}", "{2//}", "{1/.}", "{#}",
            ],
            &[&["a.x/y.z", "p/q", ""], &["b/c.d", "e"]],
        ),
    ];
    let dir = tempfile::tempdir().expect("temporary folder");
    for (tokens, sources) in cases {
        let format = vec!["%s"; tokens.len()].join("|") + "\\n";
        let mut gnu: Vec<&str> = vec!["-k", "--plus", "-q", "printf", &format];
        gnu.extend_from_slice(tokens);
        let mut ours_args: Vec<String> = vec![
            "--braces".into(),
            "-k".into(),
            format!("printf '{format}' {}", tokens.join(" ")),
        ];
        for source in *sources {
            gnu.push(":::");
            gnu.extend_from_slice(source);
            ours_args.push(":::".into());
            ours_args.extend(source.iter().map(std::string::ToString::to_string));
        }
        let want = gnu_parallel(&gnu);
        let ours: Vec<&str> = ours_args.iter().map(String::as_str).collect();
        let output = run_in(dir.path(), &ours);
        assert_eq!(output.status.code(), Some(0), "{}", stderr_of(&output));
        assert_eq!(
            stdouts(&output).concat(),
            want,
            "--braces {tokens:?} vs GNU Parallel"
        );
    }
}

// ---- job keys that are near-misses of known ones -----------------------------------------

/// Runs bakapara with `stdin` as its input.
fn run_with_input(dir: &Path, args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = bakapara()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running bakapara");
    let mut input = child.stdin.take().expect("piped stdin");
    input.write_all(stdin.as_bytes()).expect("writing stdin");
    drop(input);
    child.wait_with_output().expect("waiting for bakapara")
}

#[test]
fn near_miss_job_keys_warn_once_each_and_are_carried_through() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let jobs = concat!(
        r#"{"cmd":"echo 1","timout":5,"Cd":"/","sample":"s1"}"#,
        "\n",
        r#"{"cmd":"echo 2","timout":6,"hosts":["h"],"cost":3}"#,
        "\n",
        r#"{"cmd":"echo 3","timout":7,"entries":2,"retry":1}"#,
        "\n",
    );
    let output = run_with_input(dir.path(), &["-k", "-q"], jobs);
    let err = stderr_of(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    let warned = |key: &str| {
        err.lines()
            .filter(|l| l.contains(&format!("\"{key}\"")))
            .count()
    };
    for (key, known) in [
        ("timout", "timeout"),
        ("Cd", "cd"),
        ("hosts", "host"),
        ("retry", "retries"),
    ] {
        assert_eq!(warned(key), 1, "one warning for {key}, even with -q: {err}");
        assert!(
            err.lines()
                .any(|l| l.contains(&format!("\"{key}\"")) && l.contains(&format!("\"{known}\""))),
            "the warning for {key} names {known}: {err}"
        );
    }
    for key in ["sample", "cost", "entries"] {
        assert_eq!(warned(key), 0, "{key} is a key of the user's own: {err}");
    }
    // Carried through unchanged, and not acted upon: `Cd` did not move the job to /.
    let lines = parse_lines(&output.stdout);
    assert_eq!(lines[0]["timout"], 5);
    assert_eq!(lines[0]["Cd"], "/");
    assert_eq!(lines[1]["hosts"], serde_json::json!(["h"]));
    assert_eq!(lines[2]["retry"], 1);
    // --jsonl objects too.
    let output = run_with_input(
        dir.path(),
        &["--jsonl", "echo <f>"],
        "{\"f\":1,\"Timeout\":2}\n",
    );
    let err = stderr_of(&output);
    assert!(
        err.contains("\"Timeout\"") && err.contains("\"timeout\""),
        "{err}"
    );
}
