"""Few-step students (train/distill.py), the regression baseline (train/regression.py) and the
training cost they record (train/cost.py, train/export.py)."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from conftest import make_tiny_pipeline
from flowup.flow import noise_source
from flowup.resample import upsample
from train.distill import (
    DistillationModule,
    distillation_loss,
    prepare_teacher_targets,
    student_endpoint,
    teacher_endpoint,
)
from train.latent_cache import CacheRecipe, prepare_cache

TEACHER_HOURS = 1.5


class CondOnlyVelocity(nn.Module):
    """``v(x, t, c) = conv(c)``: constant along every trajectory, so one Euler step is exact."""

    def __init__(self, channels: int = 32):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.conv(cond)


class StateDependentVelocity(CondOnlyVelocity):
    """``v(x, t, c) = conv(c) - x``: curved in time, Euler with few steps is not exact."""

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.conv(cond) - x


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A tiny teacher folder (with a training.json), a latent cache made with its codec, and a target cache."""
    root = tmp_path_factory.mktemp("distill")
    teacher = root / "teacher"
    pipe = make_tiny_pipeline(seed=1, noise_alpha=0.8, default_num_inference_steps=4)
    pipe.save_pretrained(teacher)
    (teacher / "training.json").write_text(json.dumps({"wall_clock_hours": TEACHER_HOURS, "hardware": "1x TestGPU"}))
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((64, 72, 3)) * 255).astype("uint8")).save(images / f"{i}.png")
    recipe = CacheRecipe(image_dirs=[str(images)], codec=str(teacher / "codec"), crop_size=64, crops_per_image=2,
                         extra_crop_min_side=10_000, seed=1)  # fmt: skip
    prepare_cache(recipe, root / "cache", codec=pipe.codec, progress=False)
    count = prepare_teacher_targets(teacher, root / "cache", root / "targets", num_steps=3, limit=5, batch_size=2,
                                    shard_size=3, progress=False)  # fmt: skip
    return {"root": root, "teacher": teacher, "images": images, "cache": root / "cache", "targets": root / "targets",
            "pairs": count, "pipe": pipe}  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The objective


def test_loss_is_zero_for_a_time_constant_teacher_and_positive_otherwise():
    torch.manual_seed(0)
    cond, x0 = torch.randn(2, 32, 4, 4), torch.randn(2, 32, 4, 4)
    teacher = CondOnlyVelocity()
    for solver, steps in (("euler", 40), ("rk4", 4), ("dopri5", 1)):
        target, nfe = teacher_endpoint(teacher, x0, cond, steps, solver)
        assert torch.allclose(target, x0 + teacher.conv(cond), atol=1e-5)
        for student_steps in (1, 2):
            assert distillation_loss(teacher, x0, cond, target, student_steps).item() < 1e-10
    assert nfe > 1  # the adaptive solver was counted

    other = CondOnlyVelocity()  # a different student
    assert distillation_loss(other, x0, cond, target, 1).item() > 1e-3

    curved = StateDependentVelocity()
    curved.conv.load_state_dict(teacher.conv.state_dict())
    target, _ = teacher_endpoint(curved, x0, cond, 40, "euler")
    one, two = (distillation_loss(curved, x0, cond, target, k).item() for k in (1, 2))
    assert one > 1e-3 and two > 1e-3 and two < one  # 2 Euler steps of the same field come closer


def test_student_gradients_flow_through_both_unrolled_steps():
    torch.manual_seed(0)
    cond, x0 = torch.randn(1, 32, 4, 4), torch.randn(1, 32, 4, 4)
    student = StateDependentVelocity()
    out = student_endpoint(student, x0, cond, 2)
    # Two Euler steps of v = conv(c) - x on the grid 0, 1/2, 1, written out:
    v0 = student.conv(cond) - x0
    x_half = x0 + 0.5 * v0
    assert torch.allclose(out, x_half + 0.5 * (student.conv(cond) - x_half), atol=1e-6)
    out.sum().backward()
    assert student.conv.weight.grad is not None and student.conv.weight.grad.abs().sum() > 0


