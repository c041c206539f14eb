//! `mlp`: a v-predicting MLP for vector data of any dimension: the embedded log-SNR is added to
//! the input projection, then SiLU layers of the chosen width; the sizes are runtime numbers
//! (the data dimension from the dataset, width and depth from the config).

use dfdx::prelude::*;
use fewstep::config::at_least_one;
use fewstep::denoiser::{DenoiserSpec, NetCtx, Network};
use fewstep::network::{Act, Dense, Param, Params, Trainable, VNet, FEATURES};
use fewstep::register_plugin;
use fewstep::tensor::Dev;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A v-prediction MLP; the data dimension comes from the dataset.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Mlp {
    /// Hidden width.
    #[serde(default = "default_width", deserialize_with = "at_least_one")]
    pub width: usize,
    /// SiLU layers: the input projection, then `depth - 1` hidden layers of `width`.
    #[serde(default = "default_depth", deserialize_with = "at_least_one")]
    pub depth: usize,
}

fn default_width() -> usize {
    256
}

fn default_depth() -> usize {
    4
}

/// The layers: `cond` embeds the log-SNR features, `input` projects z, `hidden` and `out`.
#[derive(Clone, Debug)]
pub struct MlpNet {
    cond: Dense,
    input: Dense,
    hidden: Vec<Dense>,
    out: Dense,
}

impl MlpNet {
    /// Layers drawn in the order cond, input, hidden, out (or zeros without `init`); the output
    /// layer starts at zero, so v = 0 and x_hat = alpha z.
    pub fn new(dev: &Dev, dim: usize, width: usize, depth: usize, init: bool) -> Self {
        let cond = Dense::new(dev, FEATURES, width, init);
        let input = Dense::new(dev, dim, width, init);
        let hidden = (1..depth)
            .map(|_| Dense::new(dev, width, width, init))
            .collect();
        let out = Dense::new(dev, width, dim, init).zeroed();
        MlpNet {
            cond,
            input,
            hidden,
            out,
        }
    }

    fn layers(&self) -> impl Iterator<Item = (String, &Dense)> {
        let hidden = self.hidden.iter().enumerate();
        [
            ("cond".to_string(), &self.cond),
            ("input".into(), &self.input),
        ]
        .into_iter()
        .chain(hidden.map(|(i, l)| (format!("hidden.{i}"), l)))
        .chain([("out".into(), &self.out)])
    }
}

impl Params for MlpNet {
    fn each_param(&self, f: &mut dyn FnMut(&str, &dyn Param)) {
        for (name, layer) in self.layers() {
            layer.each_param(&name, f);
        }
    }

    fn each_param_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn Param)) {
        self.cond.each_param_mut("cond", f);
        self.input.each_param_mut("input", f);
        for (i, layer) in self.hidden.iter_mut().enumerate() {
            layer.each_param_mut(&format!("hidden.{i}"), f);
        }
        self.out.each_param_mut("out", f);
    }
}

impl VNet for MlpNet {
    fn v<T: Tape<f32, Dev>>(
        &self,
        z: Tensor<(usize, usize), f32, Dev, T>,
        cond: Tensor<(usize, Const<FEATURES>), f32, Dev>,
    ) -> Tensor<(usize, usize), f32, Dev, T> {
        // One tape runs through every parameter use: cond first, then z.
        let (z, tape) = z.split_tape();
        let cond = cond.realize::<(usize, usize)>().put_tape(tape);
        // cond and z are the network's inputs: their own gradients are never read.
        let c = self.cond.forward_input(cond, Act::Identity, None);
        let mut h = self
            .input
            .forward_input(z.put_tape(T::default()), Act::Silu, Some(c));
        for layer in &self.hidden {
            h = layer.forward_act(h, Act::Silu, None);
        }
        self.out.forward_act(h, Act::Identity, None)
    }
}

#[typetag::serde(name = "mlp")]
impl DenoiserSpec for Mlp {
    fn network(&self, ctx: &NetCtx) -> anyhow::Result<Box<dyn Network>> {
        let dim = ctx.row_shape.iter().product::<usize>();
        // Weight matrices: conditioning and input projections, depth - 1 hidden layers, output.
        let (w, d) = (self.width as u128, dim as u128);
        let params = w * (FEATURES as u128 + 2 * d) + (self.depth as u128 - 1) * w * w;
        fewstep::network::check_size(&format!("mlp width {}", self.width), params)?;
        let net = MlpNet::new(&ctx.dev, dim, self.width, self.depth, ctx.init);
        let mut about = format!("mlp dim {dim} width {}", self.width);
        if self.depth != default_depth() {
            about += &format!(" depth {}", self.depth);
        }
        Ok(Box::new(Trainable::new(&ctx.dev, net, dim, about)))
    }
}

register_plugin!(
    DENOISER,
    "mlp",
    Mlp,
    "v-prediction MLP for vectors of any dimension (width, depth from the config), trained by \
     `fewstep train`"
);
