//! The integration tests, one binary: a module per topic, all sharing the helpers in
//! `common` (the binary under test, the sshd harness, tmux). `cargo test --test integration
//! ssh_run::` runs one topic.

mod agent;
mod battery;
mod common;
mod generated_docs;
mod gnu_habits;
mod gnu_input;
mod gnu_pipe;
mod library;
mod local_run;
mod makefile;
mod output_and_values;
mod parse_props;
mod pipe;
mod processes;
mod progress_tty;
mod readme;
mod reliability;
mod slurm;
mod ssh_files;
mod ssh_pipe;
mod ssh_run;
mod sshd_harness;
mod text_mode;
