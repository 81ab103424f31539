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
    monkeypatch.setattr("flowup.cli.upscale.MAX_OUTPUT_PIXELS", 400)
    big = _write_png(tmp_path / "big.png", 20, 20)
    code, _, err = _run(capsys, str(big), "-o", str(tmp_path / "out"), "--model", str(tiny_pipeline_dir))
    assert code == 1 and "too large" in _error_lines(err)[0]


def test_missing_model_says_to_pass_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("flowup.model_folder.DEFAULT_MODEL_DIR", tmp_path / "no-model-here")
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


# ------------------------------------------------------------------------------ hardening (issue 14)


def test_symlink_loops_are_one_line_errors_and_the_batch_goes_on(tmp_path, capsys, tiny_pipeline_dir):
    good = _write_png(tmp_path / "in" / "good.png")
    os.symlink(tmp_path / "loop_b.png", tmp_path / "loop_a.png")
    os.symlink(tmp_path / "loop_a.png", tmp_path / "loop_b.png")
    os.symlink(tmp_path / "in" / "loop2.png", tmp_path / "in" / "loop2.png")  # a loop inside the folder
    os.symlink(tmp_path / "missing.png", tmp_path / "in" / "dangling.png")
    code, out, err = _run(capsys, str(tmp_path / "loop_a.png"), str(tmp_path / "in"), str(tmp_path / "loop*.png"),
                          "-o", str(tmp_path / "out"), "--model", str(tiny_pipeline_dir))  # fmt: skip
    assert code == 1
    errors = _error_lines(err)
    assert "Traceback" not in err
    assert any("loop_a.png" in e and "symlink loop" in e for e in errors)
    assert any("loop2.png" in e and "symlink loop" in e for e in errors)
    assert any("dangling.png" in e and "broken symlink" in e for e in errors)
    assert any("loop_b.png" in e for e in errors)  # the glob reports it, not "no files match"
    assert os.listdir(tmp_path / "out") == ["good_x2.png"] and good.exists()


@pytest.mark.parametrize("case", ["file-as-folder", "under-a-file", "gif", "unwritable"])
def test_output_location_is_checked_once_before_any_work(tmp_path, capsys, tiny_pipeline_dir, monkeypatch, case):
    inputs = [str(_write_png(tmp_path / "a.png")), str(_write_png(tmp_path / "b.png", seed=1))]
    (tmp_path / "a_file").write_text("x")
    out = {"file-as-folder": tmp_path / "a_file", "under-a-file": tmp_path / "a_file" / "sub",
           "gif": tmp_path / "x.gif", "unwritable": tmp_path / "locked"}[case]  # fmt: skip
    if case == "gif":
        inputs = inputs[:1]
    if case == "unwritable":
        if os.geteuid() == 0:  # root writes anywhere: make the write probe fail instead
            import tempfile

            def refuse(*args, **kwargs):
                raise PermissionError(13, "Permission denied")

            monkeypatch.setattr(tempfile, "mkstemp", refuse)
        out.mkdir()
        out.chmod(0o500)
    calls = []
    monkeypatch.setattr("flowup.pipeline.FlowUpPipeline.__call__", lambda *a, **k: calls.append(1))
    code, _, err = _run(capsys, *inputs, "-o", str(out), "--model", str(tiny_pipeline_dir))
    assert code == 2 and not calls
    errors = _error_lines(err)
    assert len(errors) == 1 and "-o" in errors[0]
    assert {"gif": ".gif", "unwritable": "cannot write", "file-as-folder": "not a folder",
            "under-a-file": "not a folder"}[case] in errors[0]  # fmt: skip


def test_same_stem_inputs_are_named_apart(tmp_path, capsys, tiny_pipeline_dir):
    _write_png(tmp_path / "in" / "a.png")
    PIL.Image.new("RGB", (10, 6), "red").save(tmp_path / "in" / "a.jpg")
    PIL.Image.new("RGB", (10, 6), "blue").save(tmp_path / "in" / "b.jpg")
    code, _, err = _run(capsys, str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(tiny_pipeline_dir))
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "out")) == ["a_jpg_x2.png", "a_png_x2.png", "b_x2.png"]
    # the same name in two folders cannot be told apart: both fail up front, naming each other
    _write_png(tmp_path / "other" / "b.jpg")
    code, _, err = _run(capsys, str(tmp_path / "in" / "b.jpg"), str(tmp_path / "other" / "b.jpg"),
                        "-o", str(tmp_path / "out2"), "--model", str(tiny_pipeline_dir))  # fmt: skip
    errors = _error_lines(err)
    assert code == 1 and len(errors) == 2 and all("in/b.jpg" in e and "other/b.jpg" in e for e in errors)


