# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
Evaluation on a token-mask dataset: how well a model's per-token similarity maps find the tokens of a page.

For every page and every distinct token id on it (whitespace-only tokens, i.e. background boxes, left out), the
token's map is the stitched cosine-similarity map (thumbnail left out) resized bilinearly to the page, exactly as
the `token-similarity` pipeline makes it, and the token's ground truth is the union of the masks of all its
occurrences on the page.

- **Pointing accuracy**: the share of (page, token) pairs whose map reaches its maximum inside the ground truth.
- **Mask IoU**: the map `> threshold` against the ground truth, intersection over union, averaged over pairs.
- **Precision / recall / F1** (text segmentation): pixel counts summed over all pairs, then
  `precision = |pred & truth| / |pred|`, `recall = |pred & truth| / |truth|` and their harmonic mean.
- **Threshold-free figures**: the **map AUC** (the area under the ROC curve of a token's map as a score separating
  its ground-truth pixels from the rest of the page, averaged over pairs), and the **best mean IoU** over the
  thresholds `THRESHOLDS` with the threshold that gives it (`calibrate_threshold` chooses a model's threshold so).
  Both come from histograms of map values in `HISTOGRAM_BINS` equal bins over [-1, 1].
- **Retrieval precision@k**: queries are words of the pages (letters only, at least 3); a page contains a query when
  the word is among its words (the page's `text`, or its joined token texts). Each query is tokenised with the query
  rule, pages are ranked by relevance (the best value of the query's own map, the pipeline's `relevance_score`),
  and precision@k is the share of the k best pages that contain the query. Only words found on at least k pages
  and missing from at least one are used. **Rare-word P@1** does the same for words found on one or two pages.
- **Word figures** (pages with `words`, as `tokenocr make-data` writes them): up to `WORDS_PER_PAGE` words of each
  page (at least 3 characters, holding a letter or digit) are queried on it. **Word pointing** is the share whose
  query map (`query_tokenocr.query_similarity`) peaks inside an occurrence of the word; **query box IoU** is the mean,
  over the queries, of the IoU of the query's best box with the nearest occurrence of the word (0 without a box).
"""

import math
import random
import re
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..processing.pages_tokenocr import describe_image, to_rgb_image
from ..processing.query_tokenocr import query_boxes, query_similarity
from ..processing.visualization_tokenocr import resize_map
from .data import mask_array


WORDS_PER_PAGE = 8


def pointing_hit(token_map: np.ndarray, truth: np.ndarray) -> bool:
    """Whether `token_map` reaches its maximum (first one, row-major) inside the boolean mask `truth`."""
    return bool(truth.flat[int(np.argmax(token_map))])


def mask_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    union = np.logical_or(predicted, truth).sum()
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


def precision_recall_f1(intersection: float, predicted: float, truth: float) -> tuple[float, float, float]:
    """Precision, recall and F1 from pixel counts (0 where undefined)."""
    precision = intersection / predicted if predicted else 0.0
    recall = intersection / truth if truth else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


HISTOGRAM_BINS = 2000  # bins of width 0.001 over the cosine range [-1, 1]
THRESHOLDS = tuple(round(0.01 * step, 2) for step in range(0, 100))  # 0.00, 0.01, ..., 0.99


def value_histograms(token_map: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts of map values inside and outside `truth`, in `HISTOGRAM_BINS` equal bins over [-1, 1]."""
    values = np.clip(token_map.astype(np.float64, copy=False), -1.0, 1.0)
    inside = np.histogram(values[truth], bins=HISTOGRAM_BINS, range=(-1.0, 1.0))[0]
    outside = np.histogram(values[~truth], bins=HISTOGRAM_BINS, range=(-1.0, 1.0))[0]
    return inside, outside


def histogram_auc(inside: np.ndarray, outside: np.ndarray) -> float:
    """ROC AUC of the values counted in `inside` (positives) against `outside`; ties count one half. NaN if a side is empty."""
    positives, negatives = inside.sum(), outside.sum()
    if not positives or not negatives:
        return math.nan
    below = np.cumsum(outside) - outside  # negatives in lower bins
    return float((inside * (below + 0.5 * outside)).sum() / (positives * negatives))


def iou_curve(inside: np.ndarray, outside: np.ndarray, thresholds=THRESHOLDS) -> np.ndarray:
    """IoU of `map >= t` with the truth for each threshold `t`, from the histograms (t on the bin edges)."""
    edges = np.rint((np.asarray(thresholds) + 1.0) * HISTOGRAM_BINS / 2).astype(int)
    inside_above = np.concatenate([np.cumsum(inside[::-1])[::-1], [0]])[edges]
    outside_above = np.concatenate([np.cumsum(outside[::-1])[::-1], [0]])[edges]
    union = inside.sum() + outside_above
    return np.where(union > 0, inside_above / np.maximum(union, 1), 1.0)


def precision_at_k(scores, relevant, k: int) -> float:
    """The share of the `k` highest-scoring items (stable order on ties) that are relevant."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    return float(np.asarray(relevant, dtype=bool)[order].sum() / k)


@dataclass
class EvaluationResult:
    """Figures of [`evaluate_model`] (see the module docstring); `to_dict()` for JSON."""

    pages: int = 0
    tokens: int = 0
    threshold: float = 0.2
    pointing_accuracy: float = float("nan")
    mean_iou: float = float("nan")
    precision: float = float("nan")
    recall: float = float("nan")
    f1: float = float("nan")
    retrieval_queries: int = 0
    retrieval_k: int = 5
    precision_at_1: float = float("nan")
    precision_at_k: float = float("nan")
    map_auc: float = float("nan")
    best_mean_iou: float = float("nan")
    best_threshold: float = float("nan")
    word_queries: int = 0
    word_pointing: float = float("nan")
    query_box_iou: float = float("nan")
    rare_word_queries: int = 0
    rare_word_precision_at_1: float = float("nan")

    def to_dict(self) -> dict:
        """The figures as a JSON-ready dict: undefined figures (NaN) are `None` (JSON `null`)."""
        return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in asdict(self).items()}

    def retrieval_line(self) -> str:
        if not self.retrieval_queries:
            return (
                f"retrieval: no queries (a query word must appear on at least k={self.retrieval_k} of the "
                f"{self.pages} pages and be missing from one; evaluate more pages or lower --k)"
            )
        return (
            f"retrieval ({self.retrieval_queries} queries)  P@1 {self.precision_at_1:.4f}   "
            f"P@{self.retrieval_k} {self.precision_at_k:.4f}"
        )

    def report(self) -> str:
        """The figures as a few human-readable lines."""
        return "\n".join(
            [
                f"pages {self.pages}, (page, token) pairs {self.tokens}, threshold {self.threshold}",
                f"pointing accuracy   {self.pointing_accuracy:.4f}",
                f"mean mask IoU       {self.mean_iou:.4f}",
                f"precision / recall  {self.precision:.4f} / {self.recall:.4f}   F1 {self.f1:.4f}",
                f"map AUC             {self.map_auc:.4f}",
                f"best mean mask IoU  {self.best_mean_iou:.4f} (threshold {self.best_threshold:g})",
                self.retrieval_line(),
                *([f"words ({self.word_queries} queries)  word pointing {self.word_pointing:.4f}   "
                   f"query box IoU {self.query_box_iou:.4f}"] if self.word_queries else []),
                *([f"rare words ({self.rare_word_queries} queries, on 1-2 pages)  P@1 "
                   f"{self.rare_word_precision_at_1:.4f}"] if self.rare_word_queries else []),
            ]
        )


def page_words(example: dict) -> set[str]:
    """The words (letters only, at least 3) of a page: from its `text`, else from its joined token texts."""
    text = example.get("text") or "".join(token["text"] for token in example["tokens"])
    return set(re.findall(r"[A-Za-z]{3,}", text))


def choose_queries(pages_words: list[set[str]], k: int, count: int, seed: int = 0, most: int | None = None) -> list[str]:
    """Up to `count` words found on at least `k` pages (and at most `most`) and missing from at least one, chosen
    with `seed`."""
    counts = {}
    for words in pages_words:
        for word in words:
            counts[word] = counts.get(word, 0) + 1
    most = len(pages_words) - 1 if most is None else min(most, len(pages_words) - 1)
    eligible = sorted(word for word, n in counts.items() if k <= n <= most)
    return sorted(random.Random(seed).sample(eligible, min(count, len(eligible))))


def page_maps(model, processor, image, token_ids: list[int], max_tiles=None, tiles_per_batch: int = 8):
    """`(tokens, h, w)` similarity maps of `token_ids` on `image`, scored as every surface scores a page
    ([`TokenOCRProcessor.page_similarity`])."""
    return processor.page_similarity(model, image, [token_ids], max_tiles=max_tiles, tiles_per_batch=tiles_per_batch)[0]


def resize_maps(maps: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Maps resized to the page as every surface resizes them (`visualization_tokenocr.resize_map`)."""
    return resize_map(maps, (width, height))


def score_page(maps: np.ndarray, truths: list[np.ndarray], threshold: float) -> dict:
    """Pointing hits, IoUs and pixel counts of one page's token maps against their ground truths."""
    stats = {"hits": 0, "ious": [], "intersection": 0, "predicted": 0, "truth": 0, "aucs": [], "iou_curves": []}
    for token_map, truth in zip(maps, truths):
        inside, outside = value_histograms(token_map, truth)
        stats["aucs"].append(histogram_auc(inside, outside))
        stats["iou_curves"].append(iou_curve(inside, outside))
        predicted = token_map > threshold
        stats["hits"] += pointing_hit(token_map, truth)
        stats["ious"].append(mask_iou(predicted, truth))
        stats["intersection"] += int(np.logical_and(predicted, truth).sum())
        stats["predicted"] += int(predicted.sum())
        stats["truth"] += int(truth.sum())
    return stats


def words_from_token_masks(example: dict, mask: np.ndarray) -> list[dict]:
    """
    Words of a page without `words` (e.g. synthetic pages), rebuilt from its tokens: consecutive tokens (reading
    order) on one line whose boxes are less than 0.3 of their height apart, kept only when the joined text is a
    whole word of the page's `text`.
    """
    from .pdf_data import WORD_PUNCTUATION

    present = {token["mask_index"] for token in example["tokens"] if token["text"].strip()}
    boxes = {}
    ys, xs = np.nonzero(np.isin(mask, list(present)))
    for index in present:
        hit = mask[ys, xs] == index
        if hit.any():
            boxes[index] = [float(xs[hit].min()), float(ys[hit].min()), float(xs[hit].max() + 1), float(ys[hit].max() + 1)]
    known = {word.strip(WORD_PUNCTUATION) for word in (example.get("text") or "").split()}
    words, current = [], None
    for token in example["tokens"]:
        box = boxes.get(token["mask_index"])
        if box is None or not token["text"].strip():
            continue
        if current is not None:
            last = current["box"]
            height = max(last[3] - last[1], box[3] - box[1])
            overlap = min(last[3], box[3]) - max(last[1], box[1])
            near = -0.2 * height <= box[0] - last[2] < 0.3 * height
            if overlap > 0.5 * min(last[3] - last[1], box[3] - box[1]) and near and not token["text"][:1].isspace():
                current["text"] += token["text"]
                current["box"] = [min(last[0], box[0]), min(last[1], box[1]), max(last[2], box[2]), max(last[3], box[3])]
                continue
            words.append(current)
        current = {"text": token["text"].strip(), "box": box}
    words += [current] if current else []
    return [word for word in words if word["text"] in known]


def page_word_queries(example: dict, count: int = WORDS_PER_PAGE, seed: int = 0,
                      mask: np.ndarray | None = None) -> dict[str, list[list[float]]]:
    """Up to `count` words of a page to query on it (at least 3 characters, holding a letter or digit), each with
    the boxes of all its occurrences (the page's `words`, else `words_from_token_masks`); chosen with `seed` and the
    page's text."""
    occurrences = {}
    words = example.get("words") or (words_from_token_masks(example, mask) if mask is not None else [])
    for word in words:
        if len(word["text"]) >= 3 and any(char.isalnum() for char in word["text"]):
            occurrences.setdefault(word["text"], []).append(list(word["box"]))
    chosen = random.Random(f"{seed}:{example.get('text', '')[:200]}").sample(sorted(occurrences),
                                                                            min(count, len(occurrences)))
    return {word: occurrences[word] for word in sorted(chosen)}


def box_iou(a, b) -> float:
    """Intersection over union of two `[left, top, right, bottom]` boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def score_words(processor, maps: torch.Tensor, ids_at: dict, word_queries: dict, word_ids: dict, threshold: float,
                image_size: tuple[int, int], whole: bool) -> dict:
    """Word pointing hits and query box IoUs of one page's word queries (see the module docstring)."""
    width, height = image_size
    scale = processor.map_scale(maps.shape[-2:], (height, width), whole)
    hits, ious = 0, []
    for word, boxes in word_queries.items():
        ids = word_ids[word]
        texts = [processor.tokenizer.decode([i]) for i in ids]
        token_maps = maps[[ids_at[i] for i in ids]]
        query_map, pitch_map = query_similarity(token_maps, texts)
        y, x = divmod(int(torch.argmax(query_map)), query_map.shape[1])
        px, py = (x + 0.5) * scale[0], (y + 0.5) * scale[1]
        hits += any(left <= px < right and top <= py < bottom for left, top, right, bottom in boxes)
        found, _ = query_boxes(query_map, pitch_map, token_maps, texts, threshold, scale, (width, height), max_boxes=1)
        ious.append(max(box_iou(found[0], box) for box in boxes) if found else 0.0)
    return {"word_hits": hits, "word_ious": ious}


def evaluate_page(model, processor, example: dict, query_ids: list[list[int]], threshold: float, max_tiles=None,
                  tiles_per_batch: int = 8, index: int = 0, seed: int = 0) -> tuple[dict, list[float]]:
    """One page: its segmentation and word statistics and the relevance of each query."""
    name = describe_image(example["image"], position=f"page {index} of the dataset")
    image = to_rgb_image(example["image"], name=name)
    mask = mask_array(example["mask"])
    by_id = {}
    for token in example["tokens"]:
        if token["text"].strip():
            by_id.setdefault(int(token["id"]), []).append(int(token["mask_index"]))
    page_ids = sorted(by_id)
    word_queries = page_word_queries(example, seed=seed, mask=mask)
    word_ids = {word: processor(text=word)["input_ids"] for word in word_queries}
    extra = {i for ids in [*query_ids, *word_ids.values()] for i in ids} - set(page_ids)
    all_ids = page_ids + sorted(extra)
    if not all_ids:
        return {**score_page(np.zeros((0, 1, 1)), [], threshold), "word_hits": 0, "word_ious": []}, []
    maps = page_maps(model, processor, image, all_ids, max_tiles, tiles_per_batch)
    ids_at = {token_id: row for row, token_id in enumerate(all_ids)}
    truths = [np.isin(mask, by_id[i]) for i in page_ids]
    stats = score_page(resize_maps(maps[: len(page_ids)], image.height, image.width), truths, threshold)
    whole = not processor.image_processor.do_tiling
    stats.update(score_words(processor, maps, ids_at, word_queries, word_ids, threshold, image.size, whole))
    relevance = [float(query_similarity(maps[[ids_at[i] for i in ids]],
                                        [processor.tokenizer.decode([i]) for i in ids])[0].max())
                 for ids in query_ids]
    return stats, relevance


def evaluate_model(model, processor, dataset, threshold: float | None = None, k: int = 5, num_queries: int = 100,
                   max_tiles=None, tiles_per_batch: int = 8, seed: int = 0, progress=None) -> EvaluationResult:
    r"""
    Evaluate a `TokenOCRModel` on a token-mask dataset (a `datasets.Dataset` or a list of examples).

    Args:
        threshold: mask threshold on the cosine similarity; default the model's own (`image_processor.mask_threshold`,
            as the pipeline's).
        k: the k of retrieval precision@k; num_queries: how many query words (fewer if fewer qualify).
        max_tiles: tiling limit (the processor's by default); tiles_per_batch: tiles per vision-tower forward.
        progress: optional wrapper of the page iterator (e.g. `tqdm`).
    """
    threshold = processor.image_processor.mask_threshold if threshold is None else threshold
    model.eval()
    examples = [dataset[i] for i in range(len(dataset))] if not isinstance(dataset, list) else dataset
    pages_words = [page_words(example) for example in examples]
    queries = choose_queries(pages_words, k, num_queries, seed)
    rare = choose_queries([{w for w in words if len(w) >= 4} for words in pages_words], 1, num_queries, seed, most=2)
    query_ids = [processor(text=query)["input_ids"] for query in queries + rare]
    totals = {"hits": 0, "ious": [], "intersection": 0, "predicted": 0, "truth": 0, "aucs": [], "iou_curves": [],
              "word_hits": 0, "word_ious": []}
    relevance = []
    pages = progress(range(len(examples))) if progress else range(len(examples))
    for index in pages:
        stats, scores = evaluate_page(model, processor, examples[index], query_ids, threshold, max_tiles,
                                      tiles_per_batch, index, seed)
        for key in ("hits", "intersection", "predicted", "truth", "word_hits"):
            totals[key] += stats[key]
        for key in ("ious", "aucs", "iou_curves", "word_ious"):
            totals[key].extend(stats[key])
        relevance.append(scores)
    result = summarize(totals, [scores[: len(queries)] for scores in relevance], queries, examples, threshold, k)
    if totals["word_ious"]:
        result.word_queries = len(totals["word_ious"])
        result.word_pointing = totals["word_hits"] / result.word_queries
        result.query_box_iou = float(np.mean(totals["word_ious"]))
    if rare:
        scores = np.asarray([scores[len(queries):] for scores in relevance])
        result.rare_word_queries = len(rare)
        result.rare_word_precision_at_1 = float(np.mean([
            precision_at_k(scores[:, column], [query in words for words in pages_words], 1)
            for column, query in enumerate(rare)]))
    return result


def summarize(totals, relevance, queries, examples, threshold, k) -> EvaluationResult:
    """Turn accumulated page statistics and query relevances into an `EvaluationResult`."""
    count = len(totals["ious"])
    precision, recall, f1 = precision_recall_f1(totals["intersection"], totals["predicted"], totals["truth"])
    result = EvaluationResult(
        pages=len(examples), tokens=count, threshold=threshold, retrieval_queries=len(queries), retrieval_k=k,
        pointing_accuracy=totals["hits"] / count if count else math.nan,
        mean_iou=float(np.mean(totals["ious"])) if count else math.nan,
        precision=precision, recall=recall, f1=f1,
    )
    aucs = [auc for auc in totals["aucs"] if not math.isnan(auc)]
    result.map_auc = float(np.mean(aucs)) if aucs else math.nan
    if count:
        curve = np.mean(totals["iou_curves"], axis=0)
        best = int(np.argmax(curve))  # the lowest threshold among equals
        result.best_mean_iou, result.best_threshold = float(curve[best]), THRESHOLDS[best]
    if queries:
        words = [page_words(example) for example in examples]
        scores = np.asarray(relevance)  # (pages, queries)
        at_1, at_k = [], []
        for column, query in enumerate(queries):
            relevant = [query in page for page in words]
            at_1.append(precision_at_k(scores[:, column], relevant, 1))
            at_k.append(precision_at_k(scores[:, column], relevant, k))
        result.precision_at_1, result.precision_at_k = float(np.mean(at_1)), float(np.mean(at_k))
    return result


TABLE_FIGURES = (
    ("pointing accuracy", "pointing_accuracy"), ("mean mask IoU", "mean_iou"), ("F1", "f1"),
    ("map AUC", "map_auc"), ("best mean mask IoU", "best_mean_iou"), ("its threshold", "best_threshold"),
    ("retrieval P@1", "precision_at_1"), ("word pointing", "word_pointing"), ("query box IoU", "query_box_iou"),
    ("rare-word P@1", "rare_word_precision_at_1"),
)


def figures_table(columns: dict[str, dict]) -> str:
    """A Markdown table of figures: one column per `EvaluationResult.to_dict()` in `columns` (name -> figures)."""
    def cell(value):
        return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for label, key in TABLE_FIGURES:
        lines.append(f"| {label} | " + " | ".join(cell(figures.get(key)) for figures in columns.values()) + " |")
    return "\n".join(lines)


def calibrate_threshold(model, processor, dataset, **kwargs) -> float:
    """
    The mask threshold (one of `THRESHOLDS`) that gives `model` its best mean mask IoU on `dataset` (a validation
    split, not the pages the model is then measured on); `kwargs` go to [`evaluate_model`].
    """
    result = evaluate_model(model, processor, dataset, num_queries=0, **kwargs)
    if math.isnan(result.best_threshold):
        raise ValueError("Cannot choose a threshold: the dataset has no supervised (page, token) pairs.")
    return result.best_threshold
