//! `midpoint`: a second-order sampler in the style of DPM-Solver-2 (Lu et al., 2022; the
//! data-prediction form of DPM-Solver++(2S)): a DDIM step to an intermediate time m, one more
//! prediction there, then the DDIM step t -> s with the predictions blended. The worked example
//! of docs/writing-a-plugin.md, which quotes this file.

use anyhow::bail;
use fewstep::integrator::{ddim_step, Integrator, StepCtx};
use fewstep::register_plugin;
use fewstep::tensor::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Two evaluations per step, second order.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Midpoint {
    /// Where the second evaluation sits, as a fraction of the step from t (0) to s (1): 0.5 is
    /// the midpoint rule.
    #[serde(default = "half")]
    pub r: f64,
}

fn half() -> f64 {
    0.5
}

#[typetag::serde(name = "midpoint")]
impl Integrator for Midpoint {
    fn step(&self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> anyhow::Result<Batch> {
        if !(self.r > 0.0 && self.r <= 1.0) {
            bail!("midpoint: r must lie in (0, 1], got {}", self.r);
        }
        let m = t + self.r * (s - t);
        let x_t = ctx.denoise(&z_t, t)?;
        let z_m = ddim_step(ctx.schedule, x_t.clone(), z_t.clone(), t, m);
        let x_m = ctx.denoise(&z_m, m)?;
        // (1 - 1/(2r)) x_t + 1/(2r) x_m: the second-order blend, x_m alone at r = 0.5.
        let w = 0.5 / self.r;
        let x = x_t * (1.0 - w) as f32 + x_m * w as f32;
        Ok(ddim_step(ctx.schedule, x, z_t, t, s))
    }
}

register_plugin!(
    INTEGRATOR,
    "midpoint",
    Midpoint,
    "DPM-Solver-2-style midpoint step (example plugin crate): second order, 2 NFE per step"
);
