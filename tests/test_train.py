"""Training: latent cache, Lightning fit, resume, DDP on gloo, export (train/)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from flowup.codecs import TAEF2Codec
from flowup.models import FlowUNet
from train.latent_cache import CacheRecipe, LatentPairDataset, prepare_cache

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Tiny photos (one corrupt), a random saved codec, and a latent cache made from them."""
    root = tmp_path_factory.mktemp("train")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray((rng.random((80 + 8 * i, 96, 3)) * 255).astype("uint8")).save(images / f"{i}.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    torch.manual_seed(0)
    codec = TAEF2Codec().eval()
    codec.save_pretrained(root / "codec")
    recipe = CacheRecipe(image_dirs=[str(images)], codec=str(root / "codec"), crop_size=64, crops_per_image=2,
                         extra_crop_min_side=10_000, seed=1)
    written = prepare_cache(recipe, root / "cache", codec=codec, shard_size=4, batch_size=3, progress=False)
    return {"root": root, "images": images, "codec": root / "codec", "cache": root / "cache", "written": written}


def test_prepare_cache_skips_bad_files_and_records_recipe(workspace):
    cache = workspace["cache"]
    assert workspace["written"] == 10  # 5 readable images x 2 crops; the corrupt file skipped
    shards = sorted(cache.glob("shard-*.safetensors"))
    assert len(shards) >= 2 and not list(cache.glob("*.tmp"))  # shard_size=4: several shards
    assert sum(load_file(str(s))["hr"].shape[0] for s in shards) == 10
    tensors = load_file(str(shards[0]))
    assert tensors["hr"].shape[1:] == (32, 8, 8) and tensors["hr"].dtype == torch.float16
    assert tensors["src"].shape == tensors["hr"].shape
    assert json.loads((cache / "recipe.json").read_text())["crop_size"] == 64
    assert not torch.equal(tensors["hr"], tensors["src"])


def test_prepare_cache_resumes_an_interrupted_run(workspace, tmp_path):
    """A killed run leaves whole shards (and maybe a .tmp); --resume finishes it to the same cache."""
    import shutil

    full = sorted(workspace["cache"].glob("shard-*.safetensors"))
    part = tmp_path / "part"
    part.mkdir()
    shutil.copy(workspace["cache"] / "recipe.json", part)
    shutil.copy(full[0], part)
    (part / "shard-00001.tmp").write_bytes(b"half-written")
    recipe = CacheRecipe(image_dirs=[str(workspace["images"])], codec=str(workspace["codec"]), crop_size=64,
                         crops_per_image=2, extra_crop_min_side=10_000, seed=1)
    codec = TAEF2Codec.from_pretrained(workspace["codec"]).eval()
    with pytest.raises(FileExistsError, match="--resume"):
        prepare_cache(recipe, part, codec=codec, shard_size=4, batch_size=3, progress=False)
    with pytest.raises(ValueError, match="differs in seed"):
        prepare_cache(CacheRecipe(**{**recipe.__dict__, "seed": 2}), part, codec=codec, shard_size=4,
                      resume=True, progress=False)
    assert prepare_cache(recipe, part, codec=codec, shard_size=4, batch_size=2, progress=False, resume=True) == 10
    resumed = sorted(part.glob("shard-*.safetensors"))
    assert [s.name for s in resumed] == [s.name for s in full] and not list(part.glob("*.tmp"))
    for a, b in zip(full, resumed):
        x, y = load_file(str(a)), load_file(str(b))
        assert all(torch.allclose(x[k].float(), y[k].float(), atol=2e-3) for k in ("hr", "src"))


def test_prepare_cli_refuses_a_used_folder(workspace, capsys):
    from train.prepare_cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--images", str(workspace["images"]), "--out", str(workspace["cache"]), "--codec",
              str(workspace["codec"]), "--crop-size", "64"])
    assert exit_info.value.code == 2 and "already holds" in capsys.readouterr().err


