//! The tensor types every plugin shares: a batch of flattened samples `[batch, dim]` on dfdx's
//! `AutoDevice` (CPU by default, CUDA with the `cuda` feature), and per-row coefficients.

use crate::data::BatchValues;
use dfdx::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The device every tensor lives on: `Cpu` by default, `Cuda` with the `cuda` feature.
pub type Dev = AutoDevice;
/// A batch of flattened samples, `[batch, dim]`.
pub type Batch = Tensor<(usize, usize), f32, Dev>;
/// One value per row of a batch, `[batch]`.
pub type Rows = Tensor<(usize,), f32, Dev>;

/// The error of a fallible device operation.
pub type DevErr = <Dev as HasErr>::Err;

/// A device error as an `anyhow` error.
pub fn dev_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("device error: {e:?}")
}

/// One tensor on the host: its shape and row-major values (checkpoints, network state).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Named host tensors, sorted by name.
pub type StateDict = BTreeMap<String, HostTensor>;

/// A device seeded for reproducible noise: same seed, same samples on CPU.
pub fn seeded_device(seed: u64) -> Dev {
    Dev::seed_from_u64(seed)
}

/// A coefficient that multiplies a batch: either one number for every row (samplers, where the
/// whole batch sits at one time) or one number per row (training objectives, where each example
/// has its own time). Scalars are kept in f64 so step coefficients can be formed in f64 first.
#[derive(Clone, Debug)]
pub enum Coef {
    Scalar(f64),
    Rows(RowCoef),
}

/// Per-row coefficients as f32 on the device, with the same values kept on the host: host-side
/// uses (the networks' log-SNR features) then never read the device back, which on a GPU would
/// stall its queue at every network call.
#[derive(Clone, Debug)]
pub struct RowCoef {
    tensor: Rows,
    host: Arc<[f32]>,
}

impl RowCoef {
    /// The values on the device, `[batch]`.
    pub fn tensor(&self) -> &Rows {
        &self.tensor
    }

    /// The same values on the host.
    pub fn host(&self) -> &[f32] {
        &self.host
    }
}

impl Coef {
    /// Per-row coefficients from host values (computed in f64, stored as f32).
    pub fn from_host(dev: &Dev, values: &[f64]) -> Self {
        let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
        let tensor = dev.tensor_from_vec(v.clone(), (values.len(),));
        Coef::Rows(RowCoef {
            tensor,
            host: v.into(),
        })
    }

    /// One f64 per row of a batch of `batch` rows, read from the host copy.
    pub fn host_rows(&self, batch: usize) -> Vec<f64> {
        match self {
            Coef::Scalar(c) => vec![*c; batch],
            Coef::Rows(r) => r.host.iter().map(|&x| f64::from(x)).collect(),
        }
    }

    /// `self * x`, broadcasting per-row values along the feature axis.
    pub fn scale(&self, x: Batch) -> Batch {
        match self {
            Coef::Scalar(c) => x * (*c as f32),
            Coef::Rows(r) => {
                let shape = *x.shape();
                r.tensor.clone().broadcast_like::<_, Axis<1>>(&shape) * x
            }
        }
    }

    /// The coefficient as one f32 per row of a batch of `batch` rows, on the host.
    pub fn host_f32(&self, batch: usize) -> Vec<f32> {
        match self {
            Coef::Scalar(c) => vec![*c as f32; batch],
            Coef::Rows(r) => r.host.to_vec(),
        }
    }

    /// The coefficient as one value per row of a batch of `batch` rows.
    pub fn to_rows(&self, dev: &Dev, batch: usize) -> Rows {
        match self {
            Coef::Scalar(c) => dev.ones_like(&(batch,)) * (*c as f32),
            Coef::Rows(r) => r.tensor.clone(),
        }
    }
}

/// The values of `t` in row-major order, as one copy of its buffer: dfdx's `as_vec` walks a
/// strided iterator element by element (5% of an mlp step). A tensor that is not laid out
/// row-major (broadcast, permuted) is first made so by dfdx's reshape, which copies only then.
pub fn host_values<S: Shape>(t: &Tensor<S, f32, Dev>) -> Vec<f32> {
    let dense = t.clone().reshape_like(t.shape());
    let mut values = vec![0.0; t.shape().num_elements()];
    dense.copy_into(&mut values);
    values
}

/// Squared L2 norm of each row: `[batch, dim] -> [batch]`.
pub fn row_sq_norm(x: &Batch) -> Rows {
    x.clone().square().sum::<(usize,), Axis<1>>()
}

/// A batch from host data (row-major `[batch, dim]`).
pub fn batch_from_vec(dev: &Dev, data: Vec<f32>, batch: usize, dim: usize) -> Batch {
    assert_eq!(
        data.len(),
        batch * dim,
        "batch_from_vec: {} values for {batch}x{dim}",
        data.len()
    );
    dev.tensor_from_vec(data, (batch, dim))
}

/// A loader batch on the device as float32. uint8 rows go over as bytes and are scaled to
/// [-1, 1] there (a quarter of the bytes to move; the same values as
/// [`crate::data::source::u8_to_f32`], division then subtraction in float32).
pub fn batch_to_device(dev: &Dev, values: BatchValues, batch: usize, dim: usize) -> Batch {
    match values {
        BatchValues::F32(v) => batch_from_vec(dev, v, batch, dim),
        BatchValues::U8(v) => {
            assert_eq!(
                v.len(),
                batch * dim,
                "batch_to_device: {} bytes for {batch}x{dim}",
                v.len()
            );
            let bytes: Tensor<(usize, usize), u8, Dev> = dev.tensor_from_vec(v, (batch, dim));
            bytes.to_dtype::<f32>() / 127.5 - 1.0
        }
    }
}

/// Standard normal noise `[batch, dim]` from the device's seeded generator.
pub fn normal(dev: &Dev, batch: usize, dim: usize) -> Batch {
    dev.sample_normal_like(&(batch, dim))
}

/// `n` standard normal draws from a host generator: noise that must repeat from a seed (training
/// objectives, calibration) whatever the device.
pub fn host_normal(rng: &mut impl rand::Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.sample(rand_distr::StandardNormal))
        .collect()
}
