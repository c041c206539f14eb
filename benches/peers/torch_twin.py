#!/usr/bin/env python3
"""PyTorch twins of fewstep's `mlp` and `uvit` denoisers, timed per training step.

The peer that `fewstep bench train` is measured against (docs/gpu.md): the same widths, depth,
optimiser (AdamW, gradient clipping, EMA) and batch, trained with the v-loss on the cosine
schedule, on synthetic data already on the device (the step, not the data loader, is timed).
Prints one JSON line per (model, mode): steps/s after warm-up and peak CUDA memory.

    python3 benches/peers/torch_twin.py                      # both models, eager and compile
    python3 benches/peers/torch_twin.py --models mlp --modes eager --steps 50
"""

import argparse
import json
import math
import sys
import time


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--models", default="mlp,uvit", help="comma list of: mlp, uvit")
    p.add_argument("--modes", default="eager,compile", help="comma list of: eager, compile")
    p.add_argument("--device", default="cuda", help="torch device (cpu only for smoke tests)")
    p.add_argument("--warmup", type=int, default=30, help="untimed steps first (compile happens here)")
    p.add_argument("--steps", type=int, default=200, help="timed steps")
    p.add_argument("--seed", type=int, default=0, help="torch seed")
    p.add_argument("--lr", type=float, default=2e-4, help="AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=0.0, help="AdamW decoupled weight decay")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clip (0: off)")
    p.add_argument("--ema", type=float, default=0.9999, help="EMA decay of the weights (0: off)")
    p.add_argument("--fourier", type=int, default=16, help="Fourier frequencies of the log-SNR (2x features)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (dfdx uses plain fp32)")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode")
    p.add_argument("--out", help="also append the JSON lines to this file")
    g = p.add_argument_group("mlp (vector data)")
    g.add_argument("--mlp-dim", type=int, default=64, help="data dimension")
    g.add_argument("--mlp-width", type=int, default=512, help="hidden width")
    g.add_argument("--mlp-depth", type=int, default=4, help="hidden layers (Linear + SiLU)")
    g.add_argument("--mlp-batch", type=int, default=4096, help="batch size")
    g = p.add_argument_group("uvit (images)")
    g.add_argument("--uvit-shape", default="3,32,32", help="C,H,W")
    g.add_argument("--uvit-patch", type=int, default=2, help="patch side (tokens: (H/p)*(W/p) + 1)")
    g.add_argument("--uvit-width", type=int, default=256, help="token width")
    g.add_argument(
        "--uvit-depth",
        type=int,
        default=6,
        help="transformer blocks: depth//2 in, depth%%2 mid, depth//2 out (long skips in->out)",
    )
    g.add_argument("--uvit-heads", type=int, default=4, help="attention heads")
    g.add_argument("--uvit-mlp-ratio", type=int, default=4, help="MLP hidden width / token width")
    g.add_argument("--uvit-batch", type=int, default=256, help="batch size")
    a = p.parse_args(argv)
    a.models = [m for m in a.models.split(",") if m]
    a.modes = [m for m in a.modes.split(",") if m]
    for m in a.models:
        if m not in ("mlp", "uvit"):
            p.error(f"unknown model '{m}' (valid: mlp, uvit)")
    for m in a.modes:
        if m not in ("eager", "compile"):
            p.error(f"unknown mode '{m}' (valid: eager, compile)")
    a.uvit_shape = tuple(int(s) for s in a.uvit_shape.split(","))
    _, h, w = a.uvit_shape
    if h % a.uvit_patch or w % a.uvit_patch:
        p.error(f"--uvit-patch {a.uvit_patch} does not divide the image {h}x{w}")
    if a.uvit_width % a.uvit_heads:
        p.error(f"--uvit-width {a.uvit_width} is not a multiple of --uvit-heads {a.uvit_heads}")
    return a


