"""Few-step students of a flowup teacher: knowledge distillation of the teacher's ODE end point.

Method (Luhman & Luhman 2021, "Knowledge Distillation in Iterative Generative Models for Improved
Sampling Speed", arXiv 2101.02388, the "denoising student"): the teacher's sampler is deterministic
once its starting point is fixed, so it is a function ``x0 -> x1_T``; a student initialised with
the teacher's weights is trained to reproduce that function in one network pass by plain
regression (their KL objective reduces to a mean squared error on the teacher's outputs). For
rectified flows this is the "distillation" step of Liu, Gong & Liu 2022 ("Flow Straight and Fast",
arXiv 2209.03003, sec. 2.3), ``x1_T ~ x0 + v(x0, 0)``. For flowup:

- ``x0 = sqrt(a) z_src + sqrt(1 - a) eps`` exactly as at inference (the teacher's ``noise_alpha``),
  ``cond = z_src``;
- target ``x1_T``: the teacher's ODE solution from that ``x0`` (``teacher_steps`` steps of
  ``teacher_solver``; Euler 40 is the paper's sampler);
- student: ``student_steps`` Euler steps from the same ``x0`` (1: ``x0 + v(x0, 0, c)``; 2: the two
  steps unrolled, gradients through both); loss ``|| student(x0) - x1_T ||^2``.

The student stays a :class:`~flowup.models.FlowUNet` and exports with :mod:`train.export` as an
ordinary ``FlowUpPipeline`` folder (``default_num_inference_steps = student_steps``, Euler), so
every tool loads it.

Why not reflow (Liu et al. 2022)? Reflow trains a new flow on the same teacher pairs with the
flow-matching loss at random ``t`` and still samples with a few steps; it pays off when the
teacher's paths are strongly curved. flowup's source is the upsampled image plus a little noise
(``a = 0.9``), the coupling is nearly deterministic and the paths nearly straight, so regressing
the end point directly optimises exactly what a 1- or 2-step sampler outputs, from the same pairs.

Teacher targets come from either

- a **target cache** (cheaper on a CPU; the recipes use it): ``python -m train.distill --teacher
  DIR --cache LATENT_CACHE --out TARGET_CACHE`` runs the teacher once per cached pair and stores
  ``noise`` and ``target`` beside ``src`` / ``hr``; each pair then serves every epoch and both
  students. Training reads it with the ordinary data module (``data.cache_dir``);
- or **on the fly** when the batch has no ``target`` (a plain latent cache): fresh noise every
  step, ``teacher_steps`` teacher evaluations per sample and step (fine on a GPU).

Either way the cost is recorded: the student's ``training.json`` (via :class:`train.cost.TrainingCost`
and :mod:`train.export`) adds up the teacher's own training (its ``training.json``), the teacher
targets (hours, hardware, teacher NFE) and the student's training.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from flowup.flow import noise_source
from flowup.models import FlowUNet
from flowup.solver import ADAPTIVE_METHODS, FIXED_STEP_METHODS, sample
from train.cost import combine_costs, describe_hardware
from train.latent_cache import LatentPairDataset
from train.module import FlowMatchingModule

__all__ = [
    "DistillationModule",
    "load_teacher",
    "teacher_endpoint",
    "student_endpoint",
    "distillation_loss",
    "prepare_teacher_targets",
    "main",
]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# The objective


@torch.no_grad()
def teacher_endpoint(
    teacher: torch.nn.Module, x0: torch.Tensor, cond: torch.Tensor, num_steps: int = 40, solver: str = "euler"
) -> tuple[torch.Tensor, int]:
    """The teacher's ODE solution at t = 1 from ``x0`` ``(N, C, h, w)``, and its NFE per sample."""
    result = sample(lambda x, t: teacher(x, t, cond), x0, num_steps=num_steps, method=solver)
    return result.x1, result.nfe


