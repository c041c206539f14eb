//! Datasets in HDF5: `/data` float32 `[N, ...]` (uint8 images are scaled to [-1, 1] on read), and
//! for Gaussian-mixture sets `/mixture/{weights [K], means [K, D], stds [K]}` (float64).
//! See `schemas/dataset.md`.

pub mod builtin;
pub mod h5;
pub mod loader;
pub mod mixture;
pub mod mixtures;
pub mod shapes;

pub use h5::{read_data, write_data, Attrs, DataArray};
pub use mixture::Mixture;
