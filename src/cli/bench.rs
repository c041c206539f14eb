//! `fewstep bench ...`: throughput measurements outside criterion (whole commands, big batches).

use crate::cli::train::DEFAULTS;
use crate::config::ConfigBuilder;
use crate::data::{Loader, LoaderConfig};
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
    /// Loader throughput on a dataset file, beside a plain sequential read of the same file.
    ///
    /// Times `--epochs` epochs of shuffled batches (reported one by one: the first reads the
    /// file from disk when it is not in the page cache), then a sequential `read` of the whole
    /// file for reference. Example: `fewstep bench loader data/shapes32.h5 --batch 256`.
    Loader(LoaderArgs),
}

#[derive(clap::Args, Debug)]
pub struct LoaderArgs {
    /// Dataset file (HDF5 with `/data`).
    pub file: PathBuf,
    /// Rows per batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Epochs to time.
    #[arg(long, default_value_t = 3)]
    pub epochs: u64,
    /// Batch threads (default: cores, at most 4).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Read windows with pread instead of mapping the file.
    #[arg(long)]
    pub pread: bool,
    /// Stream even a small file instead of holding it in memory.
    #[arg(long)]
    pub stream: bool,
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
        BenchCmd::Loader(a) => loader(a),
    }
}

fn loader(a: LoaderArgs) -> Result<()> {
    let defaults = LoaderConfig::new(a.batch, 0);
    let cfg = LoaderConfig {
        workers: a.workers.unwrap_or(defaults.workers),
        map_file: !a.pread,
        in_memory_max_bytes: if a.stream {
            0
        } else {
            defaults.in_memory_max_bytes
        },
        ..defaults
    };
    let mut l = Loader::open(&a.file, cfg.clone())?;
    let how = match (l.in_memory(), l.is_mapped()) {
        (true, _) => "held in memory",
        (false, true) => "mapped",
        (false, false) => "read in windows",
    };
    eprintln!(
        "{}: {} rows of {:?} ({how}), batch {}, {} batch threads",
        a.file.display(),
        l.len(),
        l.row_shape(),
        a.batch,
        cfg.workers
    );
    let per_epoch = (l.len() / a.batch).max(1);
    let epoch_bytes = (per_epoch * a.batch * l.row_bytes()) as u64;
    let mut rates = Vec::new();
    for epoch in 0..a.epochs {
        let t0 = Instant::now();
        for _ in 0..per_epoch {
            let b = l.next_batch()?;
            l.recycle(b);
        }
        let rate = epoch_bytes as f64 / t0.elapsed().as_secs_f64() / MIB;
        println!("epoch {epoch}: loader {rate:.0} MiB/s");
        rates.push(rate);
    }
    let t0 = Instant::now();
    let read = raw_read(&a.file)?;
    let raw = read as f64 / t0.elapsed().as_secs_f64() / MIB;
    let best = rates.iter().cloned().fold(0.0, f64::max);
    println!(
        "sequential read {raw:.0} MiB/s; best loader epoch {best:.0} MiB/s = {:.0}% of it",
        100.0 * best / raw
    );
    println!(
        "{}",
        serde_json::json!({
            "name": "loader",
            "file": a.file,
            "mode": how,
            "loader_mib_per_s": rates,
            "raw_read_mib_per_s": raw,
        })
    );
    Ok(())
}

const MIB: f64 = (1u64 << 20) as f64;

/// Reads the whole file sequentially in 1 MiB pieces (the baseline of loader throughput, also
/// in `benches/loader.rs`); returns the bytes read.
pub fn raw_read(path: &std::path::Path) -> Result<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(total),
            k => total += k as u64,
        }
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
