//! What a run reports as it goes: `log.jsonl` (one line of means per logging window) and the
//! progress bar.

use super::step::StepStats;
use super::TrainConfig;
use anyhow::Result;
use indicatif::{ProgressBar, ProgressDrawTarget};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// One line of `log.jsonl`: means over the steps since the previous line.
#[derive(Serialize, Deserialize, Debug)]
pub struct LogLine {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub steps_per_s: f64,
    pub samples_per_s: f64,
    pub elapsed_s: f64,
    /// Share of the window's wall time spent waiting for the loader's next batch (near 0 when
    /// data keeps up). Absent from logs written before it existed.
    #[serde(default)]
    pub data_wait: f64,
    /// Share of the window's wall time spent in the gradient all-reduce of a data-parallel run
    /// (0 for a single process). Absent from logs written before it existed.
    #[serde(default)]
    pub comm: f64,
}

struct Window {
    since: Instant,
    n: u64,
    loss: f64,
    grad_norm: f64,
    lr: f64,
    waited: Duration,
    comm: Duration,
}

impl Window {
    fn new(since: Instant) -> Self {
        Window {
            since,
            n: 0,
            loss: 0.0,
            grad_norm: 0.0,
            lr: 0.0,
            waited: Duration::ZERO,
            comm: Duration::ZERO,
        }
    }

    fn wait(&mut self, d: Duration) {
        self.waited += d;
    }

    fn add(&mut self, s: &StepStats) {
        self.n += 1;
        self.loss += s.loss;
        self.grad_norm += s.grad_norm;
        self.lr = s.lr;
        self.comm += s.comm;
    }

    fn line(&self, step: u64, batch: usize, t0: Instant) -> LogLine {
        let n = self.n.max(1) as f64;
        let wall = self.since.elapsed().as_secs_f64().max(1e-9);
        let rate = n / wall;
        LogLine {
            step,
            loss: self.loss / n,
            lr: self.lr,
            grad_norm: self.grad_norm / n,
            steps_per_s: rate,
            samples_per_s: rate * batch as f64,
            elapsed_s: t0.elapsed().as_secs_f64(),
            data_wait: (self.waited.as_secs_f64() / wall).min(1.0),
            comm: (self.comm.as_secs_f64() / wall).min(1.0),
        }
    }
}

/// The log file, the current window and the bar of a run from its first step to train.
pub(super) struct Report {
    /// `log.jsonl` (on the rank that writes the run's files).
    log: Option<File>,
    window: Window,
    bar: ProgressBar,
    t0: Instant,
    log_every: u64,
    steps: u64,
    batch: usize,
    /// Mean loss of the last logged window.
    pub loss: f64,
}

impl Report {
    /// Starts reporting at step `start` into `log` (`show`: draw the bar on a terminal).
    pub fn new(cfg: &TrainConfig, log: Option<File>, start: u64, show: bool) -> Self {
        let bar = crate::progress::bar(cfg.steps, "training");
        if !show {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_position(start);
        Report {
            log,
            window: Window::new(Instant::now()),
            bar,
            t0: Instant::now(),
            log_every: cfg.log_every,
            steps: cfg.steps,
            batch: cfg.batch,
            loss: f64::NAN,
        }
    }

    /// Time spent waiting for the loader.
    pub fn waited(&mut self, d: Duration) {
        self.window.wait(d);
    }

    /// Adds step `done`'s stats; at the end of a window writes its line and shows it on the bar.
    pub fn step(&mut self, done: u64, stats: &StepStats) -> Result<()> {
        self.window.add(stats);
        if done.is_multiple_of(self.log_every) || done == self.steps {
            let line = self.window.line(done, self.batch, self.t0);
            self.loss = line.loss;
            if let Some(log) = &mut self.log {
                writeln!(log, "{}", serde_json::to_string(&line)?)?;
            }
            self.bar.set_message(format!(
                "loss {:.4} | {:.1} it/s",
                line.loss, line.steps_per_s
            ));
            self.window = Window::new(Instant::now());
        }
        self.bar.inc(1);
        Ok(())
    }

    /// Writes the line of an unfinished window ending at step `done` (a run stopped early).
    pub fn flush(&mut self, done: u64) -> Result<()> {
        if self.window.n > 0 {
            let line = self.window.line(done, self.batch, self.t0);
            self.loss = line.loss;
            if let Some(log) = &mut self.log {
                writeln!(log, "{}", serde_json::to_string(&line)?)?;
            }
            self.window = Window::new(Instant::now());
        }
        Ok(())
    }

    /// Leaves the bar where a failed step stopped it.
    pub fn abandon(&self) {
        self.bar.abandon();
    }

    /// Clears the bar; returns the seconds since reporting started.
    pub fn finish(&self) -> f64 {
        self.bar.finish_and_clear();
        self.t0.elapsed().as_secs_f64()
    }
}

/// Drops log lines past `step` (written after the checkpoint a run resumes from).
pub(super) fn truncate_log(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<LogLine>(l).is_ok_and(|l| l.step <= step))
        .map(|l| format!("{l}\n"))
        .collect();
    if kept == text {
        return Ok(());
    }
    crate::output::write_bytes(path, kept.as_bytes())
}
