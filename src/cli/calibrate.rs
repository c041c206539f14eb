//! `fewstep calibrate`: measure a trained network's aDDIM variance table on data.

use crate::calibration::Calibration;
use crate::config::plugin_from_toml;
use crate::data::loader::{Loader, LoaderConfig};
use crate::schedule::{uniform_grid, Schedule};
use crate::tensor::seeded_device;
use crate::train::{calibrate, checkpoint};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Checkpoint file, or a run folder (its latest checkpoint).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Data the table is measured on (HDF5 `/data`), usually the training set.
    #[arg(long)]
    pub data: PathBuf,
    /// Schedule whose times the table is indexed by [default: the checkpoint's training schedule].
    #[arg(long)]
    pub schedule: Option<String>,
    /// eta: the fraction of the measured error kept (the paper's xvar_frac).
    #[arg(long, default_value_t = 0.75)]
    pub eta: f64,
    /// Grid intervals: the table has points t = i / points, i = 0..=points.
    #[arg(long, default_value_t = 64)]
    pub points: usize,
    /// Data rows used (drawn at random from the file).
    #[arg(long, default_value_t = 4096)]
    pub n: usize,
    /// Seed of the row choice and the noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output JSON [default: next to the checkpoint, `<checkpoint>.xvar.json`].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `ckpt-000001000.safetensors` -> `ckpt-000001000.xvar.json`.
pub fn table_path(checkpoint: &Path) -> PathBuf {
    checkpoint.with_extension("xvar.json")
}

pub fn run(a: Args) -> Result<()> {
    if !(a.eta >= 0.0 && a.eta.is_finite()) || a.points == 0 || a.n == 0 {
        bail!("eta must be >= 0, and points and n positive");
    }
    let path = checkpoint::resolve(&a.checkpoint)?;
    let meta = checkpoint::load(&path, &[])?.meta;
    let schedule: Box<dyn Schedule> = match &a.schedule {
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
    let dev = seeded_device(a.seed);
    let denoiser = checkpoint::load_sampler(&path, &dev)?;
    let rows = Loader::open(&a.data, LoaderConfig::new(1, a.seed))?.len();
    let mut loader = Loader::open(&a.data, LoaderConfig::new(a.n.min(rows), a.seed))?;
    let x = loader.next_batch()?.values.into_f32();
    let mut grid = uniform_grid(a.points);
    grid.reverse();
    let table: Calibration = calibrate::measure(
        &dev,
        denoiser.as_ref(),
        schedule.as_ref(),
        &x,
        loader.row_dim(),
        &grid,
        a.eta,
        a.seed,
        1024,
    )?;
    let out = a.out.clone().unwrap_or_else(|| table_path(&path));
    table.save(&out)?;
    eprintln!(
        "wrote x_var at {} times (eta {}) for {} to {}",
        grid.len(),
        a.eta,
        path.display(),
        out.display()
    );
    Ok(())
}
