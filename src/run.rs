//! A whole run: start the input reader, run the scheduler, report how it ended.

use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Config;
use crate::exec::control_dir::ControlDir;
use crate::exec::local::LocalExecutor;
use crate::exec::ssh::{self, SshHost};
use crate::exec::{HostEvent, HostEvents};
use crate::hosts::HostSpec;
use crate::input::{spawn_reader, ReaderState};
use crate::job::{encode_line, Body, JobResult, Status};
use crate::live::LiveSink;
use crate::output::{Output, OutputFailure, Reach};
use crate::progress::{Logger, Verbosity};
use crate::results::ResultsDir;
use crate::scheduler::{Host, Resume, Scheduler, Summary};
use crate::signals::{die_of, AbortReceiver, Controls, Event, Signals};
use crate::watchdog::Watchdog;

/// Said on stderr when jobs are read from a terminal, where a person may not know that bakapara
/// waits for them (GNU Parallel warns likewise). Shown even with `-q`: it is no progress, and
/// without it the run looks hung.
const TERMINAL_INPUT_HINT: &str = "bakapara: reading jobs from the terminal, one per line; \
     press Ctrl-D on an empty line to end the input (or pipe jobs in, or give ::: arguments)";

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

/// As [`run`], to the process's stdout: a result line that cannot wait there (stdout is a
/// file, `/dev/null`, or a pipe with room; see [`Reach`]) is written by the scheduler at once,
/// without waking the writer thread.
pub fn run_to_stdout(config: Config, handle_signals: bool) -> anyhow::Result<Summary> {
    let reach = Reach::of(std::io::stdout().as_fd());
    let writer = |output: &mut Output| output.writer_to(std::io::stdout(), reach);
    run_inner(config, writer, handle_signals, None)
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
    run_inner(config, |output| output.writer(out), handle_signals, abort)
}

