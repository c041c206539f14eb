//! A run's set-up: the loader, the network (fresh, resumed or initialised from a checkpoint), the
//! teacher, and the run folder.

use super::log::truncate_log;
use super::TrainConfig;
use crate::checkpoint;
use crate::data::loader::{Loader, LoaderConfig};
use crate::denoiser::{self, BuildCtx, Denoiser, NetCtx, Network, PARTS};
use crate::dist::{self, Collective};
use crate::tensor::{Dev, StateDict};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// What the step loop works with.
pub struct RunState {
    pub loader: Loader,
    pub net: Box<dyn Network>,
    pub teacher: Option<Box<dyn Denoiser>>,
    /// Shape of one data row, and its size.
    pub row_shape: Vec<usize>,
    pub dim: usize,
    /// The first step to train (the resumed checkpoint's step, else 0).
    pub start: u64,
    /// The latest checkpoint written (the resumed one at first).
    pub last: Option<PathBuf>,
}

impl RunState {
    /// Opens the data, builds the network from the device's seeded generator (always, so a
    /// resumed run's device is where the uninterrupted run's was), loads the teacher, then
    /// resumes from `cfg.out`'s latest checkpoint or starts from `cfg.init`. Each rank of
    /// `world` loads its share of every batch (all of it for a single process).
    pub fn open(
        cfg: &TrainConfig,
        dev: &Dev,
        resume: bool,
        world: &dyn Collective,
    ) -> Result<Self> {
        let shard = (world.size() > 1).then(|| dist::share(cfg.batch, world.rank(), world.size()));
        if shard.as_ref().is_some_and(|s| s.is_empty()) {
            bail!(
                "batch {} is smaller than the {} processes of the job: each needs at least one row",
                cfg.batch,
                world.size()
            );
        }
        let loader = Loader::open(
            &cfg.data,
            LoaderConfig {
                shard,
                ..LoaderConfig::new(cfg.batch, cfg.seed)
            },
        )?;
        let row_shape = loader.row_shape();
        let net = cfg.denoiser.network(&NetCtx {
            dev: dev.clone(),
            row_shape: row_shape.clone(),
            init: true,
        })?;
        tracing::info!("network: {}", net.describe());
        let mut run = RunState {
            dim: loader.row_dim(),
            loader,
            net,
            teacher: load_teacher(cfg, dev)?,
            row_shape,
            start: 0,
            last: None,
        };
        if resume {
            run.resume(cfg, world.is_root())?;
        } else if let Some((step, path)) = checkpoint::list(&cfg.out)?.pop() {
            bail!(
                "{} already holds a run (latest checkpoint {} at step {step}): pass --resume to \
                 continue it, or choose another --out",
                cfg.out.display(),
                path.display()
            );
        } else if let Some(init) = &cfg.init {
            run.init_from(init)?;
        }
        Ok(run)
    }

    /// Loads every part of the latest checkpoint and moves the loader past the batches used;
    /// `root` (the process that writes the run's files) also trims the log.
    fn resume(&mut self, cfg: &TrainConfig, root: bool) -> Result<()> {
        let path = checkpoint::latest(&cfg.out)?;
        let ck = checkpoint::load(&path, &PARTS)?;
        if ck.meta.row_shape != self.row_shape {
            bail!(
                "{} was trained on rows of shape {:?}; {} has rows of shape {:?}",
                path.display(),
                ck.meta.row_shape,
                cfg.data.display(),
                self.row_shape
            );
        }
        self.net
            .load_state(&ck.state, &PARTS)
            .with_context(|| format!("{} holds {}", path.display(), ck.meta.network))?;
        self.start = ck.meta.step;
        if self.start >= cfg.steps {
            bail!(
                "{} is already at step {}; ask for more with --steps (now {})",
                path.display(),
                self.start,
                cfg.steps
            );
        }
        // The loader's stream depends only on its seed: skipping the batches already used puts
        // it where the interrupted run was.
        for _ in 0..self.start {
            let b = self.loader.next_batch()?;
            self.loader.recycle(b);
        }
        if root {
            truncate_log(&cfg.out.join("log.jsonl"), self.start)?;
        }
        tracing::info!("resuming from {} at step {}", path.display(), self.start);
        self.last = Some(path);
        Ok(())
    }

    /// Starts the weights and their EMA from a checkpoint's EMA (fresh AdamW moments).
    fn init_from(&mut self, init: &Path) -> Result<()> {
        let path = checkpoint::resolve(init)?;
        let ck = checkpoint::load(&path, &["ema"])?;
        let both: StateDict = ck
            .state
            .iter()
            .flat_map(|(k, t)| {
                let name = k.trim_start_matches("ema.");
                [(format!("net.{name}"), t.clone()), (k.clone(), t.clone())]
            })
            .collect();
        self.net
            .load_state(&both, &["net", "ema"])
            .with_context(|| format!("{} holds {}", path.display(), ck.meta.network))?;
        tracing::info!("initialised from {}", path.display());
        Ok(())
    }
}

/// Creates the run folder, writes `config.toml` and opens `log.jsonl` for appending; a fresh
/// run first removes round teachers and log lines an earlier run left without a checkpoint (a
/// resume has cut the log to its checkpoint's step already, [`RunState::open`]).
pub fn prepare_folder(cfg: &TrainConfig, resume: bool, config_toml: &str) -> Result<File> {
    let stale_rounds = cfg.out.join("rounds");
    if !resume && stale_rounds.exists() {
        // Round teachers of an earlier run that never wrote a checkpoint: not this run's.
        std::fs::remove_dir_all(&stale_rounds)
            .with_context(|| format!("cannot remove {}", stale_rounds.display()))?;
    }
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("cannot create {}", cfg.out.display()))?;
    let log_path = cfg.out.join("log.jsonl");
    if !resume {
        // A run killed before its first checkpoint leaves its lines: this run restarts at step 0.
        truncate_log(&log_path, 0)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open the run's log {}", log_path.display()))?;
    crate::output::write_bytes(&cfg.out.join("config.toml"), config_toml.as_bytes())?;
    Ok(log)
}

/// The run's teacher: a checkpoint's EMA network, or a denoiser plugin built on the data.
pub fn load_teacher(cfg: &TrainConfig, dev: &Dev) -> Result<Option<Box<dyn Denoiser>>> {
    match (&cfg.teacher, &cfg.teacher_denoiser) {
        (Some(_), Some(_)) => bail!(
            "the config sets both `teacher` (a checkpoint) and `[teacher_denoiser]`: keep one"
        ),
        (Some(path), None) => denoiser::trained(path, dev)
            .map(Some)
            .with_context(|| format!("cannot load the teacher {}", path.display())),
        (None, Some(spec)) => spec
            .build(&BuildCtx {
                dev: dev.clone(),
                data: Some(cfg.data.clone()),
                checkpoint: None,
            })
            .map(Some)
            .context("cannot build the teacher denoiser"),
        (None, None) => Ok(None),
    }
}
