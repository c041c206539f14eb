//! [`evaluate_stream`]: the metrics of [`super::evaluate`] for samples read a block of rows at a
//! time, so memory stays O(block) + O(d^2) + the SW2 projections of one pass, whatever the number
//! of samples. The reference (usually far smaller) is held whole, as before.
//!
//! - FD: the samples' mean and covariance from running moments, merged block by block with Chan
//!   et al.'s pairwise update (exact up to rounding, stable: no sum of squares minus a square).
//! - NLL and mode KL: row by row, summed in row order (the same bits as in memory).
//! - SW2: sorting needs each projection whole, so the 256 directions are done in groups: one
//!   pass over the samples per group, with that group's projections (n f64 each) in memory. The
//!   group is as large as [`SW_PASS_BYTES`] allows (32 directions, 8 passes at n = 10^6; all 256
//!   in one pass up to n = 131072): time for memory, the file is read once per group. The
//!   projections stay f64, so the values equal the in-memory ones.

use super::{
    centered_cross, check_shapes, directions, frechet, frechet_low_rank, gaussian_fit,
    kl_of_counts, log_norms, nearest_mode, project, row_nll, sort_f64, w2sq_sorted, Metrics, BLOCK,
    SW_DIRECTIONS,
};
use crate::data::{DataArray, DataFile, Mixture};
use anyhow::{bail, Result};
use nalgebra::DMatrix;
use rayon::prelude::*;
use std::borrow::Cow;
use std::ops::Range;

/// Bytes of float32 rows read from the samples at a time.
const READ_BYTES: usize = 8 << 20;
/// Bytes of sample projections (f64) held in one SW2 pass.
pub const SW_PASS_BYTES: usize = 256 << 20;

/// Rows to score, readable a block at a time, as often as needed.
pub trait RowSource {
    /// `[N, ...]`.
    fn shape(&self) -> Vec<usize>;
    /// Rows `rows`, row-major.
    fn read(&self, rows: Range<usize>) -> Result<Cow<'_, [f32]>>;
}

impl RowSource for DataArray {
    fn shape(&self) -> Vec<usize> {
        self.shape.clone()
    }
    fn read(&self, rows: Range<usize>) -> Result<Cow<'_, [f32]>> {
        let d = self.row_dim();
        Ok(Cow::Borrowed(&self.values[rows.start * d..rows.end * d]))
    }
}

impl RowSource for DataFile {
    fn shape(&self) -> Vec<usize> {
        DataFile::shape(self).to_vec()
    }
    fn read(&self, rows: Range<usize>) -> Result<Cow<'_, [f32]>> {
        Ok(Cow::Owned(DataFile::read(self, rows)?))
    }
}

/// Count, mean and centred cross-product sum `sum (x - mean)(x - mean)^T` of some rows.
struct Moments {
    n: usize,
    mean: Vec<f64>,
    m2: DMatrix<f64>,
}

impl Moments {
    fn empty(d: usize) -> Self {
        Moments {
            n: 0,
            mean: vec![0.0; d],
            m2: DMatrix::zeros(d, d),
        }
    }

    /// The moments of row-major `rows` (two-pass within the block).
    fn of_rows(rows: &[f32], d: usize) -> Self {
        let n = rows.len() / d;
        let mut mean = vec![0.0f64; d];
        for row in rows.chunks_exact(d) {
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, v)| *m += f64::from(*v));
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let m2 = centered_cross(rows, &mean);
        Moments { n, mean, m2 }
    }

    /// Adds `other`'s rows (Chan, Golub and LeVeque's pairwise update).
    fn merge(&mut self, other: Moments) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = other;
            return;
        }
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let delta = nalgebra::DVector::from_iterator(
            self.mean.len(),
            other.mean.iter().zip(&self.mean).map(|(b, a)| b - a),
        );
        self.mean
            .iter_mut()
            .zip(delta.iter())
            .for_each(|(m, dl)| *m += dl * nb / n);
        self.m2 += other.m2;
        self.m2.ger(na * nb / n, &delta, &delta, 1.0);
        self.n += other.n;
    }

    /// The unbiased (n - 1) covariance, as [`gaussian_fit`] has it.
    fn covariance(&self) -> DMatrix<f64> {
        &self.m2 / (self.n.max(2) - 1) as f64
    }
}

