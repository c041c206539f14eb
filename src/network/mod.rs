//! Trainable network denoisers: the one generic wrapper that turns any dfdx module predicting v
//! into a [`Network`](crate::denoiser::Network) (a student with an optimiser, an EMA copy and
//! checkpoint state).
//!
//! A network plugin defines only its dfdx module type (a `TensorCollection`) and its forward
//! pass ([`VNet::v`]); parameter counting, AdamW, gradient norms, the EMA and named state for
//! checkpoints are written once here, as visitors over the module's tensors:
//! - [`vnet`]: the v-parametrisation and the log-SNR embedding every network shares;
//! - [`dense`]: a fully connected layer with runtime sizes (networks shaped by their config);
//! - [`trainable`]: the wrapper ([`Trainable`]) and [`build_network`];
//! - [`params`]: a network's tensors by name, copied to and from flat host vectors;
//! - `optimiser`: AdamW, the EMA and the gradient norm, one parallel pass each over those vectors.

mod act;
pub mod dense;
#[cfg(not(feature = "cuda"))]
mod fused;
mod optimiser;
pub mod params;
pub mod trainable;
pub mod transformer;
pub mod vnet;

pub use dense::{Act, Dense};
pub use params::{Param, Params};
pub use trainable::{build_network, Trainable};
pub use transformer::{Attention, LayerNorm};
pub use vnet::{
    fixed_width, logsnr_features, runtime_width, silu, VModel, VNet, FEATURES, LOGSNR_CLIP,
};
