//! Sampling: any schedule, integrator and denoiser over the uniform grid, in batches, to an HDF5
//! file (`fewstep sample`), or as trajectories (Figure 1).

use crate::checkpoint::{self, Meta};
use crate::config::{to_toml, ConfigBuilder, Overrides};
use crate::data::write::RowWriter;
use crate::data::{self, DataArray};
use crate::denoiser::{BuildCtx, Denoiser, DenoiserSpec};
use crate::dist::{self, Collective};
use crate::integrator::{Integrator, RowNoise, StepCtx};
use crate::sampling;
use crate::schedule::{uniform_grid, Schedule};
use crate::tensor::{batch_from_vec, host_values, normal, seeded_device, Dev};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The built-in defaults (`configs/sample.toml`).
pub const DEFAULTS: &str = include_str!("../../configs/sample.toml");

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
    /// Defaults, then the config `file`, then `overrides`. A `checkpoint` brings its own
    /// `[denoiser]` (unless an override names one), and a distilled student samples by default as
    /// Algorithm 2 does: the default integrator (DDIM) on its own S-step grid of the schedule it
    /// was trained on; the file and the overrides still replace both.
    pub fn resolve(file: Option<&Path>, overrides: &Overrides) -> Result<Self> {
        let peek = ConfigBuilder::from_defaults(DEFAULTS)?
            .file(file)?
            .apply(overrides);
        let meta = match peek.table().get("checkpoint").and_then(|v| v.as_str()) {
            Some(ck) => Some(checkpoint::load(&checkpoint::resolve(Path::new(ck))?, &[])?.meta),
            None => None,
        };
        let mut b = ConfigBuilder::from_defaults(DEFAULTS)?;
        if let Some((m, s)) = meta.as_ref().and_then(|m| Some((m, m.student_steps?))) {
            let schedule = checkpoint::config_table(m, "schedule")?;
            b = b
                .set("steps", Some(s as i64))
                .set("schedule", Some(toml::Value::Table(schedule)));
        }
        b = b.file(file)?;
        if let Some(meta) = &meta {
            let table = toml::Value::Table(checkpoint::denoiser_table(meta)?);
            b = b.set("denoiser", Some(table));
        }
        let b = b.apply(overrides);
        let cfg: Self = b.build()?;
        cfg.check().map_err(|e| b.locate(e))?;
        Ok(cfg)
    }

    /// Checks the counts and every plugin's settings ([`Schedule::validate`] and the like); an
    /// error names the field and its value ([`crate::config::FieldError`]).
    pub fn check(&self) -> Result<()> {
        use crate::config::field_error;
        crate::config::validate_plugin!("schedule", self.schedule)?;
        crate::config::validate_plugin!("integrator", self.integrator)?;
        crate::config::validate_plugin!("denoiser", self.denoiser)?;
        for (key, n) in [("steps", self.steps), ("n", self.n), ("batch", self.batch)] {
            if n == 0 {
                return field_error(key, "expected a whole number >= 1, got 0");
            }
        }
        crate::limits::check_memory(
            &format!("the time grid of steps = {}", self.steps),
            crate::limits::bytes_of(self.steps, 8).saturating_add(8),
        )
    }
}

/// What a sampling run produced.
pub struct Sampled {
    pub samples: DataArray,
    /// Denoiser evaluations per sample.
    pub nfe: usize,
}

/// A config made ready to sample: the seeded device, the built denoiser, and the checkpoint it
/// loaded (if any).
struct Ready {
    dev: Dev,
    denoiser: Box<dyn Denoiser>,
    checkpoint: Option<(PathBuf, Meta)>,
}

impl Ready {
    fn new(cfg: &SampleConfig) -> Result<Self> {
        cfg.check()?;
        let dev = seeded_device(cfg.seed);
        let checkpoint = match &cfg.checkpoint {
            Some(p) => {
                let path = checkpoint::resolve(p)?;
                let meta = checkpoint::load(&path, &[])?.meta;
                refuse_other_denoiser(cfg, &path, &meta)?;
                Some((path, meta))
            }
            None => None,
        };
        let denoiser = cfg
            .denoiser
            .build(&BuildCtx {
                dev: dev.clone(),
                data: cfg.data.clone(),
                checkpoint: checkpoint.as_ref().map(|c| c.0.clone()),
            })
            .context("cannot build the denoiser")?;
        if let Some(path) = &cfg.data {
            refuse_other_dim(
                path,
                denoiser.dim(),
                checkpoint.as_ref().map(|c| c.0.as_path()),
            )?;
        }
        Ok(Ready {
            dev,
            denoiser,
            checkpoint,
        })
    }

