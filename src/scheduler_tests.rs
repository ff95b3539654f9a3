//! The scheduler's unit tests: a fake executor with scripted outcomes, on paused Tokio time,
//! so that retries, `--halt`, host loss and timeouts, `-k` and `--resume` are checked without
//! a process or a real second passing.

// Test times are milliseconds and counts are small: they fit any integer type.
#![allow(clippy::cast_possible_truncation)]

use crate::throttle::Throttle;
use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Host, Resume, RunSettings, Scheduler, Summary};
use crate::exec::{Captured, Stop, Task};
use crate::exec::{Command, Ending, Executor, HostEvent, HostEvents, Limits, Outcome, RunFuture};
use crate::halt::HaltPolicy;
use crate::hosts::HostSpec;
use crate::input::{ReaderState, Templates};
use crate::job::{Body, Job, Spec};
use crate::output::Output;
use crate::progress::{Logger, Verbosity};
use crate::signals::Controls;
use crate::template::Quoting;

/// What a fake job run does.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// Runs this long, then exits with this code.
    Exit(u64, i32),
    /// Runs this long, then the host's connection is lost; it is back after the second time.
    /// `None`: it never comes back.
    Lose(u64, Option<u64>),
}

type Script = dyn Fn(&str, u32) -> Step + Send + Sync;

/// A host whose jobs do what a script says: `script(cmd, nth run of that cmd here)`.
struct Fake {
    index: usize,
    script: Box<Script>,
    up: Arc<AtomicBool>,
    events: HostEvents,
    /// (cmd, host index, virtual ms since the start) of every start, shared by all fakes.
    starts: Arc<Mutex<Vec<(String, usize, u64)>>>,
    t0: Instant,
    /// Jobs queued per slot ([`Executor::queued_per_slot`]).
    depth: usize,
    /// The index of every host closed, shared by all fakes.
    closes: Arc<Mutex<Vec<usize>>>,
    /// How long a close takes (virtual ms).
    close_ms: u64,
}

impl std::fmt::Debug for Fake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fake({})", self.index)
    }
}

impl Fake {
    async fn run_job(
        &self,
        job: &Command<'_>,
        limits: &Limits,
        mut stop: watch::Receiver<Stop>,
    ) -> Outcome {
        if !self.up.load(Ordering::SeqCst) {
            return Outcome::not_run(Ending::HostLost("down".into()));
        }
        let nth = {
            let mut starts = self.starts.lock().unwrap();
            let ms = self.t0.elapsed().as_millis() as u64;
            starts.push((job.cmd.to_string(), self.index, ms));
            starts
                .iter()
                .filter(|(c, h, _)| c == job.cmd && *h == self.index)
                .count() as u32
        };
        let step = (self.script)(job.cmd, nth);
        let ms = match step {
            Step::Exit(ms, _) | Step::Lose(ms, _) => ms,
        };
        let started = chrono::Local::now();
        let ended = |ending| Outcome {
            ran: Some((started, chrono::Local::now())),
            ending,
            stdout: Some(Captured::default()),
            stderr: Some(Captured::default()),
            note: None,
            transfer: None,
        };
        let timeout = limits.timeout.unwrap_or(Duration::MAX / 4);
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(ms)) => {}
            () = tokio::time::sleep(timeout) => {
                return ended(Ending::TimedOut { code: None, signal: Some(15) });
            }
            _ = stop.wait_for(|s| *s != Stop::Run) => {
                return ended(Ending::Aborted { code: None, signal: Some(15) });
            }
        }
        match step {
            Step::Exit(_, code) => ended(Ending::Exited(code)),
            Step::Lose(_, back) => {
                self.up.store(false, Ordering::SeqCst);
                let _ = self
                    .events
                    .send((self.index, HostEvent::Down("lost".into())));
                if let Some(back) = back {
                    let (up, events, index) =
                        (Arc::clone(&self.up), self.events.clone(), self.index);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(back)).await;
                        up.store(true, Ordering::SeqCst);
                        let _ = events.send((index, HostEvent::Up));
                    });
                }
                Outcome::not_run(Ending::HostLost("lost the connection".into()))
            }
        }
    }
}

