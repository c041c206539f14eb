//! `fewstep bench ...`: throughput measurements outside criterion (whole commands, big batches).

use crate::config::plugin_from_toml;
use crate::config::Overrides;
use crate::data::LoaderConfig;
use crate::integrator::Integrator;
use crate::run::bench::{loader_rate, peak_rss_kib, sample_rate, train_rate};
use crate::run::train::{builder, DEFAULTS};
use crate::train::TrainConfig;
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCmd {
    /// Training steps per second of a network on random data (after warm-up steps).
    Train(TrainArgs),
    /// Sampling speed: network evaluations per second of a freshly initialised network on one
    /// batch, e.g. `fewstep bench sample --model mlp --dim 64 --batch 20000 --integrator addim`.
    Sample(SampleArgs),
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
    #[arg(long, default_value_t = 256, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub batch: usize,
    /// Epochs to time.
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = super::count::<u64>)]
    pub epochs: u64,
    /// Batch threads (default: cores, at most 4).
    #[arg(long, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub workers: Option<usize>,
    /// Read windows with pread instead of mapping the file.
    #[arg(long)]
    pub pread: bool,
    /// Stream even a small file instead of holding it in memory.
    #[arg(long)]
    pub stream: bool,
}

/// The network a benchmark builds: plugin, data row shape, config.
#[derive(clap::Args, Debug)]
pub struct NetArgs {
    /// Network denoiser plugin (mlp, uvit, ...).
    #[arg(long, default_value = "mlp")]
    pub model: String,
    /// Row size of vector data (mlp).
    #[arg(long, conflicts_with = "shape", allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub dim: Option<usize>,
    /// Row shape of image data, e.g. 3,32,32 (uvit).
    #[arg(long, value_delimiter = ',')]
    pub shape: Option<Vec<usize>>,
    /// Training config (network fields, schedule, optimiser, objective) as for `fewstep train`.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl NetArgs {
    /// The row shape from `--dim` or `--shape`.
    fn row_shape(&self) -> Result<Vec<usize>> {
        match (self.dim, &self.shape) {
            (Some(d), None) if d > 0 => Ok(vec![d]),
            (None, Some(s)) if !s.is_empty() && s.iter().all(|&d| d > 0) => Ok(s.clone()),
            _ => bail!(
                "give the data row shape: --dim D (vectors) or --shape C,H,W (images), sizes >= 1"
            ),
        }
    }

    /// The training config: defaults and `--config` with the network and `batch`.
    fn config(&self, batch: usize) -> Result<TrainConfig> {
        if batch == 0 {
            bail!("--batch must be at least 1");
        }
        let row: usize = self.row_shape()?.iter().product();
        crate::limits::check_memory(
            &format!("--batch {batch} of rows of {row} values"),
            crate::limits::bytes_of(batch, 4) * row as u128,
        )?;
        let overrides = Overrides::default()
            .plugin("denoiser", Some(&self.model))
            .set("batch", Some(batch as i64))
            .set("data", Some("(random rows)"));
        builder(DEFAULTS, self.config.as_deref(), &overrides, false)?.build()
    }
}

#[derive(clap::Args, Debug)]
pub struct SampleArgs {
    #[command(flatten)]
    pub net: NetArgs,
    /// Rows sampled at once.
    #[arg(long, default_value_t = 20_000, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub batch: usize,
    /// Integrator (sampler) plugin, e.g. ddim or addim.
    #[arg(long, default_value = "ddim")]
    pub integrator: String,
    /// Sampling steps per timed run.
    #[arg(long, default_value_t = 8, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub steps: usize,
    /// Timed runs (after one untimed run).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub repeats: usize,
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub net: NetArgs,
    /// Rows per training step.
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true, value_parser = super::count::<usize>)]
    pub batch: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 20, allow_negative_numbers = true, value_parser = super::count::<u64>)]
    pub steps: u64,
    /// Untimed steps first (allocator caches, first-touch).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = super::count::<u64>)]
    pub warmup: u64,
}

