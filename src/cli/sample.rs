//! `fewstep sample`: draw samples with any schedule, integrator and denoiser.

use crate::config::{to_toml, ConfigBuilder};
use crate::data::{self, Attrs, DataArray};
use crate::denoiser::{BuildCtx, DenoiserSpec};
use crate::integrator::Integrator;
use crate::sampling;
use crate::schedule::{uniform_grid, Schedule};
use crate::tensor::{batch_from_vec, normal, seeded_device, Dev};
use crate::train::checkpoint;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

const DEFAULTS: &str = include_str!("../../configs/sample.toml");

#[derive(clap::Args, Debug, Default)]
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
    #[arg(long)]
    pub steps: Option<usize>,
    /// Number of samples [default: 20000].
    #[arg(long)]
    pub n: Option<usize>,
    /// Seed of the initial noise z_1 (and of stochastic samplers) [default: 0].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Rows sampled at once (memory bound) [default: 4096].
    #[arg(long)]
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
}

/// A fully resolved sampling config (what `--config` files hold).
#[derive(Serialize, Deserialize, Debug, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    pub schedule: Box<dyn Schedule>,
    pub integrator: Box<dyn Integrator>,
    pub denoiser: Box<dyn DenoiserSpec>,
    pub steps: usize,
    pub n: usize,
    pub seed: u64,
    pub batch: usize,
    pub out: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<PathBuf>,
}

impl SampleConfig {
    /// Defaults, then the config file, then the flags.
    pub fn resolve(a: &Args) -> Result<Self> {
        let path_str = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let peek = ConfigBuilder::from_defaults(DEFAULTS)?
            .file(a.config.as_deref())?
            .set("checkpoint", path_str(&a.checkpoint));
        let meta = match peek.table().get("checkpoint").and_then(|v| v.as_str()) {
            Some(ck) => Some(checkpoint::load(&checkpoint::resolve(Path::new(ck))?, &[])?.meta),
            None => None,
        };
        let mut b = ConfigBuilder::from_defaults(DEFAULTS)?;
        // A distilled student samples by default as Algorithm 2 does: the default integrator
        // (DDIM) on its own S-step grid of the schedule it was trained on. The file and the
        // flags still override both.
        if let Some((m, s)) = meta.as_ref().and_then(|m| Some((m, m.student_steps?))) {
            let schedule = checkpoint::config_table(m, "schedule")?;
            b = b
                .set("steps", Some(s as i64))
                .set("schedule", Some(toml::Value::Table(schedule)));
        }
        b = b
            .file(a.config.as_deref())?
            .set("checkpoint", path_str(&a.checkpoint));
        // A checkpoint brings its own network, unless --denoiser names one explicitly.
        if let Some(meta) = &meta {
            let table = toml::Value::Table(checkpoint::denoiser_table(meta)?);
            b = b.set("denoiser", Some(table));
        }
        b.plugin("schedule", a.schedule.as_deref())
            .plugin("integrator", a.integrator.as_deref())
            .plugin("denoiser", a.denoiser.as_deref())
            .set("steps", a.steps.map(|v| v as i64))
            .set("n", a.n.map(|v| v as i64))
            .set("seed", a.seed.map(|v| v as i64))
            .set("batch", a.batch.map(|v| v as i64))
            .set("data", path_str(&a.data))
            .set("noise", path_str(&a.noise))
            .set("out", path_str(&a.out))
            .build()
    }
}

pub fn run(a: Args) -> Result<()> {
    let cfg = SampleConfig::resolve(&a)?;
    let out = draw(&cfg)?;
    eprintln!(
        "wrote {} samples ({} NFE each) to {}",
        cfg.n,
        out.1,
        cfg.out.display()
    );
    Ok(())
}

