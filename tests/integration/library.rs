//! The library crate used from Rust, as SPEC §7 says: jobs in, result lines out, a handle to
//! abort.

use std::time::{Duration, Instant};

use bakapara::config::Config;
use bakapara::signals::AbortHandle;
use serde_json::Value;

fn config(args: &[&str]) -> Config {
    let mut all = vec!["bakapara".to_string(), "-q".to_string()];
    all.extend(args.iter().map(std::string::ToString::to_string));
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
    std::fs::read_dir("/proc").map_or(0, |entries| {
        entries
            .flatten()
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with(needle.as_str()))
            })
            .count()
    })
}

/// The caller's jobs as a stream: they may come while the run goes on.
struct Jobs(tokio::sync::mpsc::UnboundedReceiver<bakapara::Job>);

impl futures_core::Stream for Jobs {
    type Item = bakapara::Job;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<bakapara::Job>> {
        self.0.poll_recv(cx)
    }
}

#[tokio::test]
async fn typed_jobs_run_inside_a_tokio_runtime_with_events_status_and_an_abort() {
    use bakapara::{Event, Job, Runner, Status};
    let dir = tempfile::tempdir().expect("a temp dir");
    let marker = format!(
        "{}.{}",
        8000 + std::process::id() % 1000,
        std::process::id() % 89 + 10
    );
    let mut first = Job::new("echo \"$GREETING\"; pwd");
    first.cd = Some(dir.path().display().to_string());
    first.env.insert("GREETING".into(), "hello".into());
    first.carried.insert("id".into(), "first".into());
    let mut to_file = Job::new("echo into the file");
    to_file.cd = first.cd.clone();
    to_file.out = Some("sub/out.txt".into());
    to_file.carried.insert("id".into(), "file".into());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut handle = Runner::new()
        .slots(2)
        .keep_order(true)
        .spawn(Jobs(rx))
        .expect("a run");
    tx.send(first).unwrap();
    tx.send(to_file).unwrap();
    // The first two have their results before the long ones come.
    let mut finished = 0;
    while finished < 2 {
        match handle.next_event().await.expect("events until the end") {
            Event::Finished(done) => {
                assert_eq!(done.1.status, Status::Ok, "{done:?}");
                finished += 1;
            }
            Event::Started { host, .. } => assert_eq!(host, "localhost"),
            other => panic!("unexpected {other:?}"),
        }
    }
    for n in 0..4 {
        let mut job = Job::new(format!("sleep {marker}"));
        job.carried.insert("n".into(), n.into());
        tx.send(job).unwrap();
    }
    drop(tx);
    let mut started = 0;
    while started < 2 {
        if let Event::Started { .. } = handle.next_event().await.expect("events") {
            started += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while sleepers(&marker) < 2 {
        assert!(Instant::now() < deadline, "the jobs never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = handle.status();
    assert_eq!((status.done, status.failed), (2, 0));
    assert_eq!(status.running.get("localhost"), Some(&2));
    handle.abort();
    let summary = handle.wait().await.expect("the run ends");
    assert!(summary.aborted);
    assert_eq!(summary.results.len(), 6, "every job has its result");
    let (job, result) = &summary.results[0];
    assert_eq!(job.carried["id"], "first");
    assert_eq!(job.env["GREETING"], "hello");
    let pwd = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(
        result.stdout.as_deref(),
        Some(format!("hello\n{}\n", pwd.display()).as_str())
    );
    assert!(result.started.unwrap() <= result.completed.unwrap());
    assert!(result.elapsed.is_some());
    let (job, result) = &summary.results[1];
    assert_eq!(job.carried["id"], "file");
    assert_eq!(result.stdout, None, "it went to the file");
    let written = std::fs::read_to_string(dir.path().join("sub/out.txt")).unwrap();
    assert_eq!(written, "into the file\n");
    for (n, (job, result)) in summary.results[2..].iter().enumerate() {
        assert_eq!(job.carried["n"], n);
        assert_eq!(result.status, Status::Aborted, "{result:?}");
        assert_eq!(result.seq, n as u64 + 3);
    }
    assert_eq!(summary.failed, 4);
    assert_eq!(sleepers(&marker), 0, "no job process is left");
}

#[tokio::test]
async fn the_blocking_run_works_inside_a_tokio_runtime_and_keeps_input_order() {
    use bakapara::{Job, Runner, Status};
    let jobs = ["sleep 0.3; echo a", "echo b", "exit 7", "echo {"].map(Job::new);
    let results = Runner::new()
        .slots(4)
        .timeout(Duration::from_secs(30))
        .run(jobs)
        .expect("the run works");
    let out: Vec<Option<&str>> = results.iter().map(|(_, r)| r.stdout.as_deref()).collect();
    assert_eq!(out, [Some("a\n"), Some("b\n"), Some(""), Some("{\n")]);
    assert_eq!(results[2].1.code, Some(7));
    assert!(results.iter().all(|(_, r)| r.status == Status::Ok));
    let seqs: Vec<u64> = results.iter().map(|(_, r)| r.seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
}

/// Jobs started from the workers of a multi-thread runtime (each thread starts children on a
/// child stack of its own, see `exec::spawn`): every one runs its own command, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_started_from_a_multi_thread_runtime_each_run_their_own_command() {
    use bakapara::{Job, Runner, Status};
    const JOBS: usize = 300;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let handle = Runner::new().slots(8).spawn(Jobs(rx)).expect("a run");
    for n in 0..JOBS {
        let mut job = Job::new(format!("echo {n} \"$N\""));
        job.env.insert("N".into(), n.to_string());
        tx.send(job).unwrap();
    }
    drop(tx);
    let mut handle = handle;
    let mut seen = vec![0; JOBS];
    while let Some(event) = handle.next_event().await {
        if let bakapara::Event::Finished(done) = event {
            let (job, result) = *done;
            assert_eq!(result.status, Status::Ok, "{job:?} {result:?}");
            let n: usize = job.env["N"].parse().expect("the job's N");
            assert_eq!(
                result.stdout.as_deref(),
                Some(format!("{n} {n}\n").as_str())
            );
            seen[n] += 1;
        }
    }
    assert!(seen.iter().all(|&times| times == 1), "{seen:?}");
    handle.wait().await.expect("the run ends");
}
