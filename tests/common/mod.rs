//! Helpers shared by the integration tests. Each test binary uses a different subset.
#![allow(dead_code)]

pub mod bin;
pub mod sshd;
pub mod tmux;
