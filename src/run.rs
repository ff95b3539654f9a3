//! A whole run: start the input reader, run the scheduler, report how it ended.

use std::io::Write;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::exec::local::LocalExecutor;
use crate::exec::Executor;
use crate::input::{spawn_reader, ReaderState};
use crate::job::{encode_line, Body, JobResult, Status};
use crate::output::Output;
use crate::progress::Logger;
use crate::scheduler::{Host, Scheduler, Summary};
use crate::signals::Signals;

/// Jobs read ahead of the free slots; bounds memory whatever the input length.
const CHANNEL_CAPACITY: usize = 256;

/// Runs every job the config describes, writing result lines to `out`. With `handle_signals`,
/// SIGINT / SIGTERM / SIGHUP stop the run as SPEC §5 says (the caller then dies of the signal
/// in `Summary::interrupted_by`).
pub fn run<W: Write>(config: Config, out: W, handle_signals: bool) -> anyhow::Result<Summary> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(config, out, handle_signals))
}

async fn run_async<W: Write>(
    config: Config,
    out: W,
    handle_signals: bool,
) -> anyhow::Result<Summary> {
    // Signals are taken over before anything starts, so no Ctrl-C is lost.
    let signals = if handle_signals {
        Some(Signals::new()?)
    } else {
        None
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let state = Arc::new(ReaderState::default());
    let known_total = config.input.known_total();
    let reader = spawn_reader(config.input.clone(), tx, Arc::clone(&state))?;
    if config.dry_run {
        return Ok(dry_run(config, rx, out, reader).await);
    }
    let local = Host {
        name: "localhost".to_string(),
        aliases: vec![":".to_string()],
        executor: Executor::Local(LocalExecutor::new(config.base_dir.clone())),
    };
    let mut output = Output::new(out, config.keep_order, Logger::new(config.verbosity));
    if let Some(total) = known_total {
        output.set_total(total);
    }
    let scheduler = Scheduler::new(
        vec![(local, config.jobs)],
        config.templates,
        config.settings,
        rx,
        state,
        Some(reader),
        output,
    );
    Ok(scheduler.run(known_total, signals).await)
}

/// `--dry-run`: print each job as it would run (templates expanded, slots given round-robin).
async fn dry_run<W: Write>(
    config: Config,
    mut rx: mpsc::Receiver<crate::job::Job>,
    mut out: W,
    reader: std::thread::JoinHandle<Result<(), String>>,
) -> Summary {
    let mut summary = Summary {
        done: 0,
        failed: 0,
        interrupted_by: None,
        fatal: None,
    };
    let slots = config.jobs.max(1) as u64;
    let mut line = Vec::new();
    while let Some(mut job) = rx.recv().await {
        let slot = ((job.seq - 1) % slots + 1) as usize;
        config.templates.materialize(&mut job, slot);
        line.clear();
        if let Body::Invalid(why) = &job.body {
            let result = JobResult::not_started(&job, Status::Error, why.clone(), String::new());
            encode_line(&job.object, &result, &mut line);
            summary.failed += 1;
        } else {
            // Serializing a Map into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut line, &job.object);
            line.push(b'\n');
        }
        summary.done += 1;
        if let Err(e) = out.write_all(&line).and_then(|_| out.flush()) {
            summary.fatal = Some(format!("cannot write to stdout: {e}"));
            break;
        }
    }
    if let Ok(Err(e)) = reader.join() {
        summary.fatal.get_or_insert(e);
    }
    summary
}
