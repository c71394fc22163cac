# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""`pipeline("token-similarity")`: where each token of a text query appears in document images."""

from collections.abc import Iterator

import numpy as np
import torch
from transformers.pipelines.base import ChunkPipeline

from .image_processing_tokenocr import pad_images
from .pages_tokenocr import is_pdf, read_pages
from .processing_tokenocr import LEVELS
from .query_tokenocr import query_similarity
from .settings_tokenocr import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_PDF_DPI,
    LOCATIONS_PER_CHUNK,
    check_batch_size,
    check_queries,
    check_threshold,
    check_tiles,
)
from .visualization_tokenocr import mask_to_boxes, token_visuals, visual_image, visual_size  # noqa: F401  (public here too)


def relevance_score(result) -> float:
    """
    Query-level image-text relevance: the best value of the query's own map (`query_tokenocr.query_similarity`:
    its tokens' maps combined where they stand side by side), from a query-level result (its `score`) or a token
    level list (each token's `similarity` and `token`). Higher means the image is more likely to contain the query.
    """
    if isinstance(result, dict):
        return float(result["score"])
    if not result:
        return float("nan")
    maps = np.stack([token["similarity"] for token in result])
    return float(query_similarity(maps, [token["token"] for token in result])[0].max())


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
    path or PDF bytes) stands for its pages. Images are read and scored one at a time (`pages_tokenocr.read_pages`);
    a list gives back a list, which holds every image's results (with their pictures, unless
    `return_visuals=False`), while a generator or a dataset gives back a generator of results, in input order, so that
    memory does not grow with the number of images.

    For one image and one query the result is a list with one dict per query token:

    - `token` (`str`), `token_id` (`int`);
    - `score` (`float`): the token's best cosine similarity anywhere on the image;
    - `similarity` (`np.ndarray`, float32, `(rows * side, cols * side)`): the raw stitched cosine map at feature
      resolution (4x the ViT patch grid per tile), thumbnail left out;
    - `boxes` (`list[list[int]]`): `[left, top, right, bottom]` boxes (exclusive right/bottom) of the mask's
      connected regions, in image pixels;
    - `heatmap` (`PIL.Image`) and `mask` (`np.ndarray`, bool, `(height, width)`): the map resized to the image (or to
      at most `MAX_VISUAL_SIDE` pixels on its longer side for larger images), drawn over it so the page stays
      readable (`visualization_tokenocr.overlay_heatmap`: colour only where the map passes `threshold`, where the mask
      is, red at its best value) and thresholded; left
      out with `return_visuals=False`;
    - `page` (`int`, 1-based): only for pages of a PDF.

    With `level="query"`, each query gives one dict instead of a token list: `query`, `score` (the best value of the
    query's map), `similarity` (the query's own map, shaped like a token's: its tokens' maps combined where they stand
    side by side, `query_tokenocr.query_similarity`), `boxes` (`[left, top, right, bottom]` of its occurrences, best
    first, image pixels) with `box_scores`, and `tokens` (the token level's list); plus `heatmap` and `mask` of the
    query's map unless `return_visuals=False`, and `page` for PDF pages.

    Several queries give a list of such lists (one per query); several images (or a PDF) add one more level. With a
    list of images, `top_k=k` instead returns, per query, the `k` images with the highest relevance
    ([`relevance_score`]: the best value of the query's map) as dicts `{"image_index", "relevance", "tokens"}`.

    Other arguments: `threshold` (mask threshold on the cosine similarity, default the model's own `image_processor.mask_threshold`:
    0.2, our default, for the released models),
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
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        kwargs["batch_size"] = check_batch_size(kwargs.get("batch_size") or DEFAULT_BATCH_SIZE)
        super().__init__(*args, **kwargs)
        self.processor.image_processor.check_model(self.model.config)

    def _sanitize_parameters(self, queries=None, threshold=None, max_tiles=None, min_tiles=None, return_visuals=None,
                             level=None, **kwargs):
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
            postprocess["queries"] = [queries] if isinstance(queries, str) else list(queries)
        if level is not None:
            if level not in LEVELS:
                raise ValueError(f"level must be one of {', '.join(map(repr, LEVELS))}, got {level!r}.")
            postprocess["level"] = level
        if threshold is not None:
            postprocess["threshold"] = check_threshold(threshold)
        if return_visuals is not None:
            if not isinstance(return_visuals, bool):
                raise TypeError(f"return_visuals must be True or False, got {return_visuals!r}.")
            postprocess["return_visuals"] = return_visuals
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
        if kwargs.get("batch_size") is not None:
            check_batch_size(kwargs["batch_size"])
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
        # Pages are read one at a time as the pipeline reaches them (`pages_tokenocr.read_pages`), whatever was given.
        results = super().__call__(read_pages(images, pages, dpi), queries=queries, **kwargs)
        if streamed:
            return (result[0] if single_query else result for result in results)
        results = list(results)
        if top_k is not None:
            ranked = _rank(results, top_k)
            return ranked[0] if single_query else ranked
        results = [result[0] if single_query else result for result in results]
        return results[0] if single_image else results

    def preprocess(self, page, min_tiles=None, max_tiles=None):
        rgb, page = page.image, page.number
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

    def postprocess(self, model_outputs, query_ids=None, threshold=None, return_visuals=True, level="token",
                    queries=None):
        last = model_outputs[-1]
        image, page = last["image"], last["page"]
        similarity = torch.cat([output["similarity"] for output in model_outputs])  # (tiles, queries, tokens, L)
        whole = last.get("map_size") is not None  # one whole image (ResNet variant)
        results = self.processor.post_process_token_similarity(
            similarity.permute(1, 2, 0, 3), [list(ids) for ids in query_ids],
            grid_cols_rows=[(1, 1) if whole else last["grid"]], image_sizes=[(image.height, image.width)],
            num_tiles=[similarity.shape[0]], map_sizes=[last["map_size"]] if whole else None,
            threshold=threshold, images=[image] if return_visuals else None, level=level, queries=queries,
        )[0]
        if page is not None:
            for result in results:
                for entry in [result] if level == "query" else result:
                    entry["page"] = page
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


def _rank(results: list, top_k: int) -> list:
    """Per query, the `top_k` images by relevance: `{"image_index", "relevance", "tokens"}`, best first."""
    ranked = []
    for query_index in range(len(results[0])):
        entries = [
            {"image_index": index, "relevance": relevance_score(per_image[query_index]),
             **({"query": per_image[query_index]} if isinstance(per_image[query_index], dict)
                else {"tokens": per_image[query_index]})}
            for index, per_image in enumerate(results)
        ]
        ranked.append(sorted(entries, key=lambda entry: -entry["relevance"])[:top_k])
    return ranked


__all__ = [
    "TokenSimilarityPipeline", "mask_to_boxes", "relevance_score", "token_visuals", "visual_image", "visual_size",
]
