//! Built-in datasets of `fewstep data make`: Gaussian mixtures (exact denoiser available) and
//! procedural image sets (training with no download).

use super::h5::{write_array, write_str_attr, write_with, DataArray};
use super::Mixture;
use anyhow::{bail, Result};
use std::path::Path;

/// A generated dataset: rows, optional labels, optional mixture parameters.
pub struct BuiltSet {
    pub data: DataArray,
    pub labels: Option<Vec<i64>>,
    pub mixture: Option<Mixture>,
}

/// Names accepted by [`make_set`], with a description.
pub const SETS: &[(&str, &str)] = &[
    (
        "two-modes",
        "1-D mixture of two modes (the paper's Figure 1)",
    ),
    ("ring8", "2-D, 8 modes on the unit circle, std 0.05"),
    ("gmm64", "64-D, 10 components, means of norm ~1, std 0.1"),
    (
        "shapes16",
        "3x16x16 images of coloured shapes, labelled by shape class",
    ),
    (
        "shapes32",
        "3x32x32 images of coloured shapes, labelled by shape class",
    ),
];

/// Generates built-in set `name` with `n` rows from `seed`.
pub fn make_set(name: &str, n: usize, seed: u64) -> Result<BuiltSet> {
    match name {
        "two-modes" | "ring8" | "gmm64" => super::mixtures::make(name, n, seed),
        "shapes16" => super::shapes::make(16, n, seed),
        "shapes32" => super::shapes::make(32, n, seed),
        other => bail!(
            "unknown built-in dataset `{other}`; valid names: {}",
            SETS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Writes a built set to `path` (atomically): `/data`, `/labels`, `/mixture`, a `source` attribute.
pub fn write_set(path: &Path, set: &BuiltSet, source: &str) -> Result<()> {
    write_with(path, |file| {
        write_array(file, "data", &set.data)?;
        let ds = file.dataset("data")?;
        write_str_attr(&ds, "source", source)?;
        if let Some(labels) = &set.labels {
            file.new_dataset_builder()
                .with_data(labels.as_slice())
                .create("labels")?;
        }
        if let Some(m) = &set.mixture {
            m.write(file)?;
        }
        Ok(())
    })
}