impl Executor for Fake {
    fn run<'a>(&'a self, task: Task<'a>) -> RunFuture<'a> {
        Box::pin(self.run_job(task.job, task.limits, task.stop))
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::SeqCst)
    }

    fn queued_per_slot(&self) -> usize {
        self.depth
    }

    fn close(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(self.close_ms)).await;
            self.closes.lock().unwrap().push(self.index);
        })
    }
}

/// The result lines a run writes.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<u8>>>);

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One scheduler run on fake hosts.
struct Run {
    hosts: Vec<(&'static str, usize, Box<Script>)>,
    settings: RunSettings,
    halt: Option<HaltPolicy>,
    keep_order: bool,
    resume: Resume,
    /// Jobs each host queues per slot.
    depth: usize,
    /// Hosts that join this many virtual ms after the start (connecting in the background).
    late: HashMap<&'static str, u64>,
    /// How long each host's close takes (virtual ms).
    close_ms: u64,
}

/// What a run gave.
struct Ran {
    summary: Summary,
    /// Result lines, as written.
    lines: Vec<Value>,
    /// Every start: (cmd, host index, virtual ms).
    starts: Vec<(String, usize, u64)>,
    /// Virtual ms the run took.
    took: u64,
    /// The hosts closed, by index, in the order their closes ended.
    closes: Vec<usize>,
}

impl Ran {
    /// The result line of `cmd`.
    fn of(&self, cmd: &str) -> &Value {
        self.lines
            .iter()
            .find(|l| l["cmd"] == cmd)
            .unwrap_or_else(|| panic!("no line for {cmd}: {:?}", self.lines))
    }

    fn status(&self, cmd: &str) -> &str {
        self.of(cmd)["result"]["status"].as_str().unwrap()
    }

    fn ran(&self, cmd: &str) -> usize {
        self.starts.iter().filter(|(c, _, _)| c == cmd).count()
    }
}

impl Run {
    fn new() -> Run {
        Run {
            hosts: Vec::new(),
            settings: RunSettings {
                capture_limit: 1024,
                grace: Duration::from_secs(2),
                timeout: None,
                retries: 0,
                host_timeout: Duration::from_secs(30),
                host_loss_limit: 5,
                throttle: Throttle::default(),
            },
            halt: None,
            keep_order: false,
            resume: HashMap::new(),
            depth: 0,
            late: HashMap::new(),
            close_ms: 0,
        }
    }

    /// Host `name` joins `ms` after the start, as a host connecting in the background does.
    fn joins_after(mut self, name: &'static str, ms: u64) -> Run {
        self.late.insert(name, ms);
        self
    }

    fn host(
        mut self,
        name: &'static str,
        slots: usize,
        script: impl Fn(&str, u32) -> Step + Send + Sync + 'static,
    ) -> Run {
        self.hosts.push((name, slots, Box::new(script)));
        self
    }

    fn halt(mut self, policy: &str) -> Run {
        self.halt = HaltPolicy::parse(policy).unwrap();
        self
    }

