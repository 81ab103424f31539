"""The lean codec's distillation (train/lean_codec.py): the student, the data, the loss, the export."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowup.codecs import TAEF2Codec
from flowup.pipeline import FlowUpPipeline
from train.lean_codec import LeanCodecDistillation, LowResCrops, export_codec, fit_main, lean_student


@pytest.fixture(scope="module")
def teacher():
    return TAEF2Codec.from_taesd_weights()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lean_images")
    rng = np.random.default_rng(0)
    for i in range(3):
        smooth = np.kron(rng.random((12, 12, 3)), np.ones((8, 8, 1)))  # blocks: something to learn
        Image.fromarray((smooth * 255).astype("uint8")).save(folder / f"{i}.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def test_student_shares_every_layer_but_the_new_stem_and_head(teacher):
    same = lean_student(teacher, "full", "full").eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(same.encode(x), teacher.encode(x))
        z = teacher.encode(x)
        assert torch.equal(same.decode(z), teacher.decode(z))
    lean = lean_student(teacher, "space_to_depth", "pixel_shuffle")
    t_enc, s_enc = teacher.encoder, lean.encoder
    for offset in range(len(t_enc) - t_enc.stem_length):
        t_state, s_state = t_enc[t_enc.stem_length + offset].state_dict(), s_enc[s_enc.stem_length + offset].state_dict()
        assert all(torch.equal(t_state[k], s_state[k]) for k in t_state)
    for i in range(len(teacher.decoder) - teacher.decoder.head_length):
        t_state, s_state = teacher.decoder[i].state_dict(), lean.decoder[i].state_dict()
        assert all(torch.equal(t_state[k], s_state[k]) for k in t_state)


def test_low_res_crops_are_seeded_upsamples_and_skip_broken_files(images):
    with pytest.warns(UserWarning, match="1 unreadable image"):
        data = LowResCrops([str(images)], crop=32, pool_crop=48, crops_per_image=2, samples_per_epoch=10, seed=3)
    assert len(data.pool) == 6 and len(data.skipped) == 1
    item = data[4]["x_up"]
    assert item.shape == (3, 32, 32) and 0 <= item.min() and item.max() <= 1
    assert torch.equal(item, data[4]["x_up"]) and not torch.equal(item, data[5]["x_up"])
    # a clean item is the bicubic upsample of an 8-bit image of half the size
    low = torch.nn.functional.interpolate(item[None], scale_factor=0.5, mode="area")
    assert low.shape[-1] == 16


def test_stem_and_head_learn_what_they_replace(teacher, images):
    torch.manual_seed(0)
    data = LowResCrops([str(images)], crop=32, pool_crop=48, samples_per_epoch=8)
    batch = torch.stack([data[i]["x_up"] for i in range(8)])
    for part, inputs in (("encoder", batch), ("decoder", teacher.encode(batch))):
        module = LeanCodecDistillation(part=part, lr=3e-3)
        params = [p for m in module.trained_layers() for p in m.parameters()]
        assert params and all(p.requires_grad for p in params)
        frozen = [p for p in module.student.parameters() if not any(p is q for q in params)]
        assert frozen and not any(p.requires_grad for p in frozen)
        optimizer = torch.optim.Adam(params, lr=3e-3)
        losses = []
        for _ in range(30):
            loss, _ = module._encoder_loss(inputs) if part == "encoder" else module._decoder_loss(inputs)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        assert losses[-1] < 0.5 * losses[0], (part, losses[0], losses[-1])


def test_fit_codec_and_export_into_a_model(images, tiny_pipeline_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = ["--trainer.max_steps", "2", "--trainer.logger", "false", "--trainer.enable_checkpointing", "true",
              "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.precision", "32-true",
              "--trainer.callbacks", "null", "--data.batch_size", "2", "--data.samples_per_epoch", "4"]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    fit_main(["fit", "--config", str(root / "configs/train/lean_codec_encoder.yaml"), "--data.image_dirs",
              f"[{images}]", "--data.crop", "32", "--data.pool_crop", "48", "--data.degradation",
              str(root / "configs/degradations/lean_codec_inputs.yaml"), *common])  # fmt: skip
    checkpoints = sorted((tmp_path / "run").rglob("*.ckpt"))
    assert checkpoints
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=True)["state_dict"]
    assert state and not any(k.startswith("teacher.") for k in state)  # the teacher is rebuilt, not stored
    codec = export_codec(checkpoints[-1], None, tmp_path / "codec")
    assert codec.config.encoder_stem == "space_to_depth" and codec.config.decoder_head == "full"
    from safetensors.torch import load_file

    stored = load_file(str(tmp_path / "codec" / "diffusion_pytorch_model.safetensors"))
    assert {t.dtype for t in stored.values()} == {torch.float16}
    assert TAEF2Codec.from_pretrained(tmp_path / "codec").config.encoder_stem == "space_to_depth"
    from train.lean_codec import export_main

    export_main(["--encoder", str(checkpoints[-1]), "--into-model", str(tiny_pipeline_dir), str(tmp_path / "model")])
    pipe = FlowUpPipeline.from_pretrained(tmp_path / "model", runtime="torch")
    assert pipe.codec.lean and (tmp_path / "model" / "codec" / "training.json").is_file()
    out = pipe(image=torch.rand(1, 3, 32, 32), output_type="pt", generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 3, 64, 64)
