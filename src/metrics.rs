//! Sample-quality metrics, computed on the host in f64 from row-major `[n, d]` float32 sets:
//! Fréchet distance between Gaussian fits (the FID analogue, on raw coordinates), sliced
//! Wasserstein-2, and for Gaussian-mixture references the exact NLL and mode coverage.
//!
//! Every metric is deterministic: the same inputs give the same bits on any machine (parallel
//! work is split in a fixed way and summed in a fixed order).

use crate::data::{DataArray, Mixture};
use anyhow::{bail, Result};
use nalgebra::{DMatrix, DVector, SymmetricEigen};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;

pub use stream::{evaluate_sharded, evaluate_stream, RowSource, SW_PASS_BYTES};

mod stream;

/// Number of projection directions of [`sw2`].
pub const SW_DIRECTIONS: usize = 256;
/// Seed of [`sw2`]'s directions: fixed, so values are comparable across runs and files.
const SW_SEED: u64 = 0x5357_325f_6469_7273;
/// Share given to a mode with no samples in [`mode_kl`] (before renormalising), so a dropped
/// mode of weight w costs about w * ln(w / 1e-6) instead of infinity.
pub const MODE_FLOOR: f64 = 1e-6;
/// Rows per block in the covariance and projection products (bounds the f64 scratch memory).
const BLOCK: usize = 512;

/// The metrics of `fewstep eval`; `None` where the reference has no `/mixture`.
#[derive(Serialize, Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// Fréchet distance between Gaussian fits of samples and reference.
    pub fd: f64,
    /// Fréchet distance between the samples' Gaussian fit and the mixture's exact mean and
    /// covariance: the reference set's own sampling noise is not in it.
    pub fd_exact: Option<f64>,
    /// Sliced Wasserstein-2 distance (data units).
    pub sw2: f64,
    /// Mean exact negative log-likelihood of the samples under the mixture (nats per sample).
    pub nll: Option<f64>,
    /// KL(mixture weights || share of samples nearest to each mode).
    pub mode_kl: Option<f64>,
}

/// All metrics of `samples` against `reference` (and `mixture`, usually the reference's own).
pub fn evaluate(
    samples: &DataArray,
    reference: &DataArray,
    mixture: Option<&Mixture>,
) -> Result<Metrics> {
    check_pair(samples, reference)?;
    let ((fd, sw2), mix) = rayon::join(
        || {
            rayon::join(
                || fd_and_fit(samples, reference),
                || sw2(samples, reference),
            )
        },
        || mixture.map(|m| Ok::<_, anyhow::Error>((nll(samples, m)?, mode_kl(samples, m)?))),
    );
    let (fd, fit) = fd?;
    let mix = mix.transpose()?;
    // The samples' fit that FD made (fitted here only where FD took its low-rank form).
    let fd_exact = mixture.map(|m| {
        let (mu, c) = fit.unwrap_or_else(|| gaussian_fit(samples));
        fd_exact(&mu, &c, m)
    });
    Ok(Metrics {
        fd,
        fd_exact,
        sw2: sw2?,
        nll: mix.map(|m| m.0),
        mode_kl: mix.map(|m| m.1),
    })
}

/// The mixture's mean and covariance in closed form: mu = sum_k w_k mu_k and
/// C = sum_k w_k (s_k^2 I + mu_k mu_k^T) - mu mu^T.
pub fn mixture_moments(m: &Mixture) -> (Vec<f64>, DMatrix<f64>) {
    let d = m.dim;
    let mut mu = vec![0.0; d];
    let mut c = DMatrix::zeros(d, d);
    for (k, &w) in m.weights.iter().enumerate() {
        let mk = DVector::from_column_slice(m.mean(k));
        mu.iter_mut().zip(mk.iter()).for_each(|(a, b)| *a += w * b);
        c.ger(w, &mk, &mk, 1.0);
        for i in 0..d {
            c[(i, i)] += w * m.stds[k] * m.stds[k];
        }
    }
    let mu_v = DVector::from_column_slice(&mu);
    c.ger(-1.0, &mu_v, &mu_v, 1.0);
    (mu, c)
}

