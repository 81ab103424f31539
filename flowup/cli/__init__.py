"""The ``flowup`` command line: ``flowup upscale``, ``flowup generate``, ``flowup export-onnx``, ``flowup demo``.

One module per subcommand (:mod:`flowup.cli.upscale`, :mod:`flowup.cli.generate`,
:mod:`flowup.cli.export_onnx`), each with a ``register(subparsers)`` and a ``run(args) -> int``;
what they share (exit codes, one-line errors, device / dtype, argument types) is in
:mod:`flowup.cli.common`. Exit status: 0 success, 1 some work failed, 2 usage error, 130 interrupted.

Building the parser imports neither torch nor diffusers (``flowup --help`` answers at once); they
are imported when a command runs.
"""

from __future__ import annotations

import argparse
import sys

from flowup.cli import demo, export_onnx, generate, upscale
from flowup.cli.common import EXIT_INTERRUPTED, EXIT_USAGE, UsageError, print_error, terminate_as_interrupt

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    """The ``flowup`` parser with its subcommands."""
    parser = argparse.ArgumentParser(
        prog="flowup",
        description="flowup: a flow-matching latent upscaler (turns small images into sharp large ones).",
        epilog="Run 'flowup COMMAND --help' for a command's options and examples.",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    upscale.register(subparsers)
    generate.register(subparsers)
    export_onnx.register(subparsers)
    demo.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``flowup`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    terminate_as_interrupt()
    try:
        return args.func(args)
    except UsageError as err:
        print_error(args.prog_name, str(err))
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{args.prog_name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