def test_stale_temp_files_of_dead_runs_are_removed(tmp_path, capsys, tiny_pipeline_dir):
    import socket

    from flowup.image_io import TEMP_SUFFIX

    out = tmp_path / "out"
    out.mkdir()
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:32]
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".a_x2.png.flowup-{host}-{int(dead.stdout)}-abc123{TEMP_SUFFIX}"
    live = out / f".b_x2.png.flowup-{host}-{os.getpid()}-def456{TEMP_SUFFIX}"
    other_host = out / f".c_x2.png.flowup-someotherhost-1-ghi789{TEMP_SUFFIX}"
    unrelated = out / ".notes.tmp"
    for path in (stale, live, other_host, unrelated):
        path.write_bytes(b"partial")
    code, _, err = _run(capsys, str(_write_png(tmp_path / "a.png")), "-o", str(out), "--model", str(tiny_pipeline_dir))
    assert code == 0, err
    assert not stale.exists() and live.exists() and other_host.exists() and unrelated.exists()


def test_sigterm_removes_the_temporary_file_and_exits_130(tmp_path, tiny_pipeline_dir):
    """A run stopped by SIGTERM while writing cleans up as Ctrl-C does: no .tmp file is left."""
    import signal
    import time

    source = _write_png(tmp_path / "a.png")
    out = tmp_path / "out"
    probe = (
        "import os, signal, sys, time, PIL.Image\n"
        "from flowup.cli import main\n"
        "original = PIL.Image.Image.save\n"
        "def slow_save(self, fp, *a, **k):\n"
        "    fp.write(b'partial'); fp.flush(); print('WRITING', flush=True); time.sleep(60)\n"
        "PIL.Image.Image.save = slow_save\n"
        f"sys.exit(main(['upscale', {str(source)!r}, '-o', {str(out)!r}, '--model', {str(tiny_pipeline_dir)!r}, '-q']))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", probe], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "WRITING"
        assert [p.name for p in out.iterdir()], "the temporary file exists while writing"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, proc.stderr.read()
    time.sleep(0.1)
    assert os.listdir(out) == []


@pytest.mark.parametrize(
    "flags, message",
    [(["--seed", "-1"], "--seed"), (["--seed", str(2**64)], "--seed"), (["--quality", "0"], "--quality"),
     (["--quality", "101"], "--quality"), (["--suffix", "a/b"], "--suffix"), (["--steps", "x"], "--steps")],
)  # fmt: skip
def test_bad_flags_are_refused_at_parse_time(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as info:
        main(["upscale", "x.png", "-o", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and not (tmp_path / "out").exists()


def test_float16_on_cpu_is_refused_with_advice(tmp_path, capsys, tiny_pipeline_dir):
    code, _, err = _run(capsys, str(_write_png(tmp_path / "a.png")), "-o", str(tmp_path / "out"),
                        "--model", str(tiny_pipeline_dir), "--device", "cpu", "--dtype", "float16")  # fmt: skip
    errors = _error_lines(err)
    assert code == 2 and len(errors) == 1 and "bfloat16" in errors[0]
    assert os.listdir(tmp_path / "out") == []


def test_normal_run_prints_no_library_warnings(tmp_path, tiny_pipeline_dir):
    source = _write_png(tmp_path / "a.png")
    result = subprocess.run([sys.executable, "-m", "flowup", "upscale", str(source), "-o",
                             str(tmp_path / "out"), "--model", str(tiny_pipeline_dir), "-q"],
                            capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_one_progress_bar_moves_within_a_single_large_image(tmp_path, capsys, tiny_pipeline_dir, monkeypatch):
    """The bar counts output megapixels and the pipeline reports tiles and stages into it."""
    import tqdm

    updates: list[float] = []
    original = tqdm.tqdm.update

    def spy(self, n=1):
        if getattr(self, "unit", None) == "MP":  # the CLI's bar (the pipeline's own per-step bar is disabled but counts)
            updates.append(n)
        return original(self, n)

    monkeypatch.setattr(tqdm.tqdm, "update", spy)
    source = _write_png(tmp_path / "big.png", 48, 40)
    code, _, err = _run(capsys, str(source), "-o", str(tmp_path / "out"), "--model", str(tiny_pipeline_dir),
                        "--tile", "4", "--scale", "4")  # fmt: skip
    assert code == 0, err
    positive = [n for n in updates if n > 0]
    assert len(positive) > 10  # many steps within the one image
    assert sum(updates) == pytest.approx(48 * 40 * 16 / 1e6, rel=1e-6)
    assert "MP" in err


def test_detail_per_stage_at_x4_and_a_count_that_does_not_match(tmp_path, capsys, tiny_pipeline_dir):
    source = _write_png(tmp_path / "a.png", 10, 8)
    code, _, err = _run(capsys, str(source), "-o", str(tmp_path / "out"), "--model", str(tiny_pipeline_dir),
                        "--scale", "4", "--detail", "1,0.5")  # fmt: skip
    assert code == 0, err
    with PIL.Image.open(tmp_path / "out" / "a_x4.png") as image:
        assert image.size == (40, 32)
    code, _, err = _run(capsys, str(source), "-o", str(tmp_path / "two"), "--model", str(tiny_pipeline_dir),
                        "--scale", "2", "--detail", "1,0.5")  # fmt: skip
    assert code == 2 and "--scale 2 runs 1 stage" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "two").exists() or not any((tmp_path / "two").iterdir())
    with pytest.raises(SystemExit) as info:
        main(["upscale", str(source), "-o", str(tmp_path / "three"), "--detail", "1,x"])
    assert info.value.code == 2
    capsys.readouterr()
