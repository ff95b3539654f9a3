//! A whole run: start the input reader, run the scheduler, report how it ended.

use std::io::Write;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::exec::local::LocalExecutor;
use crate::exec::ssh::{HostDown, SshHost};
use crate::exec::Executor;
use crate::hosts::HostSpec;
use crate::input::{spawn_reader, ReaderState};
use crate::job::{encode_line, Body, JobResult, Status};
use crate::output::{Output, OutputFailure};
use crate::progress::Logger;
use crate::scheduler::{Host, Resume, Scheduler, Summary};
use crate::signals::{die_of, AbortReceiver, Controls, Event, Signals};

/// Jobs read ahead of the free slots; bounds memory whatever the input length.
const CHANNEL_CAPACITY: usize = 256;

/// Runs every job the config describes, writing result lines to `out` (from a thread of its
/// own, so a slow writer never holds up the jobs' supervision). With `handle_signals`,
/// SIGINT / SIGTERM / SIGHUP stop the run as SPEC §5 says (the caller then dies of the signal
/// in `Summary::interrupted_by`).
pub fn run<W: Write + Send>(
    config: Config,
    out: W,
    handle_signals: bool,
) -> anyhow::Result<Summary> {
    run_with(config, out, handle_signals, None)
}

/// As [`run`], and `abort` (the other end of an [`crate::signals::AbortHandle`]) stops the run
/// from another thread as a signal would.
///
/// A run waits for `out` to take every line. Only when a signal stopped the run (with
/// `handle_signals`) and `out` still blocks a moment after the jobs ended does it give up:
/// the process then dies of that signal here, as the caller would have made it.
pub fn run_with<W: Write + Send>(
    config: Config,
    out: W,
    handle_signals: bool,
    abort: Option<AbortReceiver>,
) -> anyhow::Result<Summary> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::scope(|scope| {
        let mut writer = None;
        let summary = runtime.block_on(run_async(
            config,
            |output: &mut Output| {
                let thread = output.writer(out);
                writer = Some(output.state());
                std::thread::Builder::new()
                    .name("bakapara-output".into())
                    .spawn_scoped(scope, move || thread.run())
                    .map(|_| ())
            },
            handle_signals,
            abort,
        ));
        let abandoned = writer.is_some_and(|state| state.abandoned());
        if let (
            true,
            true,
            Ok(Summary {
                interrupted_by: Some(sig),
                ..
            }),
        ) = (abandoned, handle_signals, &summary)
        {
            // The writer thread is stuck in a write that may never return: it cannot be joined.
            die_of(*sig);
        }
        summary
    })
}

async fn run_async(
    config: Config,
    start_writer: impl FnOnce(&mut Output) -> std::io::Result<()>,
    handle_signals: bool,
    abort: Option<AbortReceiver>,
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
    let mut controls = Controls::new(signals, abort);
    if config.dry_run {
        // Its stderr carries nothing but warnings (`completed` would count no job run).
        let mut output = Output::new(false, Logger::new(crate::progress::Verbosity::Quiet));
        start_writer(&mut output)?;
        return Ok(dry_run(config, rx, output, reader, state, &mut controls).await);
    }
    let resume = match &config.resume {
        Some(file) => load_resume(file)?,
        None => Resume::new(),
    };
    let (down_tx, down_rx) = mpsc::unbounded_channel();
    let joblog = open_joblog(&config)?;
    // A live progress display when stderr is a terminal, log lines otherwise.
    let logger = Logger::for_stderr(config.verbosity);
    // The SSH control sockets live in a directory of this run's own, removed at its end.
    let control_dir = if config.hosts.iter().any(|h| !h.local) {
        remove_stale_control_dirs();
        Some(
            tempfile::Builder::new()
                .prefix(&format!("{CONTROL_DIR_PREFIX}{}-", std::process::id()))
                .tempdir()?,
        )
    } else {
        None
    };
    let hosts = connect_hosts(
        &config,
        control_dir.as_ref().map(|d| d.path()),
        down_tx,
        &logger,
    )
    .await;
    if !hosts.iter().any(|h| h.executor.is_some()) {
        anyhow::bail!("no host could be reached");
    }
    let mut output = Output::new(config.keep_order, logger);
    if config.text {
        output = output.text(config.tag);
    }
    if let (Some(file), Some(path)) = (joblog, &config.joblog) {
        output = output.joblog(file, path.clone());
    }
    if let Some(total) = known_total {
        output.set_total(total);
    }
    start_writer(&mut output)?;
    let scheduler = Scheduler::new(
        hosts,
        config.templates,
        config.settings,
        rx,
        state,
        Some(reader),
        output,
        down_rx,
        config.halt,
        resume,
    );
    let summary = scheduler.run(known_total, controls).await;
    drop(control_dir);
    Ok(summary)
}

