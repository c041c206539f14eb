#!/usr/bin/env python3
"""JAX twins of fewstep's `mlp` and `uvit` denoisers, timed per training step on the CPU (jit).

The same networks and step as `fewstep bench train` and benches/peers/torch_twin.py. mlp:
log-SNR Fourier features, `depth` Linear+SiLU layers of `width`, a linear output. uvit: patch
tokens plus a log-SNR token, pre-norm transformer blocks (attention, then a GELU MLP) whose first
half skips to the second, a linear unpatchify (fewstep's `small` preset on 3x32x32: patch 4,
width 256, 4 heads, 5 blocks). Both with the v-loss on the cosine schedule; AdamW (decoupled
weight decay), global-norm gradient clipping and an EMA of the weights, all inside one jitted
step, on synthetic data already in memory. Prints one JSON
line: steps/s after warm-up and the process's peak resident memory; `--forward` times the
jitted forward pass alone (network evaluations per second, for `fewstep bench sample`).

    pip install jax        # CPU wheels; not needed by fewstep's build or tests
    python3 benches/peers/jax_twin.py --dim 64 --width 512 --depth 4 --batch 1024
    python3 benches/peers/jax_twin.py --model uvit --batch 32
"""

import argparse
import json
import math
import resource
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", choices=["mlp", "uvit"], default="mlp")
    p.add_argument("--dim", type=int, default=64, help="mlp: data dimension")
    p.add_argument("--width", type=int, help="hidden / token width [mlp 512, uvit 256]")
    p.add_argument("--depth", type=int, help="mlp: Linear+SiLU layers [4]; uvit: blocks [5]")
    p.add_argument("--batch", type=int, help="batch size [mlp 1024, uvit 32]")
    p.add_argument("--shape", default="3,32,32", help="uvit: C,H,W")
    p.add_argument("--patch", type=int, default=4, help="uvit: patch side")
    p.add_argument("--heads", type=int, default=4, help="uvit: attention heads")
    p.add_argument("--mlp-ratio", type=int, default=4, help="uvit: MLP width / token width")
    p.add_argument("--fourier", type=int, default=16, help="Fourier frequencies (2x features)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps (compilation happens here)")
    p.add_argument("--steps", type=int, default=30, help="timed steps")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--clip", type=float, default=1.0, help="global gradient-norm clip (0: off)")
    p.add_argument("--ema", type=float, default=0.9999)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--forward", action="store_true",
                   help="time the jitted forward pass instead (network evaluations/s, as `fewstep "
                        "bench sample`; --batch 20000 there)")
    a = p.parse_args(argv)
    mlp = a.model == "mlp"
    a.width = a.width or (512 if mlp else 256)
    a.depth = a.depth or (4 if mlp else 5)
    a.batch = a.batch or (1024 if mlp else 32)
    a.shape = tuple(int(v) for v in a.shape.split(","))
    return a


