//! fewstep: few-step diffusion sampling and distillation.
//!
//! The core defines four plugin traits — [`schedule::Schedule`], [`integrator::Integrator`],
//! [`denoiser::DenoiserSpec`]/[`denoiser::Denoiser`] and [`objective::DistillObjective`] — and
//! never names a concrete plugin. Plugins live under `plugins/`, one file each, and register
//! themselves with `typetag` (config by `name`) and [`register_plugin!`] (listing and schemas).

// Plugins are written against `fewstep::...` paths, exactly as in an out-of-tree plugin crate.
extern crate self as fewstep;

pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod denoiser;
pub mod dist;
pub mod integrator;
pub mod interrupt;
pub mod limits;
pub mod metrics;
pub mod network;
pub mod objective;
pub mod output;
pub mod plot;
pub mod progress;
pub mod registry;
pub mod report;
pub mod reproduce;
pub mod run;
pub mod sampling;
pub mod schedule;
pub mod schema;
pub mod seed;
pub mod tensor;
pub mod train;

/// The built-in plugins (schedules, integrators, denoisers, objectives).
#[path = "../plugins/mod.rs"]
pub mod plugins;

// Re-exported for `register_plugin!` in plugin crates.
pub use inventory;
pub use schemars;
