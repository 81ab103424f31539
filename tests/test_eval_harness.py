"""The evaluation harness end to end on tiny images, and its command line."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from eval.cli import main
from eval.features import FeatureExtractor
from eval.harness import EvalConfig, load_config, run_evaluation
from eval.report import write_reports

REPORT_FILES = ["per_image.csv", "per_image.json", "summary.csv", "summary.json", "report.md",
                "plots/quality_vs_time.png", "plots/quality_vs_nfe.png"]  # fmt: skip


@pytest.fixture
def hr_dir(tmp_path):
    """Three tiny smooth-ish images of different sizes (not multiples of 16, to exercise the crop)."""
    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(70, 84), (64, 64), (90, 52)]):
        noise = rng.random((h // 4, w // 4, 3))
        image = Image.fromarray((noise * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BICUBIC)
        image.save(folder / f"img{i}.png")
    return folder


@pytest.fixture
def features():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return FeatureExtractor(net, "random test features (8-d)", input_size=32, input_range=(-1.0, 1.0))


def test_harness_writes_every_report_file(hr_dir, tmp_path, features):
    out = tmp_path / "out"
    config = EvalConfig(hr=[str(hr_dir)], methods=["bicubic", "lanczos"], out=str(out), device="cpu", patch_size=32, repeats=2)
    result = run_evaluation(config, feature_extractor=features, log=lambda _: None)
    files = write_reports(result)
    for name in REPORT_FILES:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert len(list((out / "crops").glob("*.png"))) == 3

    rows = json.loads((out / "per_image.json").read_text())
    assert len(rows) == 6 and {r["method"] for r in rows} == {"bicubic", "lanczos"}
    assert {(r["width"], r["height"]) for r in rows} == {(80, 64), (64, 64), (48, 80)}  # centre crop to x16
    assert all(15 < r["psnr_y"] < 60 and 0 < r["ssim_y"] < 1 and r["time_s"] > 0 for r in rows)
    with open(out / "per_image.csv") as f:
        assert len(list(csv.DictReader(f))) == 6

    summary = json.loads((out / "summary.json").read_text())
    assert summary["feature_extractor"] == "random test features (8-d)"
    assert "LPIPS" in summary["unavailable"] or summary["methods"][0]["lpips"] is not None
    bicubic = summary["methods"][0]
    assert bicubic["method"] == "bicubic" and bicubic["nfe"] == 0
    assert bicubic["fid"] is not None and bicubic["kid_subset"] == 3  # KID subset adapted to 3 images
    assert bicubic["patches"] == 2 * 2 + 2 * 2 + 2 * 1  # 32 px grid over HxW 64x80, 64x64, 80x48
    assert bicubic["patch_fid"] is not None
    report = (out / "report.md").read_text()
    assert "| bicubic |" in report and "| lanczos |" in report and "random test features" in report
    assert files["table"].count("\n") == 3


def test_harness_codec_methods_with_random_codec(hr_dir, tmp_path, features):
    from flowup import TAEF2Codec

    torch.manual_seed(0)
    config = EvalConfig(hr=[str(hr_dir)], methods=["psu", "codec-hr"], out=str(tmp_path / "o"), device="cpu",
                        limit=2, num_crops=1, patch_size=32)  # fmt: skip
    result = run_evaluation(config, feature_extractor=features, codec=TAEF2Codec().eval(), log=lambda _: None)
    assert [m.label for m in result.methods] == ["psu", "codec-hr"]
    assert all(len(m.rows) == 2 for m in result.methods)
    assert result.methods[0].summary["params"] > 0
    assert set(result.crops) == {result.image_names[0]}


def test_harness_reports_fid_unavailable_instead_of_dropping_it(hr_dir, tmp_path):
    config = EvalConfig(hr=[str(hr_dir)], methods=["bicubic"], out=str(tmp_path / "o"), device="cpu",
                        fid_features=str(tmp_path / "missing.pt"))  # fmt: skip
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        run_evaluation(config, log=lambda _: None)
    config.fid_features = "none"
    result = run_evaluation(config, log=lambda _: None)
    write_reports(result)
    assert "FID/KID" in result.unavailable and result.methods[0].summary["fid"] is None
    assert "FID/KID: unavailable" in (tmp_path / "o" / "report.md").read_text()


def test_duplicate_labels_are_rejected(hr_dir, tmp_path):
    config = EvalConfig(hr=[str(hr_dir)], methods=["bicubic", "bicubic"], out=str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="share a label"):
        run_evaluation(config, log=lambda _: None)


def test_config_file_and_unknown_keys(tmp_path, hr_dir):
    good = tmp_path / "good.yaml"
    good.write_text(f"hr: {hr_dir}\nmethods: [bicubic]\nscale: 2\npatch-size: 64\n")
    config = load_config(good, scale=None, limit=1)
    assert config.hr == [str(hr_dir)] and config.patch_size == 64 and config.limit == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("hr: x\nmethodz: [bicubic]\n")
    with pytest.raises(ValueError, match="unknown option.*methodz"):
        load_config(bad)


def test_cli_rejects_unknown_method(hr_dir, tmp_path, capsys):
    code = main(["run", "--hr", str(hr_dir), "--methods", "bicubic", "superres9000", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown method 'superres9000'" in err and "bicubic" in err
    assert not (tmp_path / "o").exists()


def test_cli_rejects_missing_folder(tmp_path, capsys):
    code = main(["run", "--hr", str(tmp_path / "nowhere"), "--methods", "bicubic", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_rejects_bad_scale_and_missing_config(tmp_path, hr_dir, capsys):
    assert main(["run", "--hr", str(hr_dir), "--methods", "bicubic", "--scale", "3"]) == 2
    assert "scale" in capsys.readouterr().err
    assert main(["run", "--config", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_cli_run_prints_the_table(hr_dir, tmp_path, capsys):
    out = tmp_path / "cli"
    code = main(["run", "--hr", str(hr_dir), "--methods", "bicubic", "lanczos", "--out", str(out),
                 "--device", "cpu", "--fid-features", "none", "--limit", "2"])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| bicubic |" in printed and "| lanczos |" in printed and "FID/KID: unavailable" in printed
    assert all((out / name).is_file() for name in REPORT_FILES)
    assert "python -m eval run --hr" in (out / "report.md").read_text()


def test_cli_run_with_a_flowup_model(hr_dir, tmp_path, tiny_pipeline_dir, capsys):
    out = tmp_path / "flowup"
    code = main(["run", "--hr", str(hr_dir), "--methods", "bicubic", "flowup:euler:2", "--model", str(tiny_pipeline_dir),
                 "--out", str(out), "--device", "cpu", "--fid-features", "none", "--limit", "1", "--repeats", "2"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    summary = {m["method"]: m for m in json.loads((out / "summary.json").read_text())["methods"]}
    assert summary["flowup:euler:2"]["nfe"] == 2 and summary["flowup:euler:2"]["params"] > 0
    assert summary["flowup:euler:2"]["time_per_mp_s"] > 0 and summary["flowup:euler:2"]["peak_mem_mib"] > 0
    assert "| flowup:euler:2 |" in capsys.readouterr().out


def test_default_feature_extractor_is_found_from_the_environment(hr_dir, tmp_path, monkeypatch):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 7, stride=8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    scripted = tmp_path / "features.pt"
    torch.jit.save(torch.jit.script(net), str(scripted))
    monkeypatch.setenv("FLOWUP_FID_FEATURES", str(scripted))
    config = EvalConfig(hr=[str(hr_dir)], methods=["bicubic"], out=str(tmp_path / "o"), device="cpu", patch_size=32)
    result = run_evaluation(config, log=lambda _: None)
    assert str(scripted) in result.feature_extractor
    assert "FID/KID" not in result.unavailable and result.methods[0].summary["fid"] is not None


def test_degrade_profiles_make_8_bit_inputs_seeded_per_image(hr_dir, tmp_path):
    from eval.data import list_images, prepare_image

    path = list_images([hr_dir])[0]
    clean = prepare_image(path, 2, hr_dir, degrade_profile="clean")
    assert torch.equal(clean.lr * 255, (clean.lr * 255).round())
    noisy = prepare_image(path, 2, hr_dir, degrade_profile="noise", seed=0)
    assert torch.equal(noisy.lr, prepare_image(path, 2, hr_dir, degrade_profile="noise", seed=0).lr)
    assert not torch.equal(noisy.lr, prepare_image(path, 2, hr_dir, degrade_profile="noise", seed=1).lr)
    assert not torch.equal(noisy.lr, clean.lr)
    with pytest.raises(ValueError, match="--degrade"):
        EvalConfig(hr=[str(hr_dir)], degrade="blurry")
    config = EvalConfig(hr=[str(hr_dir)], methods=["bicubic"], out=str(tmp_path / "o"), fid_features="none",
                        degrade="jpeg", patch_size=32)  # fmt: skip
    jpeg = run_evaluation(config).methods[0].summary["psnr_y"]
    config.degrade = "clean"
    assert run_evaluation(config).methods[0].summary["psnr_y"] > jpeg


def test_runtime_option_reaches_the_methods(hr_dir, tmp_path, monkeypatch):
    """``--runtime`` / ``runtime:`` picks what runs the flowup and PSU rows (checked like the CLI's)."""
    import eval.harness as harness

    with pytest.raises(ValueError, match="runtime"):
        EvalConfig(hr=[str(hr_dir)], runtime="tensorrt")
    seen = []
    real = harness.build_method
    monkeypatch.setattr(harness, "build_method", lambda spec, ctx: seen.append(ctx.runtime) or real(spec, ctx))
    config = EvalConfig(hr=[str(hr_dir)], methods=["bicubic"], out=str(tmp_path / "o"), device="cpu", limit=1,
                        fid_features="none", patch_size=32, runtime="onnx")  # fmt: skip
    run_evaluation(config, log=lambda _: None)
    assert seen == ["onnx"]
