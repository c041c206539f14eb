//! `fewstep reproduce WHAT --preset P --out DIR`.

use crate::reproduce::samplers;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to rerun: `samplers` (Figure 3 / A.4 with the exact denoiser).
    pub what: What,
    /// Preset size: `quick` (a few minutes on 2 CPU cores).
    #[arg(long, default_value = "quick")]
    pub preset: String,
    /// TOML file overriding preset fields.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output folder for tables, CSV, plots and data.
    #[arg(long, default_value = "out/reproduce")]
    pub out: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Debug)]
pub enum What {
    /// Every integrator against steps, exact Gaussian-mixture denoiser (paper Figure 3 / A.4).
    Samplers,
}

pub fn run(a: Args) -> Result<()> {
    match a.what {
        What::Samplers => {
            let cfg = samplers::load(&a.preset, a.config.as_deref())?;
            let md = samplers::run(&cfg, &a.out)?;
            println!("{md}");
            eprintln!(
                "wrote samplers.md, samplers.csv, samplers-fd.png, samplers-sw2.png to {}",
                a.out.display()
            );
        }
    }
    Ok(())
}
