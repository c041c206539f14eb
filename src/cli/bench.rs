//! `fewstep bench ...`: throughput measurements outside criterion (whole commands, big batches).

use crate::cli::train::DEFAULTS;
use crate::config::ConfigBuilder;
use crate::denoiser::NetCtx;
use crate::tensor::{normal, seeded_device};
use crate::train::{train_step, TrainConfig};
use anyhow::{bail, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Training steps per second of a network on random data (after warm-up steps).
    Train(TrainArgs),
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Network denoiser plugin (mlp, uvit, ...).
    #[arg(long, default_value = "mlp")]
    pub model: String,
    /// Row size of vector data (mlp).
    #[arg(long, conflicts_with = "shape")]
    pub dim: Option<usize>,
    /// Row shape of image data, e.g. 3,32,32 (uvit).
    #[arg(long, value_delimiter = ',')]
    pub shape: Option<Vec<usize>>,
    /// Rows per training step.
    #[arg(long, default_value_t = 1024)]
    pub batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 20)]
    pub steps: u64,
    /// Untimed steps first (allocator caches, first-touch).
    #[arg(long, default_value_t = 3)]
    pub warmup: u64,
    /// Training config (optimiser, objective, network fields) as for `fewstep train`.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Train(a) => train(a),
    }
}

fn train(a: TrainArgs) -> Result<()> {
    let row_shape = match (&a.dim, &a.shape) {
        (Some(d), None) => vec![*d],
        (None, Some(s)) => s.clone(),
        _ => bail!("give the data row shape: --dim D (vectors) or --shape C,H,W (images)"),
    };
    let cfg: TrainConfig = ConfigBuilder::from_defaults(DEFAULTS)?
        .file(a.config.as_deref())?
        .plugin("denoiser", Some(&a.model))
        .set("batch", Some(a.batch as i64))
        .set("data", Some("(random rows)"))
        .build()?;
    let dev = seeded_device(cfg.seed);
    let mut net = cfg.denoiser.network(&NetCtx {
        dev: dev.clone(),
        row_shape: row_shape.clone(),
        init: true,
    })?;
    let dim = row_shape.iter().product();
    let x = normal(&dev, a.batch, dim);
    eprintln!(
        "{} on rows {row_shape:?}, batch {}",
        net.describe(),
        a.batch
    );
    for step in 0..a.warmup {
        train_step(&cfg, &dev, net.as_mut(), None, &x, step)?;
    }
    let t0 = Instant::now();
    for step in a.warmup..a.warmup + a.steps {
        train_step(&cfg, &dev, net.as_mut(), None, &x, step)?;
    }
    let s = t0.elapsed().as_secs_f64();
    let rate = a.steps as f64 / s;
    println!(
        "{:.2} steps/s ({:.1} ms/step, {:.0} samples/s); peak RSS {}",
        rate,
        1e3 / rate,
        rate * a.batch as f64,
        peak_rss().unwrap_or_else(|| "unknown".into())
    );
    // One JSON line for scripts (scripts/gpu-measure.sh collects lines starting with `{`).
    println!(
        "{}",
        serde_json::json!({
            "name": format!("fewstep-{}", a.model),
            "row_shape": row_shape,
            "batch": a.batch,
            "steps_per_s": rate,
            "ms_per_step": 1e3 / rate,
            "device": if cfg!(feature = "cuda") { "cuda" } else { "cpu" },
        })
    );
    Ok(())
}

/// Peak resident memory of this process (Linux `VmHWM`).
fn peak_rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.trim_start_matches("VmHWM:").trim().to_string())
}