/// [`frechet`] between a Gaussian fit (mean `mu`, covariance `c`) and the mixture's exact
/// moments.
pub fn fd_exact(mu: &[f64], c: &DMatrix<f64>, m: &Mixture) -> f64 {
    let (mu2, c2) = mixture_moments(m);
    frechet(mu, c, &mu2, &c2)
}

/// Fréchet distance between Gaussian fits (mean, unbiased covariance) of two sets:
/// `|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2)`. Each set needs at least 2 rows.
pub fn fd(a: &DataArray, b: &DataArray) -> Result<f64> {
    Ok(fd_and_fit(a, b)?.0)
}

/// A Gaussian fit: mean and covariance.
type GaussianFit = (Vec<f64>, DMatrix<f64>);

/// [`fd`] and the Gaussian fit of `a` it made (`None` where it took the low-rank form, which
/// fits no covariance).
fn fd_and_fit(a: &DataArray, b: &DataArray) -> Result<(f64, Option<GaussianFit>)> {
    check_pair(a, b)?;
    if a.rows() < 2 || b.rows() < 2 {
        bail!(
            "FD needs at least 2 rows per set to fit a covariance (got {} and {})",
            a.rows(),
            b.rows()
        );
    }
    if a.rows().max(b.rows()) < a.row_dim() {
        return Ok((frechet_low_rank(a, b), None));
    }
    let ((mu1, c1), (mu2, c2)) = rayon::join(|| gaussian_fit(a), || gaussian_fit(b));
    Ok((frechet(&mu1, &c1, &mu2, &c2), Some((mu1, c1))))
}

/// [`frechet`] of the Gaussian fits for sets with fewer rows than dimensions (e.g. 1000 images
/// of 3x32x32), in sample space: with C1 = A A^T and C2 = B B^T (A, B the centred rows over
/// sqrt(n - 1)), C1^1/2 C2 C1^1/2 has the non-zero spectrum of G^T G, G = A^T B (n1 x n2), so
/// the trace term is the sum of G's singular values. It costs O(d n1 n2 + n^3) instead of
/// O(d^3), the same number up to rounding.
pub fn frechet_low_rank(a: &DataArray, b: &DataArray) -> f64 {
    let centred = |x: &DataArray| {
        let (n, d) = (x.rows(), x.row_dim());
        let mut mean = vec![0.0f64; d];
        for row in x.values.chunks_exact(d) {
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, v)| *m += f64::from(*v));
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let scale = 1.0 / ((n.max(2) - 1) as f64).sqrt();
        let values: Vec<f64> = x
            .values
            .chunks_exact(d)
            .flat_map(|r| {
                r.iter()
                    .zip(&mean)
                    .map(|(v, m)| (f64::from(*v) - m) * scale)
            })
            .collect();
        (mean, DMatrix::from_vec(d, n, values))
    };
    let ((mu1, a), (mu2, b)) = rayon::join(|| centred(a), || centred(b));
    let dmu2: f64 = mu1.iter().zip(&mu2).map(|(x, y)| (x - y) * (x - y)).sum();
    let g = a.transpose() * &b;
    let gram = if g.nrows() >= g.ncols() {
        g.transpose() * &g
    } else {
        &g * g.transpose()
    };
    let gram = (&gram + gram.transpose()) * 0.5;
    let tr_sqrt: f64 = gram
        .symmetric_eigenvalues()
        .iter()
        .map(|l| l.max(0.0).sqrt())
        .sum();
    (dmu2 + a.norm_squared() + b.norm_squared() - 2.0 * tr_sqrt).max(0.0)
}

