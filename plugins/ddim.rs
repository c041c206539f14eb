//! DDIM (eq. 4): z_s = alpha_s x_hat + (sigma_s / sigma_t)(z_t - alpha_t x_hat).

use fewstep::integrator::{ddim_step, ddim_step_rows, Integrator, StepCtx, TeacherStep};
use fewstep::register_plugin;
use fewstep::tensor::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Deterministic first-order step; its last step (s = 0) returns x_hat.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Ddim {}

#[typetag::serde(name = "ddim")]
impl Integrator for Ddim {
    fn step(&self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> anyhow::Result<Batch> {
        let x_hat = ctx.denoise(&z_t, t)?;
        Ok(ddim_step(ctx.schedule, x_hat, z_t, t, s))
    }

    fn teacher_step(&self, a: TeacherStep) -> anyhow::Result<Batch> {
        Ok(ddim_step_rows(
            a.dev,
            a.schedule,
            a.x_hat.clone(),
            a.z_t.clone(),
            a.t,
            a.s,
        ))
    }
}

register_plugin!(
    INTEGRATOR,
    "ddim",
    Ddim,
    "DDIM (eq. 4): deterministic, first order, 1 NFE per step"
);
