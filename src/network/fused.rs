//! The CPU path of [`super::Dense`]: y = [SiLU](x W^T + b + extra) as one op on the host, its
//! matmuls on `gemm` (AVX-512 where available) and the bias, addend and activation in the same
//! pass, with a backward pass that writes the gradients of W, b, x and the addend straight into
//! dfdx's gradient buffers (through the tape's public API). dfdx's op-by-op version allocates a
//! tensor and makes a pass over memory per op; this makes one per layer.

use super::act::{self, Act};
use super::simd::vectorised;
use crate::tensor::{host_values, Dev};
use dfdx::prelude::*;
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task of the elementwise passes.
const CHUNK: usize = 1 << 14;

/// The transpose of the row-major `rows x cols` matrix `m`, as a row-major `cols x rows` one.
/// Each task fills 16 output rows, reading m row by row (16 contiguous values each) and writing
/// 16 sequential streams: 3x faster here than square tiles read column-wise.
fn transposed(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const BLOCK: usize = 16;
    let mut out = vec![0.0f32; rows * cols];
    out.par_chunks_mut(BLOCK * rows)
        .enumerate()
        .for_each(|(block, dst)| {
            let c0 = block * BLOCK;
            let width = dst.len() / rows;
            for (r, src) in m.chunks_exact(cols).enumerate() {
                for (j, &v) in src[c0..c0 + width].iter().enumerate() {
                    dst[j * rows + r] = v;
                }
            }
        });
    out
}

/// A row-major matrix view: values, rows, columns.
struct Mat<'a>(&'a [f32], usize, usize);

/// dst (m x n, row-major) = [dst +] a * b, with a = `a` or its transpose (`ta`) and likewise b.
fn matmul(dst: &mut [f32], accumulate: bool, a: Mat, ta: bool, b: Mat, tb: bool) {
    let (m, n) = product_size(&a, ta, &b, tb);
    assert!(dst.len() == m * n, "matmul: shapes disagree");
    // SAFETY: dst holds m * n values (asserted), what `gemm_into` writes.
    unsafe { gemm_into(dst.as_mut_ptr(), accumulate, a, ta, b, tb) }
}

/// a * b as a new m x n row-major buffer, which the product writes without reading (no zeroing
/// pass first).
fn product(a: Mat, ta: bool, b: Mat, tb: bool) -> Vec<f32> {
    let (m, n) = product_size(&a, ta, &b, tb);
    let k = if ta { a.1 } else { a.2 };
    if k == 0 {
        return vec![0.0; m * n];
    }
    let mut out = Vec::with_capacity(m * n);
    // SAFETY: the capacity is m * n; with k > 0 and no accumulation gemm writes every one of the
    // m * n values before anything reads them, so the length can then cover them.
    unsafe {
        gemm_into(out.as_mut_ptr(), false, a, ta, b, tb);
        out.set_len(m * n);
    }
    out
}

/// (m, n) of the product of a (or its transpose) and b (or its transpose); panics unless the
/// inner sizes agree and each view holds its rows * columns values.
fn product_size(a: &Mat, ta: bool, b: &Mat, tb: bool) -> (usize, usize) {
    let (m, k) = if ta { (a.2, a.1) } else { (a.1, a.2) };
    let (k2, n) = if tb { (b.2, b.1) } else { (b.1, b.2) };
    assert!(
        k == k2 && a.0.len() == a.1 * a.2 && b.0.len() == b.1 * b.2,
        "matmul: shapes disagree"
    );
    (m, n)
}