/// Creates (truncates) `--joblog FILE` before any job runs. It may not be the `--resume` file,
/// which would be emptied before it is read.
fn open_joblog(config: &Config) -> anyhow::Result<Option<std::fs::File>> {
    let Some(path) = &config.joblog else {
        return Ok(None);
    };
    if let Some(resume) = &config.resume {
        use std::os::unix::fs::MetadataExt;
        let same = match (std::fs::metadata(path), std::fs::metadata(resume)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if same {
            anyhow::bail!(
                "--joblog {} is the --resume file: give the new run's log another name",
                path.display()
            );
        }
    }
    let file = std::fs::File::create(path)
        .map_err(|e| anyhow::anyhow!("--joblog {}: cannot create: {e}", path.display()))?;
    Ok(Some(file))
}

/// The run's hosts, in `-S` order: this machine, and SSH hosts connected in parallel. A host
/// that cannot be reached is reported on stderr and left out (kept in the list without an
/// executor, so jobs that ask for it by name get a clear error).
async fn connect_hosts(
    config: &Config,
    control_dir: Option<&std::path::Path>,
    down_tx: mpsc::UnboundedSender<HostDown>,
    logger: &Logger,
) -> Vec<Host> {
    let local = |spec: HostSpec| {
        let slots = spec.slots.unwrap_or(config.jobs);
        let executor = LocalExecutor::new(config.base_dir.clone())
            .with_spool(config.text)
            .with_running(logger.running(&spec.name));
        Host {
            spec,
            executor: Some(Executor::Local(executor)),
            slots,
        }
    };
    if config.hosts.is_empty() {
        return vec![local(HostSpec::local(Some(config.jobs)))];
    }
    let nonce = nonce();
    let mut options = config.ssh.clone();
    options.control_dir = control_dir.map(|d| d.to_path_buf());
    let mut connecting = tokio::task::JoinSet::new();
    for (index, spec) in config.hosts.iter().enumerate() {
        if spec.local {
            continue;
        }
        let (spec, options, nonce, down_tx) = (
            spec.clone(),
            options.clone(),
            nonce.clone(),
            down_tx.clone(),
        );
        connecting.spawn(async move {
            (
                index,
                SshHost::connect(index, spec, options, nonce, down_tx).await,
            )
        });
    }
    let mut connected: Vec<Option<Result<SshHost, String>>> =
        (0..config.hosts.len()).map(|_| None).collect();
    while let Some(joined) = connecting.join_next().await {
        if let Ok((index, result)) = joined {
            connected[index] = Some(result);
        }
    }
    let mut hosts = Vec::with_capacity(config.hosts.len());
    for (spec, result) in config.hosts.iter().zip(connected) {
        if spec.local {
            hosts.push(local(spec.clone()));
            continue;
        }
        match result {
            Some(Ok(ssh)) => {
                let slots = ssh.slots();
                let ssh = ssh
                    .with_spool(config.text)
                    .with_running(logger.running(&spec.name));
                hosts.push(Host {
                    spec: spec.clone(),
                    executor: Some(Executor::Ssh(Arc::new(ssh))),
                    slots,
                });
            }
            Some(Err(why)) => {
                logger.warn(&format!("bakapara: leaving out host {}: {why}", spec.name));
                hosts.push(Host {
                    spec: spec.clone(),
                    executor: None,
                    slots: 0,
                });
            }
            None => {
                logger.warn(&format!(
                    "bakapara: leaving out host {}: its connection task failed",
                    spec.name
                ));
                hosts.push(Host {
                    spec: spec.clone(),
                    executor: None,
                    slots: 0,
                });
            }
        }
    }
    hosts
}

/// Reads `--resume FILE`: the result lines with status ok and code 0, by (cmd, cd). Lines that
/// are not such results are passed over.
fn load_resume(file: &std::path::Path) -> anyhow::Result<Resume> {
    use std::io::BufRead;
    let reader = std::io::BufReader::new(
        std::fs::File::open(file)
            .map_err(|e| anyhow::anyhow!("--resume {}: {e}", file.display()))?,
    );
    let mut resume = Resume::new();
    for line in reader.split(b'\n') {
        let mut line = line.map_err(|e| anyhow::anyhow!("--resume {}: {e}", file.display()))?;
        let Ok(serde_json::Value::Object(object)) =
            serde_json::from_slice::<serde_json::Value>(&line)
        else {
            continue;
        };
        let result = object.get("result");
        let ok = result
            .and_then(|r| r.get("status"))
            .and_then(|s| s.as_str())
            == Some("ok")
            && result.and_then(|r| r.get("code")).and_then(|c| c.as_i64()) == Some(0);
        let cmd = object.get("cmd").and_then(|c| c.as_str());
        if let (true, Some(cmd)) = (ok, cmd) {
            let cd = object.get("cd").and_then(|c| c.as_str()).map(String::from);
            line.push(b'\n');
            resume
                .entry((cmd.to_string(), cd))
                .or_default()
                .push_back(line);
        }
    }
    Ok(resume)
}

/// Control directories are named `bakapara-ssh-PID-XXXXXX`.
const CONTROL_DIR_PREFIX: &str = "bakapara-ssh-";

/// Removes the control directories of runs that were killed (`kill -9`) before they could
/// clean up: those whose process no longer exists. (Their master connections have gone by
/// themselves: they exit when idle.)
fn remove_stale_control_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name
            .to_str()
            .and_then(|n| n.strip_prefix(CONTROL_DIR_PREFIX))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A random token for this run (marks the remote wrapper's reports).
fn nonce() -> String {
    let mut bytes = [0u8; 12];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut bytes);
    }
    let mixed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut text = String::from("bkp");
    for b in bytes.iter().chain(&mixed.to_le_bytes()[..4]) {
        text.push_str(&format!("{b:02x}"));
    }
    text
}

