"""A flowup model folder on disk, and how :class:`~flowup.pipeline.FlowUpPipeline` saves and loads it.

Layout (diffusers' pipeline layout): ``model_index.json`` (the pipeline config and its components),
``flow/`` (the velocity network: ``config.json`` + safetensors), optionally ``cascade_flow/`` (the
network of the later stages of a x4 / x8 cascade, trained on the first stage's outputs) and
``faithful_flow/`` (the denoise control's faithful end, :mod:`flowup.denoise`) and, unless the codec is the
standard TAEF2 (recorded as ``codec_spec: "taef2"`` and rebuilt from the packaged weights),
``codec/``. Loading imports component classes only from ``flowup`` or ``diffusers`` (a folder
cannot make flowup run other code) and checks the config before reading any weights.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from flowup.codecs import TAEF2Codec, load_codec
from flowup.errors import one_line
from flowup.solver import ADAPTIVE_METHODS, FIXED_STEP_METHODS

__all__ = ["ModelNotFoundError", "DEFAULT_CONFIG", "DEFAULT_MODEL_DIR", "DEFAULT_NOISE_ALPHA", "OPTIONAL_NETWORKS", "default_model_path", "check_config",
           "save_model_folder", "load_model_folder"]  # fmt: skip

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "pretrained" / "taef2-x2"
# The source's noise augmentation a: 0.9 in the training recipe (train.module.FlowMatchingModule) and
# every model trained here (the paper noises its source to step 400 of 1000 of a cosine schedule, a ~ 0.654).
DEFAULT_NOISE_ALPHA = 0.9
#: A pipeline config's defaults (a model folder's ``model_index.json`` may leave any of them out).
DEFAULT_CONFIG: dict[str, Any] = {
    "noise_alpha": DEFAULT_NOISE_ALPHA,
    "scale_factor": 2,
    "default_num_inference_steps": 1,
    "default_solver": "euler",
    "codec_spec": None,
    "default_back_projection_steps": 0,
    "default_cascade_detail": 1.0,
    "default_denoise": 0.0,
}
_CONFIG_KEYS = tuple(DEFAULT_CONFIG)
#: The optional networks a model folder may hold beside ``flow/``, each in a folder of its name.
OPTIONAL_NETWORKS = ("cascade_flow", "faithful_flow")


class ModelNotFoundError(FileNotFoundError):
    """No model folder where one was expected."""


def default_model_path() -> Path:
    """The shipped model folder (``flowup/pretrained/taef2-x2``); raises while none ships."""
    if not (DEFAULT_MODEL_DIR / "model_index.json").is_file():
        raise ModelNotFoundError(
            f"no trained flowup model is installed (looked for {DEFAULT_MODEL_DIR}); pass --model PATH, "
            "a folder written by FlowUpPipeline.save_pretrained"
        )
    return DEFAULT_MODEL_DIR


def check_config(
    noise_alpha: Any = DEFAULT_CONFIG["noise_alpha"],
    scale_factor: Any = DEFAULT_CONFIG["scale_factor"],
    default_num_inference_steps: Any = DEFAULT_CONFIG["default_num_inference_steps"],
    default_solver: Any = DEFAULT_CONFIG["default_solver"],
    default_back_projection_steps: Any = DEFAULT_CONFIG["default_back_projection_steps"],
    codec_spec: Any = DEFAULT_CONFIG["codec_spec"],
    default_cascade_detail: Any = DEFAULT_CONFIG["default_cascade_detail"],
    default_denoise: Any = DEFAULT_CONFIG["default_denoise"],
) -> None:
    """Raise ValueError naming the first bad value of a pipeline config (NaN, negative steps ...)."""

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if scale_factor not in (2, 4) or isinstance(scale_factor, bool):
        raise ValueError(f"only x2 and x4 flow models are supported (scale_factor 2 or 4), got {scale_factor!r}")
    if default_solver not in FIXED_STEP_METHODS + ADAPTIVE_METHODS:
        raise ValueError(f"unknown solver {default_solver!r}; choose one of {FIXED_STEP_METHODS + ADAPTIVE_METHODS}")
    if not isinstance(noise_alpha, (int, float)) or isinstance(noise_alpha, bool) or not 0 < noise_alpha <= 1:
        raise ValueError(f"noise_alpha must be a number in (0, 1], got {noise_alpha!r}")  # NaN fails the range too
    if not is_int(default_num_inference_steps) or default_num_inference_steps < 1:
        raise ValueError(f"default_num_inference_steps must be an integer >= 1, got {default_num_inference_steps!r}")
    if not is_int(default_back_projection_steps) or default_back_projection_steps < 0:
        raise ValueError(f"default_back_projection_steps must be an integer >= 0, got {default_back_projection_steps!r}")
    if isinstance(default_cascade_detail, bool) or not isinstance(default_cascade_detail, (int, float)) \
            or not 0 <= default_cascade_detail <= 2:  # fmt: skip
        raise ValueError(f"default_cascade_detail must be a number in [0, 2], got {default_cascade_detail!r}")
    if isinstance(default_denoise, bool) or not isinstance(default_denoise, (int, float)) or not 0 <= default_denoise <= 1:
        raise ValueError(f"default_denoise must be a number in [0, 1], got {default_denoise!r}")
    if codec_spec is not None and not isinstance(codec_spec, str):
        raise ValueError(f"codec_spec must be a string, got {codec_spec!r}")


def save_model_folder(pipe: Any, save_directory: str | Path, save_codec: bool | None = None,
                      torch_dtype: torch.dtype | None = None, **kwargs: Any) -> None:  # fmt: skip
    """Write ``pipe`` (a FlowUpPipeline) to ``save_directory``; see ``FlowUpPipeline.save_pretrained``."""
    import diffusers

    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    codec_spec = pipe.config.codec_spec
    if save_codec is None:
        save_codec = not _is_standard_taef2(pipe.codec)
        codec_spec = codec_spec if save_codec else "taef2"
    elif not save_codec and codec_spec is None:
        if not _is_standard_taef2(pipe.codec):
            raise ValueError("save_codec=False needs a codec_spec in the config to rebuild the codec from")
        codec_spec = "taef2"

    def prepared(module: torch.nn.Module) -> torch.nn.Module:
        return cast_module(copy.deepcopy(module), torch_dtype) if torch_dtype is not None else module

    prepared(pipe.flow).save_pretrained(folder / "flow", safe_serialization=True, **kwargs)
    optional = {name: getattr(pipe, name, None) for name in OPTIONAL_NETWORKS}
    for name, network in optional.items():
        if network is not None:
            prepared(network).save_pretrained(folder / name, safe_serialization=True, **kwargs)
    index = dict(pipe.config)
    for key in ("_name_or_path", "_module"):
        index.pop(key, None)
    index["_class_name"] = type(pipe).__name__
    index["_diffusers_version"] = diffusers.__version__
    index["codec_spec"] = codec_spec
    index["flow"] = list(_library_and_class(pipe.flow))
    for name, network in optional.items():
        if network is not None:
            index[name] = list(_library_and_class(network))
        else:
            index.pop(name, None)
    if save_codec:
        prepared(pipe.codec).save_pretrained(folder / "codec", safe_serialization=True, **kwargs)
        index["codec"] = list(_library_and_class(pipe.codec))
    else:
        index["codec"] = [None, None]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def load_model_folder(
    path: str | Path, codec: torch.nn.Module | None = None, torch_dtype: torch.dtype | None = None, **kwargs: Any
) -> tuple[Path, dict[str, Any], torch.nn.Module, torch.nn.Module, dict[str, torch.nn.Module | None]]:
    """Read a model folder (or a hub id, downloaded by diffusers):
    ``(folder, config, flow, codec, optional)``, ``optional`` mapping each of
    :data:`OPTIONAL_NETWORKS` to its network (None where the folder has none).

    Raises :class:`ModelNotFoundError` for a missing folder or component, ValueError for a bad
    config (checked before any weights are read)."""
    from diffusers import DiffusionPipeline

    folder = Path(path).expanduser()
    if not folder.is_dir():
        if folder.exists() or str(path).count("/") != 1:
            raise ModelNotFoundError(f"{path}: not a model folder (no such directory)")
        from flowup.weights import is_offline

        if is_offline():
            kwargs = {**kwargs, "local_files_only": True}  # offline means offline: the local hub cache only
        try:
            folder = Path(DiffusionPipeline.download(str(path), **kwargs))
        except Exception as err:  # noqa: BLE001 - one clear line for any hub failure
            raise ModelNotFoundError(
                f"{path}: no such folder, and downloading it failed "
                f"({one_line(err)})"
            ) from None
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise ModelNotFoundError(f"{folder}: not a flowup model folder (no model_index.json)")
    try:
        index = json.loads(index_path.read_text())
    except ValueError as err:
        raise ValueError(f"{index_path}: not valid JSON ({err})") from None
    params = {k: index[k] for k in _CONFIG_KEYS if k in index}
    try:
        check_config(**params)
    except ValueError as err:
        raise ValueError(f"{index_path}: {err}") from None
    flow = _load_component(folder, "flow", index.get("flow"), torch_dtype)
    optional = {}
    for name in OPTIONAL_NETWORKS:
        entry = index.get(name)
        optional[name] = _load_component(folder, name, entry, torch_dtype).eval() if entry and entry[0] is not None else None
    if codec is None:
        library, class_name = index.get("codec") or (None, None)
        if library is not None and (folder / "codec").is_dir():
            codec = _load_component(folder, "codec", (library, class_name), torch_dtype)
        elif index.get("codec_spec"):
            codec = load_codec(index["codec_spec"])
        else:
            raise ModelNotFoundError(f"{folder}: no codec/ folder and no codec_spec in model_index.json")
    if torch_dtype is not None:
        codec = cast_module(codec, torch_dtype)
    return folder, params, flow.eval(), codec.eval(), optional


def cast_module(module: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast weights to ``dtype`` (plain ``nn.Module.to``: diffusers' override only adds a spurious
    "modules that should be kept in float32: []" warning here)."""
    return torch.nn.Module.to(module, dtype=dtype)


