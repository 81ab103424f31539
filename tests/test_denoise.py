"""The denoise control (flowup.denoise): an edge-preserving filter of the input that the whole stage
(back-projection included) runs on, and the weight-space blend of a faithful and a clean network
where a model has both."""

from __future__ import annotations

import pytest
import torch

from conftest import cpu_engine_runtimes, make_tiny_pipeline
from flowup.denoise import blend_networks, check_blendable, check_denoise, prefilter


def _denoise_pipeline(**config):
    """A tiny pipeline whose ``faithful_flow`` is another random network of the same shape."""
    faithful = make_tiny_pipeline(seed=1).flow
    base = make_tiny_pipeline(seed=0)
    return type(base)(flow=base.flow, codec=base.codec, faithful_flow=faithful, noise_alpha=0.9,
                      default_num_inference_steps=2, default_back_projection_steps=3, **config)  # fmt: skip


def _plain(flow, codec, **config):
    return type(make_tiny_pipeline())(flow=flow, codec=codec, noise_alpha=0.9, default_num_inference_steps=2,
                                      default_back_projection_steps=3, **config)  # fmt: skip


def _image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(seed))


def _run(pipe, **kwargs) -> torch.Tensor:
    pipe.set_progress_bar_config(disable=True)
    return pipe(image=_image(), output_type="pt", generator=torch.Generator().manual_seed(0), **kwargs).images


def test_blend_is_the_linear_interpolation_of_weights():
    a, b = make_tiny_pipeline(seed=1).flow, make_tiny_pipeline(seed=0).flow
    assert blend_networks(a, b, 1.0) is b and blend_networks(a, b, 0.0) is a
    mid = blend_networks(a, b, 0.25)
    for name, value in mid.state_dict().items():
        expected = 0.75 * a.state_dict()[name] + 0.25 * b.state_dict()[name]
        assert torch.allclose(value, expected, atol=1e-6), name
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in make_tiny_pipeline(seed=0).flow.state_dict().items())


def test_networks_of_another_shape_are_refused():
    from flowup import FlowUNet

    other = FlowUNet(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8)
    with pytest.raises(ValueError, match="config differs"):
        check_blendable(other, make_tiny_pipeline().flow)
    with pytest.raises(ValueError, match="differs"):
        _ = type(make_tiny_pipeline())(flow=make_tiny_pipeline().flow, codec=make_tiny_pipeline().codec, faithful_flow=other)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.5", True])
def test_bad_denoise_values_are_refused(bad):
    with pytest.raises(ValueError, match="denoise"):
        check_denoise(bad)


def test_ends_run_each_network_and_the_middle_runs_the_blend():
    """denoise s = the blend of the two networks at s, run on the filtered input (back-projection too)."""
    pipe = _denoise_pipeline()

    def manual(flow, denoise):
        plain = _plain(flow, pipe.codec)
        plain.set_progress_bar_config(disable=True)
        return plain(image=prefilter(_image(), denoise), output_type="pt", generator=torch.Generator().manual_seed(0)).images

    assert torch.equal(_run(pipe, denoise=0.0), manual(pipe.faithful_flow, 0.0))
    assert torch.allclose(_run(pipe, denoise=1.0), manual(pipe.flow, 1.0), atol=1e-6)
    middle = blend_networks(pipe.faithful_flow, pipe.flow, 0.5)
    assert torch.allclose(_run(pipe, denoise=0.5), manual(middle, 0.5), atol=1e-6)