    /// z_1 as host values, all n rows at once (for trajectories): the first n rows of `noise`'s
    /// `/data`, or draws from the seeded device (the first draws after building the denoiser,
    /// which draws none).
    fn initial_noise(&self, cfg: &SampleConfig) -> Result<Vec<f32>> {
        let dim = self.denoiser.dim();
        match &cfg.noise {
            Some(_) => InitialNoise::open(cfg, dim)?.rows(0..cfg.n),
            None => Ok(host_values(&normal(&self.dev, cfg.n, dim))),
        }
    }
}

/// A checkpoint's weights are sampled only by the checkpoint's own denoiser: with another one
/// (`--checkpoint X --denoiser gmm`) the samples would not come from X, though the file would
/// record X.
fn refuse_other_denoiser(cfg: &SampleConfig, path: &Path, meta: &Meta) -> Result<()> {
    let own = checkpoint::denoiser_table(meta)?;
    let own = own.get("name").and_then(|v| v.as_str()).unwrap_or("?");
    let asked = cfg.denoiser.typetag_name();
    if asked != own {
        bail!(
            "--checkpoint {} holds a `{own}` network, but the denoiser is `{asked}`, which would \
             not use its weights: drop --denoiser (and `[denoiser]`) to sample the checkpoint, or \
             drop --checkpoint to sample `{asked}`",
            path.display()
        );
    }
    Ok(())
}

/// `--data` must hold rows of the denoiser's size (a network denoiser does not read the data,
/// which only gives the samples' row shape: another size would be silently ignored).
fn refuse_other_dim(data: &Path, dim: usize, checkpoint: Option<&Path>) -> Result<()> {
    let ds = data::open_data(data)?;
    let row: usize = ds.shape()[1..].iter().product();
    if row != dim {
        let from = checkpoint.map_or(String::new(), |c| format!(" (checkpoint {})", c.display()));
        bail!(
            "--data {} has rows of {row} values, but the denoiser{from} takes rows of {dim}: \
             give data of the denoiser's size, or drop --data",
            data.display()
        );
    }
    Ok(())
}

/// Where z_1 comes from, read or drawn one batch at a time.
enum InitialNoise {
    /// The first n rows of a file's `/data`.
    File { ds: hdf5::Dataset },
    /// Draws from a second device seeded like the sampling device. Its generator is sequential
    /// (dfdx's CPU device fills tensors draw by draw), so consecutive batches get the very
    /// values that drawing all n rows from the sampling device up front gave. (Checked on the
    /// CPU; whether cuRAND splits a sequence the same way across calls is not.)
    Drawn { dev: Dev, dim: usize },
}

impl InitialNoise {
    fn open(cfg: &SampleConfig, dim: usize) -> Result<Self> {
        let Some(path) = &cfg.noise else {
            return Ok(InitialNoise::Drawn {
                dev: seeded_device(cfg.seed),
                dim,
            });
        };
        let ds = data::open_data(path)?;
        let shape = ds.shape();
        let (rows, row_dim) = (shape[0], shape[1..].iter().product::<usize>());
        if row_dim != dim || rows < cfg.n {
            bail!(
                "{}: noise `/data` has {rows} rows of size {row_dim}; need at least {} rows of size {dim}",
                path.display(),
                cfg.n
            );
        }
        Ok(InitialNoise::File { ds })
    }

    /// Rows `rows` of z_1 (a `Drawn` source must be asked for consecutive ranges from 0).
    fn rows(&mut self, rows: std::ops::Range<usize>) -> Result<Vec<f32>> {
        match self {
            InitialNoise::File { ds } => data::read_rows(ds, rows),
            InitialNoise::Drawn { dev, dim } => Ok(host_values(&normal(dev, rows.len(), *dim))),
        }
    }