def _library_and_class(module: torch.nn.Module) -> tuple[str, str]:
    """``("flowup", "FlowUNet")``-style entry for ``model_index.json``."""
    return type(module).__module__.split(".")[0], type(module).__name__


def _load_component(folder: Path, name: str, entry: Any, torch_dtype: torch.dtype | None) -> torch.nn.Module:
    if not entry or entry[0] is None:
        raise ModelNotFoundError(f"{folder}: model_index.json has no {name!r} component")
    library, class_name = entry
    if library == "diffusers" or library == "flowup":
        klass = getattr(importlib.import_module(library), class_name, None)
    else:
        raise ValueError(f"{folder}: refusing to import component {name!r} from library {library!r}")
    if klass is None:
        raise ValueError(f"{folder}: {library} has no class {class_name!r} (component {name!r})")
    if not (folder / name).is_dir():
        raise ModelNotFoundError(f"{folder}: missing the {name}/ folder")
    options: dict[str, Any] = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    if importlib.util.find_spec("accelerate") is None:
        options["low_cpu_mem_usage"] = False  # the default would only warn that accelerate is missing
    module = klass.from_pretrained(folder / name, **options)
    return module.eval().requires_grad_(False)


def _is_standard_taef2(codec: torch.nn.Module) -> bool:
    """True when ``codec`` is a TAEF2Codec holding the standard weights (the packaged ones)."""
    if type(codec) is not TAEF2Codec:
        return False
    from flowup.weights import WeightsNotFoundError, find_taef2_weights, load_taef2_state

    try:
        folder = find_taef2_weights(download=False)
    except WeightsNotFoundError:
        return False
    for name, module in (("encoder", codec.encoder), ("decoder", codec.decoder)):
        reference = load_taef2_state(folder, name)
        state = module.state_dict()
        if reference.keys() != state.keys():
            return False
        for key, value in reference.items():
            if not torch.equal(state[key].detach().cpu().to(value.dtype), value):
                return False
    return True
