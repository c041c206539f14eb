//! The optimiser's passes over a network's flat host vectors (weights, gradient, AdamW moments,
//! EMA): each update is one rayon-parallel pass, element by element in f32 with the same
//! operations, in the same order, as dfdx's tensor ops (`axpy`, scalar multiply, `sqrt`, divide),
//! so the results are those of the op-by-op version bit for bit.

use super::simd::vectorised;
use crate::denoiser::AdamW;
use rayon::prelude::*;
use std::ops::Range;

/// Elements per parallel task: large enough that scheduling costs nothing.
const CHUNK: usize = 1 << 14;

/// The global L2 norm of `g`, summed as dfdx sums: each tensor (`ranges`) sequentially in f32,
/// then the tensors' sums in order, in f32.
pub fn grad_norm(g: &[f32], ranges: &[Range<usize>]) -> f64 {
    // Tensors of equal length are summed four at a time in lockstep: each sum keeps its own
    // sequential order (the same bits), and four independent chains hide the adds' latency,
    // which bounds a single sequential sum.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut by_len: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, r) in ranges.iter().enumerate() {
        by_len.entry(r.len()).or_default().push(i);
    }
    for (_, ids) in by_len {
        groups.extend(ids.chunks(4).map(<[usize]>::to_vec));
    }
    let parts: Vec<Vec<(usize, f32)>> = groups
        .par_iter()
        .map(|ids| {
            let slice = |i: usize| &g[ranges[i].clone()];
            match ids[..] {
                [a, b, c, d] => {
                    let s = sum_squares4([slice(a), slice(b), slice(c), slice(d)]);
                    vec![(a, s[0]), (b, s[1]), (c, s[2]), (d, s[3])]
                }
                _ => ids.iter().map(|&i| (i, sum_squares(slice(i)))).collect(),
            }
        })
        .collect();
    let mut sums = vec![0.0f32; ranges.len()];
    for (i, s) in parts.into_iter().flatten() {
        sums[i] = s;
    }
    let total = sums
        .into_iter()
        .fold(None, |acc: Option<f32>, s| match acc {
            None => Some(s),
            Some(a) => Some(a + s),
        });
    total.map_or(0.0, |t| f64::from(t).sqrt())
}

/// The sum of squares in index order, in f32.
fn sum_squares(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |acc, &v| acc + v * v)
}

/// [`sum_squares`] of four slices of equal length, in lockstep.
fn sum_squares4(x: [&[f32]; 4]) -> [f32; 4] {
    let mut acc = [0.0f32; 4];
    let rows = x[0].iter().zip(x[1]).zip(x[2].iter().zip(x[3]));
    for ((&a, &b), (&c, &d)) in rows {
        acc[0] += a * a;
        acc[1] += b * b;
        acc[2] += c * c;
        acc[3] += d * d;
    }
    acc
}

/// One AdamW update (decoupled weight decay) of `w` with moments `m`, `v` and gradient `g`
/// scaled by `grad_scale`; `t` counts updates from 1.
pub fn adamw(
    w: &mut [f32],
    m: &mut [f32],
    v: &mut [f32],
    g: &[f32],
    o: &AdamW,
    t: u64,
    grad_scale: f64,
) {
    let t = t.max(1) as i32;
    let (b1, nb1) = (o.beta1 as f32, (1.0 - o.beta1) as f32);
    let (b2, nb2) = (o.beta2 as f32, (1.0 - o.beta2) as f32);
    let v_hat = (1.0 / (1.0 - o.beta2.powi(t))) as f32;
    let step_size = (o.lr * (1.0 / (1.0 - o.beta1.powi(t)))) as f32;
    let eps = o.eps as f32;
    let decay = (1.0 - o.lr * o.weight_decay) as f32;
    let c = AdamConsts {
        b1,
        nb1,
        b2,
        nb2,
        v_hat,
        step_size,
        eps,
        decay,
        // Unscaled, g is used as is (g * 1.0 is g, but say so rather than rely on it).
        scale: (grad_scale != 1.0).then_some(grad_scale as f32),
    };
    w.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((w, m), v), g)| adamw_chunk(w, m, v, g, c));
}

/// AdamW's per-step constants, in f32.
#[derive(Clone, Copy)]
struct AdamConsts {
    b1: f32,
    nb1: f32,
    b2: f32,
    nb2: f32,
    v_hat: f32,
    step_size: f32,
    eps: f32,
    decay: f32,
    scale: Option<f32>,
}

