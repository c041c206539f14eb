//! Shuffled batches of a dataset for training, streamed from HDF5.
//!
//! `/data` is read in contiguous blocks of whole chunks (one hyperslab read each). An epoch visits
//! the blocks in a seeded random order; consecutive blocks fill a shuffle window (about
//! [`LoaderConfig::shuffle_bytes`]) whose rows are emitted in a seeded random order. Files of at
//! most [`LoaderConfig::in_memory_max_bytes`] are read once and drawn with a full permutation per
//! epoch. A background thread reads, converts to float32 and assembles the next batches.
//!
//! Epochs follow each other with no gap: batches always hold `batch` rows, and a batch may span
//! the end of one epoch and the start of the next. Rows `k*N .. (k+1)*N` of the stream (epoch
//! `k`) hold every row of the file exactly once. The order depends only on the seed.

use super::source::{self, DataInfo, Raw};
use anyhow::{anyhow, bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

/// How batches are drawn. Build with [`LoaderConfig::new`] and override fields as needed.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch: usize,
    pub seed: u64,
    /// Row shape the model expects, checked when opening. `[D]` also accepts rows of any shape
    /// with D elements (the model flattens them).
    pub expect_row_shape: Option<Vec<usize>>,
    /// Files whose `/data` takes at most this many bytes (as stored) are held in memory and drawn
    /// with a full permutation per epoch.
    pub in_memory_max_bytes: u64,
    /// Read size: blocks of about this many bytes, rounded to whole chunks.
    pub block_bytes: usize,
    /// Shuffle window: rows of about this many bytes of consecutive (shuffled) blocks are
    /// permuted together.
    pub shuffle_bytes: usize,
    /// Batches the background thread prepares ahead.
    pub prefetch: usize,
}

impl LoaderConfig {
    pub fn new(batch: usize, seed: u64) -> Self {
        LoaderConfig {
            batch,
            seed,
            ..Self::default()
        }
    }
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            batch: 256,
            seed: 0,
            expect_row_shape: None,
            in_memory_max_bytes: 256 << 20,
            block_bytes: 1 << 20,
            shuffle_bytes: 64 << 20,
            prefetch: 4,
        }
    }
}

/// One batch on the host: `rows` rows of `row_shape`, flattened row-major.
#[derive(Clone, Debug)]
pub struct HostBatch {
    pub values: Vec<f32>,
    pub rows: usize,
    pub row_shape: Vec<usize>,
    pub labels: Option<Vec<i64>>,
}

/// An endless stream of shuffled batches (see the module docs).
pub struct Loader {
    info: DataInfo,
    cfg: LoaderConfig,
    has_labels: bool,
    in_memory: bool,
    rx: Option<Receiver<Result<HostBatch>>>,
    recycle: SyncSender<Vec<f32>>,
    worker: Option<JoinHandle<()>>,
    rows_seen: u64,
    stopped: bool,
}

impl Loader {
    /// Opens `path`, validates `/data` (and `/labels`) and starts the prefetch thread.
    pub fn open(path: &Path, cfg: LoaderConfig) -> Result<Self> {
        let df = source::open(path)?;
        let info = df.info.clone();
        let p = path.display();
        if cfg.batch == 0 {
            bail!("batch size must be at least 1");
        }
        if info.rows() < cfg.batch {
            bail!(
                "{p}: `/data` has {} rows, fewer than the batch size {}; lower the batch size \
                 or use a larger dataset",
                info.rows(),
                cfg.batch
            );
        }
        if let Some(want) = &cfg.expect_row_shape {
            let have = info.row_shape();
            let flat_ok = want.len() == 1 && want[0] == info.row_dim();
            if have != want.as_slice() && !flat_ok {
                bail!(
                    "{p}: `/data` rows have shape {have:?} but the model expects {want:?}; \
                     use a dataset of that shape or configure the model for {have:?}"
                );
            }
        }
        let labels = source::read_labels(&df)?.map(Arc::new);
        drop(df);

        let in_memory = info.bytes() <= cfg.in_memory_max_bytes;
        let (tx, rx) = sync_channel(cfg.prefetch.max(1));
        let (recycle, recycled) = sync_channel(cfg.prefetch.max(1) + 2);
        let worker = Worker {
            info: info.clone(),
            cfg: cfg.clone(),
            labels: labels.clone(),
            in_memory,
            tx,
            recycled,
        };
        let worker = std::thread::Builder::new()
            .name("fewstep-loader".into())
            .spawn(move || worker.run())?;
        Ok(Loader {
            info,
            cfg,
            has_labels: labels.is_some(),
            in_memory,
            rx: Some(rx),
            recycle,
            worker: Some(worker),
            rows_seen: 0,
            stopped: false,
        })
    }

