"""What every ``flowup`` subcommand shares: exit codes, one-line errors (:mod:`flowup.errors`),
argument types, and SIGTERM handling (loading a model: :mod:`flowup.loading`).

Exit codes (all subcommands): 0 success, 1 some work failed (the rest was done), 2 usage error
(bad option, no model, unusable output location: nothing was done), 130 interrupted.
Nothing here imports torch at module level, so building the parser stays fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
from pathlib import Path

from flowup.errors import RunError, UsageError, one_line

__all__ = [
    "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_INTERRUPTED", "UsageError", "RunError", "one_line",
    "positive_int", "non_negative_int", "seed_int", "quality_int", "detail_float", "denoise_float", "detail_per_stage", "port_int", "check_output_location",
    "is_out_of_memory", "terminate_as_interrupt", "print_error", "DEVICE_HELP",
]  # fmt: skip

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes 0 .. 2**64 - 1
DEVICE_HELP = "where to run: auto (cuda if available), cpu, cuda, cuda:N, mps (default: auto)"


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


# ------------------------------------------------------------------------------ output location


def check_output_location(output: str, n_inputs: int) -> tuple[Path, bool]:
    """Check ``-o`` once, before any work: returns ``(path, single_file)``. Raises UsageError.

    A folder must be creatable and writable (created here); a single output file needs one input,
    a supported suffix and a writable folder."""
    from flowup.image_io import IMAGE_EXTENSIONS, SAVE_FORMATS

    out = Path(output).expanduser()
    suffix = out.suffix.lower()
    if suffix in IMAGE_EXTENSIONS and suffix not in SAVE_FORMATS and not out.is_dir():
        raise UsageError(f"-o {output}: flowup cannot write {suffix} files; use .png, .jpg or .webp")
    single_file = suffix in SAVE_FORMATS and not out.is_dir()
    if single_file and n_inputs != 1:
        raise UsageError(f"-o {output} names one file but there are {n_inputs} inputs; give a folder")
    folder = out.parent if single_file else out
    if single_file and out.exists() and not out.is_file():
        raise UsageError(f"-o {output}: exists and is not a file")
    for ancestor in (folder, *folder.parents):  # the first part of the path that exists must be a folder
        if ancestor.exists():
            if not ancestor.is_dir():
                raise UsageError(f"-o {output}: {ancestor} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"-o {output}: cannot create the folder {folder} ({err.strerror or one_line(err)})") from None
    try:
        probe, name = tempfile.mkstemp(prefix=".flowup-write-check-", dir=folder)
        os.close(probe)
        os.unlink(name)
    except OSError as err:
        raise UsageError(f"-o {output}: cannot write into {folder} ({err.strerror or one_line(err)})") from None
    return out, single_file


# ------------------------------------------------------------------------------ failures


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
