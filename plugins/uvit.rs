//! `uvit`: the paper's network family for images (U-ViT, Hoogeboom et al. 2023) from what dfdx
//! has: patchify by reshape, a linear patch embedding plus learned positions and the embedded
//! log-SNR, pre-norm transformer blocks with long skip connections from the first half to the
//! second, and a linear unpatchify. No convolutions: dfdx 0.13 has none on stable Rust. Every
//! size is a runtime number: the image shape from the dataset, the rest from the config.

use dfdx::prelude::*;
use fewstep::denoiser::{DenoiserSpec, NetCtx, Network};
use fewstep::network::{
    silu, Act, Attention, Dense, LayerNorm, Param, Params, Trainable, VNet, FEATURES,
};
use fewstep::register_plugin;
use fewstep::tensor::Dev;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A U-ViT for C x H x W images; a preset gives the sizes the fields below leave unset.
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct UVit {
    /// Preset: "small" (width 256, 4 heads, 5 blocks, MLP ratio 4, 64 patch tokens) or "tiny"
    /// (width 64, 2 heads, 3 blocks, MLP ratio 2, 16 tokens) for tests.
    #[serde(default)]
    pub size: Size,
    /// Patch side; it must divide the image's height and width [default: the preset's token
    /// count: side / 8 (small), side / 4 (tiny)].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<usize>,
    /// Token width; a multiple of `heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<usize>,
    /// Transformer blocks: depth / 2 before the middle one, as many after (long skips), odd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<usize>,
    /// Attention heads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<usize>,
    /// Hidden width of each block's MLP over the token width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_ratio: Option<usize>,
}

#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Tiny,
    #[default]
    Small,
}

/// The sizes of one network.
#[derive(Clone, Copy, Debug)]
struct Dims {
    channels: usize,
    height: usize,
    width_px: usize,
    patch: usize,
    width: usize,
    heads: usize,
    hidden: usize,
    /// Blocks before (and after) the middle one.
    half: usize,
}

impl Dims {
    fn tokens(&self) -> usize {
        (self.height / self.patch) * (self.width_px / self.patch)
    }

    fn patch_values(&self) -> usize {
        self.channels * self.patch * self.patch
    }
}

/// Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x)) with GELU.
#[derive(Clone, Debug)]
struct Block {
    ln1: LayerNorm,
    attn: Attention,
    ln2: LayerNorm,
    ff1: Dense,
    ff2: Dense,
}

type Rows<T> = Tensor<(usize, usize), f32, Dev, T>;

impl Block {
    fn new(dev: &Dev, d: &Dims, init: bool) -> Self {
        Block {
            ln1: LayerNorm::new(dev, d.width),
            attn: Attention::new(dev, d.width, d.heads, init),
            ln2: LayerNorm::new(dev, d.width),
            ff1: Dense::new(dev, d.width, d.hidden, init),
            ff2: Dense::new(dev, d.hidden, d.width, init),
        }
    }

    fn forward<T: Tape<f32, Dev>>(&self, x: Rows<T>, tokens: usize) -> Rows<T> {
        // Each residual is added by the fused op of the branch's last layer.
        let (x, tape) = x.split_tape();
        let ln = self.ln1.forward(x.clone().put_tape(tape));
        let x = self.attn.forward(ln, tokens, Some(x.retaped::<T>()));
        let (x, tape) = x.split_tape();
        let ln = self.ln2.forward(x.clone().put_tape(tape));
        let h = self.ff1.forward_act(ln, Act::Gelu, None);
        self.ff2
            .forward_act(h, Act::Identity, Some(x.retaped::<T>()))
    }

    fn each_param(&self, p: &str, f: &mut dyn FnMut(&str, &dyn Param)) {
        self.ln1.each_param(&format!("{p}.ln1"), f);
        self.attn.each_param(&format!("{p}.attn"), f);
        self.ln2.each_param(&format!("{p}.ln2"), f);
        self.ff1.each_param(&format!("{p}.ff1"), f);
        self.ff2.each_param(&format!("{p}.ff2"), f);
    }

    fn each_param_mut(&mut self, p: &str, f: &mut dyn FnMut(&str, &mut dyn Param)) {
        self.ln1.each_param_mut(&format!("{p}.ln1"), f);
        self.attn.each_param_mut(&format!("{p}.attn"), f);
        self.ln2.each_param_mut(&format!("{p}.ln2"), f);
        self.ff1.each_param_mut(&format!("{p}.ff1"), f);
        self.ff2.each_param_mut(&format!("{p}.ff2"), f);
    }
}