/// The gemm call of [`matmul`] and [`product`], on all threads.
///
/// # Safety
/// `dst` must be valid for writes (and, with `accumulate`, reads) of m x n values, and the views
/// must have passed [`product_size`].
unsafe fn gemm_into(dst: *mut f32, accumulate: bool, a: Mat, ta: bool, b: Mat, tb: bool) {
    let (m, k) = if ta { (a.2, a.1) } else { (a.1, a.2) };
    let n = if tb { b.1 } else { b.2 };
    // (row stride, column stride) of each operand as used.
    let strides = |t: bool, cols: usize| if t { (1, cols) } else { (cols, 1) };
    let (a_rs, a_cs) = strides(ta, a.2);
    let (b_rs, b_cs) = strides(tb, b.2);
    gemm::gemm(
        m,
        n,
        k,
        dst,
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

vectorised! {
    /// p += b on each row of `p` (rows of `b.len()`), then p += e.
    fn add_bias<'a>(p: &'a mut [f32], b: &'a [f32], e: Option<&'a [f32]>) {
        for row in p.chunks_exact_mut(b.len()) {
            for (v, &b) in row.iter_mut().zip(b) {
                *v += b;
            }
        }
        if let Some(e) = e {
            for (v, &e) in p.iter_mut().zip(e) {
                *v += e;
            }
        }
    }
}

vectorised! {
    /// acc += each row of `rows` (rows of `acc.len()`), in row order.
    fn add_rows<'a>(acc: &'a mut [f32], rows: &'a [f32]) {
        for row in rows.chunks_exact(acc.len()) {
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
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
    input_grad: bool,
) -> Tensor<(usize, usize), f32, Dev, T> {
    let (rows, inputs) = *x.shape();
    let outputs = weight.shape().0;
    let dev = x.device().clone();
    let (x, mut tape) = x.split_tape();
    let x_host = host_values(&x);
    let w_host = host_values(weight);
    let b_host = host_values(bias);
    // x W^T with W^T laid out row-major: gemm runs x W^T from W's own layout at ~160 GFLOP/s
    // here and x (W^T) at ~210, far more than the transposition costs.
    let w_t = transposed(&w_host, outputs, inputs);
    let mut pre = product(
        Mat(&x_host, rows, inputs),
        false,
        Mat(&w_t, inputs, outputs),
        false,
    );
    drop(w_t);
    let extra = extra.map(|e| {
        let (e, t) = e.split_tape();
        tape = std::mem::take(&mut tape).merge(t);
        e
    });
    let extra_host = extra.as_ref().map(host_values);
    // Without a tape (sampling) the activation overwrites the pre-activation. With one, the
    // pre-activation is kept for the backward pass (which recomputes sigmoid or tanh from it) and
    // the activation goes to a new buffer. Tasks of whole rows: bias, addend and activation in
    // one pass over each.
    let keep = T::OWNS_TAPE && act != Act::Identity;
    let task = (CHUNK / outputs).max(1) * outputs;
    let extra_of = |i: usize, len: usize| extra_host.as_ref().map(|e| &e[i * task..i * task + len]);
    let (y, pre) = if keep {
        let n = rows * outputs;
        let mut y = Vec::with_capacity(n);
        pre.par_chunks_mut(task)
            .zip(y.spare_capacity_mut()[..n].par_chunks_mut(task))
            .enumerate()
            .for_each(|(i, (p, y))| {
                add_bias(p, &b_host, extra_of(i, p.len()));
                act::forward_into(act, p, y);
            });
        // SAFETY: the tasks above cover all n values and forward_into writes each one.
        unsafe { y.set_len(n) };
        (y, pre)
    } else {
        pre.par_chunks_mut(task).enumerate().for_each(|(i, p)| {
            add_bias(p, &b_host, extra_of(i, p.len()));
            act::forward_in_place(act, p);
        });
        (pre, Vec::new())
    };
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
                    .zip(pre.par_chunks(CHUNK))
                    .for_each(|(g, p)| act::backward(act, g, p));
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
            add_rows(gb, &g);
            if input_grad {
                let gx = grads.get_or_alloc_mut(&x_g)?;
                matmul(
                    gx,
                    true,
                    Mat(&g, rows, outputs),
                    false,
                    Mat(&w_host, outputs, inputs),
                    false,
                );
            }
            if let Some(e_g) = e_g {
                let ge = grads.get_or_alloc_mut(&e_g)?;
                add_rows(ge, &g);
            }
            Ok(())
        });
    }
    out.put_tape(tape)
}

