"""gpu/train.sh, the prepared GPU training run, end to end in its CPU dry run, and gpu/join_run.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "gpu"))

from join_run import join_run, split_weights  # noqa: E402


@pytest.mark.parametrize("scale", [2, 4])
def test_gpu_train_dry_run_returns_a_model_within_the_device_limits(tmp_path, scale):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "FLOWUP_GPU_WORK": str(tmp_path / "work")}
    proc = subprocess.run(["bash", "gpu/train.sh", "--dry-run", "--scale", str(scale)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    files = sorted(p for p in out.iterdir() if p.is_file())
    assert 3 <= len(files) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in files)  # what may come back
    assert "model" in log and "gaussian" in log  # the loss-by-t table was printed
    model = join_run(out, tmp_path / "model")
    for name in ("model_index.json", "training.json", "loss_by_t.txt", "score.txt", "train_metrics.csv"):
        assert (model / name).is_file(), name
    # x2 trains the clean end with the decoded-image loss (MODEL_CARD.md item 23); x4 with the velocity loss alone.
    hyper = json.loads((model / "training.json").read_text())["hyper_parameters"]
    assert hyper.get("decoded_loss_weight", 0.0) == (10.0 if scale == 2 else 0.0)
    assert "train/decoded_l1" in (model / "train_metrics.csv").read_text().splitlines()[0] or scale == 4
    from flowup import FlowUpPipeline

    pipe = FlowUpPipeline.from_pretrained(model, runtime="torch")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.default_back_projection_steps == 5 and pipe.config.scale_factor == scale
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert pipe(image=image, scale=scale, output_type="pt").images.shape == (1, 3, 16 * scale, 16 * scale)


def test_gpu_train_rejects_a_scale_it_has_no_recipe_for(tmp_path):
    proc = subprocess.run(["bash", "gpu/train.sh", "--dry-run", "--scale", "3"], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "OUT": str(tmp_path / "out")})  # fmt: skip
    assert proc.returncode == 2 and "--scale must be 2 or 4" in proc.stderr


def test_split_and_join_check_every_part(tmp_path):
    model = tmp_path / "model"
    (model / "flow").mkdir(parents=True)
    data = os.urandom(3 * 2**20 + 17)
    (model / "flow" / "diffusion_pytorch_model.safetensors").write_bytes(data)
    out = tmp_path / "out"
    files = split_weights(model, out, part_mib=1)
    assert len(files) == 5  # 4 parts + weights.json
    assert json.loads((out / "weights.json").read_text())["flow/diffusion_pytorch_model.safetensors"]["bytes"] == len(data)
    joined = join_run(out, tmp_path / "joined")
    assert (joined / "flow" / "diffusion_pytorch_model.safetensors").read_bytes() == data
    damaged = bytearray((out / "weights0.part01").read_bytes())
    damaged[5] ^= 1
    (out / "weights0.part01").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="SHA-256"):
        join_run(out, tmp_path / "again")
    assert not (tmp_path / "again").exists() and not (tmp_path / "again.joining").exists()
    (out / "weights0.part03").unlink()
    with pytest.raises(FileNotFoundError, match="part03"):
        join_run(out, tmp_path / "again")
