//! `uvit`: the paper's network family for images (U-ViT, Hoogeboom et al. 2023) from what dfdx
//! has: patchify by reshape, a linear patch embedding plus learned positions and the embedded
//! log-SNR, pre-norm transformer blocks with long skip connections from the first half to the
//! second, and a linear unpatchify. No convolutions: dfdx 0.13 has none on stable Rust.

use dfdx::nn::modules::{LayerNorm1D, Linear, MultiHeadAttention, Repeated};
use dfdx::nn::{ModuleVisitor, TensorCollection, TensorOptions};
use dfdx::prelude::*;
use fewstep::denoiser::{DenoiserSpec, NetCtx, Network};
use fewstep::network::{build_network, silu, VNet, FEATURES};
use fewstep::register_plugin;
use fewstep::tensor::Dev;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A U-ViT; the image shape comes from the dataset (1x16x16, 3x16x16, 3x32x32 or 3x64x64).
#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct UVit {
    /// Preset: "small" (width 256, 4 heads, 2+1+2 blocks, 64 patch tokens) for any of the
    /// shapes, or "tiny" (width 64, 2 heads, 1+1+1 blocks, 16 tokens; 16x16 images) for tests.
    #[serde(default)]
    pub size: Size,
}

#[derive(Serialize, Deserialize, JsonSchema, Debug, Clone, Copy, Default, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    Tiny,
    #[default]
    Small,
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(if *self == Size::Tiny { "tiny" } else { "small" })
    }
}

/// Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x)) with GELU.
#[derive(Clone, Debug)]
pub struct Block<
    const W: usize,
    const H: usize,
    const F: usize,
    E: Dtype = f32,
    Dv: Storage<E> = Dev,
> {
    ln1: LayerNorm1D<W, E, Dv>,
    attn: MultiHeadAttention<W, H, W, W, E, Dv>,
    ln2: LayerNorm1D<W, E, Dv>,
    ff1: Linear<W, F, E, Dv>,
    ff2: Linear<F, W, E, Dv>,
}

impl<const W: usize, const H: usize, const F: usize> TensorCollection<f32, Dev> for Block<W, H, F> {
    type To<E2: Dtype, D2: Device<E2>> = Block<W, H, F, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, f32, Dev>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        v.visit_fields(
            (
                Self::module("ln1", |s| &s.ln1, |s| &mut s.ln1),
                Self::module("attn", |s| &s.attn, |s| &mut s.attn),
                Self::module("ln2", |s| &s.ln2, |s| &mut s.ln2),
                Self::module("ff1", |s| &s.ff1, |s| &mut s.ff1),
                Self::module("ff2", |s| &s.ff2, |s| &mut s.ff2),
            ),
            |(ln1, attn, ln2, ff1, ff2)| Block {
                ln1,
                attn,
                ln2,
                ff1,
                ff2,
            },
        )
    }
}

/// Projections of (h, skip) — together a Linear on their concatenation — then a block.
type UpBlock<const W: usize, const H: usize, const F: usize, E, Dv> = (
    Linear<W, W, E, Dv>,
    Linear<W, W, E, Dv>,
    Block<W, H, F, E, Dv>,
);

type Tokens<const N: usize, const W: usize, T> = Tensor<(usize, Const<N>, Const<W>), f32, Dev, T>;

impl<const W: usize, const H: usize, const F: usize> Block<W, H, F> {
    fn forward<const N: usize, T: Tape<f32, Dev>>(&self, x: Tokens<N, W, T>) -> Tokens<N, W, T> {
        let (x, tape) = x.split_tape();
        let x = self
            .attn
            .forward(self.ln1.forward(x.clone().put_tape(tape)))
            + x;
        let (x, tape) = x.split_tape();
        let h = self.ff1.forward(self.ln2.forward(x.clone().put_tape(tape)));
        self.ff2.forward(h.fast_gelu()) + x
    }
}

/// Images C x S x S in N = (S/PS)^2 patches of P = C PS^2 values; width W, H heads, MLP width
/// F, L blocks before and after the middle one.
#[derive(Clone, Debug)]
#[rustfmt::skip]
pub struct UVitNet<const C: usize, const S: usize, const PS: usize, const N: usize, const P: usize,
    const W: usize, const H: usize, const F: usize, const L: usize, E: Dtype = f32, Dv: Storage<E> = Dev>
{
    cond: (Linear<FEATURES, W, E, Dv>, Linear<W, W, E, Dv>),
    embed: Linear<P, W, E, Dv>,
    pos: Tensor<Rank2<N, W>, E, Dv>,
    down: Repeated<Block<W, H, F, E, Dv>, L>,
    mid: Block<W, H, F, E, Dv>,
    up: Repeated<UpBlock<W, H, F, E, Dv>, L>,
    head: (LayerNorm1D<W, E, Dv>, Linear<W, P, E, Dv>),
}

#[rustfmt::skip]
impl<const C: usize, const S: usize, const PS: usize, const N: usize, const P: usize,
    const W: usize, const H: usize, const F: usize, const L: usize>
    TensorCollection<f32, Dev> for UVitNet<C, S, PS, N, P, W, H, F, L>
{
    type To<E2: Dtype, D2: Device<E2>> = UVitNet<C, S, PS, N, P, W, H, F, L, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, f32, Dev>>(
        v: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        let small_normal = TensorOptions::reset_with(|t: &mut Tensor<Rank2<N, W>, f32, Dev>| {
            t.try_fill_with_distr(rand_distr::Normal::new(0.0, 0.02).expect("valid std"))
        });
        v.visit_fields(
            (
                Self::module("cond", |s| &s.cond, |s| &mut s.cond),
                Self::module("embed", |s| &s.embed, |s| &mut s.embed),
                Self::tensor("pos", |s| &s.pos, |s| &mut s.pos, small_normal),
                Self::module("down", |s| &s.down, |s| &mut s.down),
                Self::module("mid", |s| &s.mid, |s| &mut s.mid),
                (
                    Self::module("up", |s| &s.up, |s| &mut s.up),
                    Self::module("head", |s| &s.head, |s| &mut s.head),
                ),
            ),
            |(cond, embed, pos, down, mid, (up, head))| UVitNet { cond, embed, pos, down, mid, up, head },
        )
    }
}

