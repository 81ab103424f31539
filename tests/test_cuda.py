"""CUDA: the shipped model in float16 / bfloat16 on a GPU against float32 on the CPU, compiled
against eager, and the runtime a GPU pipeline picks. Run on a GPU machine by gpu/check.sh; on a
machine without CUDA these tests are skipped (and not counted as passing)."""

from __future__ import annotations

import pytest
import torch

from flowup import FlowUpPipeline
from flowup.pipeline import default_model_path

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * torch.log10(((a.double().cpu() - b.double().cpu()) ** 2).mean()).item()


@pytest.fixture(scope="module")
def reference():
    image = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    pipe = FlowUpPipeline.from_pretrained(default_model_path(), runtime="torch")
    pipe.set_progress_bar_config(disable=True)
    return image, pipe(image=image, generator=torch.Generator().manual_seed(0), output_type="pt").images


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_output_matches_cpu_float32(reference, dtype):
    image, expected = reference
    pipe = FlowUpPipeline.from_pretrained(default_model_path(), torch_dtype=dtype).to("cuda")
    pipe.set_progress_bar_config(disable=True)
    assert pipe.active_runtime() == "torch"
    out = pipe(image=image.cuda(), generator=torch.Generator().manual_seed(0), output_type="pt").images
    assert out.shape == expected.shape and out.device.type == "cuda"
    assert _psnr(out.float(), expected) > (35 if dtype == torch.bfloat16 else 40)


def test_compiled_flow_matches_eager():
    pipe = FlowUpPipeline.from_pretrained(default_model_path(), torch_dtype=torch.float16).to("cuda")
    latent = torch.randn(2, pipe.codec.latent_channels, 64, 64, device="cuda", dtype=torch.float16)
    t = torch.full((2,), 0.3, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        eager = pipe.flow(latent, t, latent)
        compiled = torch.compile(pipe.flow)(latent, t, latent)
    torch.testing.assert_close(compiled, eager, atol=2e-2, rtol=2e-2)


def test_bench_gpu_rows_time_the_latent_path(tmp_path):
    import argparse

    from eval.bench import _gpu_rows

    args = argparse.Namespace(repeats=2, max_row_seconds=60.0)
    rows = _gpu_rows(default_model_path(), args, "cuda")
    latent = [r for r in rows if r.method.startswith("latent-only")]
    assert len(latent) == 3 and all(r.seconds and r.median > 0 for r in latent)
