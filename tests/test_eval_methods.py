"""Methods of the evaluation harness: spec parsing, baselines on tiny images, flowup by path."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from eval.methods import (
    MethodContext,
    UnknownMethodError,
    build_method,
    method_families,
    parse_method,
    register_method,
)
from flowup import TAEF2Codec
from flowup.resample import upsample


@pytest.fixture
def lr():
    torch.manual_seed(0)
    return torch.rand(1, 3, 16, 24)


@pytest.fixture
def ctx():
    torch.manual_seed(0)
    return MethodContext(scale=2, device="cpu", codec=TAEF2Codec().eval(), runtime="torch")


def test_parse_method_forms():
    spec = parse_method("flowup:euler:4")
    assert (spec.family, spec.path, spec.args, spec.label) == ("flowup", None, ["euler", "4"], "flowup:euler:4")
    spec = parse_method("student=flowup@runs/x/model:euler:1")
    assert (spec.label, spec.family, spec.path, spec.args) == ("student", "flowup", "runs/x/model", ["euler", "1"])
    assert parse_method("flowup:dopri5").args == ["dopri5"]
    assert parse_method("flowup:euler:1:bp3").args == ["euler", "1", "bp3"]
    assert parse_method("bicubic").family == "bicubic"


@pytest.mark.parametrize(
    "text, message",
    [
        ("nearest", "unknown method"),
        ("flowup:heun:4", "unknown solver"),
        ("flowup:euler:zero", "positive integer"),
        ("flowup:euler:0", "positive integer"),
        ("flowup:euler:1:3", "bpN"),
        ("flowup:euler:1:bp-1", "bpN"),
        ("flowup:euler:1:bp1:x", "expected"),
        ("flowup@:euler", "empty path"),
        ("=bicubic", "empty label"),
    ],
)
def test_parse_method_rejects_bad_specs(text, message):
    with pytest.raises(UnknownMethodError, match=message):
        parse_method(text)


def test_baselines_take_no_arguments(ctx):
    with pytest.raises(UnknownMethodError, match="takes no"):
        build_method("lanczos:4", ctx)
    with pytest.raises(UnknownMethodError, match="bpN"):
        build_method("bicubic:4", ctx)


def test_baselines_with_back_projection(lr, ctx):
    from flowup.back_projection import back_project

    assert torch.equal(build_method("bicubic:bp3", ctx).upscale(lr, None), back_project(upsample(lr, 2), lr, 3))
    psu, psu_bp = build_method("psu", ctx).upscale(lr, None), build_method("psu:bp3", ctx).upscale(lr, None)
    assert torch.equal(psu_bp, back_project(psu, lr, 3))
    for bad in ("bicubic:3", "psu:bp1:bp2", "lanczos:bp1", "codec-hr:bp1"):
        with pytest.raises(UnknownMethodError):
            build_method(bad, ctx)


def test_bicubic_is_flowup_resample(lr, ctx):
    method = build_method("bicubic", ctx)
    out = method.upscale(lr, None)
    assert torch.equal(out, upsample(lr, 2))
    assert method.nfe == 0 and method.parameter_count == 0


def test_lanczos_shape_and_close_to_bicubic_on_smooth_image(ctx):
    y, x = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 24), indexing="ij")
    smooth = torch.stack([x, y, (x + y) / 2])[None]
    out = build_method("lanczos", ctx).upscale(smooth, None)
    assert out.shape == (1, 3, 32, 48)
    assert (out - upsample(smooth, 2)).abs().mean() < 0.02


def test_codec_baselines(lr, ctx):
    codec = ctx.codec
    hr = torch.rand(1, 3, 32, 48)
    psu = build_method("psu", ctx)
    square = lr[..., :16, :16]  # x2 = 32 px: a multiple of the flow's size, so the pipeline pads nothing
    with torch.no_grad():
        assert torch.allclose(psu.upscale(square, None), codec.decode(codec.encode(upsample(square, 2))), atol=1e-6)
        assert psu.upscale(lr, hr).shape == hr.shape  # odd sizes: padded, then cropped back, as flowup does
        assert torch.allclose(build_method("codec-hr", ctx).upscale(lr, hr), codec.decode(codec.encode(hr)))
    latent = build_method("latent-bilinear", ctx).upscale(lr, hr)
    assert latent.shape == hr.shape and 0 <= latent.min() and latent.max() <= 1
    assert psu.parameter_count == sum(p.numel() for p in codec.parameters()) > 0


def test_register_method_extends_the_registry(lr, ctx):
    class Nearest:
        def __init__(self, spec, ctx):
            self.spec, self.ctx, self.nfe, self.label = spec, ctx, 0, spec.label

        def upscale(self, lr, hr):
            return torch.nn.functional.interpolate(lr, scale_factor=self.ctx.scale, mode="nearest")

    register_method("nearest-test", Nearest)
    try:
        assert "nearest-test" in method_families()
        assert build_method("nearest-test", ctx).upscale(lr, None).shape == (1, 3, 32, 48)
    finally:
        from eval import methods

        methods._REGISTRY.pop("nearest-test")


def test_flowup_by_path_with_label_and_training_cost(tiny_pipeline_dir, tmp_path, lr):
    folder = tmp_path / "student"
    shutil.copytree(tiny_pipeline_dir, folder)
    (folder / "training.json").write_text(json.dumps({"wall_clock_hours": 1.5, "hardware": "1x H100"}))
    ctx = MethodContext(scale=2, device="cpu")
    method = build_method(f"one-step=flowup@{folder}:euler:1", ctx)
    assert method.label == "one-step"
    assert method.training_cost == {"wall_clock_hours": 1.5, "hardware": "1x H100"}
    out = method.upscale(lr, None)
    assert out.shape == (1, 3, 32, 48) and method.nfe == 1
    again = build_method(f"flowup@{folder}:midpoint:2", ctx)
    again.upscale(lr, None)
    assert again.nfe == 4  # midpoint: 2 evaluations per step
    assert method.parameter_count > sum(p.numel() for p in TAEF2Codec().parameters())


def test_flowup_is_seeded(tiny_pipeline_dir, lr):
    ctx = MethodContext(scale=2, device="cpu", model=str(tiny_pipeline_dir))
    a = build_method("flowup:euler:2", ctx).upscale(lr, None)
    b = build_method("flowup:euler:2", ctx).upscale(lr, None)
    assert torch.equal(a, b)


def test_flowup_missing_model_folder_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_method(f"flowup@{tmp_path / 'missing'}", MethodContext())


def test_flowup_x4_input_back_projection_spec(tiny_pipeline_dir, lr):
    ctx = MethodContext(scale=4, device="cpu", model=str(tiny_pipeline_dir), runtime="torch")
    method = build_method("flowup:euler:1:ibp3:d0.5", ctx)
    assert (method.solver, method.steps, method.input_back_projection_steps, method.detail) == ("euler", 1, 3, 0.5)
    assert method.upscale(lr, None).shape == (1, 3, 4 * lr.shape[-2], 4 * lr.shape[-1])
    assert build_method("flowup", ctx).input_back_projection_steps == 0
    assert build_method("flowup:d1,0.5", ctx).detail == (1.0, 0.5)  # one detail per stage
    with pytest.raises(UnknownMethodError, match="detail"):
        build_method("flowup:d1,x", ctx)
    with pytest.raises(UnknownMethodError, match="ibpN"):
        build_method("flowup:ibpx", ctx)
