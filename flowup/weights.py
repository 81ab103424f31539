"""Where pretrained weights are found: argument, environment, user cache, team checkout, download.

The order, for every kind of weights flowup needs:

1. an explicit path given by the caller;
2. an environment variable (``FLOWUP_TAEF2`` for the codec);
3. the user cache folder (``$FLOWUP_CACHE`` or ``~/.cache/flowup``);
4. ``../shared/weights`` beside a source checkout (the team's layout);
5. a download from the upstream release, for users who have a network;

and offline, a clear error that lists every place that was looked at.
"""

from __future__ import annotations

import os
import urllib.request
from pathlib import Path

__all__ = ["cache_dir", "find_taef2_weights", "WeightsNotFoundError"]

TAEF2_FILES = ("encoder.pth", "decoder.pth")
TAEF2_URLS = {
    "encoder.pth": "https://github.com/madebyollin/taesd/raw/main/taef2_encoder.pth",
    "decoder.pth": "https://github.com/madebyollin/taesd/raw/main/taef2_decoder.pth",
}
_CHECKOUT_ROOT = Path(__file__).resolve().parent.parent


class WeightsNotFoundError(FileNotFoundError):
    """Raised when weights are in none of the places flowup looks."""


def cache_dir() -> Path:
    """The user cache folder: ``$FLOWUP_CACHE`` or ``~/.cache/flowup``."""
    return Path(os.environ.get("FLOWUP_CACHE", Path.home() / ".cache" / "flowup"))


def _has_taef2(folder: Path) -> bool:
    return all((folder / name).is_file() for name in TAEF2_FILES)


def find_taef2_weights(folder: str | Path | None = None, download: bool | None = None) -> Path:
    """Return a folder holding TAEF2's ``encoder.pth`` and ``decoder.pth``.

    ``download``: try the upstream release when nothing is found locally (default: on unless
    ``FLOWUP_OFFLINE`` or ``HF_HUB_OFFLINE`` is set).
    """
    if folder is not None:
        folder = Path(folder).expanduser()
        if not _has_taef2(folder):
            raise WeightsNotFoundError(f"no TAEF2 weights (encoder.pth, decoder.pth) in {folder}")
        return folder
    candidates: list[Path] = []
    if os.environ.get("FLOWUP_TAEF2"):
        candidates.append(Path(os.environ["FLOWUP_TAEF2"]).expanduser())
    candidates.append(cache_dir() / "taef2")
    candidates.append(_CHECKOUT_ROOT.parent / "shared" / "weights" / "taef2")
    for candidate in candidates:
        if _has_taef2(candidate):
            return candidate
    if download is None:
        download = not (os.environ.get("FLOWUP_OFFLINE") or os.environ.get("HF_HUB_OFFLINE"))
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
