//! The built-in plugins, one file each. Adding a plugin = one file here plus one line below.

// Schedules
pub mod cosine;
pub mod interpolated_cosine;
pub mod karras;
pub mod linear;
pub mod shifted_cosine;

// Integrators
pub mod addim;
pub mod ddim;
pub mod ddpm;
pub mod heun;
pub mod noise_ddim;

// Shared by plugins: aDDIM's x_var estimate (`addim`, `noise-ddim`)
pub mod xvar;

// Denoisers
pub mod gmm;
pub mod mlp;
pub mod uvit;

// Objectives
pub mod diffusion;
pub mod multistep_cd;
pub mod multistep_ct;
pub mod progressive;

// Shared by objectives: Algorithm 1 (`multistep-ct`, `multistep-cd`) and its loss pieces
pub mod multistep;
