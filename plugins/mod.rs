//! The built-in plugins, one file each. Adding a plugin = one file here plus one line below.

// Schedules
pub mod cosine;

// Integrators
pub mod ddim;

// Denoisers
pub mod gmm;
