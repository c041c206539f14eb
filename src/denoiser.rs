//! Denoisers: x_hat = E[x | z_t], built by name from the `[denoiser]` config table. The
//! interfaces of the denoiser plugin kind live here, from the bottom up: [`Denoiser`] (what
//! samplers evaluate), [`Student`] (a denoiser with a taped pass, what objectives train),
//! [`Network`] (a trainable student with its optimiser state, what the trainer drives) and
//! [`DenoiserSpec`] (the config table that builds either). Their generic implementation for dfdx
//! modules is in [`crate::network`].

use crate::checkpoint;
use crate::schedule::Schedule;
use crate::tensor::{Batch, Coef, Dev, Rows, StateDict};
use anyhow::{bail, Context, Result};
use dfdx::prelude::{Gradients, OwnedTape, Tensor};
use std::fmt::Debug;
use std::path::{Path, PathBuf};

/// The noise level a denoiser is evaluated at. Kept as log-SNR plus (alpha, sigma) so a denoiser
/// can condition on whichever it needs, independent of the schedule that produced it.
#[derive(Clone, Debug)]
pub struct Level {
    pub logsnr: Coef,
    pub alpha: Coef,
    pub sigma: Coef,
}

impl Level {
    /// The whole batch at time `t` of `schedule`.
    pub fn at(schedule: &dyn Schedule, t: f64) -> Self {
        let (a, s) = schedule.alpha_sigma(t);
        Level {
            logsnr: Coef::Scalar(logsnr_of(a, s)),
            alpha: Coef::Scalar(a),
            sigma: Coef::Scalar(s),
        }
    }

    /// z = alpha x + sigma eps: the data `x` diffused to this level with noise `eps`.
    pub fn noised(&self, x: &Batch, eps: &Batch) -> Batch {
        // On the CPU one pass on the host: the same products and sum as the dfdx ops below (so
        // the same bits) without their broadcasts' strided walks.
        #[cfg(not(feature = "cuda"))]
        {
            use crate::tensor::host_values;
            use dfdx::prelude::{HasShape, TensorFromVec};
            let (rows, dim) = *x.shape();
            assert_eq!(x.shape(), eps.shape(), "noised: x and eps differ in shape");
            let (a, s) = (self.alpha.host_f32(rows), self.sigma.host_f32(rows));
            let (xs, es) = (host_values(x), host_values(eps));
            let mut z = Vec::with_capacity(rows * dim);
            for (r, (x, e)) in xs.chunks(dim.max(1)).zip(es.chunks(dim.max(1))).enumerate() {
                z.extend(x.iter().zip(e).map(|(&x, &e)| a[r] * x + s[r] * e));
            }
            x.device().tensor_from_vec(z, (rows, dim))
        }
        #[cfg(feature = "cuda")]
        {
            self.alpha.scale(x.clone()) + self.sigma.scale(eps.clone())
        }
    }

    /// One time per row (training objectives).
    pub fn per_row(dev: &Dev, schedule: &dyn Schedule, ts: &[f64]) -> Self {
        let (a, s): (Vec<f64>, Vec<f64>) = ts.iter().map(|&t| schedule.alpha_sigma(t)).unzip();
        let l: Vec<f64> = a.iter().zip(&s).map(|(&a, &s)| logsnr_of(a, s)).collect();
        Level {
            logsnr: Coef::from_host(dev, &l),
            alpha: Coef::from_host(dev, &a),
            sigma: Coef::from_host(dev, &s),
        }
    }
}

/// ln(alpha^2 / sigma^2), +-inf at the endpoints.
pub fn logsnr_of(alpha: f64, sigma: f64) -> f64 {
    2.0 * (alpha.ln() - sigma.ln())
}

/// A denoiser ready to evaluate.
// Not `Send`/`Sync`: dfdx's CUDA device (held by every denoiser's tensors) is neither.
pub trait Denoiser {
    /// Flattened data dimension d.
    fn dim(&self) -> usize;

    /// x_hat = E[x | z_t] for each row of `z` at noise level `level`.
    fn denoise(&self, z: &Batch, level: &Level) -> Result<Batch>;

    /// tr(Var[x | z_t]) / d per row, where the denoiser knows it exactly (e.g. a Gaussian
    /// mixture). `None` when it does not.
    fn posterior_variance(&self, _z: &Batch, _level: &Level) -> Option<Result<Rows>> {
        None
    }
}

/// A batch whose operations are being recorded for backpropagation.
pub type TapedBatch = Tensor<(usize, usize), f32, Dev, OwnedTape<f32, Dev>>;

