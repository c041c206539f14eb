//! The learning-rate schedule: a linear warm-up to the peak, then constant or a decay to a final
//! fraction of the peak at the last step.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How the learning rate moves after the warm-up.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LrDecay {
    /// The peak until the end.
    #[default]
    Constant,
    /// Linearly from the peak to `lr_final` x the peak at the last step.
    Linear,
    /// Along half a cosine from the peak to `lr_final` x the peak at the last step.
    Cosine,
}

/// The learning rate of step `step` (0-based) of a run of `steps` steps: `peak` reached linearly
/// over `warmup` steps, then decayed by `decay` to `final_fraction` x `peak` at the last step.
pub fn lr_at(
    peak: f64,
    warmup: u64,
    decay: LrDecay,
    final_fraction: f64,
    step: u64,
    steps: u64,
) -> f64 {
    let warm = peak * ((step + 1) as f64 / warmup.max(1) as f64).min(1.0);
    if decay == LrDecay::Constant || step < warmup {
        return warm;
    }
    // Progress through the decay: 0 just after the warm-up, 1 at the last step.
    let span = steps.saturating_sub(warmup).max(1) as f64;
    let p = (((step + 1 - warmup) as f64) / span).min(1.0);
    let shape = match decay {
        LrDecay::Constant => 1.0,
        LrDecay::Linear => 1.0 - p,
        LrDecay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * p).cos()),
    };
    warm * (final_fraction + (1.0 - final_fraction) * shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_then_each_decay_reaches_its_final_fraction() {
        let (peak, warmup, steps) = (1e-3, 10, 110);
        for decay in [LrDecay::Constant, LrDecay::Linear, LrDecay::Cosine] {
            let lr = |s| lr_at(peak, warmup, decay, 0.1, s, steps);
            assert_eq!(lr(0), peak / 10.0, "{decay:?}");
            assert_eq!(lr(9), peak, "{decay:?}: the peak at the warm-up's end");
            let last = lr(steps - 1);
            let want = if decay == LrDecay::Constant {
                peak
            } else {
                0.1 * peak
            };
            assert!((last - want).abs() < 1e-15, "{decay:?}: {last}");
            // Never increasing after the peak.
            assert!((9..steps - 1).all(|s| lr(s + 1) <= lr(s)), "{decay:?}");
        }
        // Half-way through the decay: linear and cosine both at the middle value.
        let mid = |d| lr_at(1.0, 10, d, 0.0, 59, 110);
        assert!((mid(LrDecay::Linear) - 0.5).abs() < 1e-12);
        assert!((mid(LrDecay::Cosine) - 0.5).abs() < 1e-12);
    }
}
