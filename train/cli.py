"""LightningCLI entry for ``python -m train fit|validate --config configs/train/<recipe>.yaml``."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LightningCLI

from train.datamodule import LatentPairDataModule
from train.module import FlowMatchingModule

__all__ = ["cli_main"]


class FlowUpCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # One source of truth for the scale factor.
        parser.link_arguments("model.init_args.scale", "data.scale")


def cli_main(args: list[str] | None = None, run: bool = True) -> FlowUpCLI:
    """Parse ``args`` (default: ``sys.argv``); with ``run=False`` only build the trainer, model and data."""
    torch.set_float32_matmul_precision("high")
    return FlowUpCLI(
        FlowMatchingModule, LatentPairDataModule, subclass_mode_model=True, seed_everything_default=0, args=args, run=run,
        save_config_kwargs={"overwrite": True},
    )  # fmt: skip
