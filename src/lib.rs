//! bakapara: run embarrassingly parallel shell jobs on this machine and over SSH, one JSON
//! result line per job.
//!
//! The binary is a thin shell over this library: build a [`config::Config`], then
//! [`run::run`] reads jobs, runs them on slots and writes one result line per job to any
//! writer; [`run::run_with`] also takes the receiving end of a [`signals::AbortHandle`], which
//! stops the run from another thread the way Ctrl-C or SIGHUP would.
//!
//! ```no_run
//! use bakapara::config::Config;
//!
//! let args = ["bakapara", "-j", "4", "gzip -9 <>", ":::", "a.log", "b.log"];
//! let config = Config::from_args(args.iter().map(Into::into)).expect("a valid command line");
//! let mut results = Vec::new();
//! let summary = bakapara::run::run(config, &mut results, false).expect("the run works");
//! assert_eq!(summary.done, 2);
//! ```

pub mod cli;
pub mod config;
pub mod exec;
pub mod gather;
pub mod generate;
pub mod halt;
pub mod hosts;
pub mod input;
pub mod job;
pub mod jobserver;
pub mod live;
pub mod output;
pub mod pipe;
pub mod progress;
pub mod results;
pub mod run;
pub mod scheduler;
pub mod signals;
pub mod template;
pub mod throttle;
pub mod timefmt;
pub mod transfer;
pub mod watchdog;
