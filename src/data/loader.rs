//! Shuffled batches of a dataset for training, streamed from HDF5.
//!
//! `/data` is read in contiguous blocks of whole chunks. An epoch visits the blocks in a seeded
//! random order; consecutive blocks fill a shuffle window (about [`LoaderConfig::shuffle_bytes`])
//! whose rows are handed out in a seeded random order. Files of at most
//! [`LoaderConfig::in_memory_max_bytes`] are read once and drawn with a full permutation per
//! epoch.
//!
//! Background threads do all the work: a reader fills windows and cuts the row order into
//! batches, and [`LoaderConfig::workers`] assemblers copy the rows into batches (checking float
//! data for NaN/Inf). Batches are handed out in the reader's order, so the result depends only
//! on the seed, never on the thread count.
//!
//! uint8 rows travel as bytes ([`BatchValues::U8`]) and are scaled to [-1, 1] where the batch
//! is used (`tensor::batch_to_device`: on the GPU for CUDA training). Scaling here would write
//! four bytes of float32 per byte read, which made the loader several times slower than the
//! read on a small machine and would move four times the bytes to the device.
//!
//! Epochs follow each other with no gap: batches always hold `batch` rows, and a batch may span
//! the end of one epoch and the start of the next. Rows `k*N .. (k+1)*N` of the stream (epoch
//! `k`) hold every row of the file exactly once.

use super::source::{self, push_row, DataInfo, Elem, MappedRows, RowReader};
use crate::seed::{seeded, SeededRng};
use anyhow::{anyhow, bail, Result};
use rand::seq::SliceRandom;
use std::ops::Range;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// How batches are drawn. Build with [`LoaderConfig::new`] and override fields as needed.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch: usize,
    pub seed: u64,
    /// Row shape the model expects, checked when opening. `[D]` also accepts rows of any shape
    /// with D elements (the model flattens them).
    pub expect_row_shape: Option<Vec<usize>>,
    /// Files whose `/data` takes at most this many bytes (as stored, uncompressed) are held in
    /// memory and drawn with a full permutation per epoch.
    pub in_memory_max_bytes: u64,
    /// Read size: blocks of about this many bytes, rounded to whole chunks.
    pub block_bytes: usize,
    /// Shuffle window: rows of about this many bytes of consecutive (shuffled) blocks are
    /// permuted together. About three windows are in memory at once.
    pub shuffle_bytes: usize,
    /// Batches prepared ahead.
    pub prefetch: usize,
    /// Threads assembling batches from the read rows (the batch order does not depend on it).
    pub workers: usize,
    /// Streams rows straight from the mapped file where its layout allows (unfiltered,
    /// little-endian): one copy per row instead of a read into a window and a copy out of it.
    /// `false` reads windows with `pread`, for files that may change while training.
    pub map_file: bool,
    /// The rows of every batch this process keeps (`None`: all `batch`). The batches are drawn
    /// as without it, from the same seeded order; data-parallel ranks each keep their share
    /// ([`crate::dist::share`]), so together they train on exactly the single process's batch.
    pub shard: Option<Range<usize>>,
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
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        LoaderConfig {
            batch: 256,
            seed: 0,
            expect_row_shape: None,
            in_memory_max_bytes: 256 << 20,
            block_bytes: 1 << 20,
            shuffle_bytes: 64 << 20,
            prefetch: 4,
            workers: cores.clamp(1, 4),
            map_file: true,
            shard: None,
        }
    }
}

/// A batch's values in the form they travel to the device.
#[derive(Clone, Debug, PartialEq)]
pub enum BatchValues {
    /// Float data (float64 narrowed to float32), all finite.
    F32(Vec<f32>),
    /// uint8 data as stored; each byte `x` stands for `x / 127.5 - 1` ([`source::u8_to_f32`]).
    U8(Vec<u8>),
}

impl BatchValues {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            BatchValues::F32(v) => v.len(),
            BatchValues::U8(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The values as float32 (uint8 scaled to [-1, 1]), decoded on the host.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            BatchValues::F32(v) => v.clone(),
            BatchValues::U8(v) => {
                let mut out = Vec::with_capacity(v.len());
                source::push_u8(v, &mut out);
                out
            }
        }
    }

    /// Like [`Self::to_f32`], handing float data over without a copy.
    pub fn into_f32(self) -> Vec<f32> {
        match self {
            BatchValues::F32(v) => v,
            bytes => bytes.to_f32(),
        }
    }

    /// An empty buffer of the same kind, for the next batch.
    fn cleared(mut self) -> Self {
        match &mut self {
            BatchValues::F32(v) => v.clear(),
            BatchValues::U8(v) => v.clear(),
        }
        self
    }
}