/// What one block of at most [`BLOCK`] rows contributes to a pass.
struct Part {
    /// Projections onto the pass's directions, `[rows, directions]`.
    proj: DMatrix<f64>,
    /// First pass only: moments, per-row NLL and nearest modes.
    moments: Option<Moments>,
    nll: Vec<f64>,
    nearest: Vec<usize>,
}

/// The metrics of [`super::evaluate`] (the same up to rounding: FD to ~1e-12 relative, the
/// others bit for bit) with the samples read from `samples` a block at a time.
pub fn evaluate_stream(
    samples: &dyn RowSource,
    reference: &DataArray,
    mixture: Option<&Mixture>,
) -> Result<Metrics> {
    evaluate_in_passes(samples, reference, mixture, READ_BYTES, SW_PASS_BYTES)
}

/// [`evaluate_stream`] reading `read_bytes` of samples at a time and holding `pass_bytes` of
/// projections per SW2 pass.
fn evaluate_in_passes(
    samples: &dyn RowSource,
    reference: &DataArray,
    mixture: Option<&Mixture>,
    read_bytes: usize,
    pass_bytes: usize,
) -> Result<Metrics> {
    let shape = samples.shape();
    check_shapes(&shape, &reference.shape)?;
    let (n, d) = (shape[0], reference.row_dim());
    if n < 2 || reference.rows() < 2 {
        bail!(
            "FD needs at least 2 rows per set to fit a covariance (got {} and {})",
            n,
            reference.rows()
        );
    }
    if let Some(m) = mixture {
        if m.dim != d {
            bail!(
                "dimension mismatch: samples have rows of size {d}, the mixture has dimension {}",
                m.dim
            );
        }
    }
    let low_rank = n.max(reference.rows()) < d;
    let dirs = directions(d, SW_DIRECTIONS);
    let (ref_fit, mut ref_proj) = rayon::join(
        || (!low_rank).then(|| gaussian_fit(reference)),
        || project(reference, &dirs),
    );
    ref_proj.par_iter_mut().for_each(|p| sort_f64(p));

    let log_norm = mixture.map(log_norms);
    let group = (pass_bytes / (8 * n)).clamp(1, SW_DIRECTIONS);
    let read_rows = (read_bytes / (4 * d)).max(1);
    let mut moments = Moments::empty(d);
    let (mut nll_sum, mut counts) = (0.0f64, vec![0usize; mixture.map_or(0, |m| m.components())]);
    let mut w2 = Vec::with_capacity(SW_DIRECTIONS);
    for first in (0..SW_DIRECTIONS).step_by(group) {
        let cols = group.min(SW_DIRECTIONS - first);
        let g = dirs.columns(first, cols).into_owned();
        let stats = first == 0;
        let mut proj: Vec<Vec<f64>> = (0..cols).map(|_| Vec::with_capacity(n)).collect();
        for start in (0..n).step_by(read_rows) {
            let block = samples.read(start..(start + read_rows).min(n))?;
            let parts: Vec<Part> = block
                .par_chunks(BLOCK * d)
                .map(|rows| {
                    let y = DMatrix::from_iterator(
                        d,
                        rows.len() / d,
                        rows.iter().map(|v| f64::from(*v)),
                    );
                    let (nll, nearest) = match (mixture, &log_norm) {
                        (Some(m), Some(ln)) if stats => rows
                            .chunks_exact(d)
                            .map(|x| (row_nll(x, m, ln), nearest_mode(x, m)))
                            .unzip(),
                        _ => (vec![], vec![]),
                    };
                    Part {
                        // Column k holds the rows' projections onto direction first + k.
                        proj: y.transpose() * &g,
                        moments: (stats && (!low_rank || mixture.is_some()))
                            .then(|| Moments::of_rows(rows, d)),
                        nll,
                        nearest,
                    }
                })
                .collect();
            // In row order: the sums do not depend on the thread count.
            for part in parts {
                for (o, col) in proj.iter_mut().zip(part.proj.column_iter()) {
                    o.extend_from_slice(col.as_slice());
                }
                if let Some(m) = part.moments {
                    moments.merge(m);
                }
                part.nll.iter().for_each(|v| nll_sum += v);
                part.nearest.iter().for_each(|&k| counts[k] += 1);
            }
        }
        proj.par_iter_mut().for_each(|p| sort_f64(p));
        let pass: Vec<f64> = proj
            .par_iter()
            .zip(&ref_proj[first..first + cols])
            .map(|(x, y)| w2sq_sorted(x, y))
            .collect();
        w2.extend(pass);
    }

    let fd = match ref_fit {
        Some((mu2, c2)) => frechet(&moments.mean, &moments.covariance(), &mu2, &c2),
        // Fewer rows than dimensions: the samples are smaller than a d x d covariance.
        None => frechet_low_rank(
            &DataArray::new(samples.read(0..n)?.into_owned(), shape.clone()),
            reference,
        ),
    };
    Ok(Metrics {
        fd,
        fd_exact: mixture.map(|m| super::fd_exact(&moments.mean, &moments.covariance(), m)),
        sw2: (w2.iter().sum::<f64>() / w2.len() as f64).sqrt(),
        nll: mixture.map(|_| nll_sum / n as f64),
        mode_kl: mixture.map(|m| kl_of_counts(&counts, m)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::evaluate;
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `n` rows of `d` values with a correlated, shifted, non-Gaussian spread.
    fn rows(n: usize, d: usize, seed: u64) -> DataArray {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut v = Vec::with_capacity(n * d);
        for _ in 0..n {
            let common: f32 = rng.sample(rand_distr::StandardNormal);
            for j in 0..d {
                let e: f32 = rng.sample(rand_distr::StandardNormal);
                v.push(3.0 + 0.5 * common + e * (1.0 + j as f32 / d as f32) + 0.3 * e.abs());
            }
        }
        DataArray::new(v, vec![n, d])
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
    }

    #[test]
    fn streamed_metrics_equal_the_in_memory_ones() {
        let mixture = Mixture::new(
            vec![0.25, 0.75],
            (0..16)
                .map(|i| (i % 3) as f64)
                .chain(vec![3.0; 8])
                .collect(),
            vec![1.0, 2.0],
            12,
        )
        .unwrap();
        let (s, r) = (rows(3000, 12, 1), rows(1000, 12, 2));
        let want = evaluate(&s, &r, Some(&mixture)).unwrap();
        // All in one pass; then reads of 700 rows (parts of 512 and 188 rows) and SW2 in 26
        // passes of 10 directions.
        for (read, pass) in [(READ_BYTES, SW_PASS_BYTES), (700 * 12 * 4, 3000 * 8 * 10)] {
            let got = evaluate_in_passes(&s, &r, Some(&mixture), read, pass).unwrap();
            assert!(close(got.fd, want.fd), "{got:?} vs {want:?}");
            assert_eq!(
                (got.sw2, got.nll, got.mode_kl),
                (want.sw2, want.nll, want.mode_kl)
            );
        }
        // Fewer rows than dimensions: the sample-space FD.
        let (s, r) = (rows(40, 64, 3), rows(50, 64, 4));
        let (want, got) = (
            evaluate(&s, &r, None).unwrap(),
            evaluate_stream(&s, &r, None).unwrap(),
        );
        assert_eq!(got, want);
    }

    #[test]
    fn chan_merges_equal_the_two_pass_fit() {
        let x = rows(2000, 5, 7);
        let (mu, c) = gaussian_fit(&x);
        let mut m = Moments::empty(5);
        for part in x.values.chunks(333 * 5) {
            m.merge(Moments::of_rows(part, 5));
        }
        assert_eq!(m.n, 2000);
        for (a, b) in m.mean.iter().zip(&mu) {
            assert!(close(*a, *b), "{a} vs {b}");
        }
        for (a, b) in m.covariance().iter().zip(c.iter()) {
            assert!((a - b).abs() <= 1e-12 * c.amax(), "{a} vs {b}");
        }
    }
}
