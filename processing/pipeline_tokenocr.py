# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""`pipeline("token-similarity")`: where each token of a text query appears in a document image."""

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline

from .image_processing_tokenocr import to_rgb_image
from .processing_tokenocr import prepare_query, stitch_tiles


DEFAULT_THRESHOLD = 0.2  # the original's threshold for turning a similarity map into a mask
DEFAULT_TILES_PER_BATCH = 4


def relevance_score(tokens: list[dict]) -> float:
    """
    Query-level image-text relevance: the mean, over the query's tokens, of each token's best cosine similarity
    anywhere on the image (its `score`). Higher means the image is more likely to contain the query.
    """
    return float(np.mean([token["score"] for token in tokens])) if tokens else float("nan")


def jet_colormap(values: np.ndarray) -> np.ndarray:
    """`values` in [0, 1] -> uint8 RGB with the usual blue-cyan-yellow-red "jet" ramp, shape `values.shape + (3,)`."""
    x = np.clip(values, 0.0, 1.0)[..., None] * 4.0
    rgb = np.clip(1.5 - np.abs(x - np.array([3.0, 2.0, 1.0])), 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def overlay_heatmap(image: Image.Image, values: np.ndarray, alpha: float = 0.6) -> Image.Image:
    """Blend a min-max normalised map (same size as `image`) over it, as the original visualisation does."""
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) if high > low else np.zeros_like(values)
    blended = np.asarray(image, dtype=np.float32) * (1.0 - alpha) + jet_colormap(scaled).astype(np.float32) * alpha
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8))


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
        if not above or not here:
            continue
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
        if root in boxes:
            box = boxes[root]
            boxes[root] = [min(box[0], left), min(box[1], top), max(box[2], right), max(box[3], bottom)]
        else:
            boxes[root] = [left, top, right, bottom]
    return sorted(boxes.values(), key=lambda box: (box[1], box[0]))


