"""Diagnose a training checkpoint: flow-matching loss at fixed times against two trivial velocities.

    PYTHONPATH=. python docs/scripts/velocity_loss_by_t.py CHECKPOINT [--cache cache/taef2-x2-320] [--n 32]

Prints, for t in {0, 0.5, 0.75, 0.9, 0.99}, the loss of the checkpoint's EMA model, of ``v = 0``
(stay at the noised source), of ``v = cond - x_t`` (move to the clean source: one Euler step gives
PSU; the linear skip's initial velocity) and of the closed-form Gaussian velocity
(:func:`flowup.flow.gaussian_velocity` with the per-channel statistics of the whole cache; the
Gaussian skip's initial velocity), on ``--n`` cached pairs (central 32x32 latent crops of the first
shard of the cache's top folder), with a fixed noise seed. A model that does not beat
``cond - x_t`` at t = 0 has not learnt to denoise its source yet.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from safetensors.torch import load_file

from flowup.flow import gaussian_velocity, interpolate, noise_source, target_velocity
from train.export import load_flow_from_checkpoint
from train.latent_cache import residual_statistics


@torch.no_grad()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--cache", default="cache/taef2-x2-320")
    parser.add_argument("--n", type=int, default=32)
    args = parser.parse_args()
    shards = sorted(Path(args.cache).glob("shard-*.safetensors"))
    pairs = load_file(str(shards[0]))
    hr, src = (pairs[k][: args.n].float() for k in ("hr", "src"))
    side = hr.shape[-1]
    size = min(32, side)
    lo = (side - size) // 2
    hr, src = hr[..., lo : lo + size, lo : lo + size], src[..., lo : lo + size, lo : lo + size]
    flow, hp = load_flow_from_checkpoint(args.checkpoint)
    a = float(hp["noise_alpha"])
    eps = torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))
    x0 = noise_source(src, a, noise=eps)
    target = target_velocity(x0, hr)
    print(f"{args.checkpoint}: step {hp['global_step']}, noise_alpha {a}")
    mean, var = (torch.tensor(v).view(1, -1, 1, 1) for v in residual_statistics(args.cache))
    print("    t   model   v=0     cond-x_t  gaussian")
    for t in (0.0, 0.5, 0.75, 0.9, 0.99):
        x_t = interpolate(x0, hr, t)
        v = flow(x_t, torch.full((len(hr),), t), src)
        prior = gaussian_velocity(x_t, t, src, a, mean, var)
        losses = [((u - target) ** 2).mean().item() for u in (v, torch.zeros_like(v), src - x_t, prior)]
        print(f"  {t:.2f}  " + "  ".join(f"{l:.4f}" for l in losses))


if __name__ == "__main__":
    main()
