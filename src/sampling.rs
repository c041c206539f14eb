//! The sampling loop: an integrator walked over a time grid, counting evaluations.

use crate::denoiser::Denoiser;
use crate::integrator::{Integrator, StepCtx};
use crate::schedule::Schedule;
use crate::tensor::{Batch, Dev};
use anyhow::Result;

/// Samples and the number of denoiser evaluations that produced them.
pub struct Sampled {
    pub samples: Batch,
    pub nfe: usize,
}

/// Runs `integrator` from `z_1` over `grid` (decreasing times, from 1 to 0).
pub fn sample(
    dev: &Dev,
    schedule: &dyn Schedule,
    integrator: &dyn Integrator,
    denoiser: &dyn Denoiser,
    z_1: Batch,
    grid: &[f64],
) -> Result<Sampled> {
    let mut ctx = StepCtx::new(dev, schedule, denoiser);
    let mut z = z_1;
    for w in grid.windows(2) {
        z = integrator.step(&mut ctx, z, w[0], w[1])?;
    }
    Ok(Sampled {
        samples: z,
        nfe: ctx.nfe(),
    })
}

/// The batch after each of `points` evenly spaced times inside every step of `grid`, as
/// (time, batch) pairs from the first step on: the point at time u in a step from t to s is the
/// integrator's step from t to u, and the step's last point (u = s, up to rounding) carries on.
/// For a one-evaluation integrator such as DDIM this traces the curve the prediction at t implies
/// (paper Figure 1); every point costs an evaluation (counted by `ctx`).
pub fn trajectory(
    ctx: &mut StepCtx,
    integrator: &dyn Integrator,
    z_1: Batch,
    grid: &[f64],
    points: usize,
) -> Result<Vec<(f64, Batch)>> {
    let mut z = z_1;
    let mut out = Vec::with_capacity(grid.len().saturating_sub(1) * points);
    for w in grid.windows(2) {
        let (t, s) = (w[0], w[1]);
        for k in 1..=points {
            let u = t - (t - s) * k as f64 / points as f64;
            let z_u = integrator.step(ctx, z.clone(), t, u)?;
            out.push((u, z_u.clone()));
            if k == points {
                z = z_u;
            }
        }
    }
    Ok(out)
}
