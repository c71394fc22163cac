"""
Pages per second at the released widths (InternViT-300M tower, feature width 4096, random weights), on synthetic
pages of a given tile grid (default 4x3 = 12 tiles), measured in this one run:

- pipeline: `pipeline("token-similarity")` as shipped (SDPA, no thumbnail, fused scoring), 5 queries, no pictures;
- features: `get_image_features` over the grid tiles only, `--batch-size` tiles per forward;
- unoptimised (with `--compare`): eager attention, the thumbnail computed, the page's features held whole and the
  5 queries scored on them (what the original does), as a ratio against the pipeline.

    python benchmarks/throughput.py --device cuda --dtype bfloat16 --batch-size 16 --pages 20
    python benchmarks/throughput.py --device cpu --dtype float32 --grid 2x1 --pages 1 --compare   # CPU, as a ratio

Absolute times are only meaningful on a GPU; on a shared CPU compare the ratios.
"""

import argparse
import time

import numpy as np
import torch
from PIL import Image


QUERIES = ["Invoice", "11/12/2020", "Total $1,234.56", "they are not", "OPEN 24 HOURS"]


def build(device: str, dtype: torch.dtype, attention: str):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tokenocr import TokenOCRConfig, TokenOCRImageProcessor, TokenOCRModel, TokenOCRProcessor

    torch.manual_seed(0)
    config = TokenOCRConfig(
        vision_config={"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                       "intermediate_size": 4096, "image_size": 448, "patch_size": 14, "attention_bias": True,
                       "norm_type": "layer_norm"},
        hidden_size=4096, vocab_size=92553, upsampler_hidden_size=512,
    )
    config._attn_implementation = attention
    model = TokenOCRModel(config).to(device=device, dtype=dtype).eval()
    model.set_attn_implementation(attention)
    vocab = {chr(c): i for i, c in enumerate(range(32, 127))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="?"))
    backend.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="?", pad_token=" ")
    return model, TokenOCRProcessor(TokenOCRImageProcessor(size=448, max_tiles=64), tokenizer)


def pages(count: int, cols: int, rows: int) -> list:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(150, 255, (rows * 448, cols * 448, 3), dtype=np.uint8)) for _ in range(count)]


def timed(function, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start


def run_pipeline(model, processor, images, args):
    from tokenocr import TokenSimilarityPipeline

    finder = TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity", device=args.device,
                                     batch_size=args.batch_size)
    limits = {"min_tiles": args.tiles, "max_tiles": args.tiles}
    finder(images[0], QUERIES, return_visuals=False, **limits)  # warm-up
    return timed(lambda: list(finder(images, QUERIES, return_visuals=False, **limits)), args.device)


def run_features(model, processor, images, args):
    def work():
        with torch.inference_mode():
            for image in images:
                tiles = processor.image_processor(image, use_thumbnail=False, min_tiles=args.tiles,
                                                  max_tiles=args.tiles, return_tensors="pt")["pixel_values"]
                for start in range(0, len(tiles), args.batch_size):
                    model.get_image_features(tiles[start : start + args.batch_size].to(args.device)).pooler_output

    return timed(work, args.device)


def run_unoptimised(model, processor, images, args):
    def work():
        with torch.inference_mode():
            text = processor(text=QUERIES, return_tensors="pt")
            for image in images:
                tiles = processor.image_processor(image, min_tiles=args.tiles, max_tiles=args.tiles, return_tensors="pt")
                features = model.get_image_features(tiles["pixel_values"].to(args.device)).pooler_output  # thumbnail included
                model(image_embeds=features, input_ids=text["input_ids"].to(args.device),
                      attention_mask=text["attention_mask"].to(args.device))

    return timed(work, args.device)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="default: bfloat16 on a GPU, float32 on the CPU")
    parser.add_argument("--batch-size", type=int, default=12, help="tiles per vision-tower forward")
    parser.add_argument("--pages", type=int, default=10)
    parser.add_argument("--grid", default="4x3", help="each page's tile grid, COLSxROWS (default 4x3: 12 tiles)")
    parser.add_argument("--compare", action="store_true", help="also run the unoptimised path (eager, features whole)")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
    cols, rows = map(int, args.grid.split("x"))
    args.tiles = cols * rows
    images = pages(args.pages, cols, rows)
    model, processor = build(args.device, dtype, "sdpa")
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{name}, {dtype}, {args.pages} pages of {args.grid} tiles, batch size {args.batch_size}")
    seconds = {"pipeline (5 queries)": run_pipeline(model, processor, images, args),
               "features only": run_features(model, processor, images, args)}
    if args.compare:
        eager, _ = build(args.device, dtype, "eager")
        seconds["unoptimised (eager, thumbnail, features whole)"] = run_unoptimised(eager, processor, images, args)
    for label, value in seconds.items():
        print(f"{label:>48}: {args.pages / value:8.3f} pages/s ({value:.1f} s)")
    if args.compare:
        baseline = seconds["unoptimised (eager, thumbnail, features whole)"]
        print(f"{'pipeline speed / unoptimised':>48}: {baseline / seconds['pipeline (5 queries)']:8.2f}x")


if __name__ == "__main__":
    main()