def main(a):
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(a.seed)
    freq = jnp.exp(jnp.linspace(math.log(1 / 16), math.log(16), a.fourier))

    def linear(key, i, o):
        k1, k2 = jax.random.split(key)
        b = 1 / math.sqrt(i)
        return (jax.random.uniform(k1, (i, o), minval=-b, maxval=b),
                jax.random.uniform(k2, (o,), minval=-b, maxval=b))

    def features(logsnr):
        x = logsnr[:, None] * freq[None] / 4
        return jnp.concatenate([jnp.sin(x), jnp.cos(x)], axis=1)

    if a.model == "mlp":
        sizes = [a.dim + 2 * a.fourier] + [a.width] * a.depth + [a.dim]
        params = []
        for i, o in zip(sizes[:-1], sizes[1:]):
            key, k = jax.random.split(key)
            params.append(linear(k, i, o))
        shape = (a.dim,)

        def net(params, z, logsnr):
            h = jnp.concatenate([z, features(logsnr)], axis=1)
            for w, b in params[:-1]:
                h = jax.nn.silu(h @ w + b)
            w, b = params[-1]
            return h @ w + b
    else:
        (c, hh, ww), p, w = a.shape, a.patch, a.width
        n, pd, half = (hh // p) * (ww // p), c * p * p, a.depth // 2
        keys = iter(jax.random.split(key, 64 + 8 * a.depth))

        def block(skip):
            return {
                "ln1": (jnp.ones(w), jnp.zeros(w)), "ln2": (jnp.ones(w), jnp.zeros(w)),
                "qkv": linear(next(keys), w, 3 * w), "proj": linear(next(keys), w, w),
                "ff1": linear(next(keys), w, a.mlp_ratio * w),
                "ff2": linear(next(keys), a.mlp_ratio * w, w),
                "skip": linear(next(keys), 2 * w, w) if skip else None,
            }

        params = {
            "t1": linear(next(keys), 2 * a.fourier, w), "t2": linear(next(keys), w, w),
            "embed": linear(next(keys), pd, w),
            "pos": jax.random.normal(next(keys), (n + 1, w)) * 0.02,
            "ins": [block(False) for _ in range(half)],
            "mid": [block(False) for _ in range(a.depth % 2)],
            "outs": [block(True) for _ in range(half)],
            "ln": (jnp.ones(w), jnp.zeros(w)), "head": linear(next(keys), w, pd),
        }
        shape = a.shape

        def ln(x, g):
            m = x.mean(-1, keepdims=True)
            v = ((x - m) ** 2).mean(-1, keepdims=True)
            return (x - m) / jnp.sqrt(v + 1e-5) * g[0] + g[1]

        def lin(x, l):
            return x @ l[0] + l[1]

        def run_block(x, b, skip=None):
            if skip is not None:
                x = lin(jnp.concatenate([x, skip], -1), b["skip"])
            bs, t, _ = x.shape
            q, k, v = jnp.moveaxis(
                lin(ln(x, b["ln1"]), b["qkv"]).reshape(bs, t, 3, a.heads, w // a.heads), 2, 0)
            att = jax.nn.softmax(jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(w // a.heads), -1)
            x = x + lin(jnp.einsum("bhqk,bkhd->bqhd", att, v).reshape(bs, t, w), b["proj"])
            return x + lin(jax.nn.gelu(lin(ln(x, b["ln2"]), b["ff1"])), b["ff2"])

        def net(params, z, logsnr):
            bs = z.shape[0]
            x = z.reshape(bs, c, hh // p, p, ww // p, p).transpose(0, 2, 4, 1, 3, 5)
            x = lin(x.reshape(bs, n, pd), params["embed"])
            t = lin(jax.nn.gelu(lin(features(logsnr), params["t1"])), params["t2"])
            x = jnp.concatenate([t[:, None], x], 1) + params["pos"][None]
            skips = []
            for b in params["ins"]:
                x = run_block(x, b)
                skips.append(x)
            for b in params["mid"]:
                x = run_block(x, b)
            for b in params["outs"]:
                x = run_block(x, b, skips.pop())
            x = lin(ln(x, params["ln"]), params["head"])[:, 1:]
            x = x.reshape(bs, hh // p, ww // p, c, p, p).transpose(0, 3, 1, 4, 2, 5)
            return x.reshape(bs, c, hh, ww)

    def loss_fn(params, x, key):
        k1, k2 = jax.random.split(key)
        t = jnp.clip(jax.random.uniform(k1, (x.shape[0],)), 1e-4, 1 - 1e-4)
        logsnr = -2 * jnp.log(jnp.tan(math.pi * t / 2))
        view = (-1,) + (1,) * (x.ndim - 1)
        alpha = jnp.sqrt(jax.nn.sigmoid(logsnr)).reshape(view)
        sigma = jnp.sqrt(jax.nn.sigmoid(-logsnr)).reshape(view)
        eps = jax.random.normal(k2, x.shape)
        z, v = alpha * x + sigma * eps, alpha * eps - sigma * x
        return jnp.mean(jnp.square(net(params, z, logsnr) - v))

    b1, b2, eps = 0.9, 0.999, 1e-8

    @jax.jit
    def step(state, x, key, i):
        params, m, v, ema = state
        loss, g = jax.value_and_grad(loss_fn)(params, x, key)
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(t)) for t in jax.tree_util.tree_leaves(g)))
        scale = jnp.where((a.clip > 0) & (norm > a.clip), a.clip / norm, 1.0)
        g = jax.tree_util.tree_map(lambda t: t * scale, g)
        m = jax.tree_util.tree_map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
        v = jax.tree_util.tree_map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
        c1, c2 = 1 - b1 ** (i + 1), 1 - b2 ** (i + 1)
        params = jax.tree_util.tree_map(
            lambda p, m, v: p * (1 - a.lr * a.weight_decay) - a.lr * (m / c1) / (jnp.sqrt(v / c2) + eps),
            params, m, v)
        ema = jax.tree_util.tree_map(lambda e, p: a.ema * e + (1 - a.ema) * p, ema, params)
        return (params, m, v, ema), loss

    if a.forward:
        fwd = jax.jit(net)
        key, k = jax.random.split(key)
        z = jax.random.normal(k, (a.batch,) + shape)
        logsnr = jnp.full((a.batch,), 0.5)
        for i in range(a.warmup + a.steps):
            if i == a.warmup:
                t0 = time.perf_counter()
            out = fwd(params, z, logsnr)
            jax.block_until_ready(out)
        rate = a.steps / (time.perf_counter() - t0)
        print(json.dumps({
            "name": f"jax-{a.model}-forward", "shape": list(shape), "width": a.width,
            "depth": a.depth,
            "batch": a.batch, "evaluations_per_s": rate,
            "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "device": str(jax.devices()[0]), "jax": jax.__version__,
        }))
        return

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = (params, zeros, zeros, params)
    key, k = jax.random.split(key)
    pool = jax.random.normal(k, (8, a.batch) + shape)
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            jax.block_until_ready(state)
            t0 = time.perf_counter()
        key, k = jax.random.split(key)
        state, loss = step(state, pool[i % 8], k, i)
    jax.block_until_ready(state)
    rate = a.steps / (time.perf_counter() - t0)
    print(json.dumps({
        "name": f"jax-{a.model}",
        "shape": list(shape), "width": a.width, "depth": a.depth, "batch": a.batch,
        "steps_per_s": rate, "ms_per_step": 1e3 / rate,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "device": str(jax.devices()[0]), "jax": jax.__version__,
    }))


if __name__ == "__main__":
    main(parse_args())
