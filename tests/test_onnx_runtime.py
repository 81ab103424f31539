"""ONNX export and the ONNX Runtime engine: the graphs match torch on sizes they were not traced at,
the pipeline's onnx runtime matches its torch runtime (tiled too), exports are cached by weights."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from flowup import FlowUpPipeline
from flowup.onnx_runtime import GRAPHS, OnnxEngine, export_onnx, fingerprint, load_engine
from flowup.runtimes import RuntimeUnavailableError

from conftest import make_tiny_pipeline

ort = pytest.importorskip("onnxruntime")


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_exported_graphs_match_torch_on_other_sizes_and_batches(tmp_path):
    pipe = make_tiny_pipeline()
    paths = export_onnx(pipe.flow, pipe.codec, tmp_path, joined=True)
    assert set(paths) == {*GRAPHS, "encoder", "decoder"}
    manifest = json.loads((tmp_path / "onnx_manifest.json").read_text())
    assert manifest["fingerprint"] == fingerprint(pipe.flow, pipe.codec)
    torch.manual_seed(0)
    images = torch.rand(2, 3, 48, 80)  # traced at 32x32, batch 1
    x_t, cond = torch.randn(2, 32, 6, 10), torch.randn(2, 32, 6, 10)
    t = torch.tensor([0.0, 0.7])
    with torch.no_grad():
        latents = pipe.codec.encode(images)
        decoded = pipe.codec.decode(latents)
        velocity = pipe.flow(x_t, t, cond)
    run = {name: _session(path) for name, path in paths.items()}
    np.testing.assert_allclose(run["encoder"].run(None, {run["encoder"].get_inputs()[0].name: images.numpy()})[0],
                               latents.numpy(), atol=1e-4, rtol=1e-4)  # fmt: skip
    np.testing.assert_allclose(run["decoder"].run(None, {run["decoder"].get_inputs()[0].name: latents.numpy()})[0],
                               decoded.numpy(), atol=1e-4, rtol=1e-4)  # fmt: skip
    out = run["flow"].run(None, {"x_t": x_t.numpy(), "t": t.numpy(), "cond": cond.numpy()})[0]
    np.testing.assert_allclose(out, velocity.numpy(), atol=1e-4, rtol=1e-4)
    # the split graphs compose to the same thing
    engine = OnnxEngine.load(tmp_path)
    torch.testing.assert_close(engine.encoder_stages.image_wide(engine.encoder_stages.local(images)), latents,
                               atol=1e-4, rtol=1e-4)  # fmt: skip
    torch.testing.assert_close(engine.velocity(x_t, t, cond), velocity, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(engine.velocity(x_t, 0.7, cond)[1], velocity[1], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("tiles", [dict(), dict(tile_size=8, codec_tile_size=8)])
def test_onnx_runtime_matches_torch_runtime(tiles):
    pipe = make_tiny_pipeline(default_back_projection_steps=2)
    image = torch.rand(1, 3, 40, 72)
    expected = pipe(image=image, generator=torch.Generator().manual_seed(1), output_type="pt", **tiles).images
    pipe.set_runtime("onnx")
    assert pipe.active_runtime() == "onnx"
    out = pipe(image=image, generator=torch.Generator().manual_seed(1), output_type="pt", **tiles).images
    assert out.shape == expected.shape == (1, 3, 80, 144)
    assert (out - expected).abs().max() < 1e-4  # float rounding only (torch vs ONNX Runtime kernels)
    x4 = pipe(image=image, scale=4, generator=torch.Generator().manual_seed(1), output_type="pt").images
    assert x4.shape == (1, 3, 160, 288)


def test_from_pretrained_defaults_to_onnx_on_cpu_without_amx_and_falls_back(tiny_pipeline_dir, monkeypatch):
    monkeypatch.setattr("flowup.bf16_runtime.cpu_has_amx", lambda: False)
    monkeypatch.setattr("flowup.onnx_int8.int8_unavailable_reason", lambda: "no quantizer here")
    pipe = FlowUpPipeline.from_pretrained(tiny_pipeline_dir)
    assert pipe.runtime == "auto" and pipe.active_runtime() == "onnx"  # int8 first, where it can run (test_onnx_int8)
    half = FlowUpPipeline.from_pretrained(tiny_pipeline_dir, torch_dtype=torch.bfloat16)
    assert half.active_runtime() == "torch"  # auto: ONNX Runtime runs float32 only
    half.set_runtime("onnx")
    with pytest.raises(RuntimeUnavailableError, match="float32"):
        half(image=torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="runtime"):
        pipe.set_runtime("tensorrt")


def test_exports_are_cached_by_weights_and_rebuilt_when_weights_change(monkeypatch):
    pipe = make_tiny_pipeline().set_runtime("onnx")
    image = torch.rand(1, 3, 16, 16)
    pipe(image=image, generator=torch.Generator().manual_seed(0))
    first = pipe._engines.built("onnx", "flow", None).backend.folder
    assert (first / "onnx_manifest.json").is_file()

    import flowup.onnx_runtime as onnx_runtime

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds these weights")

    monkeypatch.setattr(onnx_runtime, "export_onnx", no_export)
    assert load_engine(make_tiny_pipeline().flow, make_tiny_pipeline().codec).folder == first  # same weights
    monkeypatch.undo()
    before = pipe(image=image, generator=torch.Generator().manual_seed(0), output_type="pt").images
    with torch.no_grad():
        pipe.flow.unet.conv_out.bias.add_(0.5)  # an optimizer step, say
    after = pipe(image=image, generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert pipe._engines.built("onnx", "flow", None).backend.folder != first
    expected = pipe.set_runtime("torch")(image=image, generator=torch.Generator().manual_seed(0), output_type="pt")
    assert (after - expected.images).abs().max() < 1e-4 and (after - before).abs().max() > 1e-3
