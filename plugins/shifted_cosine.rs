//! Simple diffusion's shifted cosine schedule (Hoogeboom et al. 2023): the cosine log-SNR moved by
//! 2 ln(base / resolution), so an image of side `resolution` is as noisy, per unit of content, as
//! one of side `base` under the plain cosine schedule.

use fewstep::register_plugin;
use fewstep::schedule::Schedule;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::f64::consts::FRAC_PI_2;
use std::num::NonZeroU32;

/// log-SNR = -2 ln tan(pi t/2) + 2 ln(base / resolution).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct ShiftedCosine {
    /// Image resolution (side in pixels) the schedule is used at.
    #[serde(default = "res64")]
    pub resolution: NonZeroU32,
    /// Noise resolution: where the plain cosine schedule applies. Equal to `resolution` = no
    /// shift; smaller = more noise (simple diffusion uses 64 for larger images).
    #[serde(default = "res64")]
    pub base: NonZeroU32,
}

fn res64() -> NonZeroU32 {
    NonZeroU32::new(64).unwrap()
}

/// The shift 2 ln(base / resolution) of the log-SNR.
pub fn shift(base: NonZeroU32, resolution: NonZeroU32) -> f64 {
    2.0 * (f64::from(base.get()) / f64::from(resolution.get())).ln()
}

/// Cosine log-SNR plus `shift`, infinite at the ends.
pub fn shifted_logsnr(t: f64, shift: f64) -> f64 {
    match t {
        t if t <= 0.0 => f64::INFINITY,
        t if t >= 1.0 => f64::NEG_INFINITY,
        t => shift - 2.0 * (FRAC_PI_2 * t).tan().ln(),
    }
}

/// (alpha, sigma) of the shifted cosine in closed form: SNR = k^2 cot^2(pi t/2) with
/// k = e^(shift/2), so alpha = k cos / hypot(k cos, sin). Exact at the ends (alpha(1) = 0,
/// sigma(0) = 0), where cos(pi/2) = 6e-17 would otherwise leak through.
pub fn shifted_alpha_sigma(t: f64, shift: f64) -> (f64, f64) {
    match t {
        t if t <= 0.0 => (1.0, 0.0),
        t if t >= 1.0 => (0.0, 1.0),
        t => {
            let (sin, cos) = (FRAC_PI_2 * t).sin_cos();
            let kc = (0.5 * shift).exp() * cos;
            let h = kc.hypot(sin);
            (kc / h, sin / h)
        }
    }
}

#[typetag::serde(name = "shifted-cosine")]
impl Schedule for ShiftedCosine {
    fn logsnr(&self, t: f64) -> f64 {
        shifted_logsnr(t, shift(self.base, self.resolution))
    }

    fn alpha_sigma(&self, t: f64) -> (f64, f64) {
        shifted_alpha_sigma(t, shift(self.base, self.resolution))
    }
}

register_plugin!(
    SCHEDULE,
    "shifted-cosine",
    ShiftedCosine,
    "cosine with log-SNR shifted by 2 ln(base/resolution) (simple diffusion)"
);
