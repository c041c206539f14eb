//! The trainer: AdamW with linear warm-up and gradient clipping, an EMA of the weights (the
//! model that is sampled), batches from [`Loader`], checkpoints every K steps and at the end, and
//! exact resume.
//!
//! Reproducibility: the initial weights come from the device seeded with `seed`; every step's
//! randomness (times, noise) comes from a host generator seeded with `(seed, step)`; the loader
//! is seeded and a resumed run skips the batches already used. So on CPU, N steps then a resume
//! to 2N gives bit-identical weights to 2N steps straight.
//!
//! The parts: [`setup`] (loader, network, teacher, resume or initial weights, the run folder),
//! [`step`] (one optimisation step), [`rounds`] (the frozen teachers of later rounds) and [`log`]
//! (`log.jsonl`); [`train`] walks the steps and writes checkpoints.

pub mod identity;
pub mod log;
pub mod lr;
mod rounds;
pub mod setup;
pub mod step;

pub use log::LogLine;
pub use setup::load_teacher;
pub use step::{step_rng, train_step, train_step_on, StepStats};

use crate::checkpoint::{self, Meta};
use crate::config::field_error;
use crate::denoiser::{AdamW, DenoiserSpec, PARTS};
use crate::dist;
use crate::interrupt::{Interrupted, Listening};
use crate::objective::{scale_count, DistillObjective};
use crate::schedule::Schedule;
use crate::tensor::{batch_to_device, seeded_device};
use anyhow::Result;
use log::Report;
use rounds::RoundTeacher;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Instant;

/// A fully resolved training config, read by `fewstep train` and `fewstep distill` (defaults:
/// `configs/train.toml`, `configs/distill.toml`).
#[derive(Serialize, Deserialize, schemars::JsonSchema, Debug)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Training data (HDF5 `/data`).
    pub data: PathBuf,
    /// Run folder: checkpoints, `log.jsonl`, `config.toml`.
    pub out: PathBuf,
    /// Total optimisation steps (a resumed run continues up to this many).
    pub steps: u64,
    /// Rows per optimisation step.
    pub batch: usize,
    /// Seeds the initial weights, the batch order and every step's times and noise.
    pub seed: u64,
    /// Peak learning rate, reached linearly over `warmup` steps, then as `lr_decay` says.
    pub lr: f64,
    /// Steps of the linear learning-rate warm-up.
    pub warmup: u64,
    /// After the warm-up: `constant`, or a `linear` or `cosine` decay to `lr_final` x `lr` at the
    /// last step (planned over `steps`: extending a run re-plans the rest of it). Rounds that
    /// restart (progressive distillation) warm up and decay over each round.
    #[serde(default)]
    pub lr_decay: lr::LrDecay,
    /// The learning rate at the last step as a fraction of `lr`, for a decay (0 to 1).
    #[serde(default = "default_lr_final")]
    pub lr_final: f64,
    /// AdamW's first-moment decay.
    pub beta1: f64,
    /// AdamW's second-moment decay.
    pub beta2: f64,
    /// AdamW's denominator epsilon.
    pub eps: f64,
    /// Decoupled (AdamW) weight decay.
    pub weight_decay: f64,
    /// Gradients with a larger global L2 norm are scaled down to it (0 = no clipping).
    pub grad_clip: f64,
    /// EMA decay of the sampled weights, ramped as min(decay, (1 + n) / (10 + n)).
    pub ema_decay: f64,
    /// Steps between checkpoints (one is always written at the end).
    pub checkpoint_every: u64,
    /// Checkpoints kept in the run folder, newest first (0 = all).
    pub keep_checkpoints: usize,
    /// Steps per line of `log.jsonl` (and progress-bar update).
    pub log_every: u64,
    /// Teacher of distillation objectives: a checkpoint (file or run folder) whose EMA network,
    /// built from its own config, is passed to the objective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher: Option<PathBuf>,
    /// A denoiser plugin as the teacher instead of a checkpoint, built on `data`: e.g.
    /// `{ name = "gmm" }`, the exact E[x|z_t] of the data's Gaussian mixture (a perfect teacher,
    /// which isolates distillation error from teacher error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_denoiser: Option<Box<dyn DenoiserSpec>>,
    /// Start from this checkpoint's EMA weights (weights and EMA; fresh AdamW), e.g. a student
    /// initialised from its teacher. Ignored when resuming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// The training schedule: t ~ U(0, 1) on it decides which noise levels are trained.
    pub schedule: Box<dyn Schedule>,
    /// The network to train (a network denoiser, e.g. `mlp` or `uvit`).
    pub denoiser: Box<dyn DenoiserSpec>,
    /// The loss (`diffusion` trains a teacher; distillation objectives need `teacher`).
    pub objective: Box<dyn DistillObjective>,
}

