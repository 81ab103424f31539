"""Direct regression baseline: the same network and data as flowup, one step, no flow, no noise.

The network predicts a residual on the clean source latent, ``x1_pred = src + v(src, 0, src)``,
trained with ``|| x1_pred - hr ||^2`` (L2 on the target latent). This is exactly one Euler step of
a "flow" whose source has no noise (``noise_alpha = 1``), so the model exports with
:mod:`train.export` as an ordinary ``FlowUpPipeline`` (``noise_alpha=1.0``, 1 Euler step) and
every tool loads and times it like the flow models. The paper (arXiv 2312.07360) reports such
regression as blurry: with the mean of all plausible high-res latents as its target, it cannot
commit to one sharp texture; the evaluation (``configs/eval/distillation.yaml``) shows whether it
is here.
"""

from __future__ import annotations

import torch

from train.module import FlowMatchingModule

__all__ = ["RegressionModule", "regression_prediction", "regression_loss"]


def regression_prediction(model: torch.nn.Module, src: torch.Tensor) -> torch.Tensor:
    """``src + model(src, 0, src)`` for clean source latents ``(N, C, h, w)``."""
    t = torch.zeros(src.shape[0], device=src.device, dtype=src.dtype)
    return src + model(src, t, src)


def regression_loss(model: torch.nn.Module, src: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """``mean || src + model(src, 0, src) - hr ||^2`` over all elements."""
    return torch.mean((regression_prediction(model, src).float() - hr.float()) ** 2)


class RegressionModule(FlowMatchingModule):
    """Trains a :class:`~flowup.models.FlowUNet` as a one-step regressor (see the module docstring).

    Arguments as :class:`~train.module.FlowMatchingModule` less the flow's own (``noise_alpha`` is
    1, no training times); validation samples the 1-step output.
    """

    def __init__(
        self,
        latent_channels: int = 32,
        block_out_channels: tuple[int, ...] = (64, 128, 128),
        layers_per_block: int = 1,
        norm_num_groups: int = 1,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.99),
        warmup_steps: int = 200,
        decay: bool = True,
        final_lr_fraction: float = 0.1,
        scale: int = 2,
        codec: str = "taef2",
    ):
        super().__init__(
            latent_channels=latent_channels, block_out_channels=block_out_channels, layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups, noise_alpha=1.0, lr=lr, weight_decay=weight_decay, betas=betas,
            warmup_steps=warmup_steps, decay=decay, final_lr_fraction=final_lr_fraction, scale=scale, codec=codec,
            val_steps=(1,),
        )  # fmt: skip
        # What train.export and the parent's validation read, whatever hparams the CLI gave.
        self.hparams.update(noise_alpha=1.0, val_steps=[1], time_distribution="uniform", default_num_inference_steps=1)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = regression_loss(self.model, batch["src"], batch["hr"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=batch["hr"].shape[0])
        return loss
