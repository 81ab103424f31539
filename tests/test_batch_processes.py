"""``torchrun --nproc_per_node 2 -m flowup upscale``: two CPU processes (Accelerate's ``PartialState``
on gloo) split one folder; every output is written once, by one process, equal to the single-process output."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from flowup.runtimes import RUNTIMES

REPO = Path(__file__).resolve().parent.parent


def _folder(root: Path, count: int) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(count):
        PIL.Image.fromarray(rng.integers(0, 256, (12 + i, 16, 3), dtype=np.uint8)).save(root / f"img{i}.png")
    (root / "broken.png").write_bytes(b"not an image")
    return root


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(_free_port()), "-m", "flowup", "upscale", *args],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)  # fmt: skip


def test_two_processes_split_a_folder_and_match_one_process(tmp_path, tiny_pipeline_dir):
    images = _folder(tmp_path / "in", 5)
    common = ["--model", str(tiny_pipeline_dir), "--device", "cpu", "--seed", "3"]
    single = subprocess.run([sys.executable, "-m", "flowup", "upscale", str(images), "-o", str(tmp_path / "one"),
                             *common, "-q"], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)  # fmt: skip
    assert single.returncode == 1, single.stderr  # the broken file fails, the rest is written

    result = _launch(str(images), "-o", str(tmp_path / "two"), *common)
    assert result.returncode != 0  # the broken file is reported as a failure
    summary = re.search(r"(\d+) images upscaled .* by 2 processes \((\d+), (\d+)\), (\d+) failed", result.stdout)
    assert summary, result.stdout + result.stderr
    done, first, second, failed = map(int, summary.groups())
    assert done == first + second == 5 and first > 0 and second > 0 and failed == 1  # each image once
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "broken.png" in errors[0], result.stderr  # reported once, by its process
    names = sorted(os.listdir(tmp_path / "two"))
    assert names == sorted(os.listdir(tmp_path / "one")) == [f"img{i}_x2.png" for i in range(5)]
    for name in names:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()

    # resume: --skip-existing after a "killed" run (two outputs removed) writes only what is missing
    for name in names[:2]:
        (tmp_path / "two" / name).unlink()
    again = _launch(str(images), "-o", str(tmp_path / "two"), *common, "--skip-existing")
    assert re.search(r"2 images upscaled .*3 skipped", again.stdout), again.stdout + again.stderr
    for name in names:
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def _photo_crops(root: Path, count: int) -> Path:
    """``count`` 128² crops of the bundled photo: large enough that the thread count would change
    the kernels' sums (it did before flowup.models.thread_stable)."""
    root.mkdir(parents=True)
    photo = PIL.Image.open(REPO / "flowup" / "assets" / "grace_hopper_256.jpg").convert("RGB")
    for i in range(count):
        photo.crop((32 * i, 64, 32 * i + 128, 192)).save(root / f"crop{i}.png")
    return root


def test_two_processes_write_the_bytes_of_one_with_the_shipped_model(tmp_path):
    """The shipped model on this machine's default runtime: one process (all cores) and two
    (half the cores each) write the same bytes."""
    images = _photo_crops(tmp_path / "in", 2)
    single = subprocess.run([sys.executable, "-m", "flowup", "upscale", str(images), "-o", str(tmp_path / "one"),
                             "--device", "cpu", "-q"], capture_output=True, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)  # fmt: skip
    assert single.returncode == 0, single.stderr
    result = _launch(str(images), "-o", str(tmp_path / "two"), "--device", "cpu")
    assert result.returncode == 0 and "by 2 processes (1, 1)" in result.stdout, result.stdout + result.stderr
    for name in ("crop0_x2.png", "crop1_x2.png"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


@pytest.mark.parametrize("runtime", list(RUNTIMES))
def test_each_runtime_writes_the_same_bytes_under_one_and_two_threads(runtime):
    import torch

    from flowup.pipeline import FlowUpPipeline, default_model_path
    from flowup.runtimes import unavailable_reason

    pipe = FlowUpPipeline.from_pretrained(default_model_path(), runtime=runtime)
    pipe.set_progress_bar_config(disable=True)
    reason = unavailable_reason(runtime, pipe.flow, pipe.codec, pipe.device)
    if reason is not None:
        pytest.skip(f"{runtime} cannot run here: {reason}")
    photo = PIL.Image.open(REPO / "flowup" / "assets" / "grace_hopper_256.jpg").convert("RGB").crop((64, 64, 192, 192))
    threads, outputs = torch.get_num_threads(), []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            outputs.append(np.asarray(pipe(image=photo, generator=torch.Generator().manual_seed(0)).images[0]))
    finally:
        torch.set_num_threads(threads)
    assert np.array_equal(outputs[0], outputs[1])