pub fn run(cmd: BenchCmd) -> Result<()> {
    match cmd {
        BenchCmd::Train(a) => train(a),
        BenchCmd::Sample(a) => sample(a),
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
    let workers = cfg.workers;
    let r = loader_rate(&a.file, cfg, a.epochs)?;
    eprintln!(
        "{}: {} rows of {:?} ({}), batch {}, {workers} batch threads",
        a.file.display(),
        r.rows,
        r.row_shape,
        r.mode,
        a.batch,
    );
    for (epoch, rate) in r.epochs.iter().enumerate() {
        println!("epoch {epoch}: loader {rate:.0} MiB/s");
    }
    let best = r.epochs.iter().cloned().fold(0.0, f64::max);
    println!(
        "sequential read {:.0} MiB/s; best loader epoch {best:.0} MiB/s = {:.0}% of it",
        r.raw_read,
        100.0 * best / r.raw_read
    );
    println!(
        "{}",
        serde_json::json!({
            "name": "loader",
            "file": a.file,
            "mode": r.mode,
            "loader_mib_per_s": r.epochs,
            "raw_read_mib_per_s": r.raw_read,
        })
    );
    Ok(())
}

fn sample(a: SampleArgs) -> Result<()> {
    let row_shape = a.net.row_shape()?;
    if a.steps == 0 || a.repeats == 0 {
        bail!("--steps and --repeats must be at least 1");
    }
    let cfg = a.net.config(a.batch)?;
    let integrator: Box<dyn Integrator> = plugin_from_toml(&format!("name = {:?}", a.integrator))?;
    let r = sample_rate(
        &cfg,
        &row_shape,
        integrator.as_ref(),
        a.batch,
        a.steps,
        a.repeats,
    )?;
    eprintln!("{} on rows {row_shape:?}, batch {}", r.network, a.batch);
    println!(
        "{:.2} network evaluations/s ({:.0} rows/s at {} NFE per sample)",
        r.evaluations_per_s,
        r.evaluations_per_s * a.batch as f64,
        r.nfe
    );
    println!(
        "{}",
        serde_json::json!({
            "name": format!("fewstep-{}-sample", a.net.model),
            "integrator": a.integrator,
            "row_shape": row_shape,
            "batch": a.batch,
            "evaluations_per_s": r.evaluations_per_s,
            "nfe": r.nfe,
            "peak_rss_kb": peak_rss_kib(),
            "device": if cfg!(feature = "cuda") { "cuda" } else { "cpu" },
        })
    );
    Ok(())
}

fn train(a: TrainArgs) -> Result<()> {
    let row_shape = a.net.row_shape()?;
    let cfg = a.net.config(a.batch)?;
    // Under mpirun each rank steps on its share of the batch; rank 0 reports.
    let Some(r) = train_rate(crate::dist::world(), &cfg, &row_shape, a.warmup, a.steps)? else {
        return Ok(());
    };
    let rate = r.steps_per_s;
    let peak = peak_rss_kib();
    eprintln!(
        "{} on rows {row_shape:?}, batch {}; {} process(es) x {} thread(s)",
        r.network, a.batch, r.ranks, r.threads
    );
    println!(
        "{:.2} steps/s ({:.1} ms/step, {:.0} samples/s); peak RSS {}",
        rate,
        1e3 / rate,
        rate * a.batch as f64,
        peak.map_or("unknown".into(), |k| format!("{k} kB"))
    );
    if r.ranks > 1 {
        let list = |v: &[f64], f: &dyn Fn(f64) -> String| {
            v.iter().map(|&x| f(x)).collect::<Vec<_>>().join(", ")
        };
        println!(
            "all-reduce: {} bytes per step; share of each rank's step time in it (waiting for \
             the slowest rank included): {}; one all-reduce right after a barrier: {} ms",
            r.allreduce_bytes,
            list(&r.comm_share, &|s| format!("{s:.3}")),
            list(&r.allreduce_alone_s, &|s| format!("{:.3}", s * 1e3)),
        );
    }
    // One JSON line for scripts (scripts/gpu-measure.sh collects lines starting with `{`).
    println!(
        "{}",
        serde_json::json!({
            "name": format!("fewstep-{}", a.net.model),
            "row_shape": row_shape,
            "batch": a.batch,
            "params": r.params,
            "steps_per_s": rate,
            "ms_per_step": 1e3 / rate,
            "ranks": r.ranks,
            "threads": r.threads,
            "comm_share": r.comm_share,
            "allreduce_bytes": r.allreduce_bytes,
            "allreduce_alone_s": r.allreduce_alone_s,
            "peak_rss_kb": peak,
            "device": if cfg!(feature = "cuda") { "cuda" } else { "cpu" },
        })
    );
    Ok(())
}
