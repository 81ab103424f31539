"""Boosting a base text-to-image model: the API (flowup.text_to_image) and ``flowup generate``.

The base model is a tiny randomly initialised Stable Diffusion pipeline built the way diffusers'
fast tests build theirs (tiny UNet2DConditionModel, AutoencoderKL, CLIPTextModel, and a
CLIPTokenizer from a vocab.json / merges.txt written here: no hub download), saved to a temporary
folder and loaded by path. Its VAE has four levels, so it is 8x like a real SD VAE.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowup.text_to_image import (
    BoostedTextToImage,
    NotTextToImageError,
    decode_base_latents,
    is_text_to_image_pipeline,
    shares_codec,
)

BASE_SIZE = 32  # base images 32x32 -> latents 4x4
BASE_STEPS = 2


def _write_tokenizer_files(folder: Path) -> tuple[Path, Path, dict]:
    """A byte-level BPE vocabulary of printable ASCII characters (no merges) for CLIPTokenizer."""
    chars = [chr(c) for c in range(33, 127)]
    vocab: dict[str, int] = {}
    for token in chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab[token] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder / "vocab.json", folder / "merges.txt", vocab


def make_tiny_sd(tmp: Path, seed: int = 0):
    """A tiny random StableDiffusionPipeline (CPU, float32, milliseconds per step)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab_file, merges_file, vocab = _write_tokenizer_files(tmp / "tokenizer_src")
    # positional: transformers 4 names these vocab_file / merges_file, transformers 5 vocab / merges
    tokenizer = CLIPTokenizer(str(vocab_file), str(merges_file), model_max_length=77)
    assert len(tokenizer("a cat").input_ids) == 6  # <bos> a</w> c a t</w> <eos>: the vocabulary was read
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(8, 16),
            layers_per_block=1,
            sample_size=BASE_SIZE // 8,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=16,
            attention_head_dim=4,
            norm_num_groups=4,
        )
        vae = AutoencoderKL(
            block_out_channels=(8, 8, 8, 8),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            norm_num_groups=4,
            layers_per_block=1,
            sample_size=BASE_SIZE,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=vocab["<|startoftext|>"],
                eos_token_id=vocab["<|endoftext|>"],
                pad_token_id=vocab["<|endoftext|>"],
                hidden_size=16,
                intermediate_size=32,
                num_attention_heads=2,
                num_hidden_layers=2,
                projection_dim=16,
                vocab_size=len(vocab),
                max_position_embeddings=77,
            )
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet.eval(),
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory) -> Path:
    """A read-only folder holding a saved tiny Stable Diffusion pipeline."""
    root = tmp_path_factory.mktemp("tiny_sd")
    make_tiny_sd(root).save_pretrained(root / "sd")
    return root / "sd"


@pytest.fixture
def tiny_sd(tiny_sd_dir):
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_sd_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _same_codec_pipeline(base, seed: int = 0):
    """A tiny FlowUpPipeline whose codec is the base model's own VAE (4 latent channels)."""
    from flowup import DiffusersVAECodec, FlowUNet, FlowUpPipeline

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        flow = FlowUNet(latent_channels=4, block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=8)
        torch.nn.init.normal_(flow.unet.conv_out.weight, std=0.05)
    codec = DiffusersVAECodec(vae=base.vae)
    pipe = FlowUpPipeline(flow=flow.eval(), codec=codec.eval(), noise_alpha=0.9, default_num_inference_steps=2,
                          default_solver="euler")
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------- API


def test_tiny_sd_is_a_text_to_image_pipeline(tiny_sd, tiny_pipeline):
    assert is_text_to_image_pipeline(tiny_sd)
    assert not is_text_to_image_pipeline(tiny_pipeline)  # an upscaler takes no prompt
    with pytest.raises(NotTextToImageError, match="not a text-to-image pipeline"):
        BoostedTextToImage(tiny_pipeline, tiny_pipeline)


def test_boost_pixels_path_sizes_and_timings(tiny_sd, tiny_pipeline):
    out = BoostedTextToImage(tiny_sd, tiny_pipeline)("a cat", base_size=BASE_SIZE, scale=2, generator=_gen(0),
                num_inference_steps=BASE_STEPS, output_type="pt")
    assert out.base_images.shape == (1, 3, BASE_SIZE, BASE_SIZE)
    assert out.images.shape == (1, 3, 2 * BASE_SIZE, 2 * BASE_SIZE)
    assert 0 <= float(out.images.min()) and float(out.images.max()) <= 1
    t = out.timings
    assert t.base > 0 and t.base_decode > 0 and t.flow > 0 and not t.base_decode_included
    assert t.total >= t.base + t.base_decode + t.flow
    assert "base" in t.summary() and "flow" in t.summary()
    assert out.prompts == ["a cat"]


