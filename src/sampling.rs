//! The sampling loop: an integrator walked over a time grid, counting evaluations, with the
//! per-run state multistep integrators keep.

use crate::denoiser::Denoiser;
use crate::integrator::{Integrator, RowNoise, RunState, StepCtx};
use crate::schedule::Schedule;
use crate::tensor::{Batch, Dev};
use anyhow::Result;

/// Samples and the number of denoiser evaluations that produced them.
pub struct Sampled {
    pub samples: Batch,
    pub nfe: usize,
}

/// One run of an integrator over a grid: the integrator and the state it keeps between steps
/// ([`Integrator::new_state`]), made afresh for every run.
pub struct Run<'a> {
    integrator: &'a dyn Integrator,
    state: Option<Box<dyn RunState>>,
}

impl<'a> Run<'a> {
    pub fn new(integrator: &'a dyn Integrator, grid: &[f64]) -> Self {
        Run {
            integrator,
            state: integrator.new_state(grid),
        }
    }

    /// The run's next step, from t to s.
    pub fn step(&mut self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> Result<Batch> {
        self.integrator
            .step_in_run(ctx, self.state.as_deref_mut(), z_t, t, s)
    }

    /// A step from t to s that the run does not take: its state and the noise streams stay as
    /// they were (the evaluations are still counted).
    pub fn try_step(&self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> Result<Batch> {
        let mut state = self
            .state
            .as_deref()
            .map(<dyn RunState as RunState>::clone_box);
        let noise = ctx.save_noise();
        let out = self
            .integrator
            .step_in_run(ctx, state.as_deref_mut(), z_t, t, s);
        ctx.restore_noise(noise);
        out
    }
}

/// Runs `integrator` from `z_1` over `grid` (decreasing times, from 1 to 0), drawing any
/// per-row noise from `noise`.
pub fn sample(
    dev: &Dev,
    schedule: &dyn Schedule,
    integrator: &dyn Integrator,
    denoiser: &dyn Denoiser,
    z_1: Batch,
    grid: &[f64],
    noise: RowNoise,
) -> Result<Sampled> {
    let mut ctx = StepCtx::new(dev, schedule, denoiser).with_noise(noise);
    let mut run = Run::new(integrator, grid);
    let mut z = z_1;
    for w in grid.windows(2) {
        z = run.step(&mut ctx, z, w[0], w[1])?;
    }
    if let Some(&end) = grid.last() {
        z = to_clean(&mut ctx, z, end)?;
    }
    Ok(Sampled {
        samples: z,
        nfe: ctx.nfe(),
    })
}

/// A grid that ends at t = 0 where the schedule still has noise (karras: sigma_min = 0.002)
/// takes one more evaluation, to sigma = 0 where z = x = x_hat: EDM (Karras et al. 2022, Alg. 1)
/// and k-diffusion end every sampler with this step, so samples do not keep sigma_min's noise.
/// A schedule with sigma(0) = 0 (cosine, linear, ...) is left as it is.
pub fn to_clean(ctx: &mut StepCtx, z: Batch, end: f64) -> Result<Batch> {
    if end == 0.0 && ctx.schedule.alpha_sigma(0.0).1 > 0.0 {
        return ctx.denoise(&z, 0.0);
    }
    Ok(z)
}

/// The batch after each of `points` evenly spaced times inside every step of `grid`, as
/// (time, batch) pairs from the first step on: the point at time u in a step from t to s is the
/// integrator's step from t to u, and the step's last point (u = s, up to rounding) carries on.
/// For a one-evaluation integrator such as DDIM this traces the curve the prediction at t implies
/// (paper Figure 1); every point costs an evaluation (counted by `ctx`). A multistep integrator
/// reaches the inner points with the run's history without committing them, so the last points
/// are exactly the run [`sample`] takes.
pub fn trajectory(
    ctx: &mut StepCtx,
    integrator: &dyn Integrator,
    z_1: Batch,
    grid: &[f64],
    points: usize,
) -> Result<Vec<(f64, Batch)>> {
    let mut run = Run::new(integrator, grid);
    let mut z = z_1;
    let mut out = Vec::with_capacity(grid.len().saturating_sub(1) * points);
    for w in grid.windows(2) {
        let (t, s) = (w[0], w[1]);
        for k in 1..points {
            let u = t - (t - s) * k as f64 / points as f64;
            out.push((u, run.try_step(ctx, z.clone(), t, u)?));
        }
        z = run.step(ctx, z, t, s)?;
        out.push((s, z.clone()));
    }
    Ok(out)
}
