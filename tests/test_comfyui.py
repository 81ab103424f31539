"""The ComfyUI nodes (flowup.comfyui, comfyui/__init__.py), called the way ComfyUI calls them:
``getattr(cls(), cls.FUNCTION)(**inputs)`` with the inputs built from ``INPUT_TYPES`` defaults, on
ComfyUI's ``IMAGE`` layout ``(B, H, W, C)`` float in [0, 1], with the tiny model (CPU, seconds).
ComfyUI itself is not installed: a fake ``comfy.utils`` / ``comfy.model_management`` stands in where
a test needs one."""

from __future__ import annotations

import importlib.util
import inspect
import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from flowup import comfyui as nodes
from flowup.comfyui import NODE_CLASS_MAPPINGS, FlowUpLoader, FlowUpUpscale

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINT = ROOT / "comfyui" / "__init__.py"
WORKFLOW = ROOT / "docs" / "comfyui_workflow.json"
PRIMITIVES = {"INT", "FLOAT", "STRING", "BOOLEAN"}
# The two core ComfyUI nodes the example workflow uses: their inputs and outputs (ComfyUI's nodes.py).
CORE_NODES = {
    "LoadImage": {"inputs": {"image": "COMBO"}, "outputs": ("IMAGE", "MASK")},
    "SaveImage": {"inputs": {"images": "IMAGE", "filename_prefix": "STRING"}, "outputs": ()},
}


def run_node(cls: type, **inputs: Any) -> tuple:
    """Call node ``cls`` as ComfyUI does, every required input at its default unless given."""
    kwargs = {name: spec[1]["default"] for name, spec in cls.INPUT_TYPES()["required"].items()
              if len(spec) > 1 and "default" in spec[1]}  # fmt: skip
    kwargs.update(inputs)
    result = getattr(cls(), cls.FUNCTION)(**kwargs)
    assert isinstance(result, tuple) and len(result) == len(cls.RETURN_TYPES)
    return result