vectorised! {
    /// Each row of `x` (`rstd.len()` rows) becomes (x - mean) * rstd, rstd = 1 / sqrt(var + eps).
    fn normalise_rows<'a>(x: &'a mut [f32], rstd: &'a mut [f32], eps: f32) {
        let width = x.len() / rstd.len();
        for (r, s) in x.chunks_exact_mut(width).zip(rstd.iter_mut()) {
            let mean = r.iter().sum::<f32>() / width as f32;
            let var = r.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / width as f32;
            *s = 1.0 / (var + eps).sqrt();
            for v in r.iter_mut() {
                *v = (*v - mean) * *s;
            }
        }
    }
}

vectorised! {
    /// y = xh * g + b on each row (rows of `g.len()`), into `y`'s uninitialised memory.
    fn scale_shift_rows<'a>(y: &'a mut [MaybeUninit<f32>], xh: &'a [f32], g: &'a [f32], b: &'a [f32]) {
        for (y, xh) in y.chunks_exact_mut(g.len()).zip(xh.chunks_exact(g.len())) {
            for (((y, &x), &g), &b) in y.iter_mut().zip(xh).zip(g).zip(b) {
                y.write(x * g + b);
            }
        }
    }
}

vectorised! {
    /// acc += a * b for each pair of rows (rows of `acc.len()`), in row order.
    fn add_row_products<'a>(acc: &'a mut [f32], a: &'a [f32], b: &'a [f32]) {
        for (a, b) in a.chunks_exact(acc.len()).zip(b.chunks_exact(acc.len())) {
            for ((acc, &a), &b) in acc.iter_mut().zip(a).zip(b) {
                *acc += a * b;
            }
        }
    }
}

vectorised! {
    /// Layer norm's input gradient, row by row: dx += rstd (dxh - mean(dxh) - xh mean(dxh xh)),
    /// dxh = dy * gamma.
    fn layer_norm_dx<'a>(gx: &'a mut [f32], dy: &'a [f32], xh: &'a [f32], rstd: &'a [f32], g: &'a [f32]) {
        let width = g.len();
        let n = width as f32;
        let rows = gx.chunks_exact_mut(width).zip(dy.chunks_exact(width));
        for ((gx, dy), (xh, &s)) in rows.zip(xh.chunks_exact(width).zip(rstd)) {
            let (mut m1, mut m2) = (0.0f32, 0.0f32);
            for ((&dy, &g), &xh) in dy.iter().zip(g).zip(xh) {
                let d = dy * g;
                m1 += d;
                m2 += d * xh;
            }
            let (m1, m2) = (m1 / n, m2 / n);
            for (((gx, &dy), &g), &xh) in gx.iter_mut().zip(dy).zip(g).zip(xh) {
                *gx += s * (dy * g - m1 - xh * m2);
            }
        }
    }
}

vectorised! {
    /// Softmax of each row of `p` (rows of `n`) in place.
    fn softmax_rows<'a>(p: &'a mut [f32], n: usize) {
        for row in p.chunks_exact_mut(n) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
            for x in row.iter_mut() {
                *x = super::act::exp(*x - max);
            }
            let sum = row.iter().fold(0.0f32, |s, &x| s + x);
            for x in row.iter_mut() {
                *x /= sum;
            }
        }
    }
}

