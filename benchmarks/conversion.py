"""
Time and peak memory of `tokenocr-convert` on a checkpoint at the released widths (InternViT-300M tower, upsampler
512, feature width 4096; random bfloat16 weights, a small vocabulary), built by this script: today's converter
against an earlier version of it (a git revision of this repository, by default the one before verification was
reworked), in this one run.

    python benchmarks/conversion.py [--baseline a871e27] [--skip-baseline]

For each converter: the wall time of the whole conversion (verification is nearly all of it), the peak resident
memory of the converting process and of its largest child process, each divided by the bytes of the model in
float32 (what verification must hold at least once), as they are and above an import-only baseline (a process
that imports torch, transformers and the Auto classes and loads nothing: the runtime every process pays).

The baseline runs from `git archive` of the given revision, laid out as its package; its verification child that
computes the source's features imports the installed `tokenocr` (it drops PYTHONPATH), which reads checkpoints the
same way.
"""

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "tests" / "fixtures" / "original" / "tiny_seg" / "checkpoint" / "tokenizer.model"

# Peak resident memory of this process (VmHWM) and of its largest child (ru_maxrss of the waited-for children).
_MEASURE = """
import json, re, resource, sys, time
start = time.perf_counter()
{import_line}
code = convert(sys.argv[1:])
seconds = time.perf_counter() - start
with open("/proc/self/status") as status:
    peak_kb = int(re.search(r"VmHWM:\\s+(\\d+)", status.read()).group(1))
print(json.dumps({{"code": code, "seconds": seconds, "self_kb": peak_kb,
                  "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}}))
"""
CURRENT = "from tokenocr.cli import convert_main as convert"
# The installed (editable) package's import finder would shadow the baseline's copy on PYTHONPATH: drop it first.
BASELINE = (
    "sys.meta_path = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]\n"
    "from tokenocr.conversion.convert import main as convert"
)


def released_width_checkpoint(folder: Path, vocab: int) -> int:
    """An original-layout checkpoint at the released widths; returns the parameter count of what TokenOCR keeps."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    width, layers, heads, tile, middle, dim = 1024, 24, 16, 448, 512, 4096
    tensors = {
        "vision_model.embeddings.class_embedding": torch.randn(1, 1, width) * 0.02,
        "vision_model.embeddings.patch_embedding.weight": torch.randn(width, 3, 14, 14) * 0.02,
        "vision_model.embeddings.patch_embedding.bias": torch.zeros(width),
        "vision_model.embeddings.position_embedding": torch.randn(1, (tile // 14) ** 2 + 1, width) * 0.02,
        "upsample.0.weight": torch.randn(width, middle, 4, 4) * 0.02,
        "upsample.2.weight": torch.randn(middle, width, 4, 4) * 0.02,
        "ocr_mlp.0.weight": torch.ones(width), "ocr_mlp.0.bias": torch.zeros(width),
        "ocr_mlp.1.weight": torch.randn(dim, width) * 0.02, "ocr_mlp.1.bias": torch.zeros(dim),
        "ocr_mlp.3.weight": torch.randn(dim, dim) * 0.02, "ocr_mlp.3.bias": torch.zeros(dim),
        "t_prime": torch.tensor(2.3), "b": torch.tensor(-2.7),
        "tok_embeddings.weight": torch.randn(vocab, dim) * 0.02,
    }
    for index, channels in ((1, middle), (3, width)):
        tensors.update({f"upsample.{index}.weight": torch.ones(channels), f"upsample.{index}.bias": torch.zeros(channels),
                        f"upsample.{index}.running_mean": torch.zeros(channels),
                        f"upsample.{index}.running_var": torch.ones(channels),
                        f"upsample.{index}.num_batches_tracked": torch.tensor(0)})
    for layer in range(layers):
        prefix = f"vision_model.encoder.layers.{layer}."
        for name, shape in (("attn.qkv.weight", (3 * width, width)), ("attn.proj.weight", (width, width)),
                            ("mlp.fc1.weight", (4 * width, width)), ("mlp.fc2.weight", (width, 4 * width))):
            tensors[prefix + name] = torch.randn(*shape) * 0.02
            tensors[prefix + name.replace("weight", "bias")] = torch.zeros(shape[0])
        for name in ("norm1", "norm2"):
            tensors[f"{prefix}{name}.weight"], tensors[f"{prefix}{name}.bias"] = torch.ones(width), torch.zeros(width)
        tensors[prefix + "ls1"], tensors[prefix + "ls2"] = torch.full((width,), 0.1), torch.full((width,), 0.1)
    tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in tensors.items()}
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    config = {
        "model_type": "internvl_chat", "hidden_size": dim, "vocab_size": vocab, "select_layer": -1,
        "force_image_size": tile, "use_thumbnail": True, "max_dynamic_patch": 12,
        "vision_config": {"hidden_size": width, "num_hidden_layers": layers, "num_attention_heads": heads,
                          "intermediate_size": 4 * width, "image_size": tile, "patch_size": 14, "qkv_bias": True,
                          "qk_normalization": False, "norm_type": "layer_norm", "layer_norm_eps": 1e-6},
    }
    (folder / "config.json").write_text(json.dumps(config))
    shutil.copyfile(TOKENIZER, folder / "tokenizer.model")
    return sum(t.numel() for t in tensors.values() if t.is_floating_point())


def baseline_package(revision: str, folder: Path) -> Path:
    """The package of `revision`, laid out for `PYTHONPATH` (its folders mapped as its pyproject maps them)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], capture_output=True, check=True).stdout
    source = folder / "source"
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(source, filter="data")
    package = folder / "package" / "tokenocr"
    shutil.copytree(source / "tokenocr", package)
    for name in ("modeling", "processing", "conversion", "hub_cards"):
        shutil.copytree(source / name, package / name)
    return folder / "package"