#[rustfmt::skip]
impl<const C: usize, const S: usize, const PS: usize, const N: usize, const P: usize,
    const W: usize, const H: usize, const F: usize, const L: usize>
    VNet for UVitNet<C, S, PS, N, P, W, H, F, L>
{
    fn v<T: Tape<f32, Dev>>(
        &self,
        z: Tensor<(usize, usize), f32, Dev, T>,
        cond: Tensor<(usize, Const<FEATURES>), f32, Dev>,
    ) -> Tensor<(usize, usize), f32, Dev, T> {
        let (b, g) = (z.shape().0, S / PS);
        // One tape through every parameter use: the conditioning first, then the image.
        let (z, tape) = z.split_tape();
        let c = self.cond.1.forward(silu(self.cond.0.forward(cond.put_tape(tape))));
        let (c, tape) = c.split_tape();
        // [b, C*S*S] -> [b, C, g, PS, g, PS] -> [b, g, g, C, PS, PS] -> [b, N, P]
        let patches = z.put_tape(tape)
            .reshape_like(&(b, C, g, PS, g, PS))
            .permute::<_, Axes6<0, 2, 4, 1, 3, 5>>()
            .reshape_like(&(b, Const::<N>, Const::<P>));
        let shape = (b, Const::<N>, Const::<W>);
        let mut h = self.embed.forward(patches)
            + self.pos.retaped::<T>().broadcast_like(&shape)
            + c.broadcast_like::<_, Axis<1>>(&shape);
        let mut skips = Vec::with_capacity(L);
        for block in &self.down.modules {
            let (x, tape) = block.forward(h).split_tape();
            skips.push(x.clone());
            h = x.put_tape(tape);
        }
        h = self.mid.forward(h);
        for ((proj_h, proj_skip, block), skip) in self.up.modules.iter().zip(skips.into_iter().rev()) {
            let (x, tape) = h.split_tape();
            let (s, tape) = proj_skip.forward(skip.put_tape(tape)).split_tape();
            h = block.forward(proj_h.forward(x.put_tape(tape)) + s);
        }
        let out = self.head.1.forward(self.head.0.forward(h));
        // [b, N, P] -> [b, g, g, C, PS, PS] -> [b, C, g, PS, g, PS] -> [b, C*S*S]
        out.reshape_like(&(b, g, g, C, PS, PS))
            .permute::<_, Axes6<0, 3, 1, 4, 2, 5>>()
            .reshape_like(&(b, C * S * S))
    }
}

impl UVit {
    #[rustfmt::skip]
    fn net<const C: usize, const S: usize, const PS: usize, const N: usize, const P: usize,
        const W: usize, const H: usize, const F: usize, const L: usize>(
        &self,
        ctx: &NetCtx,
    ) -> anyhow::Result<Box<dyn Network>> {
        assert!(S % PS == 0 && N == (S / PS) * (S / PS) && P == C * PS * PS, "inconsistent preset");
        let about = format!("uvit {} {C}x{S}x{S} patch {PS} width {W} blocks {}", self.size, 2 * L + 1);
        // A zero output layer starts at v = 0, i.e. x_hat = alpha z.
        build_network::<UVitNet<C, S, PS, N, P, W, H, F, L>>(ctx, C * S * S, about, |net| {
            net.head.1.weight.fill_with_zeros();
            net.head.1.bias.fill_with_zeros();
        })
    }
}

#[typetag::serde(name = "uvit")]
impl DenoiserSpec for UVit {
    #[rustfmt::skip]
    fn network(&self, ctx: &NetCtx) -> anyhow::Result<Box<dyn Network>> {
        use Size::*;
        match (ctx.row_shape.as_slice(), self.size) {
            //                               C   S  PS   N    P    W  H     F  L
            ([1, 16, 16], Tiny) => self.net::<1, 16, 4, 16, 16, 64, 2, 128, 1>(ctx),
            ([3, 16, 16], Tiny) => self.net::<3, 16, 4, 16, 48, 64, 2, 128, 1>(ctx),
            ([1, 16, 16], Small) => self.net::<1, 16, 2, 64, 4, 256, 4, 1024, 2>(ctx),
            ([3, 16, 16], Small) => self.net::<3, 16, 2, 64, 12, 256, 4, 1024, 2>(ctx),
            ([3, 32, 32], Small) => self.net::<3, 32, 4, 64, 48, 256, 4, 1024, 2>(ctx),
            ([3, 64, 64], Small) => self.net::<3, 64, 8, 64, 192, 256, 4, 1024, 2>(ctx),
            (shape, size) => anyhow::bail!(
                "uvit has no {size} preset for rows of shape {shape:?}: dfdx fixes shapes at \
                 compile time, and the built-in presets are small for 1x16x16, 3x16x16, 3x32x32, \
                 3x64x64 and tiny for 1x16x16, 3x16x16 (use `mlp` for vectors)"
            ),
        }
    }
}

register_plugin!(
    DENOISER,
    "uvit",
    UVit,
    "v-prediction U-ViT for images (1x16x16, 3x16x16, 3x32x32, 3x64x64), trained by `fewstep train`"
);
