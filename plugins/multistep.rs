//! Algorithm 1 (multistep consistency training and distillation), shared by `multistep-ct` and
//! `multistep-cd`, which differ only in x_teacher. Also the pieces `progressive` reuses: the
//! nested teacher-integrator table, x_var, the weighted losses and host-seeded noise.
//!
//! Diffusion time is cut into S segments and each into N_ps = round(N(i)/S) teacher steps, so
//! the grid has T = N_ps S points (not N(i)). An example sits at integer numerator k = step N_ps +
//! n_rel: t = k/T, s = (k-1)/T, t_step = step N_ps/T, so s == t_step exactly when n_rel = 1 and
//! DDIM_{s->t_step} is then the identity (eq. 8).

use anyhow::Result;
use dfdx::prelude::*;
use fewstep::denoiser::Level;
use fewstep::integrator::{ddim_step_rows, inv_ddim_rows, Integrator, TeacherStep};
use fewstep::objective::{Loss, ObjectiveCtx, TapedBatch};
use fewstep::plugins::addim::Addim;
use fewstep::tensor::{row_sq_norm, Batch, Rows};
use rand::Rng;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

/// Algorithm 1's hyper-parameters (paper, A.1: 64 -> 1280 teacher steps over 100k iterations,
/// xvar_frac 0.75, Huber epsilon 1e-4).
#[derive(Serialize, Deserialize, JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct Multistep {
    /// Student sampling steps S: the segments diffusion time is cut into (Algorithm 2 samples
    /// with DDIM on this grid).
    #[serde(default = "student_steps", deserialize_with = "at_least_one")]
    pub student_steps: usize,
    /// Teacher steps N(0) at the first iteration.
    #[serde(default = "teacher_steps_start", deserialize_with = "at_least_one")]
    pub teacher_steps_start: usize,
    /// Teacher steps N(I) reached after `anneal_iters` iterations, log-linearly from
    /// `teacher_steps_start`; set both equal for a constant N (the Table 2 ablation).
    #[serde(default = "teacher_steps_end", deserialize_with = "at_least_one")]
    pub teacher_steps_end: usize,
    /// Iterations I of the annealing; 0 uses `teacher_steps_end` from the start.
    #[serde(default = "anneal_iters")]
    pub anneal_iters: u64,
    /// The deterministic one-evaluation step z_t -> z_s that teaches (`addim`, the paper's, or
    /// `ddim`, Table 4's ablation), as a nested `[objective.teacher_integrator]` table.
    #[serde(default = "teacher_integrator")]
    pub teacher_integrator: Box<dyn Integrator>,
    /// eta of the per-example x_var = eta ||x_teacher - x||^2 / d handed to the teacher step
    /// (the paper's xvar_frac). It is 0 for consistency training, where aDDIM is DDIM.
    #[serde(
        default = "xvar_frac",
        deserialize_with = "fewstep::config::non_negative"
    )]
    pub xvar_frac: f64,
    /// "example": the per-example x_var above (Algorithm 1); "integrator": the teacher
    /// integrator's own estimate (e.g. addim's analytic 0.1/(2 + SNR), section 3.2).
    #[serde(default)]
    pub xvar_source: XVarSource,
    /// epsilon of the pseudo-Huber loss sqrt(||x_diff||^2 + eps^2) - eps (an L2 distance for
    /// ||x_diff|| >> eps).
    #[serde(default = "huber_eps", deserialize_with = "fewstep::config::positive")]
    pub huber_eps: f64,
}

fn student_steps() -> usize {
    8
}
fn teacher_steps_start() -> usize {
    64
}
fn teacher_steps_end() -> usize {
    1280
}
fn anneal_iters() -> u64 {
    100_000
}
pub fn teacher_integrator() -> Box<dyn Integrator> {
    Box::new(Addim::default())
}
pub fn xvar_frac() -> f64 {
    0.75
}
fn huber_eps() -> f64 {
    1e-4
}

