//! Measuring aDDIM's variance table on data (paper 3.2, Algorithm 3: "precompute
//! x_var,t = eta ||x - x_hat(z_t)||^2 / d for all t"): the mean squared error of a denoiser at
//! each time of a grid, scaled by eta, in the [`Calibration`] format integrators read.

use crate::calibration::Calibration;
use crate::denoiser::{Denoiser, Level};
use crate::schedule::Schedule;
use crate::tensor::{batch_from_vec, row_sq_norm, Dev};
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// x_var(t) = eta * mean over rows of ||x - x_hat(z_t)||^2 / d, with z_t = alpha_t x + sigma_t
/// eps, at each time of `grid`. `x` holds `rows` rows of `dim` values; `chunk` rows are
/// denoised at once. The noise comes from `seed`, the same draw at every t.
#[allow(clippy::too_many_arguments)]
pub fn measure(
    dev: &Dev,
    denoiser: &dyn Denoiser,
    schedule: &dyn Schedule,
    x: &[f32],
    dim: usize,
    grid: &[f64],
    eta: f64,
    seed: u64,
    chunk: usize,
) -> Result<Calibration> {
    if dim == 0 || x.is_empty() || x.len() % dim != 0 {
        bail!(
            "calibration needs whole rows of {dim} values (got {})",
            x.len()
        );
    }
    if denoiser.dim() != dim {
        bail!(
            "the denoiser takes rows of {} values, the data has {dim}",
            denoiser.dim()
        );
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let eps: Vec<f32> = (0..x.len())
        .map(|_| rng.sample(rand_distr::StandardNormal))
        .collect();
    let rows = x.len() / dim;
    let step = chunk.max(1) * dim;
    let mut xvar = Vec::with_capacity(grid.len());
    for &t in grid {
        let (a, s) = schedule.alpha_sigma(t);
        let level = Level::at(schedule, t);
        let mut total = 0.0;
        for (xc, ec) in x.chunks(step).zip(eps.chunks(step)) {
            let n = xc.len() / dim;
            let z: Vec<f32> = xc
                .iter()
                .zip(ec)
                .map(|(&x, &e)| (a * x as f64 + s * e as f64) as f32)
                .collect();
            let z = batch_from_vec(dev, z, n, dim);
            let xb = batch_from_vec(dev, xc.to_vec(), n, dim);
            let err = row_sq_norm(&(denoiser.denoise(&z, &level)? - xb));
            total += err.as_vec().iter().map(|&e| e as f64).sum::<f64>();
        }
        xvar.push(eta * total / (rows * dim) as f64);
    }
    Calibration::new(grid.to_vec(), xvar)
}
