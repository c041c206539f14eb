//! Trainable network denoisers: the one generic wrapper that turns any dfdx module predicting v
//! into a [`Network`] (a [`Student`] with an optimiser, an EMA copy and checkpoint state).
//!
//! A network plugin defines only its dfdx module type (a [`TensorCollection`]) and its forward
//! pass ([`VNet::v`]); parameter counting, AdamW, gradient norms, the EMA and named state for
//! checkpoints are written once here, as visitors over the module's tensors.

use crate::denoiser::{Denoiser, Level, NetCtx};
use crate::objective::{Student, TapedBatch};
use crate::tensor::{Batch, Coef, Dev};
use anyhow::{anyhow, bail, Result};
use dfdx::nn::{
    BuildModule, ModelEMA, NumParams, RecursiveWalker, TensorCollection, TensorOptions,
    TensorVisitor, ViewTensorMut, ViewTensorName, ViewTensorRef, ZeroGrads,
};
use dfdx::prelude::*;
use std::collections::BTreeMap;

/// Width of the log-SNR embedding [`logsnr_features`] produces.
pub const FEATURES: usize = 32;
/// The log-SNR is clipped to +-LOGSNR_CLIP for the embedding only, so t = 0 and t = 1 (+-inf)
/// embed like their neighbours while the output parametrisation still uses the exact alpha, sigma.
pub const LOGSNR_CLIP: f64 = 20.0;

/// What a concrete network implements: a dfdx module that predicts v from z and the embedded
/// log-SNR. `T` is the tape: `NoneTape` for sampling, `OwnedTape` for training.
pub trait VNet: TensorCollection<f32, Dev, To<f32, Dev> = Self> + Clone + 'static {
    /// v for each row of `z` (`[batch, dim]`), given `cond = logsnr_features(..)` (`[batch, 32]`).
    /// The tape of `z` must be threaded through every parameter use (see [`silu`] and the
    /// built-in `mlp` for the pattern).
    fn v<T: Tape<f32, Dev>>(
        &self,
        z: Tensor<(usize, usize), f32, Dev, T>,
        cond: Tensor<(usize, Const<FEATURES>), f32, Dev>,
    ) -> Tensor<(usize, usize), f32, Dev, T>;
}

/// SiLU(x) = x * sigmoid(x), composed from dfdx ops (dfdx 0.13 has no SiLU).
pub fn silu<S: Shape, T: Tape<f32, Dev>>(x: Tensor<S, f32, Dev, T>) -> Tensor<S, f32, Dev, T> {
    let (x, tape) = x.split_tape();
    x.clone().put_tape(tape).sigmoid() * x
}

/// A `[batch, dim]` tensor as `[batch, D]` (compile-time width, as dfdx layers need).
/// Panics if `dim != D`; [`VModel`] checks the row size before calling a network.
pub fn fixed_width<const D: usize, T: Tape<f32, Dev>>(
    x: Tensor<(usize, usize), f32, Dev, T>,
) -> Tensor<(usize, Const<D>), f32, Dev, T> {
    x.try_realize()
        .unwrap_or_else(|x| panic!("expected rows of size {D}, got {}", x.shape().1))
}

/// A `[batch, D]` tensor as `[batch, dim]` (the runtime width every denoiser exchanges).
pub fn runtime_width<const D: usize, T: Tape<f32, Dev>>(
    x: Tensor<(usize, Const<D>), f32, Dev, T>,
) -> Tensor<(usize, usize), f32, Dev, T> {
    x.try_realize()
        .unwrap_or_else(|_| unreachable!("a const width is a valid runtime width"))
}

/// Sinusoidal features of the clipped, scaled log-SNR: u = clip(lambda, +-20) / 20 in [-1, 1],
/// then sin and cos of u at 16 geometric frequencies from 1 to 200 rad (periods from 12 down to
/// 0.6 in log-SNR units). Computed on the host in f64 from the level's host copy (no device
/// read): it is `[batch, 32]` numbers.
pub fn logsnr_features(
    dev: &Dev,
    logsnr: &Coef,
    batch: usize,
) -> Tensor<(usize, Const<FEATURES>), f32, Dev> {
    let lambdas = logsnr.host_rows(batch);
    let half = FEATURES / 2;
    let mut out = Vec::with_capacity(batch * FEATURES);
    for l in lambdas {
        let u = l.clamp(-LOGSNR_CLIP, LOGSNR_CLIP) / LOGSNR_CLIP;
        for k in 0..half {
            let w = 200f64.powf(k as f64 / (half - 1) as f64);
            out.push((w * u).sin() as f32);
            out.push((w * u).cos() as f32);
        }
    }
    dev.tensor_from_vec(out, (batch, Const::<FEATURES>))
}

