//! [`Dense`]: a fully connected layer whose sizes are runtime numbers, y = x W^T + b. It is
//! dfdx's `Linear` (same initialisation, same ops, so the same numbers) without the compile-time
//! sizes, so a network's shape can come from its config and its data.

pub use super::act::Act;
use super::params::Param;
use crate::tensor::Dev;
use dfdx::prelude::*;
use rand_distr::Uniform;

/// y = x W^T + b with W `[out, in]` and b `[out]`.
#[derive(Clone, Debug)]
pub struct Dense {
    pub weight: Tensor<(usize, usize), f32, Dev>,
    pub bias: Tensor<(usize,), f32, Dev>,
}

impl Dense {
    /// W and b drawn from U(-1/sqrt(in), 1/sqrt(in)) on the device's seeded generator, W first
    /// (as dfdx's `Linear`); with `init` false, zeros and no draws (weights about to be loaded).
    pub fn new(dev: &Dev, inputs: usize, outputs: usize, init: bool) -> Self {
        let mut weight = dev.zeros_like(&(outputs, inputs));
        let mut bias = dev.zeros_like(&(outputs,));
        if init {
            let b = 1.0 / (inputs as f32).sqrt();
            weight.fill_with_distr(Uniform::new(-b, b));
            bias.fill_with_distr(Uniform::new(-b, b));
        }
        Dense { weight, bias }
    }

    /// The layer with W and b set to zero: a v-network's output layer, so that it starts at
    /// v = 0 (x_hat = alpha z). Built with `new` first, so the generator moves on as for any layer.
    pub fn zeroed(mut self) -> Self {
        self.weight.fill_with_zeros();
        self.bias.fill_with_zeros();
        self
    }

    /// The sizes (inputs, outputs).
    pub fn sizes(&self) -> (usize, usize) {
        let (outputs, inputs) = *self.weight.shape();
        (inputs, outputs)
    }

    /// x W^T + b for each row of `x` (`[batch, in]`), recording on `x`'s tape.
    pub fn forward<T: Tape<f32, Dev>>(
        &self,
        x: Tensor<(usize, usize), f32, Dev, T>,
    ) -> Tensor<(usize, usize), f32, Dev, T> {
        let y = x.matmul(self.weight.retaped::<T>().permute::<_, Axes2<1, 0>>());
        let shape = *y.shape();
        y + self
            .bias
            .retaped::<T>()
            .broadcast_like::<_, Axis<0>>(&shape)
    }

    /// act(x W^T + b + extra): on the CPU one fused op ([`super::fused`]), elsewhere (CUDA)
    /// dfdx's ops ([`Self::forward_ops`]).
    pub fn forward_act<T: Tape<f32, Dev>>(
        &self,
        x: Tensor<(usize, usize), f32, Dev, T>,
        act: Act,
        extra: Option<Tensor<(usize, usize), f32, Dev, T>>,
    ) -> Tensor<(usize, usize), f32, Dev, T> {
        #[cfg(not(feature = "cuda"))]
        return super::fused::forward(&self.weight, &self.bias, x, act, extra, true);
        #[cfg(feature = "cuda")]
        return self.forward_ops(x, act, extra);
    }

    /// [`Self::forward_act`] for a layer whose `x` is an input of the network (the noisy data, the
    /// conditioning features), whose gradient nobody reads: the fused CPU op skips computing it
    /// (a product as large as the layer's forward pass). The gradients of W, b and `extra` are as
    /// from `forward_act`; on the CPU `x` gets no gradient buffer at all.
    pub fn forward_input<T: Tape<f32, Dev>>(
        &self,
        x: Tensor<(usize, usize), f32, Dev, T>,
        act: Act,
        extra: Option<Tensor<(usize, usize), f32, Dev, T>>,
    ) -> Tensor<(usize, usize), f32, Dev, T> {
        #[cfg(not(feature = "cuda"))]
        return super::fused::forward(&self.weight, &self.bias, x, act, extra, false);
        #[cfg(feature = "cuda")]
        return self.forward_ops(x, act, extra);
    }

    /// The same as [`Self::forward_act`] from dfdx's ops on any device: the path CUDA takes, and
    /// the reference the fused CPU op is tested against.
    pub fn forward_ops<T: Tape<f32, Dev>>(
        &self,
        x: Tensor<(usize, usize), f32, Dev, T>,
        act: Act,
        extra: Option<Tensor<(usize, usize), f32, Dev, T>>,
    ) -> Tensor<(usize, usize), f32, Dev, T> {
        let mut y = self.forward(x);
        if let Some(e) = extra {
            y = y + e;
        }
        match act {
            Act::Identity => y,
            Act::Silu => super::silu(y),
            Act::Gelu => y.fast_gelu(),
        }
    }

    /// `f(name, tensor)` for W and b, named `<prefix>.weight` and `<prefix>.bias`.
    pub fn each_param(&self, prefix: &str, f: &mut dyn FnMut(&str, &dyn Param)) {
        f(&format!("{prefix}.weight"), &self.weight);
        f(&format!("{prefix}.bias"), &self.bias);
    }

    /// The same, mutable.
    pub fn each_param_mut(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut dyn Param)) {
        f(&format!("{prefix}.weight"), &mut self.weight);
        f(&format!("{prefix}.bias"), &mut self.bias);
    }
}
