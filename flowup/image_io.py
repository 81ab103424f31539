"""Reading images from disk into float tensors, robustly.

``load_image`` accepts any file PIL reads (JPEG, PNG, WebP, TIFF, BMP ...), applies the EXIF
orientation, and converts any mode (greyscale, palette, CMYK, 16-bit, RGBA) to RGB floats in
[0, 1]; an alpha channel is returned separately. Errors are :class:`ImageReadError` with a
one-line message naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

__all__ = ["ImageReadError", "LoadedImage", "load_image", "pil_to_tensor", "IMAGE_EXTENSIONS", "MAX_PIXELS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MAX_PIXELS = 16384 * 16384  # refuse inputs beyond this ("decompression bomb" guard)


class ImageReadError(ValueError):
    """An input file could not be read as an image."""


@dataclass
class LoadedImage:
    """``rgb``: ``(3, H, W)`` float in [0, 1]; ``alpha``: ``(1, H, W)`` or None; ``mode``: PIL mode read."""

    rgb: torch.Tensor
    alpha: torch.Tensor | None
    mode: str


def pil_to_tensor(image: Image.Image) -> LoadedImage:
    """Convert a PIL image of any mode to float RGB in [0, 1] (+ alpha if it has one)."""
    mode = image.mode
    alpha = None
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or array.max() > 255 else 255.0
        grey = torch.from_numpy((array / top).astype(np.float32)).clamp(0, 1)
        return LoadedImage(grey.expand(3, -1, -1).contiguous(), None, mode)
    if mode == "F":
        grey = torch.from_numpy(np.asarray(image, dtype=np.float32)).clamp(0, 1)
        return LoadedImage(grey.expand(3, -1, -1).contiguous(), None, mode)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if mode in ("RGBA", "LA", "PA") or image.mode in ("RGBA", "LA", "PA"):
        image = image.convert("RGBA")
        array = np.asarray(image, dtype=np.float32) / 255.0
        alpha = torch.from_numpy(array[..., 3].copy())[None]
        rgb = torch.from_numpy(array[..., :3].copy()).permute(2, 0, 1)
        return LoadedImage(rgb.contiguous(), alpha, mode)
    if image.mode != "RGB":
        image = image.convert("RGB")
    array = np.asarray(image, dtype=np.float32) / 255.0
    return LoadedImage(torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(), None, mode)


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> LoadedImage:
    """Read ``path`` (EXIF orientation applied). Raises :class:`ImageReadError` with a one-line reason."""
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"{path}: no such file")
    if path.is_dir():
        raise ImageReadError(f"{path}: is a folder, not an image")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ImageReadError(f"{path}: {width}x{height} is too large (limit {max_pixels} pixels)")
            image.load()
            image = ImageOps.exif_transpose(image)
            return pil_to_tensor(image)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageReadError(f"{path}: too large ({err})") from None
    except (OSError, ValueError, SyntaxError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ImageReadError(f"{path}: cannot read image ({reason})") from None
