//! The named generator behind every stream a seed must repeat in the future: built-in datasets,
//! the loader's order, the training steps' host noise and choices, calibration noise.
//!
//! rand's `StdRng` documents that its algorithm may change between rand versions; a named
//! generator does not. ChaCha12 is what rand 0.8's `StdRng` is, with the same seeding, so every
//! stream (and every seeded file written before the switch) stayed bit-identical;
//! `tests/files.rs` holds the two side by side. Noise drawn on the device (sampling's starting
//! noise and a network's initial weights) comes from dfdx's own generator instead.

use rand::SeedableRng;

/// The seeded host generator.
pub type SeededRng = rand_chacha::ChaCha12Rng;

/// A generator from a 64-bit seed (rand's `seed_from_u64` expansion, as `StdRng` had).
pub fn seeded(seed: u64) -> SeededRng {
    SeededRng::seed_from_u64(seed)
}
