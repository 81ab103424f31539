"""Diffusers upscalers and the text-to-image mode, with tiny random components loaded by path.

The components follow diffusers' own fast tests (tiny UNet2DConditionModel / AutoencoderKL /
CLIPTextModel); the CLIP tokenizer is built offline from a byte-level vocabulary.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from eval.features import FeatureExtractor
from eval.methods import MethodContext, build_method


def _tokenizer():
    from transformers import CLIPTokenizer

    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = bs + [256 + n for n in range(256 - len(bs))]
    vocab = {chr(c): i for i, c in enumerate(chars)}
    vocab.update({chr(c) + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _text_encoder(hidden_act: str = "gelu"):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(bos_token_id=0, eos_token_id=2, hidden_size=32, intermediate_size=37, layer_norm_eps=1e-5,
                            num_attention_heads=4, num_hidden_layers=2, pad_token_id=1, vocab_size=1000,
                            hidden_act=hidden_act, projection_dim=32)  # fmt: skip
    return CLIPTextModel(config)


def _vae(levels: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=[32, 32, 64][:levels], in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D"] * levels, up_block_types=["UpDecoderBlock2D"] * levels,
                         latent_channels=4, norm_num_groups=32)  # fmt: skip


@pytest.fixture(scope="module")
def sd_upscaler_dir(tmp_path_factory):
    from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionUpscalePipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 32, 64), layers_per_block=1, sample_size=32, in_channels=7, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
        attention_head_dim=8, use_linear_projection=True, only_cross_attention=(True, True, False), num_class_embeds=100,
    )  # fmt: skip
    pipe = StableDiffusionUpscalePipeline(
        unet=unet.eval(), low_res_scheduler=DDPMScheduler(), scheduler=DDIMScheduler(prediction_type="v_prediction"),
        vae=_vae(3).eval(), text_encoder=_text_encoder(), tokenizer=_tokenizer(), max_noise_level=350,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("sd") / "x4"
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sd_latent_upscaler_dir(tmp_path_factory):
    from diffusers import EulerDiscreteScheduler, StableDiffusionLatentUpscalePipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        act_fn="gelu", attention_head_dim=8, norm_num_groups=None, block_out_channels=[32, 32, 64, 64],
        time_cond_proj_dim=160, conv_in_kernel=1, conv_out_kernel=1, cross_attention_dim=32,
        down_block_types=("KDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D", "KCrossAttnDownBlock2D"),
        in_channels=8, mid_block_type=None, only_cross_attention=False, out_channels=5,
        resnet_time_scale_shift="scale_shift", time_embedding_type="fourier", timestep_post_act="gelu",
        up_block_types=("KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KCrossAttnUpBlock2D", "KUpBlock2D"),
    )  # fmt: skip
    vae = _vae(3)
    pipe = StableDiffusionLatentUpscalePipeline(
        vae=vae.eval(), text_encoder=_text_encoder("quick_gelu"), tokenizer=_tokenizer(), unet=unet.eval(),
        scheduler=EulerDiscreteScheduler(prediction_type="sample"),
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("sd") / "x2"
    pipe.save_pretrained(folder)
    return folder


def test_sd_upscale_loads_by_path_and_upscales_x4(sd_upscaler_dir):
    ctx = MethodContext(scale=4, device="cpu", sd_upscaler=str(sd_upscaler_dir), sd_prompt="a photo")
    method = build_method("sd-upscale:2", ctx)
    lr = torch.rand(1, 3, 16, 16)
    out = method.upscale(lr, None)
    assert out.shape == (1, 3, 64, 64) and 0 <= out.min() and out.max() <= 1
    assert method.nfe == 4  # 2 steps, classifier-free guidance
    assert method.parameter_count > 0


def test_sd_latent_upscale_loads_by_path_and_upscales_x2(sd_latent_upscaler_dir):
    ctx = MethodContext(scale=2, device="cpu")
    method = build_method(f"sd-latent-upscale@{sd_latent_upscaler_dir}:2", ctx)
    out = method.upscale(torch.rand(1, 3, 32, 32), None)
    assert out.shape == (1, 3, 64, 64)
    assert method.nfe == 2


def test_sd_upscalers_refuse_wrong_scale_and_missing_weights(sd_upscaler_dir, tmp_path):
    with pytest.raises(ValueError, match="x4 only"):
        build_method("sd-upscale", MethodContext(scale=2, sd_upscaler=str(sd_upscaler_dir)))
    with pytest.raises(ValueError, match="--sd-upscaler"):
        build_method("sd-upscale", MethodContext(scale=4))
    with pytest.raises(OSError, match="could not load StableDiffusionUpscalePipeline from 'nobody/no-such-model'"):
        build_method("sd-upscale@nobody/no-such-model", MethodContext(scale=4))  # offline hub id


# ------------------------------------------------------------------------------------------------
# Text-to-image mode


@pytest.fixture(scope="module")
def tiny_sd_dir(tmp_path_factory):
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    )  # fmt: skip
    pipe = StableDiffusionPipeline(
        unet=unet.eval(), scheduler=DDIMScheduler(), vae=_vae(2).eval(), text_encoder=_text_encoder(),
        tokenizer=_tokenizer(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("sd") / "t2i"
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPProcessor

    text = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=1000,
                bos_token_id=0, eos_token_id=2, pad_token_id=1)  # fmt: skip
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32, patch_size=8)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clip") / "clip"
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(folder)
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=processor, tokenizer=_tokenizer()).save_pretrained(folder)
    return folder


def test_clip_score_from_a_local_folder_or_unavailable(tiny_clip_dir):
    from eval.t2i import ClipScore

    clip = ClipScore(str(tiny_clip_dir), "cpu")
    assert clip.metric is not None, clip.reason
    image = torch.rand(1, 3, 40, 40)
    score = clip(image, "a red cube")
    assert score is not None and score == clip(image, "a red cube")
    missing = ClipScore(None, "cpu")
    assert missing(image, "a red cube") is None and "--clip-model" in missing.reason


def test_t2i_compares_base_plus_flowup_with_direct(tiny_sd_dir, tiny_pipeline_dir, tiny_clip_dir, tmp_path):
    from eval.t2i import T2IConfig, load_text_to_image, run_t2i

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# comment\na red cube\n\na blue sphere\na green cone\n")
    refs = tmp_path / "refs"
    refs.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(refs / f"r{i}.png")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    features = FeatureExtractor(net, "random test features", input_size=32, input_range=(-1.0, 1.0))
    config = T2IConfig(prompts=str(prompts), reference=str(refs), base=str(tiny_sd_dir), base_size=16, base_steps=2,
                       scale=2, model=str(tiny_pipeline_dir), flow_steps=2, solver="euler", direct=str(tiny_sd_dir),
                       direct_steps=2, out=str(tmp_path / "out"), device="cpu", patch_size=16, kid_subsets=5,
                       clip_model=str(tiny_clip_dir))  # fmt: skip
    base = load_text_to_image(config.base, "cpu")
    direct = load_text_to_image(config.direct, "cpu")
    result = run_t2i(config, base=base, direct=direct, feature_extractor=features)
    labels = [s["method"] for s in result["summaries"]]
    assert labels == ["base+flowup:euler:2", "base+bicubic", "direct"]
    for s in result["summaries"]:
        assert s["images"] == 3 and s["fid"] is not None and s["patch_fid"] is not None and s["time_per_image_s"] > 0
        assert s["patches"] == 3 * 4  # 32 px images, 16 px grid
        assert s["clip_score"] is not None
    assert result["summaries"][0]["nfe"] == 2
    assert "CLIP score" not in result["unavailable"]
    out = tmp_path / "out"
    for name in ["per_image.csv", "per_image.json", "summary.csv", "summary.json", "report.md", "samples.png",
                 "plots/quality_vs_time.png"]:  # fmt: skip
        assert (out / name).is_file(), name
    rows = json.loads((out / "per_image.json").read_text())
    assert len(rows) == 9 and rows[0]["prompt"] == "a red cube"


def test_t2i_hub_id_offline_is_one_clear_error():
    from eval.t2i import load_text_to_image

    with pytest.raises(OSError, match="base model 'nobody/no-such-model'.*cannot be downloaded"):
        load_text_to_image("nobody/no-such-model", "cpu")


def test_t2i_cli_needs_prompts(capsys):
    from eval.cli import main

    assert main(["t2i", "--base", "x", "--reference", "y"]) == 2
    assert "--prompts" in capsys.readouterr().err
