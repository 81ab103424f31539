"""Reading and writing images robustly.

Reading: :func:`load_image` accepts any file PIL reads (JPEG, PNG, WebP, TIFF, BMP ...), applies
the EXIF orientation, and converts any mode (greyscale, palette, CMYK, 16-bit, RGBA) to RGB floats
in [0, 1]; an alpha channel is returned separately. Errors are :class:`ImageReadError` with a
one-line message naming the file.

Writing back (:func:`tensor_to_pil`): the upscaled RGB is quantised to 8 bits per channel;
greyscale inputs (``1``, ``L``, ``LA``, ``I``, ``I;16``, ``F``) come back as 8-bit ``L`` / ``LA``
(16-bit inputs are written as 8-bit), palette and CMYK inputs as ``RGB``, and any input with an
alpha channel (RGBA, LA, palette transparency) gets its alpha upscaled separately by bicubic
(:func:`upsample_alpha`) and re-attached. :func:`save_image` writes PNG / JPEG / WebP atomically:
a temporary file in the target folder, then ``os.replace``, so no half-written file is ever left.
"""

from __future__ import annotations

import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from flowup.errors import one_line

__all__ = [
    "ImageReadError",
    "LoadedImage",
    "load_image",
    "pil_to_tensor",
    "tensor_to_pil",
    "upsample_alpha",
    "output_mode",
    "save_image",
    "SAVE_FORMATS",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "remove_stale_temp_files",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MAX_PIXELS = 16384 * 16384  # refuse inputs beyond this ("decompression bomb" guard)
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


TEMP_SUFFIX = ".flowup-tmp"  # save_image's temporary files: .NAME.flowup-HOST-PID-XXXX.flowup-tmp


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
        reason = one_line(err)
        raise ImageReadError(f"{path}: cannot read image ({reason})") from None


def upsample_alpha(alpha: torch.Tensor, scale: int) -> torch.Tensor:
    """Alpha ``(1, H, W)`` in [0, 1] -> ``(1, scale H, scale W)``, bicubic (clamped)."""
    from flowup.resample import upsample

    return upsample(alpha[None].float(), scale)[0]


def output_mode(mode: str, has_alpha: bool) -> str:
    """PIL mode to write for an input of ``mode``: ``L``/``LA`` for greyscale, else ``RGB``/``RGBA``."""
    if mode in GREY_MODES:
        return "LA" if has_alpha else "L"
    return "RGBA" if has_alpha else "RGB"


def tensor_to_pil(rgb: torch.Tensor, alpha: torch.Tensor | None = None, mode: str = "RGB") -> Image.Image:
    """``rgb`` ``(3, H, W)`` float in [0, 1] (+ ``alpha`` ``(1, H, W)``) -> an 8-bit PIL image in
    :func:`output_mode` ``(mode, alpha is not None)``."""
    if alpha is not None and alpha.shape[-2:] != rgb.shape[-2:]:
        raise ValueError(f"alpha {tuple(alpha.shape[-2:])} and rgb {tuple(rgb.shape[-2:])} differ in size")
    array = (rgb.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(array, "RGB")
    target = output_mode(mode, alpha is not None)
    if target in ("L", "LA"):
        image = image.convert("L")
    if alpha is not None:
        a = (alpha.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)[0].cpu().numpy()
        image.putalpha(Image.fromarray(a, "L"))
    return image


def save_image(image: Image.Image, path: str | Path, format: str | None = None, quality: int = 95) -> Path:
    """Write ``image`` to ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    ``format``: ``png``, ``jpg`` / ``jpeg`` or ``webp``; default from the suffix of ``path``.
    JPEG has no alpha: transparent images are composited over white. Returns ``path``.
    """
    path = Path(path)
    name = (format or path.suffix.lstrip(".")).lower()
    pil_format = SAVE_FORMATS.get("." + name)
    if pil_format is None:
        raise ValueError(f"{path}: unsupported output format {name!r} (png, jpg, webp)")
    options: dict = {}
    if pil_format == "JPEG":
        if image.mode in ("RGBA", "LA", "PA", "P"):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = Image.alpha_composite(background, rgba).convert("RGB" if image.mode != "LA" else "L")
        options = {"quality": quality, "subsampling": 0}
    elif pil_format == "WEBP":
        options = {"quality": quality, "method": 4}
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.{_temp_tag()}-", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            image.save(stream, format=pil_format, **options)
            stream.flush()
            os.fsync(stream.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
    return path


def _temp_tag(pid: int | None = None) -> str:
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:32] or "host"
    return f"flowup-{host}-{os.getpid() if pid is None else pid}"


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Delete temporary files that :func:`save_image` left in ``folder`` when its process was
    killed (SIGKILL, power loss): those of this host whose process no longer runs. Files of live
    processes and of other hosts are kept. Returns the paths removed."""
    folder = Path(folder)
    prefix = _temp_tag(0)[: -len("0")]  # flowup-HOST-
    removed: list[Path] = []
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX)]
    except OSError:
        return removed
    for path in candidates:
        marker = path.name.rfind("." + prefix)
        if marker < 0:
            continue
        pid_text = path.name[marker + 1 + len(prefix):].split("-", 1)[0]
        if not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True
