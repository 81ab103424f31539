"""The loss on the decoded 1-step sample (train/decoded_loss.py) and its use in FlowMatchingModule."""

import math

import pytest
import torch
from torch import nn

from train.decoded_loss import decoded_image_loss, one_step_prediction


class PixelShuffleCodec(nn.Module):
    """A stand-in codec whose decoder is exact and parameter-free: 12 latent channels -> 2x2 RGB pixels."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return nn.functional.pixel_shuffle(latents, 2).clamp(0, 1)


def test_one_step_prediction_is_x0_plus_the_velocity_at_t0():
    z_src = torch.randn(2, 4, 3, 3)
    noise = torch.randn_like(z_src)
    seen = {}

    def model(x_t, t, cond):
        seen["t"], seen["cond"] = t, cond
        return torch.full_like(x_t, 0.5)

    out = one_step_prediction(model, z_src, 0.9, noise=noise)
    torch.testing.assert_close(out, math.sqrt(0.9) * z_src + math.sqrt(0.1) * noise + 0.5)
    assert torch.equal(seen["t"], torch.zeros(2)) and seen["cond"] is z_src
    torch.testing.assert_close(one_step_prediction(model, z_src, 1.0), z_src + 0.5)  # alpha 1: no noise


def test_decoded_loss_is_l1_in_pixels_and_its_edge_term_sees_speckle_not_a_tone_shift():
    codec = PixelShuffleCodec()
    target = torch.full((1, 12, 8, 8), 0.5)
    l1, edge = decoded_image_loss(codec, target.clone(), target, edge_weight=1.0)
    assert l1.item() == 0 and edge.item() == 0

    brighter = target + 0.1  # a flat tone shift: pixels differ, gradients do not
    l1, edge = decoded_image_loss(codec, brighter, target, edge_weight=1.0)
    assert l1.item() == pytest.approx(0.1, abs=1e-6) and edge.item() == pytest.approx(0.0, abs=1e-6)

    speckle = target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    l1, edge = decoded_image_loss(codec, speckle, target, edge_weight=1.0)
    assert l1.item() > 0.05 and edge.item() > 0.02

    l1_only, no_edge = decoded_image_loss(codec, speckle, target)  # edge_weight 0: not computed
    assert l1_only.item() == pytest.approx(l1.item()) and no_edge.item() == 0

    with pytest.raises(ValueError, match="shape"):
        decoded_image_loss(codec, target[..., :4], target)


def test_decoded_loss_gradients_reach_the_prediction_through_a_frozen_decoder():
    from flowup.codecs import TAEF2Codec

    torch.manual_seed(0)
    codec = TAEF2Codec().eval().requires_grad_(False)
    target = torch.randn(1, 32, 4, 4)
    prediction = (target + 0.3 * torch.randn_like(target)).requires_grad_(True)
    l1, edge = decoded_image_loss(codec, prediction, target, edge_weight=1.0)
    (l1 + edge).backward()
    assert prediction.grad is not None and prediction.grad.abs().sum() > 0
    assert all(p.grad is None for p in codec.parameters())


def test_module_adds_the_decoded_loss_and_checks_its_weights():
    from train.module import FlowMatchingModule

    torch.manual_seed(0)
    kwargs = {"latent_channels": 32, "block_out_channels": (32, 32), "norm_num_groups": 8, "codec": "taef2"}
    batch = {"src": torch.randn(2, 32, 4, 4), "hr": torch.randn(2, 32, 4, 4)}
    logged = {}

    def run(**extra):
        module = FlowMatchingModule(**kwargs, **extra)
        module.log = lambda name, value, **_: logged.__setitem__(name, float(torch.as_tensor(value).detach()))
        torch.manual_seed(1)
        return module.training_step(batch, 0)

    plain = run()
    with_decoded = run(decoded_loss_weight=10.0, decoded_edge_weight=2.0)
    assert logged["train/velocity_loss"] == pytest.approx(plain.item())
    expected = plain.item() + 10.0 * logged["train/decoded_l1"] + 2.0 * logged["train/decoded_edge"]
    assert with_decoded.item() == pytest.approx(expected, rel=1e-5)
    assert logged["train/decoded_l1"] > 0 and logged["train/decoded_edge"] > 0

    with pytest.raises(ValueError, match="decoded_loss_weight"):
        FlowMatchingModule(**kwargs, decoded_edge_weight=1.0)
    with pytest.raises(ValueError, match=">= 0"):
        FlowMatchingModule(**kwargs, decoded_loss_weight=-1.0)
