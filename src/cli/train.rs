//! `fewstep train`: train a network denoiser (the teacher of distillation, or a student).

use crate::config::Overrides;
use crate::run::train::{resolve, run as train};
use crate::train::{TrainConfig, TrainOutcome};
use anyhow::{bail, Result};
use std::path::{Path, PathBuf};

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
    /// Batch size [default: 1024 for train, 512 for distill].
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
    #[command(flatten)]
    pub force: super::Force,
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
    run_config(&cfg, a.run.resume, a.run.force.force)
}

/// Trains `cfg` with a progress bar and prints the outcome.
pub fn run_config(cfg: &TrainConfig, resume: bool, force: bool) -> Result<()> {
    let world = crate::dist::world();
    check_run_folder(&cfg.out, resume, force)?;
    // Under mpirun every rank checks the folder, and rank 0 starts writing in it (config.toml,
    // log.jsonl) as soon as it trains: no rank may look before all have looked, or it finds
    // rank 0's new files and refuses the run.
    world.barrier();
    let done: TrainOutcome = train(cfg, resume)?;
    if !world.is_root() {
        return Ok(());
    }
    let ranks = match world.size() {
        1 => String::new(),
        n => format!(" on {n} processes"),
    };
    eprintln!(
        "trained {} steps{ranks} in {:.1} s ({:.1} steps/s), final loss {:.4}; checkpoint {}",
        done.step,
        done.seconds,
        done.steps_per_s,
        done.loss,
        done.checkpoint.display()
    );
    Ok(())
}

/// The run folder, before any work: a folder fewstep can write in. One that holds checkpoints is
/// continued only with --resume (the trainer refuses it otherwise, naming the latest); one that
/// holds other files (an earlier run's log.jsonl and config.toml, or anything else) is used
/// only with --force, since a new run writes its own config.toml and log.jsonl there.
fn check_run_folder(out: &Path, resume: bool, force: bool) -> Result<()> {
    crate::output::check_folder("--out", out)?;
    if resume || force || !crate::checkpoint::list(out)?.is_empty() {
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(out) else {
        return Ok(()); // not there yet
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !names.is_empty() {
        names.sort();
        bail!(
            "--out {} already holds files ({}) but no checkpoint to resume: pass --force to \
             start a new run in it (its config.toml is replaced), or choose another --out",
            out.display(),
            names.join(", ")
        );
    }
    Ok(())
}
