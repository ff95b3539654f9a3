//! The one writer of stdout: result lines, whole and flushed, in completion or input order.

use std::collections::BTreeMap;
use std::io::Write;

use serde_json::Value;

use crate::job::{encode_line, Job, JobResult};
use crate::progress::Logger;

/// Writes result lines and counts what the exit status needs.
pub struct Output<W: Write> {
    out: W,
    keep_order: bool,
    /// With `-k`: finished lines waiting for an earlier job, by seq.
    pending: BTreeMap<u64, Vec<u8>>,
    /// With `-k`: the seq of the next line to write.
    next_seq: u64,
    logger: Logger,
    done: u64,
    failed: u64,
    total: Option<u64>,
    /// Set when stdout could not be written: the run stops starting jobs.
    broken: Option<std::io::Error>,
}

impl<W: Write> Output<W> {
    pub fn new(out: W, keep_order: bool, logger: Logger) -> Output<W> {
        Output {
            out,
            keep_order,
            pending: BTreeMap::new(),
            next_seq: 1,
            logger,
            done: 0,
            failed: 0,
            total: None,
            broken: None,
        }
    }

    pub fn logger(&self) -> &Logger {
        &self.logger
    }

    /// The total number of jobs, once it is known.
    pub fn set_total(&mut self, total: u64) {
        self.total = Some(total);
    }

    /// Writes (or, with `-k`, queues) the result line of a finished job.
    pub fn emit(&mut self, job: &Job, result: &JobResult) {
        self.done += 1;
        if result.failed() {
            self.failed += 1;
        }
        let cmd = match job.object.get("cmd") {
            Some(Value::String(cmd)) => cmd.as_str(),
            _ => "",
        };
        self.logger.finished(self.done, self.total, result, cmd);
        let mut line = Vec::with_capacity(256);
        encode_line(&job.object, result, &mut line);
        self.place(job.seq, line);
    }

    /// Copies a result line from `--resume FILE` through unchanged for job `seq` (it counts as
    /// done and ok). `line` ends with a newline.
    pub fn emit_copied(&mut self, seq: u64, line: Vec<u8>, cmd: &str) {
        self.done += 1;
        self.logger.skipped(self.done, self.total, cmd);
        self.place(seq, line);
    }

    /// Writes a line now, or with `-k` once every earlier job's line is written.
    fn place(&mut self, seq: u64, line: Vec<u8>) {
        if !self.keep_order {
            self.write(&line);
            return;
        }
        if seq != self.next_seq {
            self.pending.insert(seq, line);
            return;
        }
        self.write(&line);
        self.next_seq += 1;
        while let Some(line) = self.pending.remove(&self.next_seq) {
            self.write(&line);
            self.next_seq += 1;
        }
    }

    fn write(&mut self, line: &[u8]) {
        if self.broken.is_some() {
            return;
        }
        if let Err(e) = self.out.write_all(line).and_then(|_| self.out.flush()) {
            self.broken = Some(e);
        }
    }

    /// Writes what `-k` still holds (lines after a gap that will never be filled), in order.
    pub fn finish(&mut self) {
        for (_, line) in std::mem::take(&mut self.pending) {
            self.write(&line);
        }
        self.logger.completed(self.done, self.failed);
    }

    /// Set once stdout failed (a closed pipe): no further line can be written.
    pub fn broken(&self) -> Option<&std::io::Error> {
        self.broken.as_ref()
    }

    pub fn done(&self) -> u64 {
        self.done
    }

    pub fn failed(&self) -> u64 {
        self.failed
    }
}
