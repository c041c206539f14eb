//! What multistep solvers defined on the log-SNR share: the run's history of predictions, its
//! step counter, the half log-SNR lambda = ln(alpha / sigma) in which they are written (so any
//! schedule only supplies the grid), and linear combinations of batches with f64 coefficients.
//!
//! A point at lambda = -inf (alpha_t = 0, t = 1 of a cosine schedule) never enters the history:
//! the log-SNR step from it is infinite, no polynomial in lambda reaches across it, and the usual
//! finite differences drop it in that limit ((m0 - m1) / r0 -> 0 as the step ratio r0 -> inf).
//! A step to lambda = +inf (sigma_s = 0) is first order for the same reason: it returns x_hat.

use crate::schedule::Schedule;
use crate::tensor::Batch;
use std::collections::VecDeque;

/// lambda(t) = ln(alpha_t / sigma_t), half the schedule's log-SNR (exponential integrators' variable).
pub fn half_logsnr(schedule: &dyn Schedule, t: f64) -> f64 {
    0.5 * schedule.logsnr(t)
}

/// One evaluation: the prediction x_hat at the point of a run with half log-SNR `lambda`, at
/// time `t`.
#[derive(Clone)]
pub struct Point {
    pub t: f64,
    pub lambda: f64,
    pub x_hat: Batch,
}

/// A run's step counter and its latest predictions, newest first.
#[derive(Clone)]
pub struct History {
    /// Steps in the run's grid.
    pub steps: usize,
    /// Steps taken so far.
    pub done: usize,
    /// The latest predictions at finite lambda, newest first, at most `keep`.
    pub points: VecDeque<Point>,
    keep: usize,
}

impl History {
    /// An empty history for a run over `grid` that keeps the latest `keep` predictions.
    pub fn new(grid: &[f64], keep: usize) -> Self {
        History {
            steps: grid.len().saturating_sub(1),
            done: 0,
            points: VecDeque::with_capacity(keep + 1),
            keep,
        }
    }

    /// Records a prediction (dropped when lambda is not finite, see the module comment).
    pub fn push(&mut self, point: Point) {
        if point.lambda.is_finite() {
            self.points.push_front(point);
            self.points.truncate(self.keep);
        }
    }

    /// Steps left in the run, this one included (at least 1).
    pub fn remaining(&self) -> usize {
        self.steps.saturating_sub(self.done).max(1)
    }
}

/// `sum_i c_i b_i`, coefficients formed in f64 and applied in f32; terms with c = 0 are skipped
/// (so a coefficient's limit of 0 never multiplies an infinite entry).
pub fn combine(terms: &[(f64, &Batch)]) -> Batch {
    let mut live = terms.iter().filter(|(c, _)| *c != 0.0);
    let Some((c0, b0)) = live.next() else {
        return (*terms[0].1).clone() * 0.0;
    };
    let first = (*b0).clone() * *c0 as f32;
    live.fold(first, |acc, (c, b)| acc + (*b).clone() * *c as f32)
}
