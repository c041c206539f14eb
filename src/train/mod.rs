//! The trainer: AdamW with linear warm-up and gradient clipping, an EMA of the weights (the
//! model that is sampled), batches from [`Loader`], checkpoints every K steps and at the end, and
//! exact resume.
//!
//! Reproducibility: the initial weights come from the device seeded with `seed`; every step's
//! randomness (times, noise) comes from a host generator seeded with `(seed, step)`; the loader
//! is seeded and a resumed run skips the batches already used. So on CPU, N steps then a resume
//! to 2N gives bit-identical weights to 2N steps straight.

pub mod calibrate;
pub mod checkpoint;

use crate::data::loader::{Loader, LoaderConfig};
use crate::denoiser::{BuildCtx, Denoiser, DenoiserSpec, NetCtx};
use crate::network::{AdamW, Network, StateDict, PARTS};
use crate::objective::{scale_count, DistillObjective, ObjectiveCtx};
use crate::schedule::Schedule;
use crate::tensor::{batch_to_device, seeded_device, Batch, Dev};
use anyhow::{bail, Context, Result};
use checkpoint::Meta;
use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
    /// Peak learning rate, reached linearly over `warmup` steps, then constant.
    pub lr: f64,
    /// Steps of the linear learning-rate warm-up.
    pub warmup: u64,
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

impl TrainConfig {
    /// Multiplies the run's length by `factor`: `steps`, `checkpoint_every` and the objective's
    /// iteration counts ([`DistillObjective::scale_iterations`]), each at least 1.
    pub fn scale_length(&mut self, factor: f64) {
        self.steps = scale_count(self.steps, factor);
        self.checkpoint_every = scale_count(self.checkpoint_every, factor);
        self.objective.scale_iterations(factor);
    }

    /// Learning rate of step `step` (0-based): linear warm-up, then constant.
    pub fn lr_at(&self, step: u64) -> f64 {
        self.lr * ((step + 1) as f64 / self.warmup.max(1) as f64).min(1.0)
    }

    /// EMA decay after step `step`: short memory early, so the EMA tracks the first fast progress.
    pub fn ema_decay_at(&self, step: u64) -> f64 {
        self.ema_decay.min((1 + step) as f64 / (10 + step) as f64)
    }

