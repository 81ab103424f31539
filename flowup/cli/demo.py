"""``flowup demo``: a local Gradio app (upload, upscale, compare, download) on 127.0.0.1.

Offline: no telemetry, no share link, nothing fetched from a CDN (:mod:`flowup.demo`). Needs the
``demo`` extra (``pip install "flowup[demo]"``); without it the command says so in one line and
exits 2 before loading anything. Gradio is imported only when the command runs, so
``flowup demo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

from flowup.cli.common import DEVICE_HELP, EXIT_OK, UsageError, port_int

__all__ = ["register", "run"]

EXAMPLES = """\
examples:
  flowup demo                               # http://127.0.0.1:7860, shipped model
  flowup demo --model runs/taef2-x2 --port 8080
  flowup demo --device cuda
  flowup demo --host 0.0.0.0                # reachable from other machines (no login: trusted networks only)

Stop it with Ctrl-C. The app runs one upscale at a time; the result downloads as PNG.
See docs/demo.md.
"""


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``demo`` subcommand (handler in ``func``)."""
    p = subparsers.add_parser(
        "demo",
        help="start a local web app to try the upscaler",
        description="Start a local, offline Gradio app: upload an image, choose scale, steps, detail and "
                    "seed, compare bicubic and flowup with a slider, see the timing, download the PNG.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--model", metavar="PATH",
                   help="model folder saved by FlowUpPipeline.save_pretrained (default: the shipped model)")  # fmt: skip
    p.add_argument("--device", default="auto", metavar="DEVICE", help=DEVICE_HELP)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 = all interfaces)")  # fmt: skip
    p.add_argument("--port", type=port_int, metavar="N", help="port (default: 7860, or the next free one)")
    p.set_defaults(func=run, prog_name="flowup")
    return p


def run(args: argparse.Namespace) -> int:
    """``flowup demo``: serves until Ctrl-C; returns the exit status."""
    from flowup.demo import require_gradio  # sets GRADIO_ANALYTICS_ENABLED=False before gradio loads

    try:
        require_gradio()  # before loading the model
    except ImportError as err:
        raise UsageError(str(err)) from None
    from flowup.demo import build_demo, launch, warm_up
    from flowup.loading import load_upscaler

    pipe = load_upscaler(args.model, args.device)
    print(f"flowup demo: model warmed up in {warm_up(pipe):.1f} s", file=sys.stderr, flush=True)
    demo = build_demo(pipe)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"flowup demo: listening on {args.host}: anyone who can reach this machine can use the app",
              file=sys.stderr)  # fmt: skip
    try:
        _, url, _ = launch(demo, host=args.host, port=args.port, block=False, quiet=True)
    except OSError:  # port taken, or an address that is not this machine's
        if args.port is None:
            where = "no free port from 7860 to 7959"
        else:
            where = f"port {args.port} is taken (or {args.host} is not an address of this machine)"
        raise UsageError(f"cannot serve on {args.host}: {where}; choose another --port") from None
    print(f"flowup demo: open {url} in a browser (Ctrl-C stops it)", flush=True)
    demo.block_thread()  # until Ctrl-C / SIGTERM, which close the server
    return EXIT_OK
