//! `log.jsonl`: one line of means per logging window.

use super::step::StepStats;
use anyhow::Result;
use serde::{Deserialize, Serialize};
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
}

pub(super) struct Window {
    since: Instant,
    n: u64,
    loss: f64,
    grad_norm: f64,
    lr: f64,
    waited: Duration,
}

impl Window {
    pub(super) fn new(since: Instant) -> Self {
        Window {
            since,
            n: 0,
            loss: 0.0,
            grad_norm: 0.0,
            lr: 0.0,
            waited: Duration::ZERO,
        }
    }

    pub(super) fn wait(&mut self, d: Duration) {
        self.waited += d;
    }

    pub(super) fn add(&mut self, s: &StepStats) {
        self.n += 1;
        self.loss += s.loss;
        self.grad_norm += s.grad_norm;
        self.lr = s.lr;
    }

    pub(super) fn line(&self, step: u64, batch: usize, t0: Instant) -> LogLine {
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
        }
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
    std::fs::write(path, kept)?;
    Ok(())
}
