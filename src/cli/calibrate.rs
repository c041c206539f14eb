//! `fewstep calibrate`: measure a trained network's aDDIM variance table on data.

use crate::run::calibrate::{calibrate, table_path, Calibrate};
use anyhow::Result;
use std::path::PathBuf;

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
    #[arg(long, default_value_t = 0.75, allow_negative_numbers = true, value_parser = super::non_negative)]
    pub eta: f64,
    /// Grid intervals: the table has points t = i / points, i = 0..=points.
    #[arg(long, default_value_t = 64, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub points: usize,
    /// Data rows used (drawn at random from the file).
    #[arg(long, default_value_t = 4096, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub n: usize,
    /// Seed of the row choice and the noise.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = super::count::<u64>)]
    pub seed: u64,
    /// Output JSON [default: next to the checkpoint, `<checkpoint>.xvar.json`].
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub force: super::Force,
}

pub fn run(a: Args) -> Result<()> {
    let ck = crate::checkpoint::resolve(&a.checkpoint)?;
    let out = a.out.clone().unwrap_or_else(|| table_path(&ck));
    let inputs = [
        ("checkpoint", ck.as_path()),
        ("--data file", a.data.as_path()),
    ];
    crate::output::check_target("--out", &out, a.force.force, &inputs)?;
    let (table, checkpoint, out) = calibrate(&Calibrate {
        checkpoint: &a.checkpoint,
        data: &a.data,
        schedule: a.schedule.as_deref(),
        eta: a.eta,
        points: a.points,
        n: a.n,
        seed: a.seed,
        out: a.out.as_deref(),
    })?;
    eprintln!(
        "wrote x_var at {} times (eta {}) for {} to {}",
        table.times().len(),
        a.eta,
        checkpoint.display(),
        out.display()
    );
    Ok(())
}
