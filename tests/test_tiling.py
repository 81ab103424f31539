"""Tiled evaluation: window geometry, blending weights, and tiled == untiled where the overlap
covers the receptive field (velocity model and TAEF2 codec)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from flowup import FlowUNet, TAEF2Codec
from flowup.tiling import (
    MIN_RAMP,
    auto_flow_tile_size,
    blend_weights_1d,
    decode_tiled,
    fit_tile,
    default_flow_overlap,
    encode_tiled,
    tile_starts,
    tiled_map,
    tiled_velocity,
)

from flowup.receptive_field import sequential_radius, split_around_group_norms

from conftest import TINY_FLOW_KWARGS


def _tiny_flow(seed: int = 0, **overrides) -> FlowUNet:
    torch.manual_seed(seed)
    flow = FlowUNet(**{**TINY_FLOW_KWARGS, **overrides}).eval()
    nn.init.normal_(flow.unet.conv_out.weight, std=0.05)
    return flow


@pytest.mark.parametrize(
    "length, tile, overlap, multiple",
    [(100, 30, 10, 1), (96, 40, 16, 4), (64, 64, 8, 2), (50, 80, 8, 1), (128, 36, 20, 4), (7, 4, 1, 1)],
)
def test_tile_starts_cover_with_enough_overlap(length, tile, overlap, multiple):
    starts = tile_starts(length, tile, overlap, multiple)
    assert starts[0] == 0
    size = min(tile, length)
    assert starts[-1] + size == length
    assert all(s % multiple == 0 for s in starts)
    for a, b in zip(starts, starts[1:]):
        assert a < b and a + size - b >= overlap


@pytest.mark.parametrize("length, tile, overlap, multiple", [(512, 160, 28, 1), (512, 256, 28, 1), (96, 40, 16, 4)])
def test_fit_tile_keeps_the_window_count_with_less_work(length, tile, overlap, multiple):
    fitted = fit_tile(length, tile, overlap, multiple)
    assert fitted <= tile and fitted % multiple == 0
    starts = tile_starts(length, fitted, overlap, multiple)
    assert len(starts) == len(tile_starts(length, tile, overlap, multiple))
    assert all(a + fitted - b >= overlap for a, b in zip(starts, starts[1:]))
    assert fit_tile(512, 256, 28) < 256  # 3 windows of 190 instead of 256


def test_tile_starts_rejects_misaligned_sizes():
    with pytest.raises(ValueError):
        tile_starts(100, 30, 10, multiple=4)


@pytest.mark.parametrize("radius", [0, 3, 50])
def test_blend_weights_sum_to_one_and_vanish_near_inner_edges(radius):
    length, tile = 100, 40
    starts = tile_starts(length, tile, overlap=20)
    weights = blend_weights_1d(starts, tile, length, radius)
    total = torch.zeros(length, dtype=torch.float64)
    for start, w in zip(starts, weights):
        total[start : start + tile] += w
    torch.testing.assert_close(total, torch.ones(length, dtype=torch.float64))
    margin = min(radius, (20 - MIN_RAMP) // 2)
    assert torch.all(weights[1][:margin] == 0) and torch.all(weights[0][tile - margin :] == 0)
    assert weights[0][0] == 1 and weights[-1][-1] == 1  # image borders are not blended


def test_flow_receptive_radius_is_a_tight_bound():
    flow = _tiny_flow()
    radius = flow.receptive_radius
    n = 2 * radius + 16
    x = torch.randn(1, 32, n, n, requires_grad=True)
    v = flow(x, torch.tensor([0.3]), torch.randn(1, 32, n, n))
    reach = 0
    for p in (n // 2, n // 2 + 1):
        x.grad = None
        v[0, :, p, p].sum().backward(retain_graph=True)
        rows = torch.nonzero(x.grad.abs().sum((0, 1)).sum(1))[:, 0]
        reach = max(reach, p - int(rows.min()), int(rows.max()) - p)
    assert reach <= radius <= reach + 2


def test_tiled_velocity_equals_untiled_with_exact_overlap():
    flow = _tiny_flow()
    radius = flow.receptive_radius
    h, w = 2 * radius + 26, 2 * radius + 30
    torch.manual_seed(1)
    x, cond, t = torch.randn(2, 32, h, w), torch.randn(2, 32, h, w), torch.tensor([0.2, 0.7])
    overlap = 2 * radius + MIN_RAMP
    tile = overlap + 12
    assert len(tile_starts(h, tile, overlap, 2)) >= 2 and len(tile_starts(w, tile, overlap, 2)) >= 2
    with torch.no_grad():
        full = flow(x, t, cond)
        tiled = tiled_velocity(flow, x, t, cond, tile=tile, overlap=overlap)
        rough = tiled_velocity(flow, x, t, cond, tile=16, overlap=4)
    torch.testing.assert_close(tiled, full, atol=1e-5, rtol=1e-5)
    # the check can fail: a small overlap is close, not equal
    assert (rough - full).abs().max() > 1e-4
    assert (rough - full).abs().mean() < full.abs().mean()


def test_default_overlap_is_exact_when_affordable_and_capped_otherwise():
    flow = _tiny_flow()
    radius = flow.receptive_radius
    assert default_flow_overlap(flow, tile=1024) >= 2 * radius + MIN_RAMP
    assert default_flow_overlap(flow, tile=32) == 16
    assert default_flow_overlap(flow, tile=32) % flow.size_multiple == 0


def test_tiled_map_with_scale_change_matches_direct_call():
    # a local operator that upsamples by 8: 3x3 conv then nearest upsampling
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3, 3, padding=1)

    def fn(z):
        return nn.functional.interpolate(conv(z), scale_factor=8, mode="nearest")

    z = torch.randn(1, 4, 30, 22)
    with torch.no_grad():
        out = tiled_map(fn, z, tile=12, overlap=2 + MIN_RAMP, radius=1, unit_out=8)
        torch.testing.assert_close(out, fn(z), atol=1e-6, rtol=1e-6)


def test_auto_tile_size_follows_budget_and_batch():
    flow = _tiny_flow()
    big = auto_flow_tile_size(flow, batch=1, dtype=torch.float32, budget_bytes=2**30)
    small = auto_flow_tile_size(flow, batch=4, dtype=torch.float32, budget_bytes=2**30)
    tiny = auto_flow_tile_size(flow, batch=1, dtype=torch.float32, budget_bytes=2**20)
    half = auto_flow_tile_size(flow, batch=1, dtype=torch.float16, budget_bytes=2**30)
    assert big > small > tiny and half > big
    assert all(s % flow.size_multiple == 0 for s in (big, small, tiny, half))


LEAN = {"encoder_stem": "space_to_depth", "decoder_head": "pixel_shuffle"}


@pytest.mark.parametrize("lean", [False, True], ids=["taef2", "lean"])
def test_taef2_local_part_radius_bounds_the_gradient_reach(lean):
    torch.manual_seed(0)
    codec = TAEF2Codec(**(LEAN if lean else {})).eval()
    local = nn.Sequential(*list(codec.decoder)[split_around_group_norms(codec.decoder, from_end=True) :])
    radius = sequential_radius(local)
    z = torch.randn(1, 64, 24, 24, requires_grad=True)
    y = local(z)
    y[0, :, 96, 96].sum().backward()  # centre of latent pixel 12
    rows = torch.nonzero(z.grad.abs().sum((0, 1)).sum(1))[:, 0]
    assert max(12 - int(rows.min()), int(rows.max()) - 12) <= radius
    # the encoder's local part, in input pixels: every pixel that moves latent pixel (6, 6) is within reach
    local = nn.Sequential(*list(codec.encoder)[: split_around_group_norms(codec.encoder, from_end=False)])
    radius = sequential_radius(local)
    x = torch.rand(1, 3, 192, 192, requires_grad=True)
    local(x)[0, :, 12, 12].sum().backward()  # features at /8: pixel 12 covers input pixels 96..103
    rows = torch.nonzero(x.grad.abs().sum((0, 1)).sum(1))[:, 0]
    assert int(rows.max()) - 103 <= radius and 96 - int(rows.min()) <= radius


@pytest.mark.parametrize("lean", [False, True], ids=["taef2", "lean"])
def test_tiled_taef2_equals_untiled(lean):
    # TAEF2's GroupNorm blocks run on the whole latent grid, the local part is tiled: exact (also
    # for the lean codec's space-to-depth stem and pixel-shuffle head).
    torch.manual_seed(0)
    codec = TAEF2Codec(**(LEAN if lean else {})).eval()
    images = torch.rand(1, 3, 320, 128)
    latents = torch.randn(1, 32, 40, 16)
    with torch.no_grad():
        torch.testing.assert_close(encode_tiled(codec, images, tile=16), codec.encode(images), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(decode_tiled(codec, latents, tile=16), codec.decode(latents), atol=1e-5, rtol=1e-5)
        # the check can fail: tiling the GroupNorm blocks too changes the result
        whole = tiled_map(codec.decode, latents, tile=20, overlap=12, radius=2, unit_out=8)
        assert (whole - codec.decode(latents)).abs().max() > 1e-4
