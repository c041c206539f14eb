//! `mlp`: a v-predicting MLP for vector data (the Gaussian mixtures): the embedded log-SNR is
//! added to the input projection, then four SiLU layers of the chosen width.

use dfdx::nn::modules::{Linear, Repeated};
use dfdx::nn::{ModuleVisitor, TensorCollection};
use dfdx::prelude::*;
use fewstep::denoiser::{DenoiserSpec, NetCtx, Network};
use fewstep::network::{build_network, fixed_width, runtime_width, silu, VNet, FEATURES};
use fewstep::register_plugin;
use fewstep::tensor::Dev;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Data dimensions and widths are compile-time constants in dfdx; these pairs are built in.
const DIMS: [usize; 3] = [1, 2, 64];
const WIDTHS: [usize; 2] = [256, 512];

/// A v-prediction MLP; the data dimension comes from the dataset (1, 2 or 64).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Mlp {
    /// Hidden width: 256 or 512.
    #[serde(default = "default_width")]
    pub width: usize,
}

fn default_width() -> usize {
    256
}

#[derive(Clone, Debug)]
pub struct MlpNet<const D: usize, const W: usize, E: Dtype = f32, Dv: Storage<E> = Dev> {
    cond: Linear<FEATURES, W, E, Dv>,
    input: Linear<D, W, E, Dv>,
    hidden: Repeated<Linear<W, W, E, Dv>, 3>,
    out: Linear<W, D, E, Dv>,
}

impl<const D: usize, const W: usize> TensorCollection<f32, Dev> for MlpNet<D, W> {
    type To<E2: Dtype, D2: Device<E2>> = MlpNet<D, W, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, f32, Dev>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        v.visit_fields(
            (
                Self::module("cond", |s| &s.cond, |s| &mut s.cond),
                Self::module("input", |s| &s.input, |s| &mut s.input),
                Self::module("hidden", |s| &s.hidden, |s| &mut s.hidden),
                Self::module("out", |s| &s.out, |s| &mut s.out),
            ),
            |(cond, input, hidden, out)| MlpNet {
                cond,
                input,
                hidden,
                out,
            },
        )
    }
}

impl<const D: usize, const W: usize> VNet for MlpNet<D, W> {
    fn v<T: Tape<f32, Dev>>(
        &self,
        z: Tensor<(usize, usize), f32, Dev, T>,
        cond: Tensor<(usize, Const<FEATURES>), f32, Dev>,
    ) -> Tensor<(usize, usize), f32, Dev, T> {
        // One tape runs through every parameter use: cond first, then z.
        let (z, tape) = z.split_tape();
        let (c, tape) = self.cond.forward(cond.put_tape(tape)).split_tape();
        let z = fixed_width::<D, _>(z.put_tape(tape));
        let mut h = silu(self.input.forward(z) + c);
        for layer in &self.hidden.modules {
            h = silu(layer.forward(h));
        }
        runtime_width(self.out.forward(h))
    }
}

impl Mlp {
    fn net<const D: usize, const W: usize>(
        &self,
        ctx: &NetCtx,
    ) -> anyhow::Result<Box<dyn Network>> {
        let about = format!("mlp dim {D} width {W}");
        // A zero output layer starts at v = 0, i.e. x_hat = alpha z.
        build_network::<MlpNet<D, W>>(ctx, D, about, |net| {
            net.out.weight.fill_with_zeros();
            net.out.bias.fill_with_zeros();
        })
    }
}

#[typetag::serde(name = "mlp")]
impl DenoiserSpec for Mlp {
    fn network(&self, ctx: &NetCtx) -> anyhow::Result<Box<dyn Network>> {
        let dim = ctx.row_shape.iter().product::<usize>();
        match (dim, self.width) {
            (1, 256) => self.net::<1, 256>(ctx),
            (1, 512) => self.net::<1, 512>(ctx),
            (2, 256) => self.net::<2, 256>(ctx),
            (2, 512) => self.net::<2, 512>(ctx),
            (64, 256) => self.net::<64, 256>(ctx),
            (64, 512) => self.net::<64, 512>(ctx),
            _ => anyhow::bail!(
                "mlp has no build for data dimension {dim} with width {}: dfdx fixes shapes at \
                 compile time, and the built-in ones are dimensions {DIMS:?} x widths {WIDTHS:?} \
                 (use `uvit` for images)",
                self.width
            ),
        }
    }
}

register_plugin!(
    DENOISER,
    "mlp",
    Mlp,
    "v-prediction MLP for vectors (dims 1, 2, 64; width 256 or 512), trained by `fewstep train`"
);
