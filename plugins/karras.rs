//! The EDM noise levels of Karras et al. (2022), as a variance-preserving schedule: the VE level
//! sigma(t) = (t sigma_max^(1/rho) + (1-t) sigma_min^(1/rho))^rho, then alpha = 1/sqrt(1+sigma^2)
//! and sigma_vp = sigma/sqrt(1+sigma^2) (the same SNR, 1/sigma^2).

use fewstep::config::positive;
use fewstep::register_plugin;
use fewstep::schedule::Schedule;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// EDM's rho-spaced noise levels between sigma_min (t = 0) and sigma_max (t = 1). Its t = 0 is
/// still noisy (sigma_min), so sampling ends with one more evaluation to sigma = 0, x = x_hat,
/// as EDM and k-diffusion end (`sampling::to_clean`).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Karras {
    /// VE noise level at t = 0 (below sigma_max).
    #[serde(default = "sigma_min", deserialize_with = "positive")]
    pub sigma_min: f64,
    /// VE noise level at t = 1.
    #[serde(default = "sigma_max", deserialize_with = "positive")]
    pub sigma_max: f64,
    /// Spacing exponent: larger puts more of the steps at low noise.
    #[serde(default = "rho", deserialize_with = "positive")]
    pub rho: f64,
}

fn sigma_min() -> f64 {
    0.002
}

fn sigma_max() -> f64 {
    80.0
}

fn rho() -> f64 {
    7.0
}

impl Karras {
    /// The VE noise level sigma(t) = sigma_vp / alpha. Written as t hi + (1-t) lo so both ends
    /// come out as sigma_min and sigma_max up to the rounding of the rho-th root.
    pub fn sigma_ve(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, 1.0);
        let (lo, hi) = (
            self.sigma_min.powf(1.0 / self.rho),
            self.sigma_max.powf(1.0 / self.rho),
        );
        (t * hi + (1.0 - t) * lo).powf(self.rho)
    }
}

#[typetag::serde(name = "karras")]
impl Schedule for Karras {
    fn validate(&self) -> anyhow::Result<()> {
        if self.sigma_min >= self.sigma_max {
            return fewstep::config::field_error(
                "sigma_min",
                format!(
                    "{} must be below sigma_max = {} (the noise levels grow from t = 0 to t = 1)",
                    self.sigma_min, self.sigma_max
                ),
            );
        }
        Ok(())
    }

    fn logsnr(&self, t: f64) -> f64 {
        -2.0 * self.sigma_ve(t).ln()
    }

    fn alpha_sigma(&self, t: f64) -> (f64, f64) {
        let s = self.sigma_ve(t);
        let h = s.hypot(1.0);
        (1.0 / h, s / h)
    }
}

register_plugin!(
    SCHEDULE,
    "karras",
    Karras,
    "EDM's sigma_min..sigma_max levels with rho = 7 (Karras et al. 2022), mapped to VP"
);
