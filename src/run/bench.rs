//! Throughput measurements outside criterion (`fewstep bench`): training steps per second of a
//! network on random rows, sampling speed (network evaluations per second), and the loader
//! beside a plain sequential read of the same file.

use crate::data::{Loader, LoaderConfig};
use crate::denoiser::NetCtx;
use crate::dist::{self, Collective};
use crate::integrator::{Integrator, RowNoise};
use crate::sampling;
use crate::schedule::uniform_grid;
use crate::tensor::{normal, seeded_device};
use crate::train::{train_step_on, TrainConfig};
use anyhow::Result;
use std::path::Path;
use std::time::{Duration, Instant};

/// What [`train_rate`] measured.
pub struct TrainRate {
    /// The network's description.
    pub network: String,
    /// Its trainable parameters.
    pub params: usize,
    pub steps_per_s: f64,
    /// Processes (MPI ranks) and this process's compute threads.
    pub ranks: usize,
    pub threads: usize,
    /// Each rank's share of its timed wall time spent in the gradient all-reduce (waiting for
    /// the slowest rank included), in rank order; empty for a single process.
    pub comm_share: Vec<f64>,
    /// Bytes each rank sends into the all-reduce per step (0 for a single process).
    pub allreduce_bytes: usize,
    /// Each rank's median time of one all-reduce of that buffer started right after a barrier
    /// (so with little waiting for other ranks in it), in seconds; empty for a single process.
    pub allreduce_alone_s: Vec<f64>,
}

/// Steps per second of `cfg`'s network and objective on one random batch of rows of
/// `row_shape` (no teacher), timed over `steps` steps after `warmup` untimed ones. Under an
/// MPI job (`world` of several ranks) each rank steps on its share of the batch, as `fewstep
/// train` does, and rank 0 gets every rank's all-reduce time (`None` on the other ranks).
pub fn train_rate(
    world: &dyn Collective,
    cfg: &TrainConfig,
    row_shape: &[usize],
    warmup: u64,
    steps: u64,
) -> Result<Option<TrainRate>> {
    let dev = seeded_device(cfg.seed);
    let mut net = cfg.denoiser.network(&NetCtx {
        dev: dev.clone(),
        row_shape: row_shape.to_vec(),
        init: true,
    })?;
    let rows = dist::share(cfg.batch, world.rank(), world.size());
    let x = normal(&dev, rows.len(), row_shape.iter().product());
    let network = net.describe();
    let params = net.num_params();
    for step in 0..warmup {
        train_step_on(world, cfg, &dev, net.as_mut(), None, &x, step)?;
    }
    world.barrier();
    let (t0, mut comm, mut bytes) = (Instant::now(), Duration::ZERO, 0);
    for step in warmup..warmup + steps {
        let stats = train_step_on(world, cfg, &dev, net.as_mut(), None, &x, step)?;
        (comm, bytes) = (comm + stats.comm, stats.comm_bytes);
    }
    let wall = t0.elapsed().as_secs_f64();
    let alone = allreduce_alone(world, bytes / 4, ALONE_REPEATS);
    let comm_share = world.gather_f64_to_root(&[comm.as_secs_f64() / wall]);
    let alone = world.gather_f64_to_root(&[alone]);
    let (Some(comm_share), Some(alone)) = (comm_share, alone) else {
        return Ok(None);
    };
    Ok(Some(TrainRate {
        network,
        params,
        steps_per_s: steps as f64 / wall,
        ranks: world.size(),
        threads: rayon::current_num_threads(),
        comm_share: if world.size() > 1 { comm_share } else { vec![] },
        allreduce_bytes: bytes,
        allreduce_alone_s: if world.size() > 1 { alone } else { vec![] },
    }))
}

/// All-reduces timed by [`allreduce_alone`].
const ALONE_REPEATS: usize = 21;

