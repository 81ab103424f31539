"""Diagnose a training checkpoint: flow-matching loss at fixed times against two trivial velocities.

    PYTHONPATH=. python docs/scripts/velocity_loss_by_t.py CHECKPOINT [--cache cache/taef2-x2-320] [--n 32]

Prints, for t in {0, 0.5, 0.9}, the loss of the checkpoint's EMA model, of ``v = 0`` (stay at the
noised source) and of ``v = cond - x_t`` (move to the clean source: one Euler step gives PSU), on
``--n`` cached pairs (central 32x32 latent crops of the second shard), with a fixed noise seed. A
model that does not beat ``cond - x_t`` at t = 0 has not learnt to denoise its source yet.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from safetensors.torch import load_file

from train.export import load_flow_from_checkpoint


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--cache", default="cache/taef2-x2-320")
    parser.add_argument("--n", type=int, default=32)
    args = parser.parse_args()
    shards = sorted(Path(args.cache).rglob("shard-*.safetensors"))
    pairs = load_file(str(shards[min(1, len(shards) - 1)]))
    hr, src = (pairs[k][: args.n].float() for k in ("hr", "src"))
    side, size = hr.shape[-1], 32
    lo = (side - size) // 2
    hr, src = hr[..., lo : lo + size, lo : lo + size], src[..., lo : lo + size, lo : lo + size]
    flow, hp = load_flow_from_checkpoint(args.checkpoint)
    a = float(hp["noise_alpha"])
    eps = torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))
    x0 = math.sqrt(a) * src + math.sqrt(1 - a) * eps
    target = hr - x0
    print(f"{args.checkpoint}: step {hp['global_step']}, noise_alpha {a}")
    print("   t   model   v=0   v=cond-x_t")
    for t in (0.0, 0.5, 0.9):
        x_t = (1 - t) * x0 + t * hr
        v = flow(x_t, torch.full((len(hr),), t), src)
        losses = [((u - target) ** 2).mean().item() for u in (v, torch.zeros_like(v), src - x_t)]
        print(f"  {t:.1f}  " + "  ".join(f"{l:.4f}" for l in losses))


if __name__ == "__main__":
    main()