vectorised! {
    /// The softmax backward pass on each row (rows of `n`) of the weights' gradient `ds`, in place:
    /// ds = p (ds - rowsum(ds p)) * scale.
    fn softmax_grad_rows<'a>(ds: &'a mut [f32], p: &'a [f32], n: usize, scale: f32) {
        for (dsr, pr) in ds.chunks_exact_mut(n).zip(p.chunks_exact(n)) {
            let dot: f32 = dsr.iter().zip(pr).map(|(a, b)| a * b).sum();
            for (x, &pv) in dsr.iter_mut().zip(pr) {
                *x = pv * (*x - dot) * scale;
            }
        }
    }
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
    let (g, b) = (host_values(gamma), host_values(beta));
    // x becomes x_hat in place; rstd = 1 / sqrt(var + eps) per row. Tasks of whole rows.
    let task = (CHUNK / width).max(1);
    let mut xhat = host_values(&x);
    let mut rstd = vec![0.0f32; rows];
    xhat.par_chunks_mut(task * width)
        .zip(rstd.par_chunks_mut(task))
        .for_each(|(x, rstd)| normalise_rows(x, rstd, eps));
    let n = rows * width;
    let mut y = Vec::with_capacity(n);
    y.spare_capacity_mut()[..n]
        .par_chunks_mut(task * width)
        .zip(xhat.par_chunks(task * width))
        .for_each(|(y, xh)| scale_shift_rows(y, xh, &g, &b));
    // SAFETY: the tasks cover all n values and scale_shift_rows writes each one.
    unsafe { y.set_len(n) };
    let out = dev.tensor_from_vec(y, (rows, width));
    if T::OWNS_TAPE {
        let (x_g, g_g, b_g, out_g) = (x.ghost(), gamma.ghost(), beta.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let dy = std::mem::take(&mut **grads.get_or_alloc_mut(&out_g)?);
            add_row_products(grads.get_or_alloc_mut(&g_g)?, &dy, &xhat);
            add_rows(grads.get_or_alloc_mut(&b_g)?, &dy);
            let gx = grads.get_or_alloc_mut(&x_g)?;
            gx.par_chunks_mut(task * width)
                .zip(
                    dy.par_chunks(task * width)
                        .zip(xhat.par_chunks(task * width)),
                )
                .zip(rstd.par_chunks(task))
                .for_each(|((gx, (dy, xh)), rstd)| layer_norm_dx(gx, dy, xh, rstd, &g));
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
    let (qh, kh, vh) = (host_values(&q), host_values(&k), host_values(&v));
    let mut probs = vec![0.0f32; tasks * n * n];
    // Written block by block by the tasks below, without zeroing first.
    let mut out: Vec<f32> = Vec::with_capacity(rows * width);
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
            softmax_rows(p, n);
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
    // SAFETY: the (example, head) tasks tile all rows x width values and each product wrote its
    // block without reading it (no accumulation).
    unsafe { out.set_len(rows * width) };
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
                softmax_grad_rows(&mut ds, p, n, scale);
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

vectorised! {
    /// y = v * ns_r + a_r * z on each row r (rows of `v.len() / ns.len()`), into `y`'s
    /// uninitialised memory.
    fn v_to_x_rows<'a>(
        y: &'a mut [MaybeUninit<f32>],
        v: &'a [f32],
        z: &'a [f32],
        ns: &'a [f32],
        a: &'a [f32],
    ) {
        let d = v.len() / ns.len();
        let rows = y.chunks_exact_mut(d).zip(v.chunks_exact(d)).zip(z.chunks_exact(d));
        for (((y, v), z), (&ns, &a)) in rows.zip(ns.iter().zip(a)) {
            for ((y, &v), &z) in y.iter_mut().zip(v).zip(z) {
                y.write(v * ns + a * z);
            }
        }
    }
}

vectorised! {
    /// gv += g * ns_r on each row r.
    fn add_scaled_rows<'a>(gv: &'a mut [f32], g: &'a [f32], ns: &'a [f32]) {
        let d = g.len() / ns.len();
        for ((gv, g), &ns) in gv.chunks_exact_mut(d).zip(g.chunks_exact(d)).zip(ns) {
            for (gv, &g) in gv.iter_mut().zip(g) {
                *gv += g * ns;
            }
        }
    }
}

