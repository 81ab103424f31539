"""Codecs: TAEF2 architecture and weights, diffusers VAEs, weight search (flowup.codecs, flowup.weights)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowup.codecs import DiffusersVAECodec, TAEF2Codec, load_codec
from flowup.weights import WeightsNotFoundError, find_taef2_weights

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TAEF2_DIR = SHARED / "weights" / "taef2"


def test_taef2_shapes_and_ranges():
    codec = TAEF2Codec().eval()
    x = torch.rand(2, 3, 48, 64)
    with torch.no_grad():
        z = codec.encode(x)
        y = codec.decode(z)
    assert z.shape == (2, 32, 6, 8)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    with pytest.raises(ValueError, match="multiples of 8"):
        codec.encode(torch.rand(1, 3, 20, 24))
    with pytest.raises(ValueError, match="shape"):
        codec.encode(torch.rand(3, 16, 16))


def test_taef2_state_dict_layout_matches_upstream_files():
    # The upstream encoder.pth / decoder.pth are plain nn.Sequential state dicts: 79 tensors each,
    # with GroupNorm "pool" branches in the three deepest blocks.
    codec = TAEF2Codec()
    enc, dec = codec.encoder.state_dict(), codec.decoder.state_dict()
    assert len(enc) == 79 and len(dec) == 79
    assert {k for k in enc if ".pool." in k} == {f"{i}.pool.{p}" for i in (11, 12, 13)
                                                 for p in ("0.weight", "1.weight", "1.bias", "3.weight")}
    assert enc["14.weight"].shape == (32, 64, 3, 3) and dec["1.weight"].shape == (64, 32, 3, 3)


@pytest.mark.parametrize("lean", [False, True], ids=["taef2", "lean"])
def test_codec_save_load_round_trip(tmp_path, lean):
    settings = {"encoder_stem": "space_to_depth", "decoder_head": "pixel_shuffle"} if lean else {}
    codec = TAEF2Codec(**settings).eval()
    codec.save_pretrained(tmp_path / "codec")
    loaded = load_codec(tmp_path / "codec")
    assert loaded.config.encoder_stem == codec.config.encoder_stem
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(codec.encode(x), loaded.encode(x))
        z = codec.encode(x)
        assert torch.equal(codec.decode(z), loaded.decode(z))


def test_lean_codec_runs_no_convolution_at_full_resolution():
    # Every convolution of the lean encoder reads at most half the input's side, and every one of
    # its decoder writes at most half the output's (hooks record each convolution's input size).
    codec = TAEF2Codec(encoder_stem="space_to_depth", decoder_head="pixel_shuffle").eval()
    sides = []
    hooks = [m.register_forward_hook(lambda m, i, o: sides.append(max(i[0].shape[-1], o.shape[-1])))
             for m in codec.modules() if isinstance(m, torch.nn.Conv2d)]  # fmt: skip
    with torch.no_grad():
        codec.decode(codec.encode(torch.rand(1, 3, 64, 64)))
    assert max(sides) == 32
    for hook in hooks:
        hook.remove()
    with pytest.raises(ValueError, match="encoder_stem must be one of"):
        TAEF2Codec(encoder_stem="strided")


def _tiny_kl_config():
    return dict(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )


def test_diffusers_autoencoder_kl_scaling_and_shift(tmp_path):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**_tiny_kl_config(), scaling_factor=0.5, shift_factor=0.25).eval()
    vae.save_pretrained(tmp_path / "vae")
    codec = DiffusersVAECodec.from_vae(str(tmp_path / "vae"))
    assert codec.downscale == 2 and codec.latent_channels == 4
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        raw = vae.encode(x * 2 - 1).latent_dist.mode()
        z = codec.encode(x)
        assert torch.allclose(z, (raw - 0.25) * 0.5, atol=1e-6)
        expected = (vae.decode(raw).sample / 2 + 0.5).clamp(0, 1)
        assert torch.allclose(codec.decode(z), expected, atol=1e-5)
    # saved as a codec and reloaded by load_codec
    codec.save_pretrained(tmp_path / "codec")
    with torch.no_grad():
        assert torch.allclose(load_codec(tmp_path / "codec").encode(x), z, atol=1e-6)


def test_diffusers_autoencoder_tiny(tmp_path):
    from diffusers import AutoencoderTiny

    vae = AutoencoderTiny(
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1), latent_channels=4,
    ).eval()
    vae.save_pretrained(tmp_path / "taesd")
    codec = load_codec(tmp_path / "taesd")
    assert isinstance(codec, DiffusersVAECodec) and codec.downscale == 2
    with torch.no_grad():
        z = codec.encode(torch.rand(1, 3, 16, 16))
        assert z.shape == (1, 4, 8, 8) and codec.decode(z).shape == (1, 3, 16, 16)


def test_missing_local_codec_path_says_no_such_folder(tmp_path):
    for spec in (tmp_path / "nothing-here", "./typo/vae", "relative/deeper/vae"):
        with pytest.raises(FileNotFoundError, match="no such folder"):
            load_codec(spec)


def test_hub_id_codec_offline_never_contacts_the_hub(monkeypatch):
    """Offline (FLOWUP_OFFLINE / HF_HUB_OFFLINE) a hub id is looked up in the local hub cache only:
    a quick one-line error, not a minute of retries."""
    import time

    monkeypatch.setenv("FLOWUP_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="offline") as err:
        load_codec("flowup-test-nobody/no-such-vae")
    assert time.perf_counter() - started < 10 and "\n" not in str(err.value)


def test_packaged_taef2_is_the_default_and_equals_upstream():
    """TAEF2 ships in the package as float16 safetensors (with its MIT licence); they hold the
    upstream .pth tensors exactly, so the codec's outputs are identical."""
    from safetensors.torch import load_file

    from flowup.weights import PACKAGED_TAEF2, load_taef2_state

    assert find_taef2_weights(download=False) == PACKAGED_TAEF2
    assert "MIT" in (PACKAGED_TAEF2 / "LICENSE").read_text()
    for part in ("encoder", "decoder"):
        path = PACKAGED_TAEF2 / f"{part}.safetensors"
        assert path.stat().st_size < 3_000_000
        assert {t.dtype for t in load_file(str(path)).values()} == {torch.float16}
    if not TAEF2_DIR.is_dir():
        pytest.fail(f"the upstream TAEF2 .pth files are expected at {TAEF2_DIR} to compare against")
    for part in ("encoder", "decoder"):
        packaged, upstream = load_taef2_state(PACKAGED_TAEF2, part), load_taef2_state(TAEF2_DIR, part)
        assert packaged.keys() == upstream.keys()
        assert all(torch.equal(packaged[k], upstream[k].to(torch.float16)) for k in packaged)
    image = torch.rand(1, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    a, b = TAEF2Codec.from_taesd_weights(None), TAEF2Codec.from_taesd_weights(TAEF2_DIR)
    with torch.no_grad():
        assert torch.equal(a.decode(a.encode(image)), b.decode(b.encode(image)))


def test_weight_search_order_and_offline_error(tmp_path, monkeypatch):
    fake = tmp_path / "env"
    fake.mkdir()
    for name in ("encoder.pth", "decoder.pth"):
        (fake / name).write_bytes(b"x")
    monkeypatch.setenv("FLOWUP_TAEF2", str(fake))
    assert find_taef2_weights() == fake
    monkeypatch.delenv("FLOWUP_TAEF2")
    monkeypatch.setattr("flowup.weights.PACKAGED_TAEF2", tmp_path / "slim-install")  # no packaged copy
    cache = tmp_path / "cache"
    (cache / "taef2").mkdir(parents=True)
    for name in ("encoder.pth", "decoder.pth"):
        (cache / "taef2" / name).write_bytes(b"x")
    monkeypatch.setenv("FLOWUP_CACHE", str(cache))
    assert find_taef2_weights() == cache / "taef2"
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsNotFoundError, match="no TAEF2 weights"):
        find_taef2_weights(tmp_path / "empty")
    with pytest.raises(WeightsNotFoundError, match="no such folder"):
        find_taef2_weights(tmp_path / "absent")
    # Nothing anywhere, offline: the error lists where it looked.
    monkeypatch.setenv("FLOWUP_CACHE", str(tmp_path / "nocache"))
    with pytest.raises(WeightsNotFoundError, match="looked in") as err:
        find_taef2_weights(download=False)
    assert str(tmp_path / "nocache") in str(err.value)


@pytest.mark.slow
def test_real_taef2_round_trip_on_set14():
    if not TAEF2_DIR.is_dir():
        pytest.fail(f"the team's TAEF2 weights are expected at {TAEF2_DIR}")
    codec = TAEF2Codec.from_taesd_weights(TAEF2_DIR)
    psnrs = []
    for path in sorted((SHARED / "data" / "val" / "Set14").glob("*.png")):
        image = Image.open(path).convert("RGB")
        w, h = image.size
        x = torch.from_numpy(np.asarray(image.crop((0, 0, w // 8 * 8, h // 8 * 8))).copy()).permute(2, 0, 1)[None] / 255
        with torch.no_grad():
            y = codec.decode(codec.encode(x))
        psnrs.append(10 * torch.log10(1 / ((y - x) ** 2).mean()).item())
    assert len(psnrs) == 14
    assert np.mean(psnrs) > 27.0, f"mean RGB PSNR {np.mean(psnrs):.2f} dB"
