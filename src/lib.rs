//! bakapara: run embarrassingly parallel shell jobs on this machine and over SSH, one JSON
//! result line per job.
//!
//! The `bakapara` command is one client of this library; Rust code is another. Build a
//! [`Runner`] (local slots, hosts, timeout, retries, capture limit, halt policy), give it
//! typed [`Job`]s, and get each back with its typed [`JobResult`]: blocking with
//! [`Runner::run`], or on your own Tokio runtime with [`Runner::spawn`], whose [`Handle`]
//! streams [`Event`]s (job started / finished, host down / up) and has
//! [`status`](Handle::status), [`abort`](Handle::abort), [`kill`](Handle::kill) and
//! [`wait`](Handle::wait). The jobs go through the same scheduler, executors and result lines
//! as the command line's; a run touches neither the process's stdin, stdout and stderr
//! ([`Runner::log_to_stderr`] turns the log lines on) nor its signal handlers.
//!
//! ```
//! use bakapara::{Job, Runner, Status};
//!
//! let mut job = Job::new("echo \"$GREETING from $PWD\"");
//! job.cd = Some("/tmp".into());
//! job.env.insert("GREETING".into(), "hello".into());
//! job.carried.insert("id".into(), 7.into());
//! let results = Runner::new().slots(2).run([job, Job::new("exit 3")]).expect("the run works");
//! let (job, result) = &results[0];
//! assert_eq!(result.status, Status::Ok);
//! assert_eq!(result.stdout.as_deref(), Some("hello from /tmp\n"));
//! assert_eq!(job.carried["id"], 7, "other keys come back unchanged");
//! assert_eq!(results[1].1.code, Some(3));
//! ```
//!
//! # Stability
//!
//! The items at the crate root ([`Runner`], [`Handle`], [`Job`], [`JobResult`], [`Status`],
//! [`Event`], [`RunStatus`], [`Summary`], [`Error`], [`parse_result_line`]) are the library's
//! API: until 1.0 a breaking change to them comes with a minor version bump (0.x → 0.x+1) and
//! a note in the changelog. The modules below are the command line's internals, public only
//! for its own binary, tests and benchmarks: they are hidden from the documentation and may
//! change in any release.

#![warn(missing_docs)]

mod api;
#[doc(hidden)]
pub mod app;
#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod config;
#[doc(hidden)]
pub mod exec;
#[doc(hidden)]
pub mod gather;
#[doc(hidden)]
pub mod generate;
#[doc(hidden)]
pub mod halt;
#[doc(hidden)]
pub mod hostlist;
#[doc(hidden)]
pub mod hosts;
#[doc(hidden)]
pub mod input;
#[doc(hidden)]
pub mod job;
#[doc(hidden)]
pub mod jobserver;
#[doc(hidden)]
pub mod live;
#[doc(hidden)]
pub mod output;
#[doc(hidden)]
pub mod pipe;
#[doc(hidden)]
pub mod progress;
#[doc(hidden)]
pub mod results;
#[doc(hidden)]
pub mod run;
#[doc(hidden)]
pub mod scheduler;
#[doc(hidden)]
pub mod signals;
#[doc(hidden)]
pub mod slurm;
#[doc(hidden)]
pub mod template;
#[doc(hidden)]
pub mod throttle;
#[doc(hidden)]
pub mod timefmt;
#[doc(hidden)]
pub mod transfer;
#[doc(hidden)]
pub mod watchdog;

pub use api::{
    parse_result_line, Error, Event, Handle, Job, JobResult, RunStatus, Runner, Status, Summary,
};