/// Samples per `cfg` and writes them to `cfg.out`; returns the samples and the NFE.
pub fn draw(cfg: &SampleConfig) -> Result<(DataArray, usize)> {
    if cfg.steps == 0 || cfg.n == 0 || cfg.batch == 0 {
        bail!(
            "steps, n and batch must be positive (got steps={}, n={}, batch={})",
            cfg.steps,
            cfg.n,
            cfg.batch
        );
    }
    let dev = seeded_device(cfg.seed);
    let ckpt = match &cfg.checkpoint {
        Some(p) => {
            let path = checkpoint::resolve(p)?;
            let meta = checkpoint::load(&path, &[])?.meta;
            Some((path, meta))
        }
        None => None,
    };
    let denoiser = cfg
        .denoiser
        .build(&BuildCtx {
            dev: dev.clone(),
            data: cfg.data.clone(),
            checkpoint: ckpt.as_ref().map(|c| c.0.clone()),
        })
        .context("cannot build the denoiser")?;
    let dim = denoiser.dim();
    let z1 = initial_noise(&dev, cfg, dim)?;
    let grid = uniform_grid(cfg.steps);
    let bar = crate::cli::progress(cfg.n as u64, "sampling");
    let mut values = Vec::with_capacity(cfg.n * dim);
    let mut nfe = 0;
    for chunk in z1.chunks(cfg.batch * dim) {
        let rows = chunk.len() / dim;
        let z = batch_from_vec(&dev, chunk.to_vec(), rows, dim);
        let s = sampling::sample(
            &dev,
            cfg.schedule.as_ref(),
            cfg.integrator.as_ref(),
            denoiser.as_ref(),
            z,
            &grid,
        )?;
        nfe = s.nfe;
        values.extend(s.samples.as_vec());
        bar.inc(rows as u64);
    }
    bar.finish_and_clear();
    let shape = match &ckpt {
        Some((_, meta)) if meta.row_shape.iter().product::<usize>() == dim => {
            std::iter::once(cfg.n)
                .chain(meta.row_shape.iter().copied())
                .collect()
        }
        _ => row_shape(cfg.data.as_deref(), cfg.n, dim)?,
    };
    let samples = DataArray::new(values, shape);
    let mut attrs: Attrs = vec![
        ("steps".into(), cfg.steps.to_string()),
        ("nfe".into(), nfe.to_string()),
        ("seed".into(), cfg.seed.to_string()),
        ("config".into(), to_toml(cfg)?),
    ];
    if let Some((path, meta)) = &ckpt {
        attrs.push(("checkpoint".into(), path.display().to_string()));
        attrs.push(("checkpoint_step".into(), meta.step.to_string()));
    }
    data::write_data(&cfg.out, &samples, &attrs)?;
    Ok((samples, nfe))
}

/// z_1: from `--noise` (its first n rows) or the seeded device, as host values.
fn initial_noise(dev: &Dev, cfg: &SampleConfig, dim: usize) -> Result<Vec<f32>> {
    match &cfg.noise {
        Some(path) => {
            let noise = data::read_data(path)?;
            if noise.row_dim() != dim || noise.rows() < cfg.n {
                bail!(
                    "{}: noise `/data` has {} rows of size {}; need at least {} rows of size {dim}",
                    path.display(),
                    noise.rows(),
                    noise.row_dim(),
                    cfg.n
                );
            }
            Ok(noise.values[..cfg.n * dim].to_vec())
        }
        None => Ok(normal(dev, cfg.n, dim).as_vec()),
    }
}

/// `[n, ...]` with the dataset's row shape when it matches `dim` (images keep C,H,W).
fn row_shape(data: Option<&Path>, n: usize, dim: usize) -> Result<Vec<usize>> {
    if let Some(path) = data {
        if let Ok(file) = hdf5::File::open(path) {
            if let Ok(ds) = file.dataset("data") {
                let s = ds.shape();
                if s.len() >= 2 && s[1..].iter().product::<usize>() == dim {
                    return Ok(std::iter::once(n).chain(s[1..].iter().copied()).collect());
                }
            }
        }
    }
    Ok(vec![n, dim])
}
