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


def test_wrong_model_type(tmp_path):
    folder = copy_checkpoint(SEG, tmp_path)
    edit_config(folder, lambda c: c.update(model_type="internvl"))
    with pytest.raises(CheckpointError, match="model_type 'internvl'"):
        load_original(folder)


def test_no_weights(tmp_path):
    folder = copy_checkpoint(SEG, tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="holds no weights"):
        load_original(folder)


@pytest.mark.parametrize("name", ["ocr_mlp.3.bias", "upsample.3.running_var", "vision_model.encoder.layers.1.attn.qkv.weight"])
def test_missing_tensor_is_named(tmp_path, name):
    folder = copy_checkpoint(SEG, tmp_path)
    rewrite_safetensors(folder, lambda t: t.pop(name))
    with pytest.raises(CheckpointError, match=f"missing tensor.*{name}"):
        load_original(folder)


def test_missing_embedding_table(tmp_path):
    folder = copy_checkpoint(SEG, tmp_path)
    rewrite_safetensors(folder, lambda t: t.pop("tok_embeddings.weight"))
    with pytest.raises(CheckpointError, match="tok_embeddings.weight"):
        load_original(folder)


def test_unexpected_tensor_is_named(tmp_path):
    folder = copy_checkpoint(SEG, tmp_path)
    rewrite_safetensors(folder, lambda t: t.update({"extra_head.weight": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match="unexpected tensor 'extra_head.weight'"):
        load_original(folder)


def test_wrongly_shaped_tensor_is_named(tmp_path):
    folder = copy_checkpoint(SEG, tmp_path)
    rewrite_safetensors(folder, lambda t: t.update({"upsample.1.running_mean": torch.zeros(65, dtype=torch.bfloat16)}))
    with pytest.raises(CheckpointError, match=r"'upsample.1.running_mean' has shape \[65\], expected \[64\]"):
        load_original(folder)


def test_config_that_disagrees_with_the_weights(tmp_path):
    folder = copy_checkpoint(SEG, tmp_path)
    edit_config(folder, lambda c: c.update(hidden_size=4096))
    with pytest.raises(CheckpointError, match="hidden_size=4096"):
        load_original(folder)
    folder = copy_checkpoint(LEGACY, tmp_path / "b")
    edit_config(folder, lambda c: c["vision_config"].update(hidden_size=128, num_attention_heads=4))
    with pytest.raises(CheckpointError, match="has shape"):
        load_original(folder)


def test_truncated_safetensors(tmp_path):
    folder = copy_checkpoint(SEG, tmp_path)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_original(folder)


def test_truncated_bin_shard(tmp_path):
    folder = copy_checkpoint(LEGACY, tmp_path)
    shard = folder / "pytorch_model-00002-of-00002.bin"
    shard.write_bytes(shard.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="pytorch_model-00002-of-00002.bin"):
        load_original(folder)


def test_missing_bin_shard(tmp_path):
    folder = copy_checkpoint(LEGACY, tmp_path)
    (folder / "pytorch_model-00001-of-00002.bin").unlink()
    with pytest.raises(CheckpointError, match="pytorch_model-00001-of-00002.bin"):
        load_original(folder)


def test_missing_tokenizer_model(tmp_path):
    folder = copy_checkpoint(LEGACY, tmp_path)
    (folder / "tokenizer.model").unlink()
    with pytest.raises(CheckpointError, match="tokenizer.model"):
        load_original(folder)


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    folder = copy_checkpoint(LEGACY, tmp_path)
    shard = folder / "pytorch_model-00002-of-00002.bin"
    state = torch.load(shard, weights_only=True)
    state["vision_model.embeddings.patch_embedding.bias"] = Payload()
    torch.save(state, shard)
    with pytest.raises(CheckpointError, match="pytorch_model-00002-of-00002.bin"):
        load_original(folder)
    assert not marker.exists()


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
    assert [p.name for p in checkpoint.shards_needed()] == ["model-00001-of-00002.safetensors"]
    model, processor = load_original(folder)
    case = Case("tiny_seg")
    inputs = processor(images=str(case.image_path("doc_wide.png")), return_tensors="pt")
    with torch.no_grad():
        features = model.get_image_features(inputs["pixel_values"])
    np.testing.assert_allclose(features.numpy(), case.expected("doc_wide.png")["features"], atol=1e-4, rtol=0)


def test_source_folder_is_not_modified(tmp_path):
    folder = copy_checkpoint(LEGACY, tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    load_original(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
