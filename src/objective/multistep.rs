//! The pieces of Algorithm 1 (multistep consistency training and distillation) that objectives
//! share: the annealed teacher grid, an example's place on it, the no-gradient target
//! (`multistep-ct`, `multistep-cd`, `progressive`, and out-of-tree objectives such as TRACT) and
//! the weighted losses.
//!
//! Diffusion time is cut into S segments and each into N_ps = round(N(i)/S) teacher steps, so
//! the grid has T = N_ps S points (not N(i)). An example sits at integer numerator k = step N_ps +
//! n_rel: t = k/T, s = (k-1)/T, t_step = step N_ps/T, so s == t_step exactly when n_rel = 1 and
//! DDIM_{s->t_step} is then the identity (eq. 8).

use super::{Loss, ObjectiveCtx};
use crate::denoiser::{Level, TapedBatch};
use crate::integrator::{ddim_step_rows, inv_ddim_rows};
use crate::tensor::{row_sq_norm, Batch, Rows};
use anyhow::Result;
use dfdx::prelude::*;
use rand::Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The paper's xvar_frac (A.1): the share of the per-example error ||x_teacher - x||^2 / d that
/// the teacher step takes as x_var; a serde default of objectives that have one.
pub fn paper_xvar_frac() -> f64 {
    0.75
}

/// Where the teacher step's x_var comes from.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum XVarSource {
    #[default]
    Example,
    Integrator,
}

/// Consistency training (x_teacher = x) or distillation (x_teacher = the teacher's E[x|z_t]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Training,
    Distillation,
}

/// N(i) = exp(ln N0 + clip(i/I, 0, 1)(ln N1 - ln N0)), exactly N0 at i = 0, N1 from i = I on and
/// N0 throughout when N0 = N1 (exp(ln 256) is 255.99999999999994).
pub fn teacher_steps(n0: usize, n1: usize, anneal_iters: u64, i: u64) -> f64 {
    let (n0, n1) = (n0 as f64, n1 as f64);
    if anneal_iters == 0 || i >= anneal_iters || n0 == n1 {
        return n1;
    }
    if i == 0 {
        return n0;
    }
    let f = i as f64 / anneal_iters as f64;
    (n0.ln() + f * (n1.ln() - n0.ln())).exp()
}

/// The teacher grid of one iteration: S segments of N_ps steps each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grid {
    pub student_steps: usize,
    pub per_segment: usize,
}

/// An example's place on the grid: segment `step` in 0..S, `n_rel` in 1..=N_ps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    pub step: usize,
    pub n_rel: usize,
}

/// Per-row times of a batch of slots.
#[derive(Clone, Debug, Default)]
pub struct Times {
    pub t: Vec<f64>,
    pub s: Vec<f64>,
    pub t_step: Vec<f64>,
}

impl Grid {
    /// N_ps = round(N / S), at least 1 (more student than teacher steps is the diffusion loss).
    pub fn new(teacher_steps: f64, student_steps: usize) -> Self {
        let per_segment = (teacher_steps / student_steps as f64).round().max(1.0) as usize;
        Grid {
            student_steps,
            per_segment,
        }
    }

    /// T = N_ps S, the grid actually used.
    pub fn total(&self) -> usize {
        self.per_segment * self.student_steps
    }

    /// A slot drawn uniformly from the grid.
    pub fn random_slot(&self, rng: &mut impl Rng) -> Slot {
        Slot {
            step: rng.gen_range(0..self.student_steps),
            n_rel: rng.gen_range(1..=self.per_segment),
        }
    }

    /// (t, s, t_step) from integer numerators over T.
    pub fn times(&self, slot: Slot) -> (f64, f64, f64) {
        assert!(
            slot.step < self.student_steps && (1..=self.per_segment).contains(&slot.n_rel),
            "slot {slot:?} is off the grid {self:?}"
        );
        let total = self.total() as f64;
        let start = slot.step * self.per_segment;
        let k = start + slot.n_rel;
        (
            k as f64 / total,
            (k - 1) as f64 / total,
            start as f64 / total,
        )
    }

