"""flowup's evaluation harness: quality and cost of flowup against baselines.

Run it as ``python -m eval run --config configs/eval/set14.yaml`` (or with flags: ``--hr DIR
--methods bicubic psu flowup:euler:4 --scale 2``) and ``python -m eval t2i ...`` for the
text-to-image comparison. See ``docs/evaluation.md`` for conventions and the current table.

Modules: :mod:`eval.data` (high-res images, crops, low-res inputs), :mod:`eval.methods` (the
method registry: baselines, flowup, diffusers upscalers), :mod:`eval.metrics` (PSNR / SSIM on Y,
FID / KID, patch grids, LPIPS), :mod:`eval.features` (offline FID feature extractor),
:mod:`eval.timing` (wall time, peak memory), :mod:`eval.harness` (one evaluation run),
:mod:`eval.report` and :mod:`eval.plots` (result files), :mod:`eval.t2i` (text-to-image mode),
:mod:`eval.cli` (the command line).
"""
