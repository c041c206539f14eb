//! `fewstep train`: train a network denoiser (the teacher of distillation, or a student).

use crate::config::Overrides;
use crate::run::train::{resolve, run as train};
use crate::train::{TrainConfig, TrainOutcome};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training data (HDF5 `/data`).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Network denoiser plugin, e.g. mlp (vectors) or uvit (images) [default: mlp].
    #[arg(long)]
    pub model: Option<String>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags shared by `fewstep train` and `fewstep distill`.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Run folder for checkpoints, log.jsonl and config.toml [default: run for train,
    /// run-student for distill].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Total optimisation steps [default: 6000 for train, 2000 for distill].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<u64>)]
    pub steps: Option<u64>,
    /// Batch size [default: 512].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub batch: Option<usize>,
    /// Seed of the weights, batch order, times and noise [default: 0].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<u64>)]
    pub seed: Option<u64>,
    /// TOML config with the same fields as the built-in defaults; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint (its config, then these flags).
    #[arg(long)]
    pub resume: bool,
}

impl RunArgs {
    /// The shared flags as overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides::default()
            .path("out", self.out.as_deref())
            .set("steps", self.steps.map(|v| v as i64))
            .set("batch", self.batch.map(|v| v as i64))
            .set("seed", self.seed.map(|v| v as i64))
    }
}

pub fn run(a: Args) -> Result<()> {
    let overrides = a
        .run
        .overrides()
        .plugin("denoiser", a.model.as_deref())
        .path("data", a.data.as_deref());
    let cfg = resolve(a.run.config.as_deref(), &overrides, a.run.resume)?;
    run_config(&cfg, a.run.resume)
}

/// Trains `cfg` with a progress bar and prints the outcome.
pub fn run_config(cfg: &TrainConfig, resume: bool) -> Result<()> {
    let done: TrainOutcome = train(cfg, resume)?;
    eprintln!(
        "trained {} steps in {:.1} s ({:.1} steps/s), final loss {:.4}; checkpoint {}",
        done.step,
        done.seconds,
        done.steps_per_s,
        done.loss,
        done.checkpoint.display()
    );
    Ok(())
}
