"""FlowUpPipeline with tiny random components: shapes, determinism, batching, save / load,
latent inputs, output types, image modes."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import load_file

from flowup import FlowUpPipeline, TAEF2Codec
from flowup.pipeline import ModelNotFoundError, default_model_path
from flowup.stage import pad_to_multiple

from conftest import cpu_engine_runtimes, make_tiny_pipeline


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_pil(width: int, height: int, mode: str = "RGB", seed: int = 0) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": None, "LA": 2}[mode]
    shape = (height, width) if channels is None else (height, width, channels)
    return PIL.Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def _smooth_images(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, height // 8 + 1, width // 8 + 1, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bilinear").clamp(0, 1)


def test_odd_size_pil_gives_exactly_twice_the_size(tiny_pipeline):
    out = tiny_pipeline(image=_random_pil(53, 37), generator=_gen())
    assert isinstance(out.images, list) and len(out.images) == 1
    assert out.images[0].size == (106, 74) and out.images[0].mode == "RGB"
    assert out.nfe == 2  # default 2 Euler steps


@pytest.mark.parametrize("size", [(1, 1), (5, 3), (17, 64)])
def test_tiny_and_thin_images(tiny_pipeline, size):
    h, w = size
    out = tiny_pipeline(image=torch.rand(1, 3, h, w), generator=_gen(), output_type="pt")
    assert out.images.shape == (1, 3, 2 * h, 2 * w)
    assert torch.isfinite(out.images).all()


def test_scale_4_is_two_stages(tiny_pipeline):
    out = tiny_pipeline(image=_random_pil(21, 19), scale=4, num_inference_steps=3, generator=_gen())
    assert out.images[0].size == (84, 76)
    assert out.nfe == 6
    rk4 = tiny_pipeline(image=torch.rand(1, 3, 16, 16), num_inference_steps=2, solver="rk4", output_type="pt")
    assert rk4.nfe == 8


def test_scale_8_is_three_stages(tiny_pipeline):
    out = tiny_pipeline(image=torch.rand(1, 3, 6, 5), scale=8, num_inference_steps=1, generator=_gen(), output_type="pt")
    assert out.images.shape == (1, 3, 48, 40)
    assert out.nfe == 3
    with pytest.raises(ValueError, match="scale must be one of 2, 4, 8"):
        tiny_pipeline(image=torch.rand(1, 3, 6, 5), scale=16)


def test_x4_model_runs_one_stage_and_round_trips(tmp_path):
    # A native x4 model (scale_factor 4: PSU from x4 bicubic): scale 4 is one stage, 2 and 8 are refused.
    from flowup.pipeline import FlowUpPipeline
    pipe = make_tiny_pipeline(scale_factor=4)
    image = torch.rand(1, 3, 6, 5)
    out = pipe(image=image, scale=4, num_inference_steps=1, back_projection_steps=0, generator=_gen(), output_type="pt")
    assert out.images.shape == (1, 3, 24, 20) and out.nfe == 1
    for bad in (2, 8):
        with pytest.raises(ValueError, match="scale must be one of 4 for this x4 model"):
            pipe(image=image, scale=bad)
    pipe.save_pretrained(tmp_path)
    again = FlowUpPipeline.from_pretrained(tmp_path, runtime="torch")
    again.set_progress_bar_config(disable=True)
    assert again.config.scale_factor == 4
    assert torch.equal(again(image=image, scale=4, generator=_gen(), output_type="pt").images,
                       pipe(image=image, scale=4, generator=_gen(), output_type="pt").images)


def _tiny_cascade_pipeline(**config):
    """The tiny pipeline with a second, differently initialised flow as its cascade flow."""
    pipe = make_tiny_pipeline(**config)
    other = make_tiny_pipeline(seed=1).flow
    return type(pipe)(flow=pipe.flow, codec=pipe.codec, cascade_flow=other, noise_alpha=0.9,
                      default_num_inference_steps=2, **config)


def test_cascade_flow_runs_the_later_stages():
    """x4 with a cascade flow = stage 1 with ``flow``, then stage 2 with ``cascade_flow`` on its output."""
    pipe = _tiny_cascade_pipeline()
    image = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(0))
    first, second = (type(pipe)(flow=f, codec=pipe.codec, noise_alpha=0.9, default_num_inference_steps=2)
                     for f in (pipe.flow, pipe.cascade_flow))  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    x2 = first(image=image, output_type="pt", generator=generator).images
    manual = second(image=x2, output_type="pt", generator=generator).images
    cascade = pipe(image=image, scale=4, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert torch.allclose(cascade, manual, atol=1e-6)
    without = first(image=image, scale=4, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert not torch.allclose(cascade, without, atol=1e-3)  # the second stage really ran the other network
    x2_only = pipe(image=image, output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(x2_only, first(image=image, output_type="pt", generator=torch.Generator().manual_seed(0)).images)


def test_cascade_flow_save_load_round_trip(tmp_path):
    pipe = _tiny_cascade_pipeline(default_cascade_detail=0.75)
    pipe.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "cascade_flow" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = type(pipe).from_pretrained(tmp_path / "m", runtime="torch")
    loaded.set_progress_bar_config(disable=True)
    image = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(2))

    def run(p):
        return p(image=image, scale=4, output_type="pt", generator=torch.Generator().manual_seed(0)).images

    assert torch.equal(run(loaded), run(pipe))
    make_tiny_pipeline().save_pretrained(tmp_path / "plain")  # a model without one loads without one
    assert type(pipe).from_pretrained(tmp_path / "plain").cascade_flow is None


def test_cascade_flow_runs_in_the_cpu_engines():
    pipe = _tiny_cascade_pipeline()
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))

    def run():
        return pipe(image=image, scale=4, output_type="pt", generator=torch.Generator().manual_seed(0)).images

    reference = run()
    for runtime in cpu_engine_runtimes(pipe):
        pipe.set_runtime(runtime)
        assert pipe.engine(1).velocity != pipe.engine(0).velocity
        out = run()
        mse = torch.mean((out - reference) ** 2)
        assert 10 * torch.log10(1 / mse) > 35, runtime


def test_same_seed_same_output_other_seed_differs(tiny_pipeline):
    image = _smooth_images(1, 40, 48)
    a = tiny_pipeline(image=image, generator=_gen(1), output_type="pt").images
    b = tiny_pipeline(image=image, generator=_gen(1), output_type="pt").images
    c = tiny_pipeline(image=image, generator=_gen(2), output_type="pt").images
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3


def test_flow_changes_the_output(tiny_pipeline):
    # with a non-zero flow the result is not the decoded noisy source
    image = _smooth_images(1, 32, 32)
    a = tiny_pipeline(image=image, generator=_gen(), output_type="pt").images
    torch.nn.init.zeros_(tiny_pipeline.flow.unet.conv_out.weight)
    torch.nn.init.zeros_(tiny_pipeline.flow.unet.conv_out.bias)
    b = tiny_pipeline(image=image, generator=_gen(), output_type="pt").images
    assert (a - b).abs().max() > 1e-3


def test_batch_equals_per_image(tiny_pipeline):
    images = _smooth_images(3, 24, 40)
    batch = tiny_pipeline(image=images, generator=[_gen(s) for s in (5, 6, 7)], output_type="pt").images
    for i, seed in enumerate((5, 6, 7)):
        alone = tiny_pipeline(image=images[i : i + 1], generator=_gen(seed), output_type="pt").images
        torch.testing.assert_close(batch[i : i + 1], alone, atol=1e-5, rtol=1e-5)
    # a single generator is drawn from in image order: image 0 matches a lone run
    shared = tiny_pipeline(image=images, generator=_gen(5), output_type="pt").images
    torch.testing.assert_close(shared[:1], batch[:1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="generators"):
        tiny_pipeline(image=images, generator=[_gen(), _gen()])


def test_mixed_sizes_give_a_list(tiny_pipeline):
    images = [_random_pil(20, 12), _random_pil(9, 31)]
    out = tiny_pipeline(image=images, generator=[_gen(0), _gen(1)], output_type="pt")
    assert [tuple(t.shape) for t in out.images] == [(3, 24, 40), (3, 62, 18)]
    alone = tiny_pipeline(image=images[1], generator=_gen(1), output_type="pt").images
    torch.testing.assert_close(out.images[1], alone[0])


def test_output_types(tiny_pipeline):
    image = torch.rand(2, 3, 20, 28)
    pt = tiny_pipeline(image=image, generator=_gen(), output_type="pt").images
    assert pt.dtype == torch.float32 and pt.shape == (2, 3, 40, 56) and 0 <= pt.min() and pt.max() <= 1
    arr = tiny_pipeline(image=image, generator=_gen(), output_type="np").images
    assert isinstance(arr, np.ndarray) and arr.shape == (2, 40, 56, 3)
    np.testing.assert_allclose(arr, pt.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    pil = tiny_pipeline(image=image, generator=_gen(), output_type="pil").images
    assert [p.size for p in pil] == [(56, 40)] * 2
    latent = tiny_pipeline(image=image, generator=_gen(), output_type="latent").images
    assert latent.shape == (2, 32, 5, 7)
    images, nfe = tiny_pipeline(image=image, generator=_gen(), output_type="pt", return_dict=False)
    assert torch.equal(images, pt) and nfe == 2


def test_tiled_flow_is_close_to_untiled(tiny_pipeline):
    image = _smooth_images(1, 64, 64)
    full = tiny_pipeline(image=image, generator=_gen(), output_type="pt", tile_size=0).images
    tiled = tiny_pipeline(image=image, generator=_gen(), output_type="pt", tile_size=8, tile_overlap=4).images
    assert torch.isfinite(tiled).all()
    assert (tiled - full).abs().mean() < 0.05
    auto = tiny_pipeline(image=image, generator=_gen(), output_type="pt").images
    assert torch.equal(auto, full)  # small latents are not tiled by the automatic choice


def test_latent_input(tiny_pipeline):
    codec = tiny_pipeline.codec
    with torch.no_grad():
        latents = codec.encode(_smooth_images(1, 32, 40))
        decoded = codec.decode(latents)
    via_latents = tiny_pipeline(latents=latents, generator=_gen(), output_type="pt").images
    via_image = tiny_pipeline(image=decoded, generator=_gen(), output_type="pt").images
    assert via_latents.shape == (1, 3, 64, 80)
    torch.testing.assert_close(via_latents, via_image)
    bilinear = tiny_pipeline(latents=latents, generator=_gen(), output_type="pt", latent_upsample="bilinear").images
    assert bilinear.shape == (1, 3, 64, 80) and (bilinear - via_image).abs().max() > 1e-3
    four = tiny_pipeline(latents=latents, scale=4, latent_upsample="bilinear", output_type="latent").images
    assert four.shape == (1, 32, 16, 20)
    with pytest.raises(ValueError, match="latents"):
        tiny_pipeline(latents=torch.zeros(1, 4, 8, 8))


def test_save_load_round_trip(tiny_pipeline, tiny_pipeline_dir):
    loaded = FlowUpPipeline.from_pretrained(tiny_pipeline_dir, runtime="torch")  # bit-exact: same engine
    loaded.set_progress_bar_config(disable=True)
    image = _smooth_images(1, 24, 32)
    expected = tiny_pipeline(image=image, generator=_gen(3), output_type="pt").images
    assert torch.equal(loaded(image=image, generator=_gen(3), output_type="pt").images, expected)
    index = json.loads((tiny_pipeline_dir / "model_index.json").read_text())
    assert index["flow"] == ["flowup", "FlowUNet"] and index["codec"] == ["flowup", "TAEF2Codec"]
    assert index["noise_alpha"] == 0.9 and index["default_num_inference_steps"] == 2
    assert (tiny_pipeline_dir / "flow" / "diffusion_pytorch_model.safetensors").is_file()
    assert loaded.config.default_solver == "euler"


def test_save_float16(tiny_pipeline, tmp_path):
    tiny_pipeline.save_pretrained(tmp_path / "half", torch_dtype=torch.float16)
    weights = load_file(tmp_path / "half" / "flow" / "diffusion_pytorch_model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float16}
    assert tiny_pipeline.flow.dtype == torch.float32  # the pipeline itself is unchanged
    loaded = FlowUpPipeline.from_pretrained(tmp_path / "half", torch_dtype=torch.float32)
    assert loaded.flow.dtype == torch.float32


def test_standard_taef2_is_not_copied(tiny_pipeline, tmp_path, monkeypatch):
    # "standard weights" = whatever the weights search finds; point it at a fake TAEF2 folder
    weights = tmp_path / "taef2"
    weights.mkdir()
    torch.manual_seed(4)
    reference = TAEF2Codec()
    torch.save(reference.encoder.state_dict(), weights / "encoder.pth")
    torch.save(reference.decoder.state_dict(), weights / "decoder.pth")
    monkeypatch.setenv("FLOWUP_TAEF2", str(weights))
    pipe = FlowUpPipeline(flow=tiny_pipeline.flow, codec=TAEF2Codec.from_taesd_weights(weights), noise_alpha=0.8,
                          default_num_inference_steps=2)  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(tmp_path / "model")
    assert not (tmp_path / "model" / "codec").exists()
    index = json.loads((tmp_path / "model" / "model_index.json").read_text())
    assert index["codec_spec"] == "taef2" and index["codec"] == [None, None]
    loaded = FlowUpPipeline.from_pretrained(tmp_path / "model", runtime="torch")  # bit-exact: same engine
    loaded.set_progress_bar_config(disable=True)
    image = _smooth_images(1, 16, 24)
    a = pipe(image=image, generator=_gen(), output_type="pt").images
    assert torch.equal(loaded(image=image, generator=_gen(), output_type="pt").images, a)
    # a codec that differs from the standard weights is saved
    pipe.codec.decoder[1].bias.data += 0.1
    pipe.save_pretrained(tmp_path / "changed")
    assert (tmp_path / "changed" / "codec" / "diffusion_pytorch_model.safetensors").is_file()


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such directory"):
        FlowUpPipeline.from_pretrained(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="model_index.json"):
        FlowUpPipeline.from_pretrained(tmp_path / "empty")


def test_default_model_path_names_the_model_option(monkeypatch, tmp_path):
    monkeypatch.setattr("flowup.model_folder.DEFAULT_MODEL_DIR", tmp_path / "absent")
    with pytest.raises(ModelNotFoundError, match="--model"):
        default_model_path()


def test_rgba_and_greyscale_pil(tiny_pipeline):
    rgba = _random_pil(15, 11, "RGBA")
    out = tiny_pipeline(image=rgba, generator=_gen()).images[0]
    assert out.mode == "RGBA" and out.size == (30, 22)
    alpha = np.asarray(out)[..., 3].astype(float)
    from flowup.image_io import upsample_alpha

    expected = upsample_alpha(torch.from_numpy(np.asarray(rgba)[..., 3] / 255.0).float()[None], 2)[0]
    np.testing.assert_allclose(alpha, (expected * 255).round().numpy(), atol=1)
    grey = tiny_pipeline(image=_random_pil(10, 14, "L"), generator=_gen()).images[0]
    assert grey.mode == "L" and grey.size == (20, 28)
    la = tiny_pipeline(image=_random_pil(10, 14, "LA"), generator=_gen()).images[0]
    assert la.mode == "LA"


def test_bad_arguments(tiny_pipeline):
    image = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match="scale"):
        tiny_pipeline(image=image, scale=3)
    with pytest.raises(ValueError, match="output_type"):
        tiny_pipeline(image=image, output_type="jpeg")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        tiny_pipeline(image=image * 2 - 1)
    with pytest.raises(ValueError, match="exactly one"):
        tiny_pipeline()
    with pytest.raises(ValueError, match="solver"):
        tiny_pipeline(image=image, solver="heun")
    with pytest.raises(ValueError, match="num_inference_steps"):
        tiny_pipeline(image=image, num_inference_steps=-1)


def test_zero_steps_is_the_source_without_the_flow(tiny_pipeline):
    """num_inference_steps=0 decodes the PSU source itself: the codec round trip of the bicubic
    upsample (no noise, no flow), through the same padding, cropping and back-projection."""
    from flowup.resample import upsample

    image = _smooth_images(1, 16, 16)
    codec = tiny_pipeline.codec
    out = tiny_pipeline(image=image, num_inference_steps=0, back_projection_steps=0, output_type="pt")
    assert out.nfe == 0
    with torch.no_grad():
        expected = codec.decode(codec.encode(upsample(image, 2)))
    torch.testing.assert_close(out.images, expected, atol=1e-5, rtol=0)
    with_flow = tiny_pipeline(image=image, num_inference_steps=1, back_projection_steps=0, output_type="pt")
    assert (with_flow.images - out.images).abs().max() > 1e-3


def test_progress_callback_covers_tiles_and_stages(tiny_pipeline):
    """One large image reports many increasing fractions (tiles of the codec and the flow, both
    stages of x4) ending at exactly 1."""
    seen: list[float] = []
    tiny_pipeline(image=_smooth_images(1, 64, 64), scale=4, num_inference_steps=2, tile_size=4, codec_tile_size=4,
                  output_type="pt", progress_callback=seen.append)  # fmt: skip
    assert len(seen) > 20
    assert all(b >= a - 1e-9 for a, b in zip(seen, seen[1:])), "progress must never go back"
    assert seen[-1] == pytest.approx(1.0) and 0 < seen[0] < 0.1


def test_cpu_offload_is_refused_with_advice(tiny_pipeline):
    with pytest.raises(NotImplementedError, match="offload the base model"):
        tiny_pipeline.enable_model_cpu_offload()
    with pytest.raises(NotImplementedError, match="use .to"):
        tiny_pipeline.enable_sequential_cpu_offload()


@pytest.mark.parametrize(
    "key, value, message",
    [("noise_alpha", float("nan"), "noise_alpha"), ("noise_alpha", 1.5, "noise_alpha"),
     ("default_num_inference_steps", -2, "default_num_inference_steps"),
     ("default_back_projection_steps", -1, "default_back_projection_steps"),
     ("default_solver", "heun", "unknown solver")],
)  # fmt: skip
def test_bad_model_index_is_refused_at_load(tiny_pipeline_dir, tmp_path, key, value, message):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_pipeline_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index[key] = value
    (folder / "model_index.json").write_text(json.dumps(index))  # json writes NaN as NaN
    (folder / "flow" / "diffusion_pytorch_model.safetensors").unlink()  # checked before any weights are read
    with pytest.raises(ValueError, match=message):
        FlowUpPipeline.from_pretrained(folder)


def test_pad_to_multiple_reflects_repeatedly():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    y = pad_to_multiple(x, 8)
    assert y.shape == (1, 1, 8, 8)
    assert torch.equal(y[..., :2, :3], x)
    assert pad_to_multiple(torch.ones(1, 1, 1, 1), 4).shape == (1, 1, 4, 4)


def test_pipeline_components_are_registered(tiny_pipeline):
    assert set(tiny_pipeline.components) == {"flow", "codec", "cascade_flow", "faithful_flow"}
    assert tiny_pipeline.cascade_flow is None and tiny_pipeline.faithful_flow is None
    assert make_tiny_pipeline().config.noise_alpha == 0.9


def test_detail_scales_what_the_flow_adds(tiny_pipeline):
    """detail=0 is the clean source (as num_inference_steps=0), 1 the default, 0.5 exactly halfway
    in latent space; out of [0, 2] is refused."""
    image = _smooth_images(1, 16, 16)
    kwargs = dict(image=image, num_inference_steps=1, back_projection_steps=0, output_type="latent")
    full = tiny_pipeline(**kwargs, generator=_gen()).images
    assert torch.equal(tiny_pipeline(**kwargs, generator=_gen(), detail=1.0).images, full)
    source = tiny_pipeline(image=image, num_inference_steps=0, back_projection_steps=0, output_type="latent").images
    torch.testing.assert_close(tiny_pipeline(**kwargs, generator=_gen(), detail=0.0).images, source)
    half = tiny_pipeline(**kwargs, generator=_gen(), detail=0.5).images
    torch.testing.assert_close(half, (full + source) / 2, atol=1e-5, rtol=0)
    for bad in (-0.1, 2.5, float("nan")):
        with pytest.raises(ValueError, match="detail"):
            tiny_pipeline(image=image, detail=bad)


def test_input_back_projection_pins_an_x4_output_to_the_call_input():
    from flowup.back_projection import low_res_error

    pipe = make_tiny_pipeline(default_back_projection_steps=2)
    image = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(0))

    def run(**kwargs):
        return pipe(image=image, output_type="pt", generator=torch.Generator().manual_seed(0), **kwargs).images

    plain, pinned = run(scale=4), run(scale=4, input_back_projection_steps=10)
    assert pinned.shape == plain.shape == (1, 3, 48, 64)
    assert low_res_error(pinned, image).abs().mean() < 0.7 * low_res_error(plain, image).abs().mean()
    assert torch.equal(run(scale=4, input_back_projection_steps=0), plain)
    assert torch.equal(run(scale=2, input_back_projection_steps=10), run(scale=2))  # one stage: nothing to add
    with pytest.raises(ValueError, match="input_back_projection_steps"):
        run(scale=4, input_back_projection_steps=-1)


def test_cascade_detail_is_the_x4_default_and_x2_is_untouched():
    image = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(1))
    plain, damped = make_tiny_pipeline(), make_tiny_pipeline(default_cascade_detail=0.5)

    def run(pipe, **kwargs):
        return pipe(image=image, output_type="pt", generator=torch.Generator().manual_seed(0), **kwargs).images

    assert torch.equal(run(damped, scale=4), run(plain, scale=4, detail=0.5))
    assert not torch.equal(run(damped, scale=4), run(plain, scale=4))
    assert torch.equal(run(damped, scale=2), run(plain, scale=2))  # x2: detail 1 unless asked
    assert torch.equal(run(damped, scale=4, detail=1.0), run(plain, scale=4))  # an explicit value wins
    with pytest.raises(ValueError, match="default_cascade_detail"):
        make_tiny_pipeline(default_cascade_detail=3.0)


def test_detail_per_stage_runs_each_stage_at_its_own_value():
    """detail=(1, 0) at x4 is an x2 upscale at detail 1 followed by one at detail 0; (d, d) is d."""
    image = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(1))
    pipe = make_tiny_pipeline()

    def run(source, **kwargs):
        return pipe(image=source, output_type="pt", generator=torch.Generator().manual_seed(0), **kwargs).images

    first = run(image, scale=2, detail=1.0)
    torch.testing.assert_close(run(image, scale=4, detail=(1.0, 0.0)), run(first, scale=2, detail=0.0))
    assert torch.equal(run(image, scale=4, detail=[0.5, 0.5]), run(image, scale=4, detail=0.5))
    assert not torch.equal(run(image, scale=4, detail=(1.0, 0.5)), run(image, scale=4, detail=(0.5, 1.0)))
    with pytest.raises(ValueError, match="runs 2 stages"):
        run(image, scale=4, detail=(1.0, 0.5, 0.5))
    with pytest.raises(ValueError, match="detail"):
        run(image, scale=4, detail=(1.0, 2.5))


def test_cascade_flow_of_another_shape_tiles_by_its_own_geometry(monkeypatch):
    """A cascade network of another shape (another size multiple and receptive radius) pads and
    tiles its stage by its own geometry, not the first network's."""
    import flowup.stage as stage_module
    from flowup import FlowUNet

    base = make_tiny_pipeline()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        other = FlowUNet(block_out_channels=(32, 32, 32), layers_per_block=1, norm_num_groups=8).eval()
    assert other.size_multiple != base.flow.size_multiple
    pipe = type(base)(flow=base.flow, codec=base.codec, cascade_flow=other, noise_alpha=0.9, default_num_inference_steps=1)
    pipe.set_progress_bar_config(disable=True)
    seen = []
    real = stage_module.tiled_velocity

    def recording(flow, x, *args, **kwargs):
        seen.append((flow, tuple(x.shape[-2:])))
        return real(flow, x, *args, **kwargs)

    monkeypatch.setattr(stage_module, "tiled_velocity", recording)
    image = _smooth_images(1, 20, 28)
    tiled = pipe(image=image, scale=4, output_type="pt", generator=_gen(), tile_size=4).images
    assert [f for f, _ in seen] == [base.flow, other] and tiled.shape == (1, 3, 80, 112)
    assert all(h % other.size_multiple == 0 and w % other.size_multiple == 0 for _, (h, w) in seen[1:])
    untiled = pipe(image=image, scale=4, output_type="pt", generator=_gen(), tile_size=0).images
    assert (tiled - untiled).abs().max() < 0.25  # tiles of 4 latent pixels: inexact overlap, same picture


