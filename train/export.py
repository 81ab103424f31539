"""Export a training checkpoint (its EMA weights) as a ``FlowUpPipeline`` folder.

``python -m train export CHECKPOINT OUT_DIR [--dtype float16] [--steps N] [--solver euler] [--back-projection N]``

The checkpoint's ``state_dict`` holds the averaged (EMA) weights when the run used
:class:`train.ema.WarmupEMA` (Lightning stores the average there); the live weights are ignored.
The codec is referenced by its spec (``taef2``), not copied. ``training.json`` beside the model
records the checkpoint, its hyperparameters and the training cost (wall-clock hours, hardware)
that :class:`train.cost.TrainingCost` stored in the checkpoint, if any (``--info`` adds or overrides
keys). The default number of steps is the module's ``default_num_inference_steps`` hyperparameter
where it has one (distilled students, the regression baseline), else 4.

``--cascade-of MODEL`` exports a second-stage network instead (trained on cascade-aware pairs,
``python -m train prepare --source-model MODEL``): the output is MODEL (its flow, config and
codec) with the checkpoint as its ``cascade_flow``, which runs the later stages of x4 / x8.

``--faithful-of MODEL [--denoise S]`` exports a fine-tune of MODEL's flow on degraded pairs
(``configs/train/cpu_generated.yaml``) as the clean end of the denoise control: the output is MODEL
with the checkpoint as its ``flow`` and MODEL's flow as its ``faithful_flow`` (:mod:`flowup.denoise`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from flowup.codecs import load_codec
from flowup.models import FlowUNet
from train.module import flow_from_hparams

if TYPE_CHECKING:
    from flowup.pipeline import FlowUpPipeline

__all__ = ["export_cascade", "export_checkpoint", "export_clean", "main"]


def load_flow_from_checkpoint(checkpoint: str | Path) -> tuple[FlowUNet, dict]:
    """The FlowUNet with the checkpoint's (EMA) weights, and the run's hyperparameters."""
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hp = dict(ckpt["hyper_parameters"])
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    hp.setdefault("source_skip", "skip.weight" in state)  # checkpoints from before the option existed
    flow = flow_from_hparams(hp)
    flow.load_state_dict(state)
    hp["global_step"] = int(ckpt.get("global_step", 0))
    hp["training_cost"] = ckpt.get("training_cost")  # from train.cost.TrainingCost, if the run had it
    return flow.eval(), hp


def export_checkpoint(
    checkpoint: str | Path,
    out_dir: str | Path,
    dtype: torch.dtype = torch.float16,
    num_inference_steps: int | None = None,
    solver: str = "euler",
    training_info: dict | None = None,
    back_projection_steps: int = 0,
) -> Path:
    """Write ``out_dir`` (``model_index.json``, ``flow/`` safetensors) from ``checkpoint``."""
    from flowup.pipeline import FlowUpPipeline

    flow, hp = load_flow_from_checkpoint(checkpoint)
    cost = hp.pop("training_cost", None)
    if num_inference_steps is None:
        num_inference_steps = int(hp.get("default_num_inference_steps", 4))
    codec = load_codec(hp.get("codec", "taef2"))
    pipe = FlowUpPipeline(
        flow=flow, codec=codec, noise_alpha=float(hp["noise_alpha"]), scale_factor=int(hp.get("scale", 2)),
        default_num_inference_steps=num_inference_steps, default_solver=solver,
        codec_spec=hp.get("codec", "taef2"), default_back_projection_steps=back_projection_steps,
    )  # fmt: skip
    out_dir = Path(out_dir)
    pipe.save_pretrained(out_dir, torch_dtype=dtype)
    info = {"checkpoint": str(checkpoint), "global_step": hp["global_step"], "hyper_parameters": hp}
    info.update(cost or {})
    info.update(training_info or {})
    (out_dir / "training.json").write_text(json.dumps(info, indent=2, default=str))
    return out_dir


def _onto_base(checkpoint: str | Path, base_model: str | Path) -> tuple["FlowUpPipeline", FlowUNet, dict, dict, Path]:
    """``(base pipeline, checkpoint network, its hyperparameters, its training cost, base folder)``,
    the noise augmentation checked to match."""
    from flowup.model_folder import default_model_path
    from flowup.pipeline import FlowUpPipeline

    base_model = default_model_path() if str(base_model) == "shipped" else Path(base_model)
    base = FlowUpPipeline.from_pretrained(base_model, runtime="torch")
    network, hp = load_flow_from_checkpoint(checkpoint)
    cost = hp.pop("training_cost", None)
    if abs(float(hp["noise_alpha"]) - float(base.config.noise_alpha)) > 1e-6:
        raise ValueError(f"the checkpoint's noise_alpha {hp['noise_alpha']} differs from the base model's")
    return base, network, hp, cost or {}, base_model


def _base_config(base: "FlowUpPipeline") -> dict:
    skip = ("flow", "codec", "cascade_flow", "faithful_flow")
    return {k: v for k, v in base.config.items() if not k.startswith("_") and k not in skip}


def export_cascade(
    checkpoint: str | Path,
    base_model: str | Path,
    out_dir: str | Path,
    dtype: torch.dtype = torch.float16,
    cascade_detail: float | None = None,
    training_info: dict | None = None,
) -> Path:
    """Write ``out_dir``: ``base_model`` with the checkpoint's (EMA) network as its ``cascade_flow``.

    ``cascade_detail``: the x4 / x8 default ``detail`` stored (None: the base model's)."""
    from flowup.pipeline import FlowUpPipeline

    base, cascade, hp, cost, base_model = _onto_base(checkpoint, base_model)
    config = _base_config(base)
    if cascade_detail is not None:
        config["default_cascade_detail"] = float(cascade_detail)
    pipe = FlowUpPipeline(flow=base.flow, codec=base.codec, cascade_flow=cascade, faithful_flow=base.faithful_flow,
                          **config)  # fmt: skip
    out_dir = Path(out_dir)
    pipe.save_pretrained(out_dir, torch_dtype=dtype)
    info = {"cascade_flow": {"checkpoint": str(checkpoint), "global_step": hp["global_step"], "hyper_parameters": hp,
                             **cost, **(training_info or {})},
            "base_model": str(base_model)}  # fmt: skip
    (out_dir / "training.json").write_text(json.dumps(info, indent=2, default=str))
    return out_dir


def export_clean(
    checkpoint: str | Path,
    base_model: str | Path,
    out_dir: str | Path,
    default_denoise: float | None = None,
    dtype: torch.dtype = torch.float16,
    training_info: dict | None = None,
) -> Path:
    """Write ``out_dir``: the checkpoint's (EMA) network as the ``flow`` (the clean end of the
    denoise control, :mod:`flowup.denoise`) and ``base_model``'s flow as its ``faithful_flow``;
    the base model's config otherwise, with ``default_denoise`` stored (None: the base model's
    where it has a denoise control, else 1). When the base model has a ``faithful_flow``, that
    stays the faithful end (the checkpoint replaces its clean end). The checkpoint must be a
    fine-tune of the base model's flow (``init_weights``), so that the two blend."""
    from flowup.pipeline import FlowUpPipeline

    base, clean, hp, cost, base_model = _onto_base(checkpoint, base_model)
    faithful = base.faithful_flow if base.faithful_flow is not None else base.flow
    config = _base_config(base)
    if default_denoise is not None or base.faithful_flow is None:
        config["default_denoise"] = float(1.0 if default_denoise is None else default_denoise)
    pipe = FlowUpPipeline(flow=clean, codec=base.codec, cascade_flow=base.cascade_flow, faithful_flow=faithful, **config)
    out_dir = Path(out_dir)
    pipe.save_pretrained(out_dir, torch_dtype=dtype)
    info = {"checkpoint": str(checkpoint), "global_step": hp["global_step"], "hyper_parameters": hp, **cost,
            **(training_info or {}),
            "faithful_flow": f"the {'faithful_flow' if base.faithful_flow is not None else 'flow'} of {base_model}"}  # fmt: skip
    (out_dir / "training.json").write_text(json.dumps(info, indent=2, default=str))
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train export", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a Lightning .ckpt written by `python -m train fit`")
    parser.add_argument("out_dir", help="output folder (a FlowUpPipeline)")
    parser.add_argument("--dtype", choices=["float16", "float32", "bfloat16"], default="float16")
    parser.add_argument("--steps", type=int, default=None,
                        help="default number of inference steps stored (default: the module's, else 4)")
    parser.add_argument("--solver", default="euler", help="default solver stored")
    parser.add_argument("--back-projection", type=int, default=0, metavar="N",
                        help="default low-res consistency steps stored (flowup.back_projection; default: 0)")
    parser.add_argument("--info", default=None, help="JSON file with extra training info (wall time, hardware)")
    parser.add_argument("--cascade-of", default=None, metavar="MODEL",
                        help="export as MODEL's cascade_flow (its later x4 / x8 stages); 'shipped' = the shipped model")
    parser.add_argument("--cascade-detail", type=float, default=None,
                        help="with --cascade-of: the x4 / x8 default detail stored (default: MODEL's)")
    parser.add_argument("--faithful-of", default=None, metavar="MODEL",
                        help="export the checkpoint (a fine-tune of MODEL's flow on degraded pairs) as the clean end "
                        "of the denoise control, MODEL's flow as its faithful end; 'shipped' = the shipped model")
    parser.add_argument("--denoise", type=float, default=None,
                        help="with --faithful-of: the default denoise stored, 0 to 1 (default: MODEL's, else 1)")
    args = parser.parse_args(argv)
    info = json.loads(Path(args.info).read_text()) if args.info else None
    if args.faithful_of is not None:
        out = export_clean(args.checkpoint, args.faithful_of, args.out_dir, args.denoise, getattr(torch, args.dtype), info)
        print(f"exported {args.checkpoint} with the flow of {args.faithful_of} as its faithful end -> {out}")
        return
    if args.cascade_of is not None:
        out = export_cascade(args.checkpoint, args.cascade_of, args.out_dir, getattr(torch, args.dtype),
                             args.cascade_detail, info)  # fmt: skip
        print(f"exported {args.checkpoint} as the cascade flow of {args.cascade_of} -> {out}")
        return
    out = export_checkpoint(args.checkpoint, args.out_dir, getattr(torch, args.dtype), args.steps, args.solver, info,
                            back_projection_steps=args.back_projection)
    print(f"exported {args.checkpoint} -> {out}")