def test_boost_passes_back_projection_to_flowup(tiny_sd, tiny_pipeline):
    """back_projection_steps reaches the upscaler: the boosted image then downsamples to the base image."""
    from flowup.back_projection import low_res_error

    kwargs = dict(base_size=BASE_SIZE, scale=2, num_inference_steps=BASE_STEPS, output_type="pt")
    errors = {}
    for steps in (0, 5):
        out = BoostedTextToImage(tiny_sd, tiny_pipeline)("a cat", generator=_gen(0), back_projection_steps=steps, **kwargs)
        errors[steps] = low_res_error(out.images, out.base_images).abs().mean().item()
    assert errors[5] < 0.5 * errors[0]


def test_cli_rejects_negative_back_projection(tiny_sd_dir, tiny_pipeline_dir, tmp_path, capsys):
    args = _cli_args(tiny_sd_dir, tiny_pipeline_dir, tmp_path / "out", "--prompt", "a cat", "--back-projection", "-1")
    with pytest.raises(SystemExit) as info:  # refused when parsed, before any model loads
        _cli(args)
    assert info.value.code == 2
    assert "--back-projection: must be 0 or more" in capsys.readouterr().err


def test_base_images_are_the_base_pipelines_own(tiny_sd, tiny_pipeline):
    """Decoding the base latents outside the pipeline equals the pipeline's own decode."""
    chain = BoostedTextToImage(tiny_sd, tiny_pipeline)
    ours = chain.generate_base("a cat", base_size=BASE_SIZE, generator=_gen(3), num_inference_steps=BASE_STEPS)
    theirs = tiny_sd(prompt="a cat", height=BASE_SIZE, width=BASE_SIZE, generator=_gen(3),
                     num_inference_steps=BASE_STEPS, output_type="pt").images
    torch.testing.assert_close(ours.images, theirs.float(), atol=1e-5, rtol=0)
    again = decode_base_latents(tiny_sd.vae, ours.latents)
    torch.testing.assert_close(again, ours.images, atol=1e-6, rtol=0)


def test_base_output_pt_matches_latent_route(tiny_sd, tiny_pipeline):
    """A base that decodes itself (FLUX-style route) gives the same images, decode counted in base."""
    kwargs = dict(base_size=BASE_SIZE, num_inference_steps=BASE_STEPS, output_type="pt")
    via_latents = BoostedTextToImage(tiny_sd, tiny_pipeline)("a dog", generator=_gen(5), **kwargs)
    via_pixels = BoostedTextToImage(tiny_sd, tiny_pipeline, base_output="pt")("a dog", generator=_gen(5), **kwargs)
    torch.testing.assert_close(via_pixels.base_images, via_latents.base_images, atol=1e-5, rtol=0)
    assert via_pixels.timings.base_decode_included and via_pixels.timings.base_decode == 0


def test_seeds_reproduce_and_differ(tiny_sd, tiny_pipeline):
    chain = BoostedTextToImage(tiny_sd, tiny_pipeline)
    kwargs = dict(base_size=BASE_SIZE, num_inference_steps=BASE_STEPS, output_type="pt")
    a = chain("a cat", generator=_gen(1), **kwargs)
    b = chain("a cat", generator=_gen(1), **kwargs)
    c = chain("a cat", generator=_gen(2), **kwargs)
    assert torch.equal(a.images, b.images) and torch.equal(a.base_images, b.base_images)
    assert not torch.allclose(a.base_images, c.base_images)
    assert not torch.allclose(a.images, c.images)


