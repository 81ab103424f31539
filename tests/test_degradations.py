"""Degradations (flowup.degradations): what generator outputs carry, seeded, from YAML or by name."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from flowup.degradations import PROFILES, Degradation, degrade, load_degradation, pil_downsample

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def _image(seed: int = 0, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bicubic").clamp(0, 1)[0]


def test_clean_profile_is_pillows_bicubic_rounded_to_8_bits():
    hr = _image()
    lr = degrade(hr, 2, PROFILES["clean"], random.Random(0))
    array = (hr.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    reference = pil_downsample(hr, 2, "bicubic")
    assert lr.shape == (3, 32, 32)
    assert torch.equal(lr * 255, (lr * 255).round())  # 8-bit values
    assert (lr - reference).abs().max() <= 0.5 / 255 + 1e-6
    # Pillow's kernel (a = -0.5) is not torch's (a = -0.75): the same downsample as an 8-bit file in Pillow
    via_file = np.asarray(Image.fromarray(array).resize((32, 32), Image.Resampling.BICUBIC)) / 255
    assert np.abs(lr.permute(1, 2, 0).numpy() - via_file).max() < 2.5 / 255


def test_same_seed_same_result_and_every_step_changes_the_image():
    hr = _image(1)
    mix = load_degradation(ROOT / "configs/degradations/generator_outputs.yaml")
    assert torch.equal(degrade(hr, 2, mix, random.Random("a")), degrade(hr, 2, mix, random.Random("a")))
    clean = degrade(hr, 2, PROFILES["clean"], random.Random(0))
    for name in ("jpeg", "noise", "generator"):
        out = degrade(hr, 2, PROFILES[name], random.Random(0))
        assert out.shape == clean.shape and (out - clean).abs().mean() > 1e-3, name
    noisy = degrade(hr, 2, PROFILES["noise"], random.Random(0))
    assert 3 / 255 < (noisy - clean).std() < 7 / 255  # sigma 5 levels, rounded


def test_codec_round_trip_is_used_when_drawn():
    calls = []

    def round_trip(x):
        calls.append(x.shape)
        return 1 - x

    always = Degradation(clean_probability=0, blur_probability=0, codec_probability=1, noise_probability=0,
                         compression_probability=0)  # fmt: skip
    out = degrade(_image(), 4, always, random.Random(0), round_trip)
    assert calls == [(1, 3, 16, 16)] and out.mean() > 0.4


def test_a_mix_draws_every_kind_of_sample():
    mix = Degradation()
    hr = _image(2)
    clean = degrade(hr, 2, PROFILES["clean"], random.Random(0))
    outs = [degrade(hr, 2, mix, random.Random(k)) for k in range(40)]
    same = sum(bool(torch.equal(o, clean)) for o in outs)
    assert 1 <= same <= 15  # the clean share (15 %), the rest degraded


@pytest.mark.parametrize("spec, message", [
    ({"blur_probability": 2}, "blur_probability"), ({"quality": [90, 50]}, "quality"),
    ({"resize_kernels": ["nearest"]}, "resize_kernels"), ({"sharpen": 1}, "unknown"), ("nope", "neither"),
])  # fmt: skip
def test_bad_settings_are_refused(spec, message):
    with pytest.raises(ValueError, match=message):
        load_degradation(spec)


def test_yaml_and_profiles_load(tmp_path):
    path = tmp_path / "d.yaml"
    path.write_text("noise_probability: 1\ngaussian_sigma: [2, 3]\n")
    loaded = load_degradation(path)
    assert loaded.gaussian_sigma == (2, 3) and loaded.noise_probability == 1
    assert load_degradation("jpeg") is PROFILES["jpeg"] and load_degradation(None) is None
    assert load_degradation(loaded.as_dict()) == loaded


def test_every_committed_degradation_config_loads():
    configs = sorted((ROOT / "configs" / "degradations").glob("*.yaml"))
    assert configs
    for path in configs:
        assert isinstance(load_degradation(path), Degradation), path.name