/// The median time of `repeats` all-reduces of `len` floats, each right after a barrier: the
/// cost of the communication itself, where a training step's all-reduce also holds the wait
/// for the slowest rank.
fn allreduce_alone(world: &dyn Collective, len: usize, repeats: usize) -> f64 {
    if world.size() == 1 {
        return 0.0;
    }
    let mut buf = vec![0f32; len];
    let mut times: Vec<f64> = (0..repeats)
        .map(|_| {
            world.barrier();
            let t0 = Instant::now();
            world.all_reduce_sum(&mut buf);
            t0.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[repeats / 2]
}

/// What [`sample_rate`] measured.
pub struct SampleRate {
    /// The network's description.
    pub network: String,
    /// Network evaluations of the whole batch per second.
    pub evaluations_per_s: f64,
    /// Denoiser evaluations per sample (the integrator's NFE).
    pub nfe: usize,
}

/// Sampling speed of `cfg`'s network (freshly initialised: the weights do not change the cost)
/// with `integrator` on `cfg`'s schedule: `steps` steps on a batch of `batch` rows of
/// `row_shape`, timed over `repeats` runs after one untimed run.
pub fn sample_rate(
    cfg: &TrainConfig,
    row_shape: &[usize],
    integrator: &dyn Integrator,
    batch: usize,
    steps: usize,
    repeats: usize,
) -> Result<SampleRate> {
    let dev = seeded_device(cfg.seed);
    let net = cfg.denoiser.network(&NetCtx {
        dev: dev.clone(),
        row_shape: row_shape.to_vec(),
        init: true,
    })?;
    let network = net.describe();
    let denoiser = net.into_ema();
    let z = normal(&dev, batch, row_shape.iter().product());
    let grid = uniform_grid(steps);
    let run = || {
        sampling::sample(
            &dev,
            cfg.schedule.as_ref(),
            integrator,
            denoiser.as_ref(),
            z.clone(),
            &grid,
            RowNoise {
                seed: cfg.seed,
                first_row: 0,
            },
        )
    };
    let nfe = run()?.nfe;
    let t0 = Instant::now();
    for _ in 0..repeats {
        run()?;
    }
    Ok(SampleRate {
        network,
        evaluations_per_s: (repeats * nfe) as f64 / t0.elapsed().as_secs_f64(),
        nfe,
    })
}

/// What [`loader_rate`] measured, in MiB/s.
pub struct LoaderRate {
    /// How the loader reads the file: held in memory, mapped, or read in windows.
    pub mode: &'static str,
    /// Rows in the file and the shape of one.
    pub rows: usize,
    pub row_shape: Vec<usize>,
    /// One rate per epoch.
    pub epochs: Vec<f64>,
    /// A sequential read of the whole file.
    pub raw_read: f64,
}

/// Times `epochs` epochs of the loader's shuffled batches on `file` (one rate each: the first
/// reads the file from disk when it is not in the page cache), then a sequential read.
pub fn loader_rate(file: &Path, cfg: LoaderConfig, epochs: u64) -> Result<LoaderRate> {
    let batch = cfg.batch;
    let mut l = Loader::open(file, cfg)?;
    let mode = match (l.in_memory(), l.is_mapped()) {
        (true, _) => "held in memory",
        (false, true) => "mapped",
        (false, false) => "read in windows",
    };
    let per_epoch = (l.len() / batch).max(1);
    let epoch_bytes = (per_epoch * batch * l.row_bytes()) as u64;
    let mut rates = Vec::new();
    for _ in 0..epochs {
        let t0 = Instant::now();
        for _ in 0..per_epoch {
            let b = l.next_batch()?;
            l.recycle(b);
        }
        rates.push(epoch_bytes as f64 / t0.elapsed().as_secs_f64() / MIB);
    }
    let t0 = Instant::now();
    let read = raw_read(file)?;
    Ok(LoaderRate {
        mode,
        rows: l.len(),
        row_shape: l.row_shape(),
        epochs: rates,
        raw_read: read as f64 / t0.elapsed().as_secs_f64() / MIB,
    })
}

const MIB: f64 = (1u64 << 20) as f64;

/// Reads the whole file sequentially in 1 MiB pieces (the baseline of loader throughput, also
/// in `benches/loader.rs`); returns the bytes read.
pub fn raw_read(path: &Path) -> Result<u64> {
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

/// Peak resident memory of this process in KiB (Linux `VmHWM`).
pub fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
