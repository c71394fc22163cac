"""
bfloat16 against float32 on a trained model: the shipped document model on its 4 held-out pages.

Loads `models/tokenocr-tiny-documents` as the README's quick start does (`import tokenocr`, `AutoModel` /
`AutoProcessor`), once in float32 and once in bfloat16, and on each page of `tests/fixtures/documents/pages.json`
with its query words (as `tests/test_document_model.py` uses them) reports:

- per query, the largest |difference| between the two dtypes' token maps (`processor.page_similarity`, the query's
  tokens only) and between the query maps of the pipeline at `level="query"`;
- whether the best query box (`boxes[0]`) is the same, and its IoU;
- word pointing for both dtypes: the query map's peak inside one of the word's boxes (the test's `hits`), and the best
  box's centre inside one (4 px margin, the test's `with_box`);
- seconds per page (the first page, all its queries, query level, no pictures) for each dtype, alternating over
  `--runs` after a warm-up, and the ratio bfloat16 / float32.

    python benchmarks/bf16_maps.py
    python benchmarks/bf16_maps.py --model models/tokenocr-tiny-documents --runs 7 --threads 2
"""

import json
import statistics
import time
from pathlib import Path

import torch
from PIL import Image

from document_page import ROOT, document_model_parser
from tokenocr.training.evaluate import box_iou as iou



def inside(point, boxes, margin: float = 0.0) -> bool:
    x, y = point
    return any(left - margin <= x < right + margin and top - margin <= y < bottom + margin
               for left, top, right, bottom in boxes)


def peak_in_pixels(processor, result, image) -> tuple[float, float]:
    query_map = torch.as_tensor(result["similarity"])
    y, x = divmod(int(torch.argmax(query_map)), query_map.shape[1])
    scale = processor.map_scale(query_map.shape, (image.height, image.width), True)
    return (x + 0.5) * scale[0], (y + 0.5) * scale[1]


def main(argv=None):
    parser = document_model_parser(__doc__)
    parser.add_argument("--pages", default=str(ROOT / "tests" / "fixtures" / "documents"))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import tokenocr  # noqa: F401  (registers TokenOCR with transformers)
    from tokenocr import TokenSimilarityPipeline
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(args.model)
    models = {name: AutoModel.from_pretrained(args.model, dtype=getattr(torch, name)).eval()
              for name in ("float32", "bfloat16")}
    finders = {name: TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity", device="cpu")
               for name, model in models.items()}
    print(f"{args.model}: " + ", ".join(f"{name} {model.dtype}" for name, model in models.items()))

    folder = Path(args.pages)
    pages = json.loads((folder / "pages.json").read_text())
    stats = {"totals": {name: {"hits": 0, "with_box": 0} for name in models}, "token": [], "query": [], "iou": [],
             "same_box": 0, "count": 0}
    print(f"{'page':16s} {'query':30s} {'token max|d|':>12s} {'query max|d|':>12s} {'box0 same':>9s} {'IoU':>5s} "
          f"{'hit32':>5s} {'hit16':>5s} {'box32':>5s} {'box16':>5s}")
    for page in pages:
        compare_page(processor, models, finders, folder, page, stats)
    report(stats, len(pages))
    time_one_page(finders, folder, pages[0], args.runs, args.threads)


def compare_page(processor, models, finders, folder: Path, page: dict, stats: dict) -> None:
    """Both dtypes on one page: each query's largest map differences, best boxes and word pointing, into `stats`."""
    image = Image.open(folder / page["image"]).convert("RGB")
    queries = list(page["queries"])
    encoded = processor(text=queries, return_tensors="pt")
    maps = {name: processor.page_similarity(model, image, encoded["input_ids"], encoded["attention_mask"])
            for name, model in models.items()}  # (queries, tokens, h, w) float32
    results = {name: finder(image, queries, level="query", return_visuals=False) for name, finder in finders.items()}
    lengths = encoded["attention_mask"].sum(dim=1).tolist()
    for index, query in enumerate(queries):
        n = lengths[index]
        token_diff = float((maps["float32"][index, :n] - maps["bfloat16"][index, :n]).abs().max())
        a, b = results["float32"][index], results["bfloat16"][index]
        query_diff = float(abs(torch.as_tensor(a["similarity"]) - torch.as_tensor(b["similarity"])).max())
        box_a, box_b = (a["boxes"][0] if a["boxes"] else None), (b["boxes"][0] if b["boxes"] else None)
        overlap = iou(box_a, box_b) if box_a and box_b else float(box_a == box_b)
        flags = {}
        for name, result in (("float32", a), ("bfloat16", b)):
            hit = inside(peak_in_pixels(processor, result, image), page["queries"][query])
            boxed = bool(result["boxes"]) and inside(
                ((result["boxes"][0][0] + result["boxes"][0][2]) / 2,
                 (result["boxes"][0][1] + result["boxes"][0][3]) / 2), page["queries"][query], margin=4)
            stats["totals"][name]["hits"] += hit
            stats["totals"][name]["with_box"] += boxed
            flags[name] = (hit, boxed)
        stats["token"].append(token_diff)
        stats["query"].append(query_diff)
        stats["iou"].append(overlap)
        stats["same_box"] += box_a == box_b
        stats["count"] += 1
        print(f"{page['image']:16s} {query[:30]:30s} {token_diff:12.4f} {query_diff:12.4f} {str(box_a == box_b):>9s} "
              f"{overlap:5.2f} {flags['float32'][0]:5d} {flags['bfloat16'][0]:5d} {flags['float32'][1]:5d} "
              f"{flags['bfloat16'][1]:5d}")


def report(stats: dict, pages: int) -> None:
    count = stats["count"]
    print(f"\n{count} queries on {pages} pages")
    print(f"token maps: max |difference| median {statistics.median(stats['token']):.4f}, max {max(stats['token']):.4f}")
    print(f"query maps: max |difference| median {statistics.median(stats['query']):.4f}, max {max(stats['query']):.4f}")
    print(f"best box identical for {stats['same_box']}/{count}; IoU median {statistics.median(stats['iou']):.3f}, "
          f"min {min(stats['iou']):.3f}")
    for name, total in stats["totals"].items():
        print(f"{name:9s} word pointing: peak hits {total['hits']}/{count}, best-box hits {total['with_box']}/{count}")


def time_one_page(finders, folder: Path, page: dict, runs: int, threads: int) -> None:
    """Seconds per call of each dtype's pipeline on one page, alternating after a warm-up; the median ratio."""
    image = Image.open(folder / page["image"]).convert("RGB")
    queries = list(page["queries"])
    times = {name: [] for name in finders}
    for finder in finders.values():
        finder(image, queries, level="query", return_visuals=False)  # warm-up
    for _ in range(runs):  # alternating
        for name, finder in finders.items():
            start = time.perf_counter()
            finder(image, queries, level="query", return_visuals=False)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"\none page ({page['image']}, {image.width} x {image.height} px, {len(queries)} queries, query level, no "
          f"pictures), {threads} threads, median of {runs}: float32 {medians['float32']:.3f} s, "
          f"bfloat16 {medians['bfloat16']:.3f} s: bfloat16 / float32 = {medians['bfloat16'] / medians['float32']:.2f}")

if __name__ == "__main__":
    main()
