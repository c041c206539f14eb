//! k-diffusion's `sample_euler_ancestral` (Karras et al. 2022's schedule-free form), written for
//! any schedule: in the variance-exploding variables x = z/alpha, sigma_ve = sigma/alpha it takes
//! an Euler step to sigma_down and adds noise of size sigma_up, where
//!   sigma_up = min(sigma_to, eta sigma_to sqrt(1 - sigma_to^2/sigma_from^2)),
//!   sigma_down = sqrt(sigma_to^2 - sigma_up^2).
//! Back in z, with m = (sigma_up/sigma_to)^2 = min(1, eta^2 (1 - SNR_t/SNR_s)):
//!   z_s = alpha_s x_hat + sigma_s (sqrt(1 - m) eps_hat + sqrt(m) xi),
//! eps_hat = (z_t - alpha_t x_hat)/sigma_t, xi ~ N(0, I) from the row's own noise stream. eta = 0
//! is DDIM; eta = 1 has DDPM's (eq. 1) mean and variance. The last step (sigma_s = 0) returns
//! x_hat and adds no noise, as k-diffusion's does.

use dfdx::shapes::HasShape;
use fewstep::config::non_negative;
use fewstep::integrator::multistep::combine;
use fewstep::integrator::{Integrator, StepCtx};
use fewstep::register_plugin;
use fewstep::tensor::Batch;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Euler ancestral: stochastic, 1 NFE per step, batch-invariant noise.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct EulerAncestral {
    /// Share of each step's noise that is fresh: 0 is DDIM, 1 (the default) is ancestral
    /// sampling; above 1 the fresh noise is capped at the whole sigma_s, as in k-diffusion.
    #[serde(default = "eta", deserialize_with = "non_negative")]
    pub eta: f64,
}

fn eta() -> f64 {
    1.0
}

impl Default for EulerAncestral {
    fn default() -> Self {
        EulerAncestral { eta: eta() }
    }
}

#[typetag::serde(name = "euler-ancestral")]
impl Integrator for EulerAncestral {
    fn step(&self, ctx: &mut StepCtx, z_t: Batch, t: f64, s: f64) -> anyhow::Result<Batch> {
        let x_hat = ctx.denoise(&z_t, t)?;
        let sch = ctx.schedule;
        let ((a_t, sig_t), (a_s, sig_s)) = (sch.alpha_sigma(t), sch.alpha_sigma(s));
        if sig_s == 0.0 {
            return Ok(x_hat);
        }
        // 1 - SNR_t/SNR_s = -expm1(logsnr_t - logsnr_s), in [0, 1], exact for close t and s.
        let fresh = -(sch.logsnr(t) - sch.logsnr(s)).exp_m1();
        let m = (self.eta * self.eta * fresh).min(1.0);
        // sigma_s sqrt(1 - m) eps_hat, with eps_hat = (z_t - alpha_t x_hat)/sigma_t.
        let c_eps = sig_s * (1.0 - m).sqrt() / sig_t;
        let z_s = combine(&[(a_s - c_eps * a_t, &x_hat), (c_eps, &z_t)]);
        if m == 0.0 {
            return Ok(z_s);
        }
        let (n, d) = *z_t.shape();
        let xi = ctx.row_normal(n, d)?;
        Ok(z_s + xi * (sig_s * m.sqrt()) as f32)
    }
}

register_plugin!(
    INTEGRATOR,
    "euler-ancestral",
    EulerAncestral,
    "k-diffusion's Euler ancestral sampler (eta): stochastic, first order, 1 NFE per step"
);
