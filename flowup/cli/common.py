"""What every ``flowup`` subcommand shares: exit codes, one-line errors, argument types, device and
dtype choice, and SIGTERM handling.

Exit codes (all subcommands): 0 success, 1 some work failed (the rest was done), 2 usage error
(bad option, no model, unusable output location: nothing was done), 130 interrupted.
Nothing here imports torch at module level, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = [
    "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "UsageError", "RunError", "one_line",
    "positive_int", "non_negative_int", "seed_int", "quality_int", "detail_float", "denoise_float", "detail_per_stage", "port_int", "resolve_device", "resolve_dtype",
    "is_out_of_memory", "terminate_as_interrupt", "print_error", "DEVICE_HELP",
]  # fmt: skip

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes 0 .. 2**64 - 1
DEVICE_HELP = "where to run: auto (cuda if available), cpu, cuda, cuda:N, mps (default: auto)"


class UsageError(Exception):
    """A problem with the command line as a whole, found before any work (exit status 2)."""


class RunError(Exception):
    """The work itself failed (exit status 1); the message is one line for the user."""


def one_line(err: BaseException) -> str:
    """The first line of an exception's message, prefixed with its type unless it speaks for itself."""
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(err, (UsageError, RunError, FileNotFoundError, ValueError)) and first:
        return first
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


# ------------------------------------------------------------------------------ argument types


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def seed_int(text: str) -> int:
    """argparse type: a seed in 0 .. 2**64 - 1 (what ``torch.Generator.manual_seed`` takes)."""
    value = _int(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**64 - 1, got {text}")
    return value


def quality_int(text: str) -> int:
    """argparse type: a JPEG / WebP quality in 1 .. 100."""
    value = _int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100, got {text}")
    return value


def _number_between(low: float, high: float, what: str):
    """An argparse type: a number in ``low .. high`` (``what`` names it in the docstring)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not low <= value <= high:  # NaN fails too
            raise argparse.ArgumentTypeError(f"must be between {low:g} and {high:g}, got {text}")
        return value

    parse.__doc__ = f"argparse type: the pipeline's ``{what}``, a number in {low:g} .. {high:g}."
    return parse


detail_float = _number_between(0, 2, "detail")
denoise_float = _number_between(0, 1, "denoise")


def detail_per_stage(text: str) -> float | tuple[float, ...]:
    """argparse type: ``X`` (every stage) or ``X,Y[,Z]`` (one per x2 stage), each in 0 .. 2."""
    values = tuple(detail_float(part.strip()) for part in text.split(","))
    return values[0] if len(values) == 1 else values


def port_int(text: str) -> int:
    """argparse type: a TCP port, 1 .. 65535."""
    value = _int(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be between 1 and 65535, got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


# ------------------------------------------------------------------------------ device and dtype


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


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA / CPU out-of-memory errors, whatever their type."""
    import torch

    if isinstance(err, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(err, RuntimeError) and "out of memory" in str(err).lower()


# ------------------------------------------------------------------------------ signals


def terminate_as_interrupt() -> None:
    """Make SIGTERM behave like Ctrl-C: the same clean-up (temporary files removed), exit 130."""

    def handler(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a library): leave signals alone
        pass


def print_error(prog: str, message: str) -> None:
    """``prog: error: message`` on stderr, one line."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
