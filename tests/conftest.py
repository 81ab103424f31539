"""Shared pytest fixtures: tiny, randomly initialised flowup pipelines (CPU, seconds per test).

- ``tiny_pipeline``: a fresh :class:`flowup.FlowUpPipeline` with a two-level ``FlowUNet``
  (``block_out_channels=(32, 32)``, one layer per block, ``size_multiple == 2``) and a random
  ``TAEF2Codec``; the flow's output layer is randomly initialised (not zero), so outputs are not
  simply the decoded source. Defaults: 2 Euler steps, ``noise_alpha=0.9``.
- ``tiny_pipeline_dir``: a folder written by ``save_pretrained`` from an identical pipeline (codec
  weights included, since a random codec is not the standard TAEF2), shared by the whole session.
  Treat it as read-only.

Imports happen inside the fixtures so that a broken pipeline module only fails the tests that
use them.
"""

from __future__ import annotations

import os

import pytest
import torch

# Tests never download anything. Set before collection, which imports huggingface_hub (through
# diffusers) and fixes its offline switch then: set in a fixture, it came too late for the modules
# collected first, and gradio_client's hub headers reached out to huggingface.co.
os.environ.setdefault("FLOWUP_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

TINY_FLOW_KWARGS = dict(block_out_channels=(32, 32), layers_per_block=1, norm_num_groups=8)


def make_tiny_pipeline(seed: int = 0, **config):
    """Build the tiny pipeline deterministically from ``seed`` (extra kwargs go to the pipeline)."""
    from flowup import FlowUNet, FlowUpPipeline, TAEF2Codec

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        flow = FlowUNet(**TINY_FLOW_KWARGS)
        torch.nn.init.normal_(flow.unet.conv_out.weight, std=0.05)
        torch.nn.init.normal_(flow.unet.conv_out.bias, std=0.05)
        codec = TAEF2Codec()
    kwargs = dict(noise_alpha=0.9, default_num_inference_steps=2, default_solver="euler")
    kwargs.update(config)
    pipe = FlowUpPipeline(flow=flow.eval(), codec=codec.eval(), **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def cpu_engine_runtimes(pipe) -> list[str]:
    """The CPU engines (``onnx``, ``torch-bf16``) that can run ``pipe`` on this machine; at least one."""
    from flowup.onnx_runtime import onnx_unavailable_reason
    from flowup.runtimes import unavailable_reason

    runtimes = ["onnx"] if onnx_unavailable_reason(pipe.flow, pipe.codec, pipe.device) is None else []
    if unavailable_reason("torch-bf16", pipe.flow, pipe.codec, pipe.device) is None:
        runtimes.append("torch-bf16")
    assert runtimes, "no CPU engine available to test"
    return runtimes


@pytest.fixture
def tiny_pipeline():
    """A fresh tiny random FlowUpPipeline on CPU, float32 (safe to modify)."""
    return make_tiny_pipeline()


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory):
    """A read-only folder saved by ``make_tiny_pipeline().save_pretrained``."""
    folder = tmp_path_factory.mktemp("tiny_pipeline") / "pipeline"
    make_tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True, scope="session")
def _offline_and_own_cache(tmp_path_factory):
    """Tests write caches (ONNX exports) to a temporary folder (and, module level above, never download)."""
    previous = os.environ.get("FLOWUP_CACHE")
    os.environ["FLOWUP_CACHE"] = str(tmp_path_factory.mktemp("flowup_cache"))
    yield
    if previous is None:
        os.environ.pop("FLOWUP_CACHE", None)
    else:
        os.environ["FLOWUP_CACHE"] = previous
