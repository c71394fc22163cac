"""
Peak memory of `tokenocr-convert` against the size of the weights it keeps.

Builds a synthetic original checkpoint (random TokenOCR weights plus a large language-model part TokenOCR never
uses, mixed into the same pickled `.bin` shards the way original releases store them), converts it, and prints
ratios measured within this one run:

    python benchmarks/conversion_memory.py [--unused-gb 1.5] [--format bin|safetensors]

- writer peak: the converting process's peak resident memory minus that of a process that only imports the
  converter (same interpreter, same run), divided by the bytes of weights written;
- verification peak: the largest of the two verification subprocesses (source and converted model loaded in
  float32), divided by the same bytes.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file


ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests" / "fixtures" / "original" / "tiny_seg" / "checkpoint" / "tokenizer.model"

# Peak resident memory of this process alone: VmHWM (reset by exec, unlike ru_maxrss, which a child inherits).
_MEASURE = """
import json, re, resource, sys
from tokenocr.cli import convert_main as main
code = main(sys.argv[1:]) if len(sys.argv) > 1 else 0
with open("/proc/self/status") as status:
    peak_kb = int(re.search(r"VmHWM:\\s+(\\d+)", status.read()).group(1))
print(json.dumps({"code": code, "self_kb": peak_kb,
                  "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def build_checkpoint(folder: Path, unused_bytes: int, file_format: str, width=512, layers=6, dim=1024, vocab=32000):
    """An original-layout checkpoint: InternViT-like tower, upsampler, projector, table, and unused LLM layers."""
    heads, tile = 8, 224
    kept = {
        "vision_model.embeddings.class_embedding": torch.randn(1, 1, width),
        "vision_model.embeddings.patch_embedding.weight": torch.randn(width, 3, 14, 14) * 0.02,
        "vision_model.embeddings.patch_embedding.bias": torch.zeros(width),
        "vision_model.embeddings.position_embedding": torch.randn(1, (tile // 14) ** 2 + 1, width) * 0.02,
        "upsample.0.weight": torch.randn(width, 256, 4, 4) * 0.02,
        "upsample.2.weight": torch.randn(256, width, 4, 4) * 0.02,
        "ocr_mlp.0.weight": torch.ones(width), "ocr_mlp.0.bias": torch.zeros(width),
        "ocr_mlp.1.weight": torch.randn(dim, width) * 0.02, "ocr_mlp.1.bias": torch.zeros(dim),
        "ocr_mlp.3.weight": torch.randn(dim, dim) * 0.02, "ocr_mlp.3.bias": torch.zeros(dim),
        "t_prime": torch.tensor(2.3), "b": torch.tensor(-2.7),
        "language_model.model.tok_embeddings.weight": torch.randn(vocab, dim) * 0.02,
    }
    for index, channels in ((1, 256), (3, width)):
        kept.update({f"upsample.{index}.weight": torch.ones(channels), f"upsample.{index}.bias": torch.zeros(channels),
                     f"upsample.{index}.running_mean": torch.zeros(channels),
                     f"upsample.{index}.running_var": torch.ones(channels),
                     f"upsample.{index}.num_batches_tracked": torch.tensor(0)})
    for layer in range(layers):
        prefix = f"vision_model.encoder.layers.{layer}."
        kept.update({
            prefix + "attn.qkv.weight": torch.randn(3 * width, width) * 0.02, prefix + "attn.qkv.bias": torch.zeros(3 * width),
            prefix + "attn.proj.weight": torch.randn(width, width) * 0.02, prefix + "attn.proj.bias": torch.zeros(width),
            prefix + "ls1": torch.full((width,), 0.1), prefix + "ls2": torch.full((width,), 0.1),
            prefix + "mlp.fc1.weight": torch.randn(4 * width, width) * 0.02, prefix + "mlp.fc1.bias": torch.zeros(4 * width),
            prefix + "mlp.fc2.weight": torch.randn(width, 4 * width) * 0.02, prefix + "mlp.fc2.bias": torch.zeros(width),
            prefix + "norm1.weight": torch.ones(width), prefix + "norm1.bias": torch.zeros(width),
            prefix + "norm2.weight": torch.ones(width), prefix + "norm2.bias": torch.zeros(width),
        })
    kept = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in kept.items()}

    unused, block = {}, 2048 * dim * 2  # bf16 bytes of one unused block
    for index in range(max(1, unused_bytes // block)):
        unused[f"language_model.model.layers.{index}.feed_forward.w1.weight"] = torch.zeros(2048, dim, dtype=torch.bfloat16)
    unused["mlp1.1.weight"] = torch.zeros(dim, 4 * width, dtype=torch.bfloat16)

    # Three shards; the table shares the first one with unused weights, as in the original releases.
    names_unused = sorted(unused)
    thirds = [names_unused[i::3] for i in range(3)]
    shards = [
        {**{n: unused[n] for n in thirds[0]}, "language_model.model.tok_embeddings.weight": kept.pop("language_model.model.tok_embeddings.weight")},
        {n: unused[n] for n in thirds[1]},
        {**{n: unused[n] for n in thirds[2]}, **kept},
    ]
    suffix = "bin" if file_format == "bin" else "safetensors"
    stem = "pytorch_model" if file_format == "bin" else "model"
    weight_map = {}
    for number, shard in enumerate(shards, start=1):
        name = f"{stem}-{number:05d}-of-00003.{suffix}"
        if file_format == "bin":
            torch.save(shard, folder / name)
        else:
            save_file(shard, folder / name, metadata={"format": "pt"})
        weight_map.update({key: name for key in shard})
    (folder / f"{stem}.{suffix}.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    config = {
        "model_type": "internvl_chat", "hidden_size": dim, "vocab_size": vocab, "select_layer": -1,
        "force_image_size": tile, "use_thumbnail": True, "max_dynamic_patch": 12,
        "vision_config": {"hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": heads,
                          "intermediate_size": 4 * width, "image_size": tile, "patch_size": 14, "qkv_bias": True,
                          "qk_normalization": False, "norm_type": "layer_norm", "layer_norm_eps": 1e-6},
    }
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copyfile(TOKENIZER, folder / "tokenizer.model")
    return sum(t.numel() * t.element_size() for shard in shards for t in shard.values())


def measure(args):
    result = subprocess.run([sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    report = json.loads(result.stdout.strip().splitlines()[-1])
    if report["code"] != 0:
        raise SystemExit(f"conversion failed:\n{result.stderr[-2000:]}")
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--unused-gb", type=float, default=1.5, help="size of the unused language-model part")
    parser.add_argument("--format", choices=["bin", "safetensors"], default="bin")
    parser.add_argument("--build-only", metavar="FOLDER", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.build_only:
        print(build_checkpoint(Path(args.build_only), int(args.unused_gb * 1e9), args.format))
        return
    with tempfile.TemporaryDirectory(prefix="tokenocr-memory-") as work:
        work = Path(work)
        source = work / "source"
        source.mkdir()
        # Built in a subprocess so that this process stays small: children inherit ru_maxrss across exec.
        built = subprocess.run(
            [sys.executable, __file__, "--build-only", str(source), "--unused-gb", str(args.unused_gb),
             "--format", args.format], capture_output=True, text=True, check=True,
        )
        source_bytes = int(built.stdout.strip().splitlines()[-1])
        baseline = measure([])
        output = work / "converted"
        report = measure(["--input", str(source), "--output", str(output)])
        kept = sum(f.stat().st_size for f in output.glob("*.safetensors"))
    mib = 1024 * 1024
    writer = (report["self_kb"] - baseline["self_kb"]) * 1024
    print(f"source checkpoint:   {source_bytes / mib:8.1f} MiB ({args.format}, mostly unused language-model weights)")
    print(f"weights kept:        {kept / mib:8.1f} MiB (safetensors written)")
    print(f"import baseline:     {baseline['self_kb'] / 1024:8.1f} MiB peak RSS")
    print(f"converting process:  {report['self_kb'] / 1024:8.1f} MiB peak RSS")
    print(f"writer peak / kept:  {writer / kept:8.2f}   (peak RSS above the import baseline, over bytes kept)")
    print(f"verification / kept: {report['children_kb'] * 1024 / kept:8.2f}   (largest verification subprocess, float32)")
    print(f"writer peak / source:{writer / source_bytes:8.3f}")


if __name__ == "__main__":
    main()