fn default_lr_final() -> f64 {
    0.1
}

impl TrainConfig {
    /// Multiplies the run's length by `factor`: `steps`, `checkpoint_every` and the objective's
    /// iteration counts ([`DistillObjective::scale_iterations`]), each at least 1.
    pub fn scale_length(&mut self, factor: f64) {
        self.steps = scale_count(self.steps, factor);
        self.checkpoint_every = scale_count(self.checkpoint_every, factor);
        self.objective.scale_iterations(factor);
    }

    /// Learning rate of step `step` (0-based): linear warm-up, then `lr_decay`. A restarting
    /// round (progressive distillation) is a fresh optimisation from its teacher, so the warm-up
    /// and decay run over the round rather than the whole run: a run-long decay would leave the
    /// last round, the one that makes the final student, a few percent of the rate.
    pub fn lr_at(&self, step: u64) -> f64 {
        let (at, steps) = match self.objective.round(step) {
            Some(r) if r.restart => (step - r.start, self.round_end(&r) - r.start),
            _ => (step, self.steps),
        };
        lr::lr_at(
            self.lr,
            self.warmup,
            self.lr_decay,
            self.lr_final,
            at,
            steps,
        )
    }

    /// The first step after round `r`, or the run's end: rounds follow in order of index, so a
    /// bisection finds the boundary in log(steps) lookups.
    fn round_end(&self, r: &crate::objective::Round) -> u64 {
        // round(lo) is r; hi is the run's end or a step of a later round.
        let (mut lo, mut hi) = (r.start, self.steps.max(r.start + 1));
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match self.objective.round(mid) {
                Some(m) if m.index == r.index => lo = mid,
                _ => hi = mid,
            }
        }
        hi
    }

    /// EMA decay after step `step`: short memory early, so the EMA tracks the first fast progress.
    pub fn ema_decay_at(&self, step: u64) -> f64 {
        self.ema_decay.min((1 + step) as f64 / (10 + step) as f64)
    }

    /// Checks the settings and every plugin's ([`Schedule::validate`] and the like); called when
    /// the config is resolved and again before training. An error names the field and its value
    /// (a [`FieldError`](crate::config::FieldError): the resolving [`ConfigBuilder`](crate::config::ConfigBuilder) puts the
    /// config file in front).
    pub fn check(&self) -> Result<()> {
        crate::config::validate_plugin!("schedule", self.schedule)?;
        crate::config::validate_plugin!("denoiser", self.denoiser)?;
        crate::config::validate_plugin!("objective", self.objective)?;
        if let Some(t) = &self.teacher_denoiser {
            crate::config::validate_plugin!("teacher_denoiser", t)?;
        }
        for (key, n) in [
            ("steps", self.steps),
            ("batch", self.batch as u64),
            ("checkpoint_every", self.checkpoint_every),
            ("log_every", self.log_every),
        ] {
            if n == 0 {
                return field_error(key, "expected a whole number >= 1, got 0");
            }
        }
        let positive = |key: &str, v: f64| match v > 0.0 && v.is_finite() {
            true => Ok(()),
            false => field_error(key, format!("expected a finite number > 0, got {v}")),
        };
        positive("lr", self.lr)?;
        positive("eps", self.eps)?;
        for (key, v) in [
            ("grad_clip", self.grad_clip),
            ("weight_decay", self.weight_decay),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return field_error(key, format!("expected a finite number >= 0, got {v}"));
            }
        }
        for (key, v) in [
            ("beta1", self.beta1),
            ("beta2", self.beta2),
            ("ema_decay", self.ema_decay),
        ] {
            if !(0.0..1.0).contains(&v) {
                return field_error(key, format!("expected a number in [0, 1), got {v}"));
            }
        }
        if !(0.0..=1.0).contains(&self.lr_final) {
            return field_error(
                "lr_final",
                format!("expected a number in [0, 1], got {}", self.lr_final),
            );
        }
        Ok(())
    }

    /// A run in rounds must reach the round that trains the objective's S-step student: one
    /// that stops earlier ends as an earlier round's student (2^k S steps; its checkpoint says
    /// so). `reproduce` refuses such a run, since its table would list it under S; `distill`
    /// and `train` allow it (a short demo run, or one resumed longer later).
    pub fn check_reaches_last_round(&self) -> Result<()> {
        let (Some(last), Some(s)) = (
            self.objective.round(self.steps - 1),
            self.objective.student_steps(),
        ) else {
            return Ok(());
        };
        if last.student_steps == s {
            return Ok(());
        }
        let is_final = |i: u64| {
            self.objective
                .round(i)
                .is_some_and(|r| r.student_steps == s)
        };
        // Rounds follow in order: double past the final round's start, then bisect to it.
        let (mut lo, mut hi) = (self.steps - 1, self.steps);
        while !is_final(hi) && hi < u64::MAX / 2 {
            (lo, hi) = (hi, hi * 2);
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            match is_final(mid) {
                true => hi = mid,
                false => lo = mid,
            }
        }
        field_error(
            "steps",
            format!(
                "{} steps end in round {} of the objective, whose student takes {} steps; \
                 the round that trains its {s}-step student starts at step {hi}, so give \
                 steps > {hi} (a whole round more trains it fully) or shorter rounds",
                self.steps,
                last.index + 1,
                last.student_steps
            ),
        )
    }

    fn adamw(&self, step: u64) -> AdamW {
        AdamW {
            lr: self.lr_at(step),
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
        }
    }
}