/// The network: tensor names as in earlier (compile-time) builds, so their checkpoints load.
#[derive(Clone, Debug)]
pub struct UVitNet {
    d: Dims,
    cond: (Dense, Dense),
    embed: Dense,
    pos: Tensor<(usize, usize), f32, Dev>,
    down: Vec<Block>,
    mid: Block,
    /// Projections of (h, skip), together a linear map of their concatenation, then a block.
    up: Vec<(Dense, Dense, Block)>,
    head: (LayerNorm, Dense),
}

impl UVitNet {
    /// Parameters drawn in the order of their names (or zeros without `init`); the output layer
    /// starts at zero, so v = 0 and x_hat = alpha z.
    fn new(dev: &Dev, d: Dims, init: bool) -> Self {
        let (w, n) = (d.width, d.tokens());
        let cond = (
            Dense::new(dev, FEATURES, w, init),
            Dense::new(dev, w, w, init),
        );
        let embed = Dense::new(dev, d.patch_values(), w, init);
        let mut pos = dev.zeros_like(&(n, w));
        if init {
            pos.fill_with_distr(rand_distr::Normal::new(0.0, 0.02).expect("valid std"));
        }
        let down = (0..d.half).map(|_| Block::new(dev, &d, init)).collect();
        let mid = Block::new(dev, &d, init);
        let up = (0..d.half)
            .map(|_| {
                let proj_h = Dense::new(dev, w, w, init);
                let proj_skip = Dense::new(dev, w, w, init);
                (proj_h, proj_skip, Block::new(dev, &d, init))
            })
            .collect();
        let out = Dense::new(dev, w, d.patch_values(), init).zeroed();
        UVitNet {
            d,
            cond,
            embed,
            pos,
            down,
            mid,
            up,
            head: (LayerNorm::new(dev, w), out),
        }
    }
}

impl Params for UVitNet {
    fn each_param(&self, f: &mut dyn FnMut(&str, &dyn Param)) {
        self.cond.0.each_param("cond.0", f);
        self.cond.1.each_param("cond.1", f);
        self.embed.each_param("embed", f);
        f("pos", &self.pos);
        for (i, b) in self.down.iter().enumerate() {
            b.each_param(&format!("down.{i}"), f);
        }
        self.mid.each_param("mid", f);
        for (i, (h, s, b)) in self.up.iter().enumerate() {
            h.each_param(&format!("up.{i}.0"), f);
            s.each_param(&format!("up.{i}.1"), f);
            b.each_param(&format!("up.{i}.2"), f);
        }
        self.head.0.each_param("head.0", f);
        self.head.1.each_param("head.1", f);
    }

    fn each_param_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn Param)) {
        self.cond.0.each_param_mut("cond.0", f);
        self.cond.1.each_param_mut("cond.1", f);
        self.embed.each_param_mut("embed", f);
        f("pos", &mut self.pos);
        for (i, b) in self.down.iter_mut().enumerate() {
            b.each_param_mut(&format!("down.{i}"), f);
        }
        self.mid.each_param_mut("mid", f);
        for (i, (h, s, b)) in self.up.iter_mut().enumerate() {
            h.each_param_mut(&format!("up.{i}.0"), f);
            s.each_param_mut(&format!("up.{i}.1"), f);
            b.each_param_mut(&format!("up.{i}.2"), f);
        }
        self.head.0.each_param_mut("head.0", f);
        self.head.1.each_param_mut("head.1", f);
    }
}

