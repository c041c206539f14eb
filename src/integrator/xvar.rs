//! aDDIM's posterior-variance estimate x_var = tr(Var[x | z_t]) / d (Algorithm 3): the config of
//! integrators that need it (`addim`, `noise-ddim`), read from the denoiser, an analytic form or
//! a measured table ([`super::xvar_table`]).

use super::xvar_table::XVarTable;
use super::StepCtx;
use crate::config::non_negative;
use crate::schedule::Schedule;
use crate::tensor::Batch;
use anyhow::{anyhow, bail, Result};
use dfdx::shapes::HasShape;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::OnceLock;

/// Where x_var comes from.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Analytic,
    Exact,
    Table,
}

/// How aDDIM estimates the variance that DDIM leaves out.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct XVar {
    /// Fraction of the exact posterior variance used with `variance = "exact"` (the paper's
    /// xvar_frac; a table is scaled when written, the analytic form not at all).
    #[serde(default = "eta", deserialize_with = "non_negative")]
    pub eta: f64,
    /// x_var source: "analytic" = 0.1/(2 + SNR_t), the paper's data-free choice; "exact" = eta
    /// x the denoiser's posterior variance (Gaussian mixtures have it); "table" = the file at
    /// `table`, written by `fewstep calibrate`.
    #[serde(default)]
    pub variance: Source,
    /// Calibration file for `variance = "table"`: JSON {"t": [...], "xvar": [...]}, already
    /// scaled by eta, interpolated linearly in t.
    /// (Made absolute when read, so a run's stored config finds it from any folder.)
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::absolute_path"
    )]
    pub table: Option<PathBuf>,
    #[serde(skip)]
    loaded: OnceLock<XVarTable>,
}

fn eta() -> f64 {
    0.75
}

impl Default for XVar {
    /// The same as the config `{}`.
    fn default() -> Self {
        XVar {
            eta: eta(),
            variance: Source::Analytic,
            table: None,
            loaded: OnceLock::new(),
        }
    }
}

/// 0.1 / (2 + SNR_t): 10% of the posterior variance of x under a factorised N(0, 0.5) prior.
pub fn analytic(schedule: &dyn Schedule, t: f64) -> f64 {
    0.1 / (2.0 + schedule.snr(t))
}

impl XVar {
    /// x_var for each row of `z_t` at time t.
    pub fn at(&self, ctx: &StepCtx, z_t: &Batch, t: f64) -> Result<Vec<f64>> {
        let rows = z_t.shape().0;
        match self.variance {
            Source::Exact => {
                self.check()?;
                let v = ctx.posterior_variance(z_t, t).ok_or_else(|| {
                    anyhow!(
                        "variance = \"exact\" needs a denoiser with an exact posterior variance \
                         (e.g. `gmm`), and this one has none; use \"analytic\" or \"table\""
                    )
                })??;
                Ok(v.as_vec()
                    .into_iter()
                    .map(|v| self.eta * f64::from(v))
                    .collect())
            }
            _ => self.at_times(ctx.schedule, &vec![t; rows]),
        }
    }

    /// x_var at one time per row, without a denoiser (distillation's teacher step).
    pub fn at_times(&self, schedule: &dyn Schedule, t: &[f64]) -> Result<Vec<f64>> {
        self.check()?;
        match self.variance {
            Source::Analytic => Ok(t.iter().map(|&t| analytic(schedule, t)).collect()),
            Source::Table => {
                let table = self.calibration()?;
                Ok(t.iter().map(|&t| table.interpolate(t)).collect())
            }
            Source::Exact => bail!(
                "variance = \"exact\" needs the denoiser, which a teacher step does not see: pass \
                 x_var (e.g. eta ||x_teacher - x||^2 / d), or use \"analytic\" or \"table\""
            ),
        }
    }

    /// Checks that `variance` and `table` agree (a table path only with, and always with,
    /// `variance = "table"`).
    pub fn check(&self) -> Result<()> {
        match (self.variance, &self.table) {
            (Source::Table, None) => crate::config::field_error(
                "variance",
                "\"table\" needs `table = \"calibration.json\"` (written by `fewstep calibrate`)",
            ),
            (Source::Analytic | Source::Exact, Some(p)) => crate::config::field_error(
                "table",
                format!(
                    "\"{}\" is only read with variance = \"table\" (variance is \"{}\")",
                    p.display(),
                    match self.variance {
                        Source::Exact => "exact",
                        _ => "analytic",
                    }
                ),
            ),
            _ => Ok(()),
        }
    }

    /// The table, read once.
    fn calibration(&self) -> Result<&XVarTable> {
        if let Some(c) = self.loaded.get() {
            return Ok(c);
        }
        let path = self
            .table
            .as_ref()
            .expect("checked: variance = table has a path");
        let c = XVarTable::load(path)?;
        Ok(self.loaded.get_or_init(|| c))
    }
}