/// Fréchet distance between N(mu1, c1) and N(mu2, c2). Eigenvalues that rounding pushes below
/// zero are clamped to zero, and so is the result.
pub fn frechet(mu1: &[f64], c1: &DMatrix<f64>, mu2: &[f64], c2: &DMatrix<f64>) -> f64 {
    let dmu2: f64 = mu1.iter().zip(mu2).map(|(a, b)| (a - b) * (a - b)).sum();
    // C1 = V L V^T; with W = V L^1/2, W^T C2 W = V^T (C1^1/2 C2 C1^1/2) V has the same spectrum,
    // and only its eigenvalues are needed.
    let eig = SymmetricEigen::new(c1.clone());
    let mut w = eig.eigenvectors;
    for (mut col, l) in w.column_iter_mut().zip(eig.eigenvalues.iter()) {
        col *= l.max(0.0).sqrt();
    }
    let m = w.transpose() * c2 * &w;
    let m = (&m + m.transpose()) * 0.5;
    let tr_sqrt: f64 = m
        .symmetric_eigenvalues()
        .iter()
        .map(|l| l.max(0.0).sqrt())
        .sum();
    (dmu2 + c1.trace() + c2.trace() - 2.0 * tr_sqrt).max(0.0)
}

/// Mean and unbiased (n - 1) covariance of the rows, in f64.
pub fn gaussian_fit(x: &DataArray) -> (Vec<f64>, DMatrix<f64>) {
    let (n, d) = (x.rows(), x.row_dim());
    let mut mean = vec![0.0f64; d];
    for row in x.values.chunks_exact(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    // Two fixed halves in parallel, summed in order: deterministic on any thread count.
    let (lo, hi) = x.values.split_at(n.div_ceil(2) * d);
    let (c_lo, c_hi) = rayon::join(|| centered_cross(lo, &mean), || centered_cross(hi, &mean));
    let cov = (c_lo + c_hi) / (n.max(2) - 1) as f64;
    (mean, cov)
}

/// sum_i (x_i - mean)(x_i - mean)^T over row-major rows.
fn centered_cross(rows: &[f32], mean: &[f64]) -> DMatrix<f64> {
    let d = mean.len();
    let mut acc = DMatrix::zeros(d, d);
    for block in rows.chunks(BLOCK * d) {
        let centered = block
            .chunks_exact(d)
            .flat_map(|r| r.iter().zip(mean).map(|(v, m)| f64::from(*v) - m));
        // Column j of the d x m matrix is row j of the block.
        let y = DMatrix::from_iterator(d, block.len() / d, centered);
        acc.gemm(1.0, &y, &y.transpose(), 1.0);
    }
    acc
}

/// Sliced Wasserstein-2 distance: `sqrt(mean_u W2^2(u.a, u.b))` over [`SW_DIRECTIONS`] fixed
/// unit directions u (data units, like a standard deviation). W2^2 between the 1-D projections
/// is exact for empirical distributions of any sizes (their quantile functions are matched).
/// The directions come in random orthonormal frames, so for any vector v the directions'
/// mean of (u.v)^2 is exactly |v|^2 / d whenever d divides [`SW_DIRECTIONS`].
pub fn sw2(a: &DataArray, b: &DataArray) -> Result<f64> {
    check_pair(a, b)?;
    let dirs = directions(a.row_dim(), SW_DIRECTIONS);
    let (mut pa, mut pb) = rayon::join(|| project(a, &dirs), || project(b, &dirs));
    pa.par_iter_mut()
        .chain(pb.par_iter_mut())
        .for_each(|p| sort_f64(p));
    let w2: Vec<f64> = pa
        .par_iter()
        .zip(&pb)
        .map(|(x, y)| w2sq_sorted(x, y))
        .collect();
    Ok((w2.iter().sum::<f64>() / w2.len() as f64).sqrt())
}

/// `count` unit vectors in `d` dimensions, as the columns of a `[d, count]` matrix: consecutive
/// frames of up to d orthonormal directions (Gram-Schmidt on Gaussian draws from the fixed seed).
fn directions(d: usize, count: usize) -> DMatrix<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(SW_SEED);
    let mut dirs: Vec<f64> = Vec::with_capacity(count * d);
    let mut in_frame = 0;
    while dirs.len() < count * d {
        if in_frame == d {
            in_frame = 0;
        }
        let frame = dirs.len() - in_frame * d;
        let u = loop {
            let mut u: Vec<f64> = (0..d)
                .map(|_| rng.sample(rand_distr::StandardNormal))
                .collect();
            // Twice, for orthogonality to rounding accuracy.
            for _ in 0..2 {
                for prev in dirs[frame..].chunks_exact(d) {
                    let p: f64 = u.iter().zip(prev).map(|(a, b)| a * b).sum();
                    u.iter_mut().zip(prev).for_each(|(a, b)| *a -= p * b);
                }
            }
            let norm = u.iter().map(|a| a * a).sum::<f64>().sqrt();
            // A draw almost inside the span so far (vanishingly rare) is redrawn.
            if norm > 1e-6 {
                break u.into_iter().map(move |a| a / norm);
            }
        };
        dirs.extend(u);
        in_frame += 1;
    }
    DMatrix::from_vec(d, count, dirs)
}