impl VNet for UVitNet {
    fn v<T: Tape<f32, Dev>>(
        &self,
        z: Tensor<(usize, usize), f32, Dev, T>,
        cond: Tensor<(usize, Const<FEATURES>), f32, Dev>,
    ) -> Tensor<(usize, usize), f32, Dev, T> {
        let d = &self.d;
        let (b, n, w) = (z.shape().0, d.tokens(), d.width);
        let (c, ps, gh, gw) = (
            d.channels,
            d.patch,
            d.height / d.patch,
            d.width_px / d.patch,
        );
        // One tape through every parameter use: the conditioning first, then the image.
        let (z, tape) = z.split_tape();
        let cond = cond.realize::<(usize, usize)>().put_tape(tape);
        // cond and the patches of z are the network's inputs: their own gradients are never read.
        let c_emb = self.cond.0.forward_input(cond, Act::Identity, None);
        let c_emb = self.cond.1.forward_act(silu(c_emb), Act::Identity, None);
        let (c_emb, tape) = c_emb.split_tape();
        // [b, C*H*W] -> [b, C, gh, ps, gw, ps] -> [b, gh, gw, C, ps, ps] -> [b*n, C*ps*ps]
        let patches = z
            .put_tape(tape)
            .reshape_like(&(b, c, gh, ps, gw, ps))
            .permute::<_, Axes6<0, 2, 4, 1, 3, 5>>()
            .reshape_like(&(b * n, d.patch_values()));
        let shape = (b, n, w);
        let h = self.embed.forward_input(patches, Act::Identity, None);
        let h = h.reshape_like(&shape)
            + self.pos.retaped::<T>().broadcast_like::<_, Axis<0>>(&shape)
            + c_emb.broadcast_like::<_, Axis<1>>(&shape);
        let mut h = h.reshape_like(&(b * n, w));
        let mut skips = Vec::with_capacity(d.half);
        for block in &self.down {
            let (x, tape) = block.forward(h, n).split_tape();
            skips.push(x.clone());
            h = x.put_tape(tape);
        }
        h = self.mid.forward(h, n);
        for ((proj_h, proj_skip, block), skip) in self.up.iter().zip(skips.into_iter().rev()) {
            let (x, tape) = h.split_tape();
            let s = proj_skip.forward_act(skip.put_tape(tape), Act::Identity, None);
            h = block.forward(
                proj_h.forward_act(x.retaped::<T>(), Act::Identity, Some(s)),
                n,
            );
        }
        let out = self
            .head
            .1
            .forward_act(self.head.0.forward(h), Act::Identity, None);
        // [b*n, C*ps*ps] -> [b, gh, gw, C, ps, ps] -> [b, C, gh, ps, gw, ps] -> [b, C*H*W]
        out.reshape_like(&(b, gh, gw, c, ps, ps))
            .permute::<_, Axes6<0, 3, 1, 4, 2, 5>>()
            .reshape_like(&(b, c * d.height * d.width_px))
    }
}

impl UVit {
    /// The sizes for images of `shape` (C, H, W): the preset's, with the config's overrides.
    fn dims(&self, shape: &[usize]) -> anyhow::Result<Dims> {
        let &[channels, height, width_px] = shape else {
            anyhow::bail!(
                "uvit takes images C x H x W; the data's rows have shape {shape:?} (use `mlp` \
                 for vectors)"
            );
        };
        let side = height.min(width_px);
        let (patch, width, depth, heads, ratio) = match self.size {
            Size::Small => ((side / 8).max(1), 256, 5, 4, 4),
            Size::Tiny => ((side / 4).max(1), 64, 3, 2, 2),
        };
        let patch = self.patch.unwrap_or(patch);
        let width = self.width.unwrap_or(width);
        let depth = self.depth.unwrap_or(depth);
        let heads = self.heads.unwrap_or(heads);
        let ratio = self.mlp_ratio.unwrap_or(ratio);
        let problems: Vec<String> = [
            (
                channels == 0 || height == 0 || width_px == 0,
                format!("the image shape {shape:?} has a zero size"),
            ),
            (
                patch == 0 || height % patch != 0 || width_px % patch != 0,
                format!("patch {patch} must divide the image's {height}x{width_px}"),
            ),
            (
                heads == 0 || !width.is_multiple_of(heads),
                format!("width {width} must be a positive multiple of heads {heads}"),
            ),
            (
                depth.is_multiple_of(2),
                format!("depth {depth} must be odd (blocks before and after a middle one)"),
            ),
            (ratio == 0, "mlp_ratio must be at least 1".to_string()),
        ]
        .into_iter()
        .filter_map(|(bad, msg)| bad.then_some(msg))
        .collect();
        if !problems.is_empty() {
            anyhow::bail!("uvit for rows of shape {shape:?}: {}", problems.join("; "));
        }
        Ok(Dims {
            channels,
            height,
            width_px,
            patch,
            width,
            heads,
            hidden: ratio * width,
            half: depth / 2,
        })
    }
}

#[typetag::serde(name = "uvit")]
impl DenoiserSpec for UVit {
    fn network(&self, ctx: &NetCtx) -> anyhow::Result<Box<dyn Network>> {
        let d = self.dims(&ctx.row_shape)?;
        let about = format!(
            "uvit {}x{}x{} patch {} width {} heads {} blocks {}",
            d.channels,
            d.height,
            d.width_px,
            d.patch,
            d.width,
            d.heads,
            2 * d.half + 1
        );
        let dim = d.channels * d.height * d.width_px;
        // About 12 width^2 weights per transformer block (attention 4, MLP 2 x 4).
        let blocks = 2 * d.half as u128 + 1;
        fewstep::network::check_size(&about, 12 * blocks * (d.width as u128).pow(2))?;
        let net = UVitNet::new(&ctx.dev, d, ctx.init);
        Ok(Box::new(Trainable::new(&ctx.dev, net, dim, about)))
    }
}

register_plugin!(
    DENOISER,
    "uvit",
    UVit,
    "v-prediction U-ViT for C x H x W images (patch, width, depth, heads from the config), \
     trained by `fewstep train`"
);
