"""Loading a flowup model, and a base text-to-image pipeline, the one way every entry point does.

The CLI (``upscale``, ``generate``, ``demo``, ``export-onnx``), the ComfyUI node and the eval
harness call :func:`load_upscaler` and :func:`load_base_pipeline`; each failure is a
:class:`~flowup.errors.UsageError` (or :class:`BaseModelError`) with a one-line reason.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowup.errors import UsageError, one_line

if TYPE_CHECKING:
    import torch

    from flowup.pipeline import FlowUpPipeline

__all__ = ["BaseModelError", "load_base_pipeline", "load_upscaler", "resolve_device", "resolve_dtype"]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


class BaseModelError(RuntimeError):
    """The base model could not be loaded or run; the message is one line for the user."""


def load_upscaler(model: str | Path | None = None, device: str | torch.device = "auto", dtype: str = "auto",
                  runtime: str = "auto") -> FlowUpPipeline:  # fmt: skip
    """The flowup model at ``model`` (None: the shipped one) on ``device`` (a name, ``"auto"`` or a
    ``torch.device``) in ``dtype`` (:func:`resolve_dtype`), its runtime checked before any image
    (a runtime that cannot run here is a :class:`~flowup.errors.UsageError` now). Progress bars off."""
    import torch

    from flowup.model_folder import ModelNotFoundError, default_model_path
    from flowup.pipeline import FlowUpPipeline
    from flowup.runtimes import RuntimeUnavailableError

    device = device if isinstance(device, torch.device) else resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    try:
        folder = Path(model).expanduser() if model else default_model_path()
        pipe = FlowUpPipeline.from_pretrained(folder, torch_dtype=torch_dtype, runtime=runtime)
    except (ModelNotFoundError, FileNotFoundError) as err:
        raise UsageError(one_line(err)) from None
    except Exception as err:  # noqa: BLE001 - a broken model folder is reported in one line
        raise UsageError(f"cannot load the model from {model or 'the default location'}: {one_line(err)}") from None
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    try:
        pipe.active_runtime()  # e.g. runtime onnx where it cannot run: say so before any image
    except RuntimeUnavailableError as err:
        raise UsageError(f"--runtime {runtime}: {err}") from None
    return pipe


def resolve_device(name: str) -> torch.device:
    """``auto`` (cuda, else mps, else cpu) or a torch device name. Raises UsageError."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UsageError(f"--device {name!r}: {one_line(err)}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: no CUDA device is available here; use --device cpu")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` (float16 on GPUs, float32 on the CPU) or a dtype name. Raises UsageError for
    float16 on the CPU, which PyTorch runs about 10x slower than float32 there."""
    import torch

    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    if name == "float16" and device.type == "cpu":
        raise UsageError("--dtype float16 runs about 10x slower than float32 on a CPU; "
                         "use --dtype bfloat16, or auto (float32, with bfloat16 kernels where the CPU has AMX)")  # fmt: skip
    return getattr(torch, name)


def _is_offline_error(err: BaseException) -> bool:
    """A hub download that failed for want of a network (or with offline mode on), anywhere in the chain."""
    offline = {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectionError", "ConnectError",
               "TimeoutException", "ConnectTimeout", "NameResolutionError", "gaierror"}
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if {klass.__name__ for klass in type(err).__mro__} & offline:
            return True
        text = str(err).lower()
        if any(s in text for s in ("offline mode", "not fully cached locally", "couldn't connect", "cannot reach")):
            return True
        err = err.__cause__ or err.__context__
    return False


def load_base_pipeline(spec: str, dtype: torch.dtype | None = None) -> Any:
    """Load a diffusers text-to-image pipeline from a local folder or a hub id.

    Raises :class:`BaseModelError` with a one-line reason: missing folder, not a pipeline folder,
    not a text-to-image pipeline, missing weights, hub id not downloadable (offline / unknown).
    """
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline

    from flowup.text_to_image import is_text_to_image_pipeline

    path = Path(spec).expanduser()
    local = path.exists()
    if not local and not _HUB_ID.match(spec):
        raise BaseModelError(f"base model {spec!r}: no such folder")
    if local:
        if not path.is_dir():
            raise BaseModelError(f"base model {spec!r}: is a file; pass a diffusers pipeline folder")
        if not (path / "model_index.json").is_file():
            raise BaseModelError(f"base model {spec!r}: not a diffusers pipeline folder (no model_index.json)")
        try:
            class_name = json.loads((path / "model_index.json").read_text()).get("_class_name")
        except (OSError, ValueError, AttributeError):
            raise BaseModelError(f"base model {spec!r}: unreadable model_index.json") from None
        if class_name == "FlowUpPipeline":
            raise BaseModelError(
                f"base model {spec!r}: FlowUpPipeline is a flowup upscaler, not a text-to-image pipeline "
                "(pass it as --model)"
            )
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["torch_dtype"] = dtype
    try:
        with warnings.catch_warnings():  # diffusers >= 0.36 renames torch_dtype to dtype; older ones lack dtype
            warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
            pipe = DiffusionPipeline.from_pretrained(str(path) if local else spec, **kwargs)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line for the user
        if not local and _is_offline_error(err):
            raise BaseModelError(
                f"base model {spec!r}: not a local folder, and it cannot be downloaded from the Hugging Face Hub "
                "(offline or unreachable) nor found in the local cache"
            ) from None
        if not local and type(err).__name__ in ("RepositoryNotFoundError", "GatedRepoError", "RevisionNotFoundError"):
            raise BaseModelError(f"base model {spec!r}: not found on the Hugging Face Hub ({one_line(err)})") from None
        raise BaseModelError(f"base model {spec!r}: cannot load it ({one_line(err)})") from None
    if not is_text_to_image_pipeline(pipe):
        try:
            pipe = AutoPipelineForText2Image.from_pipe(pipe)
        except Exception:  # noqa: BLE001 - no text-to-image counterpart
            raise BaseModelError(
                f"base model {spec!r}: {type(pipe).__name__} is not a text-to-image pipeline"
            ) from None
    return pipe