def test_latent_dataset_random_subcrops(workspace):
    data = LatentPairDataset(workspace["cache"], latent_size=4, samples_per_epoch=20)
    assert len(data) == 20
    torch.manual_seed(0)
    items = [data[i] for i in range(20)]
    assert items[0]["src"].shape == (32, 4, 4) and items[0]["hr"].dtype == torch.float32
    assert len({tuple(it["hr"].flatten()[:4].tolist()) for it in items}) > 10
    with pytest.raises(ValueError):
        LatentPairDataset(workspace["cache"], latent_size=16)
    with pytest.raises(FileNotFoundError, match="prepare"):
        LatentPairDataset(workspace["root"] / "images")


def test_several_caches_are_pooled(workspace, tmp_path):
    """A list of cache folders pools their pairs; the residual statistics cover all of them."""
    from train.datamodule import LatentPairDataModule
    from train.latent_cache import residual_statistics

    second = tmp_path / "second"
    second.mkdir()
    shard = load_file(str(sorted(workspace["cache"].glob("shard-*.safetensors"))[0]))
    shifted = {"hr": shard["hr"] + 1, "src": shard["src"]}  # other pairs: residuals moved by +1
    save_file(shifted, str(second / "shard-00000.safetensors"))
    (second / "recipe.json").write_text(json.dumps({"scale": 2}))
    one = LatentPairDataset(workspace["cache"], latent_size=4)
    both = LatentPairDataset([workspace["cache"], second], latent_size=4)
    assert len(both.hr) == len(one.hr) + len(shifted["hr"]) and len(both.recipes) == 2
    mean, var = residual_statistics([workspace["cache"], second])
    residual = torch.cat([one.hr - one.src, shifted["hr"] - shifted["src"]]).double().transpose(0, 1).flatten(1)
    assert torch.allclose(torch.tensor(mean), residual.mean(1).float(), atol=1e-4)
    assert torch.allclose(torch.tensor(var), residual.var(1, unbiased=False).float(), rtol=1e-3)
    (second / "recipe.json").write_text(json.dumps({"scale": 4}))
    with pytest.raises(ValueError, match="scale 4"):
        LatentPairDataModule([str(workspace["cache"]), str(second)], latent_size=4).setup("fit")
    with pytest.raises(FileNotFoundError, match="prepare"):
        LatentPairDataset([workspace["cache"], tmp_path / "empty"])


