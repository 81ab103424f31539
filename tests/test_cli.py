"""``flowup upscale``: inputs, outputs, exit codes and one-line errors (tiny random model)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from flowup.cli import main

REPO = Path(__file__).resolve().parent.parent


def _write_png(path: Path, width: int = 20, height: int = 14, mode: str = "RGB", seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}.get(mode)
    shape = (height, width) if channels is None else (height, width, channels)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def _run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["upscale", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if "flowup: error:" in line]


def test_upscales_files_to_twice_the_size(tmp_path, capsys, tiny_pipeline_dir):
    a = _write_png(tmp_path / "in" / "a.png", 21, 13)
    b = _write_png(tmp_path / "in" / "b.png", 8, 9, mode="RGBA")
    code, out, err = _run(capsys, str(a), str(b), "-o", str(tmp_path / "out"), "--model", str(tiny_pipeline_dir))
    assert code == 0, err
    with PIL.Image.open(tmp_path / "out" / "a_x2.png") as image:
        assert image.size == (42, 26) and image.mode == "RGB"
    with PIL.Image.open(tmp_path / "out" / "b_x2.png") as image:
        assert image.size == (16, 18) and image.mode == "RGBA"
    assert "2 images upscaled" in out and "0 failed" in out and "MP" in out


def test_truncated_png_in_a_batch(tmp_path, capsys, tiny_pipeline_dir):
    good1 = _write_png(tmp_path / "in" / "good1.png")
    good2 = _write_png(tmp_path / "in" / "good2.png", seed=1)
    data = _write_png(tmp_path / "full.png", 64, 64).read_bytes()
    (tmp_path / "in" / "broken.png").write_bytes(data[: len(data) // 2])
    code, out, err = _run(capsys, str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tiny_pipeline_dir))
    assert code == 1
    errors = _error_lines(err)
    assert len(errors) == 1 and "broken.png" in errors[0]
    assert sorted(os.listdir(tmp_path / "out")) == ["good1_x2.png", "good2_x2.png"]
    assert "2 images upscaled" in out and "1 failed" in out
    assert good1.exists() and good2.exists()


def test_zero_byte_missing_and_unsupported_files(tmp_path, capsys, tiny_pipeline_dir):
    good = _write_png(tmp_path / "good.png")
    (tmp_path / "zero.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("hello")
    inputs = [str(good)] + [str(tmp_path / name) for name in ("zero.png", "missing.png", "text.png")]
    code, _, err = _run(capsys, *inputs, "-o", str(tmp_path / "out"), "--model", str(tiny_pipeline_dir))
    assert code == 1
    errors = _error_lines(err)
    assert len(errors) == 3
    assert "zero.png" in errors[0] and "empty" in errors[0]
    assert "missing.png" in errors[1] and "no such file" in errors[1]
    assert "text.png" in errors[2]
    assert os.listdir(tmp_path / "out") == ["good_x2.png"]


def test_absurdly_large_input(tmp_path, capsys, tiny_pipeline_dir, monkeypatch):
    monkeypatch.setattr("flowup.cli.MAX_OUTPUT_PIXELS", 400)
    big = _write_png(tmp_path / "big.png", 20, 20)
    code, _, err = _run(capsys, str(big), "-o", str(tmp_path / "out"), "--model", str(tiny_pipeline_dir))
    assert code == 1 and "too large" in _error_lines(err)[0]


def test_missing_model_says_to_pass_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("flowup.pipeline.DEFAULT_MODEL_DIR", tmp_path / "no-model-here")
    good = _write_png(tmp_path / "good.png")
    code, _, err = _run(capsys, str(good), "-o", str(tmp_path / "out"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "--model" in err
    code, _, err = _run(capsys, str(good), "-o", str(tmp_path / "out"), "--model", str(tmp_path / "nope"))
    assert code == 2 and "nope" in err
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_skip_existing(tmp_path, capsys, tiny_pipeline_dir):
    a = _write_png(tmp_path / "a.png")
    b = _write_png(tmp_path / "b.png", seed=2)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_x2.png").write_bytes(b"already here")
    code, out, _ = _run(capsys, str(a), str(b), "-o", str(tmp_path / "out"), "--skip-existing",
                        "--model", str(tiny_pipeline_dir))  # fmt: skip
    assert code == 0
    assert (tmp_path / "out" / "a_x2.png").read_bytes() == b"already here"
    assert (tmp_path / "out" / "b_x2.png").is_file()
    assert "1 skipped" in out


def test_glob_folder_format_suffix_and_scale(tmp_path, capsys, tiny_pipeline_dir):
    _write_png(tmp_path / "shots" / "one.png")
    _write_png(tmp_path / "shots" / "two.png", seed=3)
    _write_png(tmp_path / "shots" / "skip.txt.png", seed=4).rename(tmp_path / "shots" / "notes.txt")
    PIL.Image.new("RGB", (10, 6), "red").save(tmp_path / "photo.jpg")
    code, _, err = _run(capsys, str(tmp_path / "shots"), str(tmp_path / "*.jpg"), "-o", str(tmp_path / "out"),
                        "--format", "same", "--scale", "4", "--suffix=-big", "--steps", "1", "--quiet",
                        "--model", str(tiny_pipeline_dir))  # fmt: skip
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "out")) == ["one-big.png", "photo-big.jpg", "two-big.png"]
    with PIL.Image.open(tmp_path / "out" / "photo-big.jpg") as image:
        assert image.size == (40, 24) and image.format == "JPEG"
    code, _, err = _run(capsys, str(tmp_path / "nothing*.png"), "-o", str(tmp_path / "out"),
                        "--model", str(tiny_pipeline_dir))  # fmt: skip
    assert code == 1 and "no files match" in err


def test_single_output_file_and_webp(tmp_path, capsys, tiny_pipeline_dir):
    a = _write_png(tmp_path / "a.png", 10, 10)
    code, _, _ = _run(capsys, str(a), "-o", str(tmp_path / "result.webp"), "--model", str(tiny_pipeline_dir))
    assert code == 0
    with PIL.Image.open(tmp_path / "result.webp") as image:
        assert image.format == "WEBP" and image.size == (20, 20)
    b = _write_png(tmp_path / "b.png", 10, 10)
    code, _, err = _run(capsys, str(a), str(b), "-o", str(tmp_path / "result.png"), "--model", str(tiny_pipeline_dir))
    assert code == 2 and "folder" in err


def test_same_seed_same_file(tmp_path, capsys, tiny_pipeline_dir):
    a = _write_png(tmp_path / "a.png")
    for out in ("o1", "o2"):
        assert _run(capsys, str(a), "-o", str(tmp_path / out), "--model", str(tiny_pipeline_dir))[0] == 0
    assert (tmp_path / "o1" / "a_x2.png").read_bytes() == (tmp_path / "o2" / "a_x2.png").read_bytes()
    _run(capsys, str(a), "-o", str(tmp_path / "o3"), "--seed", "7", "--model", str(tiny_pipeline_dir))
    assert (tmp_path / "o3" / "a_x2.png").read_bytes() != (tmp_path / "o1" / "a_x2.png").read_bytes()


def test_no_half_written_output_and_no_temp_files(tmp_path, capsys, tiny_pipeline_dir, monkeypatch):
    a = _write_png(tmp_path / "a.png")
    b = _write_png(tmp_path / "b.png", seed=1)
    original = PIL.Image.Image.save

    def save_that_fails_for_b(self, fp, *args, **kwargs):
        if self.size == (40, 28) and getattr(save_that_fails_for_b, "calls", 0) == 1:
            fp.write(b"half an image")
            raise OSError("No space left on device")
        save_that_fails_for_b.calls = getattr(save_that_fails_for_b, "calls", 0) + 1
        return original(self, fp, *args, **kwargs)

    monkeypatch.setattr(PIL.Image.Image, "save", save_that_fails_for_b)
    code, _, err = _run(capsys, str(a), str(b), "-o", str(tmp_path / "out"), "--model", str(tiny_pipeline_dir))
    assert code == 1
    assert "b.png" in _error_lines(err)[0] and "No space left" in err
    assert os.listdir(tmp_path / "out") == ["a_x2.png"]


def test_out_of_memory_gives_advice(tmp_path, capsys, tiny_pipeline_dir, monkeypatch):
    import torch

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr("flowup.pipeline.FlowUpPipeline.__call__", oom)
    a = _write_png(tmp_path / "a.png")
    code, _, err = _run(capsys, str(a), "-o", str(tmp_path / "out"), "--model", str(tiny_pipeline_dir))
    assert code == 1
    line = _error_lines(err)[0]
    assert "a.png" in line and "out of memory" in line and "--tile" in line


def test_back_projection_flag(tmp_path, capsys, tiny_pipeline_dir):
    """--back-projection N pulls the output towards downsample(output) = input; 0 (the tiny model's
    default) leaves it as decoded; a negative N is a usage error."""
    from flowup.image_io import load_image
    from flowup.resample import downsample

    a = _write_png(tmp_path / "a.png", 24, 16)
    errors = {}
    for steps in ("0", "5"):
        out = tmp_path / f"o{steps}"
        assert _run(capsys, str(a), "-o", str(out), "--back-projection", steps, "--model", str(tiny_pipeline_dir))[0] == 0
        back = downsample(load_image(out / "a_x2.png").rgb[None], 2)
        errors[steps] = (back - load_image(a).rgb[None]).abs().mean().item()
    assert errors["5"] < 0.5 * errors["0"]
    with pytest.raises(SystemExit) as info:
        main(["upscale", str(a), "-o", str(tmp_path / "bad"), "--back-projection", "-1"])
    assert info.value.code == 2
    capsys.readouterr()


def test_usage_errors_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["upscale", "x.png", "-o", str(tmp_path), "--scale", "3"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["upscale", "x.png"])  # no -o
    assert info.value.code == 2
    assert main([]) == 2
    capsys.readouterr()


def test_python_dash_m_help():
    result = subprocess.run([sys.executable, "-m", "flowup", "upscale", "--help"], capture_output=True, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)  # fmt: skip
    assert result.returncode == 0
    assert "examples:" in result.stdout and "--tile" in result.stdout and "--skip-existing" in result.stdout


@pytest.mark.parametrize("command", [["--help"], ["upscale", "--help"], ["export-onnx", "--help"]])
def test_help_imports_neither_torch_nor_diffusers(command):
    probe = ("import sys\nfrom flowup.cli import main\n"
             f"try:\n    main({command!r})\nexcept SystemExit:\n    pass\n"
             "print('LOADED', sorted(m for m in ('torch', 'diffusers', 'numpy') if m in sys.modules))")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "LOADED []"


def test_export_onnx_writes_graphs_that_run(tmp_path, capsys, tiny_pipeline_dir):
    import onnxruntime as ort

    out = tmp_path / "onnx"
    assert main(["export-onnx", str(tiny_pipeline_dir), str(out)]) == 0
    printed = capsys.readouterr().out
    for name in ("flow", "encoder", "decoder", "encoder_local", "decoder_local"):
        assert (out / f"{name}.onnx").is_file() and f"{name}.onnx" in printed
    decoder = ort.InferenceSession(str(out / "decoder.onnx"), providers=["CPUExecutionProvider"])
    channels = decoder.get_inputs()[0].shape[1]
    images = decoder.run(None, {decoder.get_inputs()[0].name: np.zeros((2, channels, 3, 5), np.float32)})[0]
    assert images.shape == (2, 3, 24, 40)  # dynamic batch and spatial sizes, x8 codec


def test_export_onnx_usage_errors(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert main(["export-onnx", str(tmp_path / "no-model"), str(tmp_path / "out")]) == 2
    assert main(["export-onnx", str(tmp_path), str(tmp_path / "file")]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 2 and "no-model" in errors[0] and "not a folder" in errors[1]
    assert not (tmp_path / "out").exists()


def test_runtime_onnx_and_torch_write_the_same_image(tmp_path, capsys, tiny_pipeline_dir):
    source = _write_png(tmp_path / "a.png", 19, 12)
    outputs = {}
    for runtime in ("onnx", "torch"):
        target = tmp_path / f"{runtime}.png"
        code, _, err = _run(capsys, str(source), "-o", str(target), "--model", str(tiny_pipeline_dir),
                            "--runtime", runtime, "--threads", "1", "--seed", "3")  # fmt: skip
        assert code == 0, err
        outputs[runtime] = np.asarray(PIL.Image.open(target), dtype=np.int16)
    assert outputs["onnx"].shape == (24, 38, 3)
    assert np.abs(outputs["onnx"] - outputs["torch"]).max() <= 1  # float rounding, then 8-bit


def test_runtime_onnx_refused_where_it_cannot_run(tmp_path, capsys, tiny_pipeline_dir):
    source = _write_png(tmp_path / "a.png")
    code, _, err = _run(capsys, str(source), "-o", str(tmp_path / "out.png"), "--model", str(tiny_pipeline_dir),
                        "--runtime", "onnx", "--dtype", "bfloat16", "--device", "cpu")  # fmt: skip
    assert code == 2
    errors = _error_lines(err)
    assert len(errors) == 1 and "--runtime onnx" in errors[0] and "float32" in errors[0]
    assert not (tmp_path / "out.png").exists()
