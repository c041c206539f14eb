//! `diffusion`: the standard diffusion loss that trains a teacher. v-loss, written as the x-loss
//! weighted by SNR + 1 (the two are equal for a variance-preserving schedule), with
//! t ~ U(0, 1) on the training schedule.

use dfdx::prelude::*;
use fewstep::denoiser::Level;
use fewstep::objective::{DistillObjective, Loss, ObjectiveCtx};
use fewstep::register_plugin;
use fewstep::tensor::{Batch, Coef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// (SNR(t) + 1) * ||x_hat(z_t) - x||^2 / d, averaged over the batch.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Diffusion {
    /// Cap on the weight SNR + 1. It is infinite at t = 0, where x_hat - x is exactly 0, and
    /// beyond ~1e6 the f32 x-error is rounding noise.
    #[serde(default = "default_max_weight")]
    pub max_weight: f64,
}

fn default_max_weight() -> f64 {
    1e6
}

#[typetag::serde(name = "diffusion")]
impl DistillObjective for Diffusion {
    fn validate(&self) -> anyhow::Result<()> {
        // A cap of 0 (or below) zeroes (or flips) every example's loss: nothing would be learnt.
        if !(self.max_weight > 0.0 && self.max_weight.is_finite()) {
            return fewstep::config::field_error(
                "max_weight",
                format!(
                    "expected a finite number > 0 (the cap on the weight SNR + 1; default 1e6), \
                     got {}",
                    self.max_weight
                ),
            );
        }
        Ok(())
    }

    fn loss(&self, ctx: &mut ObjectiveCtx, x: &Batch) -> anyhow::Result<Loss> {
        let (rows, dim) = *x.shape();
        let t = ctx.uniform_times(rows);
        let eps = ctx.normal(rows, dim);
        let level = Level::per_row(ctx.dev, ctx.schedule, &t);
        let z = level.noised(x, &eps);
        let w: Vec<f64> = t
            .iter()
            .map(|&t| (ctx.schedule.snr(t) + 1.0).min(self.max_weight))
            .collect();
        let w = Coef::from_host(ctx.dev, &w).to_rows(ctx.dev, rows);
        let x_hat = ctx.student_taped(z, &level)?;
        let err = (x_hat - x.clone()).square().mean::<(usize,), Axis<1>>();
        Ok((err * w).mean())
    }
}

register_plugin!(
    OBJECTIVE,
    "diffusion",
    Diffusion,
    "diffusion training (v-loss = x-loss weighted by SNR + 1, t ~ U(0,1)): trains a teacher"
);
