//! The optimiser's passes over a network's tensors: zeroed moments, the global gradient norm
//! and the AdamW update.

use crate::denoiser::AdamW;
use crate::tensor::{Dev, DevErr};
use dfdx::nn::{TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorRef};
use dfdx::prelude::*;

/// Fills every tensor with zeros (the AdamW moments at the start).
pub(super) struct Zero;

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

/// Sum of squared gradients on the device (one host read at the end).
pub(super) struct SumSquares<'a> {
    pub(super) grads: &'a mut Gradients<f32, Dev>,
    pub(super) acc: Option<Tensor<Rank0, f32, Dev>>,
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
pub(super) struct AdamWOp<'a> {
    pub(super) grads: &'a mut Gradients<f32, Dev>,
    pub(super) opt: AdamW,
    pub(super) t: i32,
    pub(super) grad_scale: f64,
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
