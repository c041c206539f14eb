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
