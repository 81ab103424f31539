"""Codecs: pretrained autoencoders that map images to latents and back.

Every codec has the same interface (:class:`Codec`):

- ``encode(images)``: images ``(N, 3, H, W)`` float in [0, 1] -> latents ``(N, C, H/8, W/8)``
  already scaled (and shifted) into the codec's normalised space;
- ``decode(latents)``: the inverse, returning images ``(N, 3, H, W)`` in [0, 1].

Implementations:

- :class:`TAEF2Codec`: the default, TAEF2 (a 1.3M + 1.3M parameter tiny autoencoder for the
  FLUX.2 latent space, 32 channels, 8x; github madebyollin/taesd, MIT). The architecture is
  written here (:class:`TinyEncoder` / :class:`TinyDecoder`), the weights are the upstream ones,
  shipped in the package as float16 safetensors (:mod:`flowup.weights`; an upstream
  ``encoder.pth`` / ``decoder.pth`` folder loads too, with ``torch.load(weights_only=True)``).
- :class:`DiffusersVAECodec`: any diffusers ``AutoencoderKL`` (honouring ``scaling_factor`` and
  ``shift_factor``) or ``AutoencoderTiny``, by local path or hub id.

Codecs are diffusers ``ModelMixin`` / ``ConfigMixin`` so a :class:`~flowup.pipeline.FlowUpPipeline`
saves and loads them with safetensors like any other component.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from flowup.models.thread_stable import ThreadStableGroupNorm, make_pointwise_convs_thread_stable
from flowup.receptive_field import sequential_radius, split_around_group_norms
from flowup.weights import find_taef2_weights, has_taef2_weights, is_offline, load_taef2_state

__all__ = ["DECODER_HEADS", "ENCODER_STEMS", "Codec", "CodecStages", "TAEF2Codec", "DiffusersVAECodec", "TinyEncoder",
           "TinyDecoder", "check_images", "load_codec"]  # fmt: skip


@dataclass
class CodecStages:
    """One direction of a codec split around its image-wide layers, so that it can be tiled exactly.

    Encoder: ``encode(x) = image_wide(local(x))``; decoder: ``decode(z) = local(image_wide(z))``
    (the decoder's ``local`` includes the final clamp to [0, 1]). ``local`` is a chain of local
    layers of receptive radius ``local_radius`` pixels of its input, so a tile with that much
    context gives the untiled result; ``image_wide`` runs at latent resolution on the whole image.
    The callables take and return tensors ``(N, C, H, W)`` in the codec's dtype and device.
    """

    local: Callable[[torch.Tensor], torch.Tensor]
    image_wide: Callable[[torch.Tensor], torch.Tensor]
    local_radius: float


class Codec(ModelMixin, ConfigMixin):
    """Common interface of all codecs. Subclasses set ``latent_channels`` and ``downscale``."""

    latent_channels: int
    downscale: int = 8

    def encode(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """``(N, 3, H, W)`` in [0, 1] -> normalised latents ``(N, C, H/8, W/8)``."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """Normalised latents ``(N, C, h, w)`` -> images ``(N, 3, 8h, 8w)`` in [0, 1]."""
        raise NotImplementedError

    def encoder_stages(self) -> CodecStages | None:
        """The encoder split for exact tiling, or None (tile the whole encoder, blended)."""
        return None

    def decoder_stages(self) -> CodecStages | None:
        """The decoder split for exact tiling, or None (tile the whole decoder, blended)."""
        return None

    @property
    def encoder_receptive_radius(self) -> int:
        """Pixels of context each side that a tile needs for an encode equal to the untiled one."""
        return 64

    @property
    def decoder_receptive_radius(self) -> int:
        """Latent pixels of context each side that a tile needs for a faithful decode."""
        return 8


# --------------------------------------------------------------------------------------------
# TAEF2 architecture (taesd.py's "flux_2" variant: GroupNorm branch in the three deepest blocks)


def _conv3x3(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class _Clamp(nn.Module):
    """Soft clamp of latents to (-3, 3) before decoding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _ClampUnit(nn.Module):
    """Hard clamp of decoded images to [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(0, 1)


class _Block(nn.Module):
    """Residual block of three 3x3 convolutions; optional GroupNorm "pool" branch (FLUX.2)."""

    def __init__(self, n_in: int, n_out: int, use_midblock_gn: bool = False):
        super().__init__()
        self.conv = nn.Sequential(
            _conv3x3(n_in, n_out), nn.ReLU(), _conv3x3(n_out, n_out), nn.ReLU(), _conv3x3(n_out, n_out)
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()
        self.pool: nn.Module | None = None
        if use_midblock_gn:
            hidden = n_in * 4
            self.pool = nn.Sequential(
                nn.Conv2d(n_in, hidden, 1, bias=False),
                ThreadStableGroupNorm(4, hidden),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden, n_in, 1, bias=False),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


#: Encoder stems (what runs before TAEF2's half-resolution blocks) and decoder heads (what runs
#: after its last half-resolution blocks). "full" is TAEF2's own; the lean ones do the same work
#: on the half-resolution grid (docs/method.md, "The lean codec").
ENCODER_STEMS = ("full", "space_to_depth")
DECODER_HEADS = ("full", "pixel_shuffle")


def _encoder_stem(kind: str) -> list[nn.Module]:
    """``(N, 3, H, W)`` -> ``(N, 64, H/2, W/2)`` features.

    ``full``: TAEF2's full-resolution convolution and block, then a stride-2 convolution
    (225 + 18 GFLOP per megapixel of input). ``space_to_depth``: each 2x2 pixel block as 12
    channels, then three convolutions on the half-resolution grid (40 GFLOP per megapixel); made
    for the stage's bicubic upsamples, whose 2x2 blocks carry no more than the low-res pixels.
    """
    if kind == "full":
        return [_conv3x3(3, 64), _Block(64, 64), _conv3x3(64, 64, stride=2, bias=False)]
    if kind == "space_to_depth":
        return [nn.PixelUnshuffle(2), _conv3x3(12, 64), nn.ReLU(), _conv3x3(64, 64), nn.ReLU(),
                _conv3x3(64, 64, bias=False)]  # fmt: skip
    raise ValueError(f"encoder_stem must be one of {ENCODER_STEMS}, got {kind!r}")


def _decoder_head(kind: str) -> list[nn.Module]:
    """``(N, 64, h, w)`` features -> ``(N, 3, 2h, 2w)`` images (not clamped).

    ``full``: TAEF2's nearest upsample, a convolution and a block at full resolution (298 GFLOP
    per output megapixel). ``pixel_shuffle``: a block on the half-resolution grid, then a
    convolution to 2x2 pixels of 3 channels each (59 GFLOP per output megapixel).
    """
    if kind == "full":
        return [nn.Upsample(scale_factor=2), _conv3x3(64, 64, bias=False), _Block(64, 64), _conv3x3(64, 3)]
    if kind == "pixel_shuffle":
        return [_Block(64, 64), _conv3x3(64, 12), nn.PixelShuffle(2)]
    raise ValueError(f"decoder_head must be one of {DECODER_HEADS}, got {kind!r}")


class TinyEncoder(nn.Sequential):
    """TAESD-family encoder: ``(N, 3, H, W)`` in [0, 1] -> ``(N, C, H/8, W/8)``; ``stem``: one of
    :data:`ENCODER_STEMS` (the layers after it are TAEF2's whatever the stem)."""

    def __init__(self, latent_channels: int = 32, use_midblock_gn: bool = True, stem: str = "full"):
        gn = {"use_midblock_gn": use_midblock_gn}
        super().__init__(
            *_encoder_stem(stem), _Block(64, 64), _Block(64, 64), _Block(64, 64),
            _conv3x3(64, 64, stride=2, bias=False), _Block(64, 64), _Block(64, 64), _Block(64, 64),
            _conv3x3(64, 64, stride=2, bias=False), _Block(64, 64, **gn), _Block(64, 64, **gn), _Block(64, 64, **gn),
            _conv3x3(64, latent_channels),
        )  # fmt: skip
        self.stem_length = len(_encoder_stem(stem))


class TinyDecoder(nn.Sequential):
    """TAESD-family decoder: ``(N, C, h, w)`` -> ``(N, 3, 8h, 8w)`` (not clamped); ``head``: one of
    :data:`DECODER_HEADS` (the layers before it are TAEF2's whatever the head)."""

    def __init__(self, latent_channels: int = 32, use_midblock_gn: bool = True, head: str = "full"):
        gn = {"use_midblock_gn": use_midblock_gn}
        super().__init__(
            _Clamp(), _conv3x3(latent_channels, 64), nn.ReLU(),
            _Block(64, 64, **gn), _Block(64, 64, **gn), _Block(64, 64, **gn),
            nn.Upsample(scale_factor=2), _conv3x3(64, 64, bias=False),
            _Block(64, 64), _Block(64, 64), _Block(64, 64),
            nn.Upsample(scale_factor=2), _conv3x3(64, 64, bias=False),
            _Block(64, 64), _Block(64, 64), _Block(64, 64),
            *_decoder_head(head),
        )  # fmt: skip
        self.head_length = len(_decoder_head(head))


class TAEF2Codec(Codec):
    """TAEF2 tiny autoencoder (FLUX.2 latent space, 32 channels, 8x downscale).

    Build it with :meth:`from_taesd_weights` (the packaged weights, or a folder holding
    ``encoder`` / ``decoder`` ``.safetensors`` or ``.pth``) or :meth:`from_pretrained` (a folder
    saved by :meth:`save_pretrained`).
    ``TAEF2Codec()`` alone is randomly initialised, which tests use.

    ``encoder_stem`` / ``decoder_head`` (:data:`ENCODER_STEMS`, :data:`DECODER_HEADS`): the lean
    codec (``space_to_depth`` / ``pixel_shuffle``) runs no convolution at full resolution; its new
    layers are distilled from TAEF2's (``train/lean_codec.py``), the rest are TAEF2's own. Its
    encoder is made for a stage's source, bicubic upsamples of low-res images: make training
    targets with the full TAEF2.
    """

    @register_to_config
    def __init__(self, latent_channels: int = 32, use_midblock_gn: bool = True, encoder_stem: str = "full",
                 decoder_head: str = "full"):  # fmt: skip
        super().__init__()
        self.latent_channels = latent_channels
        self.encoder = TinyEncoder(latent_channels, use_midblock_gn, encoder_stem)
        self.decoder = TinyDecoder(latent_channels, use_midblock_gn, decoder_head)
        make_pointwise_convs_thread_stable(self)  # the same numbers whatever the CPU thread count

    @property
    def lean(self) -> bool:
        """True when the encoder's stem or the decoder's head is a lean one (not TAEF2's own)."""
        return self.config.encoder_stem != "full" or self.config.decoder_head != "full"

    @classmethod
    def from_taesd_weights(cls, folder: str | Path | None = None) -> "TAEF2Codec":
        """Load the upstream weights from ``folder`` (found by :func:`find_taef2_weights` if None)."""
        folder = find_taef2_weights(folder)
        codec = cls()
        for name, module in (("encoder", codec.encoder), ("decoder", codec.decoder)):
            module.load_state_dict({k: v.float() for k, v in load_taef2_state(folder, name).items()})
        return codec.eval().requires_grad_(False)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [0, 1], H and W multiples of 8 -> latents ``(N, 32, H/8, W/8)``."""
        check_images(images, self.downscale)
        return self.encoder(images.to(self.dtype))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``(N, 32, h, w)`` -> images ``(N, 3, 8h, 8w)`` clamped to [0, 1]."""
        return self.decoder(latents.to(self.dtype)).clamp(0, 1)

    def encoder_stages(self) -> CodecStages:
        """Full- to /8-resolution convolutions (local), then the three GroupNorm blocks (image-wide)."""
        split = split_around_group_norms(self.encoder, from_end=False)
        local = nn.Sequential(*list(self.encoder)[:split])
        return CodecStages(local, nn.Sequential(*list(self.encoder)[split:]), sequential_radius(local))

    def decoder_stages(self) -> CodecStages:
        """The three GroupNorm blocks at latent resolution (image-wide), then the rest (local)."""
        split = split_around_group_norms(self.decoder, from_end=True)
        local = nn.Sequential(*list(self.decoder)[split:], _ClampUnit())
        return CodecStages(local, nn.Sequential(*list(self.decoder)[:split]), sequential_radius(local))


class DiffusersVAECodec(Codec):
    """A diffusers ``AutoencoderKL`` or ``AutoencoderTiny`` behind the :class:`Codec` interface.

    Latents are ``(z - shift_factor) * scaling_factor`` of the VAE's posterior mode (the
    convention of diffusers pipelines), so they live in the normalised space the flow model sees.
    """

    ignore_for_config = ["vae"]

    @register_to_config
    def __init__(self, vae: nn.Module | None = None, vae_config: dict | None = None, vae_class: str = "AutoencoderKL"):
        super().__init__()
        import diffusers

        if vae is None:
            if vae_config is None:
                raise ValueError("DiffusersVAECodec needs a vae module or a vae_config")
            vae = getattr(diffusers, vae_class).from_config(vae_config)
        self.vae = vae
        vae_class = type(vae).__name__
        self.register_to_config(vae_config=dict(vae.config), vae_class=vae_class)
        cfg = vae.config
        self.latent_channels = int(cfg.latent_channels)
        blocks = cfg.encoder_block_out_channels if vae_class == "AutoencoderTiny" else cfg.block_out_channels
        self.downscale = 2 ** (len(blocks) - 1)
        self.scaling_factor = float(getattr(cfg, "scaling_factor", None) or 1.0)
        self.shift_factor = float(getattr(cfg, "shift_factor", None) or 0.0)

    @classmethod
    def from_vae(cls, path_or_id: str, subfolder: str | None = None, **kwargs) -> "DiffusersVAECodec":
        """Load a VAE by local path or hub id (tries ``AutoencoderKL``, then ``AutoencoderTiny``)."""
        from diffusers import AutoencoderKL, AutoencoderTiny

        errors = []
        for klass in (AutoencoderKL, AutoencoderTiny):
            try:
                vae = klass.from_pretrained(path_or_id, subfolder=subfolder, **kwargs)
                return cls(vae=vae).eval().requires_grad_(False)
            except Exception as err:  # noqa: BLE001 - report both attempts below
                errors.append(f"{klass.__name__}: {err}")
        raise OSError(f"could not load a diffusers VAE from {path_or_id!r}: " + " | ".join(errors))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.downscale)
        x = images.to(self.dtype) * 2 - 1
        if type(self.vae).__name__ == "AutoencoderTiny":
            z = self.vae.encode(x).latents
        else:
            z = self.vae.encode(x).latent_dist.mode()
        return (z - self.shift_factor) * self.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = latents.to(self.dtype) / self.scaling_factor + self.shift_factor
        return (self.vae.decode(z).sample / 2 + 0.5).clamp(0, 1)