    async fn jobs(self, jobs: &[Value]) -> Ran {
        let t0 = Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let closes = Arc::new(Mutex::new(Vec::new()));
        let mut joining = Vec::new();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let hosts = self
            .hosts
            .into_iter()
            .enumerate()
            .map(|(index, (name, slots, script))| {
                let mut spec = HostSpec::parse(&format!("{slots}/{name}")).unwrap();
                spec.local = false;
                let fake = Fake {
                    index,
                    script,
                    up: Arc::new(AtomicBool::new(true)),
                    events: events_tx.clone(),
                    starts: Arc::clone(&starts),
                    t0,
                    depth: self.depth,
                    closes: Arc::clone(&closes),
                    close_ms: self.close_ms,
                };
                let executor: Arc<dyn Executor> = Arc::new(fake);
                if let Some(&ms) = self.late.get(name) {
                    let events = events_tx.clone();
                    joining.push(tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        // A run that is over takes no host: it is closed here (as
                        // `run::join` does).
                        if let Err(refused) =
                            events.send((index, HostEvent::Joined { executor, slots }))
                        {
                            if let (_, HostEvent::Joined { executor, .. }) = refused.0 {
                                executor.close().await;
                            }
                        }
                    }));
                    return Host {
                        spec,
                        executor: None,
                        slots,
                        joining: true,
                    };
                }
                Host {
                    spec,
                    executor: Some(executor),
                    slots,
                    joining: false,
                }
            })
            .collect();
        let (tx, rx) = mpsc::channel(jobs.len() + 1);
        for (i, object) in jobs.iter().enumerate() {
            let object: Map<String, Value> = object.as_object().unwrap().clone();
            let spec = Spec::from_object(&object).unwrap();
            tx.try_send(Job {
                seq: i as u64 + 1,
                object,
                body: Body::Ready(spec),
                submitted: chrono::Local::now(),
                attempts: 0,
                host_losses: 0,
                last_host: None,
                stdin: None,
            })
            .unwrap();
        }
        drop(tx);
        let templates = Templates {
            cmd: None,
            cd: None,
            out: None,
            err: None,
            transfer: Vec::new(),
            returns: Vec::new(),
            quoting: Quoting::Shell,
            grouped: false,
            insert_none: false,
            total: Arc::default(),
            names: Arc::default(),
        };
        let total: Arc<OnceLock<u64>> = Arc::default();
        let mut output = Output::new(self.keep_order, Logger::new(Verbosity::Quiet));
        let lines = Lines::default();
        let writer = output.writer(lines.clone());
        let thread = std::thread::spawn(move || writer.run());
        let scheduler = Scheduler::new(
            hosts,
            templates,
            self.settings,
            rx,
            Arc::new(ReaderState::with_total(total)),
            None,
            output,
            events_rx,
            self.halt,
            self.resume,
        );
        let summary = scheduler
            .run(Some(jobs.len() as u64), Controls::new(None, None))
            .await;
        thread.join().unwrap();
        let took = t0.elapsed().as_millis() as u64;
        for join in joining {
            join.await.unwrap();
        }
        let closes = closes.lock().unwrap().clone();
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let lines = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let starts = starts.lock().unwrap().clone();
        drop(events_tx);
        Ran {
            summary,
            lines,
            starts,
            took,
            closes,
        }
    }
}

fn cmds(list: &[&str]) -> Vec<Value> {
    list.iter().map(|c| json!({ "cmd": c })).collect()
}

/// A script that runs `cmd` named `sleep MS` for MS ms and exits with the code after `exit`.
fn by_name(cmd: &str, _nth: u32) -> Step {
    let mut words = cmd.split_whitespace();
    let mut ms = 0;
    let mut code = 0;
    while let Some(w) = words.next() {
        match w {
            "sleep" => ms = words.next().unwrap().parse().unwrap(),
            "exit" => code = words.next().unwrap().parse().unwrap(),
            _ => {}
        }
    }
    Step::Exit(ms, code)
}