def student_endpoint(student: torch.nn.Module, x0: torch.Tensor, cond: torch.Tensor, num_steps: int) -> torch.Tensor:
    """``num_steps`` Euler steps of the student from ``x0`` ``(N, C, h, w)``, differentiable."""
    return sample(lambda x, t: student(x, t, cond), x0, num_steps=num_steps, method="euler").x1


def distillation_loss(
    student: torch.nn.Module, x0: torch.Tensor, cond: torch.Tensor, target: torch.Tensor, student_steps: int
) -> torch.Tensor:
    """``mean || student_endpoint(x0) - target ||^2`` over all elements (Luhman & Luhman 2021)."""
    prediction = student_endpoint(student, x0, cond, student_steps)
    return torch.mean((prediction.float() - target.float()) ** 2)


# ---------------------------------------------------------------------------------------------
# The teacher


def load_teacher(folder: str | Path) -> tuple[FlowUNet, dict[str, Any]]:
    """The teacher's velocity network (float32, eval) and what a student inherits from its folder.

    Returns ``(flow, info)`` with ``info``: ``noise_alpha``, ``scale_factor``, ``codec`` (a spec
    :func:`flowup.load_codec` accepts), ``default_num_inference_steps`` and ``training_cost`` (the
    folder's ``training.json``, or None).
    """
    folder = Path(folder)
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"teacher {folder}: not a FlowUpPipeline folder (no model_index.json)")
    index = json.loads(index_path.read_text())
    flow_class = (index.get("flow") or [None, None])[1]
    if flow_class != "FlowUNet":
        raise ValueError(f"teacher {folder}: flow is {flow_class!r}, distillation needs a FlowUNet")
    flow = FlowUNet.from_pretrained(folder / "flow", torch_dtype=torch.float32, low_cpu_mem_usage=False)
    flow = flow.eval().requires_grad_(False)
    codec = index.get("codec_spec") or (str(folder / "codec") if (folder / "codec").is_dir() else "taef2")
    training = folder / "training.json"
    info = {
        "noise_alpha": float(index["noise_alpha"]),
        "scale_factor": int(index.get("scale_factor", 2)),
        "codec": codec,
        "default_num_inference_steps": int(index.get("default_num_inference_steps", 40)),
        "training_cost": json.loads(training.read_text()) if training.is_file() else None,
    }
    return flow, info


def _teacher_stage(teacher: str, cost: dict | None) -> dict[str, Any]:
    """The teacher's own training as a cost stage (hours None when its ``training.json`` lacks them)."""
    cost = cost or {}
    stage = {"stage": "teacher training", "teacher": str(teacher),
             "wall_clock_hours": cost.get("wall_clock_hours"), "hardware": cost.get("hardware")}  # fmt: skip
    if stage["wall_clock_hours"] is None:
        stage["note"] = f"{teacher}/training.json records no wall_clock_hours: not included in the total"
    return stage


# ---------------------------------------------------------------------------------------------
# Lightning module