def _config(workspace, run: Path, max_steps: int, **trainer) -> Path:
    config = {
        "seed_everything": 0,
        "model": {"class_path": "train.module.FlowMatchingModule", "init_args": {"block_out_channels": [32, 32], "layers_per_block": 1, "norm_num_groups": 8,
                  "codec": str(workspace["codec"]), "val_steps": [1, 2], "warmup_steps": 2}},
        "data": {"cache_dir": str(workspace["cache"]), "latent_size": 4, "batch_size": 2, "samples_per_epoch": 6,
                 "val_dirs": [str(workspace["images"])], "val_crop": 64, "val_limit": 2},
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_steps": max_steps, "val_check_interval": 3,
            "check_val_every_n_epoch": None,
            "log_every_n_steps": 1, "num_sanity_val_steps": 0, "default_root_dir": str(run),
            "enable_progress_bar": False, "enable_model_summary": False,
            "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": str(run)}},
            "callbacks": [
                {"class_path": "train.ema.WarmupEMA", "init_args": {"decay": 0.99}},
                {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                 "init_args": {"dirpath": str(run / "ckpt"), "every_n_train_steps": 2, "save_last": True,
                               "save_top_k": -1}},
            ],
            **trainer,
        },
    }
    path = run / "config.yaml"
    run.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def test_fit_validates_checkpoints_and_resumes(workspace, tmp_path):
    from train.cli import cli_main

    config = _config(workspace, tmp_path / "run", max_steps=4)
    cli = cli_main(["fit", "--config", str(config)])
    assert cli.trainer.global_step == 4
    ckpt_path = tmp_path / "run" / "ckpt" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 4
    # The EMA (Lightning's WeightAveraging) keeps the average in state_dict, the live weights beside it.
    assert "current_model_state" in ckpt and "averaging_state" in ckpt
    key = "model.unet.conv_in.weight"
    assert not torch.equal(ckpt["state_dict"][key], ckpt["current_model_state"][key])
    grids = list((tmp_path / "run").rglob("val_grids/*.png"))
    assert grids, "validation writes an image grid"
    metrics = (next((tmp_path / "run").rglob("metrics.csv"))).read_text()
    assert "val/psnr_1step" in metrics and "train/loss" in metrics

    # Resume (as after a kill): the step, the optimizer and the EMA continue from the checkpoint.
    seen = {}

    class Probe(__import__("lightning").pytorch.Callback):
        def on_train_start(self, trainer, pl_module):
            ema = next(cb for cb in trainer.callbacks if type(cb).__name__ == "WarmupEMA")
            seen["step"] = trainer.global_step
            seen["exp_avg"] = next(iter(trainer.optimizers[0].state.values()))["exp_avg"].clone()
            seen["live"] = pl_module.state_dict()[key].clone()
            seen["ema"] = ema._average_model.module.state_dict()[key].clone()

    config2 = _config(workspace, tmp_path / "resumed", max_steps=6)
    cli2 = cli_main(["--config", str(config2)], run=False)
    cli2.trainer.callbacks.append(Probe())
    cli2.trainer.fit(cli2.model, cli2.datamodule, ckpt_path=str(ckpt_path))
    assert seen["step"] == 4 and cli2.trainer.global_step == 6
    first_param_state = next(iter(ckpt["optimizer_states"][0]["state"].values()))
    assert torch.equal(seen["exp_avg"], first_param_state["exp_avg"])
    assert torch.equal(seen["live"], ckpt["current_model_state"][key])
    assert torch.equal(seen["ema"], ckpt["state_dict"][key])


def test_export_writes_a_pipeline_with_the_ema_weights(workspace, tmp_path):
    from flowup.pipeline import FlowUpPipeline
    from train.cli import cli_main
    from train.export import export_checkpoint

    config = _config(workspace, tmp_path / "run", max_steps=2)
    cli_main(["fit", "--config", str(config)])
    ckpt_path = tmp_path / "run" / "ckpt" / "last.ckpt"
    out = export_checkpoint(ckpt_path, tmp_path / "exported", dtype=torch.float16, num_inference_steps=3)
    weights = load_file(str(out / "flow" / "diffusion_pytorch_model.safetensors"))
    assert all(v.dtype == torch.float16 for v in weights.values())
    ema = torch.load(ckpt_path, map_location="cpu", weights_only=True)["state_dict"]
    key = "unet.conv_in.weight"
    assert torch.equal(weights[key], ema["model." + key].half())
    pipe = FlowUpPipeline.from_pretrained(out)
    assert pipe.config.default_num_inference_steps == 3 and pipe.config.noise_alpha == pytest.approx(0.9)
    assert isinstance(pipe.flow, FlowUNet)
    image = pipe(image=torch.rand(1, 3, 16, 16), output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 3, 32, 32)
    assert json.loads((out / "training.json").read_text())["global_step"] == 2

    # --cascade-of: the exported model as the base, the checkpoint as its later stages' network.
    from train.export import export_cascade

    cascade = export_cascade(ckpt_path, out, tmp_path / "cascade", cascade_detail=0.75)
    joined = FlowUpPipeline.from_pretrained(cascade)
    assert joined.config.default_cascade_detail == 0.75 and joined.config.default_num_inference_steps == 3
    assert torch.equal(load_file(str(cascade / "cascade_flow" / "diffusion_pytorch_model.safetensors"))[key], weights[key])
    assert torch.equal(load_file(str(cascade / "flow" / "diffusion_pytorch_model.safetensors"))[key], weights[key])
    assert json.loads((cascade / "training.json").read_text())["cascade_flow"]["global_step"] == 2
    assert joined(image=torch.rand(1, 3, 8, 8), scale=4, output_type="pt").images.shape == (1, 3, 32, 32)

    # --faithful-of: the checkpoint as the clean end of the denoise control, the base's flow as its faithful end.
    from train.export import main as export_main

    export_main([str(ckpt_path), str(tmp_path / "clean"), "--faithful-of", str(cascade), "--denoise", "0.7"])
    clean = FlowUpPipeline.from_pretrained(tmp_path / "clean")
    assert clean.config.default_denoise == 0.7 and clean.faithful_flow is not None and clean.cascade_flow is not None
    assert clean.config.default_cascade_detail == 0.75 and clean.config.default_num_inference_steps == 3
    assert torch.equal(load_file(str(tmp_path / "clean" / "faithful_flow" / "diffusion_pytorch_model.safetensors"))[key],
                       weights[key])  # fmt: skip
    assert json.loads((tmp_path / "clean" / "training.json").read_text())["global_step"] == 2


