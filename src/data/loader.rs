//! Batches of a dataset for training.
//!
//! This first version holds `/data` in memory and draws a seeded full permutation per epoch.
//! The streaming loader (hyperslab blocks, shuffle buffer, prefetch thread) replaces its insides
//! behind the same API.

use super::h5::{read_data, DataArray};
use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};

/// How batches are drawn.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub batch: usize,
    pub seed: u64,
}

/// One batch on the host: `rows` rows of `row_shape`, flattened row-major.
#[derive(Clone, Debug)]
pub struct HostBatch {
    pub values: Vec<f32>,
    pub rows: usize,
    pub row_shape: Vec<usize>,
    pub labels: Option<Vec<i64>>,
}

/// An endless stream of shuffled batches; each epoch covers every row exactly once
/// (the last, partial batch of an epoch is dropped only if smaller than `batch`).
pub struct Loader {
    path: PathBuf,
    data: DataArray,
    cfg: LoaderConfig,
    order: Vec<usize>,
    pos: usize,
    epoch: u64,
}

impl Loader {
    pub fn open(path: &Path, cfg: LoaderConfig) -> Result<Self> {
        let data = read_data(path)?;
        if data.rows() < cfg.batch {
            bail!(
                "{}: `/data` has {} rows, fewer than the batch size {}; lower --batch",
                path.display(),
                data.rows(),
                cfg.batch
            );
        }
        let mut l = Loader {
            path: path.to_path_buf(),
            order: (0..data.rows()).collect(),
            data,
            cfg,
            pos: 0,
            epoch: 0,
        };
        l.shuffle();
        Ok(l)
    }

    /// Shape of one row, e.g. `[2]` or `[3, 32, 32]`.
    pub fn row_shape(&self) -> Vec<usize> {
        self.data.shape[1..].to_vec()
    }

    /// Flattened row size.
    pub fn row_dim(&self) -> usize {
        self.data.row_dim()
    }

    /// Number of rows in the file.
    pub fn len(&self) -> usize {
        self.data.rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next batch of `batch` rows.
    pub fn next_batch(&mut self) -> Result<HostBatch> {
        if self.pos + self.cfg.batch > self.order.len() {
            self.epoch += 1;
            self.shuffle();
        }
        let d = self.row_dim();
        let mut values = Vec::with_capacity(self.cfg.batch * d);
        for &i in &self.order[self.pos..self.pos + self.cfg.batch] {
            values.extend_from_slice(&self.data.values[i * d..(i + 1) * d]);
        }
        self.pos += self.cfg.batch;
        Ok(HostBatch {
            values,
            rows: self.cfg.batch,
            row_shape: self.row_shape(),
            labels: None,
        })
    }

    fn shuffle(&mut self) {
        let mut rng =
            StdRng::seed_from_u64(self.cfg.seed ^ self.epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        self.order.shuffle(&mut rng);
        self.pos = 0;
    }
}