def build(a):
    """Model classes need torch, imported only here so that --help runs without it."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class Fourier(nn.Module):
        """log-SNR -> [sin, cos] of fixed log-spaced frequencies (the networks' conditioning)."""

        def __init__(self, n):
            super().__init__()
            self.register_buffer("freq", torch.exp(torch.linspace(math.log(1 / 16), math.log(16), n)))

        def forward(self, logsnr):  # [B] -> [B, 2n]
            x = logsnr[:, None] * self.freq[None] / 4  # log-SNR spans about [-20, 20]
            return torch.cat([x.sin(), x.cos()], dim=1)

    class Mlp(nn.Module):
        def __init__(self, dim, width, depth, fourier):
            super().__init__()
            self.emb = Fourier(fourier)
            layers, d = [], dim + 2 * fourier
            for _ in range(depth):
                layers += [nn.Linear(d, width), nn.SiLU()]
                d = width
            layers.append(nn.Linear(d, dim))
            self.net = nn.Sequential(*layers)

        def forward(self, z, logsnr):
            return self.net(torch.cat([z, self.emb(logsnr)], dim=1))

    class Block(nn.Module):
        """Pre-norm transformer block: x + attn(ln x), then x + mlp(ln x)."""

        def __init__(self, width, heads, ratio, skip):
            super().__init__()
            self.skip = nn.Linear(2 * width, width) if skip else None
            self.heads = heads
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.mlp = nn.Sequential(nn.Linear(width, ratio * width), nn.GELU(), nn.Linear(ratio * width, width))

        def forward(self, x, skip=None):
            if self.skip is not None:
                x = self.skip(torch.cat([x, skip], dim=-1))
            b, n, w = x.shape
            q, k, v = self.qkv(self.ln1(x)).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, w)
            x = x + self.proj(y)
            return x + self.mlp(self.ln2(x))

    class UViT(nn.Module):
        """U-ViT: patch tokens + a log-SNR token, in-blocks whose outputs skip to the out-blocks."""

        def __init__(self, shape, patch, width, depth, heads, ratio, fourier):
            super().__init__()
            self.c, self.h, self.w = shape
            self.p = patch
            n = (self.h // patch) * (self.w // patch)
            pd = self.c * patch * patch
            self.emb = Fourier(fourier)
            self.t_embed = nn.Sequential(nn.Linear(2 * fourier, width), nn.GELU(), nn.Linear(width, width))
            self.patch_embed = nn.Linear(pd, width)
            self.pos = nn.Parameter(torch.randn(1, n + 1, width) * 0.02)
            self.ins = nn.ModuleList(Block(width, heads, ratio, False) for _ in range(depth // 2))
            self.mid = nn.ModuleList(Block(width, heads, ratio, False) for _ in range(depth % 2))
            self.outs = nn.ModuleList(Block(width, heads, ratio, True) for _ in range(depth // 2))
            self.ln = nn.LayerNorm(width)
            self.head = nn.Linear(width, pd)

        def forward(self, z, logsnr):
            b, c, h, w, p = z.shape[0], self.c, self.h, self.w, self.p
            x = z.view(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
            x = torch.cat([self.t_embed(self.emb(logsnr))[:, None], self.patch_embed(x)], dim=1) + self.pos
            skips = []
            for blk in self.ins:
                x = blk(x)
                skips.append(x)
            for blk in self.mid:
                x = blk(x)
            for blk in self.outs:
                x = blk(x, skips.pop())
            x = self.head(self.ln(x))[:, 1:]
            x = x.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5)
            return x.reshape(b, c, h, w)

    return torch, Mlp, UViT


def cosine_logsnr(torch, t):
    """The cosine schedule's log-SNR, -2 log tan(pi t / 2), with t kept off 0 and 1."""
    t = t.clamp(1e-4, 1 - 1e-4)
    return -2 * torch.log(torch.tan(math.pi * t / 2))


def run(a, model_name, mode):
    torch, Mlp, UViT = build(a)
    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    if a.tf32:
        torch.set_float32_matmul_precision("high")
    else:
        torch.set_float32_matmul_precision("highest")
    if model_name == "mlp":
        net = Mlp(a.mlp_dim, a.mlp_width, a.mlp_depth, a.fourier)
        batch, shape = a.mlp_batch, (a.mlp_dim,)
        config = dict(dim=a.mlp_dim, width=a.mlp_width, depth=a.mlp_depth)
    else:
        net = UViT(a.uvit_shape, a.uvit_patch, a.uvit_width, a.uvit_depth, a.uvit_heads, a.uvit_mlp_ratio, a.fourier)
        batch, shape = a.uvit_batch, a.uvit_shape
        config = dict(
            shape=list(a.uvit_shape),
            patch=a.uvit_patch,
            width=a.uvit_width,
            depth=a.uvit_depth,
            heads=a.uvit_heads,
            mlp_ratio=a.uvit_mlp_ratio,
        )
    net = net.to(dev)
    params = sum(p.numel() for p in net.parameters())
    ema = [p.detach().clone() for p in net.parameters()] if a.ema > 0 else None
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=a.weight_decay)
    if mode == "compile":
        torch._dynamo.reset()
        fwd = torch.compile(net, mode=a.compile_mode)
    else:
        fwd = net
    # A pool of data batches on the device, cycled, so no host work sits in the step.
    pool = torch.randn(8, batch, *shape, device=dev)
    view = (batch,) + (1,) * len(shape)

    def step(i):
        x = pool[i % pool.shape[0]]
        logsnr = cosine_logsnr(torch, torch.rand(batch, device=dev))
        alpha, sigma = torch.sigmoid(logsnr).sqrt().view(view), torch.sigmoid(-logsnr).sqrt().view(view)
        eps = torch.randn_like(x)
        z, v = alpha * x + sigma * eps, alpha * eps - sigma * x
        # v-loss: the x-loss weighted by SNR + 1 on a variance-preserving schedule.
        loss = (fwd(z, logsnr) - v).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if a.clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), a.clip, foreach=True)
        opt.step()
        if ema is not None:
            torch._foreach_lerp_(ema, [p.detach() for p in net.parameters()], 1 - a.ema)
        return loss

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    first = step(0).item()
    sync()
    first_s = time.perf_counter() - t0
    for i in range(1, a.warmup):
        step(i)
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for i in range(a.steps):
        loss = step(a.warmup + i)
    sync()
    dt = time.perf_counter() - t0
    last = loss.item()
    rec = dict(
        peer="torch",
        model=model_name,
        mode=mode,
        batch=batch,
        params=params,
        **config,
        steps=a.steps,
        warmup=a.warmup,
        steps_per_s=round(a.steps / dt, 3),
        ms_per_step=round(1e3 * dt / a.steps, 4),
        first_step_s=round(first_s, 3),
        loss_first=round(first, 5),
        loss_last=round(last, 5),
        clip=a.clip,
        ema=a.ema,
        tf32=a.tf32,
        torch=torch.__version__,
        device=str(dev),
    )
    if dev.type == "cuda":
        rec["gpu"] = torch.cuda.get_device_name(dev)
        rec["peak_mem_mib"] = round(torch.cuda.max_memory_allocated(dev) / 2**20, 1)
        rec["peak_reserved_mib"] = round(torch.cuda.max_memory_reserved(dev) / 2**20, 1)
        free, total = torch.cuda.mem_get_info(dev)  # whole device: context + cache, as nvidia-smi
        rec["device_used_mib"] = round((total - free) / 2**20, 1)
    if not math.isfinite(last):
        rec["error"] = "non-finite loss"
    return rec


def main(argv=None):
    a = parse_args(argv)
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit("torch_twin.py needs PyTorch (the GPU machine's python3 has it)")
    status = 0
    for model_name in a.models:
        for mode in a.modes:
            try:
                rec = run(a, model_name, mode)
            except Exception as e:  # one failing config (e.g. compile) must not hide the others
                rec, status = dict(peer="torch", model=model_name, mode=mode, error=f"{type(e).__name__}: {e}"), 1
            line = json.dumps(rec)
            print(line, flush=True)
            if a.out:
                with open(a.out, "a") as f:
                    f.write(line + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
