//! Noise DDIM (App. A.4): Gaussian noise with aDDIM's variance estimate added to the prediction,
//! x_hat + sqrt(x_var) N(0, I), then a DDIM step (so the last step returns the noisy prediction,
//! as aDDIM's lengthens eps_hat). The stochastic counterpart of aDDIM, to check that aDDIM's
//! deterministic correction imitates real noise; it cannot teach distillation.

use dfdx::shapes::HasShape;
use fewstep::integrator::xvar::XVar;
use fewstep::integrator::{ddim_step, Integrator, StepCtx};
use fewstep::register_plugin;
use fewstep::tensor::{Batch, Coef};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Noise DDIM; its config is the x_var estimate, as for `addim`.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default)]
#[serde(transparent)]
pub struct NoiseDdim(pub XVar);

#[typetag::serde(name = "noise-ddim")]
impl Integrator for NoiseDdim {
    fn validate(&self) -> anyhow::Result<()> {
        self.0.check()
    }

    fn step(&self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> anyhow::Result<Batch> {
        let x_hat = ctx.denoise(&z_t, t)?;
        let sd: Vec<f64> = self.0.at(ctx, &z_t, t)?.iter().map(|v| v.sqrt()).collect();
        let (n, d) = *x_hat.shape();
        // The row's own noise stream: the same samples at any --batch.
        let xi = ctx.row_normal(n, d)?;
        let x_noisy = x_hat + Coef::from_host(ctx.dev, &sd).scale(xi);
        Ok(ddim_step(ctx.schedule, x_noisy, z_t, t, s))
    }
}

register_plugin!(
    INTEGRATOR,
    "noise-ddim",
    NoiseDdim,
    "DDIM from x_hat plus Gaussian noise of aDDIM's variance (App. A.4): stochastic, 1 NFE per step"
);
