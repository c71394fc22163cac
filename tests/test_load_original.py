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


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_a_float_batch_counter_is_read_as_a_count(tmp_path, dtype):
    """A checkpoint cast wholesale to bf16 stores BatchNorm's `num_batches_tracked` as a float: accepted as the
    integer it holds, and the features are unchanged (inference never reads it)."""
    folder = copy_checkpoint(SEG, tmp_path)
    rewrite_safetensors(folder, lambda t: t.update({"upsample.1.num_batches_tracked": torch.tensor(384.0, dtype=dtype)}))
    model, processor = load_original(folder)
    counter = model.upsampler.batch_norm_1.num_batches_tracked
    assert counter.dtype == torch.int64 and counter.item() == 384
    case = Case("tiny_seg")
    inputs = processor(images=str(case.image_path("doc_wide.png")), return_tensors="pt")
    with torch.no_grad():
        features = model.get_image_features(inputs["pixel_values"]).pooler_output
    np.testing.assert_allclose(features.numpy(), case.expected("doc_wide.png")["features"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("value, shown", [(float("nan"), "nan"), (-2.0, "-2.0"), (2.5, "2.5"), (float("inf"), "inf")])
def test_a_float_batch_counter_must_hold_a_whole_count(tmp_path, value, shown):
    folder = copy_checkpoint(SEG, tmp_path)
    rewrite_safetensors(folder, lambda t: t.update({"upsample.3.num_batches_tracked": torch.tensor(value)}))
    with pytest.raises(CheckpointError) as error:
        load_original(folder)
    message = str(error.value)
    assert "\n" not in message and "'upsample.3.num_batches_tracked'" in message and shown in message
    assert "not a whole non-negative count" in message


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(tmp_path, value):
    folder = copy_checkpoint(SEG, tmp_path)

    def poison(tensors):
        tensors["ocr_mlp.3.weight"] = tensors["ocr_mlp.3.weight"].clone()
        tensors["ocr_mlp.3.weight"][1, 2] = value

    rewrite_safetensors(folder, poison)
    with pytest.raises(CheckpointError, match=r"^tensor 'ocr_mlp.3.weight' holds NaN or infinite values; "):
        load_original(folder)


def test_weights_that_overflow_the_asked_dtype_are_refused(tmp_path):
    """A finite bf16 weight beyond float16's range would become infinity when loaded as float16."""
    folder = copy_checkpoint(SEG, tmp_path)

    def enlarge(tensors):
        tensors["ocr_mlp.1.bias"] = tensors["ocr_mlp.1.bias"].clone()
        tensors["ocr_mlp.1.bias"][0] = 1e6

    rewrite_safetensors(folder, enlarge)
    load_original(folder)  # float32 holds it
    with pytest.raises(CheckpointError, match="'ocr_mlp.1.bias' holds NaN or infinite values once converted to float16"):
        load_original(folder, dtype="float16")
