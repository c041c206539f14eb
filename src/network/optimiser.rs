//! The optimiser's passes over a network's flat host vectors (weights, gradient, AdamW moments,
//! EMA): each update is one rayon-parallel pass, element by element in f32 with the same
//! operations, in the same order, as dfdx's tensor ops (`axpy`, scalar multiply, `sqrt`, divide),
//! so the results are those of the op-by-op version bit for bit.

use crate::denoiser::AdamW;
use rayon::prelude::*;
use std::ops::Range;

/// Elements per parallel task: large enough that scheduling costs nothing.
const CHUNK: usize = 1 << 14;

/// The global L2 norm of `g`, summed as dfdx sums: each tensor (`ranges`) sequentially in f32,
/// then the tensors' sums in order, in f32.
pub fn grad_norm(g: &[f32], ranges: &[Range<usize>]) -> f64 {
    let sums: Vec<f32> = ranges
        .par_iter()
        .map(|r| g[r.clone()].iter().fold(0.0f32, |acc, &x| acc + x * x))
        .collect();
    let total = sums
        .into_iter()
        .fold(None, |acc: Option<f32>, s| match acc {
            None => Some(s),
            Some(a) => Some(a + s),
        });
    total.map_or(0.0, |t| f64::from(t).sqrt())
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
    let scale = (grad_scale != 1.0).then_some(grad_scale as f32);
    w.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((w, m), v), g)| {
            for i in 0..w.len() {
                let g = scale.map_or(g[i], |s| g[i] * s);
                m[i] = m[i] * b1 + g * nb1;
                v[i] = v[i] * b2 + (g * g) * nb2;
                let denom = (v[i] * v_hat).sqrt() + eps;
                let step = (m[i] * step_size) / denom;
                // dfdx: axpy(decay, step, -1), i.e. w * decay + step * -1, which is this exactly.
                w[i] = w[i] * decay - step;
            }
        });
}

/// ema = decay * ema + (1 - decay) * w.
pub fn ema(ema: &mut [f32], w: &[f32], decay: f64) {
    let (a, b) = (decay as f32, (1.0 - decay) as f32);
    ema.par_chunks_mut(CHUNK)
        .zip(w.par_chunks(CHUNK))
        .for_each(|(e, w)| {
            for (e, &w) in e.iter_mut().zip(w) {
                *e = *e * a + w * b;
            }
        });
}
