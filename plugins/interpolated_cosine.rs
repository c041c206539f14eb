//! Simple diffusion's interpolated cosine schedule (Hoogeboom et al. 2023), the paper's ImageNet
//! schedule ("interpolated cosine from noise resolution 32 to 64" at resolution 64): the log-SNR
//! slides in t from the shifted cosine of `noise_high` at t = 0 to that of `noise_low` at t = 1,
//! logsnr(t) = t logsnr_low(t) + (1 - t) logsnr_high(t). The strong shift (more noise) thus acts
//! where global structure is formed (t near 1), the mild one where detail is (t near 0).

use fewstep::plugins::shifted_cosine::{shift, shifted_alpha_sigma, shifted_logsnr};
use fewstep::register_plugin;
use fewstep::schedule::Schedule;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::num::NonZeroU32;

/// log-SNR = cosine log-SNR + 2 t ln(noise_low/resolution) + 2 (1-t) ln(noise_high/resolution).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct InterpolatedCosine {
    /// Image resolution (side in pixels) the schedule is used at.
    #[serde(default = "res64")]
    pub resolution: NonZeroU32,
    /// Noise resolution at t = 1 (the `base` of a shifted cosine; smaller = more noise). The
    /// log-SNR stays monotone while noise_low < 23 noise_high.
    #[serde(default = "res32")]
    pub noise_low: NonZeroU32,
    /// Noise resolution at t = 0.
    #[serde(default = "res64")]
    pub noise_high: NonZeroU32,
}

fn res32() -> NonZeroU32 {
    NonZeroU32::new(32).unwrap()
}

fn res64() -> NonZeroU32 {
    NonZeroU32::new(64).unwrap()
}

impl InterpolatedCosine {
    /// Both shifted cosines share the cosine term, so interpolating them is one cosine with a
    /// shift linear in t.
    fn shift_at(&self, t: f64) -> f64 {
        let t = t.clamp(0.0, 1.0);
        t * shift(self.noise_low, self.resolution)
            + (1.0 - t) * shift(self.noise_high, self.resolution)
    }
}

#[typetag::serde(name = "interpolated-cosine")]
impl Schedule for InterpolatedCosine {
    fn validate(&self) -> anyhow::Result<()> {
        // d logsnr / dt = cosine's (at most -2 pi) + 2 ln(noise_low / noise_high): the log-SNR
        // decreases in t only while noise_low / noise_high < e^pi (about 23.1).
        let (low, high) = (self.noise_low.get(), self.noise_high.get());
        if f64::from(low) / f64::from(high) >= std::f64::consts::PI.exp() {
            return fewstep::config::field_error(
                "noise_low",
                format!(
                    "{low} must be below e^pi x noise_high = {:.1} (noise_high = {high}): beyond \
                     it the log-SNR is not decreasing in t",
                    std::f64::consts::PI.exp() * f64::from(high)
                ),
            );
        }
        Ok(())
    }

    fn logsnr(&self, t: f64) -> f64 {
        shifted_logsnr(t, self.shift_at(t))
    }

    fn alpha_sigma(&self, t: f64) -> (f64, f64) {
        shifted_alpha_sigma(t, self.shift_at(t))
    }
}

register_plugin!(
    SCHEDULE,
    "interpolated-cosine",
    InterpolatedCosine,
    "cosine log-SNR interpolated in t between two shifted cosines (the paper's ImageNet schedule)"
);
