"""The onnx-int8 runtime: the codec's local graphs and the flow's convolutions are quantized (and nothing else), the output
stays close to float32 but is not float32's, exports are cached apart from the float32 ones and
reused, ``auto`` picks it on CPUs without AMX, and eval / CLI expose it."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch

from flowup import FlowUpPipeline

from flowup.runtimes import RuntimeUnavailableError

from conftest import make_tiny_pipeline

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime.quantization")


def _op_types(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def test_int8_quantizes_the_local_codec_graphs_and_the_flow_convolutions_and_stays_close_to_float32(capfd):
    pipe = make_tiny_pipeline(default_back_projection_steps=2)
    image = torch.rand(1, 3, 40, 72)
    expected = pipe(image=image, generator=torch.Generator().manual_seed(1), output_type="pt").images
    pipe.set_runtime("onnx-int8")
    assert pipe.active_runtime() == "onnx-int8"
    capfd.readouterr()
    out = pipe(image=image, generator=torch.Generator().manual_seed(1), output_type="pt").images
    assert capfd.readouterr().err == ""  # the quantizer ran (first use) and its logging stayed muted
    assert out.shape == expected.shape == (1, 3, 80, 144)
    assert (out - expected).abs().max() > 1e-3  # quantized: not float32 to rounding
    assert _psnr(out, expected) > 30  # ... but close to it

    folder = pipe._engines.built("onnx-int8", "flow", None).backend.folder
    manifest = json.loads((folder / "onnx_manifest.json").read_text())
    assert manifest["quantization"]["graphs"] == {"flow": ["Conv"], "encoder_local": "all", "decoder_local": "all"}
    for name in ("flow", "encoder_local", "decoder_local"):
        assert {"QuantizeLinear", "DequantizeLinear"} <= _op_types(folder / f"{name}.onnx")
    for name in ("encoder_image_wide", "decoder_image_wide"):
        assert "QuantizeLinear" not in _op_types(folder / f"{name}.onnx")
    flow_graph = onnx.load(str(folder / "flow.onnx")).graph
    dequantize = [node for node in flow_graph.node if node.op_type == "DequantizeLinear"]
    quantized, dequantized = {node.input[0] for node in dequantize}, {node.output[0] for node in dequantize}
    for node in flow_graph.node:  # the flow's convolutions read dequantized int8, its norms float32
        if node.op_type == "Conv":
            assert node.input[0] in dequantized
        if node.op_type == "ReduceMean":
            assert not any(o in quantized for o in node.output)
    assert not list(folder.glob("*.int8.onnx")) and not list(folder.glob("*-inferred.onnx"))  # no scratch files

    x4 = pipe(image=image, scale=4, generator=torch.Generator().manual_seed(1), output_type="pt").images
    assert x4.shape == (1, 3, 160, 288)


def test_int8_exports_are_cached_apart_from_float32_and_reused(monkeypatch):
    pipe = make_tiny_pipeline()
    image = torch.rand(1, 3, 16, 16)
    pipe.set_runtime("onnx")(image=image)
    pipe.set_runtime("onnx-int8")(image=image)
    float_folder = pipe._engines.built("onnx", "flow", None).backend.folder
    int8_folder = pipe._engines.built("onnx-int8", "flow", None).backend.folder
    assert float_folder != int8_folder and float_folder.parent == int8_folder.parent
    assert "quantization" not in json.loads((float_folder / "onnx_manifest.json").read_text())

    import flowup.onnx_int8 as onnx_int8

    def no_quantize(*args, **kwargs):
        raise AssertionError("quantized again although the cache holds these weights")

    monkeypatch.setattr(onnx_int8, "quantize_graphs", no_quantize)
    fresh = make_tiny_pipeline().set_runtime("onnx-int8")
    fresh(image=image)
    assert fresh._engines.built("onnx-int8", "flow", None).backend.folder == int8_folder


def test_auto_picks_int8_on_cpus_without_amx_and_int8_is_refused_where_onnx_cannot_run(tiny_pipeline_dir, monkeypatch):
    monkeypatch.setattr("flowup.bf16_runtime.cpu_has_amx", lambda: False)
    assert FlowUpPipeline.from_pretrained(tiny_pipeline_dir).active_runtime() == "onnx-int8"
    monkeypatch.setattr("flowup.bf16_runtime.cpu_has_amx", lambda: True)
    bf16 = FlowUpPipeline.from_pretrained(tiny_pipeline_dir)
    assert bf16.active_runtime() in ("torch-bf16", "onnx-int8")  # bfloat16 first where oneDNN has it
    half = FlowUpPipeline.from_pretrained(tiny_pipeline_dir, torch_dtype=torch.bfloat16, runtime="onnx-int8")
    with pytest.raises(RuntimeUnavailableError, match="onnx-int8.*float32"):
        half.active_runtime()


def test_calibration_feeds_are_the_shapes_the_graphs_take():
    from flowup.onnx_int8 import calibration_feeds

    pipe = make_tiny_pipeline()
    multiple = pipe.codec.downscale * pipe.flow.size_multiple
    feeds = calibration_feeds(pipe.flow, pipe.codec, pipe.config.noise_alpha)
    assert len(feeds["encoder_local"]) == 3 and len(feeds["flow"]) == 6 and len(feeds["decoder_local"]) == 6
    for feed in feeds["encoder_local"]:
        images = feed["images"]
        assert images.shape[:2] == (1, 3) and images.shape[2] % multiple == 0 and images.shape[3] % multiple == 0
        assert 0 <= images.min() and images.max() <= 1
    assert sorted(float(f["t"][0]) for f in feeds["flow"]) == [0.0, 0.0, 0.0, 0.5, 0.5, 0.5]
    for feed in feeds["flow"]:
        assert feed["x_t"].shape == feed["cond"].shape and feed["x_t"].shape[1] == pipe.flow.config.latent_channels
    assert all(f["features"].shape[1] == 64 for f in feeds["decoder_local"])  # TAEF2's feature width


def test_eval_spec_int8_runs_the_row_on_the_int8_runtime(tiny_pipeline_dir):
    from eval.methods import MethodContext, build_method, parse_method

    assert parse_method("flowup:euler:1:int8").args == ["euler", "1", "int8"]
    ctx = MethodContext(scale=2, device="cpu", model=str(tiny_pipeline_dir), runtime="torch")
    method = build_method("flowup:euler:1:int8", ctx)
    assert (method.solver, method.steps) == ("euler", 1) and method.pipe.runtime == "onnx-int8"
    assert build_method("flowup", ctx).pipe.runtime == "torch"
    assert build_method("flowup:fp32", ctx).pipe.runtime == "onnx"  # float32, whatever auto picks
    with pytest.raises(ValueError, match="at most one"):
        build_method("flowup:int8:fp32", ctx)
    lr = torch.rand(1, 3, 16, 24)
    assert method.upscale(lr, None).shape == (1, 3, 32, 48)


def test_cli_runtime_onnx_int8_writes_an_image_close_to_onnx(tmp_path, tiny_pipeline_dir, capfd):
    from flowup.cli import main

    source = tmp_path / "a.png"
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 19, 3), dtype=np.uint8)).save(source)
    outputs = {}
    for runtime in ("onnx", "onnx-int8"):
        target = tmp_path / f"{runtime}.png"
        assert main(["upscale", str(source), "-o", str(target), "--model", str(tiny_pipeline_dir),
                     "--runtime", runtime, "--threads", "1", "-q"]) == 0  # fmt: skip
        outputs[runtime] = np.asarray(PIL.Image.open(target), dtype=np.float64)
        assert capfd.readouterr().err == ""  # -q: nothing on stderr
    assert outputs["onnx-int8"].shape == (24, 38, 3)
    mse = ((outputs["onnx-int8"] - outputs["onnx"]) ** 2).mean()
    assert 0 < mse and 10 * np.log10(255**2 / mse) > 25


def test_cli_export_onnx_int8_writes_quantized_joined_graphs_that_run(tmp_path, capsys, tiny_pipeline_dir):
    import onnxruntime as ort

    from flowup.cli import main

    out = tmp_path / "onnx-int8"
    assert main(["export-onnx", str(tiny_pipeline_dir), str(out), "--int8"]) == 0
    manifest = json.loads((out / "onnx_manifest.json").read_text())
    assert list(manifest["quantization"]["graphs"]) == ["flow", "encoder_local", "decoder_local"]
    for name in ("flow", "encoder", "decoder", "encoder_local", "decoder_local"):  # joined from the quantized halves
        assert "QuantizeLinear" in _op_types(out / f"{name}.onnx")
    decoder = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    images = decoder.run(None, {decoder.get_inputs()[0].name: np.zeros((2, 32, 3, 5), np.float32)})[0]
    assert images.shape == (2, 3, 24, 40)


def test_auto_exact_never_picks_int8_and_eval_rows_default_to_it(tiny_pipeline_dir, monkeypatch):
    from eval.methods import MethodContext

    monkeypatch.setattr("flowup.bf16_runtime.cpu_has_amx", lambda: False)
    assert FlowUpPipeline.from_pretrained(tiny_pipeline_dir, runtime="auto-exact").active_runtime() == "onnx"
    assert MethodContext(scale=2).runtime == "auto-exact"  # tables measure the model, not a runtime
