//! Denoisers: x_hat = E[x | z_t], built by name from a config table.

use crate::network::Network;
use crate::schedule::Schedule;
use crate::tensor::{Batch, Coef, Dev, Rows};
use anyhow::{bail, Result};
use std::fmt::Debug;
use std::path::PathBuf;

/// The noise level a denoiser is evaluated at. Kept as log-SNR plus (alpha, sigma) so a denoiser
/// can condition on whichever it needs, independent of the schedule that produced it.
#[derive(Clone, Debug)]
pub struct Level {
    pub logsnr: Coef,
    pub alpha: Coef,
    pub sigma: Coef,
}

impl Level {
    /// The whole batch at time `t` of `schedule`.
    pub fn at(schedule: &dyn Schedule, t: f64) -> Self {
        let (a, s) = schedule.alpha_sigma(t);
        Level {
            logsnr: Coef::Scalar(logsnr_of(a, s)),
            alpha: Coef::Scalar(a),
            sigma: Coef::Scalar(s),
        }
    }

    /// One time per row (training objectives).
    pub fn per_row(dev: &Dev, schedule: &dyn Schedule, ts: &[f64]) -> Self {
        let (a, s): (Vec<f64>, Vec<f64>) = ts.iter().map(|&t| schedule.alpha_sigma(t)).unzip();
        let l: Vec<f64> = a.iter().zip(&s).map(|(&a, &s)| logsnr_of(a, s)).collect();
        Level {
            logsnr: Coef::from_host(dev, &l),
            alpha: Coef::from_host(dev, &a),
            sigma: Coef::from_host(dev, &s),
        }
    }
}

/// ln(alpha^2 / sigma^2), +-inf at the endpoints.
pub fn logsnr_of(alpha: f64, sigma: f64) -> f64 {
    2.0 * (alpha.ln() - sigma.ln())
}

/// A denoiser ready to evaluate.
// Not `Send`/`Sync`: dfdx's CUDA device (held by every denoiser's tensors) is neither.
pub trait Denoiser {
    /// Flattened data dimension d.
    fn dim(&self) -> usize;

    /// x_hat = E[x | z_t] for each row of `z` at noise level `level`.
    fn denoise(&self, z: &Batch, level: &Level) -> Result<Batch>;

    /// tr(Var[x | z_t]) / d per row, where the denoiser knows it exactly (e.g. a Gaussian
    /// mixture). `None` when it does not.
    fn posterior_variance(&self, _z: &Batch, _level: &Level) -> Option<Result<Rows>> {
        None
    }
}

/// What a denoiser config may need to build itself: the dataset (a mixture's parameters live in
/// it), a checkpoint (network weights), and the device.
#[derive(Clone, Debug)]
pub struct BuildCtx {
    pub dev: Dev,
    pub data: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
}

/// What a trainable network needs to build itself: the device and the shape of one data row,
/// e.g. `[2]` or `[3, 32, 32]`.
#[derive(Clone, Debug)]
pub struct NetCtx {
    pub dev: Dev,
    pub row_shape: Vec<usize>,
    /// Draw the initial weights from the device's seeded generator (training). `false` builds
    /// zeros without touching the generator, for weights about to be loaded, so sampling from a
    /// checkpoint draws the same noise for a seed as any other denoiser.
    pub init: bool,
}

/// The `[denoiser]` config table: picks a denoiser by `name` and builds it.
#[typetag::serde(tag = "name")]
pub trait DenoiserSpec: Send + Sync + Debug {
    /// A denoiser ready to sample (a network loads `ctx.checkpoint`).
    fn build(&self, ctx: &BuildCtx) -> Result<Box<dyn Denoiser>>;

    /// A freshly initialised trainable network (network denoisers only).
    fn network(&self, _ctx: &NetCtx) -> Result<Box<dyn Network>> {
        bail!(
            "denoiser `{}` cannot be trained: it is not a network (pick a network denoiser, \
             e.g. `mlp` for vectors or `uvit` for images; `fewstep list denoiser` shows all)",
            self.typetag_name()
        )
    }
}