impl Default for Multistep {
    /// The same as the config `{}`.
    fn default() -> Self {
        Multistep {
            student_steps: student_steps(),
            teacher_steps_start: teacher_steps_start(),
            teacher_steps_end: teacher_steps_end(),
            anneal_iters: anneal_iters(),
            teacher_integrator: teacher_integrator(),
            xvar_frac: xvar_frac(),
            xvar_source: XVarSource::default(),
            huber_eps: huber_eps(),
        }
    }
}

/// `deserialize_with` check for a count that must be at least 1.
pub fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(serde::de::Error::custom("expected an integer >= 1, got 0")),
        n => Ok(n),
    }
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

    pub fn draw(&self, rng: &mut impl Rng) -> Slot {
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

impl Multistep {
    /// The grid of iteration `i`.
    pub fn grid(&self, i: u64) -> Grid {
        let n = teacher_steps(
            self.teacher_steps_start,
            self.teacher_steps_end,
            self.anneal_iters,
            i,
        );
        Grid::new(n, self.student_steps)
    }

    pub fn draw(&self, ctx: &mut ObjectiveCtx, rows: usize, dim: usize) -> Draws {
        let grid = self.grid(ctx.iteration);
        let slots = (0..rows).map(|_| grid.draw(ctx.rng)).collect();
        let eps = normal(ctx, rows, dim);
        Draws { grid, slots, eps }
    }

    pub fn loss(&self, ctx: &mut ObjectiveCtx, x: &Batch, flavour: Flavour) -> Result<Loss> {
        let (rows, dim) = *x.shape();
        let draws = self.draw(ctx, rows, dim);
        self.loss_with(ctx, x, flavour, &draws)
    }

    /// Algorithm 1 for given draws: (SNR(t) + 1) pseudo-Huber(||x_diff||), batch mean.
    pub fn loss_with(
        &self,
        ctx: &mut ObjectiveCtx,
        x: &Batch,
        flavour: Flavour,
        draws: &Draws,
    ) -> Result<Loss> {
        let p = self.prepare(ctx, x, flavour, draws)?;
        p.student_loss(ctx, |x_hat, target, w| {
            pseudo_huber(x_hat, target, w, self.huber_eps)
        })
    }

    /// z_t, z_s from the teacher step, nograd f(z_s, s), DDIM to t_step and invDDIM back to x.
    pub fn prepare(
        &self,
        ctx: &ObjectiveCtx,
        x: &Batch,
        flavour: Flavour,
        draws: &Draws,
    ) -> Result<Prepared> {
        let (dev, sch) = (ctx.dev, ctx.schedule);
        let times = draws.grid.times_of(&draws.slots);
        let level_t = Level::per_row(dev, sch, &times.t);
        let z_t = level_t.alpha.scale(x.clone()) + level_t.sigma.scale(draws.eps.clone());
        let x_teacher = match flavour {
            Flavour::Training => x.clone(),
            Flavour::Distillation => ctx.teacher()?.denoise(&z_t, &level_t)?,
        };
        let x_var = x_var(self.xvar_source, self.xvar_frac, &x_teacher, x);
        let z_s = self.teacher_integrator.teacher_step(TeacherStep {
            dev,
            schedule: sch,
            x_hat: &x_teacher,
            z_t: &z_t,
            t: &times.t,
            s: &times.s,
            x_var: x_var.as_ref(),
        })?;
        let x_target = consistency_target(ctx, z_s, &z_t, &times)?;
        Ok(Prepared {
            times,
            z_t,
            level_t,
            x_target,
        })
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

/// Standard normal noise `[rows, dim]` from the objective's host generator, so a resumed run
/// repeats exactly.
pub fn normal(ctx: &mut ObjectiveCtx, rows: usize, dim: usize) -> Batch {
    let v: Vec<f32> = (0..rows * dim)
        .map(|_| ctx.rng.sample(rand_distr::StandardNormal))
        .collect();
    ctx.dev.tensor_from_vec(v, (rows, dim))
}