def test_student_starts_as_the_teacher_and_inherits_its_settings(workspace):
    module = DistillationModule(teacher=str(workspace["teacher"]), student_steps=2, teacher_steps=3)
    teacher_state = workspace["pipe"].flow.state_dict()
    assert all(torch.equal(v, teacher_state[k]) for k, v in module.model.state_dict().items())
    assert module.model is not module.teacher and all(p.requires_grad for p in module.model.parameters())
    assert not any(p.requires_grad for p in module.teacher.parameters())
    assert not any(k.startswith("_teacher") or "teacher" in k for k in module.state_dict())  # not checkpointed
    hp = module.hparams
    assert hp.noise_alpha == pytest.approx(0.8) and list(hp.block_out_channels) == [32, 32]
    assert hp.norm_num_groups == 8 and hp.default_num_inference_steps == 2 and list(hp.val_steps) == [2]
    with pytest.raises(ValueError, match="scale"):
        DistillationModule(teacher=str(workspace["teacher"]), scale=4)
    with pytest.raises(FileNotFoundError, match="model_index"):
        DistillationModule(teacher=str(workspace["images"]))


def test_on_the_fly_targets_are_the_teachers_ode_end_points(workspace):
    module = DistillationModule(teacher=str(workspace["teacher"]), student_steps=1, teacher_steps=3)
    cond = torch.randn(2, 32, 4, 4)
    torch.manual_seed(5)
    x0, target = module.teacher_targets({"src": cond, "hr": cond})
    torch.manual_seed(5)
    expected_x0 = noise_source(cond, 0.8, noise=torch.randn_like(cond))
    assert torch.allclose(x0, expected_x0)
    assert torch.allclose(target, teacher_endpoint(module.teacher, x0, cond, 3, "euler")[0])
    assert module.teacher_nfe_total == 2 * 3


# ---------------------------------------------------------------------------------------------
# Target cache


def test_target_cache_holds_the_teacher_end_points_and_its_cost(workspace):
    from safetensors.torch import load_file

    targets = workspace["targets"]
    shards = sorted(targets.glob("shard-*.safetensors"))
    assert workspace["pairs"] == 5 and len(shards) == 2  # shard_size 3
    tensors = load_file(str(shards[0]))
    assert set(tensors) == {"src", "hr", "noise", "target"} and tensors["target"].shape == (3, 32, 8, 8)
    flow = workspace["pipe"].flow
    cond = tensors["src"].float()
    x0 = noise_source(cond, 0.8, noise=tensors["noise"].float())
    expected, _ = teacher_endpoint(flow, x0, cond, 3, "euler")
    assert torch.allclose(tensors["target"].float(), expected, atol=2e-2)  # stored as float16
    recipe = json.loads((targets / "recipe.json").read_text())
    info = recipe["teacher_targets"]
    assert recipe["scale"] == 2 and info["pairs"] == 5 and info["teacher_steps"] == 3
    assert info["teacher_nfe_total"] == 5 * 3 and info["wall_clock_hours"] > 0 and info["hardware"]
    # A rerun with the same settings resumes (nothing to do); other settings are refused.
    before = shards[0].stat().st_mtime_ns
    prepare_teacher_targets(workspace["teacher"], workspace["cache"], targets, num_steps=3, limit=5, batch_size=2,
                            shard_size=3, progress=False)  # fmt: skip
    assert shards[0].stat().st_mtime_ns == before
    with pytest.raises(ValueError, match="other settings"):
        prepare_teacher_targets(workspace["teacher"], workspace["cache"], targets, num_steps=4, limit=5,
                                shard_size=3, progress=False)  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Through the CLI, exported, loaded


