//! Measuring a trained network's aDDIM variance table on data (`fewstep calibrate`).

use crate::checkpoint;
use crate::config::plugin_from_toml;
use crate::data::loader::{Loader, LoaderConfig};
use crate::denoiser;
use crate::integrator::xvar_table::XVarTable;
use crate::schedule::{uniform_grid, Schedule};
use crate::tensor::seeded_device;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// What to measure.
pub struct Calibrate<'a> {
    /// Checkpoint file, or a run folder (its latest checkpoint).
    pub checkpoint: &'a Path,
    /// Data the table is measured on (usually the training set).
    pub data: &'a Path,
    /// Schedule plugin the table's times are indexed by; `None`: the checkpoint's.
    pub schedule: Option<&'a str>,
    /// The fraction of the measured error kept (the paper's xvar_frac).
    pub eta: f64,
    /// The table has points t = i / points, i = 0..=points.
    pub points: usize,
    /// Data rows used (drawn at random from the file).
    pub n: usize,
    /// Seed of the row choice and the noise.
    pub seed: u64,
    /// Output JSON; `None`: next to the checkpoint ([`table_path`]).
    pub out: Option<&'a Path>,
}

/// `ckpt-000001000.safetensors` -> `ckpt-000001000.xvar.json`.
pub fn table_path(checkpoint: &Path) -> PathBuf {
    checkpoint.with_extension("xvar.json")
}

/// Measures and writes the table; returns it with the checkpoint file and the output path.
pub fn calibrate(c: &Calibrate) -> Result<(XVarTable, PathBuf, PathBuf)> {
    if !(c.eta >= 0.0 && c.eta.is_finite()) {
        bail!("--eta: expected a finite number >= 0, got {}", c.eta);
    }
    for (flag, n) in [("--points", c.points), ("--n", c.n)] {
        if n == 0 {
            bail!("{flag}: expected a whole number >= 1, got 0");
        }
    }
    crate::limits::check_memory(
        &format!("a table of --points {}", c.points),
        crate::limits::bytes_of(c.points, 16),
    )?;
    let path = checkpoint::resolve(c.checkpoint)?;
    let meta = checkpoint::load(&path, &[])?.meta;
    let schedule: Box<dyn Schedule> = match c.schedule {
        Some(name) => plugin_from_toml(&format!("name = {name:?}"))?,
        None => {
            let config: toml::Table = meta.config.parse()?;
            let table = config
                .get("schedule")
                .cloned()
                .context("no [schedule] in the checkpoint")?;
            table.try_into()?
        }
    };
    let dev = seeded_device(c.seed);
    let denoiser = denoiser::trained(&path, &dev)?;
    let rows = Loader::open(c.data, LoaderConfig::new(1, c.seed))?.len();
    let mut loader = Loader::open(c.data, LoaderConfig::new(c.n.min(rows), c.seed))?;
    let x = loader.next_batch()?.values.into_f32();
    let mut grid = uniform_grid(c.points);
    grid.reverse();
    let table = XVarTable::measure(
        &dev,
        denoiser.as_ref(),
        schedule.as_ref(),
        &x,
        loader.row_dim(),
        &grid,
        c.eta,
        c.seed,
        1024,
    )?;
    let out = c.out.map_or_else(|| table_path(&path), Path::to_path_buf);
    table.save(&out)?;
    Ok((table, path, out))
}
