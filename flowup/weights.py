"""Where pretrained weights are found: argument, environment, the package, the user cache, download.

TAEF2, the default codec, ships inside the package (``flowup/pretrained/taef2``: the upstream
``taef2_encoder.pth`` / ``taef2_decoder.pth`` of github.com/madebyollin/taesd, MIT, converted to
float16 safetensors), so a plain ``pip install`` upscales offline. The search order:

1. an explicit folder given by the caller (``--codec``, ``load_codec(path)``);
2. ``$FLOWUP_TAEF2``;
3. the packaged copy;
4. the user cache folder (``$FLOWUP_CACHE`` or ``~/.cache/flowup``), e.g. for a slimmed install;
5. a download from the upstream release, for users who have a network (never with
   ``FLOWUP_OFFLINE`` / ``HF_HUB_OFFLINE`` set);

and otherwise a clear error that lists every place that was looked at. A folder may hold
``encoder.safetensors`` + ``decoder.safetensors`` or the upstream ``encoder.pth`` + ``decoder.pth``
(read with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

import torch

__all__ = ["cache_dir", "find_taef2_weights", "has_taef2_weights", "load_taef2_state", "is_offline", "WeightsNotFoundError",
           "PACKAGED_TAEF2"]  # fmt: skip

PACKAGED_TAEF2 = Path(__file__).resolve().parent / "pretrained" / "taef2"
TAEF2_PARTS = ("encoder", "decoder")
TAEF2_URLS = {
    "encoder.pth": "https://github.com/madebyollin/taesd/raw/main/taef2_encoder.pth",
    "decoder.pth": "https://github.com/madebyollin/taesd/raw/main/taef2_decoder.pth",
}


class WeightsNotFoundError(FileNotFoundError):
    """Raised when weights are in none of the places flowup looks."""


def cache_dir() -> Path:
    """The user cache folder: ``$FLOWUP_CACHE`` or ``~/.cache/flowup``."""
    return Path(os.environ.get("FLOWUP_CACHE", Path.home() / ".cache" / "flowup"))


def is_offline() -> bool:
    """True when ``FLOWUP_OFFLINE`` or ``HF_HUB_OFFLINE`` is set (to anything but 0 / false / empty)."""
    return any(os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")
               for name in ("FLOWUP_OFFLINE", "HF_HUB_OFFLINE"))  # fmt: skip


def _weights_file(folder: Path, part: str) -> Path | None:
    for suffix in (".safetensors", ".pth"):
        if (folder / f"{part}{suffix}").is_file():
            return folder / f"{part}{suffix}"
    return None


def has_taef2_weights(folder: Path) -> bool:
    """Whether ``folder`` holds TAEF2's encoder and decoder weights (.safetensors or .pth)."""
    return all(_weights_file(folder, part) is not None for part in TAEF2_PARTS)


def load_taef2_state(folder: str | Path, part: str) -> dict[str, torch.Tensor]:
    """The state dict of TAEF2's ``part`` (``"encoder"`` / ``"decoder"``) in ``folder``."""
    path = _weights_file(Path(folder), part)
    if path is None:
        raise WeightsNotFoundError(f"no TAEF2 {part} weights ({part}.safetensors or {part}.pth) in {folder}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def find_taef2_weights(folder: str | Path | None = None, download: bool | None = None) -> Path:
    """Return a folder holding TAEF2's encoder and decoder weights.

    ``download``: try the upstream release when nothing is found locally (default: on unless
    offline, see :func:`is_offline`).
    """
    if folder is not None:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise WeightsNotFoundError(f"{folder}: no such folder (TAEF2 weights)")
        if not has_taef2_weights(folder):
            raise WeightsNotFoundError(f"no TAEF2 weights (encoder / decoder .safetensors or .pth) in {folder}")
        return folder
    candidates: list[Path] = []
    if os.environ.get("FLOWUP_TAEF2"):
        candidates.append(Path(os.environ["FLOWUP_TAEF2"]).expanduser())
    candidates += [PACKAGED_TAEF2, cache_dir() / "taef2"]
    for candidate in candidates:
        if has_taef2_weights(candidate):
            return candidate
    if download is None:
        download = not is_offline()
    errors = ""
    if download:
        target = cache_dir() / "taef2"
        try:
            _download(TAEF2_URLS, target)
            return target
        except OSError as err:
            errors = f"; download from github.com/madebyollin/taesd failed: {err}"
    looked = ", ".join(str(c) for c in candidates)
    raise WeightsNotFoundError(
        f"TAEF2 weights not found (looked in: {looked}{errors}). Put encoder.pth and decoder.pth "
        "(taef2_encoder.pth / taef2_decoder.pth from github.com/madebyollin/taesd) in one of those "
        "folders or set FLOWUP_TAEF2=/path/to/folder."
    )


def _download(urls: dict[str, str], target: Path) -> None:
    """Download each file atomically (temporary name, then rename)."""
    target.mkdir(parents=True, exist_ok=True)
    for name, url in urls.items():
        final = target / name
        if final.is_file():
            continue
        partial = final.with_suffix(final.suffix + ".part")
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
            out.write(response.read())
        os.replace(partial, final)