/// The v-parametrisation's output as one op: x_hat = v * (-sigma_r) + alpha_r * z for each row
/// r of `v` (`[rows, dim]`), with one `minus_sigma` and `alpha` per row. It computes what dfdx's
/// negate, broadcast, multiply and add compute, in the same order (so the same bits), in one
/// pass instead of four; the backward pass gives v its gradient (z is an input: none).
pub fn v_to_x<T: Tape<f32, Dev>>(
    v: Tensor<(usize, usize), f32, Dev, T>,
    z: &Tensor<(usize, usize), f32, Dev>,
    minus_sigma: Vec<f32>,
    alpha: &[f32],
) -> Tensor<(usize, usize), f32, Dev, T> {
    let (rows, dim) = *v.shape();
    assert!(
        z.shape() == v.shape() && minus_sigma.len() == rows && alpha.len() == rows,
        "v_to_x: shapes disagree"
    );
    let dev = v.device().clone();
    let (v, tape) = v.split_tape();
    let (vh, zh) = (host_values(&v), host_values(z));
    let n = rows * dim;
    let task = (CHUNK / dim.max(1)).max(1);
    let mut y = Vec::with_capacity(n);
    y.spare_capacity_mut()[..n]
        .par_chunks_mut(task * dim)
        .zip(vh.par_chunks(task * dim).zip(zh.par_chunks(task * dim)))
        .zip(minus_sigma.par_chunks(task).zip(alpha.par_chunks(task)))
        .for_each(|((y, (v, z)), (ns, a))| v_to_x_rows(y, v, z, ns, a));
    // SAFETY: the tasks cover all n values and v_to_x_rows writes each one.
    unsafe { y.set_len(n) };
    let out = dev.tensor_from_vec(y, (rows, dim));
    let mut tape = tape;
    if T::OWNS_TAPE {
        let (v_g, out_g) = (v.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let g = std::mem::take(&mut **grads.get_or_alloc_mut(&out_g)?);
            let gv = grads.get_or_alloc_mut(&v_g)?;
            gv.par_chunks_mut(task * dim)
                .zip(g.par_chunks(task * dim).zip(minus_sigma.par_chunks(task)))
                .for_each(|(gv, (g, ns))| add_scaled_rows(gv, g, ns));
            Ok(())
        });
    }
    out.put_tape(tape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposed_swaps_rows_and_columns() {
        for (rows, cols) in [(1, 1), (3, 17), (40, 5), (33, 64)] {
            let m: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let t = transposed(&m, rows, cols);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        t[c * rows + r],
                        m[r * cols + c],
                        "{rows}x{cols} at ({r}, {c})"
                    );
                }
            }
        }
    }

    /// The fused v-to-x op gives dfdx's negate/broadcast/multiply/add values and v-gradient bit
    /// for bit (the path the CUDA build takes).
    #[test]
    fn v_to_x_equals_the_dfdx_ops_bit_for_bit() {
        let dev = crate::tensor::seeded_device(5);
        let (rows, dim) = (37, 13);
        let v: Tensor<(usize, usize), f32, Dev> = dev.sample_normal_like(&(rows, dim));
        let z: Tensor<(usize, usize), f32, Dev> = dev.sample_normal_like(&(rows, dim));
        let r: Tensor<(usize, usize), f32, Dev> = dev.sample_normal_like(&(rows, dim));
        let sigma: Vec<f32> = (0..rows).map(|i| 0.1 + i as f32 * 0.023).collect();
        let alpha: Vec<f32> = sigma
            .iter()
            .map(|s| (1.0 - s * s).max(0.0).sqrt())
            .collect();
        let run = |fused: bool| {
            let vt = v.clone().traced(Gradients::leaky());
            let y = if fused {
                let minus: Vec<f32> = sigma.iter().map(|s| -1.0 * s).collect();
                v_to_x(vt, &z, minus, &alpha)
            } else {
                let s = dev.tensor_from_vec(sigma.clone(), (rows,));
                let a = dev.tensor_from_vec(alpha.clone(), (rows,));
                vt * s.negate().broadcast_like::<_, Axis<1>>(&(rows, dim))
                    + a.broadcast_like::<_, Axis<1>>(&(rows, dim)) * z.clone()
            };
            let values = y.retaped::<NoneTape>().as_vec();
            let g = (y * r.clone()).sum().backward();
            (values, g.get(&v).as_vec())
        };
        let (fused, ops) = (run(true), run(false));
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&fused.0), bits(&ops.0), "x_hat");
        assert_eq!(bits(&fused.1), bits(&ops.1), "dv");
    }
}
