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
