//! Workflows: what each command does, as library calls on resolved configs that return their
//! results. The command line (`crate::cli`) parses flags into these calls and prints what they
//! return; the reproductions (`crate::reproduce`) chain them.
//!
//! - [`sample`]: a sampler over a grid, to an HDF5 file or as trajectories;
//! - [`train`], [`distill`]: configs resolved from defaults, a file and overrides, then the
//!   trainer;
//! - [`evaluate`]: samples scored against a reference set;
//! - [`calibrate`]: aDDIM's variance table measured on data;
//! - [`bench`]: throughput of training steps and of the loader.

pub mod bench;
pub mod calibrate;
pub mod distill;
pub mod evaluate;
pub mod sample;
pub mod train;