    fn check(&self) -> Result<()> {
        let bad = |what: &str| bail!("invalid training config: {what}");
        if self.steps == 0 || self.batch == 0 {
            return bad("steps and batch must be positive");
        }
        if self.lr <= 0.0 || !self.lr.is_finite() {
            return bad("lr must be a positive number");
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("beta1 and beta2 must lie in [0, 1)");
        }
        if !(0.0..1.0).contains(&self.ema_decay) {
            return bad("ema_decay must lie in [0, 1)");
        }
        if self.checkpoint_every == 0 || self.log_every == 0 {
            return bad("checkpoint_every and log_every must be positive");
        }
        if self.grad_clip < 0.0 || self.eps <= 0.0 || self.weight_decay < 0.0 {
            return bad("grad_clip and weight_decay must be >= 0, eps > 0");
        }
        Ok(())
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

/// What one step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
}

/// The host generator of step `step`: a function of the run seed and the step only, so a
/// resumed run draws what the uninterrupted run would have.
pub fn step_rng(seed: u64, step: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ (step.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// One optimisation step (0-based `step`) on the data batch `x`: loss, backward, clip, AdamW,
/// EMA. A non-finite loss or gradient norm is an error and leaves the network untouched.
pub fn train_step(
    cfg: &TrainConfig,
    dev: &Dev,
    net: &mut dyn Network,
    teacher: Option<&dyn Denoiser>,
    x: &Batch,
    step: u64,
) -> Result<StepStats> {
    let mut rng = step_rng(cfg.seed, step);
    let loss = {
        let mut ctx = ObjectiveCtx::new(
            dev,
            cfg.schedule.as_ref(),
            net.as_student(),
            net.as_denoiser(),
            teacher,
            step,
            &mut rng,
            net.alloc_grads(),
        );
        cfg.objective.loss(&mut ctx, x)?
    };
    let value = f64::from(loss.array());
    if !value.is_finite() {
        bail!("the loss is {value} at step {}", step + 1);
    }
    let mut grads = loss.backward();
    let grad_norm = net.grad_norm(&mut grads)?;
    if !grad_norm.is_finite() {
        bail!("the gradient norm is {grad_norm} at step {}", step + 1);
    }
    let scale = if cfg.grad_clip > 0.0 && grad_norm > cfg.grad_clip {
        cfg.grad_clip / grad_norm
    } else {
        1.0
    };
    let opt = cfg.adamw(step);
    net.adamw(&mut grads, &opt, step + 1, scale)?;
    net.update_ema(cfg.ema_decay_at(step))?;
    Ok(StepStats {
        loss: value,
        grad_norm,
        lr: opt.lr,
    })
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
pub fn train(cfg: &TrainConfig, resume: bool, progress: bool) -> Result<TrainOutcome> {
    cfg.check()?;
    let dev = seeded_device(cfg.seed);
    let mut loader = Loader::open(&cfg.data, LoaderConfig::new(cfg.batch, cfg.seed))?;
    let row_shape = loader.row_shape();
    let dim = loader.row_dim();
    let mut net = cfg.denoiser.network(&NetCtx {
        dev: dev.clone(),
        row_shape: row_shape.clone(),
        init: true,
    })?;
    tracing::info!("network: {}", net.describe());
    let teacher = load_teacher(cfg, &dev)?;

    let mut start = 0;
    let mut last = None;
    if resume {
        let path = checkpoint::latest(&cfg.out)?;
        let ck = checkpoint::load(&path, &PARTS)?;
        if ck.meta.row_shape != row_shape {
            bail!(
                "{} was trained on rows of shape {:?}; {} has rows of shape {:?}",
                path.display(),
                ck.meta.row_shape,
                cfg.data.display(),
                row_shape
            );
        }
        net.load_state(&ck.state, &PARTS)
            .with_context(|| format!("{} holds {}", path.display(), ck.meta.network))?;
        start = ck.meta.step;
        if start >= cfg.steps {
            bail!(
                "{} is already at step {start}; ask for more with --steps (now {})",
                path.display(),
                cfg.steps
            );
        }
        // The loader's stream depends only on its seed: skipping the batches already used puts
        // it where the interrupted run was.
        for _ in 0..start {
            let b = loader.next_batch()?;
            loader.recycle(b);
        }
        truncate_log(&cfg.out.join("log.jsonl"), start)?;
        tracing::info!("resuming from {} at step {start}", path.display());
        last = Some(path);
    } else if let Some((step, path)) = checkpoint::list(&cfg.out)?.pop() {
        bail!(
            "{} already holds a run (latest checkpoint {} at step {step}): pass --resume to \
             continue it, or choose another --out",
            cfg.out.display(),
            path.display()
        );
    } else if let Some(init) = &cfg.init {
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
        net.load_state(&both, &["net", "ema"])
            .with_context(|| format!("{} holds {}", path.display(), ck.meta.network))?;
        tracing::info!("initialised from {}", path.display());
    }
    let stale_rounds = cfg.out.join("rounds");
    if !resume && stale_rounds.exists() {
        // Round teachers of an earlier run that never wrote a checkpoint: not this run's.
        std::fs::remove_dir_all(&stale_rounds)
            .with_context(|| format!("cannot remove {}", stale_rounds.display()))?;
    }
    std::fs::create_dir_all(&cfg.out)
        .with_context(|| format!("cannot create {}", cfg.out.display()))?;
    let config_toml = crate::config::to_toml(cfg)?;
    std::fs::write(cfg.out.join("config.toml"), &config_toml)?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.out.join("log.jsonl"))?;
    let about = net.describe();
    // A checkpoint after `step` iterations records the S of the round the last one trained.
    let meta = |step: u64| Meta {
        step,
        config: config_toml.clone(),
        row_shape: row_shape.clone(),
        network: about.clone(),
        student_steps: step
            .checked_sub(1)
            .and_then(|i| cfg.objective.round(i))
            .map(|r| r.student_steps)
            .or(cfg.objective.student_steps()),
    };
    let mut rounds = RoundTeacher::default();

    let bar = bar(cfg.steps, start, progress);
    let t0 = Instant::now();
    let mut window = Window::new(Instant::now());
    let mut outcome_loss = f64::NAN;
    for step in start..cfg.steps {
        if let Some(r) = cfg.objective.round(step).filter(|r| r.index > 0) {
            rounds.enter(&r, &cfg.out, &dev, || net.state(&PARTS), meta(r.start))?;
        }
        let active = rounds.teacher().or(teacher.as_deref());
        let waited = Instant::now();
        let b = loader.next_batch()?;
        window.wait(waited.elapsed());
        let x = batch_to_device(&dev, b.values, b.rows, dim);
        let stats = train_step(cfg, &dev, net.as_mut(), active, &x, step).map_err(|e| {
            bar.abandon();
            let kept = match &last {
                Some(p) => format!("the last good checkpoint is {}", p.display()),
                None => "no checkpoint was written yet".to_string(),
            };
            e.context(format!("training stopped; {kept}"))
        })?;
        window.add(&stats);
        let done = step + 1;
        if done % cfg.log_every == 0 || done == cfg.steps {
            let line = window.line(done, cfg.batch, t0);
            outcome_loss = line.loss;
            writeln!(log, "{}", serde_json::to_string(&line)?)?;
            bar.set_message(format!(
                "loss {:.4} | {:.1} it/s",
                line.loss, line.steps_per_s
            ));
            window = Window::new(Instant::now());
        }
        bar.inc(1);
        if done % cfg.checkpoint_every == 0 || done == cfg.steps {
            let path = checkpoint::save(&cfg.out, &meta(done), &net.state(&PARTS))?;
            checkpoint::prune(&cfg.out, cfg.keep_checkpoints)?;
            tracing::info!("step {done}: wrote {}", path.display());
            last = Some(path);
        }
    }
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    Ok(TrainOutcome {
        step: cfg.steps,
        checkpoint: last.expect("the last step writes a checkpoint"),
        loss: outcome_loss,
        steps_per_s: (cfg.steps - start) as f64 / seconds,
        seconds,
    })
}

/// The teacher of a round after the first (see [`DistillObjective::round`]): the student as it
/// was when the round began, frozen. It is saved as `rounds/ckpt-<start>.safetensors` in the
/// run folder (out of reach of checkpoint pruning), so a run resumed inside the round reloads
/// the same teacher.
#[derive(Default)]
struct RoundTeacher {
    current: Option<(usize, Box<dyn Denoiser>)>,
}

impl RoundTeacher {
    /// Makes round `r`'s teacher current: loads it, or first saves the student's `state` as it.
    fn enter(
        &mut self,
        r: &crate::objective::Round,
        out: &Path,
        dev: &Dev,
        state: impl FnOnce() -> StateDict,
        meta: Meta,
    ) -> Result<()> {
        if self.current.as_ref().is_some_and(|(i, _)| *i == r.index) {
            return Ok(());
        }
        let dir = out.join("rounds");
        let path = dir.join(checkpoint::file_name(r.start));
        if !path.exists() {
            checkpoint::save(&dir, &meta, &state())?;
            tracing::info!("round {} teacher: {}", r.index, path.display());
        }
        let teacher = checkpoint::load_sampler(&path, dev)
            .with_context(|| format!("cannot load the teacher of round {}", r.index))?;
        self.current = Some((r.index, teacher));
        Ok(())
    }

    fn teacher(&self) -> Option<&dyn Denoiser> {
        self.current.as_ref().map(|(_, t)| t.as_ref())
    }
}

/// The run's teacher: a checkpoint's EMA network, or a denoiser plugin built on the data.
pub fn load_teacher(cfg: &TrainConfig, dev: &Dev) -> Result<Option<Box<dyn Denoiser>>> {
    match (&cfg.teacher, &cfg.teacher_denoiser) {
        (Some(_), Some(_)) => bail!(
            "the config sets both `teacher` (a checkpoint) and `[teacher_denoiser]`: keep one"
        ),
        (Some(path), None) => checkpoint::load_sampler(path, dev)
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

/// One line of `log.jsonl`: means over the steps since the previous line.
#[derive(Serialize, Deserialize, Debug)]
pub struct LogLine {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub steps_per_s: f64,
    pub samples_per_s: f64,
    pub elapsed_s: f64,
    /// Share of the window's wall time spent waiting for the loader's next batch (near 0 when
    /// data keeps up). Absent from logs written before it existed.
    #[serde(default)]
    pub data_wait: f64,
}

struct Window {
    since: Instant,
    n: u64,
    loss: f64,
    grad_norm: f64,
    lr: f64,
    waited: Duration,
}

impl Window {
    fn new(since: Instant) -> Self {
        Window {
            since,
            n: 0,
            loss: 0.0,
            grad_norm: 0.0,
            lr: 0.0,
            waited: Duration::ZERO,
        }
    }

    fn wait(&mut self, d: Duration) {
        self.waited += d;
    }

    fn add(&mut self, s: &StepStats) {
        self.n += 1;
        self.loss += s.loss;
        self.grad_norm += s.grad_norm;
        self.lr = s.lr;
    }

    fn line(&self, step: u64, batch: usize, t0: Instant) -> LogLine {
        let n = self.n.max(1) as f64;
        let wall = self.since.elapsed().as_secs_f64().max(1e-9);
        let rate = n / wall;
        LogLine {
            step,
            loss: self.loss / n,
            lr: self.lr,
            grad_norm: self.grad_norm / n,
            steps_per_s: rate,
            samples_per_s: rate * batch as f64,
            elapsed_s: t0.elapsed().as_secs_f64(),
            data_wait: (self.waited.as_secs_f64() / wall).min(1.0),
        }
    }
}

/// Drops log lines past `step` (written after the checkpoint a run resumes from).
fn truncate_log(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| serde_json::from_str::<LogLine>(l).is_ok_and(|l| l.step <= step))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept)?;
    Ok(())
}

fn bar(steps: u64, start: u64, show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(steps);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "training [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    bar.set_position(start);
    bar
}
