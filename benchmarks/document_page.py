"""
Seconds to score one Letter page at 150 dpi (1275 x 1650 pixels) with the document model, on this machine:

- query level: `pipeline("token-similarity")` at `level="query"`, the page's queries, no pictures (what
  `tokenocr search` does per page);
- with pictures: the same with `return_visuals=True` (what `tokenocr similarity` and the demo draw);
- bare computation: `model.get_similarity` on the processed page (vision tower, upsampler, projector, scoring) with
  the processor's own preprocessing, as a ratio for the pipeline's overhead.

    python benchmarks/document_page.py                        # the shipped document model, 2 threads, 5 runs
    python benchmarks/document_page.py --model MODEL --threads 2 --runs 7 --device cpu

Prints the minimum and median of each over `--runs` runs after one warm-up run, and the ratios within this run.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch


ROOT = Path(__file__).resolve().parents[1]
QUERIES = ["February", "WO-4502", "$3,410.50", "ventilation", "Harbour Street"]


def timed(function, runs: int) -> list[float]:
    function()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def document_model_parser(doc: str) -> argparse.ArgumentParser:
    """The options the document-model benchmarks share: --model (default: the shipped document model), --runs and
    --threads."""
    parser = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "tokenocr-tiny-documents"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def main(argv=None):
    parser = document_model_parser(__doc__)
    parser.add_argument("--page", default=str(ROOT / "demo" / "examples" / "document_page.png"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from PIL import Image

    import tokenocr  # noqa: F401  (registers the task)
    from tokenocr.loading import load_pipeline

    page = Image.open(args.page).convert("RGB")
    finder = load_pipeline(args.model, args.device)
    model, processor = finder.model, finder.processor

    def bare():
        inputs = processor(images=page, text=QUERIES, return_tensors="pt")
        with torch.no_grad():
            model.get_similarity(inputs["pixel_values"].to(model.device), inputs["input_ids"].to(model.device),
                                 inputs["attention_mask"].to(model.device), pixel_sizes=inputs.get("pixel_sizes"))

    results = {
        "bare computation": timed(bare, args.runs),
        "query level, no pictures": timed(lambda: finder(page, QUERIES, level="query", return_visuals=False), args.runs),
        "query level, with pictures": timed(lambda: finder(page, QUERIES, level="query"), args.runs),
    }
    print(f"page {page.width} x {page.height} px, {len(QUERIES)} queries, {args.threads} threads, device {args.device}, "
          f"{args.runs} runs")
    base = statistics.median(results["bare computation"])
    for name, times in results.items():
        median = statistics.median(times)
        print(f"{name:28s} min {min(times):6.3f} s   median {median:6.3f} s   {median / base:5.2f}x the bare computation")


if __name__ == "__main__":
    main()
