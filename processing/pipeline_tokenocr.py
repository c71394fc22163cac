# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""`pipeline("token-similarity")`: where each token of a text query appears in document images."""

from collections.abc import Iterable, Iterator

import numpy as np
import torch
from PIL import Image
from transformers.pipelines.base import ChunkPipeline

from .image_processing_tokenocr import is_pdf, load_pdf_pages, pad_images, to_rgb_image
from .processing_tokenocr import stitch_tiles, whole_image_map
from .settings_tokenocr import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_PDF_DPI,
    LOCATIONS_PER_CHUNK,
    MAX_VISUAL_SIDE,
    check_queries,
    check_threshold,
    check_tiles,
)
from .visualization_tokenocr import overlay_heatmap


def relevance_score(tokens: list[dict]) -> float:
    """
    Query-level image-text relevance: the mean, over the query's tokens, of each token's best cosine similarity
    anywhere on the image (its `score`). Higher means the image is more likely to contain the query.
    """
    return float(np.mean([token["score"] for token in tokens])) if tokens else float("nan")


def mask_to_boxes(mask: np.ndarray) -> list[list[int]]:
    """
    Bounding boxes of the 8-connected regions of a boolean mask, as `[left, top, right, bottom]` pixel
    coordinates with `right`/`bottom` exclusive (PIL's crop convention), sorted top to bottom, then left to right.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or not mask.any():
        return []
    height, width = mask.shape
    edges = np.diff(np.pad(mask, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
    run_rows, run_starts, run_ends = starts[0], starts[1], ends[1]  # ends exclusive; both in row-major order
    parent = list(range(len(run_rows)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_first = np.searchsorted(run_rows, np.arange(height + 1))
    for row in range(1, height):
        above, here = range(row_first[row - 1], row_first[row]), range(row_first[row], row_first[row + 1])
        j = above.start
        for i in here:
            # 8-connectivity: runs touch when they overlap or meet at a corner.
            while j < above.stop and run_ends[j] < run_starts[i]:
                j += 1
            k = j
            while k < above.stop and run_starts[k] <= run_ends[i]:
                parent[find(i)] = find(k)
                k += 1
    boxes = {}
    for i in range(len(run_rows)):
        root = find(i)
        left, top, right, bottom = int(run_starts[i]), int(run_rows[i]), int(run_ends[i]), int(run_rows[i]) + 1
        box = boxes.setdefault(root, [left, top, right, bottom])
        boxes[root] = [min(box[0], left), min(box[1], top), max(box[2], right), max(box[3], bottom)]
    return sorted(boxes.values(), key=lambda box: (box[1], box[0]))


def visual_size(width: int, height: int) -> tuple[int, int]:
    """The `(width, height)` of an image's heatmaps and masks: its own, scaled to fit `MAX_VISUAL_SIDE` if larger."""
    scale = min(1.0, MAX_VISUAL_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def visual_image(image: Image.Image) -> Image.Image:
    """`image` at `visual_size`: what heatmaps are drawn over."""
    size = visual_size(*image.size)
    return image if size == image.size else image.resize(size, Image.Resampling.BILINEAR)


def token_visuals(token_map: torch.Tensor, image_size: tuple[int, int], threshold: float, shown=None):
    """
    The image-size pictures of one token's stitched map, made one token at a time in float32.

    Args:
        token_map (`torch.Tensor` of shape `(rows * side, cols * side)`): the token's stitched similarity map.
        image_size (`(width, height)`): the input image's size in pixels.
        threshold (`float`): mask threshold on the cosine similarity.
        shown (`PIL.Image.Image`, *optional*): the image at `visual_size` (`visual_image`), to draw the heatmap on.

    Returns:
        `(mask, boxes, heatmap)`: `mask` a bool array `(height, width)` at the image's `visual_size`; `boxes` of its
        connected regions in the image's own pixel coordinates; `heatmap` an RGB PIL image of the mask's size, or
        `None` without `shown`.
    """
    width, height = visual_size(*image_size)
    resized = torch.nn.functional.interpolate(
        token_map.float()[None, None], size=(height, width), mode="bilinear", align_corners=False
    )[0, 0].numpy()
    mask = resized > threshold
    boxes = mask_to_boxes(mask)
    if (width, height) != tuple(image_size):
        sx, sy = image_size[0] / width, image_size[1] / height
        boxes = [
            [int(left * sx), int(top * sy), min(image_size[0], round(right * sx)), min(image_size[1], round(bottom * sy))]
            for left, top, right, bottom in boxes
        ]
    return mask, boxes, overlay_heatmap(shown, resized) if shown is not None else None


class TokenSimilarityPipeline(ChunkPipeline):
    r"""
    Per-token similarity heatmaps, text masks, boxes and relevance scores for document images and text queries.

    ```python
    >>> from transformers import pipeline
    >>> finder = pipeline("token-similarity", model="org/TokenOCR", trust_remote_code=True)
    >>> tokens = finder("page.png", "Invoice")
    >>> [(t["token"], round(t["score"], 3), t["boxes"]) for t in tokens]
    ```

    Call with `images` and `queries` (a string or a list of strings). `images` is one image (a path, URL, PIL image,
    numpy array or torch tensor), a list of them, a generator, or a dataset (e.g. `KeyDataset`); a PDF (a `.pdf`
    path or PDF bytes) stands for its pages. Images stream through one at a time: memory does not grow with their
    number, and a generator or a dataset gives back a generator of results, in input order.

    For one image and one query the result is a list with one dict per query token:

    - `token` (`str`), `token_id` (`int`);
    - `score` (`float`): the token's best cosine similarity anywhere on the image;
    - `similarity` (`np.ndarray`, float32, `(rows * side, cols * side)`): the raw stitched cosine map at feature
      resolution (4x the ViT patch grid per tile), thumbnail left out;
    - `boxes` (`list[list[int]]`): `[left, top, right, bottom]` boxes (exclusive right/bottom) of the mask's
      connected regions, in image pixels;
    - `heatmap` (`PIL.Image`) and `mask` (`np.ndarray`, bool, `(height, width)`): the map resized to the image (or to
      at most `MAX_VISUAL_SIDE` pixels on its longer side for larger images), drawn over it so the page stays
      readable (`visualization_tokenocr.overlay_heatmap`: colour only where the map is high) and thresholded; left
      out with `return_visuals=False`;
    - `page` (`int`, 1-based): only for pages of a PDF.

    Several queries give a list of such lists (one per query); several images (or a PDF) add one more level. With a
    list of images, `top_k=k` instead returns, per query, the `k` images with the highest relevance
    ([`relevance_score`]: the mean of the query's token scores) as dicts `{"image_index", "relevance", "tokens"}`.

    Other arguments: `threshold` (mask threshold on the cosine similarity, default the model's own `image_processor.mask_threshold`:
    0.2, the original's, for the released models),
    `max_tiles`/`min_tiles` (tiling limits), `pages` (`"1-3,7"`) and `dpi` for PDFs, and transformers' usual
    `batch_size` (tiles per vision-tower forward, default 4; tiles of consecutive images share a forward). The vision
    tower runs once per tile whatever the number of queries, thumbnails are not computed, and the projector and the
    scoring run over chunks of locations, so no `(tiles, locations, hidden_size)` feature tensor is ever held.

    With a whole-image processor (`do_tiling=False`, the ResNet variant R50) each image is one chunk at its own size:
    `similarity` is `(h, w)`, 4x the ResNet's stride-32 grid, `max_tiles`/`min_tiles` do not apply, and `batch_size`
    counts images; images of a batch run together when they have the same size and one by one otherwise.
    """

    _load_processor = True
    _load_image_processor = False
    _load_tokenizer = False
    _load_feature_extractor = False

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("batch_size", DEFAULT_BATCH_SIZE)
        super().__init__(*args, **kwargs)

    def _sanitize_parameters(self, queries=None, threshold=None, max_tiles=None, min_tiles=None, return_visuals=None,
                             **kwargs):
        if kwargs:
            raise TypeError(f"TokenSimilarityPipeline got unexpected arguments: {sorted(kwargs)}")
        preprocess, forward, postprocess = {}, {}, {}
        if max_tiles is not None or min_tiles is not None:
            limits = {"min_tiles": min_tiles, "max_tiles": max_tiles}
            preprocess.update({name: value for name, value in limits.items() if value is not None})
            check_tiles(preprocess.get("min_tiles", self.processor.image_processor.min_tiles),
                        preprocess.get("max_tiles", self.processor.image_processor.max_tiles))
        if queries is not None:
            encoded = self.processor(text=list(check_queries(queries)), return_tensors="pt")
            forward.update(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
            lengths = encoded["attention_mask"].sum(dim=1).tolist()
            postprocess["query_ids"] = [ids[:n] for ids, n in zip(encoded["input_ids"].tolist(), lengths)]
        if threshold is not None:
            postprocess["threshold"] = check_threshold(threshold)
        if return_visuals is not None:
            postprocess["return_visuals"] = bool(return_visuals)
        return preprocess, forward, postprocess

    def __call__(self, images, queries=None, **kwargs):
        r"""
        Args:
            images: an image (path, URL, PIL image, numpy array, torch tensor), a PDF (path or bytes), a list of
                them, a generator, or a dataset.
            queries (`str` or `list[str]`): the text to look for; each query is tokenised as the original does.
            threshold, return_visuals, top_k, max_tiles, min_tiles, pages, dpi, batch_size: see the class docstring.
        """
        queries = kwargs.pop("text", None) if queries is None else queries
        if queries is None:
            raise ValueError("TokenSimilarityPipeline needs queries: pipe(image, 'text to find').")
        single_query = isinstance(queries, str)
        top_k = kwargs.pop("top_k", None)
        pages, dpi = kwargs.pop("pages", None), kwargs.pop("dpi", DEFAULT_PDF_DPI)
        streamed = isinstance(images, Iterator) or isinstance(images, torch.utils.data.Dataset)
        single_image = not streamed and not isinstance(images, (list, tuple)) and not is_pdf(images)
        if top_k is not None and (streamed or single_image or isinstance(top_k, bool) or not isinstance(top_k, int)
                                  or top_k < 1):
            raise ValueError(f"top_k (a positive integer, got {top_k!r}) ranks a list of images; pass a list.")
        if not streamed:
            images = [images] if single_image or not isinstance(images, (list, tuple)) else list(images)
            if not images:
                raise ValueError("No image was given.")
        items = _expand_pdfs(images, pages, dpi)
        results = super().__call__(items if streamed else list(items), queries=queries, **kwargs)
        if streamed:
            return (result[0] if single_query else result for result in results)
        if top_k is not None:
            ranked = _rank(results, top_k)
            return ranked[0] if single_query else ranked
        results = [result[0] if single_query else result for result in results]
        return results[0] if single_image else results

    def preprocess(self, item, min_tiles=None, max_tiles=None):
        image, page = (item["image"], item["page"]) if isinstance(item, dict) and "page" in item else (item, None)
        rgb = image if page is not None else to_rgb_image(image)
        limits = {name: value for name, value in (("min_tiles", min_tiles), ("max_tiles", max_tiles)) if value}
        tiles = self.processor.image_processor(rgb, use_thumbnail=False, return_tensors="pt", **limits)
        if "map_sizes" in tiles:  # whole-image processor (ResNet variant): the image is its only chunk
            yield _whole_image_chunk(tiles, rgb, page)
            return
        cols, rows = tiles["grid_cols_rows"][0].tolist()
        pixel_values = tiles["pixel_values"]
        for index in range(len(pixel_values)):
            last = index == len(pixel_values) - 1
            yield {
                "pixel_values": pixel_values[index : index + 1],
                "is_last": last,
                # What postprocess needs travels with the last tile only.
                "image": rgb if last else None,
                "grid": (cols, rows) if last else None,
                "page": page,
            }

    def _forward(self, model_inputs, input_ids=None, attention_mask=None):
        if input_ids is None:
            raise ValueError("TokenSimilarityPipeline needs queries: pipe(image, 'text to find').")
        if "whole_image" in model_inputs:
            return self._forward_whole_images(model_inputs, input_ids, attention_mask)
        similarity = self.model.get_similarity(
            model_inputs["pixel_values"], input_ids.to(self.device), attention_mask.to(self.device), LOCATIONS_PER_CHUNK
        )  # (queries, tokens, tiles, locations)
        return {
            "similarity": similarity.permute(2, 0, 1, 3).float().cpu(),  # (tiles, queries, tokens, locations)
            "is_last": model_inputs["is_last"],
            "image": model_inputs["image"],
            "grid": model_inputs["grid"],
            "page": model_inputs["page"],
        }

    def _forward_whole_images(self, model_inputs, input_ids, attention_mask) -> dict:
        """`_forward` for whole-image chunks (ResNet variant): one image, or a batch of them, each at its own size."""
        entries = model_inputs["whole_image"]  # [image], or one such list per chunk when chunks are batched
        images = [image for entry in entries for image in (entry if isinstance(entry, list) else [entry])]
        pixel_values, pixel_sizes = pad_images(images)
        similarity = self.model.get_similarity(
            pixel_values.to(self.device), input_ids.to(self.device), attention_mask.to(self.device),
            LOCATIONS_PER_CHUNK, pixel_sizes=pixel_sizes,
        )  # (queries, tokens, images, locations), each image's own locations first
        outputs = {"similarity": similarity.permute(2, 0, 1, 3).float().cpu()}  # (images, queries, tokens, locations)
        outputs.update({key: model_inputs[key] for key in ("is_last", "image", "grid", "map_size", "page")})
        return outputs

    def postprocess(self, model_outputs, query_ids=None, threshold=None, return_visuals=True):
        if threshold is None:  # the model's own (stored with its image processor; 0.2 for the released models)
            threshold = self.processor.image_processor.mask_threshold
        image, grid, page = model_outputs[-1]["image"], model_outputs[-1]["grid"], model_outputs[-1]["page"]
        similarity = torch.cat([output["similarity"] for output in model_outputs])  # (tiles, queries, tokens, L)
        if model_outputs[-1].get("map_size") is not None:  # one whole image (ResNet variant)
            maps = whole_image_map(similarity[0], model_outputs[-1]["map_size"])  # (queries, tokens, h, w)
        else:
            maps = stitch_tiles(similarity.permute(1, 2, 0, 3), grid)  # (queries, tokens, H, W)
        shown = visual_image(image) if return_visuals else None
        results = []
        for query_index, ids in enumerate(query_ids):
            tokens = []
            for token_index, token_id in enumerate(ids):
                token_map = maps[query_index, token_index]
                mask, boxes, heatmap = token_visuals(token_map, image.size, threshold, shown)
                token = {
                    "token": self.processor.tokenizer.decode([token_id]),
                    "token_id": int(token_id),
                    "score": float(token_map.max()),
                    "similarity": token_map.numpy().astype(np.float32, copy=True),
                    "boxes": boxes,
                }
                if return_visuals:
                    token.update(heatmap=heatmap, mask=mask)
                if page is not None:
                    token["page"] = page
                tokens.append(token)
            results.append(tokens)
        return results


# ----------------------------------------------------------------- whole images (the ResNet variant, R50)


def _whole_image_chunk(processed, rgb, page) -> dict:
    """
    The one chunk of a whole image. Its pixels travel in a list, which the pipeline's batching gathers into a list
    (images of different sizes cannot be concatenated); `_forward_whole_images` pads them and the model crops each
    back, so batching never changes a result.
    """
    return {
        "whole_image": [processed["pixel_values"][0]],  # (3, height, width)
        "is_last": True,
        "image": rgb,
        "grid": None,
        "map_size": tuple(processed["map_sizes"][0].tolist()),
        "page": page,
    }


def _expand_pdfs(images: Iterable, pages, dpi) -> Iterator:
    """Each input as it is, except PDFs, which become one `{"image", "page"}` item per rendered page."""
    for image in images:
        if is_pdf(image):
            for number, page in load_pdf_pages(image, pages, dpi):
                yield {"image": page, "page": number}
        else:
            yield image


def _rank(results: list, top_k: int) -> list:
    """Per query, the `top_k` images by relevance: `{"image_index", "relevance", "tokens"}`, best first."""
    ranked = []
    for query_index in range(len(results[0])):
        entries = [
            {"image_index": index, "relevance": relevance_score(per_image[query_index]), "tokens": per_image[query_index]}
            for index, per_image in enumerate(results)
        ]
        ranked.append(sorted(entries, key=lambda entry: -entry["relevance"])[:top_k])
    return ranked


__all__ = [
    "TokenSimilarityPipeline", "mask_to_boxes", "relevance_score", "token_visuals", "visual_image", "visual_size",
]
