//! Datasets in HDF5: `/data` `[N, ...]` (float32, float64, or uint8 images scaled to [-1, 1] on
//! read), optional `/labels` `[N]` (integers), and for Gaussian-mixture sets
//! `/mixture/{weights [K], means [K, D], stds [K]}` (float64). See `schemas/dataset.md`.

pub mod builtin;
pub mod h5;
pub mod import;
pub mod inspect;
pub mod loader;
pub mod mixture;
pub mod npy;
pub mod set;
pub mod source;
pub mod write;

pub use h5::{open_data, read_data, read_rows, write_data, Attrs, DataArray, DataFile};
pub use loader::{BatchValues, HostBatch, Loader, LoaderConfig};
pub use mixture::Mixture;
