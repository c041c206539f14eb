//! Procedural images of coloured shapes (filled in by the data work).

use super::builtin::BuiltSet;
use anyhow::{bail, Result};

pub fn make(size: usize, _n: usize, _seed: u64) -> Result<BuiltSet> {
    bail!("shapes{size} is not implemented yet")
}
