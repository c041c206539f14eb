//! The built-in Gaussian-mixture sets: rows drawn exactly from the mixture, stored with its
//! parameters so the `gmm` denoiser can give the exact E[x | z_t].

use crate::data::h5::write_with;
use crate::data::set::BuiltSet;
use crate::data::write::{chunk_rows, write_labels, RowWriter};
use crate::data::{DataArray, Mixture};
use crate::seed::{seeded, SeededRng};
use anyhow::{bail, Result};
use rand::distributions::{Distribution, WeightedIndex};
use rand::Rng;
use rand_distr::StandardNormal;
use std::f64::consts::TAU;
use std::path::Path;

/// gmm64's means and weights come from this seed, not the sample seed, so every gmm64 file
/// holds the same mixture.
const GMM64_SEED: u64 = 0x0067_6d6d_3634;

/// The mixture behind built-in set `name`.
pub fn mixture(name: &str) -> Result<Mixture> {
    match name {
        // The paper's Figure 1: two well-separated equal modes, total variance ~1 like the prior.
        "two-modes" => Mixture::new(vec![0.5, 0.5], vec![-1.0, 1.0], vec![0.1, 0.1], 1),
        "ring8" => {
            let means = (0..8)
                .flat_map(|k| {
                    let a = TAU * k as f64 / 8.0;
                    [a.cos(), a.sin()]
                })
                .collect();
            Mixture::new(vec![1.0; 8], means, vec![0.05; 8], 2)
        }
        "gmm64" => {
            let (k, d) = (10, 64);
            let mut rng = seeded(GMM64_SEED);
            let mut means = Vec::with_capacity(k * d);
            for _ in 0..k {
                let mu: Vec<f64> = (0..d).map(|_| rng.sample(StandardNormal)).collect();
                let norm = mu.iter().map(|x| x * x).sum::<f64>().sqrt();
                means.extend(mu.iter().map(|x| x / norm));
            }
            // Unequal weights 1..=10 (normalised), so a sampler that favours modes shows.
            let weights = (1..=k).map(|w| w as f64).collect();
            Mixture::new(weights, means, vec![0.1; k], d)
        }
        other => bail!("`{other}` is not a built-in mixture; valid: two-modes, ring8, gmm64"),
    }
}

/// `n` rows of set `name` drawn from `seed`, labelled by component.
pub fn make(name: &str, n: usize, seed: u64) -> Result<BuiltSet> {
    if n == 0 {
        bail!("a dataset needs at least one row (got --n 0)");
    }
    let m = mixture(name)?;
    let (values, labels) = sample(&m, n, &mut seeded(seed));
    Ok(BuiltSet {
        data: DataArray::new(values, vec![n, m.dim]),
        labels: Some(labels),
        mixture: Some(m),
    })
}

/// Writes `n` draws of mixture `name` (the values and labels [`make`] gives) to `path`, a block
/// of rows at a time, with `/labels`, `/mixture` and a `source` attribute; returns the shape of
/// `/data`. Memory: one block of rows and the labels (8 bytes a row).
pub fn write(path: &Path, name: &str, n: usize, seed: u64, source: &str) -> Result<Vec<usize>> {
    if n == 0 {
        bail!("a dataset needs at least one row (got --n 0)");
    }
    let m = mixture(name)?;
    let shape = vec![n, m.dim];
    let mut rng = seeded(seed);
    write_with(path, |file| {
        let mut out = RowWriter::create::<f32>(file, &shape, None)?;
        let mut labels = super::labels_for(n)?;
        let block = chunk_rows(n, m.dim * std::mem::size_of::<f32>());
        for start in (0..n).step_by(block) {
            // One generator drawn row after row: the same values as drawing all n at once.
            let (values, l) = sample(&m, block.min(n - start), &mut rng);
            out.write(&values)?;
            labels.extend(l);
        }
        out.finish(&[("source", source.to_string())])?;
        write_labels(file, &labels, None)?;
        m.write(file)
    })?;
    Ok(shape)
}

/// `n` exact draws (row-major `[n, D]`) and the component each came from.
pub fn sample(m: &Mixture, n: usize, rng: &mut SeededRng) -> (Vec<f32>, Vec<i64>) {
    let pick = WeightedIndex::new(&m.weights).expect("Mixture::new checked the weights");
    let mut values = Vec::with_capacity(n * m.dim);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let k = pick.sample(rng);
        labels.push(k as i64);
        for &mu in m.mean(k) {
            let e: f64 = rng.sample(StandardNormal);
            values.push((mu + m.stds[k] * e) as f32);
        }
    }
    (values, labels)
}
