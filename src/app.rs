//! The command line as a client of the library: parse argv, report usage errors, run, and map
//! the outcome to the exit status of SPEC §5. `main.rs` only adds the check of descriptor 1
//! that must run before Rust's runtime starts.

use std::io::IsTerminal;
use std::io::Write;
use std::process::ExitCode;

use crate::config::{Config, ConfigError};
use crate::jobserver::Jobserver;
use crate::progress::Verbosity;
use crate::signals::die_of;

/// Runs `bakapara` with the process's arguments, standard streams and signals.
/// `stdout_open`: descriptor 1 was open when the process started.
#[must_use]
pub fn main(stdout_open: bool) -> ExitCode {
    // Checked before anything opens a file: a file opened now could get descriptor 1, and
    // result lines would go into it.
    if !stdout_open {
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
    if let Err(e) = crate::run::check_resume_is_not_stdout(&config) {
        say(&format!("bakapara: error: {e:#}"));
        return ExitCode::from(255);
    }
    config.text_for_terminal(std::io::stdout().is_terminal());
    for warning in &config.warnings {
        say(&format!("bakapara: warning: {warning}"));
    }
    let summary = match crate::run::run_to_stdout(config, true) {
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
