"""Lightning module for the Coupling Flow Matching objective (docs/method.md, arXiv 2312.07360).

A batch holds cached latent pairs ``{"src": (N, C, s, s), "hr": (N, C, s, s)}``: the clean
pixel-space-upsampled source (the conditioning) and the high-res target. The loss is
:func:`flowup.flow.flow_matching_loss`, optionally plus a loss on the decoded 1-step sample
(:mod:`train.decoded_loss`). Validation samples with the (EMA) model at a few Euler
step counts on real images, decodes with the codec and logs PSNR / SSIM, and saves an image grid
(low-res | flowup | high-res) in the run folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping

import lightning.pytorch as pl
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from flowup.codecs import Codec, load_codec
from flowup.flow import flow_matching_loss
from flowup.models import FlowUNet
from flowup.resample import upsample
from train.decoded_loss import decoded_image_loss, one_step_prediction
from train.latent_cache import residual_statistics
from train.schedule import warmup_cosine

if TYPE_CHECKING:
    from flowup.pipeline import FlowUpPipeline

__all__ = ["FlowMatchingModule", "flow_from_hparams", "load_flow_weights"]


def load_flow_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A trained :class:`FlowUNet`'s float32 state dict from a model folder, a ``flow`` folder,
    a ``.safetensors`` file or ``"shipped"`` (read with safetensors)."""
    from safetensors.torch import load_file

    from flowup.model_folder import default_model_path

    path = default_model_path() if str(path) == "shipped" else Path(path)
    for candidate in (path, path / "diffusion_pytorch_model.safetensors", path / "flow" / "diffusion_pytorch_model.safetensors"):
        if candidate.is_file():
            return {k: v.float() for k, v in load_file(str(candidate)).items()}
    raise FileNotFoundError(f"no flow weights (diffusion_pytorch_model.safetensors) at {path}")


def load_flow_residual_stats(path: str | Path) -> tuple[list[float], list[float]]:
    """The Gaussian detail model (``residual_mean``, ``residual_var``) of a trained network's
    ``config.json``, found the way :func:`load_flow_weights` finds its weights."""
    import json

    from flowup.model_folder import default_model_path

    path = default_model_path() if str(path) == "shipped" else Path(path)
    folder = path.parent if path.is_file() else path
    for candidate in (folder / "config.json", folder / "flow" / "config.json"):
        if candidate.is_file():
            config = json.loads(candidate.read_text())
            if config.get("residual_mean") is None or config.get("residual_var") is None:
                break
            return list(config["residual_mean"]), list(config["residual_var"])
    raise FileNotFoundError(f"no Gaussian detail model (residual_mean / residual_var in config.json) at {path}; "
                            "pass residual_stats_cache")


def flow_from_hparams(hp: Mapping[str, Any]) -> FlowUNet:
    """The (untrained) :class:`FlowUNet` that a run's hyperparameters describe.

    Used by the module and by :mod:`train.export`, so a checkpoint reloads into the same network.
    """
    gaussian = hp["source_skip"] == "gaussian"
    return FlowUNet(
        latent_channels=hp["latent_channels"],
        block_out_channels=tuple(hp["block_out_channels"]),
        layers_per_block=hp["layers_per_block"],
        norm_num_groups=hp["norm_num_groups"],
        source_skip=hp["source_skip"],
        skip_noise_alpha=float(hp["noise_alpha"]) if gaussian else None,
        residual_mean=hp.get("residual_mean") if gaussian else None,
        residual_var=hp.get("residual_var") if gaussian else None,
    )


