//! Ancestral sampling (eq. 1): z_s ~ q(z_s | z_t, x = x_hat) = N(mu_{t->s}, sigma_{t->s}^2).

use dfdx::shapes::HasShape;
use fewstep::integrator::{Integrator, StepCtx};
use fewstep::register_plugin;
use fewstep::tensor::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Stochastic first-order step; its last step (s = 0) returns x_hat.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Ddpm {}

#[typetag::serde(name = "ddpm")]
impl Integrator for Ddpm {
    fn step(&self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> anyhow::Result<Batch> {
        let x_hat = ctx.denoise(&z_t, t)?;
        if s <= 0.0 {
            return Ok(x_hat);
        }
        let sch = ctx.schedule;
        let ((a_t, s_t), (a_s, s_s)) = (sch.alpha_sigma(t), sch.alpha_sigma(s));
        // Eq. 1 with alpha_{t|s} = a_t/a_s, sigma_{t|s}^2 = s_t^2 - alpha_{t|s}^2 s_s^2 = s_t^2 (1 - r),
        // r = SNR_t / SNR_s:
        //   sigma_{t->s}^2 = (1/s_s^2 + alpha_{t|s}^2 / sigma_{t|s}^2)^-1 = s_s^2 (1 - r),
        //   mu = sigma_{t->s}^2 (alpha_{t|s}/sigma_{t|s}^2 z_t + a_s/s_s^2 x)
        //      = alpha_{t|s} (s_s/s_t)^2 z_t + a_s (1 - r) x,
        // with 1 - r = -expm1(logsnr_t - logsnr_s), free of cancellation for close t and s.
        let one_minus_r = -(sch.logsnr(t) - sch.logsnr(s)).exp_m1();
        let c_z = (a_t / a_s) * (s_s / s_t).powi(2);
        let c_x = a_s * one_minus_r;
        let sd = s_s * one_minus_r.sqrt();
        let (n, d) = *z_t.shape();
        // The row's own noise stream: the same samples at any --batch.
        let xi = ctx.row_normal(n, d)?;
        Ok(z_t * c_z as f32 + x_hat * c_x as f32 + xi * sd as f32)
    }
}

register_plugin!(
    INTEGRATOR,
    "ddpm",
    Ddpm,
    "ancestral sampling (eq. 1): stochastic, first order, 1 NFE per step"
);
