"""Image quality metrics (torchmetrics) with the super-resolution literature's conventions.

- :func:`psnr_y` / :func:`ssim_y`: on the luma channel Y of ITU-R BT.601 (as MATLAB's
  ``rgb2ycbcr``: Y in [16, 235] / 255), after cropping ``border`` pixels (the scale factor) on
  every side. PSNR uses a peak of 1 (255 on 8-bit values) and is capped at :data:`PSNR_CAP` dB,
  so identical images give 100 dB rather than infinity. SSIM is torchmetrics' Gaussian SSIM
  (11x11 window, sigma 1.5, data range 1).
- :func:`distribution_distances`: FID and KID between two sets of features (see
  :mod:`eval.features`), computed by torchmetrics' ``FrechetInceptionDistance`` and
  ``KernelInceptionDistance`` on precomputed features. The KID subset size adapts to small sets:
  ``min(1000, n_real, n_fake)``. For paired sets (outputs against their own high-res images) KID
  uses :func:`paired_kid`, the estimator that stays unbiased when samples are matched.
- :func:`grid_patches`: the fixed grid of non-overlapping ``size x size`` patches for patch-FID /
  patch-KID, anchored at the top-left corner; a remainder narrower than ``size`` is dropped, and an
  image smaller than ``size`` in a side contributes no patch (reports give the patch count).
- :class:`LpipsMetric`: LPIPS where its weights exist locally, otherwise ``available = False`` with
  a one-line ``reason`` that reports print.
- :func:`flat_area_energies`: the high-frequency energy of an output and of its high-res image on
  the high-res image's flattest patches (sky, skin, smooth paint). Their ratio over a set is the
  *flat-area grain*: 1 = as much fine texture there as the real photo, above 1 = added speckle.
- :func:`no_reference_measures`: for native low-res inputs (no high-res exists), an output's
  high-frequency energy on flat areas and its gradient on edges, beside the same of the bicubic
  upscale of the same input; their ratios over a set are *flat-area noise* (below 1 = cleaner
  than bicubic) and *edge sharpness* (above 1 = crisper than bicubic).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from flowup.errors import one_line

__all__ = [
    "PSNR_CAP",
    "rgb_to_y",
    "crop_border",
    "quantize",
    "psnr_y",
    "ssim_y",
    "grid_patches",
    "kid_subset_size",
    "distribution_distances",
    "paired_kid",
    "LpipsMetric",
    "flat_area_energies",
    "no_reference_measures",
    "edge_acutance",
    "tiles",
    "GRAIN_PATCH",
    "GRAIN_FLAT_FRACTION",
]

PSNR_CAP = 100.0
KID_MAX_SUBSET = 1000
GRAIN_PATCH = 16  # pixels per side of the patches whose flatness is judged
GRAIN_FLAT_FRACTION = 0.25  # the flattest quarter of each image's patches (by high-res variance)
GRAIN_SIGMA = 1.5  # high-pass = Y minus its Gaussian blur of this sigma (fine detail, 1-3 px)


def rgb_to_y(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` RGB in [0, 1] -> ``(N, 1, H, W)`` BT.601 luma in [16/255, 235/255]."""
    r, g, b = images.float().unbind(1)
    y = (16.0 + 65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    return y.unsqueeze(1)


def crop_border(images: torch.Tensor, border: int) -> torch.Tensor:
    """Drop ``border`` pixels on every side of ``(..., H, W)``."""
    if border <= 0:
        return images
    if images.shape[-1] <= 2 * border or images.shape[-2] <= 2 * border:
        raise ValueError(f"image {tuple(images.shape[-2:])} is too small for a border crop of {border}")
    return images[..., border:-border, border:-border]


def quantize(images: torch.Tensor) -> torch.Tensor:
    """Round to 8-bit levels (what a saved PNG holds): ``round(x * 255) / 255``, clamped to [0, 1]."""
    return (images.float().clamp(0, 1) * 255).round() / 255


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[1] != 3:
        raise ValueError(f"expected two (N, 3, H, W) batches of one shape, got {tuple(pred.shape)} and {tuple(target.shape)}")


def psnr_y(pred: torch.Tensor, target: torch.Tensor, border: int = 0) -> torch.Tensor:
    """PSNR (dB) on Y with ``border`` cropped, per image: ``(N,)``, capped at :data:`PSNR_CAP`."""
    _check_pair(pred, target)
    p, t = crop_border(rgb_to_y(pred), border), crop_border(rgb_to_y(target), border)
    values = peak_signal_noise_ratio(p, t, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return values.nan_to_num(posinf=PSNR_CAP).clamp(max=PSNR_CAP)


def ssim_y(pred: torch.Tensor, target: torch.Tensor, border: int = 0) -> torch.Tensor:
    """SSIM on Y with ``border`` cropped, per image: ``(N,)``, 1 for identical images."""
    _check_pair(pred, target)
    p, t = crop_border(rgb_to_y(pred), border), crop_border(rgb_to_y(target), border)
    return structural_similarity_index_measure(p.double(), t.double(), data_range=1.0, reduction="none").float()


def grid_patches(image: torch.Tensor, size: int = 256) -> torch.Tensor:
    """``(3, H, W)`` -> ``(P, 3, size, size)``: the non-overlapping grid from the top-left corner.

    ``P = (H // size) * (W // size)``, possibly 0.
    """
    c, h, w = image.shape
    rows, cols = h // size, w // size
    if rows == 0 or cols == 0:
        return image.new_zeros((0, c, size, size))
    grid = image[:, : rows * size, : cols * size].reshape(c, rows, size, cols, size)
    return grid.permute(1, 3, 0, 2, 4).reshape(rows * cols, c, size, size)


def kid_subset_size(n_real: int, n_fake: int, maximum: int = KID_MAX_SUBSET) -> int:
    """KID's subset size: ``min(maximum, n_real, n_fake)`` (needs at least 2 samples per set)."""
    return min(maximum, n_real, n_fake)


class _Precomputed(nn.Module):
    """Identity "feature extractor": lets torchmetrics compute FID / KID on features we already have."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def paired_kid(
    real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = KID_MAX_SUBSET, seed: int = 0
) -> tuple[float, float]:
    """KID (mean, std over subsets) of *paired* feature sets ``(N, F)``: ``fake[i]`` made from ``real[i]``.

    KID's usual unbiased estimator (torchmetrics) averages the cross kernel over all ``N^2`` pairs,
    which assumes independent sets; when ``fake[i]`` is a reconstruction of ``real[i]`` the ``N``
    matched pairs inflate that term and KID comes out strongly negative. Here the cross term skips
    the matched pairs: the U-statistic ``1/(m(m-1)) sum_{i != j} k(x_i,x_j) + k(y_i,y_j) - k(x_i,y_j)
    - k(x_j,y_i)`` (Gretton et al. 2012, eq. 3), unbiased for paired samples; kernel
    ``(x.y / F + 1)^3`` as KID. Subsets of ``min(subset_size, N)`` pairs keep the pairing.
    """
    if real.shape != fake.shape or real.ndim != 2 or len(real) < 2:
        raise ValueError(f"paired KID needs two (N, F) sets of one shape with N >= 2, got {tuple(real.shape)}, {tuple(fake.shape)}")
    n, dim = real.shape
    m = min(subset_size, n)
    generator = torch.Generator().manual_seed(seed)
    off_diagonal = ~torch.eye(m, dtype=torch.bool)
    values = []
    for _ in range(subsets):
        index = torch.randperm(n, generator=generator)[:m]
        x, y = real[index].double(), fake[index].double()
        k_xx, k_yy, k_xy = (((a @ b.T) / dim + 1) ** 3 for a, b in ((x, x), (y, y), (x, y)))
        h = k_xx + k_yy - k_xy - k_xy.T
        values.append(h[off_diagonal].sum() / (m * (m - 1)))
    stacked = torch.stack(values)
    return float(stacked.mean()), float(stacked.std(unbiased=False))


def distribution_distances(
    real: torch.Tensor, fake: torch.Tensor, kid_subsets: int = 100, seed: int = 0, paired: bool = False
) -> dict[str, float]:
    """FID, KID mean and KID std between feature sets ``real (N, F)`` and ``fake (M, F)``.

    ``paired``: ``fake[i]`` was made from the same image as ``real[i]`` (super-resolution outputs
    against their high-res images): KID then uses :func:`paired_kid`. Both sets need at least 2
    samples (else ``ValueError``).
    """
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"expected feature matrices (N, F) and (M, F), got {tuple(real.shape)} and {tuple(fake.shape)}")
    if len(real) < 2 or len(fake) < 2:
        raise ValueError(f"FID / KID need at least 2 samples per set, got {len(real)} and {len(fake)}")
    extractor = _Precomputed(real.shape[1])
    fid = FrechetInceptionDistance(feature=extractor)
    fid.update(real.double(), real=True)
    fid.update(fake.double(), real=False)
    subset = kid_subset_size(len(real), len(fake))
    if paired:
        kid_mean, kid_std = paired_kid(real, fake, subsets=kid_subsets, subset_size=subset, seed=seed)
        return {"fid": float(fid.compute()), "kid_mean": kid_mean, "kid_std": kid_std, "kid_subset": subset}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=extractor, subsets=kid_subsets, subset_size=subset)
    kid.update(real.double(), real=True)
    kid.update(fake.double(), real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # KID draws random subsets
        kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std), "kid_subset": subset}


class LpipsMetric:
    """LPIPS (AlexNet) from torchmetrics, only where every weight it needs is already local.

    torchmetrics ships LPIPS' linear heads but takes the AlexNet backbone from torchvision, which
    downloads it to the torch hub cache. ``available`` is False (with ``reason``) when torchvision
    is missing or the backbone is not in the cache; nothing is downloaded.
    """

    BACKBONE_PREFIX = "alexnet-owt-"

    def __init__(self, device: str | torch.device = "cpu"):
        self.metric = None
        self.reason = ""
        try:
            import torchvision  # noqa: F401
        except ImportError:
            self.reason = "torchvision is not installed (torchmetrics' LPIPS takes its AlexNet backbone from it)"
            return
        checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
        if not any(checkpoints.glob(self.BACKBONE_PREFIX + "*.pth")):
            self.reason = f"AlexNet backbone weights not found in {checkpoints} (no download is attempted)"
            return
        try:
            from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

            self.metric = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).to(device)
        except Exception as err:  # noqa: BLE001 - any failure makes the metric unavailable, with its reason
            self.reason = f"could not build LPIPS: {one_line(err)}"

    @property
    def available(self) -> bool:
        return self.metric is not None

    @torch.no_grad()
    def __call__(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS ``(N,)`` of ``(N, 3, H, W)`` batches in [0, 1] (lower is better)."""
        if self.metric is None:
            raise RuntimeError(f"LPIPS unavailable: {self.reason}")
        _check_pair(pred, target)
        values = []
        for p, t in zip(pred, target):
            self.metric.reset()
            self.metric.update(p[None].to(self.metric.device), t[None].to(self.metric.device))
            values.append(self.metric.compute().float().cpu())
        return torch.stack(values)


def _gaussian_blur(y: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(N, 1, H, W)``, reflect padding, radius ``3 sigma``."""
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=y.dtype, device=y.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    padded = torch.nn.functional.pad(y, (radius, radius, radius, radius), mode="reflect")
    out = torch.nn.functional.conv2d(padded, kernel.view(1, 1, 1, -1))
    return torch.nn.functional.conv2d(out, kernel.view(1, 1, -1, 1))


def flat_area_energies(pred: torch.Tensor, target: torch.Tensor, border: int = 0, patch: int = GRAIN_PATCH,
                       flat_fraction: float = GRAIN_FLAT_FRACTION, sigma: float = GRAIN_SIGMA) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """High-frequency energy on flat areas, per image: ``(output energy (N,), high-res energy (N,))``.

    On luma Y (``border`` cropped), the image is cut into ``patch x patch`` tiles; the flat ones are
    the ``flat_fraction`` of tiles with the lowest high-res variance. Energy = mean squared
    high-pass (``Y - blur(Y, sigma)``) over those tiles, for the output and for the high-res image.
    The set's *flat-area grain* is ``sum(output energies) / sum(high-res energies)``.
    """
    _check_pair(pred, target)
    p, t = crop_border(rgb_to_y(pred), border).double(), crop_border(rgb_to_y(target), border).double()
    patch = max(1, min(patch, *t.shape[-2:]))  # a tiny image is one patch
    variance = tiles(t, patch).var(dim=-1)
    count = max(1, round(flat_fraction * variance.shape[1]))
    flat = variance.argsort(dim=1)[:, :count]  # (N, count) indices of the flattest tiles
    return _high_pass_energy(p, flat, patch, sigma), _high_pass_energy(t, flat, patch, sigma)


def tiles(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``(N, 1, H, W)`` -> ``(N, P, patch * patch)``: the grid of whole ``patch`` tiles."""
    n, _, h, w = x.shape
    rows, cols = h // patch, w // patch
    x = x[..., : rows * patch, : cols * patch].reshape(n, rows, patch, cols, patch)
    return x.permute(0, 1, 3, 2, 4).reshape(n, rows * cols, patch * patch)


def _high_pass_energy(y: torch.Tensor, chosen: torch.Tensor, patch: int, sigma: float) -> torch.Tensor:
    """Mean squared high-pass (``Y - blur(Y, sigma)``) of luma ``(N, 1, H, W)`` over the tiles
    ``chosen`` ``(N, K)``: ``(N,)``."""
    high = tiles(y - _gaussian_blur(y, sigma), patch).pow(2).mean(dim=-1)  # (N, P)
    return high.gather(1, chosen).mean(dim=1).float()


#: No-reference measures: the busiest tenth of each image's tiles are its edges; flat and busy
#: are judged on the bicubic upscale blurred by this sigma (structure, not the input's noise).
EDGE_FRACTION = 0.10
STRUCTURE_SIGMA = 2.0
#: Edge acutance: the strongest 2 % of pixels of the bicubic upscale (its gradient after a blur of
#: sigma 1) are the edges; there, the output's gradient (largest in 3x3) over its range in 7x7.
ACUTANCE_FRACTION = 0.02
ACUTANCE_WINDOW = 7


def no_reference_measures(pred: torch.Tensor, bicubic: torch.Tensor, patch: int = GRAIN_PATCH,
                          flat_fraction: float = GRAIN_FLAT_FRACTION, edge_fraction: float = EDGE_FRACTION,
                          sigma: float = GRAIN_SIGMA) -> dict[str, torch.Tensor]:  # fmt: skip
    """Flat-area noise and edge sharpness of upscales of a native low-res image, per image.

    ``pred`` and ``bicubic`` ``(N, 3, H, W)`` in [0, 1]: a method's output and the bicubic upscale
    of the same input. On luma, tiles of ``patch`` pixels are ranked by the variance of the bicubic
    upscale blurred by :data:`STRUCTURE_SIGMA`: the lowest ``flat_fraction`` are flat, the highest
    ``edge_fraction`` edges. Returns ``(N,)`` tensors: ``noise`` and ``noise_bicubic`` (mean squared
    high-pass on flat tiles, as :func:`flat_area_energies`), ``edge`` and ``edge_bicubic`` (mean
    gradient magnitude, central differences, on edge tiles; noise on those tiles raises it too) and
    ``acutance`` and ``acutance_bicubic`` (:func:`edge_acutance`: how steep the strongest edges are
    for their contrast; noise and texture off the edges do not move it, halos lower it).
    """
    _check_pair(pred, bicubic)
    p, b = rgb_to_y(pred).double(), rgb_to_y(bicubic).double()
    patch = max(1, min(patch, *b.shape[-2:]))
    structure = tiles(_gaussian_blur(b, STRUCTURE_SIGMA), patch).var(dim=-1)
    order = structure.argsort(dim=1)
    count = order.shape[1]
    flat = order[:, : max(1, round(flat_fraction * count))]
    edges = order[:, count - max(1, round(edge_fraction * count)) :]

    def gradient(y: torch.Tensor) -> torch.Tensor:
        return tiles(_gradient_magnitude(y), patch).mean(dim=-1).gather(1, edges).mean(dim=1).float()

    acutance, acutance_bicubic = edge_acutance(pred, bicubic)
    return {"noise": _high_pass_energy(p, flat, patch, sigma), "noise_bicubic": _high_pass_energy(b, flat, patch, sigma),
            "edge": gradient(p), "edge_bicubic": gradient(b), "acutance": acutance, "acutance_bicubic": acutance_bicubic}  # fmt: skip


def _gradient_magnitude(y: torch.Tensor) -> torch.Tensor:
    """Central-difference gradient magnitude of ``(N, 1, H, W)``, replicate-padded: same shape."""
    padded = torch.nn.functional.pad(y, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    return (gx**2 + gy**2).sqrt()


def edge_acutance(pred: torch.Tensor, bicubic: torch.Tensor, fraction: float = ACUTANCE_FRACTION,
                  window: int = ACUTANCE_WINDOW) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """How steep an upscale's strongest edges are for their contrast: ``(output (N,), bicubic (N,))``.

    ``pred`` and ``bicubic`` ``(N, 3, H, W)`` in [0, 1]. On luma, the edges are the ``fraction`` of
    pixels where the bicubic upscale, blurred by sigma 1, has the largest gradient. At each, the
    image's gradient magnitude (the largest in its 3x3 neighbourhood, so an edge one pixel off still
    counts) is divided by its range (max - min) in the ``window`` x ``window`` around it, and the
    quotients are averaged. For a step of any contrast blurred by a Gaussian of sigma ``s`` pixels
    (``s`` well under the window) this is about ``1 / (2.5 s)`` (tests/test_eval_native.py has the
    exact form): contrast-independent and higher when crisper; overshoot (halos) raises the range
    and lowers it; noise on flat areas does not reach it.
    A set's figure, as the others: ``sum(output) / sum(bicubic)``.
    """
    _check_pair(pred, bicubic)
    p, b = rgb_to_y(pred).double(), rgb_to_y(bicubic).double()
    strength = _gradient_magnitude(_gaussian_blur(b, 1.0)).flatten(1)
    edges = strength.topk(max(1, int(fraction * strength.shape[1])), dim=1).indices
    half = window // 2

    def acutance(y: torch.Tensor) -> torch.Tensor:
        steepest = torch.nn.functional.max_pool2d(_gradient_magnitude(y), 3, stride=1, padding=1)
        spread = torch.nn.functional.max_pool2d(y, window, stride=1, padding=half) + torch.nn.functional.max_pool2d(
            -y, window, stride=1, padding=half)  # fmt: skip
        return (steepest / spread.clamp_min(1e-3)).flatten(1).gather(1, edges).mean(dim=1).float()

    return acutance(p), acutance(b)
