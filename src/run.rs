//! A whole run: start the input reader, run the scheduler, report how it ended.

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::exec::local::LocalExecutor;
use crate::exec::ssh::{HostDown, SshHost};
use crate::exec::Executor;
use crate::hosts::HostSpec;
use crate::input::{spawn_reader, ReaderState};
use crate::job::{encode_line, Body, JobResult, Status};
use crate::live::LiveSink;
use crate::output::Output;
use crate::progress::{Logger, Verbosity};
use crate::results::ResultsDir;
use crate::scheduler::{Host, Resume, Scheduler, Summary};
use crate::signals::{AbortReceiver, Controls, Signals};

/// Said on stderr when jobs are read from a terminal, where a person may not know that bakapara
/// waits for them (GNU Parallel warns likewise). Shown even with `-q`: it is no progress, and
/// without it the run looks hung.
const TERMINAL_INPUT_HINT: &str = "bakapara: reading jobs from the terminal, one per line; \
     press Ctrl-D on an empty line to end the input (or pipe jobs in, or give ::: arguments)";

/// Jobs read ahead of the free slots; bounds memory whatever the input length.
const CHANNEL_CAPACITY: usize = 256;

/// Runs every job the config describes, writing result lines to `out`. With `handle_signals`,
/// SIGINT / SIGTERM / SIGHUP stop the run as SPEC §5 says (the caller then dies of the signal
/// in `Summary::interrupted_by`).
pub fn run<W: Write>(config: Config, out: W, handle_signals: bool) -> anyhow::Result<Summary> {
    run_with(config, out, handle_signals, None)
}

/// As [`run`], and `abort` (the other end of an [`crate::signals::AbortHandle`]) stops the run
/// from another thread as a signal would.
pub fn run_with<W: Write>(
    config: Config,
    out: W,
    handle_signals: bool,
    abort: Option<AbortReceiver>,
) -> anyhow::Result<Summary> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(config, out, handle_signals, abort))
}

