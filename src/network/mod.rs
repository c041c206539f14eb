//! Trainable network denoisers: the one generic wrapper that turns any dfdx module predicting v
//! into a [`Network`](crate::denoiser::Network) (a student with an optimiser, an EMA copy and
//! checkpoint state).
//!
//! A network plugin defines only its dfdx module type (a `TensorCollection`) and its forward
//! pass ([`VNet::v`]); parameter counting, AdamW, gradient norms, the EMA and named state for
//! checkpoints are written once here, as visitors over the module's tensors:
//! - [`vnet`]: the v-parametrisation and the log-SNR embedding every network shares;
//! - [`trainable`]: the wrapper ([`Trainable`]) and [`build_network`];
//! - `optimiser`: AdamW, gradient norm; `state`: host copies of the tensors.

mod optimiser;
mod state;
pub mod trainable;
pub mod vnet;

pub use trainable::{build_network, Trainable};
pub use vnet::{
    fixed_width, logsnr_features, runtime_width, silu, VModel, VNet, FEATURES, LOGSNR_CLIP,
};
