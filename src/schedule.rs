//! Noise schedules: diffusion time t in [0, 1] -> log-SNR, alpha, sigma.

use std::fmt::Debug;

/// A noise schedule. Variance preserving (alpha^2 + sigma^2 = 1) unless a plugin says otherwise:
/// every quantity derives from the log-SNR, lambda(t) = ln(alpha^2 / sigma^2), which is
/// non-increasing in t, +inf (or large) at t = 0 and -inf (or very negative) at t = 1.
#[typetag::serde(tag = "name")]
pub trait Schedule: Send + Sync + Debug {
    /// The log signal-to-noise ratio at time t.
    fn logsnr(&self, t: f64) -> f64;

    /// Checks the plugin's settings together, where one field's valid range depends on another
    /// (a single field's range is checked as it is read). Called when a config is loaded, before
    /// any work; the error names the fields and their valid values.
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// (alpha_t, sigma_t). The default derives both from the log-SNR (variance preserving);
    /// plugins with a closed form override it so the endpoints are exact (alpha(1) = 0 must hold
    /// in f32 for a cosine schedule).
    fn alpha_sigma(&self, t: f64) -> (f64, f64) {
        vp_from_logsnr(self.logsnr(t))
    }

    /// SNR(t) = alpha^2 / sigma^2.
    fn snr(&self, t: f64) -> f64 {
        let (a, s) = self.alpha_sigma(t);
        if s == 0.0 {
            f64::INFINITY
        } else {
            (a * a) / (s * s)
        }
    }
}

/// Variance-preserving (alpha, sigma) from a log-SNR, exact at +-inf.
pub fn vp_from_logsnr(logsnr: f64) -> (f64, f64) {
    // alpha^2 = sigmoid(lambda), sigma^2 = sigmoid(-lambda), written to stay accurate in the tails.
    let a2 = sigmoid(logsnr);
    let s2 = sigmoid(-logsnr);
    (a2.sqrt(), s2.sqrt())
}

/// The logistic function, stable for large |x|.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The uniform sampling grid t_i = i / steps, from 1 down to 0 (steps + 1 points).
pub fn uniform_grid(steps: usize) -> Vec<f64> {
    assert!(steps > 0, "a sampler needs at least one step");
    (0..=steps).rev().map(|i| i as f64 / steps as f64).collect()
}
