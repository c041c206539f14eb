#!/usr/bin/env python3
"""JAX twin of fewstep's `mlp` denoiser, timed per training step on the CPU (jit).

The same network and step as `fewstep bench train --model mlp` and benches/peers/torch_twin.py:
log-SNR Fourier features, `depth` Linear+SiLU layers of `width`, a linear output; the v-loss on
the cosine schedule; AdamW (decoupled weight decay), global-norm gradient clipping and an EMA of
the weights, all inside one jitted step, on synthetic data already in memory. Prints one JSON
line: steps/s after warm-up and the process's peak resident memory; `--forward` times the
jitted forward pass alone (network evaluations per second, for `fewstep bench sample`).

    pip install jax        # CPU wheels; not needed by fewstep's build or tests
    python3 benches/peers/jax_twin.py --dim 64 --width 512 --depth 4 --batch 1024
"""

import argparse
import json
import math
import resource
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dim", type=int, default=64, help="data dimension")
    p.add_argument("--width", type=int, default=512, help="hidden width")
    p.add_argument("--depth", type=int, default=4, help="Linear+SiLU layers")
    p.add_argument("--batch", type=int, default=1024, help="batch size")
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
    return p.parse_args(argv)


def main(a):
    import jax
    import jax.numpy as jnp

    key = jax.random.PRNGKey(a.seed)
    sizes = [a.dim + 2 * a.fourier] + [a.width] * a.depth + [a.dim]
    params = []
    for i, o in zip(sizes[:-1], sizes[1:]):
        key, k1, k2 = jax.random.split(key, 3)
        b = 1 / math.sqrt(i)
        params.append((jax.random.uniform(k1, (i, o), minval=-b, maxval=b),
                       jax.random.uniform(k2, (o,), minval=-b, maxval=b)))
    freq = jnp.exp(jnp.linspace(math.log(1 / 16), math.log(16), a.fourier))

    def net(params, z, logsnr):
        x = logsnr[:, None] * freq[None] / 4
        h = jnp.concatenate([z, jnp.sin(x), jnp.cos(x)], axis=1)
        for w, b in params[:-1]:
            h = jax.nn.silu(h @ w + b)
        w, b = params[-1]
        return h @ w + b

    def loss_fn(params, x, key):
        k1, k2 = jax.random.split(key)
        t = jnp.clip(jax.random.uniform(k1, (x.shape[0],)), 1e-4, 1 - 1e-4)
        logsnr = -2 * jnp.log(jnp.tan(math.pi * t / 2))
        alpha = jnp.sqrt(jax.nn.sigmoid(logsnr))[:, None]
        sigma = jnp.sqrt(jax.nn.sigmoid(-logsnr))[:, None]
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
        z = jax.random.normal(k, (a.batch, a.dim))
        logsnr = jnp.full((a.batch,), 0.5)
        for i in range(a.warmup + a.steps):
            if i == a.warmup:
                t0 = time.perf_counter()
            out = fwd(params, z, logsnr)
            jax.block_until_ready(out)
        rate = a.steps / (time.perf_counter() - t0)
        print(json.dumps({
            "name": "jax-mlp-forward", "dim": a.dim, "width": a.width, "depth": a.depth,
            "batch": a.batch, "evaluations_per_s": rate,
            "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "device": str(jax.devices()[0]), "jax": jax.__version__,
        }))
        return

    zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
    state = (params, zeros, zeros, params)
    key, k = jax.random.split(key)
    pool = jax.random.normal(k, (8, a.batch, a.dim))
    for i in range(a.warmup + a.steps):
        if i == a.warmup:
            jax.block_until_ready(state)
            t0 = time.perf_counter()
        key, k = jax.random.split(key)
        state, loss = step(state, pool[i % 8], k, i)
    jax.block_until_ready(state)
    rate = a.steps / (time.perf_counter() - t0)
    print(json.dumps({
        "name": "jax-mlp",
        "dim": a.dim, "width": a.width, "depth": a.depth, "batch": a.batch,
        "steps_per_s": rate, "ms_per_step": 1e3 / rate,
        "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "device": str(jax.devices()[0]), "jax": jax.__version__,
    }))


if __name__ == "__main__":
    main(parse_args())
