//! The parametrisation every network shares: a dfdx module predicts v from z and the embedded
//! log-SNR, and x_hat = alpha z - sigma v.

use super::params::Params;
use crate::denoiser::{Denoiser, Level};
use crate::tensor::{Batch, Coef, Dev};
use anyhow::{bail, Result};
use dfdx::prelude::*;
use rayon::prelude::*;

/// Width of the log-SNR embedding [`logsnr_features`] produces.
pub const FEATURES: usize = 32;
/// The log-SNR is clipped to +-LOGSNR_CLIP for the embedding only, so t = 0 and t = 1 (+-inf)
/// embed like their neighbours while the output parametrisation still uses the exact alpha, sigma.
pub const LOGSNR_CLIP: f64 = 20.0;

/// What a concrete network implements: a dfdx module that predicts v from z and the embedded
/// log-SNR. `T` is the tape: `NoneTape` for sampling, `OwnedTape` for training.
pub trait VNet: Params + Clone + 'static {
    /// v for each row of `z` (`[batch, dim]`), given `cond = logsnr_features(..)` (`[batch, 32]`).
    /// The tape of `z` must be threaded through every parameter use (see [`silu`] and the
    /// built-in `mlp` for the pattern).
    fn v<T: Tape<f32, Dev>>(
        &self,
        z: Tensor<(usize, usize), f32, Dev, T>,
        cond: Tensor<(usize, Const<FEATURES>), f32, Dev>,
    ) -> Tensor<(usize, usize), f32, Dev, T>;
}

/// SiLU(x) = x * sigmoid(x), composed from dfdx ops (dfdx 0.13 has no SiLU).
pub fn silu<S: Shape, T: Tape<f32, Dev>>(x: Tensor<S, f32, Dev, T>) -> Tensor<S, f32, Dev, T> {
    let (x, tape) = x.split_tape();
    x.clone().put_tape(tape).sigmoid() * x
}

/// Sinusoidal features of the clipped, scaled log-SNR: u = clip(lambda, +-20) / 20 in [-1, 1],
/// then sin and cos of u at 16 geometric frequencies from 1 to 200 rad (periods from 12 down to
/// 0.6 in log-SNR units). Computed on the host in f64 from the level's host copy (no device
/// read): it is `[batch, 32]` numbers.
pub fn logsnr_features(
    dev: &Dev,
    logsnr: &Coef,
    batch: usize,
) -> Tensor<(usize, Const<FEATURES>), f32, Dev> {
    let lambdas = logsnr.host_rows(batch);
    let half = FEATURES / 2;
    let freqs: Vec<f64> = (0..half)
        .map(|k| 200f64.powf(k as f64 / (half - 1) as f64))
        .collect();
    // Rows in parallel (f64 sin and cos, ~0.4 ms a step on one core at batch 1024).
    let mut out = vec![0.0f32; batch * FEATURES];
    out.par_chunks_mut(FEATURES)
        .zip(lambdas.par_iter())
        .for_each(|(row, &l)| {
            let u = l.clamp(-LOGSNR_CLIP, LOGSNR_CLIP) / LOGSNR_CLIP;
            for (pair, w) in row.chunks_exact_mut(2).zip(&freqs) {
                pair[0] = (w * u).sin() as f32;
                pair[1] = (w * u).cos() as f32;
            }
        });
    dev.tensor_from_vec(out, (batch, Const::<FEATURES>))
}

/// A network's module with its row size: evaluates x_hat = alpha z - sigma v (v-prediction).
#[derive(Clone)]
pub struct VModel<M> {
    pub net: M,
    pub dev: Dev,
    pub dim: usize,
}

impl<M: VNet> VModel<M> {
    /// x_hat for `z` with any tape: the network's v, then alpha z - sigma v with the level's exact
    /// coefficients (so x_hat = z at sigma = 0 and x_hat = -v at alpha = 0).
    pub fn x_hat<T: Tape<f32, Dev>>(
        &self,
        z: Tensor<(usize, usize), f32, Dev, T>,
        level: &Level,
    ) -> Result<Tensor<(usize, usize), f32, Dev, T>> {
        let (rows, dim) = *z.shape();
        if dim != self.dim {
            bail!("network expects rows of size {}, got {dim}", self.dim);
        }
        let cond = logsnr_features(&self.dev, &level.logsnr, rows);
        let (z, tape) = z.split_tape();
        let v = self.net.v(z.clone().put_tape(tape), cond);
        #[cfg(not(feature = "cuda"))]
        {
            // One fused op on the CPU (the same bits as the ops below: negation is exact).
            let minus_sigma = level.sigma.host_f32(rows).iter().map(|s| -s).collect();
            Ok(super::fused::v_to_x(
                v,
                &z,
                minus_sigma,
                &level.alpha.host_f32(rows),
            ))
        }
        #[cfg(feature = "cuda")]
        {
            let minus_sigma_v = match &level.sigma {
                Coef::Scalar(s) => v * (-*s as f32),
                Coef::Rows(r) => {
                    v * r
                        .tensor()
                        .clone()
                        .negate()
                        .broadcast_like::<_, Axis<1>>(&(rows, dim))
                }
            };
            Ok(minus_sigma_v + level.alpha.scale(z))
        }
    }
}

impl<M: VNet> Denoiser for VModel<M> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn denoise(&self, z: &Batch, level: &Level) -> Result<Batch> {
        self.x_hat(z.clone(), level)
    }
}
