//! The cosine schedule: alpha = cos(pi t / 2), sigma = sin(pi t / 2), exact at both ends.

use fewstep::register_plugin;
use fewstep::schedule::Schedule;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::f64::consts::FRAC_PI_2;

/// alpha_t = cos(pi t/2): log-SNR = -2 ln tan(pi t/2).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Default)]
#[serde(deny_unknown_fields)]
pub struct Cosine {}

#[typetag::serde(name = "cosine")]
impl Schedule for Cosine {
    fn logsnr(&self, t: f64) -> f64 {
        let (a, s) = self.alpha_sigma(t);
        2.0 * (a.ln() - s.ln())
    }

    fn alpha_sigma(&self, t: f64) -> (f64, f64) {
        // cos(pi/2) is 6e-17, not 0: pin the endpoints so alpha(1) = 0 and sigma(0) = 0 exactly.
        match t {
            t if t <= 0.0 => (1.0, 0.0),
            t if t >= 1.0 => (0.0, 1.0),
            t => ((FRAC_PI_2 * t).cos(), (FRAC_PI_2 * t).sin()),
        }
    }
}

register_plugin!(
    SCHEDULE,
    "cosine",
    Cosine,
    "alpha = cos(pi t/2), the VP cosine schedule (exact endpoints)"
);