def test_a_model_with_one_network_filters_its_input():
    pipe = make_tiny_pipeline(default_back_projection_steps=3)
    assert pipe.config.default_denoise == 0.0 and torch.equal(_run(pipe), _run(pipe, denoise=0.0))
    filtered = pipe(image=prefilter(_image(), 0.6), output_type="pt", generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(_run(pipe, denoise=0.6), filtered) and not torch.equal(filtered, _run(pipe))


def test_prefilter_flattens_noise_and_keeps_edges():
    g = torch.Generator().manual_seed(0)
    step = torch.zeros(1, 3, 32, 32)
    step[..., 16:] = 0.8
    noisy = (step + 0.02 * torch.randn(1, 3, 32, 32, generator=g)).clamp(0, 1)
    out = prefilter(noisy, 1.0)
    flat = (slice(None), slice(None), slice(2, 30), slice(2, 14))
    assert out[flat].std() < 0.5 * noisy[flat].std()  # noise on the flat half reduced
    assert (out[..., 17:].mean() - out[..., :15].mean()) > 0.75  # the edge kept its full height
    assert torch.equal(prefilter(noisy, 0.0), noisy)
    assert prefilter(torch.rand(1, 3, 1, 5), 0.5).shape == (1, 3, 1, 5)  # thinner than the window


def test_default_comes_from_the_config_and_round_trips(tmp_path):
    pipe = _denoise_pipeline(default_denoise=0.5)
    assert pipe.engine(0, 0.5).velocity is not pipe.engine(0, 1.0).velocity
    assert torch.equal(_run(pipe), _run(pipe, denoise=0.5))
    pipe.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "faithful_flow" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = type(pipe).from_pretrained(tmp_path / "m", runtime="torch")
    assert loaded.config.default_denoise == 0.5 and loaded.faithful_flow is not None
    assert torch.equal(_run(loaded), _run(pipe))
    assert torch.equal(_run(loaded, denoise=0.2), _run(pipe, denoise=0.2))


def test_denoise_runs_in_the_cpu_engines():
    pipe = _denoise_pipeline()
    reference = _run(pipe, denoise=0.3)
    for runtime in cpu_engine_runtimes(pipe):
        pipe.set_runtime(runtime)
        out = _run(pipe, denoise=0.3)
        assert 10 * torch.log10(1 / torch.mean((out - reference) ** 2)) > 35, runtime
        assert not torch.allclose(_run(pipe, denoise=1.0), out, atol=1e-3)  # another blend, another engine


def test_cli_denoise(tmp_path, capsys, tiny_pipeline_dir):
    import numpy as np
    from PIL import Image

    from flowup.cli import main

    source = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((16, 24, 3)) * 255).astype("uint8")).save(source)
    model = tmp_path / "m"
    _denoise_pipeline().save_pretrained(model)
    outputs = {}
    for value in ("0", "1"):
        out = tmp_path / f"out{value}"
        assert main(["upscale", str(source), "-o", str(out), "--model", str(model), "--denoise", value, "-q"]) == 0
        outputs[value] = np.asarray(Image.open(out / "in_x2.png"))
    assert outputs["0"].shape == (32, 48, 3) and not np.array_equal(outputs["0"], outputs["1"])
    plain = {}
    for value in ("0", "0.8"):  # a model with one network: the filter alone
        out = tmp_path / f"plain{value}"
        assert main(["upscale", str(source), "-o", str(out), "--model", str(tiny_pipeline_dir), "--denoise", value, "-q"]) == 0
        plain[value] = np.asarray(Image.open(out / "in_x2.png"))
    assert not np.array_equal(plain["0"], plain["0.8"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["upscale", str(source), "-o", str(tmp_path / "y"), "--denoise", "1.5"])
    assert "between 0 and 1" in capsys.readouterr().err


def test_comfyui_node_passes_denoise(tmp_path):
    from flowup.comfyui import FlowUpUpscale

    pipe = _denoise_pipeline(default_denoise=1.0)
    image = _image().movedim(1, -1)
    node = FlowUpUpscale()
    (zero,) = node.upscale(pipe, image, steps=2, back_projection=3, denoise=0.0)
    (one,) = node.upscale(pipe, image, steps=2, back_projection=3, denoise=1.0)
    (default,) = node.upscale(pipe, image, steps=2, back_projection=3)
    assert torch.equal(default, one) and not torch.equal(zero, one)  # -1: the model's default (1 here)
    assert FlowUpUpscale.INPUT_TYPES()["required"]["denoise"][1]["default"] == -1.0
