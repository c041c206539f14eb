//! [`Trainable`]: the one generic [`Network`] over any [`VNet`], what a network plugin's
//! `DenoiserSpec::network` returns.
//!
//! The network's tensors (on the device) are the training weights; their AdamW moments and EMA
//! live in flat host vectors beside a host copy of the weights, so every optimiser pass is one
//! parallel loop ([`super::optimiser`]) and the checkpoint state is a set of slices.

use super::optimiser;
use super::params::Layout;
use super::vnet::{VModel, VNet};
use crate::denoiser::{AdamW, Denoiser, Level, Network, Student, TapedBatch};
use crate::tensor::{Batch, Dev, HostTensor, StateDict};
use anyhow::{bail, Result};
use dfdx::prelude::*;

/// A [`VNet`] with its optimiser state: the weights as device tensors (what the forward pass
/// uses) and on the host, the gradient of the last backward pass, AdamW's moments and the EMA.
pub struct Trainable<M: VNet> {
    model: VModel<M>,
    layout: Layout,
    weights: Vec<f32>,
    grad: Vec<f32>,
    adam_m: Vec<f32>,
    adam_v: Vec<f32>,
    ema: Vec<f32>,
    about: String,
}

impl<M: VNet> Trainable<M> {
    /// Wraps a freshly built module (initialised by the device's seeded generator). The EMA
    /// starts equal to the weights, the AdamW moments at zero.
    pub fn new(dev: &Dev, net: M, dim: usize, about: impl Into<String>) -> Self {
        let layout = Layout::of(&net);
        let n = layout.len();
        let mut weights = vec![0.0; n];
        let mut at = layout.entries.iter();
        net.each_param(&mut |_, p| {
            let (_, _, range) = at.next().expect("the layout lists every tensor");
            p.read(&mut weights[range.clone()]);
        });
        Trainable {
            model: VModel {
                net,
                dev: dev.clone(),
                dim,
            },
            layout,
            ema: weights.clone(),
            weights,
            grad: vec![0.0; n],
            adam_m: vec![0.0; n],
            adam_v: vec![0.0; n],
            about: about.into(),
        }
    }

    /// Writes host values (the weights or the EMA) into the device tensors.
    fn upload(net: &mut M, layout: &Layout, values: &[f32]) {
        let mut at = layout.entries.iter();
        net.each_param_mut(&mut |_, p| {
            let (_, _, range) = at.next().expect("the layout lists every tensor");
            p.write(&values[range.clone()]);
        });
    }

    fn part(&self, name: &str) -> &[f32] {
        match name {
            "net" => &self.weights,
            "ema" => &self.ema,
            "adam_m" => &self.adam_m,
            "adam_v" => &self.adam_v,
            _ => unreachable!("unknown state part {name}"),
        }
    }

    fn part_mut(&mut self, name: &str) -> &mut Vec<f32> {
        match name {
            "net" => &mut self.weights,
            "ema" => &mut self.ema,
            "adam_m" => &mut self.adam_m,
            "adam_v" => &mut self.adam_v,
            _ => unreachable!("unknown state part {name}"),
        }
    }
}

impl<M: VNet> Denoiser for Trainable<M> {
    fn dim(&self) -> usize {
        self.model.dim
    }

    fn denoise(&self, z: &Batch, level: &Level) -> Result<Batch> {
        self.model.denoise(z, level)
    }
}

impl<M: VNet> Student for Trainable<M> {
    fn denoise_taped(&self, z: TapedBatch, level: &Level) -> Result<TapedBatch> {
        self.model.x_hat(z, level)
    }
}

impl<M: VNet> Network for Trainable<M> {
    fn describe(&self) -> String {
        format!("{} ({} parameters)", self.about, self.num_params())
    }

    fn num_params(&self) -> usize {
        self.layout.len()
    }

    fn as_student(&self) -> &dyn Student {
        self
    }

    fn as_denoiser(&self) -> &dyn Denoiser {
        &self.model
    }

    fn into_ema(self: Box<Self>) -> Box<dyn Denoiser> {
        let Trainable {
            mut model,
            layout,
            ema,
            ..
        } = *self;
        Self::upload(&mut model.net, &layout, &ema);
        Box::new(model)
    }

    fn alloc_grads(&self) -> Gradients<f32, Dev> {
        // A plain gradient store: each op adds its inputs' gradients into it as the tape runs.
        Gradients::leaky()
    }

    fn take_grads(&mut self, grads: &mut Gradients<f32, Dev>) -> Result<()> {
        let mut at = self.layout.entries.iter();
        let grad = &mut self.grad;
        self.model.net.each_param(&mut |_, p| {
            let (_, _, range) = at.next().expect("the layout lists every tensor");
            p.grad(grads, &mut grad[range.clone()]);
        });
        Ok(())
    }

    fn grad_mut(&mut self) -> &mut [f32] {
        &mut self.grad
    }

    fn grad_norm(&self) -> f64 {
        let ranges: Vec<_> = self.layout.entries.iter().map(|e| e.2.clone()).collect();
        optimiser::grad_norm(&self.grad, &ranges)
    }

    fn adamw(&mut self, opt: &AdamW, t: u64, grad_scale: f64) -> Result<()> {
        optimiser::adamw(
            &mut self.weights,
            &mut self.adam_m,
            &mut self.adam_v,
            &self.grad,
            opt,
            t,
            grad_scale,
        );
        Self::upload(&mut self.model.net, &self.layout, &self.weights);
        Ok(())
    }

    fn update_ema(&mut self, decay: f64) -> Result<()> {
        optimiser::ema(&mut self.ema, &self.weights, decay);
        Ok(())
    }

    fn state(&self, parts: &[&str]) -> StateDict {
        let mut out = StateDict::new();
        for part in parts {
            let values = self.part(part);
            for (name, shape, range) in &self.layout.entries {
                out.insert(
                    format!("{part}.{name}"),
                    HostTensor {
                        shape: shape.clone(),
                        values: values[range.clone()].to_vec(),
                    },
                );
            }
        }
        out
    }

    fn load_state(&mut self, state: &StateDict, parts: &[&str]) -> Result<()> {
        let mut problems = Vec::new();
        for part in parts {
            let entries = self.layout.entries.clone();
            let values = self.part_mut(part);
            for (name, shape, range) in &entries {
                let key = format!("{part}.{name}");
                match state.get(&key) {
                    None => problems.push(format!(
                        "tensor `{key}` (shape {shape:?}) is missing from the checkpoint"
                    )),
                    Some(h) if &h.shape != shape => problems.push(format!(
                        "tensor `{key}`: the checkpoint has shape {:?}, the configured network \
                         expects {shape:?}",
                        h.shape
                    )),
                    Some(h) => values[range.clone()].copy_from_slice(&h.values),
                }
            }
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
        if parts.contains(&"net") {
            Self::upload(&mut self.model.net, &self.layout, &self.weights);
        }
        Ok(())
    }
}
