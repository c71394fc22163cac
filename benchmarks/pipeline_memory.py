"""
Working memory and time of the token-similarity pipeline's fused scoring against the unfused path, at the released
model's widths (random weights): a 2x1-grid page (2 tiles) with 5 queries.

    python benchmarks/pipeline_memory.py [--dtype float32|bfloat16] [--batch-size 4] [--grid 2x1] [--repeats 1]

- fused: the pipeline as shipped (`TokenOCRModel.get_similarity`: projector, normalisation and scoring over chunks
  of locations; no `(tiles, locations, D)` tensor);
- unfused: the same pipeline with the model's plain `forward(pixel_values=...)`, which holds a batch's features.

Each way runs in its own process; the figures are peak resident memory above the memory held once the model is
built and a warm-up call has run (same process), and the ratios of both ways, all measured in this one run. With
`--repeats N` the two ways alternate N times and the fastest time of each is compared (the least disturbed by other
work on a shared machine).
"""

import argparse
import json
import subprocess
import sys


QUERIES = ["Invoice", "11/12/2020", "Total $1,234.56", "they are not", "OPEN 24 HOURS"]

_RUN = r"""
import json, re, sys, time
import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from tokenocr import TokenOCRConfig, TokenOCRImageProcessor, TokenOCRModel, TokenOCRProcessor, TokenSimilarityPipeline

def peak_mb():
    with open("/proc/self/status") as status:
        return int(re.search(r"VmHWM:\s+(\d+)", status.read()).group(1)) / 1024

def reset_peak():
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current resident size

mode, dtype, batch_size, cols, rows, queries = sys.argv[1], getattr(torch, sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), int(sys.argv[5]), json.loads(sys.argv[6])
torch.manual_seed(0)
config = TokenOCRConfig(  # InternViT-300M tower, English release widths
    vision_config={"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
                   "image_size": 448, "patch_size": 14, "attention_bias": True, "norm_type": "layer_norm"},
    hidden_size=4096, vocab_size=92553, upsampler_hidden_size=512,
)
model = TokenOCRModel(config).to(dtype).eval()
if mode == "unfused":
    model.get_similarity = lambda pixel_values, input_ids, attention_mask, chunk: model(
        pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask).similarity
vocab = {chr(c): i for i, c in enumerate(range(32, 127))}
backend = Tokenizer(models.WordLevel(vocab, unk_token="?"))
backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="?", pad_token=" ")
processor = TokenOCRProcessor(TokenOCRImageProcessor(size=448), tokenizer)
finder = TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity", device="cpu",
                                 batch_size=batch_size)
page = Image.fromarray(np.random.default_rng(0).integers(0, 255, (rows * 448, cols * 448, 3), dtype=np.uint8))
finder(Image.new("RGB", (448, 448)), "warm-up", return_visuals=False)
reset_peak()
after_model = peak_mb()
start = time.perf_counter()
results = finder(page, queries, return_visuals=False)
seconds = time.perf_counter() - start
print(json.dumps({"after_model_mb": after_model, "peak_mb": peak_mb(), "seconds": seconds,
                  "scores": [t["score"] for tokens in results for t in tokens]}))
"""


def run(mode: str, args) -> dict:
    cols, rows = args.grid.split("x")
    result = subprocess.run(
        [sys.executable, "-c", _RUN, mode, args.dtype, str(args.batch_size), cols, rows, json.dumps(QUERIES)],
        capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per vision-tower forward")
    parser.add_argument("--grid", default="2x1", help="the page's tile grid, COLSxROWS (default: 2x1)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate the two ways this many times")
    args = parser.parse_args()
    runs = [(run("fused", args), run("unfused", args)) for _ in range(args.repeats)]
    fused = min((pair[0] for pair in runs), key=lambda r: r["seconds"])
    unfused = min((pair[1] for pair in runs), key=lambda r: r["seconds"])
    above = {name: r["peak_mb"] - r["after_model_mb"] for name, r in (("fused", fused), ("unfused", unfused))}
    difference = max(abs(a - b) for a, b in zip(fused["scores"], unfused["scores"]))
    print(f"{args.grid}-grid page, {len(QUERIES)} queries, released widths, {args.dtype}, random weights, CPU")
    print(f"model built:                       {fused['after_model_mb']:8.0f} MiB resident")
    print(f"fused   working memory (peak above): {above['fused']:8.0f} MiB, {fused['seconds']:7.2f} s")
    print(f"unfused working memory (peak above): {above['unfused']:8.0f} MiB, {unfused['seconds']:7.2f} s")
    print(f"memory fused / unfused:            {above['fused'] / above['unfused']:8.2f}")
    print(f"time fused / unfused:              {fused['seconds'] / unfused['seconds']:8.2f}")
    print(f"largest token-score difference:    {difference:8.1e}")


if __name__ == "__main__":
    main()