/// The network being trained, seen from an objective.
pub trait Student: Denoiser {
    /// x_hat for `z`, recording the student's parameters on the tape of `z`.
    fn denoise_taped(&self, z: TapedBatch, level: &Level) -> Result<TapedBatch>;
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

/// The parts of a network's state: training weights, their EMA (what is sampled), and AdamW's
/// first and second moments. [`StateDict`] keys are `<part>.<module path>`.
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
    fn into_ema(self: Box<Self>) -> Box<dyn Denoiser>;
    /// A zeroed gradient buffer for the training weights (the tape of a forward pass).
    fn alloc_grads(&self) -> Gradients<f32, Dev>;
    /// Takes the weights' gradients from a backward pass into the flat host gradient.
    fn take_grads(&mut self, grads: &mut Gradients<f32, Dev>) -> Result<()>;
    /// The flat host gradient [`Self::take_grads`] filled and [`Self::adamw`] applies, every
    /// tensor's values one after another: data-parallel training sums the ranks' shares here.
    fn grad_mut(&mut self) -> &mut [f32];
    /// The global L2 norm of the flat gradient.
    fn grad_norm(&self) -> f64;
    /// One AdamW update with the flat gradient, multiplied by
    /// `grad_scale` (clipping); `t` counts updates from 1 (bias correction).
    fn adamw(&mut self, opt: &AdamW, t: u64, grad_scale: f64) -> Result<()>;
    /// ema = decay * ema + (1 - decay) * weights.
    fn update_ema(&mut self, decay: f64) -> Result<()>;
    /// Every tensor of the given parts (all of [`PARTS`] for a checkpoint), by name.
    fn state(&self, parts: &[&str]) -> StateDict;
    /// Loads the given parts; errors name each tensor whose shape differs (both shapes) or that
    /// is missing.
    fn load_state(&mut self, state: &StateDict, parts: &[&str]) -> Result<()>;
}

/// What a denoiser config may need to build itself: the dataset (a mixture's parameters live in
/// it), a checkpoint (network weights), and the device.
#[derive(Clone, Debug)]
pub struct BuildCtx {
    pub dev: Dev,
    pub data: Option<PathBuf>,
    pub checkpoint: Option<PathBuf>,
}

/// What a trainable network needs to build itself: the device and the shape of one data row,
/// e.g. `[2]` or `[3, 32, 32]`.
#[derive(Clone, Debug)]
pub struct NetCtx {
    pub dev: Dev,
    pub row_shape: Vec<usize>,
    /// Draw the initial weights from the device's seeded generator (training). `false` builds
    /// zeros without touching the generator, for weights about to be loaded, so sampling from a
    /// checkpoint draws the same noise for a seed as any other denoiser.
    pub init: bool,
}

/// The `[denoiser]` config table: picks a denoiser by `name` and builds it.
#[typetag::serde(tag = "name")]
pub trait DenoiserSpec: Send + Sync + Debug {
    /// Checks the plugin's settings together, where one field's valid range depends on another
    /// (a single field's range is checked as it is read). Called when a config is loaded, before
    /// any work; the error names the fields and their valid values.
    fn validate(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// A denoiser ready to sample. The default, for network denoisers, is [`Self::network`]
    /// with the EMA weights of `ctx.checkpoint` (a file or a run folder); other denoisers
    /// (e.g. an exact one built from the data) implement their own.
    fn build(&self, ctx: &BuildCtx) -> Result<Box<dyn Denoiser>> {
        let Some(path) = &ctx.checkpoint else {
            bail!(
                "denoiser `{}` is a network: give it weights with --checkpoint FILE|DIR",
                self.typetag_name()
            );
        };
        let path = checkpoint::resolve(path)?;
        let ck = checkpoint::load(&path, &["ema"])?;
        let mut net = self.network(&NetCtx {
            dev: ctx.dev.clone(),
            row_shape: ck.meta.row_shape.clone(),
            init: false,
        })?;
        net.load_state(&ck.state, &["ema"]).with_context(|| {
            format!(
                "{} holds {} at step {}",
                path.display(),
                ck.meta.network,
                ck.meta.step
            )
        })?;
        Ok(net.into_ema())
    }

    /// A freshly initialised trainable network (network denoisers only).
    fn network(&self, _ctx: &NetCtx) -> Result<Box<dyn Network>> {
        bail!(
            "denoiser `{}` cannot be trained: it is not a network (pick a network denoiser, \
             e.g. `mlp` for vectors or `uvit` for images; `fewstep list denoiser` shows all)",
            self.typetag_name()
        )
    }
}

/// The EMA network of a checkpoint (file or run folder), built from the checkpoint's own
/// `[denoiser]` table: a teacher, or any trained model to sample or evaluate.
pub fn trained(path: &Path, dev: &Dev) -> Result<Box<dyn Denoiser>> {
    let path = checkpoint::resolve(path)?;
    let meta = checkpoint::load(&path, &[])?.meta;
    let spec: Box<dyn DenoiserSpec> = toml::Value::Table(checkpoint::denoiser_table(&meta)?)
        .try_into()
        .with_context(|| format!("the [denoiser] of {}", path.display()))?;
    spec.build(&BuildCtx {
        dev: dev.clone(),
        data: None,
        checkpoint: Some(path),
    })
}
