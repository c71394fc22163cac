"""
Broken original checkpoints: one table, run against both `load_original` and `tokenocr-convert`. Each case must give
a `CheckpointError` (load_original) or a one-line error with exit 1 (the converter) that names the problem, and the
converter must write nothing, keep an existing output as it was and never modify the source.
"""

import json
import os
import re
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tokenocr.cli import convert_main
from tokenocr.conversion import CheckpointError, load_original
from tokenocr.conversion.convert import CONVERT_MARKER, write_marker

from fixture_cases import FIXTURES
from r50_helpers import R50, read_state, rewrite_state, split_into_parts
from safety import folder_digest


SEG = FIXTURES / "tiny_seg" / "checkpoint"
LEGACY = FIXTURES / "tiny_legacy" / "checkpoint"


def _tensors(change):
    def apply(folder):
        tensors = load_file(folder / "model.safetensors")
        change(tensors)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})

    return apply


def _json(name, change):
    def apply(folder):
        data = json.loads((folder / name).read_text())
        data = change(data) or data
        (folder / name).write_text(json.dumps(data))

    return apply


def _truncate(name, keep=None):
    def apply(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: keep or len(data) // 3])

    return apply


def _index_entry(shard):
    def apply(folder):
        index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
        index["weight_map"]["vision_model.embeddings.patch_embedding.bias"] = shard
        (folder / "pytorch_model.bin.index.json").write_text(json.dumps(index))

    return apply


def _link_out(folder):
    outside = folder.parent / "elsewhere.bin"
    shutil.move(folder / "pytorch_model-00002-of-00002.bin", outside)
    os.symlink(outside, folder / "pytorch_model-00002-of-00002.bin")


def _pickled_code(folder):
    class Payload:
        def __reduce__(self):
            return (open, (str(folder.parent / "code-ran"), "w"))

    shard = folder / "pytorch_model-00002-of-00002.bin"
    state = torch.load(shard, weights_only=True)
    state["vision_model.embeddings.patch_embedding.bias"] = Payload()
    torch.save(state, shard)


def _r50_parts(remove=None, duplicate=None):
    """The R50 checkpoint as the demo's two parts (checkpoint.pth removed), then a part removed or a key duplicated."""

    def apply(folder):
        (folder / "checkpoint.pth").unlink()
        parts = split_into_parts(R50, folder.parent / "parts", duplicate=duplicate)
        for part in parts.iterdir():
            shutil.move(part, folder / part.name)
        parts.rmdir()
        if remove:
            (folder / remove).unlink()

    return apply


def _r50_pickled_code(folder):
    class Payload:
        def __reduce__(self):
            return (open, (str(folder.parent / "code-ran"), "w"))

    state = read_state(folder)
    state["t_prime"] = Payload()
    torch.save({"model": state}, folder / "checkpoint.pth")


# name: (source, breakage, what the message must say)
BROKEN = {
    "missing config.json": (SEG, lambda f: (f / "config.json").unlink(), "no config.json"),
    "config.json not JSON": (SEG, lambda f: (f / "config.json").write_text("{oops"), "config.json .* not valid JSON"),
    "config.json not an object": (SEG, lambda f: (f / "config.json").write_text("[1, 2]"), "not a JSON object"),
    "vision_config not an object": (SEG, _json("config.json", lambda c: c.update(vision_config=3)), "vision_config"),
    "wrong model_type": (SEG, _json("config.json", lambda c: c.update(model_type="llava")), "model_type 'llava'"),
    "patch_size 0": (SEG, _json("config.json", lambda c: c["vision_config"].update(patch_size=0)), "patch_size"),
    "config disagrees with weights": (SEG, _json("config.json", lambda c: c.update(hidden_size=4096)), "hidden_size=4096"),
    "missing weights": (SEG, lambda f: (f / "model.safetensors").unlink(), "holds no weights"),
    "truncated safetensors": (SEG, _truncate("model.safetensors"), "model.safetensors"),
    "truncated bin shard": (LEGACY, _truncate("pytorch_model-00002-of-00002.bin", 5000), "pytorch_model-00002-of-00002.bin"),
    "missing bin shard": (LEGACY, lambda f: (f / "pytorch_model-00001-of-00002.bin").unlink(), "pytorch_model-00001-of-00002.bin"),
    "index not an object": (LEGACY, lambda f: (f / "pytorch_model.bin.index.json").write_text("[]"), "not a valid weight index"),
    "index entry climbs out": (LEGACY, _index_entry("../../../etc/passwd"), "outside the checkpoint folder"),
    "index entry absolute": (LEGACY, _index_entry("/etc/passwd"), "outside the checkpoint folder"),
    "weight file links outside": (LEGACY, _link_out, "leads outside the checkpoint folder"),
    "pickle that would run code": (LEGACY, _pickled_code, "pytorch_model-00002-of-00002.bin"),
    "missing tensor": (SEG, _tensors(lambda t: t.pop("ocr_mlp.1.weight")), "missing tensor.*ocr_mlp.1.weight"),
    "missing qkv": (SEG, _tensors(lambda t: t.pop("vision_model.encoder.layers.1.attn.qkv.weight")), "missing tensor.*attn.qkv.weight"),
    "missing embedding table": (SEG, _tensors(lambda t: t.pop("tok_embeddings.weight")), "tok_embeddings.weight"),
    "unexpected tensor": (SEG, _tensors(lambda t: t.update({"surprise": torch.ones(2)})), "unexpected tensor 'surprise'"),
    "wrong shape": (SEG, _tensors(lambda t: t.update({"upsample.1.running_mean": torch.zeros(65, dtype=torch.bfloat16)})),
                    r"'upsample.1.running_mean' has shape \[65\], expected \[64\]"),
    "integer weight": (SEG, _tensors(lambda t: t.update({"ocr_mlp.1.bias": t["ocr_mlp.1.bias"].to(torch.int32)})),
                       "'ocr_mlp.1.bias' is stored as torch.int32, expected a floating-point tensor"),
    "NaN weight": (SEG, _tensors(lambda t: t.update({"ocr_mlp.0.weight": torch.full_like(t["ocr_mlp.0.weight"], float("nan"))})),
                   "tensor 'ocr_mlp.0.weight' holds NaN or infinite values"),
    "fractional batch counter": (SEG, _tensors(lambda t: t.update({"upsample.1.num_batches_tracked": torch.tensor(7.5)})),
                                 "'upsample.1.num_batches_tracked' is stored as torch.float32 and holds 7.5, not a whole"),
    "missing tokenizer.model": (SEG, lambda f: (f / "tokenizer.model").unlink(), "tokenizer.model"),
    "tokenizer.model not SentencePiece": (SEG, lambda f: (f / "tokenizer.model").write_bytes(b"\xff" * 50), "tokenizer.model"),
    "tokenizer_config not an object": (SEG, lambda f: (f / "tokenizer_config.json").write_text('"x"'), "tokenizer_config.json"),
    "R50 missing part": (R50, _r50_parts(remove="checkpoint_part2.pth"), "part 'checkpoint_part2.pth' is missing"),
    "R50 tensor in both parts": (R50, _r50_parts(duplicate="upsample.1.weight"),
                                 "'upsample.1.weight' is in both 'checkpoint_part1.pth' and 'checkpoint_part2.pth'"),
    "R50 whole and parts": (R50, lambda f: torch.save({"model": {}}, f / "checkpoint_part1.pth"), "keep one layout"),
    "R50 pickle that would run code": (R50, _r50_pickled_code,
                                       "'checkpoint.pth' holds objects other than tensors, which would run code"),
    "R50 truncated": (R50, _truncate("checkpoint.pth", 100_000), "checkpoint.pth"),
    "R50 not a {'model': ...} dict": (R50, lambda f: torch.save(read_state(f), f / "checkpoint.pth"),
                                      "does not hold {'model': state_dict}"),
    "R50 wrong shape": (R50, rewrite_state(lambda t: t.update({"ocr_mlp.2.weight": torch.zeros(64, 65)})),
                        r"'ocr_mlp.2.weight' has shape \[64, 65\], expected \[64, 64\]"),
    "R50 missing tensor": (R50, rewrite_state(lambda t: t.pop("backbone.body.layer3.0.bn2.running_var")),
                           "missing tensor.*'backbone.body.layer3.0.bn2.running_var'"),
    "R50 unexpected tensor": (R50, rewrite_state(lambda t: t.update({"backbone.body.fc.weight": torch.ones(2)})),
                              "unexpected tensor 'backbone.body.fc.weight'"),
    "R50 missing stage": (R50, rewrite_state(lambda s: {k: v for k, v in s.items() if ".layer4." not in k}),
                          r"stages \[1, 2, 3\]"),
    "R50 without a tokenizer": (R50, lambda f: (f / "tokenizer.model").unlink(), "--tokenizer"),
}


@pytest.fixture(params=sorted(BROKEN))
def broken(request, tmp_path):
    source, breakage, message = BROKEN[request.param]
    folder = tmp_path / "broken"
    shutil.copytree(source, folder)
    breakage(folder)
    return folder, message


def test_load_original_names_the_problem(broken, tmp_path):
    folder, message = broken
    with pytest.raises(CheckpointError, match=message):
        load_original(folder)
    assert not (tmp_path / "code-ran").exists()


def test_converter_names_the_problem_writes_nothing_and_keeps_an_earlier_output(broken, tmp_path, capsys):
    folder, message = broken
    source = folder_digest(folder)
    assert convert_main(["--input", str(folder), "--output", str(tmp_path / "out")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokenocr-convert: error:") and re.search(message, lines[0]), lines

    earlier = tmp_path / "earlier"  # an earlier converted folder (its marker lists its files), so --force may replace it
    earlier.mkdir()
    (earlier / "config.json").write_text(json.dumps({"model_type": "tokenocr"}))
    (earlier / "model.safetensors").write_bytes(b"earlier weights")
    write_marker(earlier, CONVERT_MARKER, "tokenocr-convert")
    kept = folder_digest(earlier)
    assert convert_main(["--input", str(folder), "--output", str(earlier), "--force"]) == 1
    assert folder_digest(earlier) == kept
    assert folder_digest(folder) == source
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "elsewhere.bin") == ["broken", "earlier"]
    assert not (tmp_path / "code-ran").exists()