/// A network's module with its row size: evaluates x_hat = alpha z - sigma v (v-prediction).
#[derive(Clone)]
pub struct VModel<M> {
    pub net: M,
    pub dev: Dev,
    pub dim: usize,
}

impl<M: VNet> VModel<M> {
    /// x_hat for `z` with any tape: the network's v, then alpha z - sigma v with the level's exact
    /// coefficients (so x_hat = z at sigma = 0 and x_hat = -v at alpha = 0).
    pub fn x_hat<T: Tape<f32, Dev>>(
        &self,
        z: Tensor<(usize, usize), f32, Dev, T>,
        level: &Level,
    ) -> Result<Tensor<(usize, usize), f32, Dev, T>> {
        let (rows, dim) = *z.shape();
        if dim != self.dim {
            bail!("network expects rows of size {}, got {dim}", self.dim);
        }
        let cond = logsnr_features(&self.dev, &level.logsnr, rows);
        let (z, tape) = z.split_tape();
        let v = self.net.v(z.clone().put_tape(tape), cond);
        let minus_sigma_v = match &level.sigma {
            Coef::Scalar(s) => v * (-*s as f32),
            Coef::Rows(r) => {
                v * r
                    .tensor()
                    .clone()
                    .negate()
                    .broadcast_like::<_, Axis<1>>(&(rows, dim))
            }
        };
        Ok(minus_sigma_v + level.alpha.scale(z))
    }
}

impl<M: VNet> Denoiser for VModel<M> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn denoise(&self, z: &Batch, level: &Level) -> Result<Batch> {
        self.x_hat(z.clone(), level)
    }
}

/// AdamW hyper-parameters of one update (the learning rate already warmed up).
#[derive(Clone, Copy, Debug)]
pub struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

/// One tensor of a network's state on the host, for checkpoints.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Named host tensors. Keys are `<part>.<module path>`, parts being [`PARTS`].
pub type StateDict = BTreeMap<String, HostTensor>;

/// The parts of a network's state: training weights, their EMA (what is sampled), and AdamW's
/// first and second moments.
pub const PARTS: [&str; 4] = ["net", "ema", "adam_m", "adam_v"];

/// A trainable network as the trainer sees it, type-erased.
pub trait Network: Student {
    /// A one-line description (plugin, preset, parameter count).
    fn describe(&self) -> String;
    fn num_params(&self) -> usize;
    /// The network as a [`Student`] (training weights, with gradients).
    fn as_student(&self) -> &dyn Student;
    /// The training weights without gradients (the `target` of consistency objectives).
    fn as_denoiser(&self) -> &dyn Denoiser;
    /// The exponential moving average of the weights: the model that is sampled.
    fn ema(&self) -> &dyn Denoiser;
    fn into_ema(self: Box<Self>) -> Box<dyn Denoiser>;
    /// A zeroed gradient buffer for the training weights (the tape of a forward pass).
    fn alloc_grads(&self) -> Gradients<f32, Dev>;
    /// The global L2 norm of the weights' gradients.
    fn grad_norm(&self, grads: &mut Gradients<f32, Dev>) -> Result<f64>;
    /// One AdamW update with gradients multiplied by `grad_scale` (clipping); `t` counts
    /// updates from 1 (bias correction).
    fn adamw(
        &mut self,
        grads: &mut Gradients<f32, Dev>,
        opt: &AdamW,
        t: u64,
        grad_scale: f64,
    ) -> Result<()>;
    /// ema = decay * ema + (1 - decay) * weights.
    fn update_ema(&mut self, decay: f64) -> Result<()>;
    /// Every tensor of the given parts (all of [`PARTS`] for a checkpoint), by name.
    fn state(&self, parts: &[&str]) -> StateDict;
    /// Loads the given parts; errors name each tensor whose shape differs (both shapes) or that
    /// is missing.
    fn load_state(&mut self, state: &StateDict, parts: &[&str]) -> Result<()>;
}

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

fn dev_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("device error: {e:?}")
}

type DevErr = <Dev as HasErr>::Err;

/// Fills every tensor with zeros (the AdamW moments at the start).
struct Zero;

impl TensorVisitor<f32, Dev> for Zero {
    type Viewer = ViewTensorMut;
    type Err = DevErr;
    type E2 = f32;
    type D2 = Dev;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, Dev>,
        t: &mut Tensor<S, f32, Dev>,
    ) -> Result<Option<Tensor<S, f32, Dev>>, DevErr> {
        t.try_fill_with_zeros()?;
        Ok(None)
    }
}

/// Builds every tensor as zeros (no draws from the device's generator).
struct ZeroBuild<'a>(&'a Dev);

impl TensorVisitor<f32, Dev> for ZeroBuild<'_> {
    type Viewer = ();
    type Err = DevErr;
    type E2 = f32;
    type D2 = Dev;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, Dev>,
        _: (),
    ) -> Result<Option<Tensor<S, f32, Dev>>, DevErr> {
        Ok(Some(self.0.try_zeros_like(&opts.shape)?))
    }
}

