//! bakapara at a terminal (SPEC §1, §6): it runs in a tmux pane, so its stderr (and, where a
//! test says so, its stdout and stdin) is a terminal, and the test reads the screen: the live
//! progress display, human output instead of JSON, the hint for input typed at the terminal.

use std::path::{Path, PathBuf};

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::tmux::{quote, Tmux, WAIT};

use serde_json::Value;

/// Starts `bakapara ARGS > out.jsonl` in a 120x30 pane; its exit code goes to `rc`, then the
/// pane stays (so the final screen can be read).
fn start(name: &str, dir: &Path, args: &str) -> (Tmux, PathBuf, PathBuf) {
    start_line(name, dir, &format!("\"$B\" {args} > out.jsonl"))
}

/// Runs the shell command `line` in a 120x30 pane, in `dir`, with `$B` the bakapara binary;
/// its exit code goes to `rc`, then the pane stays. Returns the pane and the paths of
/// `out.jsonl` (where `line` may send stdout) and `rc`.
fn start_line(name: &str, dir: &Path, line: &str) -> (Tmux, PathBuf, PathBuf) {
    let out = dir.join("out.jsonl");
    let rc = dir.join("rc");
    let shell = format!(
        "cd {} && B={}; {line}; echo $? > {}.tmp; mv {}.tmp {}; exec sleep 600",
        quote(dir),
        quote(Path::new(env!("CARGO_BIN_EXE_bakapara"))),
        quote(&rc),
        quote(&rc),
        quote(&rc),
    );
    (Tmux::start(name, 120, 30, &shell), out, rc)
}

fn result_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("read the results")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line: {l:?}: {e}")))
        .collect()
}

fn non_empty_lines(screen: &str) -> Vec<&str> {
    screen.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[test]
fn a_live_display_shows_progress_and_ends_on_one_clean_line() {
    let dir = tempfile::tempdir().unwrap();
    let (tmux, out, rc) = start(
        "live",
        dir.path(),
        "-j 2 'sleep 0.3; echo <>' ::: $(seq 12)",
    );
    // Two jobs running: seen while the run goes on.
    let running = tmux.wait_for_screen("the display while jobs run", |s| {
        s.contains("/12 done") && s.contains("running 2 on localhost") && s.contains("ETA")
    });
    assert!(
        !running.contains("returned 0"),
        "no log lines on a terminal:\n{running}"
    );
    tmux.wait_for_file(&rc);
    assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "0");
    let screen = tmux.wait_for_screen("the final line", |s| s.contains("completed:"));
    let lines = non_empty_lines(&screen);
    assert_eq!(lines.len(), 1, "one line is left:\n{screen}");
    assert!(
        lines[0].starts_with("completed: 12/12 done, 0 failed, in "),
        "{screen}"
    );
    for leftover in ["[=", "ETA", "running"] {
        assert!(!screen.contains(leftover), "no partial bar left:\n{screen}");
    }
    let results = result_lines(&out);
    assert_eq!(results.len(), 12);
    for r in &results {
        assert_eq!(r["result"]["status"], "ok", "{r}");
        assert_eq!(r["result"]["code"], 0, "{r}");
    }
}

#[test]
fn the_total_is_unknown_until_the_input_ends() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("in");
    let status = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(status.success());
    let (tmux, out, rc) = start("stream", dir.path(), "-j 2 'echo <>' < in");
    // Held open by a writer of ours, the input has not ended: the total is `?`. (Opened without
    // blocking, which fails until the shell in the pane has opened the fifo for reading.)
    let mut input = None;
    let deadline = Instant::now() + WAIT;
    while input.is_none() {
        use std::os::unix::fs::OpenOptionsExt;
        input = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&fifo)
            .ok();
        assert!(
            !(input.is_none() && Instant::now() > deadline),
            "bakapara never opened its input; the screen:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut input = input.unwrap();
    input.write_all(b"a\nb\nc\n").unwrap();
    input.flush().unwrap();
    tmux.wait_for_screen("3 done of an unknown total", |s| s.contains("3/? done"));
    drop(input);
    tmux.wait_for_file(&rc);
    let screen = tmux.wait_for_screen("the final line", |s| s.contains("completed:"));
    let lines = non_empty_lines(&screen);
    assert_eq!(lines.len(), 1, "{screen}");
    assert!(
        lines[0].starts_with("completed: 3/3 done, 0 failed"),
        "{screen}"
    );
    assert_eq!(result_lines(&out).len(), 3);
}

