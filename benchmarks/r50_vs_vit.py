"""
Time for one document page through the token-similarity pipeline: the R50 variant against a ViT variant, both at the
released widths with random weights, measured as a ratio within this one run.

    python benchmarks/r50_vs_vit.py [--width 1240 --height 1754] [--vit-width 2048|4096] [--dtype float32|bfloat16]
                                    [--device cpu|cuda]

The default page is an A4 page rendered at 150 dpi (the project's PDF default). The ViT model is InternViT-300M with
the bilingual release's feature width 2048 (`--vit-width 4096` for the English release); it sees the page as up to
12 tiles of 448 x 448 (the thumbnail is not computed by the pipeline). The R50 model is a ResNet-50 with upsampler width
512 and feature width 2048; it sees the whole page at its own size. Each model runs in its own process (so one does not
inherit the other's memory); R50 runs before and after the ViT, and the ratio uses their mean, so that a change in the
machine's load during the run shows up as a difference between the two R50 times. The embedding table is cut to 1000
rows for both (its size does not change the per-page work). Numbers are wall-clock seconds for `pipe(page, query,
return_visuals=False)` after one warm-up call on a small image.
"""

import argparse
import json
import subprocess
import sys


QUERY = "Invoice 2024"

_RUN = r"""
import json, sys, time
import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from tokenocr import TokenOCRConfig, TokenOCRImageProcessor, TokenOCRModel, TokenOCRProcessor, TokenSimilarityPipeline

variant, vit_width, dtype, device, width, height, query = sys.argv[1], int(sys.argv[2]), getattr(torch, sys.argv[3]), \
    sys.argv[4], int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
torch.manual_seed(0)
if variant == "vit":
    vision = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
              "image_size": 448, "patch_size": 14, "attention_bias": True, "norm_type": "layer_norm"}
    config = TokenOCRConfig(vision_config=vision, hidden_size=vit_width, vocab_size=1000, upsampler_hidden_size=512)
    image_processor = TokenOCRImageProcessor(size=448)
else:  # ResNet-50: transformers' ResNetConfig defaults are depths 3, 4, 6, 3 and widths 256 ... 2048
    config = TokenOCRConfig(vision_config={"model_type": "resnet"}, hidden_size=2048, vocab_size=1000,
                            upsampler_hidden_size=512)
    image_processor = TokenOCRImageProcessor(do_tiling=False)
model = TokenOCRModel(config).to(device=device, dtype=dtype).eval()
vocab = {chr(c): i for i, c in enumerate(range(32, 127))}
backend = Tokenizer(models.WordLevel(vocab, unk_token="?"))
backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="?", pad_token=" ")
finder = TokenSimilarityPipeline(model=model, processor=TokenOCRProcessor(image_processor, tokenizer),
                                 task="token-similarity", device=device)
rng = np.random.default_rng(0)
page = Image.fromarray(rng.integers(200, 255, (height, width, 3), dtype=np.uint8))
with torch.no_grad():
    finder(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), query, return_visuals=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    tokens = finder(page, query, return_visuals=False)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
inputs = image_processor(page, use_thumbnail=False)
print(json.dumps({"seconds": seconds, "pixel_values": list(inputs["pixel_values"].shape),
                  "map": list(tokens[0]["similarity"].shape)}))
"""


def run(variant: str, args) -> dict:
    command = [sys.executable, "-c", _RUN, variant, str(args.vit_width), args.dtype, args.device, str(args.width),
               str(args.height), QUERY]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--width", type=int, default=1240)
    parser.add_argument("--height", type=int, default=1754)
    parser.add_argument("--vit-width", type=int, choices=[2048, 4096], default=2048,
                        help="feature width of the ViT model: 2048 (bilingual release) or 4096 (English release)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    r50_before = run("r50", args)
    vit = run("vit", args)
    r50_after = run("r50", args)
    r50 = (r50_before["seconds"] + r50_after["seconds"]) / 2
    print(f"one {args.width} x {args.height} page, query {QUERY!r}, {args.dtype} on {args.device}, random weights")
    print(f"ViT (InternViT-300M, D={args.vit_width}): {vit['seconds']:8.1f} s   input {vit['pixel_values']} "
          f"(tiles), map {vit['map']}")
    print(f"R50 (ResNet-50, D=2048):     {r50:8.1f} s   input {r50_before['pixel_values']} (whole page), "
          f"map {r50_before['map']}   (runs: {r50_before['seconds']:.1f} s before, {r50_after['seconds']:.1f} s after)")
    print(f"R50 / ViT time:              {r50 / vit['seconds']:8.3f}   (ViT / R50: {vit['seconds'] / r50:.1f}x)")


if __name__ == "__main__":
    main()
