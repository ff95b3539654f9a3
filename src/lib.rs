//! bakapara: run embarrassingly parallel shell jobs on this machine and over SSH, one JSON
//! result line per job.
//!
//! The binary is a thin shell over this library: build a [`config::Config`], then
//! [`run::run`] reads jobs, runs them on slots and writes one result line per job.

pub mod cli;
pub mod config;
pub mod exec;
pub mod halt;
pub mod hosts;
pub mod input;
pub mod job;
pub mod output;
pub mod progress;
pub mod run;
pub mod scheduler;
pub mod signals;
pub mod template;
pub mod timefmt;