#[test]
fn failed_jobs_are_printed_above_the_display() {
    let dir = tempfile::tempdir().unwrap();
    let (tmux, out, rc) = start(
        "fail",
        dir.path(),
        "-j 2 'sleep 0.1; exit $((<> == 3))' ::: 1 2 3 4",
    );
    tmux.wait_for_file(&rc);
    assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "1");
    let screen = tmux.wait_for_screen("the final line", |s| s.contains("completed:"));
    let lines = non_empty_lines(&screen);
    assert_eq!(lines.len(), 2, "{screen}");
    assert!(lines[0].contains("returned 1 in"), "{screen}");
    assert!(lines[0].contains("exit $((3 == 3))"), "{screen}");
    assert!(
        lines[1].starts_with("completed: 4/4 done, 1 failed"),
        "{screen}"
    );
    assert_eq!(result_lines(&out).len(), 4);
}

#[test]
fn quiet_shows_no_display() {
    let dir = tempfile::tempdir().unwrap();
    let (tmux, out, rc) = start("quiet", dir.path(), "-q -j 2 'echo <>' ::: 1 2 3");
    tmux.wait_for_file(&rc);
    let screen = tmux.screen();
    assert!(non_empty_lines(&screen).is_empty(), "{screen}");
    assert_eq!(result_lines(&out).len(), 3);
}

/// The `N` of the first `N/TOTAL done` on the screen.
fn done_of(screen: &str, total: u64) -> Option<u64> {
    let at = screen.find(&format!("/{total} done"))?;
    let digits: String = screen[..at]
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits.parse().ok()
}

#[test]
fn piped_input_shows_its_total_a_bar_and_an_eta_once_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    // 20 lines, read at once (the reader hits the end of input long before the scheduler has
    // taken every job): the display knows the total from then on.
    let (tmux, out, rc) = start_line(
        "piped",
        dir.path(),
        "seq 20 | \"$B\" -j 4 'sleep 0.3; echo <>' > out.jsonl",
    );
    let screen = tmux.wait_for_screen("N/20 with an ETA early in the run", |s| {
        done_of(s, 20).is_some_and(|n| (1..=12).contains(&n)) && s.contains("ETA 0:")
    });
    assert!(
        screen.contains("[="),
        "a bar once the total is known:\n{screen}"
    );
    assert!(!screen.contains("/? done"), "{screen}");
    tmux.wait_for_file(&rc);
    assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "0");
    assert_eq!(result_lines(&out).len(), 20);
}

#[test]
fn log_lines_count_against_the_total_once_the_input_has_ended() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::write(&input, "1\n2\n3\n4\n5\n").unwrap();
    // stderr is a pipe here: log lines. One slot, so the scheduler takes the jobs one by one
    // while the reader has long read all five.
    let out = Command::new(env!("CARGO_BIN_EXE_bakapara"))
        .args(["-j", "1", "sleep 0.2; echo"])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .expect("bakapara runs");
    assert_eq!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The first job may end before the reader got to the end of input; none after it.
    for k in 2..=5 {
        assert!(
            stderr.contains(&format!("[{k}/5] returned 0 in ")),
            "job {k} of 5:\n{stderr}"
        );
    }
}

