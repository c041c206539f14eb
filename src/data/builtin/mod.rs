//! Built-in datasets of `fewstep data make`: Gaussian mixtures (exact denoiser available) and
//! procedural image sets (training with no download).

pub mod mixtures;
pub mod shapes;

pub use super::set::{write_set, BuiltSet};
use anyhow::{bail, Result};

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
        "two-modes" | "ring8" | "gmm64" => mixtures::make(name, n, seed),
        "shapes16" => shapes::make(16, n, seed),
        "shapes32" => shapes::make(32, n, seed),
        other => bail!(
            "unknown built-in dataset `{other}`; valid names: {}",
            SETS.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// Writes built-in set `name` with `n` rows from `seed` to `path` and returns the shape of its
/// `/data`, block by block (never whole in memory): image sets as uint8, mixtures as float32.
pub fn write_builtin(
    path: &std::path::Path,
    name: &str,
    n: usize,
    seed: u64,
    source: &str,
) -> Result<Vec<usize>> {
    match name {
        "shapes16" | "shapes32" => {
            let size = if name == "shapes16" { 16 } else { 32 };
            shapes::write(path, size, n, seed, source)?;
            Ok(vec![n, 3, size, size])
        }
        "two-modes" | "ring8" | "gmm64" => mixtures::write(path, name, n, seed, source),
        _ => {
            let set = make_set(name, n, seed)?;
            write_set(path, &set, source)?;
            Ok(set.data.shape)
        }
    }
}

/// Bytes a row of built-in set `name` takes on disk (`/data` and its label), `None` for an
/// unknown name.
pub fn row_bytes(name: &str) -> Option<u128> {
    let (values, elem) = match name {
        "two-modes" => (1, 4),
        "ring8" => (2, 4),
        "gmm64" => (64, 4),
        "shapes16" => (3 * 16 * 16, 1),
        "shapes32" => (3 * 32 * 32, 1),
        _ => return None,
    };
    Some(values * elem + std::mem::size_of::<i64>() as u128)
}

/// An empty label buffer for `n` rows (the labels are held until the end: 8 bytes a row),
/// refused with the size when memory cannot hold it rather than aborting.
fn labels_for(n: usize) -> Result<Vec<i64>> {
    let mut labels = Vec::new();
    if labels.try_reserve_exact(n).is_err() {
        bail!(
            "--n {n}: the labels alone would take {} of memory; choose a smaller --n",
            crate::limits::human(n as u128 * 8)
        );
    }
    Ok(labels)
}

/// The description of built-in set `name` (empty for an unknown name).
pub fn describe(name: &str) -> &'static str {
    SETS.iter()
        .find(|s| s.0 == name)
        .map(|s| s.1)
        .unwrap_or_default()
}
