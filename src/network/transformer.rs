//! Transformer layers with runtime sizes, on token rows `[batch * tokens, width]`: layer norm
//! and multi-head self-attention (dfdx's `LayerNorm1D` and `MultiHeadAttention` computations,
//! without compile-time sizes), for networks shaped by their config.

use super::dense::{Act, Dense};
use super::params::Param;
use crate::tensor::Dev;
use dfdx::prelude::*;

type Rows<T> = Tensor<(usize, usize), f32, Dev, T>;

/// (x - mean) / sqrt(var + 1e-5) * gamma + beta over each row's `width` values.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    pub gamma: Tensor<(usize,), f32, Dev>,
    pub beta: Tensor<(usize,), f32, Dev>,
}

impl LayerNorm {
    /// gamma = 1, beta = 0 (no draws).
    pub fn new(dev: &Dev, width: usize) -> Self {
        LayerNorm {
            gamma: dev.ones_like(&(width,)),
            beta: dev.zeros_like(&(width,)),
        }
    }

    /// On the CPU one fused op ([`super::fused::layer_norm`]), elsewhere (CUDA) dfdx's ops
    /// ([`Self::forward_ops`]).
    pub fn forward<T: Tape<f32, Dev>>(&self, x: Rows<T>) -> Rows<T> {
        #[cfg(not(feature = "cuda"))]
        return super::fused::layer_norm(&self.gamma, &self.beta, x, 1e-5);
        #[cfg(feature = "cuda")]
        return self.forward_ops(x);
    }

    /// The same from dfdx's ops (`LayerNorm1D`'s), on any device.
    pub fn forward_ops<T: Tape<f32, Dev>>(&self, x: Rows<T>) -> Rows<T> {
        let shape = *x.shape();
        x.normalize::<Axis<1>>(1e-5)
            * self
                .gamma
                .retaped::<T>()
                .broadcast_like::<_, Axis<0>>(&shape)
            + self
                .beta
                .retaped::<T>()
                .broadcast_like::<_, Axis<0>>(&shape)
    }

    pub fn each_param(&self, prefix: &str, f: &mut dyn FnMut(&str, &dyn Param)) {
        f(&format!("{prefix}.gamma"), &self.gamma);
        f(&format!("{prefix}.beta"), &self.beta);
    }

    pub fn each_param_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn Param)) {
        f(&format!("{prefix}.gamma"), &mut self.gamma);
        f(&format!("{prefix}.beta"), &mut self.beta);
    }
}

/// Multi-head self-attention over the tokens of each example: softmax(q k^T / sqrt(d)) v per
/// head, then the output projection.
#[derive(Clone, Debug)]
pub struct Attention {
    pub heads: usize,
    pub w_q: Dense,
    pub w_k: Dense,
    pub w_v: Dense,
    pub w_o: Dense,
}

impl Attention {
    /// Four `width x width` projections drawn in the order q, k, v, o.
    pub fn new(dev: &Dev, width: usize, heads: usize, init: bool) -> Self {
        let dense = || Dense::new(dev, width, width, init);
        Attention {
            heads,
            w_q: dense(),
            w_k: dense(),
            w_v: dense(),
            w_o: dense(),
        }
    }

    /// Self-attention of `x` (`[batch * tokens, width]`) within each example's `tokens` rows,
    /// plus `residual` if given (added by the output projection's fused op, which saves a pass
    /// and a tensor over adding it after): on the CPU the heads are one fused op
    /// ([`super::fused::attention`]), elsewhere (CUDA) dfdx's ops ([`Self::forward_ops`]).
    pub fn forward<T: Tape<f32, Dev>>(
        &self,
        x: Rows<T>,
        tokens: usize,
        residual: Option<Rows<T>>,
    ) -> Rows<T> {
        #[cfg(not(feature = "cuda"))]
        {
            let (x, tape) = x.split_tape();
            let v = self
                .w_v
                .forward_act(x.clone().retaped::<T>(), Act::Identity, None);
            let k = self
                .w_k
                .forward_act(x.clone().retaped::<T>(), Act::Identity, None);
            let q = self.w_q.forward_act(x.put_tape(tape), Act::Identity, None);
            let out = super::fused::attention(q, k, v, tokens, self.heads);
            self.w_o.forward_act(out, Act::Identity, residual)
        }
        #[cfg(feature = "cuda")]
        self.forward_ops(x, tokens, residual)
    }

    /// The same from dfdx's ops (`MultiHeadAttention`'s), on any device.
    pub fn forward_ops<T: Tape<f32, Dev>>(
        &self,
        x: Rows<T>,
        tokens: usize,
        residual: Option<Rows<T>>,
    ) -> Rows<T> {
        let (rows, width) = *x.shape();
        let (b, h, d) = (rows / tokens, self.heads, width / self.heads);
        // The tape runs through q; k and v record on their own tapes, merged by the products.
        let (x, tape) = x.split_tape();
        let v = self
            .w_v
            .forward_act(x.clone().retaped::<T>(), Act::Identity, None);
        let v = v
            .reshape_like(&(b, tokens, h, d))
            .permute::<_, Axes4<0, 2, 1, 3>>();
        let k = self
            .w_k
            .forward_act(x.clone().retaped::<T>(), Act::Identity, None);
        let k = k
            .reshape_like(&(b, tokens, h, d))
            .permute::<_, Axes4<0, 2, 3, 1>>();
        let q = self.w_q.forward_act(x.put_tape(tape), Act::Identity, None);
        let q = q
            .reshape_like(&(b, tokens, h, d))
            .permute::<_, Axes4<0, 2, 1, 3>>();
        let weights = (q.matmul(k) * (1.0 / (d as f32).sqrt())).softmax::<Axis<3>>();
        let out = weights
            .matmul(v)
            .permute::<_, Axes4<0, 2, 1, 3>>()
            .reshape_like(&(rows, width));
        self.w_o.forward_act(out, Act::Identity, residual)
    }

    pub fn each_param(&self, prefix: &str, f: &mut dyn FnMut(&str, &dyn Param)) {
        for (name, l) in [
            ("w_q", &self.w_q),
            ("w_k", &self.w_k),
            ("w_v", &self.w_v),
            ("w_o", &self.w_o),
        ] {
            l.each_param(&format!("{prefix}.{name}"), f);
        }
    }

    pub fn each_param_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn Param)) {
        for (name, l) in [
            ("w_q", &mut self.w_q),
            ("w_k", &mut self.w_k),
            ("w_v", &mut self.w_v),
            ("w_o", &mut self.w_o),
        ] {
            l.each_param_mut(&format!("{prefix}.{name}"), f);
        }
    }
}
