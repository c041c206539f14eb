//! The CPU path of [`super::Dense`]: y = [SiLU](x W^T + b + extra) as one op on the host, its
//! matmuls on `gemm` (AVX-512 where available) and the bias, addend and activation in the same
//! pass, with a backward pass that writes the gradients of W, b, x and the addend straight into
//! dfdx's gradient buffers (through the tape's public API). dfdx's op-by-op version allocates a
//! tensor and makes a pass over memory per op; this makes one per layer.

use super::act::Act;
use crate::tensor::Dev;
use dfdx::prelude::*;
use rayon::prelude::*;

/// Elements per parallel task of the elementwise passes.
const CHUNK: usize = 1 << 14;

/// A row-major matrix view: values, rows, columns.
struct Mat<'a>(&'a [f32], usize, usize);

/// dst (m x n, row-major) = [dst +] a * b, with a = `a` or its transpose (`ta`) and likewise b.
fn matmul(dst: &mut [f32], accumulate: bool, a: Mat, ta: bool, b: Mat, tb: bool) {
    let (m, k) = if ta { (a.2, a.1) } else { (a.1, a.2) };
    let (k2, n) = if tb { (b.2, b.1) } else { (b.1, b.2) };
    assert!(
        k == k2 && dst.len() == m * n && a.0.len() == a.1 * a.2 && b.0.len() == b.1 * b.2,
        "matmul: shapes disagree"
    );
    // (row stride, column stride) of each operand as used.
    let strides = |t: bool, cols: usize| if t { (1, cols) } else { (cols, 1) };
    let (a_rs, a_cs) = strides(ta, a.2);
    let (b_rs, b_cs) = strides(tb, b.2);
    // SAFETY: the asserts above bound every index gemm forms from these sizes and strides.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.0.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.0.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

/// The fused forward pass of the layer (`weight` `[out, in]`, `bias` `[out]`) with activation
/// `act`; records its backward pass on the tape of `x` (and of `extra`).
pub fn forward<T: Tape<f32, Dev>>(
    weight: &Tensor<(usize, usize), f32, Dev>,
    bias: &Tensor<(usize,), f32, Dev>,
    x: Tensor<(usize, usize), f32, Dev, T>,
    act: Act,
    extra: Option<Tensor<(usize, usize), f32, Dev, T>>,
) -> Tensor<(usize, usize), f32, Dev, T> {
    let (rows, inputs) = *x.shape();
    let outputs = weight.shape().0;
    let dev = x.device().clone();
    let (x, mut tape) = x.split_tape();
    let x_host = x.as_vec();
    let w_host = weight.as_vec();
    let b_host = bias.as_vec();
    let mut pre = vec![0.0f32; rows * outputs];
    matmul(
        &mut pre,
        false,
        Mat(&x_host, rows, inputs),
        false,
        Mat(&w_host, outputs, inputs),
        true,
    );
    let extra = extra.map(|e| {
        let (e, t) = e.split_tape();
        tape = std::mem::take(&mut tape).merge(t);
        e
    });
    let extra_host = extra.as_ref().map(|e| e.as_vec());
    pre.par_chunks_mut(outputs).enumerate().for_each(|(r, p)| {
        let e = extra_host
            .as_ref()
            .map(|e| &e[r * outputs..(r + 1) * outputs]);
        for o in 0..outputs {
            p[o] += b_host[o];
            if let Some(e) = e {
                p[o] += e[o];
            }
        }
    });
    // Without a tape (sampling) the activation overwrites the pre-activation. With one, the
    // backward pass needs the pre-activation and what the derivative needs (sigmoid(pre) for
    // SiLU), kept instead of recomputed.
    let keep = T::OWNS_TAPE && act != Act::Identity;
    let mut aux = if keep {
        vec![0.0f32; rows * outputs]
    } else {
        Vec::new()
    };
    let mut y = if keep {
        pre.clone()
    } else {
        std::mem::take(&mut pre)
    };
    if keep {
        y.par_chunks_mut(CHUNK)
            .zip(aux.par_chunks_mut(CHUNK))
            .for_each(|(y, aux)| {
                for (y, a) in y.iter_mut().zip(aux) {
                    (*y, *a) = act.forward(*y);
                }
            });
    } else if act != Act::Identity {
        y.par_chunks_mut(CHUNK).for_each(|y| {
            for y in y.iter_mut() {
                *y = act.forward(*y).0;
            }
        });
    }
    let out = dev.tensor_from_vec(y, (rows, outputs));
    if T::OWNS_TAPE {
        let (x_g, w_g, b_g, out_g) = (x.ghost(), weight.ghost(), bias.ghost(), out.ghost());
        let e_g = extra.as_ref().map(|e| e.ghost());
        tape.add_backward_op(move |grads| {
            // The output's gradient is complete (its users ran first) and read by nobody after
            // this op: take it, instead of copying it, and turn it into the pre-activation's.
            let mut g = std::mem::take(&mut **grads.get_or_alloc_mut(&out_g)?);
            if act != Act::Identity {
                g.par_chunks_mut(CHUNK)
                    .zip(pre.par_chunks(CHUNK).zip(aux.par_chunks(CHUNK)))
                    .for_each(|(g, (p, a))| {
                        for ((g, &p), &a) in g.iter_mut().zip(p).zip(a) {
                            *g *= act.derivative(p, a);
                        }
                    });
            }
            let gw = grads.get_or_alloc_mut(&w_g)?;
            matmul(
                gw,
                true,
                Mat(&g, rows, outputs),
                true,
                Mat(&x_host, rows, inputs),
                false,
            );
            let gb = grads.get_or_alloc_mut(&b_g)?;
            for row in g.chunks_exact(outputs) {
                for (b, &v) in gb.iter_mut().zip(row) {
                    *b += v;
                }
            }
            let gx = grads.get_or_alloc_mut(&x_g)?;
            matmul(
                gx,
                true,
                Mat(&g, rows, outputs),
                false,
                Mat(&w_host, outputs, inputs),
                false,
            );
            if let Some(e_g) = e_g {
                let ge = grads.get_or_alloc_mut(&e_g)?;
                for (a, &v) in ge.iter_mut().zip(&g) {
                    *a += v;
                }
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// Layer norm of each row of `x` (`[rows, width]`) as one op: (x - mean) / sqrt(var + eps) *
/// gamma + beta, with its backward pass (gamma, beta and x) on the tape of `x`.
pub fn layer_norm<T: Tape<f32, Dev>>(
    gamma: &Tensor<(usize,), f32, Dev>,
    beta: &Tensor<(usize,), f32, Dev>,
    x: Tensor<(usize, usize), f32, Dev, T>,
    eps: f32,
) -> Tensor<(usize, usize), f32, Dev, T> {
    let (rows, width) = *x.shape();
    let dev = x.device().clone();
    let (x, mut tape) = x.split_tape();
    let (g, b) = (gamma.as_vec(), beta.as_vec());
    // x becomes x_hat in place; rstd = 1 / sqrt(var + eps) per row.
    let mut xhat = x.as_vec();
    let mut rstd = vec![0.0f32; rows];
    xhat.par_chunks_mut(width)
        .zip(rstd.par_iter_mut())
        .for_each(|(r, s)| {
            let mean = r.iter().sum::<f32>() / width as f32;
            let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
            *s = 1.0 / (var + eps).sqrt();
            for v in r.iter_mut() {
                *v = (*v - mean) * *s;
            }
        });
    let mut y = vec![0.0f32; rows * width];
    y.par_chunks_mut(width)
        .zip(xhat.par_chunks(width))
        .for_each(|(y, xh)| {
            for i in 0..width {
                y[i] = xh[i] * g[i] + b[i];
            }
        });
    let out = dev.tensor_from_vec(y, (rows, width));
    if T::OWNS_TAPE {
        let (x_g, g_g, b_g, out_g) = (x.ghost(), gamma.ghost(), beta.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let dy = std::mem::take(&mut **grads.get_or_alloc_mut(&out_g)?);
            let gg = grads.get_or_alloc_mut(&g_g)?;
            for (dy, xh) in dy.chunks_exact(width).zip(xhat.chunks_exact(width)) {
                for i in 0..width {
                    gg[i] += dy[i] * xh[i];
                }
            }
            let gb = grads.get_or_alloc_mut(&b_g)?;
            for dy in dy.chunks_exact(width) {
                for i in 0..width {
                    gb[i] += dy[i];
                }
            }
            // dx = rstd (dxh - mean(dxh) - xh mean(dxh xh)), dxh = dy * gamma.
            let gx = grads.get_or_alloc_mut(&x_g)?;
            gx.par_chunks_mut(width)
                .zip(dy.par_chunks(width).zip(xhat.par_chunks(width)))
                .zip(rstd.par_iter())
                .for_each(|((gx, (dy, xh)), &s)| {
                    let n = width as f32;
                    let (mut m1, mut m2) = (0.0f32, 0.0f32);
                    for i in 0..width {
                        let d = dy[i] * g[i];
                        m1 += d;
                        m2 += d * xh[i];
                    }
                    let (m1, m2) = (m1 / n, m2 / n);
                    for i in 0..width {
                        gx[i] += s * (dy[i] * g[i] - m1 - xh[i] * m2);
                    }
                });
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// A raw pointer that crosses threads: each (example, head) task writes its own rows' columns.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: tasks write disjoint (rows, columns) blocks of the buffers behind it; see `attention`.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

/// dst (m x n at `dst`, row stride `ld`) = [dst +] alpha * a * b, single-threaded (the caller
/// runs one product per task); a and b as (pointer, row stride, column stride).
///
/// # Safety
/// Every index the sizes and strides form must lie inside the buffers.
#[allow(clippy::too_many_arguments)]
unsafe fn small_matmul(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    ld: usize,
    accumulate: bool,
    alpha: f32,
    a: (*const f32, usize, usize),
    b: (*const f32, usize, usize),
) {
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        ld as isize,
        accumulate,
        a.0,
        a.2 as isize,
        a.1 as isize,
        b.0,
        b.2 as isize,
        b.1 as isize,
        1.0,
        alpha,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

/// Multi-head self-attention of token rows as one op: for each example (`tokens` consecutive
/// rows) and head (`width / heads` consecutive columns) of q, k, v (`[rows, width]`),
/// softmax(q k^T / sqrt(d)) v, written to the same rows and columns of the output. The heads are
/// strided views of the rows, so nothing is reshaped or copied; examples and heads run in
/// parallel; the softmax weights are kept for the backward pass.
pub fn attention<T: Tape<f32, Dev>>(
    q: Tensor<(usize, usize), f32, Dev, T>,
    k: Tensor<(usize, usize), f32, Dev, T>,
    v: Tensor<(usize, usize), f32, Dev, T>,
    tokens: usize,
    heads: usize,
) -> Tensor<(usize, usize), f32, Dev, T> {
    let (rows, width) = *q.shape();
    assert!(
        rows % tokens == 0
            && width % heads == 0
            && k.shape() == q.shape()
            && v.shape() == q.shape(),
        "attention: shapes disagree"
    );
    let (n, d) = (tokens, width / heads);
    let tasks = (rows / n) * heads;
    let scale = 1.0 / (d as f32).sqrt();
    let dev = q.device().clone();
    let (q, tq) = q.split_tape();
    let (k, tk) = k.split_tape();
    let (v, tv) = v.split_tape();
    let mut tape = tq.merge(tk).merge(tv);
    let (qh, kh, vh) = (q.as_vec(), k.as_vec(), v.as_vec());
    let mut probs = vec![0.0f32; tasks * n * n];
    let mut out = vec![0.0f32; rows * width];
    let o_ptr = Shared(out.as_mut_ptr());
    // Task (e, h): rows e*n.., columns h*d..; its weights are probs[task*n*n..].
    probs
        .par_chunks_mut(n * n)
        .enumerate()
        .for_each(|(task, p)| {
            let (e, h) = (task / heads, task % heads);
            let at = e * n * width + h * d;
            let o = o_ptr;
            // SAFETY: q, k, v, out hold rows * width values; this task reads and writes rows
            // e*n..(e+1)*n, columns h*d..(h+1)*d only, and p is its own n x n block.
            unsafe {
                small_matmul(
                    (n, n, d),
                    p.as_mut_ptr(),
                    n,
                    false,
                    scale,
                    (qh.as_ptr().add(at), width, 1),
                    (kh.as_ptr().add(at), 1, width),
                );
            }
            for row in p.chunks_exact_mut(n) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                let mut sum = 0.0;
                for x in row.iter_mut() {
                    *x = super::act::exp(*x - max);
                    sum += *x;
                }
                for x in row.iter_mut() {
                    *x /= sum;
                }
            }
            unsafe {
                small_matmul(
                    (n, d, n),
                    o.0.add(at),
                    width,
                    false,
                    1.0,
                    (p.as_ptr(), n, 1),
                    (vh.as_ptr().add(at), width, 1),
                );
            }
        });
    let result = dev.tensor_from_vec(out, (rows, width));
    if T::OWNS_TAPE {
        let (q_g, k_g, v_g, out_g) = (q.ghost(), k.ghost(), v.ghost(), result.ghost());
        tape.add_backward_op(move |grads| {
            let go = std::mem::take(&mut **grads.get_or_alloc_mut(&out_g)?);
            let gq = Shared(grads.get_or_alloc_mut(&q_g)?.as_mut_ptr());
            let gk = Shared(grads.get_or_alloc_mut(&k_g)?.as_mut_ptr());
            let gv = Shared(grads.get_or_alloc_mut(&v_g)?.as_mut_ptr());
            probs.par_chunks(n * n).enumerate().for_each(|(task, p)| {
                let (e, h) = (task / heads, task % heads);
                let at = e * n * width + h * d;
                let (gq, gk, gv) = (gq, gk, gv);
                let mut ds = vec![0.0f32; n * n];
                // SAFETY: as in the forward pass, each task touches its own rows and columns
                // of the gradient buffers (rows * width each, allocated above).
                unsafe {
                    // dV += P^T dO
                    small_matmul(
                        (n, d, n),
                        gv.0.add(at),
                        width,
                        true,
                        1.0,
                        (p.as_ptr(), 1, n),
                        (go.as_ptr().add(at), width, 1),
                    );
                    // dP = dO V^T
                    small_matmul(
                        (n, n, d),
                        ds.as_mut_ptr(),
                        n,
                        false,
                        1.0,
                        (go.as_ptr().add(at), width, 1),
                        (vh.as_ptr().add(at), 1, width),
                    );
                }
                // dS = P (dP - rowsum(dP P)), then the scale of S.
                for (dsr, pr) in ds.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
                    let dot: f32 = dsr.iter().zip(pr).map(|(a, b)| a * b).sum();
                    for (x, &pv) in dsr.iter_mut().zip(pr) {
                        *x = pv * (*x - dot) * scale;
                    }
                }
                unsafe {
                    // dQ += dS K, dK += dS^T Q
                    small_matmul(
                        (n, d, n),
                        gq.0.add(at),
                        width,
                        true,
                        1.0,
                        (ds.as_ptr(), n, 1),
                        (kh.as_ptr().add(at), width, 1),
                    );
                    small_matmul(
                        (n, d, n),
                        gk.0.add(at),
                        width,
                        true,
                        1.0,
                        (ds.as_ptr(), 1, n),
                        (qh.as_ptr().add(at), width, 1),
                    );
                }
            });
            Ok(())
        });
    }
    result.put_tape(tape)
}