    /// Shape of one row, e.g. `[2]` or `[3, 32, 32]`.
    pub fn row_shape(&self) -> Vec<usize> {
        self.info.row_shape().to_vec()
    }

    /// Flattened row size.
    pub fn row_dim(&self) -> usize {
        self.info.row_dim()
    }

    /// Number of rows in the file.
    pub fn len(&self) -> usize {
        self.info.rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn path(&self) -> &Path {
        &self.info.path
    }

    /// Whether `/labels` is present (then every batch carries labels).
    pub fn has_labels(&self) -> bool {
        self.has_labels
    }

    /// Whether the whole of `/data` is held in memory.
    pub fn in_memory(&self) -> bool {
        self.in_memory
    }

    /// Rows handed out so far (refused batches included); `rows_seen() / len()` is the epoch.
    pub fn rows_seen(&self) -> u64 {
        self.rows_seen
    }

    /// Completed epochs.
    pub fn epoch(&self) -> u64 {
        self.rows_seen / self.len() as u64
    }

    /// The next batch of `batch` rows. A batch holding a NaN or Inf is refused with an error
    /// naming the row; the next call goes on with the following batch.
    pub fn next_batch(&mut self) -> Result<HostBatch> {
        if self.stopped {
            bail!(
                "the loader of {} stopped after an earlier error",
                self.info.path.display()
            );
        }
        let rx = self.rx.as_ref().expect("receiver lives until drop");
        match rx.recv() {
            Ok(batch) => {
                self.rows_seen += self.cfg.batch as u64;
                batch
            }
            Err(_) => {
                self.stopped = true;
                Err(anyhow!(
                    "the loader thread of {} ended unexpectedly",
                    self.info.path.display()
                ))
            }
        }
    }

    /// Hands a batch's buffer back for reuse, which saves an allocation per batch.
    pub fn recycle(&self, batch: HostBatch) {
        let _ = self.recycle.try_send(batch.values);
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Dropping the receiver makes the worker's next send fail, which ends it.
        self.rx.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// The prefetch thread: reads, shuffles, converts and sends batches until the receiver is gone.
struct Worker {
    info: DataInfo,
    cfg: LoaderConfig,
    labels: Option<Arc<Vec<i64>>>,
    in_memory: bool,
    tx: SyncSender<Result<HostBatch>>,
    recycled: Receiver<Vec<f32>>,
}

/// The batch being filled.
struct Pending {
    values: Vec<f32>,
    labels: Vec<i64>,
    rows: usize,
    /// First non-finite value: (file row, element in row, value).
    bad: Option<(usize, usize, f64)>,
}

/// Whether the consumer is still there.
type Alive = bool;

impl Worker {
    fn run(self) {
        if let Err(e) = self.stream() {
            let _ = self.tx.send(Err(e));
        }
    }

    fn stream(&self) -> Result<()> {
        let df = source::open(&self.info.path)?;
        let n = self.info.rows();
        let mut pending = self.fresh(Vec::new());
        let memory = if self.in_memory {
            Some(Raw::read(&df, 0, n).map_err(|e| self.read_error(e, 0, n))?)
        } else {
            None
        };
        let block = self.block_rows();
        let blocks = n.div_ceil(block);
        let window = (self.cfg.shuffle_bytes / (block * self.row_bytes()).max(1)).max(1);
        for epoch in 0u64.. {
            let mut rng = StdRng::seed_from_u64(mix(self.cfg.seed, epoch));
            if let Some(raw) = &memory {
                let mut order: Vec<u32> = (0..n as u32).collect();
                order.shuffle(&mut rng);
                for &r in &order {
                    if !self.push(&mut pending, raw, r as usize, r as usize) {
                        return Ok(());
                    }
                }
                continue;
            }
            let mut order: Vec<usize> = (0..blocks).collect();
            order.shuffle(&mut rng);
            for group in order.chunks(window) {
                let mut raws = Vec::with_capacity(group.len());
                let mut rows: Vec<(u32, u32)> = Vec::new();
                for (k, &b) in group.iter().enumerate() {
                    let (start, end) = (b * block, ((b + 1) * block).min(n));
                    let raw =
                        Raw::read(&df, start, end).map_err(|e| self.read_error(e, start, end))?;
                    raws.push((start, raw));
                    rows.extend((0..(end - start) as u32).map(|r| (k as u32, r)));
                }
                rows.shuffle(&mut rng);
                for &(k, r) in &rows {
                    let (start, raw) = &raws[k as usize];
                    if !self.push(&mut pending, raw, r as usize, start + r as usize) {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }

    /// Appends one row to the pending batch and sends the batch once full.
    #[inline]
    fn push(&self, p: &mut Pending, raw: &Raw, local: usize, row: usize) -> Alive {
        let d = self.info.row_dim();
        if let Some((j, v)) = raw.push_row(local, d, &mut p.values) {
            p.bad.get_or_insert((row, j, v));
        }
        if let Some(l) = &self.labels {
            p.labels.push(l[row]);
        }
        p.rows += 1;
        if p.rows < self.cfg.batch {
            return true;
        }
        let buf = self.recycled.try_recv().unwrap_or_default();
        let full = std::mem::replace(p, self.fresh(buf));
        self.tx.send(self.finish(full)).is_ok()
    }

    fn fresh(&self, mut values: Vec<f32>) -> Pending {
        values.clear();
        values.reserve(self.cfg.batch * self.info.row_dim());
        Pending {
            values,
            labels: Vec::with_capacity(if self.labels.is_some() {
                self.cfg.batch
            } else {
                0
            }),
            rows: 0,
            bad: None,
        }
    }

    fn finish(&self, p: Pending) -> Result<HostBatch> {
        if let Some((row, j, v)) = p.bad {
            bail!(
                "{}: `/data` row {row} holds {v} at element {j}; this batch is refused, not \
                 trained on. Find such rows with `fewstep data inspect` and clean or drop them",
                self.info.path.display()
            );
        }
        Ok(HostBatch {
            values: p.values,
            rows: p.rows,
            row_shape: self.info.row_shape().to_vec(),
            labels: self.labels.as_ref().map(|_| p.labels),
        })
    }

    fn row_bytes(&self) -> usize {
        self.info.row_dim() * self.info.elem.size()
    }

    /// Rows per read: whole chunks adding up to about `block_bytes`.
    fn block_rows(&self) -> usize {
        let unit = self.info.chunk_rows().unwrap_or(1);
        let per_unit = unit * self.row_bytes();
        let units = (self.cfg.block_bytes / per_unit.max(1)).max(1);
        (units * unit).min(self.info.rows())
    }

    fn read_error(&self, e: anyhow::Error, start: usize, end: usize) -> anyhow::Error {
        e.context(format!(
            "{}: reading `/data` rows {start}..{end}",
            self.info.path.display()
        ))
    }
}

/// A per-epoch seed.
fn mix(seed: u64, epoch: u64) -> u64 {
    seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
