"""load_original on good and bad original checkpoints: clear errors, unused weights never read, no code run."""

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tokenocr.conversion import CheckpointError, load_original
from tokenocr.conversion.original import OriginalCheckpoint

from fixture_cases import FIXTURES, Case


SEG = FIXTURES / "tiny_seg" / "checkpoint"
LEGACY = FIXTURES / "tiny_legacy" / "checkpoint"


def copy_checkpoint(source, tmp_path):
    target = tmp_path / source.parent.name
    shutil.copytree(source, target)
    return target


def rewrite_safetensors(folder, change):
    tensors = load_file(folder / "model.safetensors")
    change(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def edit_config(folder, change):
    config = json.loads((folder / "config.json").read_text())
    change(config)
    (folder / "config.json").write_text(json.dumps(config))


def test_dtype_auto_keeps_the_stored_dtype():
    model, _ = load_original(SEG, dtype="auto")
    assert model.dtype == torch.bfloat16


def test_missing_folder_and_config(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_original(tmp_path / "nowhere")
    folder = copy_checkpoint(SEG, tmp_path)
    (folder / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_original(folder)


def test_unused_weights_are_never_read(tmp_path):
    """A shard holding only language-model weights may even be corrupt: it is never opened."""
    folder = copy_checkpoint(SEG, tmp_path)
    tensors = load_file(folder / "model.safetensors")
    unused = {
        "language_model.model.layers.0.attention.wqkv.weight": torch.randn(192, 64),
        "language_model.output.weight": torch.randn(640, 64),
        "mlp1.1.weight": torch.randn(64, 512),
    }
    (folder / "model.safetensors").unlink()
    save_file(tensors, folder / "model-00001-of-00002.safetensors", metadata={"format": "pt"})
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"not a safetensors file at all")
    weight_map = {name: "model-00001-of-00002.safetensors" for name in tensors}
    weight_map.update({name: "model-00002-of-00002.safetensors" for name in unused})
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))

    checkpoint = OriginalCheckpoint(folder)
    assert [p.name for p in checkpoint.read_order()] == ["model-00001-of-00002.safetensors"]
    model, processor = load_original(folder)
    case = Case("tiny_seg")
    inputs = processor(images=str(case.image_path("doc_wide.png")), return_tensors="pt")
    with torch.no_grad():
        features = model.get_image_features(inputs["pixel_values"]).pooler_output
    np.testing.assert_allclose(features.numpy(), case.expected("doc_wide.png")["features"], atol=1e-4, rtol=0)


def test_source_folder_is_not_modified(tmp_path):
    folder = copy_checkpoint(LEGACY, tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    load_original(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