    /// Advances the sampling device `dev` past the n rows of z_1 it drew before sampling when
    /// z_1 was drawn whole, so integrators that draw from it (DDPM's step noise) get the same
    /// values as then. A batch at a time: memory stays O(batch).
    fn skip_on(&self, dev: &Dev, n: usize, batch: usize) {
        if let InitialNoise::Drawn { dim, .. } = self {
            for start in (0..n).step_by(batch) {
                drop(normal(dev, batch.min(n - start), *dim));
            }
        }
    }
}

/// `--out` must not name a file the run reads (the data, the noise, the checkpoint).
fn refuse_inputs_as_out(cfg: &SampleConfig) -> Result<()> {
    let inputs = inputs(cfg);
    let inputs: Vec<_> = inputs.iter().map(|(w, p)| (*w, p.as_path())).collect();
    crate::output::refuse_input("--out", &cfg.out, &inputs)
}

/// The files a sampling run reads, each with what it is (a run folder's latest checkpoint too).
pub fn inputs(cfg: &SampleConfig) -> Vec<(&'static str, PathBuf)> {
    let mut inputs = Vec::new();
    if let Some(p) = &cfg.data {
        inputs.push(("--data file", p.clone()));
    }
    if let Some(p) = &cfg.noise {
        inputs.push(("--noise file", p.clone()));
    }
    if let Some(p) = &cfg.checkpoint {
        inputs.push(("checkpoint", p.clone()));
        if let Ok(file) = checkpoint::resolve(p) {
            inputs.push(("checkpoint", file));
        }
    }
    inputs
}

/// Samples per `cfg` in batches of `cfg.batch` rows, writing each batch to `cfg.out` as it is
/// finished (a chunked `/data` of the final shape, replaced atomically: the file appears whole
/// or not at all), with the resolved config, steps, NFE, seed and checkpoint as attributes.
/// Memory stays O(batch) whatever n.
pub fn sample_to_file(cfg: &SampleConfig) -> Result<Written> {
    refuse_inputs_as_out(cfg)?;
    let ready = Ready::new(cfg)?;
    let dim = ready.denoiser.dim();
    // Before the first draw: z_1's rows are skipped on the device below.
    crate::limits::check_memory(
        &format!("a batch of {} rows of {dim} values", cfg.batch.min(cfg.n)),
        crate::limits::bytes_of(cfg.batch.min(cfg.n), 4) * dim as u128,
    )?;
    crate::limits::check_space(
        &cfg.out,
        &format!("{} samples of {dim} float32 values", cfg.n),
        cfg.n as u128 * dim as u128 * 4,
    )?;
    let mut z1 = InitialNoise::open(cfg, dim)?;
    z1.skip_on(&ready.dev, cfg.n, cfg.batch);
    let shape = match &ready.checkpoint {
        Some((_, meta)) if meta.row_shape.iter().product::<usize>() == dim => {
            std::iter::once(cfg.n)
                .chain(meta.row_shape.iter().copied())
                .collect()
        }
        _ => row_shape(cfg.data.as_deref(), cfg.n, dim)?,
    };
    let world = dist::world();
    let mut nfe = 0;
    if !world.is_root() {
        // Computes its share of every batch; rank 0 gathers and writes them.
        sample_batches(cfg, &ready, &mut z1, world, |_, _, _| Ok(()), &mut nfe)?;
        world.barrier();
        return Ok(Written { shape, nfe });
    }
    let written = data::h5::write_with(&cfg.out, |file| {
        let mut out = RowWriter::create::<f32>(file, &shape, None)?;
        let bar = crate::progress::bar(cfg.n as u64, "sampling");
        let write = |start: usize, rows: usize, values: Vec<f32>| {
            // A NaN or infinity would be written as a sample without a word.
            if let Some(at) = values.iter().position(|v| !v.is_finite()) {
                let bad = values.iter().filter(|v| !v.is_finite()).count();
                bail!(
                    "sampling produced {bad} non-finite value(s) in rows {start}..{} (the first \
                     in row {}): nothing was written to {}; check the denoiser (`fewstep data \
                     inspect` on the data, an earlier checkpoint) and the integrator's settings",
                    start + rows,
                    start + at / dim.max(1),
                    cfg.out.display()
                );
            }
            out.write(&values)?;
            bar.inc(rows as u64);
            Ok(())
        };
        sample_batches(cfg, &ready, &mut z1, world, write, &mut nfe)?;
        bar.finish_and_clear();
        let mut attrs = vec![
            ("steps", cfg.steps.to_string()),
            ("nfe", nfe.to_string()),
            ("seed", cfg.seed.to_string()),
            ("config", to_toml(cfg)?),
        ];
        if let Some((path, meta)) = &ready.checkpoint {
            attrs.push(("checkpoint", path.display().to_string()));
            attrs.push(("checkpoint_step", meta.step.to_string()));
        }
        out.finish(&attrs)
    });
    // A failed rank 0 returns at once (the command line then ends the job); otherwise the
    // other ranks return once the file is there.
    written?;
    world.barrier();
    Ok(Written { shape, nfe })
}

