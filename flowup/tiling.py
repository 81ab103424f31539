"""Tiled evaluation in bounded memory: the velocity model and the codec, tile by tile.

Everything here works on a *grid* of latent pixels. A function ``fn`` maps an input window of
``g * unit_in`` pixels to an output of ``g * unit_out`` pixels (velocity: 1 -> 1, encode: 8 -> 1,
decode: 1 -> 8). :func:`tiled_map` cuts the grid into overlapping windows of ``tile`` grid pixels,
evaluates ``fn`` on each and blends the outputs with smooth weights that sum to one:

- in the overlap of two windows, each window's weight is 0 within ``margin`` grid pixels of its own
  inner edge and ramps smoothly (smoothstep) to 1 across the rest; image borders are not inner
  edges and keep weight 1; the blend divides by the summed weights (exactly 1 where only two
  windows meet);
- ``margin = min(radius, (overlap - min_ramp) / 2)``: when ``overlap >= 2 * radius + min_ramp``,
  every pixel with a non-zero weight sees its whole receptive field inside the window, so the tiled
  result equals the untiled one (up to float rounding); smaller overlaps still blend seamlessly.

Window origins are multiples of ``multiple`` grid pixels, so strided layers stay aligned.

:func:`tiled_velocity` runs the flow model this way at every ODE step (the same tiles each step).
:func:`encode_tiled` / :func:`decode_tiled` do the codec. A codec that can split itself into a
local part and an image-wide part (:meth:`flowup.codecs.Codec.encoder_stages`; TAEF2, whose three
deepest blocks use GroupNorm over the whole image) has only the local, full-resolution part tiled
and the cheap latent-resolution part run whole, so tiled TAEF2 equals untiled TAEF2. Other codecs
(diffusers VAEs) are tiled whole, with blending: close to, not equal to, the untiled result.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from flowup.codecs import CodecStages, check_images

__all__ = [
    "tile_starts",
    "fit_tile",
    "blend_weights_1d",
    "tiled_map",
    "tiled_velocity",
    "default_flow_overlap",
    "auto_flow_tile_size",
    "encode_tiled",
    "decode_tiled",
    "DEFAULT_CODEC_TILE",
    "MIN_RAMP",
]

MIN_RAMP = 8  # grid pixels of smooth blending kept even when the overlap is exact
DEFAULT_CODEC_TILE = 160  # latent pixels per codec tile side (1280 image pixels)
_MAX_BUDGET_BYTES = 4 * 1024**3  # most activation memory one flow evaluation may use by default


# --------------------------------------------------------------------------------------------
# windows


def tile_starts(length: int, tile: int, overlap: int, multiple: int = 1) -> list[int]:
    """Window origins covering ``[0, length)`` with windows of ``tile`` and overlaps >= ``overlap``.

    ``length``, ``tile`` and ``overlap`` must be multiples of ``multiple``; origins are too.
    Windows are spread evenly, the first at 0 and the last ending at ``length``.
    """
    if tile >= length:
        return [0]
    if length % multiple or tile % multiple or overlap % multiple:
        raise ValueError(f"length {length}, tile {tile} and overlap {overlap} must be multiples of {multiple}")
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile) = [0, {tile}), got {overlap}")
    n_len, n_tile, n_overlap = length // multiple, tile // multiple, overlap // multiple
    count = math.ceil((n_len - n_overlap) / (n_tile - n_overlap))
    span = n_len - n_tile
    return [round(k * span / (count - 1)) * multiple for k in range(count)]


def fit_tile(length: int, tile: int, overlap: int, multiple: int = 1) -> int:
    """The smallest tile (a multiple of ``multiple``, at most ``tile``) that needs no more windows
    than ``tile`` does: ``ceil((length - overlap) / count) + overlap`` rounded up. Less wasted work."""
    if tile >= length:
        return tile
    count = math.ceil((length - overlap) / (tile - overlap))
    fitted = math.ceil(math.ceil((length - overlap) / count + overlap) / multiple) * multiple
    return min(tile, fitted)


def blend_weights_1d(
    starts: list[int], tile: int, length: int, radius: int, min_ramp: int = MIN_RAMP
) -> list[torch.Tensor]:
    """Per-window 1-D weights ``(min(tile, length),)`` that sum to one at every position.

    Each shared interval of two neighbouring windows (width ``ov``) gets a smoothstep ramp after a
    dead zone of ``margin = min(radius, (ov - min(ov, min_ramp)) // 2)`` pixels from each inner edge.
    """
    size = min(tile, length)
    weights = []
    for i, start in enumerate(starts):
        w = torch.ones(size, dtype=torch.float64)
        pos = torch.arange(size, dtype=torch.float64) + 0.5
        if i > 0:  # left inner edge, shared with the previous window
            overlap = starts[i - 1] + size - start
            w = w * _ramp(pos, overlap, radius, min_ramp)
        if i < len(starts) - 1:  # right inner edge, shared with the next window
            overlap = start + size - starts[i + 1]
            w = w * _ramp(size - pos, overlap, radius, min_ramp)
        weights.append(w)
    return weights


def _ramp(distance: torch.Tensor, overlap: int, radius: int, min_ramp: int) -> torch.Tensor:
    """Smoothstep from 0 to 1 over ``[margin, overlap - margin]`` of distance from an inner edge."""
    if overlap <= 0:
        return torch.ones_like(distance)
    margin = min(radius, (overlap - min(overlap, min_ramp)) // 2)
    width = overlap - 2 * margin
    x = ((distance - margin) / width).clamp(0, 1)
    return x * x * (3 - 2 * x)


# --------------------------------------------------------------------------------------------
# the generic tiled map


def tiled_map(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    radius: int,
    unit_in: int = 1,
    unit_out: int = 1,
    multiple: int = 1,
    extra: tuple[torch.Tensor, ...] = (),
    on_progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Evaluate ``fn`` window by window over the grid of ``x`` and blend the results.

    - ``x``: ``(N, C, g_h * unit_in, g_w * unit_in)``; ``extra``: tensors of the same spatial size
      as ``x``, cut into the same windows and passed as further arguments to ``fn``;
    - ``fn(window, *extra_windows)`` returns ``(N, C', w_h * unit_out, w_w * unit_out)``;
    - ``tile`` / ``overlap`` / ``radius`` / ``multiple`` are in grid pixels. ``tile <= 0`` or a tile
      covering the whole grid calls ``fn`` once, untiled;
    - ``on_progress(fraction)`` is called after each window with the fraction of windows done.

    Returns ``(N, C', g_h * unit_out, g_w * unit_out)`` in ``fn``'s dtype (accumulated in float32).
    """
    grid_h, grid_w = x.shape[-2] // unit_in, x.shape[-1] // unit_in
    if tile <= 0 or (tile >= grid_h and tile >= grid_w):
        y = fn(x, *extra)
        if on_progress is not None:
            on_progress(1.0)
        return y
    tile = max(multiple, tile // multiple * multiple)
    overlap = min(math.ceil(overlap / multiple) * multiple, tile - multiple)
    tile_h, tile_w = fit_tile(grid_h, tile, overlap, multiple), fit_tile(grid_w, tile, overlap, multiple)
    starts_h = tile_starts(grid_h, tile_h, overlap, multiple)
    starts_w = tile_starts(grid_w, tile_w, overlap, multiple)
    weights_h = blend_weights_1d(starts_h, tile_h, grid_h, radius)
    weights_w = blend_weights_1d(starts_w, tile_w, grid_w, radius)
    size_h, size_w = min(tile_h, grid_h), min(tile_w, grid_w)

    out: torch.Tensor | None = None
    total = torch.zeros(grid_h, grid_w, dtype=torch.float64)  # > 1 where three or more windows meet
    windows, done = len(starts_h) * len(starts_w), 0
    for sy, wy in zip(starts_h, weights_h):
        for sx, wx in zip(starts_w, weights_w):
            window = (..., slice(sy * unit_in, (sy + size_h) * unit_in), slice(sx * unit_in, (sx + size_w) * unit_in))
            y = fn(x[window], *(e[window] for e in extra))
            if out is None:
                out = torch.zeros(
                    (*y.shape[:-2], grid_h * unit_out, grid_w * unit_out), dtype=torch.float32, device=y.device
                )
                dtype = y.dtype
            weight = wy[:, None] * wx[None, :]
            total[sy : sy + size_h, sx : sx + size_w] += weight
            weight = weight.to(device=y.device, dtype=torch.float32)
            if unit_out > 1:
                weight = weight.repeat_interleave(unit_out, 0).repeat_interleave(unit_out, 1)
            rows = slice(sy * unit_out, (sy + size_h) * unit_out)
            target = (..., rows, slice(sx * unit_out, (sx + size_w) * unit_out))
            out[target] += y.float() * weight
            del y
            done += 1
            if on_progress is not None:
                on_progress(done / windows)
    scale = (1.0 / total).float().to(out.device)
    if unit_out > 1:
        scale = scale.repeat_interleave(unit_out, 0).repeat_interleave(unit_out, 1)
    return (out * scale).to(dtype)


# --------------------------------------------------------------------------------------------
# the velocity model


def default_flow_overlap(flow: nn.Module, tile: int) -> int:
    """Exact overlap ``2 * radius + MIN_RAMP`` when affordable, else half a tile (latent pixels)."""
    multiple = flow.size_multiple
    exact = 2 * flow.receptive_radius + MIN_RAMP
    overlap = min(exact, tile // 2)
    return math.ceil(overlap / multiple) * multiple


def _memory_budget(device: torch.device) -> int:
    """Bytes one flow evaluation may use: a quarter of the free memory, at most 4 GiB."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
    else:
        free = _available_ram() or 4 * _MAX_BUDGET_BYTES
    return int(min(_MAX_BUDGET_BYTES, free // 4))


def _available_ram() -> int | None:
    try:
        with open("/proc/meminfo") as stream:
            for line in stream:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def auto_flow_tile_size(
    flow: nn.Module, batch: int, dtype: torch.dtype, budget_bytes: int | None = None
) -> int:
    """Largest square latent tile (a multiple of ``flow.size_multiple``) within a memory budget
    (default: a quarter of the free device memory / RAM, at most 4 GiB). Latents that fit whole
    are not tiled (a tile at least as large as the latent means one untiled call)."""
    device = next(flow.parameters()).device
    budget = budget_bytes or _memory_budget(device)
    pixels = budget / (max(1, batch) * flow.activation_bytes_per_pixel(dtype))
    multiple = flow.size_multiple
    side = int(math.sqrt(pixels)) // multiple * multiple
    return max(8 * multiple, side)


def tiled_velocity(
    flow: nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    tile: int,
    overlap: int | None = None,
    forward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """Velocity ``flow(x, t, cond)`` of latents ``(N, C, h, w)`` evaluated window by window.

    ``tile`` in latent pixels (``<= 0``: untiled); ``overlap`` defaults to
    :func:`default_flow_overlap`. ``h`` and ``w`` must be multiples of ``flow.size_multiple``.
    ``forward``: what computes the velocity (default ``flow`` itself; e.g. an ONNX Runtime session
    of it); ``flow`` still gives the geometry. ``on_progress(fraction)``: after each window.
    """
    forward = flow if forward is None else forward
    if tile <= 0 or (tile >= x.shape[-2] and tile >= x.shape[-1]):
        v = forward(x, t, cond)
        if on_progress is not None:
            on_progress(1.0)
        return v
    if overlap is None:
        overlap = default_flow_overlap(flow, tile)
    return tiled_map(
        lambda xs, cs: forward(xs, t, cs),
        x,
        tile=tile,
        overlap=overlap,
        radius=flow.receptive_radius,
        multiple=flow.size_multiple,
        extra=(cond,),
        on_progress=on_progress,
    )


# --------------------------------------------------------------------------------------------
# codecs


def _grid_tile(tile: int | None, default: int = DEFAULT_CODEC_TILE) -> int:
    return default if tile is None else tile


def encode_tiled(
    codec: nn.Module,
    images: torch.Tensor,
    tile: int | None = None,
    stages: CodecStages | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """``codec.encode`` of ``(N, 3, H, W)`` images, tiled in windows of ``tile`` latent pixels.

    ``tile=None``: :data:`DEFAULT_CODEC_TILE`; ``tile <= 0``: untiled. ``stages``: the encoder
    split to run (default ``codec.encoder_stages()``; an ONNX Runtime engine passes its own): its
    local part is tiled with an overlap of twice its receptive radius plus a blending ramp, exact.
    A codec without stages is tiled whole, blended (close to, not equal to, the untiled result).
    ``on_progress(fraction)``: after each tile.
    """
    down = codec.downscale
    tile = _grid_tile(tile)
    stages = stages if stages is not None else codec.encoder_stages()
    grid_h, grid_w = images.shape[-2] // down, images.shape[-1] // down
    untiled = tile <= 0 or (tile >= grid_h and tile >= grid_w)
    if stages is None:
        if untiled:
            return _reported(codec.encode(images), on_progress)
        radius = math.ceil(codec.encoder_receptive_radius / down)
        overlap = 2 * radius + MIN_RAMP
        return tiled_map(codec.encode, images, max(tile, overlap + MIN_RAMP), overlap, radius, unit_in=down,
                         on_progress=on_progress)  # fmt: skip
    check_images(images, down)
    images = images.to(codec.dtype)
    if untiled:
        return _reported(stages.image_wide(stages.local(images)), on_progress)
    radius = math.ceil(stages.local_radius / down)
    overlap = 2 * radius + MIN_RAMP
    features = tiled_map(stages.local, images, max(tile, overlap + MIN_RAMP), overlap, radius, unit_in=down,
                         on_progress=on_progress)  # fmt: skip
    return stages.image_wide(features)


def decode_tiled(
    codec: nn.Module,
    latents: torch.Tensor,
    tile: int | None = None,
    stages: CodecStages | None = None,
    on_progress: Callable[[float], None] | None = None,
) -> torch.Tensor:
    """``codec.decode`` of ``(N, C, h, w)`` latents, tiled in windows of ``tile`` latent pixels.

    ``tile=None``: :data:`DEFAULT_CODEC_TILE`; ``tile <= 0``: untiled; ``stages`` as in
    :func:`encode_tiled` (default ``codec.decoder_stages()``). Returns ``(N, 3, 8h, 8w)``.
    """
    up = codec.downscale
    tile = _grid_tile(tile)
    stages = stages if stages is not None else codec.decoder_stages()
    untiled = tile <= 0 or (tile >= latents.shape[-2] and tile >= latents.shape[-1])
    if stages is None:
        if untiled:
            return _reported(codec.decode(latents), on_progress)
        radius = codec.decoder_receptive_radius
        overlap = 2 * radius + MIN_RAMP
        return tiled_map(codec.decode, latents, max(tile, overlap + MIN_RAMP), overlap, radius, unit_out=up,
                         on_progress=on_progress)  # fmt: skip
    features = stages.image_wide(latents.to(codec.dtype))
    if untiled:
        return _reported(stages.local(features), on_progress)
    radius = math.ceil(stages.local_radius)
    overlap = 2 * radius + MIN_RAMP
    return tiled_map(stages.local, features, max(tile, overlap + MIN_RAMP), overlap, radius, unit_out=up,
                     on_progress=on_progress)  # fmt: skip


def _reported(result: torch.Tensor, on_progress: Callable[[float], None] | None) -> torch.Tensor:
    if on_progress is not None:
        on_progress(1.0)
    return result