async fn run_async<W: Write>(
    config: Config,
    out: W,
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
    // The reader's total is also the templates' `<##>`.
    let state = Arc::new(ReaderState {
        total: Arc::clone(&config.templates.total),
        ..ReaderState::default()
    });
    let known_total = config.input.known_total();
    let reader = spawn_reader(config.input.clone(), tx, Arc::clone(&state))?;
    if config.input.reads_stdin() && std::io::stdin().is_terminal() {
        // Before any display starts; a closed or full stderr must not stop the run.
        let _ = writeln!(std::io::stderr(), "{TERMINAL_INPUT_HINT}");
    }
    if config.dry_run {
        return Ok(dry_run(config, rx, out, reader).await);
    }
    let resume = match &config.resume {
        Some(file) => load_resume(file, config.verbosity)?,
        None => Resume::new(),
    };
    let (down_tx, down_rx) = mpsc::unbounded_channel();
    let joblog = open_joblog(&config)?;
    // A live progress display when stderr is a terminal, log lines otherwise.
    let logger = Logger::for_stderr(config.verbosity).with_input_total(Arc::clone(&state.total));
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
    let live = match config.live {
        Some(mode) => Some(LiveSink::start(mode, logger.suspender())?),
        None => None,
    };
    let hosts = connect_hosts(
        &config,
        control_dir.as_ref().map(|d| d.path()),
        down_tx,
        &logger,
        live.as_ref(),
    )
    .await;
    if !hosts.iter().any(|h| h.executor.is_some()) {
        anyhow::bail!("no host could be reached");
    }
    let mut output = Output::new(out, config.keep_order, logger);
    if config.text {
        output = output.text(config.tag);
        if let Some(template) = &config.tagstring {
            output = output.tagstring(template.clone());
        }
        if let Some(live) = &live {
            let local = hosts.iter().filter(|h| h.spec.local);
            let names = local.map(|h| h.spec.name.clone()).collect();
            output = output.printed_live(names, live.clone());
        }
    }
    if let Some(dir) = &config.results {
        output = output.results(ResultsDir::new(dir.clone()), config.settings.capture_limit);
    }
    if let (Some(file), Some(path)) = (joblog, &config.joblog) {
        output = output.joblog(file, path.clone());
    }
    if let Some(total) = known_total {
        output.set_total(total);
    }
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
    )
    .with_jobserver(config.jobserver.as_ref());
    let mut summary = scheduler
        .run(known_total, Controls::new(signals, abort))
        .await;
    if let Some(live) = &live {
        live.flush().await;
        if let Some(e) = live.take_error() {
            summary
                .fatal
                .get_or_insert_with(|| format!("cannot write job output to stdout: {e}"));
        }
    }
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
    live: Option<&LiveSink>,
) -> Vec<Host> {
    let local = |spec: HostSpec| {
        let slots = spec.slots.unwrap_or(config.jobs);
        let executor = LocalExecutor::new(config.base_dir.clone())
            .with_spool(config.text || config.results.is_some())
            .with_running(logger.running(&spec.name))
            .with_live(live.cloned());
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
                    .with_spool(config.text || config.results.is_some())
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

/// Refuses a `--resume FILE` that is also this process's stdout (`--resume r.jsonl ... >
/// r.jsonl`): the shell emptied it before bakapara could read it, and every job would run
/// again while the old results are lost. Call before any job runs, when stdout is the output.
pub fn check_resume_is_not_stdout(config: &Config) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(resume) = &config.resume else {
        return Ok(());
    };
    let Ok(file) = std::fs::metadata(resume) else {
        return Ok(()); // A missing file is nothing to skip (see load_resume).
    };
    if !file.is_file() {
        return Ok(()); // `--resume /dev/null > /dev/null` loses nothing.
    }
    let same = |dev: u64, ino: u64| dev == file.dev() && ino == file.ino();
    // fstat of fd 1, and what /proc says fd 1 is (the same file, unless /proc is missing).
    let by_fstat = nix::sys::stat::fstat(1).is_ok_and(|st| same(st.st_dev, st.st_ino));
    let by_proc = std::fs::metadata("/proc/self/fd/1").is_ok_and(|m| same(m.dev(), m.ino()));
    if by_fstat || by_proc {
        anyhow::bail!(
            "stdout is the --resume file {}: the shell emptied it before bakapara could read \
             it; write the new results to another file (then rename it)",
            resume.display()
        );
    }
    Ok(())
}

/// Reads `--resume FILE`: the result lines with status ok and code 0, by (cmd, cd). Lines that
/// are not such results are passed over. A missing FILE is nothing to skip (so a Makefile
/// recipe can pass `--resume` from its first run on): a note says so, and every job runs.
fn load_resume(file: &std::path::Path, verbosity: Verbosity) -> anyhow::Result<Resume> {
    use std::io::BufRead;
    let opened = match std::fs::File::open(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if verbosity != Verbosity::Quiet {
                eprintln!(
                    "bakapara: note: --resume {} does not exist yet: nothing to skip, every job runs",
                    file.display()
                );
            }
            return Ok(Resume::new());
        }
        opened => opened.map_err(|e| anyhow::anyhow!("--resume {}: {e}", file.display()))?,
    };
    let reader = std::io::BufReader::new(opened);
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

/// `--dry-run`: print each job as it would run (templates expanded, slots given round-robin):
/// its JSON object, or with `--text` its command line.
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
        halt_status: None,
    };
    let slots = config.jobs.max(1) as u64;
    let mut line = Vec::new();
    while let Some(mut job) = rx.recv().await {
        let slot = ((job.seq - 1) % slots + 1) as usize;
        config.templates.materialize(&mut job, slot);
        line.clear();
        if config.text {
            // As GNU Parallel's --dry-run: the command lines; a job that cannot run says why
            // on stderr.
            match &job.body {
                Body::Ready(spec) => {
                    line.extend_from_slice(spec.cmd.as_bytes());
                    line.push(b'\n');
                }
                Body::Invalid(why) => {
                    let _ = writeln!(std::io::stderr(), "bakapara: job {}: {why}", job.seq);
                    summary.failed += 1;
                }
                Body::Pending(_) => {}
            }
        } else if let Body::Invalid(why) = &job.body {
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