/// Samples the batches of `cfg` in order; each rank of `world` samples its share
/// ([`dist::share`]) of every batch and rank 0 passes the whole batch's rows, gathered in row
/// order, to `write(start, rows, values)`. The starting noise of every row is the single
/// process's (each rank draws the batch's z_1 and keeps its rows), and per-row integrator noise
/// is named by the row's index, so the samples are the single process's.
fn sample_batches(
    cfg: &SampleConfig,
    ready: &Ready,
    z1: &mut InitialNoise,
    world: &dyn Collective,
    mut write: impl FnMut(usize, usize, Vec<f32>) -> Result<()>,
    nfe: &mut usize,
) -> Result<()> {
    let dim = ready.denoiser.dim();
    let grid = uniform_grid(cfg.steps);
    for start in (0..cfg.n).step_by(cfg.batch) {
        let rows = cfg.batch.min(cfg.n - start);
        let mine = dist::share(rows, world.rank(), world.size());
        let mut z = z1.rows(start..start + rows)?;
        let mut values = Vec::new();
        if !mine.is_empty() {
            if mine.len() != rows {
                z = z[mine.start * dim..mine.end * dim].to_vec();
            }
            let z = batch_from_vec(&ready.dev, z, mine.len(), dim);
            // Per-row noise streams named by the row's index: the same samples at any --batch.
            let noise = RowNoise {
                seed: cfg.seed,
                first_row: (start + mine.start) as u64,
            };
            let s = sampling::sample(
                &ready.dev,
                cfg.schedule.as_ref(),
                cfg.integrator.as_ref(),
                ready.denoiser.as_ref(),
                z,
                &grid,
                noise,
            )?;
            *nfe = s.nfe;
            values = host_values(&s.samples);
        }
        if let Some(all) = world.gather_to_root(&values) {
            write(start, rows, all)?;
        }
    }
    Ok(())
}

/// What [`sample_to_file`] wrote.
pub struct Written {
    /// Shape of `/data`.
    pub shape: Vec<usize>,
    /// Denoiser evaluations per sample.
    pub nfe: usize,
}

/// [`sample_to_file`], then the samples read back (for callers that score them in memory).
pub fn sample(cfg: &SampleConfig) -> Result<Sampled> {
    let written = sample_to_file(cfg)?;
    let samples = data::read_data(&cfg.out)?;
    Ok(Sampled {
        samples,
        nfe: written.nfe,
    })
}

/// The paths of all `cfg.n` rows from z_1 through `points` points inside every step (see
/// [`sampling::trajectory`]), as (value, time) pairs per row, z_1 at t = 1 first. For
/// one-dimensional data (a row's first value otherwise).
pub fn trajectories(cfg: &SampleConfig, points: usize) -> Result<Vec<Vec<(f64, f64)>>> {
    let ready = Ready::new(cfg)?;
    let dim = ready.denoiser.dim();
    let z1 = ready.initial_noise(cfg)?;
    let mut paths: Vec<Vec<(f64, f64)>> = z1
        .chunks(dim)
        .map(|row| vec![(row[0] as f64, 1.0)])
        .collect();
    let mut ctx = StepCtx::new(&ready.dev, cfg.schedule.as_ref(), ready.denoiser.as_ref())
        .with_noise(RowNoise {
            seed: cfg.seed,
            first_row: 0,
        });
    let steps = sampling::trajectory(
        &mut ctx,
        cfg.integrator.as_ref(),
        batch_from_vec(&ready.dev, z1, cfg.n, dim),
        &uniform_grid(cfg.steps),
        points,
    )?;
    for (u, z) in steps {
        for (p, row) in paths.iter_mut().zip(host_values(&z).chunks(dim)) {
            p.push((row[0] as f64, u));
        }
    }
    Ok(paths)
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