def check_images(images: torch.Tensor, multiple: int) -> None:
    """Raise ``ValueError`` unless ``images`` is ``(N, 3, H, W)`` with H and W multiples of ``multiple``."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}")
    if images.shape[-1] % multiple or images.shape[-2] % multiple:
        raise ValueError(f"image height and width must be multiples of {multiple}, got {tuple(images.shape[-2:])}")


def load_codec(spec: str | Path | None = None) -> Codec:
    """Load a codec from a spec: ``None`` / ``"taef2"`` (the packaged TAEF2), a folder with TAEF2's
    ``encoder`` / ``decoder`` ``.safetensors`` or ``.pth``, a saved codec folder, a diffusers VAE
    folder, or a Hugging Face Hub id (``owner/name``; never contacted when offline:
    ``FLOWUP_OFFLINE`` / ``HF_HUB_OFFLINE``, then only the local hub cache is used).

    Raises FileNotFoundError with one line for a local path that does not exist ("no such folder").
    """
    if spec is None or str(spec).lower() == "taef2":
        return TAEF2Codec.from_taesd_weights(None)
    path = Path(spec).expanduser()
    if not path.exists():
        text = str(spec)
        looks_local = text.startswith((".", "/", "~")) or "\\" in text or text.count("/") != 1
        if looks_local:
            raise FileNotFoundError(f"codec {text!r}: no such folder")
        if is_offline():
            try:
                with warnings.catch_warnings():  # huggingface_hub's notice about an argument diffusers passes
                    warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*")
                    return DiffusersVAECodec.from_vae(text, local_files_only=True)
            except OSError:
                raise FileNotFoundError(
                    f"codec {text!r}: no such folder, and offline (FLOWUP_OFFLINE / HF_HUB_OFFLINE) the hub "
                    "is not asked; it is not in the local hub cache either"
                ) from None
        return DiffusersVAECodec.from_vae(text)
    if not path.is_dir():
        raise FileNotFoundError(f"codec {str(spec)!r}: is a file, not a folder")
    if has_taef2_weights(path):
        return TAEF2Codec.from_taesd_weights(path)
    if (path / "config.json").is_file():
        import json

        cls_name = json.loads((path / "config.json").read_text()).get("_class_name")
        if cls_name == "TAEF2Codec":
            return TAEF2Codec.from_pretrained(path).eval().requires_grad_(False)
        if cls_name == "DiffusersVAECodec":
            return DiffusersVAECodec.from_pretrained(path).eval().requires_grad_(False)
    return DiffusersVAECodec.from_vae(str(path), local_files_only=True)