vectorised! {
    fn adamw_chunk<'a>(w: &'a mut [f32], m: &'a mut [f32], v: &'a mut [f32], g: &'a [f32], c: AdamConsts) {
        for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
            let g = c.scale.map_or(g, |s| g * s);
            *m = *m * c.b1 + g * c.nb1;
            *v = *v * c.b2 + (g * g) * c.nb2;
            let denom = (*v * c.v_hat).sqrt() + c.eps;
            let step = (*m * c.step_size) / denom;
            // dfdx: axpy(decay, step, -1), i.e. w * decay + step * -1, which is this exactly.
            *w = *w * c.decay - step;
        }
    }
}

vectorised! {
    fn ema_chunk<'a>(e: &'a mut [f32], w: &'a [f32], a: f32, b: f32) {
        for (e, &w) in e.iter_mut().zip(w) {
            *e = *e * a + w * b;
        }
    }
}

/// ema = decay * ema + (1 - decay) * w.
pub fn ema(ema: &mut [f32], w: &[f32], decay: f64) {
    let (a, b) = (decay as f32, (1.0 - decay) as f32);
    ema.par_chunks_mut(CHUNK)
        .zip(w.par_chunks(CHUNK))
        .for_each(|(e, w)| ema_chunk(e, w, a, b));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// The lockstep sums give each tensor's sequential sum, so the norm is the plain definition's
    /// bit for bit (five equal lengths: a group of four and a single; and odd lengths).
    #[test]
    fn grad_norm_equals_the_sequential_sums() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let lens = [1000, 7, 1000, 1000, 0, 1000, 33, 1000];
        let n: usize = lens.iter().sum();
        let g: Vec<f32> = (0..n).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
        let mut ranges = Vec::new();
        let mut at = 0;
        for l in lens {
            ranges.push(at..at + l);
            at += l;
        }
        let mut total = None;
        for r in &ranges {
            let s = g[r.clone()].iter().fold(0.0f32, |acc, &x| acc + x * x);
            total = Some(total.map_or(s, |t: f32| t + s));
        }
        let want = f64::from(total.unwrap()).sqrt();
        assert_eq!(grad_norm(&g, &ranges).to_bits(), want.to_bits());
    }

    /// The vectorised passes give the scalar loop's numbers bit for bit (odd lengths cover the
    /// loop tails; the sizes cross CHUNK so several tasks run).
    #[test]
    fn vectorised_adamw_and_ema_equal_the_scalar_loop() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let n = 2 * CHUNK + 37;
        let mut draw = |s: f32| (0..n).map(|_| rng.gen_range(-s..s)).collect::<Vec<f32>>();
        let (w0, g) = (draw(1.0), draw(3.0));
        let (m0, v0) = (
            draw(0.1),
            draw(0.01).iter().map(|v| v.abs()).collect::<Vec<_>>(),
        );
        let o = AdamW {
            lr: 2e-3,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.01,
        };
        for scale in [1.0, 0.37] {
            let (mut w, mut m, mut v) = (w0.clone(), m0.clone(), v0.clone());
            adamw(&mut w, &mut m, &mut v, &g, &o, 3, scale);
            let t = 3;
            let v_hat = (1.0 / (1.0 - o.beta2.powi(t))) as f32;
            let step_size = (o.lr * (1.0 / (1.0 - o.beta1.powi(t)))) as f32;
            let decay = (1.0 - o.lr * o.weight_decay) as f32;
            for i in 0..n {
                let gi = if scale == 1.0 {
                    g[i]
                } else {
                    g[i] * scale as f32
                };
                let mi = m0[i] * 0.9f64 as f32 + gi * (1.0 - 0.9f64) as f32;
                let vi = v0[i] * 0.99f64 as f32 + (gi * gi) * (1.0 - 0.99f64) as f32;
                let step = (mi * step_size) / ((vi * v_hat).sqrt() + 1e-8f64 as f32);
                let wi = w0[i] * decay - step;
                assert_eq!(
                    (w[i].to_bits(), m[i].to_bits(), v[i].to_bits()),
                    (wi.to_bits(), mi.to_bits(), vi.to_bits()),
                    "element {i}, scale {scale}"
                );
            }
        }
        let mut e = m0.clone();
        ema(&mut e, &w0, 0.999);
        for i in 0..n {
            let want = m0[i] * 0.999f64 as f32 + w0[i] * (1.0 - 0.999f64) as f32;
            assert_eq!(e[i].to_bits(), want.to_bits(), "ema element {i}");
        }
    }
}