#[tokio::test(start_paused = true)]
async fn a_failed_job_is_retried_on_another_host() {
    let mut run = Run::new()
        .host("a", 1, |_, _| Step::Exit(100, 1))
        .host("b", 1, |_, _| Step::Exit(100, 0));
    run.settings.retries = 1;
    let ran = run.jobs(&cmds(&["job"])).await;
    assert_eq!(ran.status("job"), "ok");
    assert_eq!(ran.of("job")["result"]["host"], "b");
    let hosts: Vec<usize> = ran.starts.iter().map(|s| s.1).collect();
    assert_eq!(hosts, [0, 1], "first on a, the retry on b");
    assert_eq!((ran.summary.done, ran.summary.failed), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn retries_run_out() {
    let mut run = Run::new().host("a", 1, |_, _| Step::Exit(10, 3));
    run.settings.retries = 2;
    let ran = run.jobs(&cmds(&["job"])).await;
    assert_eq!(ran.ran("job"), 3);
    assert_eq!(ran.of("job")["result"]["code"], 3);
    assert_eq!(ran.summary.failed, 1);
}

#[tokio::test(start_paused = true)]
async fn halt_now_fail_stops_the_running_jobs_at_once() {
    let ran = Run::new()
        .host("a", 2, by_name)
        .halt("now,fail=1")
        .jobs(&cmds(&["sleep 1000 exit 4", "sleep 10000", "c", "d"]))
        .await;
    assert_eq!(ran.status("sleep 1000 exit 4"), "ok");
    assert_eq!(ran.status("sleep 10000"), "aborted");
    assert_eq!(ran.status("c"), "aborted");
    assert_eq!(ran.status("d"), "aborted");
    assert_eq!((ran.ran("c"), ran.ran("d")), (0, 0));
    assert_eq!(ran.summary.halt_status, Some(4), "the failed job's code");
    assert!(ran.took < 2000, "stopped at once, took {} ms", ran.took);
}

#[tokio::test(start_paused = true)]
async fn halt_soon_fail_lets_the_running_jobs_end() {
    let ran = Run::new()
        .host("a", 2, by_name)
        .halt("soon,fail=1")
        .jobs(&cmds(&["sleep 1000 exit 1", "sleep 5000", "c", "d"]))
        .await;
    assert_eq!(ran.status("sleep 5000"), "ok");
    assert_eq!(ran.of("sleep 5000")["result"]["code"], 0);
    assert_eq!(ran.status("c"), "aborted");
    assert_eq!((ran.ran("c"), ran.ran("d")), (0, 0));
    assert_eq!(ran.summary.halt_status, Some(1));
    assert_eq!(ran.took, 5000);
}

#[tokio::test(start_paused = true)]
async fn halt_on_a_percentage_of_successes() {
    // 2 of 4 jobs (50 %) succeeded: no more start; the exit status is 0.
    let ran = Run::new()
        .host("a", 1, by_name)
        .halt("now,success=50%")
        .jobs(&cmds(&["sleep 10", "sleep 20", "sleep 30", "sleep 40"]))
        .await;
    assert_eq!(ran.ran("sleep 10") + ran.ran("sleep 20"), 2);
    assert_eq!((ran.ran("sleep 30"), ran.ran("sleep 40")), (0, 0));
    assert_eq!(ran.status("sleep 30"), "aborted");
    assert_eq!(ran.summary.halt_status, Some(0));
}

#[tokio::test(start_paused = true)]
async fn halt_on_a_count_of_done_jobs() {
    // done=3 counts failures and successes alike.
    let ran = Run::new()
        .host("a", 1, by_name)
        .halt("soon,done=3")
        .jobs(&cmds(&["exit 1", "sleep 5", "exit 2", "e", "f"]))
        .await;
    assert_eq!(ran.starts.len(), 3);
    assert_eq!((ran.status("e"), ran.status("f")), ("aborted", "aborted"));
    assert_eq!(ran.summary.halt_status, Some(0));
}

#[tokio::test(start_paused = true)]
async fn a_job_of_a_lost_host_runs_again_when_it_is_back_without_costing_a_retry() {
    let ran = Run::new()
        .host("a", 1, |_, nth| {
            if nth == 1 {
                Step::Lose(100, Some(3000))
            } else {
                Step::Exit(100, 0)
            }
        })
        .jobs(&cmds(&["job"]))
        .await;
    assert_eq!(ran.status("job"), "ok", "{:?}", ran.lines);
    assert_eq!(ran.ran("job"), 2);
    // It waited for the host to be back (100 ms run + 3 s away).
    assert!(ran.starts[1].2 >= 3100, "{:?}", ran.starts);
    assert_eq!(ran.summary.failed, 0);
}

#[tokio::test(start_paused = true)]
async fn a_job_of_a_lost_host_moves_to_a_host_that_is_up() {
    let ran = Run::new()
        .host("a", 1, |_, _| Step::Lose(100, None))
        .host("b", 1, |_, _| Step::Exit(500, 0))
        .jobs(&cmds(&["one", "two"]))
        .await;
    assert_eq!((ran.status("one"), ran.status("two")), ("ok", "ok"));
    assert_eq!(ran.of("one")["result"]["host"], "b");
    assert_eq!(ran.of("two")["result"]["host"], "b");
}

#[tokio::test(start_paused = true)]
async fn jobs_fail_when_their_hosts_stay_down_past_the_host_timeout() {
    let mut run = Run::new().host("a", 1, |_, _| Step::Lose(100, None));
    run.settings.host_timeout = Duration::from_secs(5);
    let ran = run.jobs(&cmds(&["one", "two"])).await;
    for cmd in ["one", "two"] {
        assert_eq!(ran.status(cmd), "error");
        let error = ran.of(cmd)["result"]["error"].as_str().unwrap();
        assert!(error.contains("stayed down for more than 5 s"), "{error}");
    }
    assert_eq!(ran.ran("two"), 0);
    assert!((5100..6200).contains(&ran.took), "took {} ms", ran.took);
    assert_eq!(ran.summary.failed, 2);
}

#[tokio::test(start_paused = true)]
async fn keep_order_writes_in_input_order_and_without_it_in_completion_order() {
    let jobs = cmds(&["sleep 300", "sleep 100", "sleep 200"]);
    let seqs = |ran: &Ran| -> Vec<u64> {
        ran.lines
            .iter()
            .map(|l| l["result"]["seq"].as_u64().unwrap())
            .collect()
    };
    let ran = Run::new().host("a", 3, by_name).jobs(&jobs).await;
    assert_eq!(seqs(&ran), [2, 3, 1]);
    let mut run = Run::new().host("a", 3, by_name);
    run.keep_order = true;
    let ran = run.jobs(&jobs).await;
    assert_eq!(seqs(&ran), [1, 2, 3]);
    assert_eq!(ran.took, 300, "all three ran at once");
}

#[tokio::test(start_paused = true)]
async fn resume_copies_earlier_results_once_each() {
    let mut run = Run::new().host("a", 1, by_name);
    let earlier =
        b"{\"cmd\":\"done before\",\"result\":{\"status\":\"ok\",\"code\":0,\"seq\":7}}\n".to_vec();
    run.resume
        .insert(("done before".into(), None), VecDeque::from([earlier]));
    let ran = run
        .jobs(&cmds(&["done before", "new", "done before"]))
        .await;
    // The first is copied (with this run's seq), the second of the same cmd runs.
    assert_eq!(ran.ran("done before"), 1);
    assert_eq!(ran.ran("new"), 1);
    let copied: Vec<&Value> = ran
        .lines
        .iter()
        .filter(|l| l["cmd"] == "done before")
        .collect();
    assert_eq!(copied.len(), 2);
    assert!(copied.iter().any(|l| l["result"]["seq"] == 1), "{copied:?}");
    assert_eq!(ran.summary.done, 3);
}

#[tokio::test(start_paused = true)]
async fn a_job_past_its_timeout_is_stopped_and_reported() {
    let mut run = Run::new().host("a", 1, by_name);
    run.settings.timeout = Some(Duration::from_secs(2));
    let ran = run.jobs(&cmds(&["sleep 60000", "sleep 10"])).await;
    let error = ran.of("sleep 60000")["result"]["error"].as_str().unwrap();
    assert_eq!(error, "timed out after 2 s");
    assert_eq!(ran.status("sleep 10"), "ok");
    assert_eq!(ran.took, 2010);
}

#[test]
fn the_exit_status_follows_fatal_broken_pipe_halt_then_failures() {
    let summary = |f: fn(&mut Summary)| {
        let mut s = Summary::default();
        f(&mut s);
        s.exit_code()
    };
    assert_eq!(summary(|_| {}), 0);
    assert_eq!(summary(|s| s.failed = 3), 3);
    assert_eq!(summary(|s| s.failed = 500), 101);
    assert_eq!(summary(|s| (s.failed, s.halt_status) = (2, Some(4))), 4);
    assert_eq!(
        summary(|s| (s.halt_status, s.broken_pipe) = (Some(4), true)),
        141
    );
    assert_eq!(
        summary(|s| (s.fatal, s.broken_pipe) = (Some("x".into()), true)),
        255
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_lost_with_its_host_host_loss_limit_times_fails() {
    let mut run = Run::new().host("a", 1, |_, _| Step::Lose(100, Some(200)));
    run.settings.host_loss_limit = 3;
    let ran = run.jobs(&cmds(&["doomed"])).await;
    assert_eq!(ran.status("doomed"), "error", "{:?}", ran.lines);
    assert_eq!(ran.ran("doomed"), 3);
    let error = ran.of("doomed")["result"]["error"].as_str().unwrap();
    assert!(error.contains("lost under it 3 times"), "{error}");
    assert_eq!(ran.summary.failed, 1);
}

#[tokio::test(start_paused = true)]
async fn queued_lanes_share_their_slots_engine_numbers() {
    let mut run = Run::new()
        .host("a", 2, |_, _| Step::Exit(100, 0))
        .host("b", 1, |_, _| Step::Exit(100, 0));
    run.depth = 1;
    let ran = run.jobs(&cmds(&["j1", "j2", "j3", "j4", "j5", "j6"])).await;
    let mut engines = std::collections::BTreeMap::new();
    for cmd in ["j1", "j2", "j3", "j4", "j5", "j6"] {
        let result = &ran.of(cmd)["result"];
        assert_eq!(result["status"], "ok");
        let engine = result["engine_id"].as_u64().unwrap();
        let host = result["host"].as_str().unwrap().to_string();
        *engines.entry((host, engine)).or_insert(0) += 1;
    }
    // 3 slots, 6 lanes: every job at once, two per slot, engine numbers 0..3 only.
    let want: std::collections::BTreeMap<(String, u64), i32> = [
        (("a".to_string(), 0), 2),
        (("a".to_string(), 1), 2),
        (("b".to_string(), 2), 2),
    ]
    .into();
    assert_eq!(engines, want);
    assert!(ran.took < 150, "took {} ms", ran.took);
}

#[tokio::test(start_paused = true)]
async fn no_job_is_sent_ahead_while_a_host_it_may_run_on_is_still_joining() {
    let mut run = Run::new()
        .host("a", 1, |_, _| Step::Exit(1000, 0))
        .host("b", 1, |_, _| Step::Exit(1000, 0))
        .joins_after("b", 100);
    run.depth = 1;
    let ran = run.jobs(&cmds(&["j1", "j2"])).await;
    // Sent ahead to a, j2 would wait behind j1 there and the run take 2 s; held back for b,
    // which joins at 100 ms, both jobs run at once.
    assert_eq!(ran.of("j1")["result"]["host"], "a");
    assert_eq!(ran.of("j2")["result"]["host"], "b", "{:?}", ran.lines);
    assert!(ran.took < 1200, "took {} ms", ran.took);
}

#[tokio::test(start_paused = true)]
async fn a_host_that_joins_as_the_run_ends_is_closed_too() {
    // a's job ends at 100 ms and its close takes until 150; b joins at 120, its news never
    // read by the run, or at 200, after the run closed its door: closed either way, once.
    for joins in [120, 200] {
        let mut run = Run::new()
            .host("a", 1, |_, _| Step::Exit(100, 0))
            .host("b", 1, |_, _| Step::Exit(100, 0))
            .joins_after("b", joins);
        run.close_ms = 50;
        let ran = run.jobs(&cmds(&["j1"])).await;
        assert_eq!(ran.of("j1")["result"]["host"], "a");
        let mut closes = ran.closes.clone();
        closes.sort_unstable();
        assert_eq!(closes, [0, 1], "b joining at {joins} ms: {:?}", ran.closes);
    }
}