def test_prompts_negative_prompt_and_base_kwargs_pass_through(tiny_sd, tiny_pipeline):
    chain = BoostedTextToImage(tiny_sd, tiny_pipeline)
    kwargs = dict(base_size=BASE_SIZE, num_inference_steps=BASE_STEPS, output_type="pt")
    plain = chain(["a cat", "a dog"], generator=[_gen(0), _gen(1)], num_images_per_prompt=1, **kwargs)
    assert plain.images.shape[0] == 2 and plain.prompts == ["a cat", "a dog"]
    assert not torch.allclose(plain.base_images[0], plain.base_images[1])
    negative = chain(["a cat", "a dog"], negative_prompt=["blurry", "blurry"], generator=[_gen(0), _gen(1)],
                     guidance_scale=7.0, **kwargs)
    assert not torch.allclose(plain.base_images, negative.base_images)
    many = chain("a cat", num_images_per_prompt=3, generator=[_gen(i) for i in range(3)], **kwargs)
    assert many.images.shape == (3, 3, 2 * BASE_SIZE, 2 * BASE_SIZE) and many.prompts == ["a cat"] * 3
    with pytest.raises(TypeError, match="does not take the argument 'no_such_argument'"):
        chain("a cat", no_such_argument=1, **kwargs)


def test_pil_output_and_non_square_base(tiny_sd, tiny_pipeline):
    out = BoostedTextToImage(tiny_sd, tiny_pipeline)("a cat", base_size=(32, 48), scale=2, generator=_gen(0),
                num_inference_steps=BASE_STEPS)
    assert isinstance(out.images[0], Image.Image) and out.images[0].size == (96, 64)
    assert out.base_images[0].size == (48, 32)


def test_latent_path_with_the_same_codec(tiny_sd):
    upscaler = _same_codec_pipeline(tiny_sd)
    assert shares_codec(tiny_sd, upscaler) == (True, "")
    # a separately loaded copy, even in half precision, is still the same codec
    copy = _same_codec_pipeline(tiny_sd)
    copy.codec.vae = type(tiny_sd.vae).from_config(tiny_sd.vae.config)
    copy.codec.vae.load_state_dict(tiny_sd.vae.state_dict())
    assert shares_codec(tiny_sd, copy) == (True, "")
    assert shares_codec(tiny_sd, copy.to(dtype=torch.float16)) == (True, "")
    chain = BoostedTextToImage(tiny_sd, upscaler, upsample_in="latents")
    kwargs = dict(base_size=BASE_SIZE, num_inference_steps=BASE_STEPS, output_type="pt")
    out = chain("a cat", generator=_gen(0), **kwargs)
    assert out.images.shape == (1, 3, 2 * BASE_SIZE, 2 * BASE_SIZE)
    assert out.base_images.shape == (1, 3, BASE_SIZE, BASE_SIZE)
    # no base decode at all when base images are not wanted
    lean = chain("a cat", generator=_gen(0), return_base_images=False, **kwargs)
    assert lean.base_images is None and lean.timings.base_decode == 0
    torch.testing.assert_close(lean.images, out.images)
    # the pixel path with the same codec is a different source (PSU), so a different result
    pixels = BoostedTextToImage(tiny_sd, upscaler, upsample_in="pixels")("a cat", generator=_gen(0), **kwargs)
    assert pixels.images.shape == out.images.shape and not torch.allclose(pixels.images, out.images)


def test_latent_path_refuses_a_different_codec(tiny_sd, tiny_pipeline):
    same, reason = shares_codec(tiny_sd, tiny_pipeline)
    assert not same and "TAEF2Codec" in reason
    with pytest.raises(ValueError, match="needs the base VAE to be flowup's codec"):
        BoostedTextToImage(tiny_sd, tiny_pipeline, upsample_in="latents")
    # same architecture, different weights: also refused
    upscaler = _same_codec_pipeline(tiny_sd)
    upscaler.codec.vae = type(tiny_sd.vae).from_config(tiny_sd.vae.config)  # fresh random weights
    assert shares_codec(tiny_sd, upscaler) == (False, "the VAE weights differ")


def test_offload_moves_the_base_off_and_back(tiny_sd, tiny_pipeline):
    calls = []
    real_to = tiny_sd.to

    def spy_to(*args, **kwargs):
        calls.append(args)
        return real_to(*args, **kwargs)

    tiny_sd.to = spy_to
    chain = BoostedTextToImage(tiny_sd, tiny_pipeline, offload=True)
    chain._offloaded_from = torch.device("cpu")  # pretend an earlier call moved it off "the GPU"
    out = chain("a cat", base_size=BASE_SIZE, num_inference_steps=BASE_STEPS, generator=_gen(0), output_type="pt")
    assert calls and calls[0] == (torch.device("cpu"),)  # restored before the base stage
    assert out.images.shape[-1] == 2 * BASE_SIZE and chain._offloaded_from is None  # on CPU: nothing to move


