//! `fewstep sample`: draw samples with any schedule, integrator and denoiser.

use crate::config::Overrides;
use crate::run::sample::{inputs, sample_to_file, SampleConfig};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// TOML config with the same keys as the flags (schema: schemas/sample.schema.json); flags
    /// override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Dataset file (HDF5). A Gaussian-mixture set also defines the exact `gmm` denoiser.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Denoiser plugin [default: gmm].
    #[arg(long)]
    pub denoiser: Option<String>,
    /// Noise schedule plugin [default: cosine, or a student checkpoint's].
    #[arg(long)]
    pub schedule: Option<String>,
    /// Integrator (sampler) plugin [default: ddim].
    #[arg(long)]
    pub integrator: Option<String>,
    /// Sampling steps on the uniform grid t_i = i/steps [default: 8, or a student checkpoint's S].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub steps: Option<usize>,
    /// Number of samples [default: 20000].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub n: Option<usize>,
    /// Seed of the initial noise z_1 (and of stochastic samplers) [default: 0].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<u64>)]
    pub seed: Option<u64>,
    /// Rows sampled at once (memory bound) [default: 4096].
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub batch: Option<usize>,
    /// Take z_1 from this file's `/data` instead of the seed (compare samplers on equal noise).
    #[arg(long)]
    pub noise: Option<PathBuf>,
    /// Output HDF5 file [default: samples.h5].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sample a trained network: a checkpoint file, or a run folder (its latest checkpoint).
    /// The network is the checkpoint's own `[denoiser]`; its EMA weights are sampled.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    #[command(flatten)]
    pub force: super::Force,
}

impl Args {
    /// The flags as overrides of the defaults and the config file.
    fn overrides(&self) -> Overrides {
        Overrides::default()
            .path("checkpoint", self.checkpoint.as_deref())
            .plugin("schedule", self.schedule.as_deref())
            .plugin("integrator", self.integrator.as_deref())
            .plugin("denoiser", self.denoiser.as_deref())
            .set("steps", self.steps.map(|v| v as i64))
            .set("n", self.n.map(|v| v as i64))
            .set("seed", self.seed.map(|v| v as i64))
            .set("batch", self.batch.map(|v| v as i64))
            .path("data", self.data.as_deref())
            .path("noise", self.noise.as_deref())
            .path("out", self.out.as_deref())
    }
}

pub fn run(a: Args) -> Result<()> {
    let cfg = SampleConfig::resolve(a.config.as_deref(), &a.overrides())?;
    check_out(&cfg, a.force.force)?;
    let done = sample_to_file(&cfg)?;
    if !crate::dist::world().is_root() {
        return Ok(());
    }
    eprintln!(
        "wrote {} samples ({} NFE each) to {}",
        cfg.n,
        done.nfe,
        cfg.out.display()
    );
    Ok(())
}

/// `--out` checked before any work: not an input, not read-only, replaced only with --force.
fn check_out(cfg: &SampleConfig, force: bool) -> Result<()> {
    let inputs = inputs(cfg);
    let inputs: Vec<_> = inputs.iter().map(|(w, p)| (*w, p.as_path())).collect();
    crate::output::check_target("--out", &cfg.out, force, &inputs)
}
