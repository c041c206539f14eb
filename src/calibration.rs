//! Calibration tables of aDDIM's posterior variance: x_var(t) = eta * E||x_hat(z_t) - x||^2 / d,
//! measured on data by `fewstep calibrate` (Algorithm 3, "precompute x_var,t for all t") and read
//! by integrators with `variance = "table"`. The file is JSON: `{"t": [...], "xvar": [...]}`.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// x_var at a few times, linearly interpolated in between and held constant beyond the ends.
/// Built only through [`Calibration::new`] / [`Calibration::load`], so the times are sorted.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    t: Vec<f64>,
    xvar: Vec<f64>,
}

impl Calibration {
    /// A table from (t, x_var) points in any order; rejects empty, mismatched, repeated or
    /// non-finite times and negative variances.
    pub fn new(t: Vec<f64>, xvar: Vec<f64>) -> Result<Self> {
        if t.is_empty() || t.len() != xvar.len() {
            bail!(
                "a calibration table needs as many `xvar` as `t` values, at least one (got {} and {})",
                t.len(),
                xvar.len()
            );
        }
        if let Some(i) =
            (0..t.len()).find(|&i| !t[i].is_finite() || !xvar[i].is_finite() || xvar[i] < 0.0)
        {
            bail!(
                "calibration point {i} is invalid (t = {}, xvar = {}): times must be finite and \
                 variances finite and non-negative",
                t[i],
                xvar[i]
            );
        }
        let mut points: Vec<(f64, f64)> = t.into_iter().zip(xvar).collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        if let Some(w) = points.windows(2).find(|w| w[0].0 == w[1].0) {
            bail!("calibration table lists t = {} twice", w[0].0);
        }
        let (t, xvar) = points.into_iter().unzip();
        Ok(Calibration { t, xvar })
    }

    /// Reads and checks a table written by [`Calibration::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read calibration table {}", path.display()))?;
        let raw: Calibration = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a calibration table (expected JSON {{\"t\": [...], \"xvar\": [...]}})",
                path.display()
            )
        })?;
        Calibration::new(raw.t, raw.xvar).with_context(|| format!("in {}", path.display()))
    }

    /// Writes the table as JSON (atomically: a reader never sees half a file).
    pub fn save(&self, path: &Path) -> Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }

    /// The times, increasing.
    pub fn times(&self) -> &[f64] {
        &self.t
    }

    /// x_var at each of [`Calibration::times`] (already scaled by eta).
    pub fn values(&self) -> &[f64] {
        &self.xvar
    }

    /// x_var at time `t`.
    pub fn interpolate(&self, t: f64) -> f64 {
        let (ts, vs) = (&self.t, &self.xvar);
        let i = ts.partition_point(|&ti| ti <= t);
        if i == 0 {
            return vs[0];
        }
        if i == ts.len() {
            return vs[i - 1];
        }
        let w = (t - ts[i - 1]) / (ts[i] - ts[i - 1]);
        vs[i - 1] + w * (vs[i] - vs[i - 1])
    }
}