/// Sum of squared gradients on the device (one host read at the end).
struct SumSquares<'a> {
    grads: &'a mut Gradients<f32, Dev>,
    acc: Option<Tensor<Rank0, f32, Dev>>,
}

impl TensorVisitor<f32, Dev> for SumSquares<'_> {
    type Viewer = ViewTensorRef;
    type Err = DevErr;
    type E2 = f32;
    type D2 = Dev;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, Dev>,
        p: &Tensor<S, f32, Dev>,
    ) -> Result<Option<Tensor<S, f32, Dev>>, DevErr> {
        if opts.do_gradient_update {
            // A parameter the loss did not touch has a zero gradient, not a missing one.
            self.grads.try_alloc_for(p)?;
            let s: Tensor<Rank0, f32, Dev> = self.grads.get(p).try_square()?.try_sum()?;
            self.acc = Some(match self.acc.take() {
                None => s,
                Some(a) => a.try_add(s)?,
            });
        }
        Ok(None)
    }
}

/// AdamW (decoupled weight decay) on (weights, m, v) with scaled gradients.
struct AdamWOp<'a> {
    grads: &'a mut Gradients<f32, Dev>,
    opt: AdamW,
    t: i32,
    grad_scale: f64,
}

impl TensorVisitor<f32, Dev> for AdamWOp<'_> {
    type Viewer = (ViewTensorMut, ViewTensorMut, ViewTensorMut);
    type Err = DevErr;
    type E2 = f32;
    type D2 = Dev;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, f32, Dev>,
        (p, m, v): (
            &mut Tensor<S, f32, Dev>,
            &mut Tensor<S, f32, Dev>,
            &mut Tensor<S, f32, Dev>,
        ),
    ) -> Result<Option<Tensor<S, f32, Dev>>, DevErr> {
        if !opts.do_gradient_update {
            return Ok(None);
        }
        let o = &self.opt;
        self.grads.try_alloc_for(p)?;
        let mut g = self.grads.get(p);
        if self.grad_scale != 1.0 {
            g = g.try_mul(self.grad_scale as f32)?;
        }
        m.try_axpy(o.beta1, &g, 1.0 - o.beta1)?;
        v.try_axpy(o.beta2, &g.try_square()?, 1.0 - o.beta2)?;
        let m_hat = 1.0 / (1.0 - o.beta1.powi(self.t));
        let v_hat = 1.0 / (1.0 - o.beta2.powi(self.t));
        let denom = v
            .clone()
            .try_mul(v_hat as f32)?
            .try_sqrt()?
            .try_add(o.eps as f32)?;
        let step = m.clone().try_mul((o.lr * m_hat) as f32)?.try_div(denom)?;
        p.try_axpy(1.0 - o.lr * o.weight_decay, &step, -1.0)?;
        Ok(None)
    }
}

/// Copies tensors to the host under `<prefix>.<path>`.
struct Export<'a> {
    prefix: &'a str,
    out: &'a mut StateDict,
}

impl TensorVisitor<f32, Dev> for Export<'_> {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = DevErr;
    type E2 = f32;
    type D2 = Dev;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, Dev>,
        (t, name): (&Tensor<S, f32, Dev>, String),
    ) -> Result<Option<Tensor<S, f32, Dev>>, DevErr> {
        self.out.insert(
            format!("{}.{name}", self.prefix),
            HostTensor {
                shape: t.shape().concrete().into_iter().collect(),
                values: t.as_vec(),
            },
        );
        Ok(None)
    }
}

/// Copies host tensors in, collecting a message per missing or mis-shaped tensor.
struct Import<'a> {
    prefix: &'a str,
    state: &'a StateDict,
    problems: &'a mut Vec<String>,
}

impl TensorVisitor<f32, Dev> for Import<'_> {
    type Viewer = (ViewTensorMut, ViewTensorName);
    type Err = DevErr;
    type E2 = f32;
    type D2 = Dev;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, f32, Dev>,
        (t, name): (&mut Tensor<S, f32, Dev>, String),
    ) -> Result<Option<Tensor<S, f32, Dev>>, DevErr> {
        let key = format!("{}.{name}", self.prefix);
        let want: Vec<usize> = t.shape().concrete().into_iter().collect();
        match self.state.get(&key) {
            None => self.problems.push(format!(
                "tensor `{key}` (shape {want:?}) is missing from the checkpoint"
            )),
            Some(h) if h.shape != want => self.problems.push(format!(
                "tensor `{key}`: the checkpoint has shape {:?}, the configured network expects {want:?}",
                h.shape
            )),
            Some(h) => t.copy_from(&h.values),
        }
        Ok(None)
    }
}
