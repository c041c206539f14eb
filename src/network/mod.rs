//! Trainable network denoisers: the one generic wrapper that turns any network predicting v into
//! a [`Network`](crate::denoiser::Network) (a student with an optimiser, an EMA copy and
//! checkpoint state), and the runtime-sized layers networks are built from.
//!
//! A network plugin defines only its layers, their tensors by name ([`Params`]) and its forward
//! pass ([`VNet::v`]); parameter counting, AdamW, gradient norms, the EMA and named state for
//! checkpoints are written once here:
//! - [`vnet`]: the v-parametrisation and the log-SNR embedding every network shares;
//! - [`dense`], [`transformer`]: layers with runtime sizes (networks shaped by their config and
//!   data), one fused op each on the CPU (`fused`, `act`);
//! - [`trainable`]: the wrapper ([`Trainable`]);
//! - [`params`]: a network's tensors by name, copied to and from flat host vectors;
//! - `optimiser`: AdamW, the EMA and the gradient norm, one parallel pass each over those vectors.

mod act;
pub mod dense;
#[cfg(not(feature = "cuda"))]
mod fused;
mod optimiser;
pub mod params;
mod simd;
pub mod trainable;
pub mod transformer;
pub mod vnet;

pub use dense::{Act, Dense};

/// Refuses a network of `params` parameters (`about` names it) whose weights alone (f32) the
/// machine's memory cannot hold, before any is allocated: the allocation would abort the process.
pub fn check_size(about: &str, params: u128) -> anyhow::Result<()> {
    crate::limits::check_memory(&format!("{about}: {params} parameters"), params * 4)
}
pub use params::{Param, Params};
pub use trainable::Trainable;
pub use transformer::{Attention, LayerNorm};
pub use vnet::{logsnr_features, silu, VModel, VNet, FEATURES, LOGSNR_CLIP};
