"""The velocity network: a diffusers ``UNet2DModel`` on ``concat(x_t, cond)``.

Two changes make it an upscaler that works on any image size, tile by tile:

- no attention (``add_attention=False``, plain ``DownBlock2D`` / ``UpBlock2D`` blocks), and
- every ``GroupNorm`` is replaced by :class:`PixelGroupNorm`, which normalises each pixel's
  channels within groups instead of pooling statistics over the whole image.

The network is then a local operator (translation equivariant, finite receptive field): the
velocity at one latent pixel depends only on a fixed neighbourhood, so a 32x32 training crop and a
512x512 latent behave alike, and tiled evaluation with enough overlap equals the untiled one.

A linear skip (a 1x1 convolution of ``concat(x_t, cond)``, initialised to ``cond - x_t``) is added
to the UNet's output, and the UNet's output convolution starts at zero. An untrained model therefore
has velocity ``cond - x_t``: one Euler step from the noised source lands exactly on the clean
pixel-space-upsampled source (PSU), and training only has to learn the detail the source lacks.
Without it the network must learn to carry its raw input through every normalisation to the output
before it can even denoise; in our CPU runs it did not get there in 800 steps.

That linear skip is right only at ``t = 0``: further along the path the best velocity keeps the
detail already in ``x_t`` rather than pulling back to ``cond``. ``source_skip="gaussian"`` adds
instead the closed-form velocity :func:`flowup.flow.gaussian_velocity`, exact for all ``t`` when the
target is the source plus Gaussian detail (per-channel mean and variance measured on the training
data), so the UNet learns only what that model misses, everywhere on the path.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from flowup.flow import gaussian_velocity
from flowup.models.thread_stable import make_pointwise_convs_thread_stable

__all__ = ["FlowUNet", "PixelGroupNorm"]


class PixelGroupNorm(nn.Module):
    """GroupNorm whose statistics are per pixel (over the channels of a group), not per image.

    ``(N, C, H, W) -> (N, C, H, W)``; same parameters as ``nn.GroupNorm`` (``weight``, ``bias``).
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels {num_channels} is not divisible by num_groups {num_groups}")
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = x.reshape(n, self.num_groups, c // self.num_groups, h, w).float()
        var, mean = torch.var_mean(g, dim=2, keepdim=True, unbiased=False)
        y = ((g - mean) * torch.rsqrt(var + self.eps)).reshape(n, c, h, w).to(x.dtype)
        if self.weight is not None:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


def _replace_group_norms(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.GroupNorm):
            setattr(module, name, PixelGroupNorm(child.num_groups, child.num_channels, child.eps, child.affine))
        else:
            _replace_group_norms(child)


class FlowUNet(ModelMixin, ConfigMixin):
    """Velocity model ``v(x_t, t, cond)`` for latents of ``latent_channels`` channels.

    ``norm_num_groups`` groups of the per-pixel norms (1 = a LayerNorm over the channels of each
    pixel; many groups leave too few channels per group to normalise per pixel). ``source_skip``:
    ``True`` / ``"linear"`` adds the learnt linear skip, ``"gaussian"`` the closed-form Gaussian
    velocity (module docstring), which needs ``skip_noise_alpha`` (the pipeline's ``noise_alpha``)
    and the per-channel ``residual_mean`` / ``residual_var`` of ``x1 - cond`` (``C`` floats each);
    ``False`` / ``"none"`` adds nothing.

    - ``x_t``: ``(N, C, h, w)`` point on the path; ``t``: ``(N,)`` or scalar in [0, 1];
      ``cond``: ``(N, C, h, w)`` clean upsampled source latent. Returns ``(N, C, h, w)``.
    - ``h`` and ``w`` must be multiples of ``2 ** (len(block_out_channels) - 1)``.
    """

    @register_to_config
    def __init__(
        self,
        latent_channels: int = 32,
        block_out_channels: tuple[int, ...] = (96, 192, 192),  # the shipped model's shape
        layers_per_block: int = 1,
        norm_num_groups: int = 1,
        time_scale: float = 1000.0,
        source_skip: bool | str = True,
        skip_noise_alpha: float | None = None,
        residual_mean: list[float] | None = None,
        residual_var: list[float] | None = None,
    ):
        super().__init__()
        mode = {True: "linear", False: "none"}.get(source_skip, source_skip)
        if mode not in ("linear", "gaussian", "none"):
            raise ValueError(f"source_skip must be True, False, 'linear', 'gaussian' or 'none', got {source_skip!r}")
        self.skip_mode = mode
        levels = len(block_out_channels)
        self.unet = UNet2DModel(
            in_channels=2 * latent_channels,
            out_channels=latent_channels,
            block_out_channels=tuple(block_out_channels),
            down_block_types=("DownBlock2D",) * levels,
            up_block_types=("UpBlock2D",) * levels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            add_attention=False,
            resnet_time_scale_shift="scale_shift",
        )
        _replace_group_norms(self.unet)
        nn.init.zeros_(self.unet.conv_out.weight)
        nn.init.zeros_(self.unet.conv_out.bias)
        self.skip: nn.Conv2d | None = None
        if mode == "gaussian":
            if skip_noise_alpha is None or residual_mean is None or residual_var is None:
                raise ValueError("source_skip='gaussian' needs skip_noise_alpha, residual_mean and residual_var")
            if len(residual_mean) != latent_channels or len(residual_var) != latent_channels:
                raise ValueError(f"residual_mean and residual_var need {latent_channels} values each")
            shape = (1, latent_channels, 1, 1)
            self.register_buffer("gaussian_mean", torch.tensor(residual_mean).reshape(shape), persistent=False)
            self.register_buffer("gaussian_var", torch.tensor(residual_var).reshape(shape), persistent=False)
        if mode == "linear":
            self.skip = nn.Conv2d(2 * latent_channels, latent_channels, 1)
            eye = torch.eye(latent_channels)
            with torch.no_grad():
                self.skip.weight.copy_(torch.cat([-eye, eye], dim=1)[..., None, None])
                self.skip.bias.zero_()
        make_pointwise_convs_thread_stable(self)  # the same numbers whatever the CPU thread count

    @property
    def size_multiple(self) -> int:
        """Latent height and width must be multiples of this."""
        return 2 ** (len(self.config.block_out_channels) - 1)

    @property
    def receptive_radius(self) -> int:
        """Latent pixels of context each side that one output pixel depends on (what a tile needs
        for an exact result).

        Counted from the ``UNet2DModel`` layout: 3x3 convs at each level's stride, stride-2
        downsampling convs, the mid block's two ResNets, nearest-neighbour upsampling + conv (a
        conservative upper bound; the *effective* receptive field is much smaller).
        """
        levels, layers = len(self.config.block_out_channels), self.config.layers_per_block
        radius = 1  # conv_in
        for level in range(levels):
            radius += 2 * layers * 2**level  # ResNets: two 3x3 convs each
            if level < levels - 1:
                radius += 2**level  # 3x3 stride-2 downsampling conv
        radius += 4 * 2 ** (levels - 1)  # mid block: two ResNets
        for level in reversed(range(levels)):
            radius += 2 * (layers + 1) * 2**level  # up block: layers + 1 ResNets
            if level > 0:
                radius += 2**level  # nearest upsampling (alignment) + 3x3 conv at the finer level
        return radius + 1  # conv_out

    def activation_bytes_per_pixel(self, dtype: torch.dtype) -> float:
        """Peak activation bytes per latent pixel of one sample without grad (measured: about 16
        feature maps of the finest width, plus the coarser levels), for choosing a tile size."""
        maps = sum(16 * c / 4**i for i, c in enumerate(self.config.block_out_channels))
        return maps * torch.tensor([], dtype=dtype).element_size()

    def forward(self, x_t: torch.Tensor, t: torch.Tensor | float, cond: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x_t.device, dtype=x_t.dtype)
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        h = torch.cat([x_t, cond.to(x_t.dtype)], dim=1)
        v = self.unet(h, t * self.config.time_scale).sample
        if self.skip is not None:
            v = v + self.skip(h)
        elif self.skip_mode == "gaussian":
            prior = gaussian_velocity(
                x_t.float(), t.float(), cond.float(), self.config.skip_noise_alpha,
                self.gaussian_mean.float(), self.gaussian_var.float(),
            )  # fmt: skip
            v = v + prior.to(v.dtype)
        return v
