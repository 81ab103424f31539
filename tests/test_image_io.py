"""Reading any image mode robustly, converting back, and atomic saving."""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
import pytest
import torch

from flowup.image_io import (
    ImageReadError,
    load_image,
    output_mode,
    pil_to_tensor,
    save_image,
    tensor_to_pil,
    upsample_alpha,
)


def _rgb_array(h: int = 12, w: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgb_png_round_trip(tmp_path):
    array = _rgb_array()
    PIL.Image.fromarray(array).save(tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png")
    assert loaded.rgb.shape == (3, 12, 20) and loaded.alpha is None and loaded.mode == "RGB"
    assert torch.equal((loaded.rgb * 255).round().byte().permute(1, 2, 0), torch.from_numpy(array))
    back = tensor_to_pil(loaded.rgb, None, loaded.mode)
    assert np.array_equal(np.asarray(back), array)


def test_exif_orientation_is_applied(tmp_path):
    image = PIL.Image.fromarray(_rgb_array(10, 30))
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes())
    loaded = load_image(tmp_path / "rotated.jpg")
    assert loaded.rgb.shape == (3, 30, 10)


def test_greyscale_and_16_bit(tmp_path):
    grey = np.random.default_rng(1).integers(0, 256, (9, 7), dtype=np.uint8)
    PIL.Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    loaded = load_image(tmp_path / "grey.png")
    assert loaded.mode == "L" and torch.equal(loaded.rgb[0], loaded.rgb[2])
    out = tensor_to_pil(loaded.rgb, None, loaded.mode)
    assert out.mode == "L" and np.array_equal(np.asarray(out), grey)

    deep = np.linspace(0, 65535, 9 * 7).reshape(9, 7).astype(np.uint16)
    PIL.Image.fromarray(deep).save(tmp_path / "deep.png")
    loaded = load_image(tmp_path / "deep.png")
    assert loaded.mode.startswith("I")
    np.testing.assert_allclose(loaded.rgb[0].numpy(), deep / 65535.0, atol=1e-6)
    assert tensor_to_pil(loaded.rgb, None, loaded.mode).mode == "L"  # written back as 8 bits


def test_palette_with_and_without_transparency(tmp_path):
    base = PIL.Image.fromarray(_rgb_array()).convert("P", palette=PIL.Image.Palette.ADAPTIVE, colors=16)
    base.save(tmp_path / "p.png")
    loaded = load_image(tmp_path / "p.png")
    assert loaded.alpha is None and loaded.rgb.shape == (3, 12, 20)
    np.testing.assert_allclose(loaded.rgb.permute(1, 2, 0).numpy() * 255, np.asarray(base.convert("RGB")), atol=0.5)
    base.info["transparency"] = 0
    base.save(tmp_path / "pt.png", transparency=0)
    loaded = load_image(tmp_path / "pt.png")
    assert loaded.alpha is not None and loaded.alpha.shape == (1, 12, 20)
    assert set(np.unique(loaded.alpha.numpy())) <= {0.0, 1.0}


def test_cmyk(tmp_path):
    PIL.Image.fromarray(_rgb_array()).convert("CMYK").save(tmp_path / "c.jpg")
    loaded = load_image(tmp_path / "c.jpg")
    assert loaded.mode == "CMYK" and loaded.rgb.shape == (3, 12, 20)
    assert output_mode(loaded.mode, False) == "RGB"


def test_rgba_and_la(tmp_path):
    rgba = np.random.default_rng(2).integers(0, 256, (8, 6, 4), dtype=np.uint8)
    PIL.Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png")
    np.testing.assert_allclose(loaded.alpha[0].numpy(), rgba[..., 3] / 255.0, atol=1e-6)
    out = tensor_to_pil(loaded.rgb, loaded.alpha, loaded.mode)
    assert out.mode == "RGBA" and np.array_equal(np.asarray(out), rgba)
    la = PIL.Image.fromarray(rgba[..., :2].copy(), "LA")
    loaded = pil_to_tensor(la)
    assert loaded.alpha is not None and tensor_to_pil(loaded.rgb, loaded.alpha, loaded.mode).mode == "LA"


def test_upsample_alpha_shape_and_range():
    alpha = torch.rand(1, 5, 7)
    up = upsample_alpha(alpha, 4)
    assert up.shape == (1, 20, 28) and 0 <= up.min() and up.max() <= 1


@pytest.mark.parametrize(
    "content, message",
    [(None, "no such file"), (b"", "empty file"), (b"not an image at all", "cannot read image")],
)
def test_bad_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError, match=message) as info:
        load_image(path)
    assert "\n" not in str(info.value) and "bad.png" in str(info.value)


def test_truncated_png_and_size_limit(tmp_path):
    PIL.Image.fromarray(_rgb_array(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="cut.png"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(ImageReadError, match="too large"):
        load_image(tmp_path / "full.png", max_pixels=1000)
    with pytest.raises(ImageReadError, match="folder"):
        load_image(tmp_path)


@pytest.mark.parametrize("name", ["out.png", "out.jpg", "out.webp"])
def test_save_image_formats_and_no_temp_files(tmp_path, name):
    image = PIL.Image.fromarray(np.random.default_rng(3).integers(0, 256, (10, 12, 4), dtype=np.uint8), "RGBA")
    path = save_image(image, tmp_path / "sub" / name)
    assert path.is_file() and os.listdir(tmp_path / "sub") == [name]
    with PIL.Image.open(path) as saved:
        assert saved.size == (12, 10)
        assert saved.mode == ("RGB" if name.endswith(".jpg") else "RGBA")


def test_save_image_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "keep.png"
    path.write_bytes(b"old contents")

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(PIL.Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(PIL.Image.new("RGB", (4, 4)), path)
    assert path.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["keep.png"]


def test_save_image_rejects_unknown_format(tmp_path):
    with pytest.raises(ValueError, match="unsupported output format"):
        save_image(PIL.Image.new("RGB", (4, 4)), tmp_path / "x.gif")
    assert os.listdir(tmp_path) == []
