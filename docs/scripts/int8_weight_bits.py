"""Why the onnx-int8 runtime holds its weights to 7 bits (docs/speed.md).

    PYTHONPATH=. python docs/scripts/int8_weight_bits.py [--hr ../shared/data/val/Set14]

Quantizes the shipped model's codec twice (:func:`flowup.onnx_int8.quantize_graphs` with
8-bit and with 7-bit weights), upscales every image of ``--hr`` x2 at the model's defaults (seed 0)
with ONNX Runtime float32 and with each quantized export, and prints per image the PSNR (RGB)
against float32 and the PSNR-Y against the high-res image. On CPUs without VNNI, 8-bit weights let
ONNX Runtime's 16-bit pair sums saturate; the images that suffer show it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from eval.data import list_images, prepare_image
from eval.metrics import psnr_y
from flowup import FlowUpPipeline
from flowup.onnx_int8 import quantize_graphs
from flowup.onnx_runtime import OnnxEngine, export_onnx
from flowup.pipeline import default_model_path
from flowup.runtimes import Engine
from flowup.stage import X2Stage

VAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "val"


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(torch.mean((a.double() - b.double()) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hr", nargs="+", default=[str(VAL / "Set14")])
    args = parser.parse_args()
    pipe = FlowUpPipeline.from_pretrained(default_model_path(), runtime="torch")
    pipe.set_progress_bar_config(disable=True)
    engines = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, bits in (("float32", None), ("8-bit weights", 8), ("7-bit weights", 7)):
            folder = Path(tmp) / name.replace(" ", "-")
            export_onnx(pipe.flow, pipe.codec, folder)
            if bits is not None:
                quantize_graphs(folder, pipe.flow, pipe.codec, pipe.config.noise_alpha, 2, weight_bits=bits)
            engines[name] = OnnxEngine.load(folder)
        print(f"{'image':16s} " + " | ".join(f"{n}: vs float32 dB, PSNR-Y" for n in engines if n != "float32"))
        for path in list_images(args.hr):
            pair = prepare_image(path, 2, degrade_profile="torch-float")  # the protocol its figures were made with
            outputs = {}
            for name, engine in engines.items():
                networks = Engine(engine.velocity, engine.encoder_stages, engine.decoder_stages, pipe.flow, engine)
                pipe.x2_stage = lambda stage=0, denoise=None, e=networks: X2Stage(e, pipe.codec, 2, pipe.config.noise_alpha, pipe.device)
                outputs[name] = pipe(image=pair.lr, generator=torch.Generator().manual_seed(0), output_type="pt").images
            cells = [f"{psnr(outputs[n], outputs['float32']):5.1f}, {float(psnr_y(outputs[n], pair.hr, border=2).mean()):.2f}"
                     for n in engines if n != "float32"]  # fmt: skip
            print(f"{path.name:16s} float32 PSNR-Y {float(psnr_y(outputs['float32'], pair.hr, border=2).mean()):.2f} | " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