class DistillationModule(FlowMatchingModule):
    """A ``student_steps``-step Euler student of the FlowUpPipeline folder ``teacher``.

    The student starts as a copy of the teacher's network; architecture, ``noise_alpha``, codec
    and scale are the teacher's. Batches are latent pairs ``{"src", "hr"}`` ``(N, C, s, s)``, plus
    ``{"noise", "target"}`` from a target cache (else targets are computed on the fly).

    Args:
        teacher: FlowUpPipeline folder of the teacher (e.g. ``flowup/pretrained/taef2-x2``).
        student_steps: Euler steps of the student (1 or 2; any positive integer works).
        teacher_steps, teacher_solver: the teacher's sampler (``euler`` 40 = the paper's).
        lr, weight_decay, betas, warmup_steps, decay, final_lr_fraction: AdamW and schedule
            (see :class:`~train.module.FlowMatchingModule`).
        scale: must equal the teacher's scale factor (2).
        val_steps: Euler steps sampled at validation (default: ``student_steps``).
    """

    def __init__(
        self,
        teacher: str,
        student_steps: int = 1,
        teacher_steps: int = 40,
        teacher_solver: Literal["euler", "midpoint", "rk4", "dopri5"] = "euler",
        lr: float = 5e-5,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.99),
        warmup_steps: int = 50,
        decay: bool = True,
        final_lr_fraction: float = 0.1,
        scale: int = 2,
        val_steps: tuple[int, ...] | None = None,
    ):
        if student_steps < 1 or teacher_steps < 1:
            raise ValueError(f"student_steps and teacher_steps must be positive, got {student_steps}, {teacher_steps}")
        if teacher_solver not in FIXED_STEP_METHODS + ADAPTIVE_METHODS:
            raise ValueError(f"unknown teacher_solver {teacher_solver!r}")
        teacher_flow, info = load_teacher(teacher)
        if scale != info["scale_factor"]:
            raise ValueError(f"scale {scale} differs from the teacher's scale factor {info['scale_factor']}")
        cfg = teacher_flow.config
        val_steps = tuple(val_steps) if val_steps else (student_steps,)
        inherited = dict(
            latent_channels=cfg.latent_channels, block_out_channels=list(cfg.block_out_channels),
            layers_per_block=cfg.layers_per_block, norm_num_groups=cfg.norm_num_groups,
            source_skip=cfg.source_skip, residual_mean=cfg.residual_mean, residual_var=cfg.residual_var,
            noise_alpha=info["noise_alpha"], codec=info["codec"],
        )  # fmt: skip
        super().__init__(
            **inherited, lr=lr, weight_decay=weight_decay, betas=betas, warmup_steps=warmup_steps, decay=decay,
            final_lr_fraction=final_lr_fraction, scale=scale, val_steps=val_steps,
        )  # fmt: skip
        # What train.export and the parent's validation read, whatever hparams the CLI gave.
        self.hparams.update(inherited, val_steps=list(val_steps), time_distribution="uniform",
                            default_num_inference_steps=student_steps)  # fmt: skip
        self.model = copy.deepcopy(teacher_flow).train().requires_grad_(True)
        self._teacher_holder = [teacher_flow]  # a list: frozen, not a submodule, not in checkpoints
        self._teacher_stage = _teacher_stage(teacher, info["training_cost"])
        if self._teacher_stage["wall_clock_hours"] is None:
            log.warning(self._teacher_stage["note"])
        self._targets_stage: dict[str, Any] | None = None  # set from the target cache's recipe
        self.teacher_nfe_total = 0  # teacher evaluations x samples computed on the fly

    @property
    def teacher(self) -> FlowUNet:
        """The frozen teacher network, on this module's device."""
        flow = self._teacher_holder[0]
        if flow.device != self.device:
            flow.to(self.device)
        return flow

    def on_train_start(self) -> None:
        recipe = getattr(getattr(self.trainer.datamodule, "train_set", None), "recipe", None) or {}
        targets = recipe.get("teacher_targets")
        if targets is None:
            return
        hp = self.hparams
        if Path(targets["teacher"]).resolve() != Path(hp.teacher).resolve():
            raise ValueError(f"the target cache was made by teacher {targets['teacher']}, not {hp.teacher}")
        if (targets["teacher_steps"], targets["teacher_solver"]) != (hp.teacher_steps, hp.teacher_solver):
            raise ValueError(
                f"the target cache holds the teacher at {targets['teacher_solver']} {targets['teacher_steps']} steps; "
                f"this run says {hp.teacher_solver} {hp.teacher_steps}"
            )
        self._targets_stage = {"stage": "teacher targets", **targets}

    def teacher_targets(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x0, x1_T)`` for a batch: from the cache's ``noise`` / ``target``, or computed now."""
        cond = batch["src"]
        if "target" in batch:
            return noise_source(cond, self.hparams.noise_alpha, noise=batch["noise"]), batch["target"]
        x0 = noise_source(cond, self.hparams.noise_alpha, noise=torch.randn_like(cond))
        target, nfe = teacher_endpoint(self.teacher, x0, cond, self.hparams.teacher_steps, self.hparams.teacher_solver)
        self.teacher_nfe_total += nfe * cond.shape[0]
        return x0, target

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x0, target = self.teacher_targets(batch)
        loss = distillation_loss(self.model, x0, batch["src"], target, self.hparams.student_steps)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=x0.shape[0])
        return loss

    # ---------------------------------------------------------------- cost bookkeeping
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Callbacks write first (Lightning's order): TrainingCost has put this run's cost here.
        world = self.trainer.world_size if self._trainer is not None else 1
        checkpoint["distillation"] = {"teacher_nfe_total": self.teacher_nfe_total * world}
        own = checkpoint.get("training_cost") or {"stages": [{"stage": "training", "wall_clock_hours": None}]}
        student = [dict(s, stage="student training") for s in own["stages"]]
        if self.teacher_nfe_total:
            student[-1]["teacher_nfe_total"] = self.teacher_nfe_total * world
            student[-1]["note"] = "teacher targets computed on the fly: their time is in this stage"
        stages = [self._teacher_stage] + ([self._targets_stage] if self._targets_stage else []) + student
        hp = self.hparams
        checkpoint["training_cost"] = {
            **combine_costs(stages),
            "method": "knowledge distillation of the teacher's ODE end point (Luhman & Luhman 2021)",
            "teacher": str(hp.teacher),
            "teacher_sampler": f"{hp.teacher_solver} {hp.teacher_steps} steps",
            "student_steps": hp.student_steps,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        world = self.trainer.world_size if self._trainer is not None else 1
        self.teacher_nfe_total = checkpoint.get("distillation", {}).get("teacher_nfe_total", 0) // max(1, world)


# ---------------------------------------------------------------------------------------------
# Target cache


def _shard_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


@torch.no_grad()
def prepare_teacher_targets(
    teacher: str | Path,
    cache_dir: str | Path,
    out_dir: str | Path,
    num_steps: int = 40,
    solver: str = "euler",
    limit: int | None = None,
    batch_size: int = 16,
    shard_size: int = 128,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> int:
    """Run the teacher once per cached latent pair; write ``src, hr, noise, target`` shards.

    ``limit`` pairs at most, drawn at random (seeded) from the whole cache. Shards are written
    atomically and a rerun skips the ones already there (same seed: same noise), so an interrupted
    run resumes. ``recipe.json`` is the source cache's recipe plus ``teacher_targets``: the teacher,
    its sampler, the pairs, the teacher's NFE and the wall-clock hours and hardware it took.
    Returns the number of pairs in the target cache.
    """
    out_dir = Path(out_dir)
    if Path(cache_dir).resolve() in [out_dir.resolve(), *out_dir.resolve().parents]:
        raise ValueError("write the target cache outside the latent cache (training reads shards recursively)")
    flow, info = load_teacher(teacher)
    flow.to(device)
    pairs = LatentPairDataset(cache_dir, latent_size=1)  # only its whole tensors and recipe are used
    count = len(pairs.hr) if limit is None else min(limit, len(pairs.hr))
    order = torch.randperm(len(pairs.hr), generator=torch.Generator().manual_seed(seed))[:count]
    settings = {"teacher": str(Path(teacher).resolve()), "teacher_steps": num_steps, "teacher_solver": solver,
                "source_cache": str(Path(cache_dir).resolve()), "pairs": count, "seed": seed, "shard_size": shard_size}
    recipe_path = out_dir / "recipe.json"
    if recipe_path.is_file():  # resuming: the shards there must come from the same settings
        before = json.loads(recipe_path.read_text()).get("teacher_targets", {})
        changed = {k: before.get(k) for k, v in settings.items() if before.get(k) != v}
        if changed:
            raise ValueError(f"{out_dir} holds teacher targets made with other settings {changed}; use a new --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    recipe = dict(pairs.recipe)
    recipe["teacher_targets"] = settings
    recipe_path.write_text(json.dumps(recipe, indent=2))
    shards = range(0, count, shard_size)
    for k, begin in enumerate(tqdm(shards, desc="teacher targets", unit="shard", disable=not progress)):
        path = out_dir / f"shard-{k:05d}.safetensors"
        if path.is_file():
            continue
        start = time.monotonic()
        generator = torch.Generator().manual_seed(seed * 100_003 + k)
        index = order[begin : begin + shard_size]
        src, hr = pairs.src[index], pairs.hr[index]
        noise = torch.randn(src.shape, generator=generator).half()  # stored as used: fp16
        targets, nfe_total = [], 0
        for b in range(0, len(index), batch_size):
            cond = src[b : b + batch_size].float().to(device)
            x0 = noise_source(cond, info["noise_alpha"], noise=noise[b : b + batch_size].float().to(device))
            target, nfe = teacher_endpoint(flow, x0, cond, num_steps, solver)
            targets.append(target.half().cpu())
            nfe_total += nfe * len(cond)
        tensors = {"src": src.contiguous(), "hr": hr.contiguous(), "noise": noise, "target": torch.cat(targets)}
        tmp = path.with_suffix(".tmp")
        shard_info = {"seconds": f"{time.monotonic() - start:.3f}", "nfe_total": str(nfe_total)}
        save_file(tensors, str(tmp), metadata=shard_info)
        tmp.replace(path)
    # Time and NFE from every shard's metadata: a resumed run counts the earlier runs' shards too.
    metadata = [_shard_metadata(p) for p in sorted(out_dir.glob("shard-*.safetensors"))]
    seconds = sum(float(m.get("seconds", 0.0)) for m in metadata)
    nfe_total = sum(int(m.get("nfe_total", 0)) for m in metadata)
    recipe["teacher_targets"] = {
        **settings,
        "latent_size": int(pairs.hr.shape[-1]),
        "teacher_nfe_per_pair": round(nfe_total / max(1, count), 2),
        "teacher_nfe_total": nfe_total,
        "wall_clock_hours": round(seconds / 3600, 6),
        "hardware": describe_hardware("cuda" if str(device).startswith("cuda") else "cpu"),
    }
    recipe_path.write_text(json.dumps(recipe, indent=2))
    return count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m train.distill",
        description="Run a teacher FlowUpPipeline once over a latent cache and store its ODE end points "
        "(a target cache for DistillationModule: configs/train/distill_*.yaml).",
    )
    parser.add_argument("--teacher", required=True, help="teacher FlowUpPipeline folder")
    parser.add_argument("--cache", required=True, help="latent cache from `python -m train prepare`")
    parser.add_argument("--out", required=True, help="target cache folder to write (outside --cache)")
    parser.add_argument("--steps", type=int, default=40, help="teacher steps (default 40, the paper's)")
    parser.add_argument("--solver", default="euler", choices=list(FIXED_STEP_METHODS + ADAPTIVE_METHODS))
    parser.add_argument("--limit", type=int, default=None, help="at most this many pairs (random, seeded)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    n = prepare_teacher_targets(args.teacher, args.cache, args.out, args.steps, args.solver, args.limit,
                                args.batch_size, seed=args.seed, device=args.device)  # fmt: skip
    recipe = json.loads((Path(args.out) / "recipe.json").read_text())["teacher_targets"]
    print(f"wrote teacher targets for {n} pairs to {args.out} "
          f"({recipe['teacher_nfe_total']} teacher NFE, {recipe['wall_clock_hours']:.3f} h on {recipe['hardware']})")


if __name__ == "__main__":
    main()
