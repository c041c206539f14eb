//! Isotropic Gaussian mixtures: the closed-form data of fewstep's tests and quick presets.

use super::h5::write_array_f64;
use anyhow::{bail, Context, Result};
use std::path::Path;

/// sum_k w_k N(mu_k, s_k^2 I) in D dimensions.
#[derive(Clone, Debug, PartialEq)]
pub struct Mixture {
    pub weights: Vec<f64>,
    /// Row-major `[K, D]`.
    pub means: Vec<f64>,
    pub stds: Vec<f64>,
    pub dim: usize,
}

impl Mixture {
    /// Checks shapes and values; weights are normalised to sum to one.
    pub fn new(weights: Vec<f64>, means: Vec<f64>, stds: Vec<f64>, dim: usize) -> Result<Self> {
        let k = weights.len();
        if k == 0 || stds.len() != k || means.len() != k * dim {
            bail!("mixture shapes disagree: weights [{k}], means [{}] (expected [{k}, {dim}]), stds [{}]", means.len(), stds.len());
        }
        if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
            || stds.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            bail!("mixture weights must be finite and >= 0 and stds finite and > 0");
        }
        let total: f64 = weights.iter().sum();
        if total <= 0.0 {
            bail!("mixture weights sum to zero");
        }
        Ok(Mixture {
            weights: weights.iter().map(|w| w / total).collect(),
            means,
            stds,
            dim,
        })
    }

    pub fn components(&self) -> usize {
        self.weights.len()
    }

    /// Mean of component k.
    pub fn mean(&self, k: usize) -> &[f64] {
        &self.means[k * self.dim..(k + 1) * self.dim]
    }

    /// Reads `/mixture` of a dataset file; `Ok(None)` when the file has none.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let file = hdf5::File::open(path)
            .with_context(|| format!("cannot open HDF5 file {}", path.display()))?;
        let Ok(g) = file.group("mixture") else {
            return Ok(None);
        };
        let read = |name: &str| -> Result<(Vec<f64>, Vec<usize>)> {
            let ds = g
                .dataset(name)
                .with_context(|| format!("{}: `/mixture/{name}` is missing", path.display()))?;
            super::source::check_declared_size(&ds)?;
            Ok((ds.read_raw::<f64>()?, ds.shape()))
        };
        let (weights, _) = read("weights")?;
        let (means, mshape) = read("means")?;
        let (stds, _) = read("stds")?;
        if mshape.len() != 2 {
            bail!(
                "{}: `/mixture/means` has shape {mshape:?}; expected [K, D]",
                path.display()
            );
        }
        Mixture::new(weights, means, stds, mshape[1])
            .map(Some)
            .with_context(|| format!("{}: bad `/mixture`", path.display()))
    }

    /// Writes `/mixture` into an open file.
    pub fn write(&self, file: &hdf5::File) -> Result<()> {
        let g = file.create_group("mixture")?;
        let k = self.components();
        write_array_f64(&g, "weights", &self.weights, &[k])?;
        write_array_f64(&g, "means", &self.means, &[k, self.dim])?;
        write_array_f64(&g, "stds", &self.stds, &[k])?;
        Ok(())
    }
}