def _config(run: Path, model: dict, cache: Path, max_steps: int = 2, val_dirs: list[str] | None = None) -> Path:
    config = {
        "seed_everything": 0,
        "model": model,
        "data": {"cache_dir": str(cache), "latent_size": 4, "batch_size": 2, "samples_per_epoch": 4,
                 "val_dirs": val_dirs, "val_crop": 64, "val_limit": 1},
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_steps": max_steps, "val_check_interval": max_steps,
            "check_val_every_n_epoch": None, "log_every_n_steps": 1, "num_sanity_val_steps": 0,
            "default_root_dir": str(run), "enable_progress_bar": False, "enable_model_summary": False,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run)}},
            "callbacks": [
                {"class_path": "train.cost.TrainingCost"},
                {"class_path": "train.ema.WarmupEMA", "init_args": {"decay": 0.99}},
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": str(run / "ckpt"), "save_last": True}},
            ],
        },
    }  # fmt: skip
    run.mkdir(parents=True, exist_ok=True)
    path = run / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("student_steps", [1, 2])
def test_students_train_through_the_cli_and_export_as_pipelines(workspace, tmp_path, student_steps):
    from flowup import FlowUNet, FlowUpPipeline
    from train.cli import cli_main
    from train.export import export_checkpoint

    model = {"class_path": "train.distill.DistillationModule",
             "init_args": {"teacher": str(workspace["teacher"]), "student_steps": student_steps, "teacher_steps": 3,
                           "warmup_steps": 1, "lr": 1e-3}}  # fmt: skip
    val_dirs = [str(workspace["images"])] if student_steps == 2 else None
    cli = cli_main(["fit", "--config", str(_config(tmp_path / "run", model, workspace["targets"], val_dirs=val_dirs))])
    assert cli.trainer.global_step == 2 and isinstance(cli.model, DistillationModule)
    if val_dirs:
        metrics = next((tmp_path / "run").rglob("metrics.csv")).read_text()
        assert f"val/psnr_{student_steps}step" in metrics

    out = export_checkpoint(tmp_path / "run" / "ckpt" / "last.ckpt", tmp_path / "student", dtype=torch.float32)
    pipe = FlowUpPipeline.from_pretrained(out)
    pipe.set_progress_bar_config(disable=True)
    assert isinstance(pipe.flow, FlowUNet)
    assert pipe.config.default_num_inference_steps == student_steps and pipe.config.default_solver == "euler"
    assert pipe.config.noise_alpha == pytest.approx(0.8)
    result = pipe(image=torch.rand(1, 3, 16, 16), output_type="pt", generator=torch.Generator().manual_seed(0))
    assert result.images.shape == (1, 3, 32, 32) and result.nfe == student_steps
    teacher_weight = workspace["pipe"].flow.state_dict()["unet.conv_in.weight"]
    assert not torch.equal(pipe.flow.state_dict()["unet.conv_in.weight"], teacher_weight)  # it trained

    cost = json.loads((out / "training.json").read_text())
    stages = {s["stage"]: s for s in cost["stages"]}
    assert set(stages) == {"teacher training", "teacher targets", "student training"}
    assert stages["teacher targets"]["teacher_nfe_total"] == 5 * 3
    assert stages["student training"]["wall_clock_hours"] > 0
    expected = TEACHER_HOURS + sum(stages[k]["wall_clock_hours"] for k in ("teacher targets", "student training"))
    assert cost["wall_clock_hours"] == pytest.approx(expected, abs=1e-3) and cost["wall_clock_hours"] > TEACHER_HOURS
    assert "1x TestGPU" in cost["hardware"] and "CPU" in cost["hardware"]
    assert cost["student_steps"] == student_steps