/// A run whose writer `make_writer` makes (see [`Output::writer`]).
fn run_inner<W: Write + Send>(
    config: Config,
    make_writer: impl FnOnce(&mut Output) -> crate::output::Writer<W>,
    handle_signals: bool,
    abort: Option<AbortReceiver>,
) -> anyhow::Result<Summary> {
    // The runtime's own thread is this one; the blocking pool's threads leave it the signals.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(crate::signals::keep_off_this_thread)
        .build()?;
    std::thread::scope(|scope| {
        let mut writer = None;
        let summary = runtime.block_on(run_async(
            config,
            |output: &mut Output| {
                let thread = make_writer(output);
                writer = Some(output.state());
                std::thread::Builder::new()
                    .name("bakapara-output".into())
                    .spawn_scoped(scope, move || thread.run())
                    .map(|_| ())
            },
            Plumbing {
                handle_signals,
                abort,
                ..Plumbing::default()
            },
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

/// How a run is connected to the world beyond its config: the command line's signals and
/// stdin, or a library caller's jobs, events and silence.
#[derive(Debug, Default)]
pub(crate) struct Plumbing {
    /// SIGINT / SIGTERM / SIGHUP stop the run (SPEC §5).
    pub handle_signals: bool,
    /// Stops the run from elsewhere, as a signal would.
    pub abort: Option<AbortReceiver>,
    /// Jobs from a library caller, instead of the config's input.
    pub jobs: Option<mpsc::Receiver<crate::job::Job>>,
    /// Nothing on stderr: no log line, no display, no hint.
    pub silent: bool,
    /// Where the scheduler's events go.
    pub events: Option<mpsc::UnboundedSender<crate::scheduler::RunEvent>>,
}

/// A run on the caller's Tokio runtime (the library's [`crate::api`]): result lines go to `out`,
/// which is `reach` (see [`Output::writer_to`]), from a thread of its own when they may wait.
pub(crate) async fn run_spawned<W: Write + Send + 'static>(
    config: Config,
    out: W,
    reach: Reach,
    plumbing: Plumbing,
) -> anyhow::Result<Summary> {
    let mut writer = None;
    let summary = run_async(
        config,
        |output: &mut Output| {
            let thread = output.writer_to(out, reach);
            std::thread::Builder::new()
                .name("bakapara-output".into())
                .spawn(move || thread.run())
                .map(|handle| writer = Some(handle))
        },
        plumbing,
    )
    .await;
    if let Some(writer) = writer {
        // The writer has written everything by now (the scheduler waited for it).
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    }
    summary
}

async fn run_async(
    config: Config,
    start_writer: impl FnOnce(&mut Output) -> std::io::Result<()>,
    plumbing: Plumbing,
) -> anyhow::Result<Summary> {
    let Plumbing {
        handle_signals,
        abort,
        jobs,
        silent,
        events,
    } = plumbing;
    // Signals are taken over before anything starts, so no Ctrl-C is lost.
    let signals = if handle_signals {
        Some(Signals::new()?)
    } else {
        None
    };
    // The reader's total is also the templates' `<##>`.
    let state = Arc::new(ReaderState::with_total(Arc::clone(&config.templates.total)));
    let (known_total, reader, rx) = if let Some(rx) = jobs {
        (None, None, rx)
    } else {
        let (tx, rx) = mpsc::channel(crate::input::READ_AHEAD_JOBS);
        let reader = spawn_reader(config.input.clone(), tx, Arc::clone(&state))?;
        (config.input.known_total(), Some(reader), rx)
    };
    if reader.is_some() && config.input.reads_stdin() && std::io::stdin().is_terminal() {
        // Before any display starts; a closed or full stderr must not stop the run.
        let _ = writeln!(std::io::stderr(), "{TERMINAL_INPUT_HINT}");
    }
    let mut controls = Controls::new(signals, abort);
    if config.dry_run {
        // Its stderr carries nothing but warnings (`completed` would count no job run).
        let mut output = Output::new(false, Logger::new(crate::progress::Verbosity::Quiet));
        start_writer(&mut output)?;
        return Ok(dry_run(config, rx, output, reader, state, &mut controls).await);
    }
    let resume = match &config.resume {
        Some(file) => load_resume(file, config.verbosity)?,
        None => Resume::new(),
    };
    let joblog = open_joblog(&config)?;
    // A live progress display when stderr is a terminal, log lines otherwise.
    let logger = if silent {
        Logger::silent()
    } else {
        Logger::for_stderr(config.verbosity)
    };
    let logger = logger.with_input_total(Arc::clone(&state.total));
    let watchdog = Arc::new(Watchdog::start().unwrap_or_else(|e| {
        logger.warn(&format!(
            "bakapara: cannot start the watchdog ({e}): jobs would outlive a killed bakapara"
        ));
        Watchdog::without_process()
    }));
    controls.suspend_jobs_with(Arc::clone(&watchdog));
    // The SSH control sockets live in a directory of this run's own, removed at its end.
    let control_dir = if config.hosts.iter().any(|h| !h.local) {
        let files = vec![(
            ssh::CONFIG_NAME.to_string(),
            ssh::generated_config(&config.ssh),
        )];
        Some(Arc::new(ControlDir::create(files)?))
    } else {
        None
    };
    let live = match config.live {
        Some(mode) => Some(LiveSink::start(mode, logger.suspender())?),
        None => None,
    };
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (hosts, mut joining) = connect_hosts(
        &config,
        control_dir.clone(),
        events_tx,
        live.as_ref(),
        &watchdog,
    )
    .await;
    let mut output = Output::new(config.keep_order, logger);
    if config.text {
        output = output.text(config.tag);
        if let Some(template) = &config.tagstring {
            output = output.tagstring(template.clone());
        }
        if config.gather {
            output = output.gather();
        } else if config.input.every_host.is_some() && config.live.is_none() {
            output = output.group_by_host();
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
    start_writer(&mut output)?;
    let scheduler = Scheduler::new(
        hosts,
        config.templates,
        config.settings,
        rx,
        state,
        reader,
        output,
        events_rx,
        config.halt,
        resume,
    )
    .with_jobserver(config.jobserver.as_ref())
    .with_events(events);
    let mut summary = scheduler.run(known_total, controls).await;
    if let Some(live) = &live {
        live.flush().await;
        if let Some(e) = live.take_error() {
            summary
                .fatal
                .get_or_insert_with(|| format!("cannot write job output to stdout: {e}"));
        }
    }
    if let Some(dir) = &control_dir {
        ssh::stop_connecting(dir.path());
    }
    // The hosts still connecting see the run over (the scheduler is gone): one that came up
    // meanwhile closes its connection, which must be done before bakapara exits, or its
    // master stays for `ControlPersist`. (Bounded: a close gives up on a master after 5 s.)
    let _ = tokio::time::timeout(JOINING_ENDS_WITHIN, async {
        while joining.join_next().await.is_some() {}
    })
    .await;
    watchdog.finish().await;
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

/// How long the end of a run waits for the hosts still connecting to see it is over.
const JOINING_ENDS_WITHIN: std::time::Duration = std::time::Duration::from_secs(10);

/// The run's hosts, in `-S` order: this machine, and SSH hosts, which connect in the
/// background and join the run through `events` as each is ready (see [`join`]), and the tasks
/// connecting them. Returns once one host is ready or every SSH host has had its first try, so
/// that jobs start on the first host that is ready and the run's first line counts the engines
/// there are.
async fn connect_hosts(
    config: &Config,
    control_dir: Option<Arc<ControlDir>>,
    events: HostEvents,
    live: Option<&LiveSink>,
    watchdog: &Arc<Watchdog>,
) -> (Vec<Host>, tokio::task::JoinSet<()>) {
    let local = |spec: HostSpec| {
        let slots = spec.slots.unwrap_or(config.jobs);
        let executor = LocalExecutor::new(config.base_dir.clone())
            .with_spool(config.text || config.results.is_some())
            .with_live(live.cloned())
            .with_watchdog(Arc::clone(watchdog));
        Host {
            spec,
            executor: Some(Arc::new(executor)),
            slots,
            joining: false,
        }
    };
    let mut joining = tokio::task::JoinSet::new();
    if config.hosts.is_empty() {
        return (vec![local(HostSpec::local(Some(config.jobs)))], joining);
    }
    let mut options = config.ssh.clone();
    options.control_dir = control_dir;
    // (first tries done, some host up)
    let (tried_tx, mut tried_rx) = tokio::sync::watch::channel((0usize, false));
    let mut hosts = Vec::with_capacity(config.hosts.len());
    for (index, spec) in config.hosts.iter().enumerate() {
        if spec.local {
            hosts.push(local(spec.clone()));
            continue;
        }
        let connection = Connection {
            index,
            spec: spec.clone(),
            options: options.clone(),
            events: events.clone(),
            spool: config.text || config.results.is_some(),
            watchdog: Arc::clone(watchdog),
        };
        joining.spawn(join(connection, tried_tx.clone()));
        hosts.push(Host {
            spec: spec.clone(),
            executor: None,
            slots: 0,
            joining: true,
        });
    }
    // Only the tasks hold senders now: should they all end early, the wait ends too.
    drop(tried_tx);
    let remote = hosts.iter().filter(|h| h.joining).count();
    if remote == hosts.len() {
        let _ = tried_rx
            .wait_for(|&(tried, up)| up || tried == remote)
            .await;
    }
    (hosts, joining)
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

/// What [`join`] needs to connect one SSH host.
struct Connection {
    index: usize,
    spec: HostSpec,
    options: ssh::SshOptions,
    events: HostEvents,
    spool: bool,
    /// Where the host goes once up, for Ctrl-Z to stop its jobs too.
    watchdog: Arc<Watchdog>,
}

/// Connects one SSH host, trying again with back-off while it cannot be reached, until it is
/// up (it joins the run), its failure is one that lasts (it is left out), or the run is over.
async fn join(c: Connection, tried_tx: tokio::sync::watch::Sender<(usize, bool)>) {
    let mut pause = std::time::Duration::from_millis(250);
    let mut first = true;
    let mut reported = false;
    loop {
        // (A run that ends meanwhile drops the attempt: its ssh or launcher is killed, a master
        // that is up already is closed as its session drops.)
        let connected = tokio::select! {
            // (The end first: an attempt polled after it could start one more process.)
            biased;
            () = c.events.closed() => return,
            connected = SshHost::connect(
                c.index,
                c.spec.clone(),
                c.options.clone(),
                c.events.clone(),
            ) => connected,
        };
        if first {
            first = false;
            let up = connected.is_ok();
            tried_tx.send_modify(|(tried, any_up)| {
                *tried += 1;
                *any_up |= up;
            });
        }
        let news = match connected {
            Ok(ssh) => {
                let ssh = ssh
                    .with_spool(c.spool)
                    .with_watchdog(Arc::clone(&c.watchdog))
                    .start();
                let pausable = Arc::clone(&ssh) as Arc<dyn crate::watchdog::Pausable>;
                c.watchdog.pause_with(&pausable);
                let slots = ssh.slots();
                let executor = Arc::clone(&ssh) as Arc<dyn crate::exec::Executor>;
                if c.events
                    .send((c.index, HostEvent::Joined { executor, slots }))
                    .is_err()
                {
                    // The run ended meanwhile.
                    ssh.close().await;
                }
                return;
            }
            Err(why) if ssh::lasting_failure(&why) => {
                let _ = c.events.send((c.index, HostEvent::LeftOut(why)));
                return;
            }
            Err(why) => HostEvent::Unreachable(why),
        };
        if !reported && c.events.send((c.index, news)).is_err() {
            return;
        }
        reported = true;
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = c.events.closed() => return,
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(10));
    }
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
            && result
                .and_then(|r| r.get("code"))
                .and_then(serde_json::Value::as_i64)
                == Some(0);
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

/// `--dry-run`: print each job as it would run (templates expanded, slots given round-robin):
/// its JSON object, or with `--text` its command line. Signals and a failed stdout stop it as
/// they stop a run.
async fn dry_run(
    config: Config,
    mut rx: mpsc::Receiver<crate::job::Job>,
    mut output: Output,
    reader: Option<std::thread::JoinHandle<Result<(), String>>>,
    state: Arc<ReaderState>,
    controls: &mut Controls,
) -> Summary {
    let mut summary = Summary {
        done: 0,
        failed: 0,
        interrupted_by: None,
        fatal: None,
        halt_status: None,
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
            job = rx.recv(), if !output.backlogged() => if let Some(mut job) = job {
                state.taken(&job);
                let slot = usize::try_from((job.seq - 1) % slots + 1).unwrap_or(1);
                config.templates.materialize(&mut job, slot);
                let mut line = Vec::new();
                if config.text {
                    // As GNU Parallel's --dry-run: the command lines; a job that cannot
                    // run says why on stderr.
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
            } else {
                input_ended = true;
                break;
            },
            event = controls.next() => match event {
                Event::Interrupt(sig) | Event::KillNow(sig) => {
                    summary.interrupted_by = Some(sig);
                    break;
                }
                Event::Hangup => break,
            },
            () = output.changed() => {}
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
    if let (true, Some(reader)) = (input_ended, reader) {
        if let Ok(Err(e)) = reader.join() {
            summary.fatal.get_or_insert(e);
        }
    }
    summary
}
