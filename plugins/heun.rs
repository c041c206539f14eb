//! EDM's deterministic second-order sampler (Karras et al. 2022, Alg. 1): an Euler step then a
//! trapezoid correction, in the VE variables x = z/alpha, sigma_ve = sigma/alpha, where the
//! probability-flow ODE reads dx/dsigma_ve = eps_hat and Euler is exactly DDIM.

use fewstep::integrator::{ddim_step, Integrator, StepCtx};
use fewstep::register_plugin;
use fewstep::tensor::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Heun's method: 2 NFE per step, 1 on a step to sigma = 0 and on a step from alpha_t = 0.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Heun {}

/// eps_hat = (z - alpha x_hat) / sigma, the ODE's slope in the VE variables.
fn eps(z: Batch, x_hat: Batch, alpha: f64, sigma: f64) -> Batch {
    (z - x_hat * alpha as f32) / sigma as f32
}

#[typetag::serde(name = "heun")]
impl Integrator for Heun {
    fn step(&self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> anyhow::Result<Batch> {
        let ((a_t, s_t), (a_s, s_s)) = (ctx.schedule.alpha_sigma(t), ctx.schedule.alpha_sigma(s));
        let x_hat = ctx.denoise(&z_t, t)?;
        let z_euler = ddim_step(ctx.schedule, x_hat.clone(), z_t.clone(), t, s);
        // As in EDM a step to sigma = 0 stays Euler: the slope there is 0/0. (A schedule whose
        // t = 0 is still noisy, karras, gets a Heun step to sigma_min and the sampling loop's
        // final step to sigma = 0, see `sampling::to_clean`.) So does a step from alpha_t = 0
        // (t = 1 of a cosine schedule): sigma_ve = infinity there, the trapezoid over an
        // infinite interval is undefined, while DDIM is not (z_s = alpha_s x_hat + sigma_s z_t).
        if s_s == 0.0 || a_t == 0.0 {
            return Ok(z_euler);
        }
        let x_hat_s = ctx.denoise(&z_euler, s)?;
        // Trapezoid x_s = x_t + h (eps_t + eps_s)/2 = Euler + h (eps_s - eps_t)/2, with
        // h = sigma_s/alpha_s - sigma_t/alpha_t, times alpha_s back in z.
        let half_h = 0.5 * (s_s - a_s * s_t / a_t);
        let slope_change = eps(z_euler.clone(), x_hat_s, a_s, s_s) - eps(z_t, x_hat, a_t, s_t);
        Ok(z_euler + slope_change * half_h as f32)
    }
}

register_plugin!(
    INTEGRATOR,
    "heun",
    Heun,
    "EDM's Heun sampler (Karras et al. 2022): deterministic, second order, 2 NFE per step"
);