class TokenSimilarityPipeline(Pipeline):
    r"""
    Per-token similarity heatmaps, text masks, boxes and relevance scores for document images and text queries.

    ```python
    >>> from transformers import pipeline
    >>> finder = pipeline("token-similarity", model="org/TokenOCR", trust_remote_code=True)
    >>> tokens = finder("page.png", "Invoice")
    >>> [(t["token"], round(t["score"], 3), t["boxes"]) for t in tokens]
    ```

    Call with `images` (a path, URL, PIL image or numpy array, or a list of them) and `queries` (a string or a list
    of strings). For one image and one query the result is a list with one dict per query token:

    - `token` (`str`), `token_id` (`int`);
    - `score` (`float`): the token's best cosine similarity anywhere on the image;
    - `similarity` (`np.ndarray`, float32, `(rows * side, cols * side)`): the raw stitched cosine map at feature
      resolution (4x the ViT patch grid per tile), thumbnail left out;
    - `heatmap` (`PIL.Image`): the map, min-max normalised, resized to the image and blended over it;
    - `mask` (`np.ndarray`, bool, the image's `(height, width)`): the map resized to the image, `> threshold`;
    - `boxes` (`list[list[int]]`): `[left, top, right, bottom]` boxes (exclusive right/bottom) of the mask's
      connected regions, in image pixels.

    Several queries give a list of such lists (one per query); several images add one more level (one per image).
    With several images, `top_k=k` instead returns, per query, the `k` images with the highest relevance
    ([`relevance_score`]: the mean of the query's token scores) as dicts `{"image_index", "relevance", "tokens"}`.

    Other arguments: `threshold` (mask threshold on the cosine similarity, default 0.2, the original's),
    `max_tiles`/`min_tiles` (tiling limits), `batch_size` (tiles per vision-tower forward, default 4; features
    are scored and dropped batch by batch, so memory does not grow with the number of tiles or queries).
    The vision tower runs once per image tile whatever the number of queries; thumbnails are not computed.
    """

    _load_processor = True
    _load_image_processor = False
    _load_tokenizer = False
    _load_feature_extractor = False

    def _sanitize_parameters(
        self, threshold=None, top_k=None, max_tiles=None, min_tiles=None, tiles_per_batch=None, **kwargs
    ):
        if kwargs:
            raise TypeError(f"TokenSimilarityPipeline got unexpected arguments: {sorted(kwargs)}")
        preprocess, forward, postprocess = {}, {}, {}
        if max_tiles is not None:
            preprocess["max_tiles"] = max_tiles
        if min_tiles is not None:
            preprocess["min_tiles"] = min_tiles
        if tiles_per_batch is not None:
            if int(tiles_per_batch) < 1:
                raise ValueError(f"batch_size must be at least 1, got {tiles_per_batch}")
            forward["tiles_per_batch"] = int(tiles_per_batch)
        if threshold is not None:
            postprocess["threshold"] = float(threshold)
        if top_k is not None:
            if int(top_k) < 1:
                raise ValueError(f"top_k must be at least 1, got {top_k}")
            postprocess["top_k"] = int(top_k)
        return preprocess, forward, postprocess

    def __call__(self, images, queries=None, batch_size=None, **kwargs):
        r"""
        Args:
            images: an image (path, URL, PIL image, numpy array, torch tensor) or a list of them.
            queries (`str` or `list[str]`): the text to look for; each query is tokenised as the original does.
            batch_size (`int`, *optional*): tiles per vision-tower forward (default 4).
            threshold, top_k, max_tiles, min_tiles: see the class docstring.
        """
        if queries is None:
            queries = kwargs.pop("text", None)
        if queries is None:
            raise ValueError("TokenSimilarityPipeline needs queries: pipe(image, 'text to find').")
        single_image = not isinstance(images, (list, tuple))
        single_query = isinstance(queries, str)
        image_list = [images] if single_image else list(images)
        query_list = [queries] if single_query else list(queries)
        if not image_list:
            raise ValueError("No image was given.")
        if not query_list:
            raise ValueError("No query was given.")
        if batch_size is not None:
            kwargs["tiles_per_batch"] = batch_size
        inputs = {"images": image_list, "queries": query_list}
        results = super().__call__(inputs, **kwargs)  # one run over all images: tiles batched across them
        if kwargs.get("top_k") is not None:
            return results[0] if single_query else results
        if single_query:
            results = [per_image[0] for per_image in results]
        return results[0] if single_image else results

    def preprocess(self, inputs, max_tiles=None, min_tiles=None):
        queries = inputs["queries"]
        query_ids = []
        for query in queries:
            prepare_query(query)  # ValueError for an empty or whitespace-only query, before any image work
            query_ids.append(self.processor(text=query)["input_ids"])
        images = [to_rgb_image(image, index) for index, image in enumerate(inputs["images"])]
        tiles = self.processor.image_processor(
            images, max_tiles=max_tiles, min_tiles=min_tiles, return_tensors="pt"
        )
        return {
            "pixel_values": tiles["pixel_values"],
            "grid_cols_rows": tiles["grid_cols_rows"],
            "num_tiles": tiles["num_tiles"],
            "images": images,
            "query_ids": query_ids,
        }

    def _forward(self, model_inputs, tiles_per_batch=DEFAULT_TILES_PER_BATCH):
        pixel_values = model_inputs["pixel_values"]
        grids, num_tiles = model_inputs["grid_cols_rows"].tolist(), model_inputs["num_tiles"].tolist()
        # Only grid tiles are scored: thumbnails would be computed and thrown away.
        grid_tiles, offset = [], 0
        for (cols, rows), count in zip(grids, num_tiles):
            grid_tiles.extend(range(offset, offset + cols * rows))
            offset += count
        all_ids = torch.tensor([i for ids in model_inputs["query_ids"] for i in ids], device=pixel_values.device)
        similarities = []
        for start in range(0, len(grid_tiles), tiles_per_batch):
            batch = pixel_values[grid_tiles[start : start + tiles_per_batch]]
            features = self.model.get_image_features(batch)
            similarity = self.model(image_embeds=features, input_ids=all_ids[None]).similarity[0]  # (T, b, L)
            similarities.append(similarity.float().transpose(0, 1).cpu())
            del features
        return {
            "similarity": torch.cat(similarities),  # (grid tiles of all images, T, L)
            "grid_cols_rows": grids,
            "images": model_inputs["images"],
            "query_ids": model_inputs["query_ids"],
        }

    def postprocess(self, model_outputs, threshold=DEFAULT_THRESHOLD, top_k=None):
        similarity = model_outputs["similarity"]
        query_ids = model_outputs["query_ids"]
        results, offset = [], 0
        for (cols, rows), image in zip(model_outputs["grid_cols_rows"], model_outputs["images"]):
            tiles = similarity[offset : offset + cols * rows]
            offset += cols * rows
            maps = stitch_tiles(tiles.transpose(0, 1), (cols, rows))  # (T, H, W)
            per_query, token_index = [], 0
            for ids in query_ids:
                per_query.append(
                    [self._token_result(token_id, maps[token_index + n], image, threshold) for n, token_id in enumerate(ids)]
                )
                token_index += len(ids)
            results.append(per_query)
        if top_k is None:
            return results
        ranked = []
        for query_index in range(len(query_ids)):
            entries = [
                {"image_index": image_index, "relevance": relevance_score(per_image[query_index]), "tokens": per_image[query_index]}
                for image_index, per_image in enumerate(results)
            ]
            ranked.append(sorted(entries, key=lambda entry: -entry["relevance"])[:top_k])
        return ranked

    def _token_result(self, token_id: int, token_map: torch.Tensor, image: Image.Image, threshold: float) -> dict:
        resized = torch.nn.functional.interpolate(
            token_map[None, None], size=(image.height, image.width), mode="bilinear", align_corners=False
        )[0, 0].numpy()
        mask = resized > threshold
        return {
            "token": self.processor.tokenizer.decode([token_id]),
            "token_id": int(token_id),
            "score": float(token_map.max()),
            "similarity": token_map.numpy().astype(np.float32, copy=False),
            "heatmap": overlay_heatmap(image, resized),
            "mask": mask,
            "boxes": mask_to_boxes(mask),
        }


__all__ = ["TokenSimilarityPipeline", "mask_to_boxes", "relevance_score", "jet_colormap", "overlay_heatmap"]
