//! The `bakapara` command: parse the command line, run, map the outcome to an exit status.

use std::io::IsTerminal;
use std::io::Write;
use std::process::ExitCode;

use bakapara::config::{Config, ConfigError};
use bakapara::jobserver::Jobserver;
use bakapara::progress::Verbosity;
use bakapara::signals::die_of;

fn main() -> ExitCode {
    // Checked before anything opens a file: a file opened now could get descriptor 1, and
    // result lines would go into it.
    if !stdout_is_open() {
        say("bakapara: error: standard output is closed: results would be lost (use >/dev/null to discard them)");
        return ExitCode::from(255);
    }
    // Next, while the descriptors MAKEFLAGS names are still the ones make left open.
    let jobserver = Jobserver::from_env();
    let mut config = match Config::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(ConfigError::Clap(e)) => {
            let printed = e.print();
            if e.use_stderr() {
                return ExitCode::from(255);
            }
            // --help or --version: the text is the whole output, so failing to write it fails.
            return match printed.and_then(|()| std::io::stdout().flush()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(why) => {
                    say(&format!("bakapara: error: cannot write to stdout: {why}"));
                    ExitCode::from(255)
                }
            };
        }
        Err(ConfigError::Invalid(message)) => {
            say(&format!("bakapara: error: {message}"));
            return ExitCode::from(255);
        }
        Err(ConfigError::Print(text)) => return print(&text),
    };
    match jobserver {
        Ok(jobserver) => config.jobserver = jobserver,
        Err(why) if config.verbosity != Verbosity::Quiet => say(&format!("bakapara: note: {why}")),
        Err(_) => {}
    }
    if let Err(e) = bakapara::run::check_resume_is_not_stdout(&config) {
        say(&format!("bakapara: error: {e:#}"));
        return ExitCode::from(255);
    }
    config.text_for_terminal(std::io::stdout().is_terminal());
    for warning in &config.warnings {
        say(&format!("bakapara: warning: {warning}"));
    }
    let summary = match bakapara::run::run(config, std::io::stdout(), true) {
        Ok(summary) => summary,
        Err(e) => {
            say(&format!("bakapara: error: {e:#}"));
            return ExitCode::from(255);
        }
    };
    if let Some(sig) = summary.interrupted_by {
        die_of(sig);
    }
    if let Some(fatal) = &summary.fatal {
        say(&format!("bakapara: error: {fatal}"));
    }
    ExitCode::from(summary.exit_code())
}

/// Writes what the command line asked for (`--generate`) to stdout: a reader that went away is
/// the quiet 141 of a filter killed by SIGPIPE, any other write error a fatal 255.
fn print(text: &str) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::from(141),
        Err(e) => {
            say(&format!("bakapara: error: cannot write to stdout: {e}"));
            ExitCode::from(255)
        }
    }
}

/// A message on stderr; a closed or full stderr is no reason to panic (`eprintln!` would).
fn say(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// False when descriptor 1 was not open when the process started (`bakapara ... >&-`).
fn stdout_is_open() -> bool {
    !STDOUT_CLOSED_AT_START.load(std::sync::atomic::Ordering::SeqCst)
        && nix::fcntl::fcntl(1, nix::fcntl::FcntlArg::F_GETFD).is_ok()
}

/// Whether descriptor 1 was closed before Rust's runtime started: the runtime then opens
/// /dev/null on it (so later checks see an open descriptor), which would silently discard
/// every result.
static STDOUT_CLOSED_AT_START: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Runs from the ELF `.init_array`, before Rust's runtime start-up replaces closed standard
/// descriptors. Sound before `main`: it makes one `fcntl` system call and stores into a static
/// atomic, touching nothing that needs the runtime (no allocation, no I/O, no thread-locals
/// but libc's own errno).
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static CHECK_STDOUT_AT_START: extern "C" fn() = {
    extern "C" fn check() {
        let closed = nix::fcntl::fcntl(1, nix::fcntl::FcntlArg::F_GETFD).is_err();
        STDOUT_CLOSED_AT_START.store(closed, std::sync::atomic::Ordering::SeqCst);
    }
    check
};