    pub fn times_of(&self, slots: &[Slot]) -> Times {
        let mut out = Times::default();
        for &slot in slots {
            let (t, s, t_step) = self.times(slot);
            out.t.push(t);
            out.s.push(s);
            out.t_step.push(t_step);
        }
        out
    }
}

/// The random draws of one loss, kept apart so tests can fix them.
pub struct Draws {
    pub grid: Grid,
    pub slots: Vec<Slot>,
    pub eps: Batch,
}

/// The no-gradient half of the loss: where the student is evaluated and what it must predict.
pub struct Prepared {
    pub times: Times,
    pub z_t: Batch,
    pub level_t: Level,
    pub x_target: Batch,
}

impl Prepared {
    /// The student's one taped pass at (z_t, t), scored against the target: mean over rows of
    /// (SNR(t) + 1) times `distance` (`mean_square`, or `pseudo_huber` with its epsilon).
    pub fn student_loss(
        self,
        ctx: &mut ObjectiveCtx,
        distance: impl FnOnce(TapedBatch, Batch, &Rows) -> Loss,
    ) -> Result<Loss> {
        let w = snr_weights(ctx, &self.times.t);
        let x_hat = ctx.student_taped(self.z_t, &self.level_t)?;
        Ok(distance(x_hat, self.x_target, &w))
    }
}

/// Algorithm 1's target from the teacher's z_s: the no-gradient f(z_s, s), DDIM from s to
/// t_step, then invDDIM back to the x that takes z_t there in one DDIM step.
pub fn consistency_target(
    ctx: &ObjectiveCtx,
    z_s: Batch,
    z_t: &Batch,
    times: &Times,
) -> Result<Batch> {
    let (dev, sch) = (ctx.dev, ctx.schedule);
    let x_ref = ctx
        .target
        .denoise(&z_s, &Level::per_row(dev, sch, &times.s))?;
    let z_ref = ddim_step_rows(dev, sch, x_ref, z_s, &times.s, &times.t_step);
    Ok(inv_ddim_rows(
        dev,
        sch,
        z_ref,
        z_t.clone(),
        &times.t,
        &times.t_step,
    ))
}

/// x_var per row: eta ||x_teacher - x||^2 / d, or `None` to let the integrator estimate it.
pub fn x_var(source: XVarSource, eta: f64, x_teacher: &Batch, x: &Batch) -> Option<Rows> {
    match source {
        XVarSource::Example => {
            let d = x.shape().1 as f32;
            Some(row_sq_norm(&(x_teacher.clone() - x.clone())) * (eta as f32 / d))
        }
        XVarSource::Integrator => None,
    }
}

/// SNR(t) + 1 per row (the v-loss weight), formed in f64.
pub fn snr_weights(ctx: &ObjectiveCtx, t: &[f64]) -> Rows {
    let w: Vec<f32> = t
        .iter()
        .map(|&t| (ctx.schedule.snr(t) + 1.0) as f32)
        .collect();
    ctx.dev.tensor_from_vec(w, (t.len(),))
}

/// mean_i w_i (sqrt(||x_hat_i - target_i||^2 + eps^2) - eps). Through the squared norm, so the
/// gradient is 0, not 0/0, where x_hat equals the target.
pub fn pseudo_huber(x_hat: TapedBatch, target: Batch, w: &Rows, eps: f64) -> Loss {
    let eps = eps as f32;
    let sq = (x_hat - target).square().sum::<(usize,), Axis<1>>();
    (((sq + eps * eps).sqrt() - eps) * w.clone()).mean()
}

/// mean_i w_i ||x_hat_i - target_i||^2 / d (the v-loss).
pub fn mean_square(x_hat: TapedBatch, target: Batch, w: &Rows) -> Loss {
    let sq = (x_hat - target).square().mean::<(usize,), Axis<1>>();
    (sq * w.clone()).mean()
}
