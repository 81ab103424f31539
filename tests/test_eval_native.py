"""No-reference evaluation of native low-res images (eval/native.py, eval.metrics.no_reference_measures)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from eval.cli import main
from eval.metrics import no_reference_measures


def test_no_reference_closed_forms():
    """Bicubic against itself: ratios 1. Noise on the flat half raises flat-area noise only;
    a sharper edge raises edge sharpness only."""
    g = torch.Generator().manual_seed(0)
    bicubic = torch.full((1, 3, 64, 64), 0.4)
    bicubic[..., :, 40:] = torch.linspace(0.2, 0.8, 24).repeat(64, 1)  # a soft ramp on the right: the edges
    same = no_reference_measures(bicubic, bicubic)
    assert torch.allclose(same["noise"], same["noise_bicubic"]) and torch.allclose(same["edge"], same["edge_bicubic"])
    noisy = bicubic.clone()
    noisy[..., :, :32] += 0.02 * torch.randn(1, 1, 64, 32, generator=g)
    measured = no_reference_measures(noisy.clamp(0, 1), bicubic)
    assert measured["noise"] > 1e-5 > same["noise"] and torch.allclose(measured["edge"], same["edge"], rtol=1e-3)
    sharper = bicubic.clone()
    sharper[..., :, 40:] = torch.where(torch.arange(24) < 12, 0.2, 0.8).float().repeat(64, 1)
    sharp = no_reference_measures(sharper, bicubic)
    assert sharp["edge"] > 1.3 * sharp["edge_bicubic"] and torch.allclose(sharp["noise"], same["noise"])


@pytest.fixture
def native_dir(tmp_path):
    folder = tmp_path / "native"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(36, 44), (40, 40)]):
        base = Image.fromarray((rng.random((h // 4, w // 4, 3)) * 255).astype(np.uint8)).resize((w, h))
        noisy = np.asarray(base).astype(float) + rng.normal(0, 6, (h, w, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(folder / f"gen{i}.png")
    return folder


def test_native_command_scores_methods_against_bicubic(native_dir, tmp_path, tiny_pipeline_dir, capsys):
    out = tmp_path / "out"
    code = main(["native", "--images", str(native_dir), "--methods", "bicubic", "lanczos", f"tiny=flowup@{tiny_pipeline_dir}",
                 "--out", str(out), "--num-crops", "1", "--crop-size", "32", "--input-crop", "32", "--runtime", "onnx"])  # fmt: skip
    assert code == 0
    summary = {s["method"]: s for s in json.loads((out / "summary.json").read_text())["summary"]}
    assert summary["bicubic"]["flat_noise"] == pytest.approx(1.0) and summary["bicubic"]["edge_sharpness"] == pytest.approx(1.0)
    assert summary["lanczos"]["edge_sharpness"] == pytest.approx(1.0, abs=0.1)  # another interpolator: close to bicubic
    assert set(summary) == {"bicubic", "lanczos", "tiny"} and summary["tiny"]["images"] == 2
    assert (out / "report.md").read_text().count("crops/") == 1 and len(list((out / "crops").glob("*.png"))) == 1
    assert "flat-area noise" in capsys.readouterr().out


def test_native_refuses_methods_that_need_a_high_res_image(native_dir, tmp_path, capsys):
    assert main(["native", "--images", str(native_dir), "--methods", "codec-hr", "--out", str(tmp_path)]) == 2
    assert "needs a high-res image" in capsys.readouterr().err
    assert main(["native", "--images", str(native_dir), "--runtime", "tensorrt", "--out", str(tmp_path)]) == 2
    assert "runtime" in capsys.readouterr().err


def test_report_title_names_few_inputs_and_counts_many():
    """A shell glob's 28 files make a title of three names and a count, not 28 paths."""
    from eval.native import _short_list

    assert _short_list(["a.png", "b.png"]) == "a.png, b.png"
    assert _short_list([f"{i}.png" for i in range(28)]) == "0.png, 1.png, 2.png and 25 more"


def _blurred_step(sigma: float, contrast: float = 0.6, size: int = 64) -> torch.Tensor:
    """``(1, 3, size, size)``: a vertical step of ``contrast`` at the centre, Gaussian-blurred by ``sigma`` pixels."""
    x = torch.arange(size, dtype=torch.float64) - size // 2  # the step's centre on a pixel
    profile = 0.2 + contrast * 0.5 * (1 + torch.erf(x / (sigma * 2**0.5)))
    return profile.float().repeat(1, 3, size, 1)


def test_edge_acutance_closed_form():
    """A step blurred by sigma s reads its central difference at the centre over the part of the step
    inside the window, ``erf(1 / (s sqrt 2)) / 2 / erf(3 / (s sqrt 2))`` (about ``1 / (2.5 s)``),
    whatever its contrast; a crisper step reads higher; noise off the edge does not move it; a halo
    lowers it."""
    from eval.metrics import ACUTANCE_WINDOW, edge_acutance

    soft = _blurred_step(2.0)
    for sigma in (0.8, 1.5, 2.0, 2.5):
        value, _ = edge_acutance(_blurred_step(sigma), soft)
        inside = math.erf(ACUTANCE_WINDOW // 2 / (sigma * 2**0.5))
        assert float(value) == pytest.approx(math.erf(1 / (sigma * 2**0.5)) / 2 / inside, rel=0.05)
    low_contrast, _ = edge_acutance(_blurred_step(2.0, contrast=0.1), soft)
    crisp, reference = edge_acutance(_blurred_step(1.0), soft)
    assert float(low_contrast) == pytest.approx(float(reference), rel=1e-3) and float(crisp) > 1.5 * float(reference)
    noisy = soft.clone()
    noisy[..., :, :16] += 0.02 * torch.randn(1, 1, 64, 16, generator=torch.Generator().manual_seed(0))
    assert float(edge_acutance(noisy, soft)[0]) == pytest.approx(float(reference), rel=1e-3)
    haloed = soft + 0.3 * (soft - _blurred_step(4.0))  # an unsharp mask's overshoot
    assert float(edge_acutance(haloed, soft)[0]) < float(edge_acutance(_blurred_step(1.4), soft)[0])
