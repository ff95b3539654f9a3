//! The `bakapara` command: parse the command line, run, map the outcome to an exit status.

use std::io::IsTerminal;
use std::io::Write;
use std::process::ExitCode;

use bakapara::config::{Config, ConfigError};
use bakapara::jobserver::Jobserver;
use bakapara::progress::Verbosity;
use bakapara::signals::die_of;

fn main() -> ExitCode {
    // First, while the descriptors MAKEFLAGS names are still the ones make left open.
    let jobserver = Jobserver::from_env();
    let mut config = match Config::from_args(std::env::args_os()) {
        Ok(config) => config,
        Err(ConfigError::Clap(e)) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(255)
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(ConfigError::Invalid(message)) => {
            eprintln!("bakapara: error: {message}");
            return ExitCode::from(255);
        }
        Err(ConfigError::Print(text)) => return print(&text),
    };
    match jobserver {
        Ok(jobserver) => config.jobserver = jobserver,
        Err(why) if config.verbosity != Verbosity::Quiet => eprintln!("bakapara: note: {why}"),
        Err(_) => {}
    }
    if let Err(e) = bakapara::run::check_resume_is_not_stdout(&config) {
        eprintln!("bakapara: error: {e:#}");
        return ExitCode::from(255);
    }
    config.text_for_terminal(std::io::stdout().is_terminal());
    for warning in &config.warnings {
        eprintln!("bakapara: warning: {warning}");
    }
    let stdout = std::io::stdout().lock();
    let summary = match bakapara::run::run(config, stdout, true) {
        Ok(summary) => summary,
        Err(e) => {
            eprintln!("bakapara: error: {e:#}");
            return ExitCode::from(255);
        }
    };
    if let Some(sig) = summary.interrupted_by {
        die_of(sig);
    }
    if let Some(fatal) = &summary.fatal {
        eprintln!("bakapara: error: {fatal}");
        return ExitCode::from(255);
    }
    if let Some(status) = summary.halt_status {
        return ExitCode::from(status);
    }
    ExitCode::from(match summary.failed {
        0 => 0,
        n @ 1..=100 => n as u8,
        _ => 101,
    })
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
            eprintln!("bakapara: error: cannot write to stdout: {e}");
            ExitCode::from(255)
        }
    }
}
