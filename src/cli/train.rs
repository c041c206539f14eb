//! `fewstep train`: train a network denoiser (the teacher of distillation, or a student).

use crate::config::ConfigBuilder;
use crate::train::{checkpoint, train, TrainConfig};
use anyhow::Result;
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
    /// Run folder for checkpoints, log.jsonl and config.toml [default: run].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Total optimisation steps [default: 6000].
    #[arg(long)]
    pub steps: Option<u64>,
    /// Batch size [default: 512].
    #[arg(long)]
    pub batch: Option<usize>,
    /// Seed of the weights, batch order, times and noise [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// TOML config with the same fields as configs/train.toml; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue the run in --out from its latest checkpoint (its config, then these flags).
    #[arg(long)]
    pub resume: bool,
}

impl Args {
    /// Defaults (or, resuming, the checkpoint's config), then the config file, then the flags.
    pub fn resolve(&self) -> Result<TrainConfig> {
        let base = if self.resume {
            let out = match &self.out {
                Some(o) => o.clone(),
                None => {
                    ConfigBuilder::from_defaults(DEFAULTS)?
                        .file(self.config.as_deref())?
                        .build::<TrainConfig>()?
                        .out
                }
            };
            checkpoint::load(&checkpoint::latest(&out)?, &[])?
                .meta
                .config
        } else {
            DEFAULTS.to_string()
        };
        let path_str = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let b = ConfigBuilder::from_defaults(&base)?
            .file(self.config.as_deref())?
            .plugin("denoiser", self.model.as_deref())
            .set("data", path_str(&self.data))
            .set("out", path_str(&self.out))
            .set("steps", self.steps.map(|v| v as i64))
            .set("batch", self.batch.map(|v| v as i64))
            .set("seed", self.seed.map(|v| v as i64));
        if !b.table().contains_key("data") {
            anyhow::bail!("no training data: pass --data FILE (HDF5 with `/data`)");
        }
        b.build()
    }
}

pub fn run(a: Args) -> Result<()> {
    let cfg = a.resolve()?;
    let done = train(&cfg, a.resume, true)?;
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
