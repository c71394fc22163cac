"""
Peak memory of the token-similarity pipeline on a 12-tile page with 5 queries, at the released model's widths
(random weights), against computing and holding all of the page's features at once.

    python benchmarks/pipeline_memory.py [--dtype float32|bfloat16] [--batch-size 4]

Each way runs in its own process; the printed numbers are peak resident memory above the memory held once the
model is built (same process), and their ratio, all measured in this one run.
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

mode, dtype, batch_size, queries = sys.argv[1], getattr(torch, sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
torch.manual_seed(0)
config = TokenOCRConfig(  # InternViT-300M tower, English release widths
    vision_config={"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
                   "image_size": 448, "patch_size": 14, "attention_bias": True, "norm_type": "layer_norm"},
    hidden_size=4096, vocab_size=92553, upsampler_hidden_size=512,
)
model = TokenOCRModel(config).to(dtype).eval()
vocab = {chr(c): i for i, c in enumerate(range(32, 127))}
backend = Tokenizer(models.WordLevel(vocab, unk_token="?"))
backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="?", pad_token=" ")
processor = TokenOCRProcessor(TokenOCRImageProcessor(size=448), tokenizer)
page = Image.fromarray(np.random.default_rng(0).integers(0, 255, (3 * 448, 4 * 448, 3), dtype=np.uint8))
after_model = peak_mb()
start = time.perf_counter()
with torch.no_grad():
    if mode == "pipeline":
        finder = TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity", device="cpu")
        results = finder(page, queries, batch_size=batch_size)
    else:  # everything at once: all tiles (thumbnail included, as the original) through the model together
        inputs = processor(images=page, return_tensors="pt")
        features = model.get_image_features(inputs["pixel_values"].to(dtype))
        maps = []
        for query in queries:
            ids = processor(text=query, return_tensors="pt")["input_ids"]
            out = model(image_embeds=features, input_ids=ids)
            maps.append(processor.post_process_similarity(out.similarity, inputs["grid_cols_rows"], inputs["num_tiles"]))
print(json.dumps({"after_model_mb": after_model, "peak_mb": peak_mb(), "seconds": time.perf_counter() - start}))
"""


def run(mode: str, dtype: str, batch_size: int) -> dict:
    result = subprocess.run([sys.executable, "-c", _RUN, mode, dtype, str(batch_size), json.dumps(QUERIES)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--batch-size", type=int, default=4, help="tiles per vision-tower forward in the pipeline")
    args = parser.parse_args()
    pipeline = run("pipeline", args.dtype, args.batch_size)
    at_once = run("all-at-once", args.dtype, args.batch_size)
    above = {name: r["peak_mb"] - r["after_model_mb"] for name, r in (("pipeline", pipeline), ("all", at_once))}
    print(f"12-tile page (4x3 grid + thumbnail), {len(QUERIES)} queries, released widths, {args.dtype}, random weights")
    print(f"model built:                      {pipeline['after_model_mb']:9.0f} MiB resident")
    print(f"pipeline (batch_size={args.batch_size}) peak above model: {above['pipeline']:9.0f} MiB")
    print(f"all features at once, peak above: {above['all']:9.0f} MiB")
    print(f"ratio pipeline / all-at-once:     {above['pipeline'] / above['all']:9.2f}")
    print(f"wall time pipeline / all-at-once: {pipeline['seconds'] / at_once['seconds']:9.2f} (same machine, same run)")


if __name__ == "__main__":
    main()
