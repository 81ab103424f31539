"""Distilling the lean codec from TAEF2 (docs/method.md, "The lean codec").

TAEF2 spends most of an x2 call at full resolution: the encoder's first convolution and block
read the bicubic upsample, three quarters of whose pixels are interpolated, and the decoder's
last block draws the output. The lean codec (:class:`flowup.codecs.TAEF2Codec` with
``encoder_stem="space_to_depth"``, ``decoder_head="pixel_shuffle"``) replaces exactly those
layers with layers on the half-resolution grid and keeps every other layer of TAEF2, weights
included. Only the new layers are trained, each against the TAEF2 layers it replaces:

- ``part="encoder"``: the stem's features ``stem(x_up)`` against TAEF2's first three layers on the
  same bicubic upsample ``x_up`` of a low-res crop (clean or degraded like a generator's output,
  :mod:`flowup.degradations`), mean squared error, plus ``latent_weight`` times the error of the
  whole encoder's latents (through TAEF2's frozen layers);
- ``part="decoder"``: the head's images against TAEF2's last four layers on the same features of
  TAEF2's frozen trunk, L1, the latents being crops of a latent cache (high-res and source
  latents, ``python -m train prepare``).

No labels: any image is a training example. ``python -m train fit-codec --config
configs/train/lean_codec_encoder.yaml`` trains one part; ``python -m train export-codec`` joins
the two parts' checkpoints into a codec folder (float16 safetensors) with its ``training.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset

from flowup.codecs import TAEF2Codec
from flowup.degradations import degrade, grain_bank, load_degradation
from flowup.errors import one_line
from flowup.model_folder import cast_module
from flowup.resample import upsample
from train.cost import describe_hardware
from train.latent_cache import find_shards, list_images
from train.schedule import warmup_cosine

__all__ = ["LatentCrops", "LeanCodecData", "LeanCodecDistillation", "LowResCrops", "export_codec", "export_into_model",
           "export_main", "fit_main", "lean_student"]  # fmt: skip

Part = Literal["encoder", "decoder"]


def lean_student(teacher: TAEF2Codec, encoder_stem: str, decoder_head: str) -> TAEF2Codec:
    """A codec of the given stem and head holding ``teacher``'s weights in every layer it shares
    with it (all but a new stem and head, which keep their random initialisation)."""
    student = TAEF2Codec(teacher.config.latent_channels, teacher.config.use_midblock_gn, encoder_stem, decoder_head)
    t_enc, s_enc = teacher.encoder, student.encoder
    for offset in range(len(t_enc) - t_enc.stem_length):
        s_enc[s_enc.stem_length + offset].load_state_dict(t_enc[t_enc.stem_length + offset].state_dict())
    if encoder_stem == teacher.config.encoder_stem:
        for i in range(t_enc.stem_length):
            s_enc[i].load_state_dict(t_enc[i].state_dict())
    t_dec, s_dec = teacher.decoder, student.decoder
    trunk = len(t_dec) - t_dec.head_length
    for i in range(trunk):
        s_dec[i].load_state_dict(t_dec[i].state_dict())
    if decoder_head == teacher.config.decoder_head:
        for offset in range(t_dec.head_length):
            s_dec[trunk + offset].load_state_dict(t_dec[trunk + offset].state_dict())
    return student


# --------------------------------------------------------------------------------------------
# data


class LowResCrops(Dataset):
    """Bicubic upsamples of low-res crops: ``{"x_up": (3, crop, crop)}`` float in [0, 1].

    At construction, ``crops_per_image`` random ``pool_crop``-pixel crops of every image in
    ``image_dirs`` are held in memory (8-bit; an image is first downscaled by a random factor in
    ``[random_downscale_min, 1]`` where that leaves a crop). Item ``i`` takes a random ``crop``
    window of a pool crop, flips it at random, degrades it to ``crop / scale`` pixels
    (``degradation``: a YAML file or profile of :mod:`flowup.degradations`; None: the ``clean`` profile)
    and upsamples it back, as a stage does. Seeded by ``seed`` and ``i``.
    """

    def __init__(self, image_dirs: list[str], crop: int = 128, pool_crop: int = 192, crops_per_image: int = 2,
                 random_downscale_min: float = 0.5, degradation: str | None = None, scale: int = 2,
                 samples_per_epoch: int = 16000, seed: int = 0):  # fmt: skip
        if crop % (8 * scale) or pool_crop < crop:
            raise ValueError(f"crop must be a multiple of {8 * scale} and at most pool_crop, got {crop} / {pool_crop}")
        self.crop, self.scale, self.seed = crop, scale, seed
        self.samples_per_epoch = samples_per_epoch
        self.degradation = load_degradation(degradation if degradation is not None else "clean")
        self.grain = grain_bank(self.degradation)
        rng = random.Random(seed)
        self.pool: list[np.ndarray] = []
        self.skipped: list[str] = []
        for path in list_images(image_dirs):
            try:
                with Image.open(path) as opened:
                    image = opened.convert("RGB")
            except (OSError, ValueError) as err:  # a corrupt or truncated file: skip it, say so
                self.skipped.append(f"{path}: {one_line(err)}")
                continue
            for _ in range(crops_per_image):
                factor = rng.uniform(random_downscale_min, 1.0)
                w, h = image.size
                if min(w, h) * factor < pool_crop:
                    factor = pool_crop / min(w, h)
                if factor > 1.0:
                    continue  # too small for a crop
                side = min(math.ceil(pool_crop / factor), w, h)
                x, y = rng.randrange(w - side + 1), rng.randrange(h - side + 1)
                window = image.crop((x, y, x + side, y + side)).resize((pool_crop, pool_crop), Image.Resampling.BICUBIC)
                self.pool.append(np.asarray(window))
        if self.skipped:
            warnings.warn(f"{len(self.skipped)} unreadable image(s) skipped, e.g. {self.skipped[0]}", stacklevel=2)
        if not self.pool:
            raise ValueError(f"no readable image of at least {pool_crop} pixels in {image_dirs}")

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = random.Random(self.seed * 1_000_003 + index)
        source = self.pool[rng.randrange(len(self.pool))]
        side = source.shape[0]
        x, y = rng.randrange(side - self.crop + 1), rng.randrange(side - self.crop + 1)
        hr = torch.from_numpy(source[y : y + self.crop, x : x + self.crop].copy()).permute(2, 0, 1).float() / 255
        if rng.random() < 0.5:
            hr = hr.flip(-1)
        lr = degrade(hr, self.scale, self.degradation, rng, grain=self.grain)
        return {"x_up": upsample(lr[None], self.scale)[0]}


class LatentCrops(Dataset):
    """Random ``latent_size`` crops of a latent cache's high-res and source latents:
    ``{"latent": (C, latent_size, latent_size)}`` float32 (what a decoder meets: the flow's
    outputs look like the former, its sources like the latter)."""

    def __init__(self, cache_dir: list[str], latent_size: int = 16, samples_per_epoch: int = 16000, seed: int = 0):
        from safetensors.torch import load_file

        tensors = []
        for shard in find_shards(cache_dir):
            data = load_file(str(shard))
            tensors += [data["hr"], data["src"]]
        self.latents = torch.cat(tensors)
        if self.latents.shape[-1] < latent_size:
            raise ValueError(f"latent_size {latent_size} is larger than the cache's {self.latents.shape[-1]}")
        self.latent_size, self.samples_per_epoch, self.seed = latent_size, samples_per_epoch, seed

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = random.Random(self.seed * 1_000_003 + index)
        latent = self.latents[rng.randrange(len(self.latents))]
        side, size = latent.shape[-1], self.latent_size
        y, x = rng.randrange(side - size + 1), rng.randrange(side - size + 1)
        return {"latent": latent[:, y : y + size, x : x + size].float()}


class LeanCodecData(pl.LightningDataModule):
    """Training batches for one part: ``encoder``: :class:`LowResCrops` of ``image_dirs``;
    ``decoder``: :class:`LatentCrops` of ``cache_dir``."""

    def __init__(self, part: Part = "encoder", image_dirs: list[str] | None = None, cache_dir: list[str] | None = None,
                 crop: int = 128, pool_crop: int = 192, crops_per_image: int = 2, random_downscale_min: float = 0.5,
                 degradation: str | None = None, latent_size: int = 16, scale: int = 2, batch_size: int = 16,
                 samples_per_epoch: int = 16000, num_workers: int = 0, seed: int = 0):  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.dataset: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        hp = self.hparams
        if self.dataset is not None:
            return
        if hp.part == "encoder":
            if not hp.image_dirs:
                raise ValueError("part 'encoder' needs image_dirs")
            self.dataset = LowResCrops(hp.image_dirs, hp.crop, hp.pool_crop, hp.crops_per_image, hp.random_downscale_min,
                                       hp.degradation, hp.scale, hp.samples_per_epoch, hp.seed)  # fmt: skip
        elif hp.part == "decoder":
            if not hp.cache_dir:
                raise ValueError("part 'decoder' needs cache_dir (a latent cache)")
            self.dataset = LatentCrops(hp.cache_dir, hp.latent_size, hp.samples_per_epoch, hp.seed)
        else:
            raise ValueError(f"part must be 'encoder' or 'decoder', got {hp.part!r}")

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset, batch_size=self.hparams.batch_size, shuffle=True,
                          num_workers=self.hparams.num_workers, drop_last=True)  # fmt: skip


# --------------------------------------------------------------------------------------------
# the distillation


class LeanCodecDistillation(pl.LightningModule):
    """Trains the new stem (``part="encoder"``) or head (``"decoder"``) of a lean student of TAEF2
    against the TAEF2 layers they replace (module docstring); everything else stays frozen.

    Logs ``train/loss`` and ``train/psnr``: the student's output against TAEF2's, in dB of the
    features' (encoder) or images' (decoder) peak-to-peak range.
    """

    def __init__(self, part: Part = "encoder", encoder_stem: str = "space_to_depth", decoder_head: str = "pixel_shuffle",
                 latent_weight: float = 0.0, lr: float = 1e-3, warmup_steps: int = 100, final_lr_fraction: float = 0.05,
                 scale: int = 2):  # fmt: skip
        super().__init__()
        self.save_hyperparameters()
        self.teacher = TAEF2Codec.from_taesd_weights().requires_grad_(False).eval()
        self.student = lean_student(self.teacher, encoder_stem, decoder_head).requires_grad_(False)
        for module in self.trained_layers():
            module.requires_grad_(True)

    def trained_layers(self) -> list[nn.Module]:
        """The layers this part trains: the encoder's stem or the decoder's head."""
        if self.hparams.part == "encoder":
            return list(self.student.encoder)[: self.student.encoder.stem_length]
        return list(self.student.decoder)[-self.student.decoder.head_length :]

    def _encoder_loss(self, x_up: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t_enc, s_enc = self.teacher.encoder, self.student.encoder
        with torch.no_grad():
            target = _layers(t_enc, 0, t_enc.stem_length)(x_up)
        features = _layers(s_enc, 0, s_enc.stem_length)(x_up)
        loss = F.mse_loss(features.float(), target.float())
        if self.hparams.latent_weight > 0:
            with torch.no_grad():
                latent_target = _layers(t_enc, t_enc.stem_length)(target)
            latent = _layers(s_enc, s_enc.stem_length)(features)
            loss = loss + self.hparams.latent_weight * F.mse_loss(latent.float(), latent_target.float())
        span = (target.amax() - target.amin()).float()
        return loss, _psnr(features.float(), target.float(), span)

    def _decoder_loss(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t_dec, s_dec = self.teacher.decoder, self.student.decoder
        trunk = len(t_dec) - t_dec.head_length
        with torch.no_grad():
            features = _layers(t_dec, 0, trunk)(latent)
            target = _layers(t_dec, trunk)(features).clamp(0, 1)
        images = _layers(s_dec, len(s_dec) - s_dec.head_length)(features)
        loss = F.l1_loss(images.float(), target.float())
        return loss, _psnr(images.float().clamp(0, 1), target.float(), torch.tensor(1.0))

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self.hparams.part == "encoder":
            loss, psnr = self._encoder_loss(batch["x_up"])
        else:
            loss, psnr = self._decoder_loss(batch["latent"])
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/psnr", psnr, prog_bar=True)
        return loss

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for module in self.trained_layers() for p in module.parameters()]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.lr, weight_decay=0.0)
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else None
        factor = warmup_cosine(self.hparams.warmup_steps, total, self.hparams.final_lr_fraction)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # The teacher is rebuilt from the packaged weights: keep only the student.
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("teacher.")}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"].update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})


def _layers(seq: nn.Sequential, start: int, stop: int | None = None) -> nn.Sequential:
    """Layers ``start:stop`` of ``seq`` as a plain ``nn.Sequential`` (sharing their weights)."""
    return nn.Sequential(*list(seq)[start:stop])


def _psnr(x: torch.Tensor, target: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    return 10 * torch.log10(span**2 / F.mse_loss(x, target).clamp_min(1e-12))


# --------------------------------------------------------------------------------------------
# commands


def fit_main(args: list[str] | None = None) -> None:
    """``python -m train fit-codec --config configs/train/lean_codec_<part>.yaml`` (LightningCLI)."""
    from lightning.pytorch.cli import LightningCLI

    class _CLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            parser.link_arguments("model.part", "data.part")
            parser.link_arguments("model.scale", "data.scale")

    _CLI(LeanCodecDistillation, LeanCodecData, seed_everything_default=0, args=args,
         save_config_kwargs={"overwrite": True})  # fmt: skip


def _student_from(checkpoint: str | Path) -> tuple[TAEF2Codec, dict[str, Any]]:
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    hp = dict(ckpt["hyper_parameters"])
    teacher = TAEF2Codec.from_taesd_weights()
    student = lean_student(teacher, hp["encoder_stem"], hp["decoder_head"])
    state = {k[len("student.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("student.")}
    student.load_state_dict(state)
    info = {"checkpoint": str(checkpoint), "global_step": int(ckpt.get("global_step", 0)),
            "hyper_parameters": hp, "training_cost": ckpt.get("training_cost")}  # fmt: skip
    return student, info


def export_codec(encoder_checkpoint: str | Path | None, decoder_checkpoint: str | Path | None,
                 out_dir: str | Path) -> TAEF2Codec:  # fmt: skip
    """Join the encoder part of one checkpoint and the decoder part of another (None: TAEF2's own)
    into one codec, saved to ``out_dir`` as float16 safetensors with ``training.json``."""
    teacher = TAEF2Codec.from_taesd_weights()
    parts: dict[str, Any] = {}
    encoder, decoder = teacher.encoder, teacher.decoder
    stem, head = "full", "full"
    if encoder_checkpoint is not None:
        student, parts["encoder"] = _student_from(encoder_checkpoint)
        encoder, stem = student.encoder, student.config.encoder_stem
    if decoder_checkpoint is not None:
        student, parts["decoder"] = _student_from(decoder_checkpoint)
        decoder, head = student.decoder, student.config.decoder_head
    codec = TAEF2Codec(teacher.config.latent_channels, teacher.config.use_midblock_gn, stem, head)
    codec.encoder.load_state_dict(encoder.state_dict())
    codec.decoder.load_state_dict(decoder.state_dict())
    out = Path(out_dir)
    cast_module(copy.deepcopy(codec), torch.float16).save_pretrained(out, safe_serialization=True)
    parts["hardware_of_export"] = describe_hardware()
    (out / "training.json").write_text(json.dumps(parts, indent=2, default=str) + "\n")
    return codec.float().eval().requires_grad_(False)


def export_into_model(encoder_checkpoint: str | Path | None, decoder_checkpoint: str | Path | None,
                      model: str | Path, out_dir: str | Path) -> Path:  # fmt: skip
    """``model`` (a FlowUpPipeline folder) with the joined codec as its ``codec/``, written to
    ``out_dir`` (which may be ``model`` itself: only ``codec/`` and ``model_index.json`` change; every
    other file is copied as it is)."""
    import shutil

    from flowup.model_folder import load_model_folder

    model, out = Path(model), Path(out_dir)
    load_model_folder(model)  # a readable model folder, before anything is written
    if out.resolve() != model.resolve():
        shutil.copytree(model, out, dirs_exist_ok=False, ignore=shutil.ignore_patterns("codec"))
    staging = out / ".codec-export"
    shutil.rmtree(staging, ignore_errors=True)
    codec = export_codec(encoder_checkpoint, decoder_checkpoint, staging)
    shutil.rmtree(out / "codec", ignore_errors=True)
    staging.rename(out / "codec")
    index = json.loads((out / "model_index.json").read_text())
    index["codec"] = ["flowup", type(codec).__name__]
    (out / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return out


def export_main(args: list[str] | None = None) -> None:
    """``python -m train export-codec [--encoder CKPT] [--decoder CKPT] [--into-model MODEL] OUT_DIR``."""
    parser = argparse.ArgumentParser(prog="python -m train export-codec",
                                     description="Join lean-codec checkpoints into a codec folder (float16 safetensors).")  # fmt: skip
    parser.add_argument("out_dir", help="folder to write (config.json, safetensors, training.json)")
    parser.add_argument("--encoder", help="checkpoint of a part='encoder' run (default: TAEF2's own encoder)")
    parser.add_argument("--decoder", help="checkpoint of a part='decoder' run (default: TAEF2's own decoder)")
    parser.add_argument("--into-model", metavar="MODEL",
                        help="write a FlowUpPipeline folder instead: MODEL's networks and config with this codec as its "
                             "codec/ (OUT_DIR may be MODEL itself)")  # fmt: skip
    ns = parser.parse_args(args)
    if ns.encoder is None and ns.decoder is None:
        parser.error("give --encoder, --decoder or both")
    if ns.into_model is None:
        export_codec(ns.encoder, ns.decoder, ns.out_dir)
    else:
        export_into_model(ns.encoder, ns.decoder, ns.into_model, ns.out_dir)
    print(f"wrote {ns.out_dir}")