/// `--dry-run`: print each job as it would run (templates expanded, slots given round-robin).
/// Signals and a failed stdout stop it as they stop a run.
async fn dry_run(
    config: Config,
    mut rx: mpsc::Receiver<crate::job::Job>,
    mut output: Output,
    reader: std::thread::JoinHandle<Result<(), String>>,
    state: Arc<ReaderState>,
    controls: &mut Controls,
) -> Summary {
    let mut summary = Summary {
        done: 0,
        failed: 0,
        interrupted_by: None,
        fatal: None,
        broken_pipe: false,
    };
    let slots = config.jobs.max(1) as u64;
    let mut input_ended = false;
    loop {
        if let Some(failure) = output.new_failure() {
            match failure {
                OutputFailure::BrokenPipe => summary.broken_pipe = true,
                OutputFailure::Failed(why) => summary.fatal = Some(why),
            }
            break;
        }
        tokio::select! {
            job = rx.recv(), if !output.backlogged() => match job {
                Some(mut job) => {
                    state.taken(&job);
                    let slot = ((job.seq - 1) % slots + 1) as usize;
                    config.templates.materialize(&mut job, slot);
                    let mut line = Vec::new();
                    if let Body::Invalid(why) = &job.body {
                        let result =
                            JobResult::not_started(&job, Status::Error, why.clone(), String::new());
                        encode_line(&job.object, &result, &mut line);
                        summary.failed += 1;
                    } else {
                        // Serializing a Map into a Vec cannot fail.
                        let _ = serde_json::to_writer(&mut line, &job.object);
                        line.push(b'\n');
                    }
                    summary.done += 1;
                    output.write_raw(line);
                }
                None => {
                    input_ended = true;
                    break;
                }
            },
            event = controls.next() => match event {
                Event::Interrupt(sig) | Event::KillNow(sig) => {
                    summary.interrupted_by = Some(sig);
                    break;
                }
                Event::Hangup => break,
            },
            _ = output.changed() => {}
        }
    }
    // The reader may be blocked reading a terminal or a pipe, or sending: it is told to stop
    // and left; it is joined only when it ended the input itself.
    state.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    state.wake();
    drop(rx);
    output.finish();
    if let Some(sig) = output
        .flush(controls, summary.interrupted_by.is_some())
        .await
    {
        summary.interrupted_by.get_or_insert(sig);
    }
    if let Some(failure) = output.new_failure() {
        match failure {
            OutputFailure::BrokenPipe => summary.broken_pipe = true,
            OutputFailure::Failed(why) => {
                summary.fatal.get_or_insert(why);
            }
        }
    }
    if input_ended {
        if let Ok(Err(e)) = reader.join() {
            summary.fatal.get_or_insert(e);
        }
    }
    summary
}
