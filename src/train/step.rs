//! One optimisation step: loss, backward, clipping, AdamW, EMA.

use super::TrainConfig;
use crate::denoiser::{Denoiser, Network};
use crate::objective::ObjectiveCtx;
use crate::seed::{seeded, SeededRng};
use crate::tensor::{Batch, Dev};
use anyhow::{bail, Result};
use dfdx::prelude::*;

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
pub fn step_rng(seed: u64, step: u64) -> SeededRng {
    seeded(seed ^ (step.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15))
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
    // Steps since the optimiser (re)started: a restarting round begins its own AdamW bias
    // correction and EMA warm-up (the learning rate follows the whole run's schedule).
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
    })
}