def test_cascade_stage_of_a_wider_network_tiles_exactly():
    """The cascade stage's velocity, forced to tile, equals the untiled one: the tiles get the
    cascade network's own receptive radius (here larger than the first network's), so its overlap
    is exact; tiled with the first network's radius (the old bug), it is not."""
    from flowup import FlowUNet
    from flowup.stage import StageSettings
    from flowup.tiling import tiled_velocity

    base = make_tiny_pipeline()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        other = FlowUNet(block_out_channels=(32, 32), layers_per_block=2, norm_num_groups=8).eval()
        torch.nn.init.normal_(other.unet.conv_out.weight, std=0.05)
    assert other.receptive_radius > base.flow.receptive_radius
    pipe = type(base)(flow=base.flow, codec=base.codec, cascade_flow=other, noise_alpha=0.9, default_num_inference_steps=1)
    stage = pipe.x2_stage(1)
    assert stage.engine.flow is other
    tile = 2 * (2 * other.receptive_radius + 8)  # the default overlap is exact from this tile up
    side = tile + 10
    cond = torch.randn(1, 32, side, side, generator=torch.Generator().manual_seed(1))
    untiled, _ = stage.integrate(cond, [_gen()], StageSettings(steps=1, tile_size=0))
    tiled, _ = stage.integrate(cond, [_gen()], StageSettings(steps=1, tile_size=tile))
    torch.testing.assert_close(tiled, untiled, atol=1e-5, rtol=0)  # float rounding (about 1e-6)
    x, t = torch.randn_like(cond), torch.zeros(1)
    with torch.no_grad():  # the first network's overlap misses part of the cascade's receptive field
        wrong = tiled_velocity(base.flow, x, t, cond, tile, 2 * base.flow.receptive_radius + 8, other)
        assert (wrong - other(x, t, cond)).abs().max() > 2e-5
