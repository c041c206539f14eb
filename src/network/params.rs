//! A network's trainable tensors as the optimiser sees them: each one copied to and from the
//! host by name and shape, so AdamW, the EMA and the checkpoint state work on flat host vectors
//! whatever the tensors' (compile-time or runtime) shapes.

use crate::tensor::Dev;
use dfdx::prelude::*;

/// One trainable tensor, of any shape.
pub trait Param {
    fn dims(&self) -> Vec<usize>;
    /// Copies the values (row-major) into `out`.
    fn read(&self, out: &mut [f32]);
    /// Replaces the values with `src`.
    fn write(&mut self, src: &[f32]);
    /// Copies the tensor's gradient in `grads` into `out` (zeros where the loss did not reach it).
    fn grad(&self, grads: &mut Gradients<f32, Dev>, out: &mut [f32]);
}

impl<S: Shape> Param for Tensor<S, f32, Dev> {
    fn dims(&self) -> Vec<usize> {
        self.shape().concrete().into_iter().collect()
    }

    fn read(&self, out: &mut [f32]) {
        self.copy_into(out);
    }

    fn write(&mut self, src: &[f32]) {
        self.copy_from(src);
    }

    fn grad(&self, grads: &mut Gradients<f32, Dev>, out: &mut [f32]) {
        let buf = grads
            .get_or_alloc_mut(self)
            .expect("allocating a gradient buffer cannot fail on this device");
        // On the CPU the buffer is host memory: one copy. A device buffer goes through a tensor.
        #[cfg(not(feature = "cuda"))]
        out.copy_from_slice(buf);
        #[cfg(feature = "cuda")]
        {
            let _ = buf;
            grads.get(self).copy_into(out);
        }
    }
}

/// A network's trainable tensors, by name (`input.weight`, `hidden.0.bias`, ...), always in
/// the same order.
pub trait Params {
    fn each_param(&self, f: &mut dyn FnMut(&str, &dyn Param));
    fn each_param_mut(&mut self, f: &mut dyn FnMut(&str, &mut dyn Param));
}

/// Where each tensor of a [`Params`] lives in a flat vector: names, shapes and offsets, in the
/// network's order.
#[derive(Clone, Debug, Default)]
pub struct Layout {
    pub entries: Vec<(String, Vec<usize>, std::ops::Range<usize>)>,
}

impl Layout {
    pub fn of(net: &dyn Params) -> Self {
        let mut entries = Vec::new();
        let mut at = 0;
        net.each_param(&mut |name, p| {
            let shape = p.dims();
            let len = shape.iter().product::<usize>();
            entries.push((name.to_string(), shape, at..at + len));
            at += len;
        });
        Layout { entries }
    }

    /// Values in all tensors.
    pub fn len(&self) -> usize {
        self.entries.last().map_or(0, |e| e.2.end)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
