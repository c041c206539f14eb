//! One optimisation step: loss, backward, (the all-reduce of a data-parallel run), clipping,
//! AdamW, EMA.

use super::TrainConfig;
use crate::denoiser::{Denoiser, Network};
use crate::dist::{self, Collective, Single};
use crate::interrupt::{self, Signal};
use crate::objective::{ObjectiveCtx, RowShare};
use crate::seed::{seeded, SeededRng};
use crate::tensor::{Batch, Dev};
use anyhow::{bail, ensure, Result};
use dfdx::prelude::*;
use std::time::{Duration, Instant};

/// What one step measured.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    pub lr: f64,
    /// Time in the gradient all-reduce (zero for a single process).
    pub comm: Duration,
    /// Bytes of the all-reduce buffer (the gradient, the loss, the stop flags; 0 for a single
    /// process).
    pub comm_bytes: usize,
    /// A data-parallel run: the stop every rank agreed on in this step's all-reduce (a SIGINT or
    /// SIGTERM any rank had received), so all stop after the same step. `None` for a single
    /// process, whose loop asks [`crate::interrupt::Listening`] itself.
    pub stop: Option<Signal>,
}

/// The host generator of step `step`: a function of the run seed and the step only, so a
/// resumed run draws what the uninterrupted run would have.
pub fn step_rng(seed: u64, step: u64) -> SeededRng {
    seeded(seed ^ (step.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// One optimisation step (0-based `step`) on the data batch `x` in a single process: loss,
/// backward, clip, AdamW, EMA. A non-finite loss or gradient norm is an error and leaves the
/// network untouched.
pub fn train_step(
    cfg: &TrainConfig,
    dev: &Dev,
    net: &mut dyn Network,
    teacher: Option<&dyn Denoiser>,
    x: &Batch,
    step: u64,
) -> Result<StepStats> {
    train_step_on(&Single, cfg, dev, net, teacher, x, step)
}

/// [`train_step`] as one rank of `world`: `x` holds this rank's share
/// ([`dist::share`]) of the global batch of `cfg.batch` rows, the objective draws the whole
/// batch's times and noise and keeps this share's, and one all-reduce of one flat buffer (the
/// weighted gradient, the weighted loss, the ranks' stop flags) makes every rank's gradient the global batch's.
/// Clipping, AdamW and the EMA then run identically on every rank, so the weights stay equal.
pub fn train_step_on(
    world: &dyn Collective,
    cfg: &TrainConfig,
    dev: &Dev,
    net: &mut dyn Network,
    teacher: Option<&dyn Denoiser>,
    x: &Batch,
    step: u64,
) -> Result<StepStats> {
    let rows = dist::share(cfg.batch, world.rank(), world.size());
    let parallel = world.size() > 1;
    if parallel {
        ensure!(
            x.shape().0 == rows.len(),
            "rank {} got {} rows; its share of the batch is {}",
            world.rank(),
            x.shape().0,
            rows.len()
        );
    }
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
        if parallel {
            ctx = ctx.with_share(RowShare {
                offset: rows.start,
                global: cfg.batch,
            });
        }
        cfg.objective.loss(&mut ctx, x)?
    };
    let mut value = f64::from(loss.array());
    if !parallel && !value.is_finite() {
        bail!("the loss is {value} at step {}", step + 1);
    }
    let mut grads = loss.backward();
    net.take_grads(&mut grads)?;
    let (mut comm, mut comm_bytes, mut stop) = (Duration::ZERO, 0, None);
    if parallel {
        // Every loss is a mean over the batch's rows: the global one is the sum over ranks of
        // (rows / batch) x the rank's mean, and so is its gradient.
        let weight = rows.len() as f32 / cfg.batch as f32;
        let grad = net.grad_mut();
        let mut buf: Vec<f32> = grad.iter().map(|g| g * weight).collect();
        buf.push(value as f32 * weight);
        // The ranks may receive a Ctrl-C or SIGTERM at different steps: the flags ride along,
        // so every rank learns of any rank's signal in the same step.
        buf.extend(interrupt::stop_flags(interrupt::pending()));
        comm_bytes = std::mem::size_of_val(&buf[..]);
        let t0 = Instant::now();
        world.all_reduce_sum(&mut buf);
        comm = t0.elapsed();
        let flags = buf.split_off(buf.len() - 2);
        stop = interrupt::agreed_stop([flags[0], flags[1]]);
        value = f64::from(buf.pop().expect("the loss rides after the gradient"));
        grad.copy_from_slice(&buf);
        if !value.is_finite() {
            bail!("the loss is {value} at step {}", step + 1);
        }
    }
    let grad_norm = net.grad_norm();
    if !grad_norm.is_finite() {
        bail!("the gradient norm is {grad_norm} at step {}", step + 1);
    }
    let scale = if cfg.grad_clip > 0.0 && grad_norm > cfg.grad_clip {
        cfg.grad_clip / grad_norm
    } else {
        1.0
    };
    // Steps since the optimiser (re)started: a restarting round begins its own AdamW bias
    // correction and EMA warm-up (and its own learning-rate schedule, see `lr_at`).
    let since = match cfg.objective.round(step) {
        Some(r) if r.restart && r.index > 0 => step - r.start,
        _ => step,
    };
    let opt = cfg.adamw(step);
    net.adamw(&opt, since + 1, scale)?;
    net.update_ema(cfg.ema_decay_at(since))?;
    Ok(StepStats {
        loss: value,
        grad_norm,
        lr: opt.lr,
        comm,
        comm_bytes,
        stop,
    })
}
