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
    kl_of_counts, log_norms, nearest_mode, order_key, project, row_nll, sort_f64, w2sq_sorted,
    Metrics, BLOCK, SW_DIRECTIONS,
};
use crate::data::{DataArray, DataFile, Mixture};
use crate::dist::{self, Collective, Single};
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

impl Moments {
    /// `[n, mean, m2 (column-major)]`, for a gather.
    fn to_flat(&self) -> Vec<f64> {
        let mut v = Vec::with_capacity(1 + self.mean.len() + self.m2.len());
        v.push(self.n as f64);
        v.extend_from_slice(&self.mean);
        v.extend_from_slice(self.m2.as_slice());
        v
    }

    /// The inverse of [`Moments::to_flat`].
    fn from_flat(v: &[f64], d: usize) -> Self {
        Moments {
            n: v[0] as usize,
            mean: v[1..1 + d].to_vec(),
            m2: DMatrix::from_column_slice(d, d, &v[1 + d..1 + d + d * d]),
        }
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
    let m = evaluate_in_passes(
        &Single,
        samples,
        reference,
        mixture,
        READ_BYTES,
        SW_PASS_BYTES,
    )?;
    Ok(m.expect("a single process is its own root"))
}

/// [`evaluate_stream`] by the ranks of `world` (an `mpirun` job), each reading and scoring its
/// share of the rows ([`dist::share`]); every rank must call it. Rank 0 gets the metrics (`None`
/// elsewhere), equal to one process's up to the order of sums:
///
/// - FD: each rank's moments (count, mean, centred cross-products) are gathered at rank 0 and
///   merged in rank order with the same pairwise update that merges blocks;
/// - NLL and mode counts: per-rank sums (the counts exact), summed at rank 0;
/// - SW2: each rank sorts its projections; rank 0 gathers the sorted runs and merges them into
///   the sorted whole (the same values as one sort, so SW2 is the same bits).
///
/// Every rank reads the reference (SW2's and FD's reference side are computed at rank 0 only).
pub fn evaluate_sharded(
    world: &dyn Collective,
    samples: &dyn RowSource,
    reference: &DataArray,
    mixture: Option<&Mixture>,
) -> Result<Option<Metrics>> {
    evaluate_in_passes(
        world,
        samples,
        reference,
        mixture,
        READ_BYTES,
        SW_PASS_BYTES,
    )
}

/// What one rank found in its rows during the first pass.
struct Stats {
    moments: Moments,
    nll_sum: f64,
    counts: Vec<usize>,
}

/// [`evaluate_sharded`] reading `read_bytes` of samples at a time and holding `pass_bytes` of
/// projections per SW2 pass.
fn evaluate_in_passes(
    world: &dyn Collective,
    samples: &dyn RowSource,
    reference: &DataArray,
    mixture: Option<&Mixture>,
    read_bytes: usize,
    pass_bytes: usize,
) -> Result<Option<Metrics>> {
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
    let (root, parallel) = (world.is_root(), world.size() > 1);
    let mine = dist::share(n, world.rank(), world.size());
    let low_rank = n.max(reference.rows()) < d;
    let dirs = directions(d, SW_DIRECTIONS);
    // The reference side of FD and SW2 is needed where the metrics are assembled.
    let (ref_fit, mut ref_proj) = match root {
        true => rayon::join(
            || (!low_rank).then(|| gaussian_fit(reference)),
            || project(reference, &dirs),
        ),
        false => (None, vec![]),
    };
    ref_proj.par_iter_mut().for_each(|p| sort_f64(p));

    let log_norm = mixture.map(log_norms);
    // Rank 0 of a parallel run holds the gathered runs and their merge: twice a pass.
    let group = (pass_bytes / (8 * n * (1 + usize::from(parallel)))).clamp(1, SW_DIRECTIONS);
    let read_rows = (read_bytes / (4 * d)).max(1);
    let mut stats = Stats {
        moments: Moments::empty(d),
        nll_sum: 0.0,
        counts: vec![0usize; mixture.map_or(0, |m| m.components())],
    };
    let mut w2 = Vec::with_capacity(SW_DIRECTIONS);
    for first in (0..SW_DIRECTIONS).step_by(group) {
        let cols = group.min(SW_DIRECTIONS - first);
        let g = dirs.columns(first, cols).into_owned();
        let first_pass = first == 0;
        let mut proj: Vec<Vec<f64>> = (0..cols).map(|_| Vec::with_capacity(mine.len())).collect();
        for start in mine.clone().step_by(read_rows) {
            let block = samples.read(start..(start + read_rows).min(mine.end))?;
            let parts: Vec<Part> = block
                .par_chunks(BLOCK * d)
                .map(|rows| {
                    let y = DMatrix::from_iterator(
                        d,
                        rows.len() / d,
                        rows.iter().map(|v| f64::from(*v)),
                    );
                    let (nll, nearest) = match (mixture, &log_norm) {
                        (Some(m), Some(ln)) if first_pass => rows
                            .chunks_exact(d)
                            .map(|x| (row_nll(x, m, ln), nearest_mode(x, m)))
                            .unzip(),
                        _ => (vec![], vec![]),
                    };
                    Part {
                        // Column k holds the rows' projections onto direction first + k.
                        proj: y.transpose() * &g,
                        moments: (first_pass && (!low_rank || mixture.is_some()))
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
                    stats.moments.merge(m);
                }
                part.nll.iter().for_each(|v| stats.nll_sum += v);
                part.nearest.iter().for_each(|&k| stats.counts[k] += 1);
            }
        }
        proj.par_iter_mut().for_each(|p| sort_f64(p));
        if parallel {
            proj = match gather_sorted(world, n, &proj) {
                Some(all) => all,
                None => continue,
            };
        }
        let pass: Vec<f64> = proj
            .par_iter()
            .zip(&ref_proj[first..first + cols])
            .map(|(x, y)| w2sq_sorted(x, y))
            .collect();
        w2.extend(pass);
    }
    if parallel {
        match combine(world, d, stats) {
            Some(all) => stats = all,
            None => return Ok(None),
        }
    }

    let Stats {
        moments,
        nll_sum,
        counts,
    } = stats;
    let fd = match ref_fit {
        Some((mu2, c2)) => frechet(&moments.mean, &moments.covariance(), &mu2, &c2),
        // Fewer rows than dimensions: the samples are smaller than a d x d covariance.
        None => frechet_low_rank(
            &DataArray::new(samples.read(0..n)?.into_owned(), shape.clone()),
            reference,
        ),
    };
    Ok(Some(Metrics {
        fd,
        fd_exact: mixture.map(|m| super::fd_exact(&moments.mean, &moments.covariance(), m)),
        sw2: (w2.iter().sum::<f64>() / w2.len() as f64).sqrt(),
        nll: mixture.map(|_| nll_sum / n as f64),
        mode_kl: mixture.map(|m| kl_of_counts(&counts, m)),
    }))
}

/// Every rank's sorted projections (one run per direction) gathered at rank 0 and merged into
/// the sorted projections of all `n` rows (`None` elsewhere).
fn gather_sorted(world: &dyn Collective, n: usize, proj: &[Vec<f64>]) -> Option<Vec<Vec<f64>>> {
    let flat: Vec<f64> = proj.concat();
    let all = world.gather_f64_to_root(&flat)?;
    let cols = proj.len();
    // Rank r sent its `cols` runs of share(n, r) rows each, one after the other.
    let mut runs: Vec<Vec<&[f64]>> = vec![Vec::with_capacity(world.size()); cols];
    let mut at = 0;
    for r in 0..world.size() {
        let len = dist::share(n, r, world.size()).len();
        for col in runs.iter_mut() {
            col.push(&all[at..at + len]);
            at += len;
        }
    }
    Some(runs.par_iter().map(|r| merge_sorted(r)).collect())
}

/// Sorted `runs` (in [`sort_f64`]'s total order) merged into one sorted vector.
fn merge_sorted(runs: &[&[f64]]) -> Vec<f64> {
    let key = order_key;
    let mut merged: Vec<f64> = runs.first().map_or_else(Vec::new, |r| r.to_vec());
    for run in &runs[1.min(runs.len())..] {
        let mut out = Vec::with_capacity(merged.len() + run.len());
        let (mut i, mut j) = (0, 0);
        while i < merged.len() && j < run.len() {
            if key(run[j]) < key(merged[i]) {
                out.push(run[j]);
                j += 1;
            } else {
                out.push(merged[i]);
                i += 1;
            }
        }
        out.extend_from_slice(&merged[i..]);
        out.extend_from_slice(&run[j..]);
        merged = out;
    }
    merged
}

/// Every rank's first-pass statistics combined at rank 0 (`None` elsewhere): moments merged in
/// rank order, NLL sums and mode counts summed.
fn combine(world: &dyn Collective, d: usize, stats: Stats) -> Option<Stats> {
    let mut sums = vec![stats.nll_sum];
    // Counts below 2^53 are exact in f64.
    sums.extend(stats.counts.iter().map(|&c| c as f64));
    let sums = world.reduce_sum_to_root(&sums);
    let gathered = world.gather_f64_to_root(&stats.moments.to_flat());
    let (sums, gathered) = (sums?, gathered?);
    let mut moments = Moments::empty(d);
    for part in gathered.chunks_exact(1 + d + d * d) {
        moments.merge(Moments::from_flat(part, d));
    }
    Some(Stats {
        moments,
        nll_sum: sums[0],
        counts: sums[1..].iter().map(|&c| c as usize).collect(),
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
            let got = evaluate_in_passes(&Single, &s, &r, Some(&mixture), read, pass)
                .unwrap()
                .unwrap();
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
    fn sharded_metrics_equal_one_process_at_any_rank_count() {
        let mixture = Mixture::new(
            vec![0.5, 0.3, 0.2],
            (0..18).map(|i| (i % 4) as f64 - 1.5).collect(),
            vec![1.0, 0.5, 2.0],
            6,
        )
        .unwrap();
        let (s, r) = (rows(2003, 6, 5), rows(800, 6, 6));
        let want = evaluate(&s, &r, Some(&mixture)).unwrap();
        // Uneven shares (2003 rows), reads of 300 rows, SW2 in passes of 16 or 8 directions.
        for ranks in [1, 2, 3] {
            let got = crate::dist::Threads::run(ranks, |w| {
                evaluate_in_passes(w, &s, &r, Some(&mixture), 300 * 6 * 4, 2003 * 8 * 32).unwrap()
            });
            assert!(got[1..].iter().all(Option::is_none), "{ranks} ranks");
            let got = got[0].unwrap();
            let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
            assert!(rel(got.fd, want.fd) < 1e-9, "{got:?} vs {want:?}");
            assert!(rel(got.fd_exact.unwrap(), want.fd_exact.unwrap()) < 1e-9);
            assert!(rel(got.nll.unwrap(), want.nll.unwrap()) < 1e-12);
            // Sorted runs merged: the same sorted projections; counts are exact.
            assert_eq!((got.sw2, got.mode_kl), (want.sw2, want.mode_kl));
        }
    }

    #[test]
    fn merged_runs_are_sorted_in_total_order() {
        let runs: [&[f64]; 3] = [&[-1.0, 0.0, 2.0], &[-0.0, 1.0], &[-3.0, 5.0]];
        let merged = merge_sorted(&runs);
        let mut want = runs.concat();
        want.sort_by(f64::total_cmp);
        assert_eq!(
            merged.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
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
