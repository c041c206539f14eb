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
pub mod dpm_solver_pp;
pub mod euler_ancestral;
pub mod heun;
pub mod lms;
pub mod noise_ddim;
pub mod unipc;

// Denoisers
pub mod gmm;
pub mod mlp;
pub mod uvit;

// Objectives
pub mod diffusion;
pub mod multistep_consistency;
pub mod progressive;
