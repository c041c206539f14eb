#!/usr/bin/env python3
"""fewstep against its JAX and PyTorch twins, side by side: training steps/s and peak memory.

Each round runs `fewstep bench train`, `jax_twin.py` and `torch_twin.py --device cpu --modes
eager` one after another on the same network, batch and step (AdamW, clipping, EMA, v-loss), and
prints each ratio from that round only: on a shared machine the load changes between rounds,
so ratios from one round are what compare. Peak memory is each process's peak resident set
(from wait4), so the numbers compare across the three programs. A peer that is not installed
is reported and skipped.

    pip install jax torch          # peers only; fewstep's build and tests need neither
    cargo build --release
    python3 benches/peers/compare.py --model mlp --rounds 3
    python3 benches/peers/compare.py --model uvit --rounds 3
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# The benchmark networks (docs/training.md): the mlp at width 512 (configs/bench/mlp512.toml)
# and the uvit's `small` preset on 3x32x32 (patch 4, width 256, 4 heads, 5 blocks, ratio 4).
SETUPS = {
    "mlp": dict(
        fewstep=["--model", "mlp", "--dim", "64", "--config", "configs/bench/mlp512.toml"],
        jax=["--model", "mlp", "--dim", "64", "--width", "512", "--depth", "4"],
        torch=["--models", "mlp", "--mlp-dim", "64", "--mlp-width", "512", "--mlp-depth", "4"],
        batch=1024,
        torch_batch="--mlp-batch",
    ),
    "uvit": dict(
        fewstep=["--model", "uvit", "--shape", "3,32,32"],
        jax=["--model", "uvit", "--shape", "3,32,32", "--patch", "4", "--width", "256",
             "--depth", "5", "--heads", "4", "--mlp-ratio", "4"],
        torch=["--models", "uvit", "--uvit-shape", "3,32,32", "--uvit-patch", "4",
               "--uvit-width", "256", "--uvit-depth", "5", "--uvit-heads", "4",
               "--uvit-mlp-ratio", "4"],
        batch=32,
        torch_batch="--uvit-batch",
    ),
}


def peak_rss_mb(cmd):
    """Runs `cmd` and returns (record, peak RSS MB from wait4, error)."""
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.stdout.read(), p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        return None, None, (err.strip().splitlines() or ["exit %d" % p.returncode])[-1]
    lines = [l for l in out.splitlines() if l.startswith("{")]
    if not lines:
        return None, None, "no JSON line in its output"
    return json.loads(lines[-1]), usage.ru_maxrss / 1024, None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=sorted(SETUPS), default="mlp")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=30, help="timed steps of each program")
    ap.add_argument("--batch", type=int, help="rows per step [mlp 1024, uvit 32]")
    ap.add_argument("--fewstep", default=os.path.join(ROOT, "target/release/fewstep"),
                    help="the fewstep binary (cargo build --release)")
    ap.add_argument("--peers", default="jax,torch", help="comma list of: jax, torch")
    a = ap.parse_args(argv)
    s = SETUPS[a.model]
    batch = a.batch or s["batch"]
    steps = str(a.steps)
    programs = {
        "fewstep": [a.fewstep, "bench", "train", *s["fewstep"], "--batch", str(batch),
                    "--steps", steps],
        "jax": [sys.executable, os.path.join(HERE, "jax_twin.py"), *s["jax"], "--batch",
                str(batch), "--steps", steps],
        "torch": [sys.executable, os.path.join(HERE, "torch_twin.py"), "--device", "cpu",
                  "--modes", "eager", *s["torch"], s["torch_batch"], str(batch), "--warmup", "3",
                  "--steps", steps],
    }
    names = ["fewstep"] + [p for p in a.peers.split(",") if p]
    print(f"{a.model}, batch {batch}, {a.steps} timed steps; steps/s (peak RSS MB)")
    header = ["round"] + names + [f"fewstep / {p}" for p in names[1:]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    status = 0
    for r in range(1, a.rounds + 1):
        rate, cells = {}, []
        for name in names:
            rec, rss, err = peak_rss_mb(programs[name])
            if err:
                cells.append(f"failed: {err}")
                status = 1
                continue
            rate[name] = rec["steps_per_s"]
            cells.append(f"{rec['steps_per_s']:.2f} ({rss:.0f})")
        ratios = [f"{rate['fewstep'] / rate[p]:.2f}x" if "fewstep" in rate and p in rate else "-"
                  for p in names[1:]]
        print("| " + " | ".join([str(r)] + cells + ratios) + " |", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