/// The paths of a config that a run stores and later commands read back (`--resume`, a
/// student's `--teacher`, `sample --checkpoint`): each made [`absolute`](crate::config::absolute),
/// so the run folder works from any folder. (A run's identity leaves them out, [`identity`].)
pub const PATH_KEYS: [&str; 4] = ["data", "out", "teacher", "init"];

/// `cfg` as the TOML text a run stores (`config.toml`, every checkpoint's metadata), with the
/// [`PATH_KEYS`] absolute.
pub fn stored_config(cfg: &TrainConfig) -> Result<String> {
    let mut table: toml::Table = crate::config::to_toml(cfg)?
        .parse()
        .map_err(|e| anyhow::anyhow!("the resolved config: {e}"))?;
    for key in PATH_KEYS {
        if let Some(toml::Value::String(p)) = table.get_mut(key) {
            *p = crate::config::absolute(std::path::Path::new(p.as_str()))
                .display()
                .to_string();
        }
    }
    crate::config::to_toml(&table)
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct TrainOutcome {
    pub step: u64,
    pub checkpoint: PathBuf,
    /// Mean loss over the last logging window.
    pub loss: f64,
    pub steps_per_s: f64,
    pub seconds: f64,
}

/// Trains per `cfg`; with `resume`, continues from the latest checkpoint in `cfg.out`.
/// `progress` shows a bar on stderr (only drawn on a terminal).
///
/// Under `mpirun` ([`dist::world`] of several ranks) the run is data-parallel: every rank
/// trains on its share of each batch and holds the same weights after each step; rank 0 writes
/// the run folder (checkpoints, `log.jsonl`, `config.toml`), which every rank can resume from.
pub fn train(cfg: &TrainConfig, resume: bool, progress: bool) -> Result<TrainOutcome> {
    cfg.check()?;
    let world = dist::world();
    let root = world.is_root();
    let dev = seeded_device(cfg.seed);
    let mut run = setup::RunState::open(cfg, &dev, resume, world)?;
    let config_toml = stored_config(cfg)?;
    let log = match root {
        true => Some(setup::prepare_folder(cfg, resume, &config_toml)?),
        false => None,
    };
    let about = run.net.describe();
    let identity = identity::Identity::of(cfg)?;
    let (identity_json, run_hash) = (identity.to_json(), identity.hash());
    // A checkpoint after `step` iterations records the S of the round the last one trained.
    let meta = |step: u64| Meta {
        step,
        config: config_toml.clone(),
        row_shape: run.row_shape.clone(),
        network: about.clone(),
        student_steps: step
            .checked_sub(1)
            .and_then(|i| cfg.objective.round(i))
            .map(|r| r.student_steps)
            .or(cfg.objective.student_steps()),
        identity: Some(identity_json.clone()),
        run_hash: Some(run_hash.clone()),
    };
    let mut rounds = RoundTeacher::default();
    let mut report = Report::new(cfg, log, run.start, progress && root);
    // From here a first Ctrl-C or SIGTERM (with the handler installed) stops at the next step
    // boundary with a checkpoint instead of losing the steps since the last one.
    let listening = Listening::start();
    for step in run.start..cfg.steps {
        if let Some(r) = cfg.objective.round(step).filter(|r| r.index > 0) {
            rounds.enter(
                world,
                &r,
                &cfg.out,
                &dev,
                || run.net.state(&PARTS),
                meta(r.start),
            )?;
            if r.restart && step == r.start {
                rounds::restart_from_ema(run.net.as_mut())?;
            }
        }
        let active = rounds.teacher().or(run.teacher.as_deref());
        let waited = Instant::now();
        let b = run.loader.next_batch()?;
        report.waited(waited.elapsed());
        let x = batch_to_device(&dev, b.values, b.rows, run.dim);
        let stats = train_step_on(world, cfg, &dev, run.net.as_mut(), active, &x, step);
        let stats = stats.map_err(|e| {
            report.abandon();
            let kept = match &run.last {
                Some(p) => format!("the last good checkpoint is {}", p.display()),
                None => "no checkpoint was written yet".to_string(),
            };
            e.context(format!("training stopped; {kept}"))
        })?;
        let done = step + 1;
        report.step(done, &stats)?;
        // Ranks stop where their all-reduce agreed to (they may see a signal at different
        // steps); a single process as soon as it has one.
        let stop = match world.size() {
            1 => listening.requested(),
            _ => stats.stop,
        };
        if done % cfg.checkpoint_every == 0 || done == cfg.steps || stop.is_some() {
            let path = match root {
                true => {
                    let path = checkpoint::save(&cfg.out, &meta(done), &run.net.state(&PARTS))?;
                    checkpoint::prune(&cfg.out, cfg.keep_checkpoints)?;
                    tracing::info!("step {done}: wrote {}", path.display());
                    path
                }
                false => cfg.out.join(checkpoint::file_name(done)),
            };
            run.last = Some(path);
        }
        if let Some(signal) = stop {
            // The log ends where the checkpoint does, so a resume appends no step twice.
            report.flush(done)?;
            report.abandon();
            // No rank ends before rank 0 has written the checkpoint: a launcher ends the whole
            // job when one of its processes exits.
            world.barrier();
            let ckpt = run.last.as_deref().unwrap_or(&cfg.out);
            return Err(Interrupted {
                signal,
                message: format!(
                    "stopped after step {done} of {} and wrote {}; the same command with \
                     `--resume --out {}` continues it (`fewstep reproduce` resumes unfinished \
                     runs by itself)",
                    cfg.steps,
                    ckpt.display(),
                    cfg.out.display()
                ),
            }
            .into());
        }
    }
    drop(listening);
    // Every rank returns once the last checkpoint is on disk (the next command may read it).
    world.barrier();
    let seconds = report.finish();
    Ok(TrainOutcome {
        step: cfg.steps,
        checkpoint: run.last.expect("the last step writes a checkpoint"),
        loss: report.loss,
        steps_per_s: (cfg.steps - run.start) as f64 / seconds,
        seconds,
    })
}