#[test]
fn jobs_read_from_the_terminal_get_a_hint_on_how_to_end_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let (tmux, out, rc) = start("tty-input", dir.path(), "'echo got <>'");
    let screen = tmux.wait_for_screen("the hint", |s| s.contains("Ctrl-D"));
    assert!(
        screen.contains("reading jobs from the terminal"),
        "{screen}"
    );
    let sent = tmux.command(&["send-keys", "hello", "Enter"]);
    assert!(sent.status.success());
    // The job runs before the input ends.
    let deadline = Instant::now() + WAIT;
    while std::fs::read_to_string(&out).unwrap_or_default().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no result; the screen:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let sent = tmux.command(&["send-keys", "C-d"]);
    assert!(sent.status.success());
    tmux.wait_for_file(&rc);
    assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "0");
    let results = result_lines(&out);
    assert_eq!(results.len(), 1);
    assert_eq!(results[0]["result"]["stdout"], "got hello\n");
}

#[test]
fn piped_input_gets_no_terminal_hint() {
    let out = Command::new(env!("CARGO_BIN_EXE_bakapara"))
        .args(["echo"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("bakapara runs");
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("Ctrl-D"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_terminal_on_stdout_gets_each_jobs_output_and_failures_named_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let (tmux, _, rc) = start_line(
        "human",
        dir.path(),
        "\"$B\" -j 2 --joblog log.jsonl \
         'echo out <>; echo line2 <>; echo oops <> >&2; exit $((<> == 2))' ::: 1 2 3",
    );
    tmux.wait_for_file(&rc);
    assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "1");
    let screen = tmux.wait_for_screen("the final line", |s| s.contains("completed:"));
    assert!(!screen.contains("{\""), "no JSON on a terminal:\n{screen}");
    for k in 1..=3 {
        // Each job's stdout is one block.
        assert!(
            screen.contains(&format!("out {k}\nline2 {k}\n")),
            "job {k}'s output:\n{screen}"
        );
        assert!(screen.contains(&format!("oops {k}")), "{screen}");
    }
    // The failed job is named, with its code.
    let failed: Vec<&str> = screen
        .lines()
        .filter(|l| l.contains("returned 1 in"))
        .collect();
    assert_eq!(failed.len(), 1, "{screen}");
    assert!(failed[0].contains("exit $((2 == 2))"), "{screen}");
    assert!(screen.contains("completed: 3/3 done, 1 failed"), "{screen}");
    // The joblog still gets the result lines.
    let log = result_lines(&dir.path().join("log.jsonl"));
    assert_eq!(log.len(), 3);
}

#[test]
fn json_forces_result_lines_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (tmux, _, rc) = start_line("json", dir.path(), "\"$B\" --json 'echo hi <>' ::: 1");
    tmux.wait_for_file(&rc);
    let screen = tmux.wait_for_screen("the final line", |s| s.contains("completed:"));
    assert!(screen.contains("\"stdout\":\"hi 1\\n\""), "{screen}");
    assert!(screen.contains("\"result\":{\"status\":\"ok\""), "{screen}");
}

#[test]
fn line_buffer_on_a_terminal_prints_lines_above_the_display() {
    let dir = tempfile::tempdir().unwrap();
    let (tmux, _, rc) = start_line(
        "lb",
        dir.path(),
        "\"$B\" --line-buffer -j 2 'echo <> one; echo <> two' ::: a b c",
    );
    tmux.wait_for_file(&rc);
    assert_eq!(std::fs::read_to_string(&rc).unwrap().trim(), "0");
    let screen = tmux.wait_for_screen("the final line", |s| s.contains("completed:"));
    let mut lines = non_empty_lines(&screen);
    assert_eq!(
        lines.pop().map(|l| l.starts_with("completed: 3/3 done")),
        Some(true),
        "{screen}"
    );
    // Only the jobs' lines are left, whole, above the final line: no piece of the display.
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["a one", "a two", "b one", "b two", "c one", "c two"],
        "{screen}"
    );
}
