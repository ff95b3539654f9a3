//! Helpers shared by the integration test modules.
#![allow(dead_code)]

pub mod bin;
pub mod gnu;
pub mod relay;
pub mod slurm;
pub mod sshd;
pub mod tmux;