/// Projections of every row onto every direction, one vector of length n per direction.
fn project(x: &DataArray, dirs: &DMatrix<f64>) -> Vec<Vec<f64>> {
    let d = x.row_dim();
    let mut out: Vec<Vec<f64>> = (0..dirs.ncols())
        .map(|_| Vec::with_capacity(x.rows()))
        .collect();
    for block in x.values.chunks(BLOCK * d) {
        let y = DMatrix::from_iterator(d, block.len() / d, block.iter().map(|v| f64::from(*v)));
        // Column k of the product holds the block's projections onto direction k.
        let p = y.transpose() * dirs;
        for (o, col) in out.iter_mut().zip(p.column_iter()) {
            o.extend_from_slice(col.as_slice());
        }
    }
    out
}

/// An integer that orders f64 values as [`f64::total_cmp`] does: every bit but the sign of a
/// negative number flipped.
fn order_key(x: f64) -> i64 {
    let b = x.to_bits() as i64;
    b ^ (((b >> 63) as u64) >> 1) as i64
}

/// Sorts floats through their IEEE total-order integer keys (faster than comparing floats).
fn sort_f64(v: &mut [f64]) {
    let mut keys: Vec<i64> = v.iter().map(|x| order_key(*x)).collect();
    keys.sort_unstable();
    for (x, k) in v.iter_mut().zip(keys) {
        // The map is an involution (the sign bit is kept).
        *x = f64::from_bits((k ^ (((k >> 63) as u64) >> 1) as i64) as u64);
    }
}

/// Exact W2^2 between two sorted 1-D empirical distributions: the integral over t in [0, 1] of
/// (Fa^-1(t) - Fb^-1(t))^2, piecewise constant between the breakpoints i/na and j/nb.
fn w2sq_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (na, nb) = (a.len() as u128, b.len() as u128);
    // Positions in units of 1 / (na nb), so breakpoints compare exactly.
    let (mut i, mut j, mut t, mut acc) = (0usize, 0usize, 0u128, 0.0f64);
    while i < a.len() && j < b.len() {
        let (ta, tb) = ((i as u128 + 1) * nb, (j as u128 + 1) * na);
        let next = ta.min(tb);
        let diff = a[i] - b[j];
        acc += (next - t) as f64 * diff * diff;
        t = next;
        i += usize::from(ta == next);
        j += usize::from(tb == next);
    }
    acc / (na * nb) as f64
}

/// Mean exact negative log-likelihood of the rows under `mixture` (nats per sample), via
/// log-sum-exp over components.
pub fn nll(samples: &DataArray, mixture: &Mixture) -> Result<f64> {
    check_mixture(samples, mixture)?;
    let log_norm = log_norms(mixture);
    let per_row: Vec<f64> = samples
        .values
        .par_chunks_exact(mixture.dim)
        .map(|x| row_nll(x, mixture, &log_norm))
        .collect();
    Ok(per_row.iter().sum::<f64>() / per_row.len() as f64)
}

