//! `fewstep data ...`: make built-in sets, import, inspect.

use crate::data::builtin::{make_set, write_set, SETS};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum DataCmd {
    /// Write a built-in dataset (mixtures with their exact parameters, or procedural images).
    Make(MakeArgs),
}

#[derive(clap::Args, Debug)]
pub struct MakeArgs {
    /// Built-in set: two-modes, ring8, gmm64, shapes16, shapes32.
    pub name: String,
    /// Number of rows (samples) to draw.
    #[arg(long, default_value_t = 100_000)]
    pub n: usize,
    /// Seed of the draw (the same seed gives the same set).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output HDF5 file: `/data`, plus `/mixture` (exact parameters) for mixture sets.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(cmd: DataCmd) -> Result<()> {
    match cmd {
        DataCmd::Make(a) => make(a),
    }
}

fn make(a: MakeArgs) -> Result<()> {
    let set = make_set(&a.name, a.n, a.seed)?;
    let about = SETS
        .iter()
        .find(|s| s.0 == a.name)
        .map(|s| s.1)
        .unwrap_or_default();
    write_set(
        &a.out,
        &set,
        &format!("fewstep data make {} --n {} --seed {}", a.name, a.n, a.seed),
    )?;
    eprintln!(
        "wrote {} ({about}): /data {:?} to {}",
        a.name,
        set.data.shape,
        a.out.display()
    );
    Ok(())
}