def test_gaussian_skip_measures_residual_statistics_and_exports(workspace, tmp_path):
    from flowup.pipeline import FlowUpPipeline
    from train.cli import cli_main
    from train.export import export_checkpoint
    from train.latent_cache import residual_statistics

    mean, var = residual_statistics(workspace["cache"])
    pairs = [load_file(str(p)) for p in sorted(Path(workspace["cache"]).rglob("shard-*.safetensors"))]
    r = torch.cat([p["hr"] - p["src"] for p in pairs]).double()
    assert torch.allclose(torch.tensor(mean).double(), r.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(torch.tensor(var).double(), r.var((0, 2, 3), unbiased=False), rtol=1e-4)

    config = _config(workspace, tmp_path / "run", max_steps=2)
    raw = yaml.safe_load(config.read_text())
    raw["model"]["init_args"].update(source_skip="gaussian", residual_stats_cache=str(workspace["cache"]))
    config.write_text(yaml.safe_dump(raw))
    cli_main(["fit", "--config", str(config)])
    ckpt_path = tmp_path / "run" / "ckpt" / "last.ckpt"
    hp = torch.load(ckpt_path, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hp["residual_mean"] == pytest.approx(mean) and hp["residual_var"] == pytest.approx(var)
    out = export_checkpoint(ckpt_path, tmp_path / "exported")
    pipe = FlowUpPipeline.from_pretrained(out)
    assert pipe.flow.skip_mode == "gaussian" and pipe.flow.config.skip_noise_alpha == pytest.approx(0.9)
    assert pipe.flow.gaussian_mean.flatten().tolist() == pytest.approx(mean, abs=1e-3)
    image = pipe(image=torch.rand(1, 3, 16, 16), output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert image.shape == (1, 3, 32, 32) and torch.isfinite(image).all()
    with pytest.raises(ValueError, match="noise_alpha"):
        FlowUpPipeline(flow=pipe.flow, codec=pipe.codec, noise_alpha=0.5)


def test_ddp_two_cpu_processes_on_gloo(workspace, tmp_path):
    config = _config(workspace, tmp_path / "ddp", max_steps=2, strategy="ddp", devices=2, val_check_interval=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "train", "fit", "--config", str(config)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "world_size=2" in proc.stderr + proc.stdout or "distributed_backend=gloo" in proc.stderr + proc.stdout
    ckpt = torch.load(tmp_path / "ddp" / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2


def test_python_dash_m_train_help_lists_every_command():
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-m", "train", "--help"], capture_output=True, text=True, cwd=root,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    for command in ("prepare", "fit", "validate", "export", "fit-codec", "export-codec"):
        assert f"  {command}" in result.stdout
    assert "Lightning" not in result.stderr


def test_source_model_makes_cascade_aware_pairs(workspace, tiny_pipeline_dir, tmp_path):
    """``source_model``: the low-res image is the model's x2 of the crop's x4 downsample; the
    high-res crops (same seed) are those of the bicubic cache."""
    from flowup import FlowUpPipeline
    from flowup.resample import downsample
    from train.latent_cache import _low_res_maker

    recipe = CacheRecipe(image_dirs=[str(workspace["images"])], codec=str(workspace["codec"]), crop_size=64,
                         crops_per_image=2, extra_crop_min_side=10_000, seed=1, source_model=str(tiny_pipeline_dir))
    hr = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    low = _low_res_maker(recipe, TAEF2Codec.from_pretrained(workspace["codec"]))(hr, [0, 1])
    pipe = FlowUpPipeline.from_pretrained(tiny_pipeline_dir)
    pipe.set_progress_bar_config(disable=True)
    expected = pipe(image=downsample(hr, 4), output_type="pt", generator=torch.Generator().manual_seed(1)).images
    assert low.shape == (2, 3, 32, 32) and torch.allclose(low, expected.clamp(0, 1), atol=1e-6)

    codec = TAEF2Codec.from_pretrained(workspace["codec"]).eval()
    written = prepare_cache(recipe, tmp_path / "cascade", codec=codec, shard_size=4, batch_size=3, progress=False)
    assert written == workspace["written"]
    assert json.loads((tmp_path / "cascade" / "recipe.json").read_text())["source_model"] == str(tiny_pipeline_dir)
    cascade, plain = (LatentPairDataset(d, latent_size=8) for d in (tmp_path / "cascade", workspace["cache"]))
    assert torch.allclose(cascade.hr.float(), plain.hr.float(), atol=1e-2)  # same crops
    assert (cascade.src.float() - plain.src.float()).abs().mean() > 1e-2  # another low-res image
    with pytest.raises(ValueError, match="multiple of 32"):
        _low_res_maker(CacheRecipe(crop_size=48, source_model=str(tiny_pipeline_dir)), codec)


def test_init_weights_starts_from_a_trained_network(tiny_pipeline_dir, tmp_path):
    from train.module import FlowMatchingModule, load_flow_weights

    trained = load_flow_weights(tiny_pipeline_dir)
    module = FlowMatchingModule(block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=8,
                                codec="taef2", init_weights=str(tiny_pipeline_dir))  # fmt: skip
    state = module.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.items()) and state.keys() == trained.keys()
    assert load_flow_weights(tiny_pipeline_dir / "flow").keys() == trained.keys()
    with pytest.raises(FileNotFoundError, match="no flow weights"):
        load_flow_weights(tmp_path)
    with pytest.raises(RuntimeError):  # another network shape
        FlowMatchingModule(block_out_channels=(16, 16), layers_per_block=1, norm_num_groups=8, codec="taef2",
                           init_weights=str(tiny_pipeline_dir))  # fmt: skip


def test_degraded_cache_records_its_recipe_and_resumes_the_same(workspace, tmp_path):
    """Degraded pairs: the source differs from the clean cache's, the recipe says how, and each crop
    draws from its own stream (a resumed run degrades every crop as an uninterrupted one)."""
    import shutil

    from flowup.degradations import PROFILES

    codec = TAEF2Codec.from_pretrained(workspace["codec"]).eval()
    base = json.loads((workspace["cache"] / "recipe.json").read_text())
    recipe = CacheRecipe(**{**base, "degradation": PROFILES["generator"].as_dict()})
    assert prepare_cache(recipe, tmp_path / "d", codec=codec, shard_size=4, batch_size=3, progress=False) == 10
    clean = LatentPairDataset(workspace["cache"], latent_size=8)
    degraded = LatentPairDataset(tmp_path / "d", latent_size=8)
    assert torch.equal(clean.hr, degraded.hr) and not torch.equal(clean.src, degraded.src)
    assert json.loads((tmp_path / "d" / "recipe.json").read_text())["degradation"]["quality"] == [85, 85]
    part = tmp_path / "part"
    part.mkdir()
    (part / "recipe.json").write_text((tmp_path / "d" / "recipe.json").read_text())
    shutil.copy(tmp_path / "d" / "shard-00000.safetensors", part)
    assert prepare_cache(recipe, part, codec=codec, shard_size=4, batch_size=2, progress=False, resume=True) == 10
    assert torch.allclose(LatentPairDataset(part, latent_size=8).src.float(), degraded.src.float(), atol=2e-3)  # batch numerics
    # a recipe written before the grain settings existed resumes too (they were off)
    older = json.loads((tmp_path / "d" / "recipe.json").read_text())
    older["degradation"] = {k: v for k, v in older["degradation"].items() if not k.startswith("grain_")}
    (part / "recipe.json").write_text(json.dumps(older))
    for extra in sorted(part.glob("shard-*.safetensors"))[1:]:
        extra.unlink()
    assert prepare_cache(recipe, part, codec=codec, shard_size=4, batch_size=2, progress=False, resume=True) == 10


def test_fine_tune_keeps_the_init_networks_detail_model(tiny_pipeline_dir):
    from train.module import FlowMatchingModule

    gaussian_dir = tiny_pipeline_dir.parent / "gaussian"
    if not gaussian_dir.exists():
        flow = FlowUNet(block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=8, source_skip="gaussian",
                        skip_noise_alpha=0.9, residual_mean=[0.1] * 32, residual_var=[0.5] * 32)  # fmt: skip
        flow.save_pretrained(gaussian_dir / "flow")
    module = FlowMatchingModule(block_out_channels=(32, 32), norm_num_groups=8, source_skip="gaussian",
                                init_weights=str(gaussian_dir))  # fmt: skip
    assert module.hparams.residual_mean == [0.1] * 32 and module.hparams.residual_var == [0.5] * 32
    with pytest.raises(ValueError, match="residual_stats_cache"):
        FlowMatchingModule(block_out_channels=(32, 32), norm_num_groups=8, source_skip="gaussian")


def test_random_downscale_max_downscales_every_crop():
    """min = max: every crop is cut from the image resized by exactly that factor (cleaner targets)."""
    import random

    import torch.nn.functional as F

    from train.latent_cache import _random_crops

    image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))
    recipe = CacheRecipe(crop_size=32, crops_per_image=3, random_downscale_min=0.25, random_downscale_max=0.25)
    whole = F.interpolate(image[None], size=(32, 32), mode="bicubic", antialias=True)[0].clamp(0, 1)
    for crop in _random_crops(image, recipe, random.Random(0)):
        assert torch.equal(crop, whole) or torch.equal(crop, whole.flip(-1))
    unscaled = CacheRecipe(crop_size=32, crops_per_image=3, random_downscale_min=1.0)
    assert all(crop.std() > 0.25 for crop in _random_crops(image, unscaled, random.Random(0)))  # raw noise: std 0.29


def test_a_cache_made_before_random_downscale_max_still_resumes(workspace, tmp_path):
    import shutil

    part = tmp_path / "old"
    part.mkdir()
    old = json.loads((workspace["cache"] / "recipe.json").read_text())
    del old["random_downscale_max"]
    (part / "recipe.json").write_text(json.dumps(old))
    shutil.copy(sorted(workspace["cache"].glob("shard-*.safetensors"))[0], part)
    recipe = CacheRecipe(image_dirs=[str(workspace["images"])], codec=str(workspace["codec"]), crop_size=64,
                         crops_per_image=2, extra_crop_min_side=10_000, seed=1)
    codec = TAEF2Codec.from_pretrained(workspace["codec"]).eval()
    assert prepare_cache(recipe, part, codec=codec, shard_size=4, batch_size=3, progress=False, resume=True) == 10
