//! DDPM's linear schedule (betas 1e-4 ... 0.02 over 1000 steps) in continuous time: the VP-SDE
//! with beta(t) = beta_min + t (beta_max - beta_min), so
//! ln alpha^2(t) = -(beta_min t + (beta_max - beta_min) t^2 / 2).

use fewstep::config::{non_negative, positive};
use fewstep::register_plugin;
use fewstep::schedule::Schedule;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// VP-SDE with linear beta(t); the defaults are DDPM's betas times its 1000 steps.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Linear {
    /// beta(0), the noise rate at t = 0 (DDPM: 1e-4 x 1000 steps).
    #[serde(default = "beta_min", deserialize_with = "non_negative")]
    pub beta_min: f64,
    /// beta(1), the noise rate at t = 1 (DDPM: 0.02 x 1000 steps).
    #[serde(default = "beta_max", deserialize_with = "positive")]
    pub beta_max: f64,
}

fn beta_min() -> f64 {
    0.1
}

fn beta_max() -> f64 {
    20.0
}

impl Linear {
    /// -ln alpha^2(t) = integral of beta from 0 to t.
    fn decay(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, 1.0);
        self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t
    }
}

#[typetag::serde(name = "linear")]
impl Schedule for Linear {
    fn logsnr(&self, t: f64) -> f64 {
        // ln(alpha^2 / sigma^2) with sigma^2 = 1 - e^-decay = -expm1(-decay), accurate near t = 0.
        let b = self.decay(t);
        -b - (-(-b).exp_m1()).ln()
    }

    fn alpha_sigma(&self, t: f64) -> (f64, f64) {
        let b = self.decay(t);
        ((-0.5 * b).exp(), (-(-b).exp_m1()).sqrt())
    }
}

register_plugin!(
    SCHEDULE,
    "linear",
    Linear,
    "DDPM's linear betas (1e-4..0.02, 1000 steps) as a continuous VP-SDE"
);