# ------------------------------------------------------------------------------------- CLI


def _cli(argv: list[str]) -> int:
    from flowup.cli import main

    return main(["generate", *argv])


def _cli_args(base: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["--base", str(base), "--model", str(model), "-o", str(out), "--base-size", str(BASE_SIZE),
            "--steps", str(BASE_STEPS), "--device", "cpu", "--quiet", *extra]


def test_cli_writes_boosted_and_base_images(tiny_sd_dir, tiny_pipeline_dir, tmp_path, capsys):
    out = tmp_path / "out"
    assert _cli(_cli_args(tiny_sd_dir, tiny_pipeline_dir, out, "--prompt", "a cat", "--scale", "2")) == 0
    boosted, base = Image.open(out / "0000_a-cat.png"), Image.open(out / "0000_a-cat_base.png")
    assert boosted.size == (2 * BASE_SIZE, 2 * BASE_SIZE) and base.size == (BASE_SIZE, BASE_SIZE)
    record = json.loads((out / "generate.json").read_text())
    assert record["images"][0] == {"index": 0, "prompt": "a cat", "seed": 0, "image": "0000_a-cat.png",
                                   "base_image": "0000_a-cat_base.png", "size": [64, 64]}
    assert record["timings_s"]["base"] > 0 and record["timings_s"]["flow"] > 0
    summary = capsys.readouterr().out
    assert "32x32 -> 64x64" in summary and "base" in summary and "flow" in summary
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_cli_and_python_api_share_one_seed_contract(tiny_sd, tiny_sd_dir, tiny_pipeline_dir, tmp_path):
    """Image i of ``flowup generate --seed S`` equals the Python chain with one generator seeded S + i."""
    from flowup import FlowUpPipeline

    out = tmp_path / "out"
    assert _cli(_cli_args(tiny_sd_dir, tiny_pipeline_dir, out, "--prompt", "a cat", "--num-images", "2",
                          "--seed", "5")) == 0  # fmt: skip
    chain = BoostedTextToImage(tiny_sd, FlowUpPipeline.from_pretrained(tiny_pipeline_dir))  # as the CLI loads it
    for index in (0, 1):
        api = chain("a cat", base_size=BASE_SIZE, scale=2, num_inference_steps=BASE_STEPS, generator=_gen(5 + index))
        cli = np.asarray(Image.open(out / f"{index:04d}_a-cat.png"), dtype=np.int16)
        assert np.abs(cli - np.asarray(api.images[0], dtype=np.int16)).max() <= 1


def test_cli_prompts_file_seeds_and_no_save_base(tiny_sd_dir, tiny_pipeline_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# comment\na red car\n\na blue house\n")
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    extra = ("--prompts", str(prompts), "--num-images", "2", "--seed", "7", "--no-save-base")
    assert _cli(_cli_args(tiny_sd_dir, tiny_pipeline_dir, out_a, *extra)) == 0
    names = sorted(p.name for p in out_a.glob("*.png"))
    assert names == ["0000_a-red-car.png", "0001_a-red-car.png", "0002_a-blue-house.png", "0003_a-blue-house.png"]
    seeds = [r["seed"] for r in json.loads((out_a / "generate.json").read_text())["images"]]
    assert seeds == [7, 8, 9, 10]
    # same seed, batch of 2: the same pixels (each image has its own generator), up to one grey
    # level of float rounding: batched convolutions may sum in another order; under the int8
    # runtime (auto's pick on CPUs without AMX) such a difference can flip an 8-bit activation step
    from flowup import FlowUpPipeline
    from flowup.runtimes import RUNTIMES

    exact = RUNTIMES[FlowUpPipeline.from_pretrained(tiny_pipeline_dir).active_runtime()].exact
    assert _cli(_cli_args(tiny_sd_dir, tiny_pipeline_dir, out_b, *extra, "--batch-size", "2")) == 0
    for name in names:
        a, b = (np.asarray(Image.open(d / name), dtype=np.int16) for d in (out_a, out_b))
        assert np.abs(a - b).max() <= (1 if exact else 4) and np.abs(a - b).mean() < 0.5
    assert Image.open(out_a / names[0]).tobytes() != Image.open(out_a / names[1]).tobytes()


def test_cli_scale_4_and_offload(tiny_sd_dir, tiny_pipeline_dir, tmp_path):
    out = tmp_path / "out"
    assert _cli(_cli_args(tiny_sd_dir, tiny_pipeline_dir, out, "--prompt", "x", "--scale", "4", "--offload",
                          "--flow-steps", "1", "--solver", "midpoint")) == 0
    assert Image.open(out / "0000_x.png").size == (4 * BASE_SIZE, 4 * BASE_SIZE)


def _save_tiny_ddpm(folder: Path) -> Path:
    """An unconditional diffusers pipeline (no prompt): a valid pipeline, but not text-to-image."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    unet = UNet2DModel(block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4, sample_size=8,
                       down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    "make_base, message",
    [
        (lambda tmp, _: tmp / "missing", "no such folder"),
        (lambda tmp, _: (tmp / "empty").mkdir() or tmp / "empty", "not a diffusers pipeline folder"),
        (lambda tmp, flowup_dir: flowup_dir, "FlowUpPipeline is a flowup upscaler, not a text-to-image pipeline"),
        (lambda tmp, _: _save_tiny_ddpm(tmp / "ddpm"), "DDPMPipeline is not a text-to-image pipeline"),
        (lambda tmp, _: "flowup-test-nobody/no-such-model", "cannot be downloaded from the Hugging Face Hub"),
    ],
    ids=["missing-folder", "not-a-pipeline", "flowup-model", "unconditional-pipeline", "hub-id-offline"],
)
def test_cli_base_model_errors_are_one_line(make_base, message, tiny_pipeline_dir, tmp_path, capsys, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    base = make_base(tmp_path, tiny_pipeline_dir)
    assert _cli(_cli_args(Path(base), tiny_pipeline_dir, tmp_path / "out", "--prompt", "a cat")) == 2  # usage
    err = capsys.readouterr().err.strip()
    assert message in err and err.startswith("flowup generate: error:") and "\n" not in err


def test_cli_missing_weights_is_one_line(tiny_sd_dir, tiny_pipeline_dir, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd_dir, broken)
    for weights in (broken / "unet").glob("*.safetensors"):
        weights.unlink()
    assert _cli(_cli_args(broken, tiny_pipeline_dir, tmp_path / "out", "--prompt", "a cat")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("flowup generate: error: base model") and "cannot load it" in err and "\n" not in err


def test_cli_converts_an_img2img_folder_to_text_to_image(tiny_sd, tiny_pipeline_dir, tmp_path):
    from diffusers import StableDiffusionImg2ImgPipeline

    folder = tmp_path / "img2img"
    StableDiffusionImg2ImgPipeline(**tiny_sd.components).save_pretrained(folder)
    out = tmp_path / "out"
    assert _cli(_cli_args(folder, tiny_pipeline_dir, out, "--prompt", "a cat")) == 0
    assert Image.open(out / "0000_a-cat.png").size == (2 * BASE_SIZE, 2 * BASE_SIZE)


def test_cli_no_prompt_and_latents_with_other_codec(tiny_sd_dir, tiny_pipeline_dir, tmp_path, capsys):
    assert _cli(_cli_args(tiny_sd_dir, tiny_pipeline_dir, tmp_path / "out")) == 2
    assert "no prompt" in capsys.readouterr().err
    assert _cli(_cli_args(tiny_sd_dir, tiny_pipeline_dir, tmp_path / "out", "--prompt", "a", "--upsample-in",
                          "latents")) == 2
    assert "needs the base VAE to be flowup's codec" in capsys.readouterr().err


def test_cli_latents_path_with_the_same_codec(tiny_sd, tiny_sd_dir, tmp_path):
    model = tmp_path / "same_codec_model"
    _same_codec_pipeline(tiny_sd).save_pretrained(model)
    out = tmp_path / "out"
    assert _cli(_cli_args(tiny_sd_dir, model, out, "--prompt", "a cat", "--upsample-in", "latents")) == 0
    assert Image.open(out / "0000_a-cat.png").size == (2 * BASE_SIZE, 2 * BASE_SIZE)
    assert Image.open(out / "0000_a-cat_base.png").size == (BASE_SIZE, BASE_SIZE)


def test_register_adds_the_generate_subcommand():
    import argparse

    from flowup.cli.generate import register, run

    parser = argparse.ArgumentParser(prog="flowup")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["generate", "--base", "b", "--prompt", "p", "-o", "o", "--base-size", "256", "384"])
    assert args.func is run and args.base_size == [256, 384] and args.save_base and args.scale == 2
    assert "--negative-prompt" in parser._subparsers._group_actions[0].choices["generate"].format_help()
