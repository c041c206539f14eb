//! `fewstep reproduce WHAT --preset P --out DIR`.

use crate::reproduce::{distill, figure1, samplers, FIGURE1, TABLE2, TABLE3, TABLE4};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to rerun.
    pub what: What,
    /// Preset size: `quick` (minutes on 2 CPU cores, mixtures with `mlp`), `hour` (table2/3/4 on
    /// gmm64 and ring8 at batch 1024, width 512, 2000 student iterations: about an hour per
    /// dataset on 2 CPU cores; run the three into one --out to share their runs), `paper` (the
    /// paper's hyper-parameters, for a GPU; shrink with --scale), `gpu` (table4 on shapes32 with
    /// `uvit`).
    #[arg(long, default_value = "quick")]
    pub preset: String,
    /// TOML file overriding preset fields (schemas/reproduce-*.schema.json).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Multiplies every run's training steps (and annealing / round lengths) by this factor
    /// (> 0, at most 1000).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true, value_parser = scale)]
    pub scale: f64,
    /// table2/table3/table4: repeat the table with this many seeds (the preset's `seed`, `seed + 1`,
    /// ...) and report mean +- standard deviation [default: the preset's `seeds`, 1].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub seeds: Option<u64>,
    /// table2/table3/table4: only these built-in datasets, comma-separated, instead of the
    /// preset's `datasets` (e.g. `--datasets ring8` runs an hour preset's ring8 half).
    #[arg(long, value_delimiter = ',')]
    pub datasets: Option<Vec<String>>,
    /// Output folder for tables, CSV, plots, samples and run folders (finished runs in it are
    /// reused, unfinished ones resumed).
    #[arg(long, default_value = "out/reproduce")]
    pub out: PathBuf,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// Every integrator against steps, exact Gaussian-mixture denoiser (paper Figure 3 / A.4).
    Samplers,
    /// Multistep CD with the teacher steps annealed 64 -> 1280 vs constant 128, 256, 1024.
    Table2,
    /// PD vs multistep CT vs multistep CD at 1, 2, 4, 8 student steps, teacher baseline.
    Table3,
    /// Multistep CD with a DDIM vs an aDDIM teacher at 1, 2, 4, 8, 16 student steps.
    Table4,
    /// 1-D two-modes trajectories of 1, 2, 4-step consistency models and DDIM (PNG).
    Figure1,
}

/// clap's parser for `--scale`: a number in (0, 1000] (NaN, infinities, 0 and negatives refused).
fn scale(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("expected a number, got {s:?}"))?;
    match distill::scale_problem(v) {
        None => Ok(v),
        Some(problem) => Err(problem),
    }
}

pub fn run(a: Args) -> Result<()> {
    // The folder is the reproduction's cache (runs reused or resumed, tables rewritten): it may
    // exist, but must be a folder fewstep can write in, checked before any work.
    crate::output::check_folder("--out", &a.out)?;
    let cfg = a.config.as_deref();
    let (md, files) = match a.what {
        What::Samplers => {
            if a.scale != 1.0 {
                anyhow::bail!(
                    "--scale applies to table2, table3, table4 and figure1, not samplers"
                );
            }
            if a.seeds.is_some() || a.datasets.is_some() {
                anyhow::bail!(
                    "--seeds and --datasets apply to table2, table3 and table4, not samplers"
                );
            }
            let c = samplers::load(&a.preset, cfg)?;
            let md = samplers::run(&c, &a.out)?;
            (
                md,
                "samplers.md, samplers.csv, samplers-fd.png, samplers-sw2.png".to_string(),
            )
        }
        What::Table2 | What::Table3 | What::Table4 => {
            let (name, presets) = match a.what {
                What::Table2 => ("table2", TABLE2),
                What::Table3 => ("table3", TABLE3),
                _ => ("table4", TABLE4),
            };
            let mut c = distill::load(name, presets, &a.preset, cfg, a.scale)?;
            if let Some(k) = a.seeds {
                c.seeds = k as usize;
            }
            if let Some(d) = a.datasets {
                if let Some(problem) = distill::dataset_problem(&d) {
                    anyhow::bail!("--datasets: {problem}");
                }
                c.datasets = d;
                distill::check_sizes(&c)?;
            }
            let md = distill::run(name, &c, &a.out)?;
            (md, format!("{name}.md, {name}.csv, {name}-fd.png"))
        }
        What::Figure1 => {
            if a.seeds.is_some() || a.datasets.is_some() {
                anyhow::bail!(
                    "--seeds and --datasets apply to table2, table3 and table4, not figure1"
                );
            }
            let c = figure1::load(FIGURE1, &a.preset, cfg, a.scale)?;
            let md = figure1::run(&c, &a.out)?;
            (
                md,
                "figure1.png, figure1.md, figure1.csv, figure1-fd.png".to_string(),
            )
        }
    };
    println!("{md}");
    eprintln!("wrote {files} to {}", a.out.display());
    Ok(())
}
