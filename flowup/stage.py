"""One x2 stage of flowup, as public steps (docs/method.md, "Inference").

1. :meth:`X2Stage.upsample`: ``x_up = upsample(x_lr, f)`` in pixels (bicubic,
   :mod:`flowup.resample`), reflect-padded at the bottom / right so that its latent is a multiple
   of the flow's ``size_multiple``;
2. :meth:`X2Stage.encode`: ``cond = E(x_up)`` (tiled; :meth:`X2Stage.latent_source` instead
   upsamples a latent directly, the paper's weaker "LSU" source);
3. :meth:`X2Stage.integrate`: ``x0 = sqrt(a) cond + sqrt(1 - a) eps`` with ``eps`` drawn for the
   whole latent from each image's own generator (so tiling never changes it, and image ``i`` of a
   batch equals that image run alone), then ``dx/dt = v(x, t, cond)`` from t = 0 to 1
   (:func:`flowup.solver.sample`), the velocity evaluated tile by tile (:mod:`flowup.tiling`);
4. :meth:`X2Stage.decode`: ``D(x1)`` (tiled), cropped to exactly ``f`` times the input size;
5. back-projection (:func:`flowup.back_projection.back_project`): the output's low frequencies
   are pulled back to the input's.

:meth:`X2Stage.run` chains them; the pipeline, the bench and the int8 calibration call these steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers.utils.torch_utils import randn_tensor

from flowup.back_projection import back_project
from flowup.codecs import Codec
from flowup.flow import noise_source
from flowup.progress import WorkProgress
from flowup.resample import upsample
from flowup.runtimes import Engine
from flowup.solver import FIXED_STEP_METHODS, nfe_per_step, sample
from flowup.tiling import auto_flow_tile_size, decode_tiled, encode_tiled, tiled_velocity

__all__ = ["StageSettings", "StageResult", "X2Stage", "pad_to_multiple"]

ADAPTIVE_NFE_GUESS = 36  # evaluations an adaptive solver is expected to take, for progress only


@dataclass(frozen=True)
class StageSettings:
    """How a stage runs: ODE ``steps`` (0: no flow, the source decoded: the PSU baseline) with
    ``solver``; ``detail`` (the share of what the flow adds to its source that is kept);
    ``back_projection_steps``; velocity ``tile_size`` / ``tile_overlap`` and ``codec_tile_size``
    in latent pixels (None: automatic, 0: untiled)."""

    steps: int
    solver: str = "euler"
    detail: float = 1.0
    back_projection_steps: int = 0
    tile_size: int | None = None
    tile_overlap: int | None = None
    codec_tile_size: int | None = None

    @property
    def expected_nfe(self) -> int:
        """Velocity evaluations this stage will take (a guess for adaptive solvers)."""
        if self.steps == 0:
            return 0
        return self.steps * nfe_per_step(self.solver) if self.solver in FIXED_STEP_METHODS else ADAPTIVE_NFE_GUESS


@dataclass
class StageResult:
    """``images`` ``(N, 3, f h, f w)`` float32 in [0, 1], the decoded ``latent`` ``(N, C, ceil(f h / 8),
    ceil(f w / 8))`` before back-projection, and ``nfe``, the velocity evaluations taken."""

    images: torch.Tensor
    latent: torch.Tensor
    nfe: int


@dataclass
class X2Stage:
    """One stage of the model's factor ``factor`` with the networks of ``engine`` (a runtime's
    :class:`~flowup.runtimes.Engine`), ``codec`` and the source's noise level ``noise_alpha``."""

    engine: Engine
    codec: Codec
    factor: int
    noise_alpha: float
    device: torch.device

    def upsample(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(N, 3, h, w)`` in [0, 1] -> float32 ``(N, 3, >= f h, >= f w)``, padded to the size the
        codec and the flow need."""
        multiple = self.codec.downscale * self.engine.size_multiple
        return pad_to_multiple(upsample(rgb.to(self.device, torch.float32), self.factor), multiple)

    def encode(self, x_up: torch.Tensor, codec_tile_size: int | None = None,
               on_progress: Callable[[float], None] | None = None) -> torch.Tensor:  # fmt: skip
        """Padded images ``(N, 3, H, W)`` -> the source latent ``(N, C, H/8, W/8)`` in the flow's dtype."""
        cond = encode_tiled(self.codec, x_up.to(self.codec.dtype), codec_tile_size, self.engine.encoder,
                            on_progress=on_progress)  # fmt: skip
        return cond.to(self.engine.dtype)

    def latent_source(self, latent: torch.Tensor) -> torch.Tensor:
        """Low-res latents ``(N, C, h, w)`` -> the bilinear source ``(N, C, >= f h, >= f w)``."""
        cond = F.interpolate(latent.to(self.device, torch.float32), scale_factor=self.factor, mode="bilinear")
        return pad_to_multiple(cond, self.engine.size_multiple).to(self.engine.dtype)

    def integrate(
        self,
        cond: torch.Tensor,
        generators: list[torch.Generator | None],
        settings: StageSettings,
        on_evaluation: Callable[[], Callable[[float], None] | None] | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> tuple[torch.Tensor, int]:
        """Noise the source ``cond`` ``(N, C, h, w)`` (one generator per image) and integrate the
        flow: ``(x1 float32, NFE)``. ``on_evaluation()`` gives each evaluation's per-tile progress
        callback; ``on_step()`` is called after each evaluation."""
        engine = self.engine
        noise = torch.cat(
            [randn_tensor((1, *cond.shape[1:]), generator=g, device=self.device, dtype=torch.float32) for g in generators]
        )
        x0 = noise_source(cond.float(), self.noise_alpha, noise=noise)
        del noise
        tile = settings.tile_size
        if tile is None:
            tile = auto_flow_tile_size(engine.flow, cond.shape[0], engine.dtype)

        def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            report = on_evaluation() if on_evaluation is not None else None
            v = tiled_velocity(engine.flow, x.to(engine.dtype), t.to(engine.dtype), cond, tile, settings.tile_overlap,
                               engine.velocity, on_progress=report)  # fmt: skip
            return v.float()

        step = (lambda n, t: on_step()) if on_step is not None else None
        result = sample(velocity, x0, num_steps=settings.steps, method=settings.solver, on_evaluation=step)
        return result.x1, result.nfe

    def decode(self, latent: torch.Tensor, size: tuple[int, int], codec_tile_size: int | None = None,
               on_progress: Callable[[float], None] | None = None) -> torch.Tensor:  # fmt: skip
        """Latents ``(N, C, h, w)`` -> float32 images cropped to ``size`` = ``(H, W)``."""
        decoded = decode_tiled(self.codec, latent.to(self.codec.dtype), codec_tile_size, self.engine.decoder,
                               on_progress=on_progress)  # fmt: skip
        return decoded[..., : size[0], : size[1]].float()

    def run(
        self,
        rgb: torch.Tensor,
        generators: list[torch.Generator | None],
        settings: StageSettings,
        source_latent: torch.Tensor | None = None,
        progress: WorkProgress | None = None,
        on_step: Callable[[], None] | None = None,
    ) -> StageResult:
        """The whole stage: ``(N, 3, h, w)`` float in [0, 1] -> :class:`StageResult` at ``f`` times
        the size. ``source_latent``: the low-res latents for the bilinear source instead of
        encoding ``rgb``. ``progress``: the call's :class:`~flowup.progress.WorkProgress`."""
        progress = progress or WorkProgress(None, 1.0)
        size = (self.factor * rgb.shape[-2], self.factor * rgb.shape[-1])
        pixels = rgb.shape[0] * size[0] * size[1]
        encoded = progress.part(pixels * WorkProgress.ENCODE)
        if source_latent is None:
            cond = self.encode(self.upsample(rgb), settings.codec_tile_size, on_progress=encoded)
        else:
            cond = self.latent_source(source_latent)
        if settings.steps == 0:  # no flow: decode the source itself (the PSU baseline, through the same path)
            latent, nfe = cond.float(), 0
        else:
            parts = [progress.part(pixels * WorkProgress.FLOW_PER_NFE) for _ in range(settings.expected_nfe)]
            latent, nfe = self.integrate(cond, generators, settings, lambda: parts.pop(0) if len(parts) > 1 else parts[0],
                                         on_step)  # fmt: skip
            if settings.detail != 1.0:  # keep a fraction of what the flow added to its clean source
                latent = torch.lerp(cond.float(), latent, settings.detail)
        del cond
        images = self.decode(latent, size, settings.codec_tile_size, progress.part(pixels * WorkProgress.DECODE))
        steps = settings.back_projection_steps
        finished = progress.part(pixels * WorkProgress.BACK_PROJECTION if steps else 0.0)
        images = back_project(images, rgb.to(images), steps)
        if finished is not None:
            finished(1.0)
        down = self.codec.downscale
        return StageResult(images, latent[..., : math.ceil(size[0] / down), : math.ceil(size[1] / down)], nfe)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad ``(N, C, H, W)`` at the bottom / right to multiples of ``multiple`` (repeats the
    reflection for inputs smaller than the padding; a 1-pixel side is replicated)."""
    pad_h, pad_w = -x.shape[-2] % multiple, -x.shape[-1] % multiple
    while pad_h or pad_w:
        step_h = min(pad_h, x.shape[-2] - 1) if x.shape[-2] > 1 else 0
        step_w = min(pad_w, x.shape[-1] - 1) if x.shape[-1] > 1 else 0
        if step_h == 0 and step_w == 0:
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        x = F.pad(x, (0, step_w, 0, step_h), mode="reflect")
        pad_h, pad_w = pad_h - step_h, pad_w - step_w
    return x