/// ln(w_k) - d/2 ln(2 pi s_k^2) per component k: the row-independent part of its log-density.
fn log_norms(mixture: &Mixture) -> Vec<f64> {
    let d = mixture.dim as f64;
    (0..mixture.components())
        .map(|k| {
            let s = mixture.stds[k];
            mixture.weights[k].ln() - 0.5 * d * (2.0 * std::f64::consts::PI * s * s).ln()
        })
        .collect()
}

/// Exact negative log-likelihood of one row under `mixture` (`log_norm` from [`log_norms`]).
fn row_nll(x: &[f32], mixture: &Mixture, log_norm: &[f64]) -> f64 {
    let logp: Vec<f64> = (0..mixture.components())
        .map(|k| {
            let s = mixture.stds[k];
            log_norm[k] - sq_dist(x, mixture.mean(k)) / (2.0 * s * s)
        })
        .collect();
    -log_sum_exp(&logp)
}

/// The component whose mean is nearest (Euclidean) to row `x`.
fn nearest_mode(x: &[f32], mixture: &Mixture) -> usize {
    (0..mixture.components())
        .map(|k| sq_dist(x, mixture.mean(k)))
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(k, _)| k)
}

/// Mode coverage: KL(w || q), w the mixture weights and q_k the share of samples whose nearest
/// mean (Euclidean) is mode k. Empty modes get share [`MODE_FLOOR`] and q is renormalised, so the
/// value stays finite and >= 0; 0 means every mode is hit in proportion.
pub fn mode_kl(samples: &DataArray, mixture: &Mixture) -> Result<f64> {
    check_mixture(samples, mixture)?;
    let nearest: Vec<usize> = samples
        .values
        .par_chunks_exact(mixture.dim)
        .map(|x| nearest_mode(x, mixture))
        .collect();
    let mut counts = vec![0usize; mixture.components()];
    nearest.iter().for_each(|&k| counts[k] += 1);
    Ok(kl_of_counts(&counts, mixture))
}

/// [`mode_kl`] from the number of samples nearest to each mode.
fn kl_of_counts(counts: &[usize], mixture: &Mixture) -> f64 {
    let rows: usize = counts.iter().sum();
    let q: Vec<f64> = counts
        .iter()
        .map(|&c| (c as f64 / rows as f64).max(MODE_FLOOR))
        .collect();
    let total: f64 = q.iter().sum();
    mixture
        .weights
        .iter()
        .zip(&q)
        .filter(|(w, _)| **w > 0.0)
        .map(|(w, q)| w * (w * total / q).ln())
        .sum()
}

fn sq_dist(x: &[f32], mu: &[f64]) -> f64 {
    x.iter()
        .zip(mu)
        .map(|(a, b)| (f64::from(*a) - b).powi(2))
        .sum()
}

fn log_sum_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

fn check_pair(samples: &DataArray, reference: &DataArray) -> Result<()> {
    check_shapes(&samples.shape, &reference.shape)
}

fn check_shapes(samples: &[usize], reference: &[usize]) -> Result<()> {
    let row_dim = |s: &[usize]| s[1..].iter().product::<usize>();
    if row_dim(samples) != row_dim(reference) {
        bail!(
            "dimension mismatch: samples have rows of size {} (shape {:?}), the reference {} (shape {:?})",
            row_dim(samples),
            samples,
            row_dim(reference),
            reference
        );
    }
    if samples[0] == 0 || reference[0] == 0 || row_dim(samples) == 0 {
        bail!(
            "cannot compare empty sets (samples shape {:?}, reference shape {:?})",
            samples,
            reference
        );
    }
    Ok(())
}

fn check_mixture(samples: &DataArray, mixture: &Mixture) -> Result<()> {
    if samples.row_dim() != mixture.dim {
        bail!(
            "dimension mismatch: samples have rows of size {}, the mixture has dimension {}",
            samples.row_dim(),
            mixture.dim
        );
    }
    if samples.rows() == 0 {
        bail!("no samples to score against the mixture");
    }
    Ok(())
}
