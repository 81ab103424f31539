"""The torch-bf16 runtime: oneDNN bfloat16 copies of the networks, close to float32, picked by
``auto`` where the CPU has AMX, rebuilt when the weights change, refused where it cannot run."""

from __future__ import annotations

import pytest
import torch

from flowup import FlowUpPipeline
from flowup.bf16_runtime import Bf16Engine, bf16_unavailable_reason
from flowup.runtimes import RuntimeUnavailableError

from conftest import make_tiny_pipeline

needs_bf16 = pytest.mark.skipif(
    bf16_unavailable_reason(make_tiny_pipeline().flow, make_tiny_pipeline().codec, torch.device("cpu")) is not None,
    reason="this CPU or torch build has no oneDNN bfloat16",
)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * torch.log10(((a.double() - b.double()) ** 2).mean()).item()


@needs_bf16
@pytest.mark.parametrize("tiles", [dict(), dict(tile_size=8, codec_tile_size=8)])
def test_bf16_runtime_is_close_to_float32(tiles):
    pipe = make_tiny_pipeline(default_back_projection_steps=2)
    image = torch.rand(1, 3, 40, 72, generator=torch.Generator().manual_seed(0))
    expected = pipe(image=image, generator=torch.Generator().manual_seed(1), output_type="pt", **tiles).images
    pipe.set_runtime("torch-bf16")
    out = pipe(image=image, generator=torch.Generator().manual_seed(1), output_type="pt", **tiles).images
    assert out.shape == expected.shape == (1, 3, 80, 144) and out.dtype == torch.float32
    assert 30 < _psnr(out, expected) < 120  # bfloat16 rounding: close, not equal
    again = pipe(image=image, generator=torch.Generator().manual_seed(1), output_type="pt", **tiles).images
    assert torch.equal(out, again)  # same seed, same output


@needs_bf16
def test_engine_copies_leave_the_pipeline_alone_and_follow_weight_changes():
    pipe = make_tiny_pipeline().set_runtime("torch-bf16")
    image = torch.rand(1, 3, 16, 16)
    before = pipe(image=image, generator=torch.Generator().manual_seed(0), output_type="pt").images
    engine = pipe._engines.built("torch-bf16", "flow", None).backend
    assert isinstance(engine, Bf16Engine) and engine.flow is not pipe.flow
    weight = next(p for p in pipe.codec.parameters() if p.dim() == 4)
    assert weight.is_contiguous()  # the pipeline's own modules keep their memory format
    with torch.no_grad():
        pipe.flow.unet.conv_out.bias.add_(0.5)
    after = pipe(image=image, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert pipe._engines.built("torch-bf16", "flow", None).backend is not engine and (after - before).abs().max() > 1e-3


def test_auto_picks_bf16_where_the_cpu_has_amx(tiny_pipeline_dir, monkeypatch):
    monkeypatch.setattr("flowup.bf16_runtime.cpu_has_amx", lambda: True)
    pipe = FlowUpPipeline.from_pretrained(tiny_pipeline_dir)
    assert pipe.active_runtime() == "torch-bf16"
    assert FlowUpPipeline.from_pretrained(tiny_pipeline_dir, runtime="torch").active_runtime() == "torch"
    half = FlowUpPipeline.from_pretrained(tiny_pipeline_dir, torch_dtype=torch.bfloat16)
    assert half.active_runtime() == "torch"  # weights already bfloat16: plain torch
    half.set_runtime("torch-bf16")
    with pytest.raises(RuntimeUnavailableError, match="torch-bf16.*float32"):
        half.active_runtime()


@needs_bf16
def test_loading_and_running_under_inference_mode(tiny_pipeline_dir):
    """ComfyUI (and many servers) run everything under ``torch.inference_mode``: weights loaded
    there are inference tensors, which have no version counter for the engine cache."""
    with torch.inference_mode():
        pipe = FlowUpPipeline.from_pretrained(tiny_pipeline_dir).set_runtime("torch-bf16")
        image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        out = pipe(image=image, output_type="pt", generator=torch.Generator().manual_seed(0)).images
        again = pipe(image=image, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 3, 32, 32) and torch.equal(out, again)