class FlowMatchingModule(pl.LightningModule):
    """Trains a :class:`~flowup.models.FlowUNet` velocity network.

    Args:
        latent_channels: channels of the codec's latents (TAEF2: 32, SD VAE: 4).
        block_out_channels, layers_per_block, norm_num_groups, source_skip: the network (see ``FlowUNet``).
        residual_mean, residual_var: the Gaussian detail model of ``source_skip="gaussian"``
            (``C`` floats each); when not given they are measured on ``residual_stats_cache``
            (a latent cache folder, or a list of them) and stored in the checkpoint's hyperparameters.
        noise_alpha: noise augmentation of the source, ``x0 = sqrt(a) z_src + sqrt(1 - a) eps``.
        time_distribution: ``uniform`` or ``logit_normal`` training times.
        lr, weight_decay, betas: AdamW; ``warmup_steps`` linear warm-up, then cosine decay to
            ``final_lr_fraction * lr`` at ``trainer.max_steps`` (constant if ``decay=False``).
        scale: the upscaling factor the model is trained for (stored in exports).
        codec: codec spec for validation decoding and export (``taef2``, a folder, or a hub id).
        val_steps: Euler step counts sampled at validation.
        val_back_projection_steps: back-projection steps at validation (the shipped default: 5).
        init_weights: start from a trained network's weights (fine-tuning): a model folder (its
            ``flow/``), a ``flow`` folder, or a ``.safetensors`` file; ``"shipped"`` = the shipped
            model. The network must have this run's shape; the Gaussian detail model's statistics
            are this run's (they are not part of the weights).
        decoded_loss_weight: weight of an L1 loss on the decoded image of the 1-step sample against
            the decoded target (:mod:`train.decoded_loss`), added to the velocity loss; 0 = off
            (the velocity loss alone, and the codec is not loaded for training).
        decoded_edge_weight: weight of the L1 loss between those two images' Sobel gradients
            (only with ``decoded_loss_weight > 0``).

    Validation runs :class:`~flowup.pipeline.FlowUpPipeline` itself (padding, tiling,
    back-projection and all) on the (EMA) network, so its numbers are what an export ships.
    """

    def __init__(
        self,
        latent_channels: int = 32,
        block_out_channels: tuple[int, ...] = (64, 128, 128),
        layers_per_block: int = 1,
        norm_num_groups: int = 1,
        source_skip: bool | Literal["linear", "gaussian", "none"] = True,
        residual_mean: list[float] | None = None,
        residual_var: list[float] | None = None,
        residual_stats_cache: str | list[str] | None = None,
        noise_alpha: float = 0.9,
        time_distribution: Literal["uniform", "logit_normal"] = "uniform",
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.99),
        warmup_steps: int = 200,
        decay: bool = True,
        final_lr_fraction: float = 0.1,
        scale: int = 2,
        codec: str = "taef2",
        val_steps: tuple[int, ...] = (1, 4),
        val_back_projection_steps: int = 5,
        init_weights: str | None = None,
        decoded_loss_weight: float = 0.0,
        decoded_edge_weight: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        if decoded_loss_weight < 0 or decoded_edge_weight < 0:
            raise ValueError("decoded_loss_weight and decoded_edge_weight must be >= 0")
        if decoded_edge_weight > 0 and decoded_loss_weight == 0:
            raise ValueError("decoded_edge_weight needs decoded_loss_weight > 0 (the edge term is part of the decoded loss)")
        if source_skip == "gaussian" and (residual_mean is None or residual_var is None):
            if residual_stats_cache is None and init_weights is not None:
                residual_mean, residual_var = load_flow_residual_stats(init_weights)
            elif residual_stats_cache is None:
                raise ValueError("source_skip='gaussian' needs residual_mean/residual_var or residual_stats_cache")
            else:
                residual_mean, residual_var = residual_statistics(residual_stats_cache)
            # Kept in the checkpoint, so loading and export never need the cache again.
            self.hparams.update(residual_mean=residual_mean, residual_var=residual_var)
        # From the arguments, not self.hparams: a subclass's hparams hold its own arguments.
        self.model = flow_from_hparams(dict(
            latent_channels=latent_channels, block_out_channels=block_out_channels, layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups, source_skip=source_skip, noise_alpha=noise_alpha,
            residual_mean=residual_mean, residual_var=residual_var,
        ))  # fmt: skip
        if init_weights is not None:
            self.model.load_state_dict(load_flow_weights(init_weights))
        self._codec_holder: list[Codec] = []  # a list, so the frozen codec is no submodule (not in checkpoints)

    # ---------------------------------------------------------------- training
    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.model(x_t, t, cond)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = flow_matching_loss(
            self.model, batch["hr"], batch["src"], self.hparams.noise_alpha,
            time_distribution=self.hparams.time_distribution,
        )  # fmt: skip
        batch_size = batch["hr"].shape[0]
        weight = float(self.hparams.get("decoded_loss_weight", 0.0))
        if weight > 0:
            edge_weight = float(self.hparams.get("decoded_edge_weight", 0.0))
            prediction = one_step_prediction(self.model, batch["src"], self.hparams.noise_alpha)
            l1, edge = decoded_image_loss(self.codec, prediction, batch["hr"], edge_weight)
            self.log("train/velocity_loss", loss, on_step=True, on_epoch=False, batch_size=batch_size)
            self.log("train/decoded_l1", l1, on_step=True, on_epoch=False, batch_size=batch_size)
            if edge_weight > 0:
                self.log("train/decoded_edge", edge, on_step=True, on_epoch=False, batch_size=batch_size)
            loss = loss + weight * l1 + edge_weight * edge
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False, batch_size=batch_size)
        return loss

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay,
            betas=tuple(self.hparams.betas),
        )  # fmt: skip
        total = self.trainer.max_steps if self.trainer and self.trainer.max_steps > 0 else None
        factor = warmup_cosine(self.hparams.warmup_steps, total, self.hparams.final_lr_fraction, self.hparams.decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---------------------------------------------------------------- validation
    @property
    def codec(self) -> Codec:
        """The frozen codec used to decode validation samples (not part of the checkpoint)."""
        if not self._codec_holder:
            self._codec_holder.append(load_codec(self.hparams.codec))
        codec = self._codec_holder[0]
        if codec.device != self.device:
            codec.to(self.device)
        return codec

    def inference_pipeline(self) -> "FlowUpPipeline":
        """A FlowUpPipeline over this module's network (as it is now: EMA weights during
        validation) and the validation codec, runtime ``torch``; what :mod:`train.export` would ship."""
        from flowup.pipeline import FlowUpPipeline

        pipe = FlowUpPipeline(flow=self.model, codec=self.codec, noise_alpha=float(self.hparams.noise_alpha),
                              scale_factor=int(self.hparams.scale), default_num_inference_steps=1,
                              default_back_projection_steps=int(self.hparams.get("val_back_projection_steps", 5)))  # fmt: skip
        pipe.set_progress_bar_config(disable=True)
        return pipe

    @torch.no_grad()
    def upscale(self, lr_images: torch.Tensor, num_steps: int, seed: int = 0) -> torch.Tensor:
        """Low-res images ``(N, 3, h, w)`` in [0, 1] -> ``(N, 3, scale h, scale w)`` through the
        pipeline (``num_steps`` Euler steps; 0 = the PSU source without the flow)."""
        generator = torch.Generator(device="cpu").manual_seed(seed)
        pipe = self.inference_pipeline()
        out = pipe(image=lr_images.float(), scale=int(self.hparams.scale), num_inference_steps=num_steps,
                   solver="euler", generator=generator, output_type="pt", tile_size=0)  # fmt: skip
        return out.images.to(lr_images.device)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        hr, lr_images = batch["hr_image"], batch["lr_image"]
        rows = [upsample(lr_images, self.hparams.scale)]
        for steps in self.hparams.val_steps:
            out = self.upscale(lr_images, steps, seed=batch_idx)
            self.log(f"val/psnr_{steps}step", peak_signal_noise_ratio(out, hr, data_range=1.0), batch_size=hr.shape[0])
            self.log(f"val/ssim_{steps}step", structural_similarity_index_measure(out, hr, data_range=1.0),
                     batch_size=hr.shape[0])  # fmt: skip
            rows.append(out)
        psu = self.upscale(lr_images, 0)
        self.log("val/psnr_psu", peak_signal_noise_ratio(psu, hr, data_range=1.0), batch_size=hr.shape[0])
        if batch_idx == 0:
            self._save_grid(torch.cat([*rows, hr], dim=-1))

    def _save_grid(self, grid: torch.Tensor) -> None:
        """Save rows ``low-res (bicubic) | flowup at each val step count | high-res`` as a PNG."""
        from PIL import Image

        folder = Path(self.trainer.log_dir or self.trainer.default_root_dir) / "val_grids"
        folder.mkdir(parents=True, exist_ok=True)
        image = torch.cat(list(grid.clamp(0, 1)), dim=-2)  # stack the batch vertically
        array = (image.permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")
        Image.fromarray(array).save(folder / f"step{self.global_step:07d}.png")
