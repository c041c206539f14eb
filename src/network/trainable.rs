//! [`Trainable`]: the one generic [`Network`] over any [`VNet`], and [`build_network`], what a
//! network plugin's `DenoiserSpec::network` calls.

use super::optimiser::{AdamWOp, SumSquares, Zero};
use super::state::{Export, Import, ZeroBuild};
use super::vnet::{VModel, VNet};
use crate::denoiser::{AdamW, Denoiser, Level, NetCtx, Network, Student, TapedBatch};
use crate::tensor::{dev_err, Batch, Dev, StateDict};
use anyhow::{bail, Result};
use dfdx::nn::{BuildModule, ModelEMA, NumParams, RecursiveWalker, ZeroGrads};
use dfdx::prelude::*;

/// The generic [`Network`] over any [`VNet`]: weights, EMA and AdamW moments are four values of
/// the same module type, so one set of visitors serves them all.
pub struct Trainable<M: VNet> {
    weights: VModel<M>,
    ema: VModel<M>,
    adam_m: M,
    adam_v: M,
    about: String,
}

impl<M: VNet> Trainable<M> {
    /// Wraps a freshly built module (initialised by the device's seeded generator). The EMA
    /// starts equal to the weights, the AdamW moments at zero.
    pub fn new(dev: &Dev, net: M, dim: usize, about: impl Into<String>) -> Result<Self> {
        let mut zeros = net.clone();
        M::iter_tensors(&mut RecursiveWalker {
            m: &mut zeros,
            f: &mut Zero,
        })
        .map_err(dev_err)?;
        let weights = VModel {
            net,
            dev: dev.clone(),
            dim,
        };
        Ok(Trainable {
            ema: weights.clone(),
            weights,
            adam_m: zeros.clone(),
            adam_v: zeros,
            about: about.into(),
        })
    }

    fn part(&self, name: &str) -> &M {
        match name {
            "net" => &self.weights.net,
            "ema" => &self.ema.net,
            "adam_m" => &self.adam_m,
            "adam_v" => &self.adam_v,
            _ => unreachable!("unknown state part {name}"),
        }
    }

    fn part_mut(&mut self, name: &str) -> &mut M {
        match name {
            "net" => &mut self.weights.net,
            "ema" => &mut self.ema.net,
            "adam_m" => &mut self.adam_m,
            "adam_v" => &mut self.adam_v,
            _ => unreachable!("unknown state part {name}"),
        }
    }
}

impl<M: VNet> Denoiser for Trainable<M> {
    fn dim(&self) -> usize {
        self.weights.dim
    }

    fn denoise(&self, z: &Batch, level: &Level) -> Result<Batch> {
        self.weights.denoise(z, level)
    }
}

impl<M: VNet> Student for Trainable<M> {
    fn denoise_taped(&self, z: TapedBatch, level: &Level) -> Result<TapedBatch> {
        self.weights.x_hat(z, level)
    }
}

impl<M: VNet> Network for Trainable<M> {
    fn describe(&self) -> String {
        format!("{} ({} parameters)", self.about, self.num_params())
    }

    fn num_params(&self) -> usize {
        self.weights.net.num_trainable_params()
    }

    fn as_student(&self) -> &dyn Student {
        self
    }

    fn as_denoiser(&self) -> &dyn Denoiser {
        &self.weights
    }

    fn ema(&self) -> &dyn Denoiser {
        &self.ema
    }

    fn into_ema(self: Box<Self>) -> Box<dyn Denoiser> {
        Box::new(self.ema)
    }

    fn alloc_grads(&self) -> Gradients<f32, Dev> {
        self.weights.net.alloc_grads()
    }

    fn grad_norm(&self, grads: &mut Gradients<f32, Dev>) -> Result<f64> {
        let mut op = SumSquares { grads, acc: None };
        M::iter_tensors(&mut RecursiveWalker {
            m: &self.weights.net,
            f: &mut op,
        })
        .map_err(dev_err)?;
        Ok(op.acc.map_or(0.0, |a| f64::from(a.array()).sqrt()))
    }

    fn adamw(
        &mut self,
        grads: &mut Gradients<f32, Dev>,
        opt: &AdamW,
        t: u64,
        grad_scale: f64,
    ) -> Result<()> {
        let mut op = AdamWOp {
            grads,
            opt: *opt,
            t: t.max(1) as i32,
            grad_scale,
        };
        M::iter_tensors(&mut RecursiveWalker {
            m: (&mut self.weights.net, &mut self.adam_m, &mut self.adam_v),
            f: &mut op,
        })
        .map_err(dev_err)?;
        Ok(())
    }

    fn update_ema(&mut self, decay: f64) -> Result<()> {
        self.ema
            .net
            .try_ema(&self.weights.net, decay)
            .map_err(dev_err)
    }

    fn state(&self, parts: &[&str]) -> StateDict {
        let mut out = StateDict::new();
        for part in parts {
            let mut op = Export {
                prefix: part,
                out: &mut out,
            };
            M::iter_tensors(&mut RecursiveWalker {
                m: (self.part(part), String::new()),
                f: &mut op,
            })
            .expect("export cannot fail");
        }
        out
    }

    fn load_state(&mut self, state: &StateDict, parts: &[&str]) -> Result<()> {
        let mut problems = Vec::new();
        for part in parts {
            let mut op = Import {
                prefix: part,
                state,
                problems: &mut problems,
            };
            M::iter_tensors(&mut RecursiveWalker {
                m: (self.part_mut(part), String::new()),
                f: &mut op,
            })
            .expect("import reports problems instead of failing");
        }
        if !problems.is_empty() {
            let shown = problems.len().min(8);
            bail!(
                "the checkpoint does not match the configured network ({}):\n  {}{}",
                self.about,
                problems[..shown].join("\n  "),
                if problems.len() > shown {
                    format!("\n  ... and {} more", problems.len() - shown)
                } else {
                    String::new()
                }
            );
        }
        Ok(())
    }
}

/// Builds a [`VNet`] on the seeded device, lets `init` adjust it (e.g. zero the output layer),
/// and wraps it as a trainable [`Network`] for rows of `dim` values.
pub fn build_network<M: VNet>(
    ctx: &NetCtx,
    dim: usize,
    about: impl Into<String>,
    init: impl FnOnce(&mut M),
) -> Result<Box<dyn Network>> {
    let mut net = if ctx.init {
        M::try_build(&ctx.dev).map_err(dev_err)?
    } else {
        M::iter_tensors(&mut RecursiveWalker {
            m: (),
            f: &mut ZeroBuild(&ctx.dev),
        })
        .map_err(dev_err)?
        .expect("the builder returns the module")
    };
    init(&mut net);
    Ok(Box::new(Trainable::new(&ctx.dev, net, dim, about)?))
}
