//! A network's tensors as named host tensors ([`StateDict`]) and back, for checkpoints.

use crate::tensor::{Dev, DevErr, HostTensor, StateDict};
use dfdx::nn::{TensorOptions, TensorVisitor, ViewTensorMut, ViewTensorName, ViewTensorRef};
use dfdx::prelude::*;

/// Builds every tensor as zeros (no draws from the device's generator).
pub(super) struct ZeroBuild<'a>(pub(super) &'a Dev);

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

/// Copies tensors to the host under `<prefix>.<path>`.
pub(super) struct Export<'a> {
    pub(super) prefix: &'a str,
    pub(super) out: &'a mut StateDict,
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
pub(super) struct Import<'a> {
    pub(super) prefix: &'a str,
    pub(super) state: &'a StateDict,
    pub(super) problems: &'a mut Vec<String>,
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
