//! aDDIM's variance table x_var(t) = eta * E||x_hat(z_t) - x||^2 / d (paper 3.2, Algorithm 3:
//! "precompute x_var,t = eta ||x - x_hat(z_t)||^2 / d for all t"), measured on data by
//! [`XVarTable::measure`] (`fewstep calibrate`) and read by integrators with
//! `variance = "table"`. The file is JSON: `{"t": [...], "xvar": [...]}`.

use crate::denoiser::{Denoiser, Level};
use crate::schedule::Schedule;
use crate::tensor::{batch_from_vec, host_normal, row_sq_norm, Dev};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// x_var at a few times, linearly interpolated in between and held constant beyond the ends.
/// Built only through [`XVarTable::new`] / [`XVarTable::load`], so the times are sorted.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct XVarTable {
    t: Vec<f64>,
    xvar: Vec<f64>,
}

impl XVarTable {
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
        Ok(XVarTable { t, xvar })
    }

    /// Reads and checks a table written by [`XVarTable::save`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read calibration table {}", path.display()))?;
        let raw: XVarTable = serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a calibration table (expected JSON {{\"t\": [...], \"xvar\": [...]}})",
                path.display()
            )
        })?;
        XVarTable::new(raw.t, raw.xvar).with_context(|| format!("in {}", path.display()))
    }

    /// Writes the table as JSON (atomically: a reader never sees half a file).
    pub fn save(&self, path: &Path) -> Result<()> {
        crate::output::write_bytes(path, serde_json::to_string_pretty(self)?.as_bytes())
    }

    /// x_var(t) = eta * mean over rows of ||x - x_hat(z_t)||^2 / d, with z_t = alpha_t x + sigma_t
    /// eps, at each time of `grid`. `x` holds `rows` rows of `dim` values; `chunk` rows are
    /// denoised at once. The noise comes from `seed`, the same draw at every t.
    #[allow(clippy::too_many_arguments)]
    pub fn measure(
        dev: &Dev,
        denoiser: &dyn Denoiser,
        schedule: &dyn Schedule,
        x: &[f32],
        dim: usize,
        grid: &[f64],
        eta: f64,
        seed: u64,
        chunk: usize,
    ) -> Result<Self> {
        if dim == 0 || x.is_empty() || !x.len().is_multiple_of(dim) {
            bail!(
                "calibration needs whole rows of {dim} values (got {})",
                x.len()
            );
        }
        if denoiser.dim() != dim {
            bail!(
                "the denoiser takes rows of {} values, the data has {dim}",
                denoiser.dim()
            );
        }
        let eps = host_normal(&mut crate::seed::seeded(seed), x.len());
        let rows = x.len() / dim;
        let step = chunk.max(1) * dim;
        let mut xvar = Vec::with_capacity(grid.len());
        for &t in grid {
            let (a, s) = schedule.alpha_sigma(t);
            let level = Level::at(schedule, t);
            let mut total = 0.0;
            for (xc, ec) in x.chunks(step).zip(eps.chunks(step)) {
                let n = xc.len() / dim;
                let z: Vec<f32> = xc
                    .iter()
                    .zip(ec)
                    .map(|(&x, &e)| (a * x as f64 + s * e as f64) as f32)
                    .collect();
                let z = batch_from_vec(dev, z, n, dim);
                let xb = batch_from_vec(dev, xc.to_vec(), n, dim);
                let err = row_sq_norm(&(denoiser.denoise(&z, &level)? - xb));
                total += err.as_vec().iter().map(|&e| e as f64).sum::<f64>();
            }
            xvar.push(eta * total / (rows * dim) as f64);
        }
        XVarTable::new(grid.to_vec(), xvar)
    }

    /// The times, increasing.
    pub fn times(&self) -> &[f64] {
        &self.t
    }

    /// x_var at each of [`XVarTable::times`] (already scaled by eta).
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