def test_regression_baseline_exports_one_noiseless_step(workspace, tmp_path):
    from flowup import FlowUpPipeline
    from train.cli import cli_main
    from train.export import export_checkpoint
    from train.regression import RegressionModule, regression_prediction

    model = {"class_path": "train.regression.RegressionModule",
             "init_args": {"block_out_channels": [32, 32], "layers_per_block": 1, "norm_num_groups": 8,
                           "codec": str(workspace["teacher"] / "codec"), "warmup_steps": 1, "lr": 1e-2}}  # fmt: skip
    cli = cli_main(["fit", "--config", str(_config(tmp_path / "run", model, workspace["cache"], max_steps=3))])
    assert isinstance(cli.model, RegressionModule)
    out = export_checkpoint(tmp_path / "run" / "ckpt" / "last.ckpt", tmp_path / "regression", dtype=torch.float32)
    pipe = FlowUpPipeline.from_pretrained(out, runtime="torch")  # compared with torch's exact math below
    pipe.set_progress_bar_config(disable=True)
    assert pipe.config.noise_alpha == 1.0 and pipe.config.default_num_inference_steps == 1
    assert pipe.flow.state_dict()["unet.conv_out.weight"].abs().sum() > 0  # it trained off the zero init

    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    # Different seeds, same output: there is no noise.
    outputs = [pipe(image=lr, output_type="pt", generator=torch.Generator().manual_seed(s)) for s in (0, 1)]
    assert outputs[0].nfe == 1 and torch.equal(outputs[0].images, outputs[1].images)
    with torch.no_grad():
        src = pipe.codec.encode(upsample(lr, 2))
        expected = pipe.codec.decode(regression_prediction(pipe.flow, src)).float()
    assert torch.allclose(outputs[0].images, expected, atol=1e-5)

    cost = json.loads((out / "training.json").read_text())
    assert cost["wall_clock_hours"] > 0 and cost["hardware"].startswith("CPU")
    assert cost["stages"][0]["global_step"] == 3 and cost["hyper_parameters"]["noise_alpha"] == 1.0


# ---------------------------------------------------------------------------------------------
# Recipes and the cost callback


@pytest.mark.parametrize("recipe", ["distill_1step", "distill_2step", "regression"])
def test_recipes_build(workspace, tmp_path, recipe):
    from lightning.pytorch.callbacks import Timer

    from train.cli import cli_main
    from train.cost import TrainingCost

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "configs" / "train" / f"{recipe}.yaml").read_text())
    args = ["--config", str(root / "configs" / "train" / f"{recipe}.yaml"), "--data.val_dirs", "null",
            "--trainer.default_root_dir", str(tmp_path)]  # fmt: skip
    if recipe.startswith("distill"):
        args += ["--model.init_args.teacher", str(workspace["teacher"]), "--data.cache_dir", str(workspace["targets"])]
    cli = cli_main(args, run=False)
    assert type(cli.model).__name__ == config["model"]["class_path"].rsplit(".", 1)[1]
    assert cli.model.hparams.default_num_inference_steps == config["model"]["init_args"].get("student_steps", 1)
    assert any(type(cb) is TrainingCost for cb in cli.trainer.callbacks)
    assert any(type(cb) is Timer for cb in cli.trainer.callbacks)  # max_time is honoured beside TrainingCost


def test_training_cost_adds_up_over_resumes():
    from train.cost import TrainingCost, combine_costs

    callback = TrainingCost()
    callback.load_state_dict({"seconds": 3600.0})  # as restored from a checkpoint
    callback.on_train_start(None, None)
    callback.on_train_end(None, None)
    assert 3600.0 <= callback.state_dict()["seconds"] < 3601.0
    total = combine_costs([{"stage": "a", "wall_clock_hours": 1.0, "hardware": "X"},
                           {"stage": "b", "wall_clock_hours": None, "hardware": "Y"},
                           {"stage": "c", "wall_clock_hours": 0.5, "hardware": "X"}])  # fmt: skip
    assert total["wall_clock_hours"] == 1.5 and total["hardware"] == "X; Y" and total["unknown"] == ["b"]


def test_cpu_hardware_names_the_threads_torch_uses(monkeypatch):
    from train.cost import describe_hardware

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert describe_hardware("cpu").endswith("(1 of 4 threads)")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert describe_hardware("cpu").endswith("(4 threads)")