_IMPORT_ONLY = """
import re
import torch
from transformers import AutoConfig, AutoModel, AutoProcessor, AutoTokenizer
from tokenocr.conversion import load_original
with open("/proc/self/status") as status:
    print(int(re.search(r"VmHWM:\\s+(\\d+)", status.read()).group(1)))
"""


def import_baseline_kb(workdir: Path) -> int:
    result = subprocess.run([sys.executable, "-c", _IMPORT_ONLY], capture_output=True, text=True, cwd=workdir, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def measure(import_line: str, arguments: list[str], workdir: Path, python_path: Path | None = None) -> dict:
    env = None
    if python_path is not None:
        import os

        env = {**os.environ, "PYTHONPATH": str(python_path)}
    result = subprocess.run([sys.executable, "-c", _MEASURE.format(import_line=import_line), *arguments],
                            capture_output=True, text=True, env=env, cwd=workdir)
    report = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
    if result.returncode != 0 or report.get("code") != 0:
        raise SystemExit(f"conversion failed:\n{result.stderr[-3000:]}")
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--baseline", default="a871e27", help="git revision of the converter to compare with")
    parser.add_argument("--skip-baseline", action="store_true", help="measure today's converter only")
    parser.add_argument("--vocab", type=int, default=640, help="rows of the embedding table (the test tokenizer's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokenocr-conversion-") as work:
        work = Path(work)
        source = work / "source-checkpoint"
        source.mkdir()
        parameters = released_width_checkpoint(source, args.vocab)
        model_bytes = 4 * parameters
        baseline_kb = import_baseline_kb(work)
        runs = {"today": measure(CURRENT, ["--input", str(source), "--output", str(work / "today")], work)}
        if not args.skip_baseline:
            package = baseline_package(args.baseline, work / "baseline")
            runs["baseline"] = measure(BASELINE, ["--input", str(source), "--output", str(work / "old")], work, package)
    print(f"released widths, {parameters / 1e6:.0f}M parameters kept ({model_bytes / 2**30:.2f} GiB in float32), "
          "bfloat16 source, CPU")
    print(f"import-only process: {baseline_kb / 2**20:5.2f} GiB peak RSS")
    for name, run in runs.items():
        peak = max(run["self_kb"], run["children_kb"])
        print(f"{name:>9}: {run['seconds']:7.1f} s; peak RSS converting process {run['self_kb'] / 2**20:5.2f} GiB, "
              f"largest child {run['children_kb'] / 2**20:5.2f} GiB; peak / float32 model "
              f"{peak * 1024 / model_bytes:4.2f}, above the import-only process {(peak - baseline_kb) * 1024 / model_bytes:4.2f}")
    if "baseline" in runs:
        print(f"time today / baseline ({args.baseline}): {runs['today']['seconds'] / runs['baseline']['seconds']:.2f}")


if __name__ == "__main__":
    main()
