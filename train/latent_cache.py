"""Latent-pair cache: encode (PSU source, high-res target) crops once, train from disk.

Encoding with the codec is far slower than a training step on a CPU, so ``prepare`` does it once:
for every image it takes random high-res crops (after an optional random downscale of large
photos, and a random horizontal flip), builds the low-res image by antialiased bicubic
downsampling, the pixel-space-upsampled source (PSU) by bicubic upsampling, and stores the two
codec latents ``src`` and ``hr`` (``(N, C, s/8, s/8)``, float16) in safetensors shards together
with the recipe that made them (``recipe.json`` and each shard's metadata).

Cascade-aware data for a later stage (``source_model``): the low-res image of each pair is not
the bicubic downsample of the crop but a model's upscale of a further downsampled one (a x2 model
given the crop's x4 downsample makes what the second stage of a x4 cascade sees at inference), so
the stage trains on its predecessor's output instead of on clean photos.

Degraded data (``degradation``): the low-res image of each pair is made by
:func:`flowup.degradations.degrade` (blur, random resize kernel, an autoencoder round trip, noise,
JPEG / WebP, 8 bits), each crop from its own seeded stream, so the model learns to clean what
generator outputs carry instead of keeping it.

Training then draws random sub-crops of these latents (:class:`LatentPairDataset`).
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from flowup.codecs import Codec, load_codec
from flowup.image_io import IMAGE_EXTENSIONS, ImageReadError, load_image
from flowup.resample import downsample, upsample

__all__ = ["CacheRecipe", "prepare_cache", "LatentPairDataset", "find_shards", "list_images", "residual_statistics"]

#: One latent cache folder, or several whose pairs are used together.
CacheDirs = str | Path | list[str] | list[Path]

log = logging.getLogger(__name__)


@dataclass
class CacheRecipe:
    """How a cache was made; stored beside it and checked when training reads it."""

    image_dirs: list[str] = field(default_factory=list)
    codec: str = "taef2"
    scale: int = 2
    crop_size: int = 320
    crops_per_image: int = 1
    extra_crop_min_side: int = 700
    random_downscale_min: float = 0.5
    #: Largest random downscale factor (1: none); below 1 every crop is downscaled first (cleaner
    #: targets: a generator's grain or a camera's noise averages out).
    random_downscale_max: float = 1.0
    hflip: bool = True
    seed: int = 0
    #: A model folder (or ``"shipped"``): the low-res image is its default upscale of the crop
    #: downsampled by ``scale`` times its own factor (cascade-aware data); None: bicubic downsample.
    source_model: str | None = None
    #: How the low-res image is degraded (:class:`flowup.degradations.Degradation` settings, as a
    #: mapping); None: the clean antialiased bicubic downsample.
    degradation: dict | None = None
    #: The autoencoder of the degradation's codec round trip (a codec spec); None: ``codec``.
    degradation_codec: str | None = None


def list_images(dirs: list[str | Path]) -> list[Path]:
    """All image files under the given folders (recursively), sorted."""
    files: list[Path] = []
    for d in dirs:
        d = Path(d)
        if d.is_file():
            files.append(d)
            continue
        if not d.is_dir():
            raise FileNotFoundError(f"image folder not found: {d}")
        files += [p for p in d.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files)


def _random_crops(image: torch.Tensor, recipe: CacheRecipe, rng: random.Random) -> list[torch.Tensor]:
    """Random ``crop_size`` crops of a ``(3, H, W)`` image; [] if it is too small."""
    size = recipe.crop_size
    _, h, w = image.shape
    short = min(h, w)
    if short < size:
        return []
    n = recipe.crops_per_image + (1 if short >= recipe.extra_crop_min_side else 0)
    crops = []
    for _ in range(n):
        img = image
        low = max(recipe.random_downscale_min, size / short)
        if low < 1.0:
            factor = rng.uniform(low, max(low, min(1.0, recipe.random_downscale_max)))
            new_h, new_w = max(size, round(h * factor)), max(size, round(w * factor))
            img = F.interpolate(image[None], size=(new_h, new_w), mode="bicubic", antialias=True)[0].clamp(0, 1)
        _, hh, ww = img.shape
        top, left = rng.randint(0, hh - size), rng.randint(0, ww - size)
        crop = img[:, top : top + size, left : left + size]
        if recipe.hflip and rng.random() < 0.5:
            crop = crop.flip(-1)
        crops.append(crop)
    return crops


@torch.no_grad()
def prepare_cache(
    recipe: CacheRecipe,
    out_dir: str | Path,
    codec: Codec | None = None,
    shard_size: int = 256,
    batch_size: int = 8,
    progress: bool = True,
    bf16: bool = False,
    resume: bool = False,
) -> int:
    """Encode crops of every image under ``recipe.image_dirs`` into ``out_dir``; returns the pairs
    the cache holds.

    Unreadable images are skipped with a warning. Shards are written atomically, so a killed run
    leaves only whole shards; ``resume=True`` keeps them and encodes the rest (the same recipe
    replays the same crops, so the finished cache equals an uninterrupted run's). A folder that
    already holds shards is refused without ``resume``. ``bf16``: encode with oneDNN bfloat16 on
    the CPU (:mod:`flowup.bf16_runtime`; about 4x faster with AMX, latents within about 50 dB of
    float32's).
    """
    if recipe.crop_size % (8 * recipe.scale):
        raise ValueError(f"crop_size must be a multiple of {8 * recipe.scale}")
    out_dir = Path(out_dir)
    kept_shards, kept_pairs = _shards_to_keep(recipe, out_dir, resume)
    codec = codec if codec is not None else load_codec(recipe.codec)
    make_low_res = _low_res_maker(recipe, codec)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("shard-*.tmp"):  # a shard being written when a run was killed
        stale.unlink()
    if bf16:
        from flowup.bf16_runtime import bf16_codec_stages
        from flowup.tiling import encode_tiled

        stages = bf16_codec_stages(codec)[0]
        encode = lambda x: encode_tiled(codec, x, 0, stages)  # noqa: E731
    else:
        encode = codec.encode
    files = list_images(recipe.image_dirs)
    if not files:
        raise FileNotFoundError(f"no images found under {recipe.image_dirs}")
    (out_dir / "recipe.json").write_text(json.dumps(asdict(recipe), indent=2))
    rng = random.Random(recipe.seed)
    pending: list[torch.Tensor] = []
    pending_index: list[int] = []  # each pending crop's number in the run (its degradation stream)
    crop_number = 0
    src_buf: list[torch.Tensor] = []
    hr_buf: list[torch.Tensor] = []
    shard_index, written, skipped = kept_shards, 0, 0
    to_replay = kept_pairs  # crops already in the kept shards: drawn again (same random stream), not encoded
    start = time.time()

    def encode_pending() -> None:
        if not pending:
            return
        hr = torch.stack(pending)
        src = upsample(make_low_res(hr, pending_index), recipe.scale)
        hr_buf.append(encode(hr.to(codec.device)).half().cpu())
        src_buf.append(encode(src.to(codec.device)).half().cpu())
        pending.clear()
        pending_index.clear()

    def flush_shard() -> None:
        nonlocal shard_index, written
        if not hr_buf:
            return
        tensors = {"hr": torch.cat(hr_buf).contiguous(), "src": torch.cat(src_buf).contiguous()}
        path = out_dir / f"shard-{shard_index:05d}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"recipe": json.dumps(asdict(recipe))})
        tmp.replace(path)
        written += tensors["hr"].shape[0]
        shard_index += 1
        hr_buf.clear()
        src_buf.clear()

    for path in tqdm(files, desc="encoding crops", unit="img", disable=not progress):
        try:
            image = load_image(path).rgb
        except ImageReadError as err:
            log.warning("skipping %s", err)
            skipped += 1
            continue
        for crop in _random_crops(image, recipe, rng):
            crop_number += 1
            if to_replay:
                to_replay -= 1
                continue
            pending.append(crop)
            pending_index.append(crop_number - 1)
            if len(pending) >= batch_size:
                encode_pending()
        if sum(x.shape[0] for x in hr_buf) >= shard_size:
            flush_shard()
    encode_pending()
    flush_shard()
    if kept_pairs:
        log.info("kept %d pairs in %d shards from the interrupted run", kept_pairs, kept_shards)
    log.info("wrote %d pairs in %d shards (%d unreadable images skipped) in %.0f s",
             written, shard_index - kept_shards, skipped, time.time() - start)
    return kept_pairs + written


def _shards_to_keep(recipe: CacheRecipe, out_dir: Path, resume: bool) -> tuple[int, int]:
    """(shards, pairs) already in ``out_dir`` that a resumed run keeps; (0, 0) for a fresh folder."""
    shards = sorted(out_dir.glob("shard-*.safetensors")) if out_dir.is_dir() else []
    if not shards:
        return 0, 0
    if not resume:
        raise FileExistsError(f"{out_dir} already holds {len(shards)} latent shards; pass --resume to finish "
                              "that cache, or choose an empty folder")
    if recipe.source_model is not None:
        raise ValueError("a cascade-aware cache (--source-model) cannot be resumed: its source model's random "
                         "stream is not replayed; start it again in an empty folder")
    stored = _with_defaults(_read_recipe(out_dir))
    wanted = json.loads(json.dumps(asdict(recipe)))
    changed = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    if changed:
        raise ValueError(f"cannot resume {out_dir}: its recipe differs in {', '.join(changed)}")
    expected = [out_dir / f"shard-{i:05d}.safetensors" for i in range(len(shards))]
    if shards != expected:
        raise ValueError(f"cannot resume {out_dir}: its shards are not numbered 0..{len(shards) - 1}")
    pairs = 0
    for shard in shards:
        with safe_open(str(shard), framework="pt") as f:
            pairs += f.get_slice("hr").get_shape()[0]
    return len(shards), pairs


def _low_res_maker(recipe: CacheRecipe, codec: Codec) -> Callable[[torch.Tensor, list[int]], torch.Tensor]:
    """``(N, 3, S, S)`` crops and their numbers in the run -> their low-res images
    ``(N, 3, S/scale, S/scale)``, per the recipe."""
    if recipe.degradation is not None:
        if recipe.source_model is not None:
            raise ValueError("a cache is either degraded or cascade-aware (--source-model), not both")
        return _degrader(recipe, codec)
    if recipe.source_model is None:
        return lambda hr, numbers: downsample(hr, recipe.scale)
    from flowup.model_folder import default_model_path
    from flowup.pipeline import FlowUpPipeline

    folder = default_model_path() if recipe.source_model == "shipped" else recipe.source_model
    pipe = FlowUpPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    factor = int(pipe.config.scale_factor)
    if recipe.crop_size % (8 * recipe.scale * factor):
        raise ValueError(f"crop_size must be a multiple of {8 * recipe.scale * factor} with a x{factor} source model")
    generator = torch.Generator().manual_seed(recipe.seed)  # one stream over the crops, in order

    def make(hr: torch.Tensor, numbers: list[int]) -> torch.Tensor:
        lr = downsample(hr, recipe.scale * factor)
        out = pipe(image=lr, scale=factor, generator=generator, output_type="pt")
        return out.images.clamp(0, 1)

    return make


def _degrader(recipe: CacheRecipe, codec: Codec) -> Callable[[torch.Tensor, list[int]], torch.Tensor]:
    """Degraded low-res images (:func:`flowup.degradations.degrade`); crop ``k`` of the run draws
    from its own stream ``Random((seed, k))``, so a resumed cache degrades each crop as before."""
    from flowup.degradations import degrade, grain_bank, load_degradation

    degradation = load_degradation(recipe.degradation)
    grain = grain_bank(degradation)
    round_codec = codec if recipe.degradation_codec in (None, recipe.codec) else load_codec(recipe.degradation_codec)

    def round_trip(image: torch.Tensor) -> torch.Tensor:
        return round_codec.decode(round_codec.encode(image.to(round_codec.device, round_codec.dtype))).float().cpu()

    def make(hr: torch.Tensor, numbers: list[int]) -> torch.Tensor:
        return torch.stack([
            degrade(crop, recipe.scale, degradation, random.Random(f"{recipe.seed}/{k}"), round_trip, grain)
            for crop, k in zip(hr.cpu(), numbers)
        ]).to(hr)  # fmt: skip

    return make


def _as_list(cache_dir: CacheDirs) -> list[str | Path]:
    return [cache_dir] if isinstance(cache_dir, (str, Path)) else list(cache_dir)


def _with_defaults(stored: dict) -> dict:
    """A stored recipe with the fields added since it was written at their defaults (which is
    what made it), its degradation's too."""
    from flowup.degradations import Degradation

    full = {**json.loads(json.dumps(asdict(CacheRecipe()))), **stored}
    if isinstance(full.get("degradation"), dict):
        full["degradation"] = {**Degradation().as_dict(), **full["degradation"]}
    return full


def _read_recipe(cache_dir: Path) -> dict:
    recipe = cache_dir / "recipe.json"
    return json.loads(recipe.read_text()) if recipe.exists() else {}


def find_shards(cache_dir: CacheDirs) -> list[Path]:
    """Every ``shard-*.safetensors`` under one cache folder or several (subfolders included:
    caches made in parts), in a fixed order. Raises ``FileNotFoundError`` for a folder with none."""
    shards: list[Path] = []
    for folder in _as_list(cache_dir):
        found = sorted(Path(folder).rglob("shard-*.safetensors"))
        if not found:
            raise FileNotFoundError(f"no latent shards in {folder}; run `python -m train prepare` first")
        shards += found
    return shards


class LatentPairDataset(Dataset):
    """Random ``latent_size`` sub-crops of cached latent pairs (all shards under ``cache_dir``,
    one folder or a list of folders, e.g. two caches of other random crops of the same photos).

    Item: ``{"src": (C, s, s), "hr": (C, s, s)}`` float32 (plus any further tensors the shards
    hold, same window). ``samples_per_epoch`` sets the epoch length (each item is a fresh random
    crop of a random pair).
    """

    def __init__(self, cache_dir: CacheDirs, latent_size: int = 32, samples_per_epoch: int | None = None):
        parts = [load_file(str(s)) for s in find_shards(cache_dir)]
        self.hr = torch.cat([p["hr"] for p in parts])
        self.src = torch.cat([p["src"] for p in parts])
        # Further tensors of the same shape (e.g. a distillation cache's "noise" and "target",
        # train.distill) are cropped with the same window and returned beside src / hr.
        self.extra = {k: torch.cat([p[k] for p in parts]) for k in sorted(parts[0]) if k not in ("hr", "src")}
        #: Each cache folder's recipe (``recipe.json``; ``{}`` where a folder has none), in order.
        self.recipes = {str(d): _read_recipe(Path(d)) for d in _as_list(cache_dir)}
        self.recipe = next(iter(self.recipes.values()))
        full = self.hr.shape[-1]
        if latent_size > full:
            raise ValueError(f"latent_size {latent_size} is larger than the cached latents ({full})")
        self.latent_size = latent_size
        self.samples_per_epoch = samples_per_epoch or len(self.hr)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        # Random pair (when the epoch length differs from the cache size) and random window, from
        # torch's global RNG (seeded by Lightning's seed_everything and per DataLoader worker).
        i = index % len(self.hr) if self.samples_per_epoch == len(self.hr) else int(torch.randint(len(self.hr), (1,)))
        s, full = self.latent_size, self.hr.shape[-1]
        top, left = (int(v) for v in torch.randint(full - s + 1, (2,)))
        window = (slice(None), slice(top, top + s), slice(left, left + s))
        item = {"src": self.src[i][window].float(), "hr": self.hr[i][window].float()}
        item.update({k: v[i][window].float() for k, v in self.extra.items()})
        return item


@torch.no_grad()
def residual_statistics(cache_dir: CacheDirs) -> tuple[list[float], list[float]]:
    """Per-channel mean and variance of ``hr - src`` over every cached pair (all shards of one
    cache folder or a list of them).

    These parametrise the Gaussian detail model of ``FlowUNet(source_skip="gaussian")``.
    Returns two lists of ``C`` floats.
    """
    shards = find_shards(cache_dir)
    total = total_sq = None
    count = 0
    for shard in shards:
        pair = load_file(str(shard))
        r = (pair["hr"].double() - pair["src"].double()).transpose(0, 1).flatten(1)  # (C, n)
        total = r.sum(1) if total is None else total + r.sum(1)
        total_sq = (r**2).sum(1) if total_sq is None else total_sq + (r**2).sum(1)
        count += r.shape[1]
    mean = total / count
    var = (total_sq / count - mean**2).clamp_min(1e-8)
    return mean.float().tolist(), var.float().tolist()
