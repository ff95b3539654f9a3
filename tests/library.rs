//! The library crate used from Rust, as SPEC §7 says: jobs in, result lines out, a handle to
//! abort.

use std::time::{Duration, Instant};

use bakapara::config::Config;
use bakapara::signals::AbortHandle;
use serde_json::Value;

fn config(args: &[&str]) -> Config {
    let mut all = vec!["bakapara".to_string(), "-q".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    Config::from_args(all.into_iter().map(Into::into)).expect("a valid command line")
}

fn lines(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn a_run_writes_one_result_line_per_job_into_any_writer() {
    let mut out = Vec::new();
    let summary = bakapara::run::run(
        config(&["-k", "echo <>; exit <>", ":::", "0", "3"]),
        &mut out,
        false,
    )
    .expect("the run works");
    assert_eq!(
        (summary.done, summary.failed, summary.interrupted_by),
        (2, 1, None)
    );
    let lines = lines(&out);
    assert_eq!(lines[0]["result"]["stdout"], "0\n");
    assert_eq!(lines[1]["result"]["code"], 3);
}

#[test]
fn an_abort_handle_stops_a_run_like_ctrl_c() {
    let marker = format!(
        "{}.{}",
        7000 + std::process::id() % 1000,
        std::process::id() % 89 + 10
    );
    let (handle, receiver) = AbortHandle::new();
    let cfg = config(&[
        "-j",
        "2",
        &format!("sleep {marker}; echo <>"),
        ":::",
        "a",
        "b",
        "c",
    ]);
    let runner = std::thread::spawn(move || {
        let mut out = Vec::new();
        let summary =
            bakapara::run::run_with(cfg, &mut out, false, Some(receiver)).expect("the run works");
        (summary, out)
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while sleepers(&marker) < 2 {
        assert!(Instant::now() < deadline, "the jobs never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    handle.abort();
    let (summary, out) = runner.join().expect("the run ends");
    assert_eq!(
        summary.interrupted_by,
        Some(nix::sys::signal::Signal::SIGINT)
    );
    let lines = lines(&out);
    assert_eq!(lines.len(), 3, "every job read has its line");
    assert!(lines.iter().all(|l| l["result"]["status"] == "aborted"));
    assert_eq!(sleepers(&marker), 0, "no job process is left");
}

/// Processes running `sleep MARKER`.
fn sleepers(marker: &str) -> usize {
    let needle = format!("sleep\0{marker}");
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    std::fs::read(e.path().join("cmdline"))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with(needle.as_str()))
                })
                .count()
        })
        .unwrap_or(0)
}
