//! `fewstep train`: train a network denoiser (the teacher of distillation, or a student).

use crate::config::ConfigBuilder;
use crate::train::{checkpoint, train, TrainConfig};
use anyhow::{bail, Result};
use std::path::PathBuf;

/// The built-in defaults (`configs/train.toml`).
pub const DEFAULTS: &str = include_str!("../../configs/train.toml");

#[derive(clap::Args, Debug, Default)]
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
#[derive(clap::Args, Debug, Default)]
pub struct RunArgs {
    /// Run folder for checkpoints, log.jsonl and config.toml [default: run for train,
    /// run-student for distill].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Total optimisation steps [default: 6000 for train, 2000 for distill].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Batch size [default: 512].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Seed of the weights, batch order, times and noise [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// TOML config with the same fields as the built-in defaults; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint (its config, then these flags).
    #[arg(long)]
    pub resume: bool,
}

impl RunArgs {
    /// `defaults` (or, resuming, the checkpoint's config), then the config file, then the
    /// shared flags.
    pub fn builder(&self, defaults: &str) -> Result<ConfigBuilder> {
        let base = if self.resume {
            let out = match &self.out {
                Some(o) => o.clone(),
                None => {
                    let b = ConfigBuilder::from_defaults(defaults)?.file(self.config.as_deref())?;
                    match b.table().get("out").and_then(|v| v.as_str()) {
                        Some(o) => PathBuf::from(o),
                        None => bail!("--resume needs the run folder: pass --out DIR"),
                    }
                }
            };
            checkpoint::load(&checkpoint::latest(&out)?, &[])?
                .meta
                .config
        } else {
            defaults.to_string()
        };
        Ok(ConfigBuilder::from_defaults(&base)?
            .file(self.config.as_deref())?
            .set("out", path_str(&self.out))
            .set("steps", self.steps.map(|v| v as i64))
            .set("batch", self.batch.map(|v| v as i64))
            .set("seed", self.seed.map(|v| v as i64)))
    }
}

/// A path flag as a TOML string value.
pub fn path_str(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.display().to_string())
}

impl Args {
    /// Defaults (or, resuming, the checkpoint's config), then the config file, then the flags.
    pub fn resolve(&self) -> Result<TrainConfig> {
        let b = self
            .run
            .builder(DEFAULTS)?
            .plugin("denoiser", self.model.as_deref())
            .set("data", path_str(&self.data));
        require_data(&b)?;
        b.build()
    }
}

/// Refuses a config without `data`, naming the flag.
pub fn require_data(b: &ConfigBuilder) -> Result<()> {
    if !b.table().contains_key("data") {
        bail!("no training data: pass --data FILE (HDF5 with `/data`)");
    }
    Ok(())
}

pub fn run(a: Args) -> Result<()> {
    let cfg = a.resolve()?;
    run_config(&cfg, a.run.resume)
}

/// Trains `cfg` with a progress bar and prints the outcome.
pub fn run_config(cfg: &TrainConfig, resume: bool) -> Result<()> {
    let done = train(cfg, resume, true)?;
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