/// One batch on the host: `rows` rows of `row_shape`, flattened row-major.
#[derive(Clone, Debug)]
pub struct HostBatch {
    pub values: BatchValues,
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
    is_mapped: bool,
    /// One output per assembler; batch `i` comes from `outputs[i % workers]`.
    outputs: Vec<Receiver<Result<HostBatch>>>,
    next: usize,
    spare: Arc<Mutex<Vec<BatchValues>>>,
    threads: Vec<JoinHandle<()>>,
    rows_seen: u64,
    stopped: bool,
}

impl Loader {
    /// Opens `path`, validates `/data` (and `/labels`) and starts the background threads.
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
        if info.rows() > u32::MAX as usize {
            bail!(
                "{p}: `/data` has {} rows; at most 2^32 - 1 are supported",
                info.rows()
            );
        }
        let keep = cfg.shard.clone().unwrap_or(0..cfg.batch);
        if keep.is_empty() || keep.end > cfg.batch {
            bail!(
                "a loader shard must be a non-empty range of the batch's rows 0..{}, got {keep:?}",
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
        let reader = RowReader::new(source::open_with(path, true)?)?;

        let in_memory = info.bytes() <= cfg.in_memory_max_bytes;
        let workers = cfg.workers.max(1);
        let depth = cfg.prefetch.max(1).div_ceil(workers);
        let spare = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        let mut jobs = Vec::new();
        let mut outputs = Vec::new();
        for k in 0..workers {
            let (job_tx, job_rx) = sync_channel::<Job>(1);
            let (out_tx, out_rx) = sync_channel(depth);
            let assemble = Assembler {
                info: info.clone(),
                keep: keep.clone(),
                labels: labels.clone(),
                spare: spare.clone(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("fewstep-batch-{k}"))
                    .spawn(move || {
                        for job in job_rx {
                            if out_tx.send(assemble.run(job)).is_err() {
                                return;
                            }
                        }
                    })?,
            );
            jobs.push(job_tx);
            outputs.push(out_rx);
        }
        let mapped = match cfg.map_file && !in_memory {
            true => reader.map()?.map(Arc::new),
            false => None,
        };
        let is_mapped = mapped.is_some();
        let read = Reader {
            reader,
            cfg: cfg.clone(),
            in_memory,
            mapped,
            jobs,
            sent: 0,
            pool: Arc::new(Mutex::new(Vec::new())),
        };
        threads.push(
            std::thread::Builder::new()
                .name("fewstep-read".into())
                .spawn(move || read.run())?,
        );
        Ok(Loader {
            info,
            cfg,
            has_labels: labels.is_some(),
            in_memory,
            is_mapped,
            outputs,
            next: 0,
            spare,
            threads,
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

    /// Bytes of one row as stored (uint8 rows stay bytes in batches).
    pub fn row_bytes(&self) -> usize {
        self.info.row_bytes()
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

    /// Whether rows stream straight from the mapped file ([`LoaderConfig::map_file`]).
    pub fn is_mapped(&self) -> bool {
        self.is_mapped
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
        let out = &self.outputs[self.next % self.outputs.len()];
        self.next += 1;
        match out.recv() {
            Ok(batch) => {
                self.rows_seen += self.cfg.batch as u64;
                batch
            }
            Err(_) => {
                self.stopped = true;
                Err(anyhow!(
                    "the loader threads of {} ended unexpectedly",
                    self.info.path.display()
                ))
            }
        }
    }

    /// Hands a batch's buffer back for reuse, which saves allocating (and page-faulting) a
    /// fresh one per batch.
    pub fn recycle(&self, batch: HostBatch) {
        let mut spare = self.spare.lock().unwrap_or_else(|e| e.into_inner());
        if spare.len() < self.cfg.prefetch + 2 * self.outputs.len() {
            spare.push(batch.values.cleared());
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // Closing the outputs ends the assemblers, which closes their job queues, which ends
        // the reader.
        self.outputs.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Rows held in memory: a shuffle window, or the whole file.
struct Rows {
    bytes: Vec<u8>,
    /// Buffers go back here for the next window.
    pool: Option<Arc<Mutex<Vec<Vec<u8>>>>>,
}

impl Drop for Rows {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
            if pool.len() < 2 {
                pool.push(std::mem::take(&mut self.bytes));
            }
        }
    }
}

/// Where a window's rows are.
enum Store {
    /// Read into memory; rows are indexed by position in the buffer.
    Read(Arc<Rows>),
    /// The mapped file; rows are indexed by row number.
    Mapped(Arc<MappedRows>),
}

impl Store {
    #[inline]
    fn row(&self, local: u32, rb: usize) -> &[u8] {
        let local = local as usize;
        match self {
            Store::Read(rows) => &rows.bytes[local * rb..(local + 1) * rb],
            Store::Mapped(map) => map.row(local),
        }
    }
}

/// Rows in the order they are handed out: (row's index in `rows`, row in the file).
struct Window {
    rows: Store,
    order: Vec<(u32, u32)>,
}

/// The rows of one batch: consecutive pieces of windows' orders.
enum Job {
    Batch(Vec<(Arc<Window>, Range<usize>)>),
    Fail(anyhow::Error),
}

/// The reader thread: fills windows, shuffles, and deals batches to the assemblers in turn.
struct Reader {
    reader: RowReader,
    cfg: LoaderConfig,
    in_memory: bool,
    mapped: Option<Arc<MappedRows>>,
    jobs: Vec<SyncSender<Job>>,
    sent: usize,
    pool: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Reader {
    fn run(mut self) {
        if let Err(e) = self.stream() {
            let k = self.sent % self.jobs.len();
            let _ = self.jobs[k].send(Job::Fail(e));
        }
    }

    /// Deals batches until an assembler hangs up (the loader was dropped).
    fn stream(&mut self) -> Result<()> {
        let n = self.reader.info().rows();
        let rb = self.reader.row_bytes();
        let mut pending = Vec::new();
        let mut need = self.cfg.batch;
        let memory = if self.in_memory {
            let mut bytes = vec![0u8; n * rb];
            self.reader.read_into(0, n, &mut bytes)?;
            Some(Arc::new(Rows { bytes, pool: None }))
        } else {
            None
        };
        let block = self.block_rows();
        let blocks = n.div_ceil(block);
        let per_window = (self.cfg.shuffle_bytes / (block * rb).max(1)).max(1);
        for epoch in 0u64.. {
            let mut rng = seeded(mix(self.cfg.seed, epoch));
            if let Some(rows) = &memory {
                let mut order: Vec<(u32, u32)> = (0..n as u32).map(|r| (r, r)).collect();
                order.shuffle(&mut rng);
                let rows = Store::Read(rows.clone());
                if !self.deal(Arc::new(Window { rows, order }), &mut pending, &mut need) {
                    return Ok(());
                }
                continue;
            }
            let mut order: Vec<usize> = (0..blocks).collect();
            order.shuffle(&mut rng);
            let groups: Vec<&[usize]> = order.chunks(per_window).collect();
            for (i, group) in groups.iter().enumerate() {
                // A mapped window's pages are read on first touch: ask for the next window's
                // ahead, so a file not yet in the page cache is read while this one is used.
                if let Some(m) = &self.mapped {
                    let first = if i == 0 { 0 } else { i + 1 };
                    let ahead = groups.iter().take(i + 2).skip(first);
                    for s in ahead.flat_map(|g| spans(g, block, n)) {
                        m.prefetch(s.start, s.end);
                    }
                }
                let w = self.window(group, block, &mut rng)?;
                if !self.deal(Arc::new(w), &mut pending, &mut need) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Reads the given blocks into one window (or points into the mapped file) and shuffles
    /// its rows; the row order depends only on `rng`, not on whether the file is mapped.
    fn window(&self, group: &[usize], block: usize, rng: &mut SeededRng) -> Result<Window> {
        let n = self.reader.info().rows();
        let rb = self.reader.row_bytes();
        let spans: Vec<Range<usize>> = spans(group, block, n).collect();
        if let Some(m) = &self.mapped {
            let mut order: Vec<(u32, u32)> = spans
                .into_iter()
                .flatten()
                .map(|r| (r as u32, r as u32))
                .collect();
            order.shuffle(rng);
            let rows = Store::Mapped(m.clone());
            return Ok(Window { rows, order });
        }
        let total: usize = spans.iter().map(|s| s.len()).sum();
        let mut bytes = self
            .pool
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        bytes.resize(total * rb, 0);
        let mut order = Vec::with_capacity(total);
        let mut at = 0;
        for s in spans {
            self.reader
                .read_into(s.start, s.end, &mut bytes[at * rb..(at + s.len()) * rb])?;
            order.extend(
                s.clone()
                    .enumerate()
                    .map(|(i, r)| ((at + i) as u32, r as u32)),
            );
            at += s.len();
        }
        order.shuffle(rng);
        Ok(Window {
            rows: Store::Read(Arc::new(Rows {
                bytes,
                pool: Some(self.pool.clone()),
            })),
            order,
        })
    }

    /// Cuts a window's order into batches and sends each full one to the next assembler.
    /// Returns false once the loader is gone.
    fn deal(
        &mut self,
        w: Arc<Window>,
        pending: &mut Vec<(Arc<Window>, Range<usize>)>,
        need: &mut usize,
    ) -> bool {
        let mut at = 0;
        while at < w.order.len() {
            let take = (*need).min(w.order.len() - at);
            pending.push((w.clone(), at..at + take));
            at += take;
            *need -= take;
            if *need == 0 {
                let job = Job::Batch(std::mem::take(pending));
                let k = self.sent % self.jobs.len();
                if self.jobs[k].send(job).is_err() {
                    return false;
                }
                self.sent += 1;
                *need = self.cfg.batch;
            }
        }
        true
    }

    /// Rows per read: whole chunks adding up to about `block_bytes`.
    fn block_rows(&self) -> usize {
        let info = self.reader.info();
        let unit = info.chunk_rows().unwrap_or(1);
        let per_unit = unit * self.reader.row_bytes();
        let units = (self.cfg.block_bytes / per_unit.max(1)).max(1);
        (units * unit).min(info.rows())
    }
}

/// An assembler thread's work: copies a batch's rows out of their windows, checking floats.
struct Assembler {
    info: DataInfo,
    /// The rows of each batch to copy out (all of them but for a shard).
    keep: Range<usize>,
    labels: Option<Arc<Vec<i64>>>,
    spare: Arc<Mutex<Vec<BatchValues>>>,
}

impl Assembler {
    fn run(&self, job: Job) -> Result<HostBatch> {
        let pieces = match job {
            Job::Batch(p) => p,
            Job::Fail(e) => return Err(e),
        };
        let (elem, d) = (self.info.elem, self.info.row_dim());
        let rb = d * elem.size();
        let rows = pieces
            .iter()
            .flat_map(|(w, range)| w.order[range.clone()].iter().map(move |&o| (w, o)))
            .skip(self.keep.start)
            .take(self.keep.len());
        let mut values = self.buffer();
        let mut bad = None;
        match &mut values {
            BatchValues::U8(out) => {
                out.reserve(self.keep.len() * d);
                for (w, (local, _)) in rows.clone() {
                    out.extend_from_slice(w.rows.row(local, rb));
                }
            }
            BatchValues::F32(out) => {
                out.reserve(self.keep.len() * d);
                for (w, (local, row)) in rows.clone() {
                    if let Some((j, v)) = push_row(elem, w.rows.row(local, rb), out) {
                        bad.get_or_insert((row, j, v));
                    }
                }
            }
        }
        if let Some((row, j, v)) = bad {
            bail!(
                "{}: `/data` row {row} holds {v} at element {j}; this batch is refused, not \
                 trained on. Find such rows with `fewstep data inspect` and clean or drop them",
                self.info.path.display()
            );
        }
        let labels = self.labels.as_ref().map(|all| {
            rows.map(|(_, (_, row))| all[row as usize])
                .collect::<Vec<_>>()
        });
        debug_assert_eq!(values.len(), self.keep.len() * d);
        Ok(HostBatch {
            values,
            rows: self.keep.len(),
            row_shape: self.info.row_shape().to_vec(),
            labels,
        })
    }

    /// An empty buffer for the file's element type, recycled where one is spare.
    fn buffer(&self) -> BatchValues {
        let spare = self.spare.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match (self.info.elem, spare) {
            (Elem::U8, Some(v @ BatchValues::U8(_))) => v,
            (Elem::U8, _) => BatchValues::U8(Vec::new()),
            (_, Some(v @ BatchValues::F32(_))) => v,
            (_, _) => BatchValues::F32(Vec::new()),
        }
    }
}

/// The row ranges of blocks of `block` rows (the last one may be short).
fn spans(group: &[usize], block: usize, n: usize) -> impl Iterator<Item = Range<usize>> + '_ {
    group
        .iter()
        .map(move |&b| b * block..((b + 1) * block).min(n))
}

/// A per-epoch seed.
fn mix(seed: u64, epoch: u64) -> u64 {
    seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