def comfy_image(batch: int = 1, height: int = 8, width: int = 12, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """A ComfyUI IMAGE ``(B, H, W, C)`` float32 in [0, 1]."""
    return torch.rand(batch, height, width, channels, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model(tiny_pipeline_dir):
    """The tiny model through FlowUpLoader, on the CPU with PyTorch kernels (no ONNX export)."""
    (pipe,) = run_node(FlowUpLoader, model_path=str(tiny_pipeline_dir), device="cpu", runtime="torch")
    return pipe


@pytest.fixture
def fake_comfy(monkeypatch):
    """Install a fake ``comfy`` package (``comfy.utils.ProgressBar``, ``comfy.model_management``)
    in ``sys.modules``; returns it with ``bars`` (every ProgressBar made) and ``device_calls``."""
    comfy = types.ModuleType("comfy")
    comfy.__path__ = []
    comfy.bars, comfy.device_calls = [], []

    class ProgressBar:  # comfy.utils.ProgressBar's interface
        def __init__(self, total: float) -> None:
            self.total, self.current, self.values = total, 0, []
            comfy.bars.append(self)

        def update_absolute(self, value: float, total: float | None = None, preview: Any = None) -> None:
            self.total = self.total if total is None else total
            self.current = min(value, self.total)
            self.values.append(self.current)

    def get_torch_device() -> torch.device:
        comfy.device_calls.append(1)
        return torch.device("cpu")

    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    model_management = types.ModuleType("comfy.model_management")
    model_management.get_torch_device = get_torch_device
    for name, module in (("comfy", comfy), ("comfy.utils", utils), ("comfy.model_management", model_management)):
        monkeypatch.setitem(sys.modules, name, module)
    return comfy


# ------------------------------------------------------------------------------ node definitions


@pytest.mark.parametrize("name", sorted(NODE_CLASS_MAPPINGS))
def test_node_definitions_follow_comfyui_conventions(name):
    cls = NODE_CLASS_MAPPINGS[name]
    spec = cls.INPUT_TYPES()
    assert set(spec) <= {"required", "optional", "hidden"} and spec["required"]
    for input_name, entry in spec["required"].items():
        assert isinstance(entry, tuple) and 1 <= len(entry) <= 2, input_name
        kind, options = entry[0], (entry[1] if len(entry) == 2 else {})
        assert isinstance(options, dict), input_name
        if isinstance(kind, list):  # a combo: its default is one of its values
            assert kind and all(isinstance(v, str) for v in kind) and options.get("default", kind[0]) in kind
        elif kind in ("INT", "FLOAT"):
            number = int if kind == "INT" else float
            low, high, default = options["min"], options["max"], options["default"]
            assert all(isinstance(v, number) and not isinstance(v, bool) for v in (low, high, default)), input_name
            assert low <= default <= high, input_name
        elif kind == "STRING":
            assert isinstance(options.get("default", ""), str)
        else:  # a link type: IMAGE, or flowup's own
            assert kind in ("IMAGE", nodes.MODEL_TYPE), input_name
        assert isinstance(options.get("tooltip", ""), str)
    assert isinstance(cls.RETURN_TYPES, tuple) and all(isinstance(t, str) for t in cls.RETURN_TYPES)
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES) == len(cls.OUTPUT_TOOLTIPS)
    assert cls.CATEGORY == "image/upscaling" and cls.DESCRIPTION
    parameters = inspect.signature(getattr(cls(), cls.FUNCTION)).parameters
    assert list(parameters) == list(spec["required"])  # ComfyUI passes every input by name


def test_defaults_match_the_packaged_model():
    config = json.loads((ROOT / "flowup" / "pretrained" / "taef2-x2" / "model_index.json").read_text())
    required = FlowUpUpscale.INPUT_TYPES()["required"]
    assert required["steps"][1]["default"] == config["default_num_inference_steps"]
    assert required["back_projection"][1]["default"] == config["default_back_projection_steps"]
    from flowup.runtimes import RUNTIME_NAMES as RUNTIMES

    assert tuple(FlowUpLoader.INPUT_TYPES()["required"]["runtime"][0]) == RUNTIMES


def test_entry_point_loads_the_way_comfyui_loads_custom_nodes():
    # nodes.load_custom_node for a folder: the module is named after its path, dots replaced.
    module_name = str(ENTRY_POINT.parent).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(module_name, ENTRY_POINT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[module_name]
    assert module.NODE_CLASS_MAPPINGS == {"FlowUpLoader": FlowUpLoader, "FlowUpUpscale": FlowUpUpscale}
    assert set(module.NODE_DISPLAY_NAME_MAPPINGS) == set(module.NODE_CLASS_MAPPINGS)


def test_importing_the_nodes_loads_neither_torch_nor_comfyui():
    code = "import sys, flowup.comfyui; print(sorted(m for m in ('torch', 'diffusers', 'comfy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ loading


def test_loader_defaults_load_the_packaged_model():
    from flowup.model_folder import default_model_path

    (pipe,) = run_node(FlowUpLoader, device="cpu", runtime="torch")  # model_path "" = the packaged model
    assert Path(pipe.config._name_or_path) == default_model_path()
    assert pipe.flow.dtype == torch.float32  # dtype auto on the CPU


def test_loader_refuses_float16_on_the_cpu(tiny_pipeline_dir):
    with pytest.raises(ValueError, match="float16") as err:
        run_node(FlowUpLoader, model_path=str(tiny_pipeline_dir), device="cpu", dtype="float16")
    assert "--" not in str(err.value)  # node terms, not CLI options


def test_loader_auto_device_is_comfyuis(tiny_pipeline_dir, fake_comfy):
    (pipe,) = run_node(FlowUpLoader, model_path=str(tiny_pipeline_dir), runtime="torch")
    assert fake_comfy.device_calls and pipe.device.type == "cpu"


# ------------------------------------------------------------------------------ upscaling


def test_upscale_with_defaults(model):
    image = comfy_image(batch=2)
    (out,) = run_node(FlowUpUpscale, model=model, image=image)
    assert out.shape == (2, 16, 24, 3) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert 0 <= out.min() and out.max() <= 1
    assert (out[0] - out[1]).abs().max() > 0.05  # two different images stay two images


def test_scale_4(model):
    (out,) = run_node(FlowUpUpscale, model=model, image=comfy_image(), scale=4)
    assert out.shape == (1, 32, 48, 3) and 0 <= out.min() and out.max() <= 1


def test_seeds(model):
    image = comfy_image(batch=2)
    (first,) = run_node(FlowUpUpscale, model=model, image=image, seed=7)
    (again,) = run_node(FlowUpUpscale, model=model, image=image, seed=7)
    (other,) = run_node(FlowUpUpscale, model=model, image=image, seed=8)
    assert torch.equal(first, again)
    assert (first - other).abs().max() > 1e-3
    # image i of a batch uses seed + i, as `flowup generate` does: it matches that image alone
    (second_alone,) = run_node(FlowUpUpscale, model=model, image=image[1:], seed=8)
    torch.testing.assert_close(first[1:], second_alone, atol=1e-4, rtol=0)


def test_rgba_keeps_a_bicubic_alpha_and_greyscale_comes_back_rgb(model):
    from flowup.resample import upsample

    rgba = comfy_image(channels=4)
    (out,) = run_node(FlowUpUpscale, model=model, image=rgba)
    (rgb_only,) = run_node(FlowUpUpscale, model=model, image=rgba[..., :3])
    assert out.shape == (1, 16, 24, 4)
    torch.testing.assert_close(out[..., :3], rgb_only)
    torch.testing.assert_close(out[..., 3], upsample(rgba[..., 3][:, None], 2)[:, 0])
    (grey,) = run_node(FlowUpUpscale, model=model, image=rgba[..., :1])
    assert grey.shape == (1, 16, 24, 3)


def test_nodes_run_in_inference_mode_with_the_auto_runtime(tiny_pipeline_dir, model):
    # ComfyUI runs every node under torch.inference_mode(), with the runtime `auto` picks on a CPU.
    image = comfy_image()
    with torch.inference_mode():
        (pipe,) = run_node(FlowUpLoader, model_path=str(tiny_pipeline_dir), device="cpu")
        (out,) = run_node(FlowUpUpscale, model=pipe, image=image)
    (reference,) = run_node(FlowUpUpscale, model=model, image=image)  # PyTorch kernels, float32
    assert out.shape == reference.shape
    torch.testing.assert_close(out, reference, atol=0.02, rtol=0)  # bfloat16 kernels are near, not equal


def test_slight_overshoot_is_clamped_and_bad_layouts_are_refused(model):
    (out,) = run_node(FlowUpUpscale, model=model, image=comfy_image() * 1.002 - 0.001)
    assert out.shape == (1, 16, 24, 3)
    with pytest.raises(ValueError, match=r"\(B, H, W"):
        run_node(FlowUpUpscale, model=model, image=comfy_image().movedim(-1, 1))  # (B, C, H, W)


def test_progress_bar_reaches_its_total(model, fake_comfy):
    run_node(FlowUpUpscale, model=model, image=comfy_image(batch=2))
    (bar,) = fake_comfy.bars
    assert bar.total == nodes.PROGRESS_STEPS and bar.current == bar.total
    assert bar.values == sorted(bar.values) and len(set(bar.values)) > 2  # moves through the work


# ------------------------------------------------------------------------------ the example workflow


def test_example_workflow_is_valid_and_runs(model, tiny_pipeline_dir, tmp_path):
    """docs/comfyui_workflow.json (API format): every input a valid value or a link to an output of the
    right type; then run it in order, LoadImage / SaveImage played by stand-ins, on the tiny model."""
    workflow = json.loads(WORKFLOW.read_text())

    def output_type(link: list) -> str:
        source = workflow[link[0]]["class_type"]
        outputs = CORE_NODES[source]["outputs"] if source in CORE_NODES else NODE_CLASS_MAPPINGS[source].RETURN_TYPES
        return outputs[link[1]]

    for node_id, node in workflow.items():
        if node["class_type"] in CORE_NODES:
            assert set(node["inputs"]) == set(CORE_NODES[node["class_type"]]["inputs"]), node_id
            for name, kind in CORE_NODES[node["class_type"]]["inputs"].items():
                value = node["inputs"][name]
                assert output_type(value) == kind if isinstance(value, list) else isinstance(value, str), node_id
            continue
        required = NODE_CLASS_MAPPINGS[node["class_type"]].INPUT_TYPES()["required"]
        assert set(node["inputs"]) == set(required), node_id
        for name, (kind, *rest) in required.items():
            value, options = node["inputs"][name], (rest[0] if rest else {})
            if isinstance(kind, list):
                assert value in kind, (node_id, name)
            elif kind in PRIMITIVES:
                assert not isinstance(value, list), (node_id, name)
                assert options.get("min", value) <= value <= options.get("max", value), (node_id, name)
            else:
                assert output_type(value) == kind, (node_id, name)

    from PIL import Image

    Image.fromarray((comfy_image(height=16, width=16)[0].numpy() * 255).astype("uint8")).save(tmp_path / "example.png")
    results: dict[str, tuple] = {}
    saved: list[torch.Tensor] = []
    for node_id, node in sorted(workflow.items(), key=lambda item: int(item[0])):  # ids are in dependency order
        inputs = {k: results[v[0]][v[1]] if isinstance(v, list) else v for k, v in node["inputs"].items()}
        if node["class_type"] == "LoadImage":
            with Image.open(tmp_path / inputs["image"]) as img:
                pixels = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255)
            results[node_id] = (pixels[None], torch.zeros(1, 16, 16))
        elif node["class_type"] == "SaveImage":
            saved.append(inputs["images"])
        else:
            if node["class_type"] == "FlowUpLoader":  # the tiny model instead of the packaged one
                inputs.update(model_path=str(tiny_pipeline_dir), device="cpu", runtime="torch")
            results[node_id] = run_node(NODE_CLASS_MAPPINGS[node["class_type"]], **inputs)
    (image,) = saved
    assert image.shape == (1, 32, 32, 3) and 0 <= image.min() and image.max() <= 1


def test_detail_default_is_the_models_default_for_the_scale(model):
    image = comfy_image()
    for scale in (2, 4):
        (default,) = run_node(FlowUpUpscale, model=model, image=image, scale=scale)
        expected = 1.0 if scale == 2 else model.config.get("default_cascade_detail", 1.0)
        (explicit,) = run_node(FlowUpUpscale, model=model, image=image, scale=scale, detail=expected)
        assert torch.equal(default, explicit)
