"""The velocity network (flowup.models.FlowUNet)."""

import torch

from flowup.models import FlowUNet, PixelGroupNorm


def tiny(**kw):
    return FlowUNet(latent_channels=4, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8, **kw)


def test_shapes_source_init_and_no_global_norms():
    model = tiny().eval()
    x, c = torch.randn(2, 4, 8, 12), torch.randn(2, 4, 8, 12)
    v = model(x, torch.tensor([0.1, 0.9]), c)
    assert v.shape == x.shape
    # Untrained: the UNet's output layer is zero and the linear skip gives cond - x_t, so one
    # Euler step from any x0 lands on the clean source.
    assert torch.allclose(v, c - x, atol=1e-6)
    assert torch.count_nonzero(tiny(source_skip=False).eval()(x, 0.5, c)) == 0
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    assert any(isinstance(m, PixelGroupNorm) for m in model.modules())
    assert model.size_multiple == 2


def test_pixel_group_norm_is_per_pixel():
    norm = PixelGroupNorm(2, 4)
    x = torch.randn(1, 4, 3, 3)
    y = norm(x)
    g = x.reshape(1, 2, 2, 3, 3)
    expected = (g - g.mean(2, keepdim=True)) / torch.sqrt(g.var(2, unbiased=False, keepdim=True) + 1e-6)
    assert torch.allclose(y, expected.reshape(1, 4, 3, 3), atol=1e-5)


def _randomise(model):
    torch.manual_seed(0)
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    return model.eval()


def test_local_operator_far_pixels_do_not_interact():
    # Changing the input far away leaves the output near the centre untouched (finite receptive field).
    model = _randomise(tiny())
    x, c = torch.randn(1, 4, 64, 64), torch.randn(1, 4, 64, 64)
    with torch.no_grad():
        v1 = model(x, 0.5, c)
        x2 = x.clone()
        x2[..., :, 56:] += 5.0
        v2 = model(x2, 0.5, c)
    assert torch.allclose(v1[..., :, :24], v2[..., :, :24], atol=1e-5)
    assert not torch.allclose(v1[..., :, 56:], v2[..., :, 56:])


def test_time_and_condition_change_the_output():
    model = _randomise(tiny())
    x, c = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(model(x, 0.1, c), model(x, 0.9, c))
        assert not torch.allclose(model(x, 0.5, c), model(x, 0.5, c + 1))


def test_save_load_round_trip_fp16(tmp_path):
    model = _randomise(tiny())
    model.save_pretrained(tmp_path / "flow")
    assert (tmp_path / "flow" / "diffusion_pytorch_model.safetensors").is_file()
    loaded = FlowUNet.from_pretrained(tmp_path / "flow").eval()
    x, c = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x, 0.3, c), loaded(x, 0.3, c))
    model.to(torch.float16).save_pretrained(tmp_path / "flow16")
    half = FlowUNet.from_pretrained(tmp_path / "flow16", torch_dtype=torch.float16)
    assert next(half.parameters()).dtype == torch.float16


def _gaussian(**kw):
    return tiny(source_skip="gaussian", skip_noise_alpha=0.9, residual_mean=[0.1, 0.0, -0.1, 0.2],
                residual_var=[0.1, 0.2, 0.3, 0.05], **kw)


def test_gaussian_skip_untrained_is_the_closed_form_velocity_and_round_trips(tmp_path):
    from flowup.flow import gaussian_velocity

    model = _gaussian().eval()
    assert not hasattr(model, "skip") or model.skip is None
    x, c, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([0.2, 0.8])
    m, v = model.gaussian_mean, model.gaussian_var
    with torch.no_grad():
        assert torch.allclose(model(x, t, c), gaussian_velocity(x, t, c, 0.9, m, v), atol=1e-6)
        _randomise(model)
        out = model(x, t, c)
    model.save_pretrained(tmp_path / "flow")
    loaded = FlowUNet.from_pretrained(tmp_path / "flow").eval()
    assert loaded.skip_mode == "gaussian" and torch.equal(loaded.gaussian_var, model.gaussian_var)
    with torch.no_grad():
        assert torch.allclose(loaded(x, t, c), out, atol=1e-6)


def test_gaussian_skip_needs_its_statistics():
    import pytest

    with pytest.raises(ValueError, match="residual_mean"):
        tiny(source_skip="gaussian", skip_noise_alpha=0.9)
    with pytest.raises(ValueError, match="4 values"):
        tiny(source_skip="gaussian", skip_noise_alpha=0.9, residual_mean=[0.0], residual_var=[1.0])
    with pytest.raises(ValueError, match="source_skip"):
        tiny(source_skip="cubic")
