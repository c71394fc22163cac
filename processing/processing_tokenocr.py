# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""Processor for TokenOCR: tiles images, tokenises queries with the original rule, stitches similarity maps."""

from dataclasses import dataclass

import numpy as np
import torch
from transformers.processing_utils import ProcessorMixin
from transformers.tokenization_utils_base import BatchEncoding

from .image_processing_tokenocr import whole_image_size
from .pages_tokenocr import to_rgb_image
from .query_tokenocr import query_boxes, query_similarity
from .settings_tokenocr import (
    DEFAULT_BATCH_SIZE, MAX_QUERY_TOKENS, UPSAMPLING, check_queries, check_threshold, prepare_query,
)
from .visualization_tokenocr import query_visuals, token_visuals, visual_image

LEVELS = ("token", "query")


@dataclass
class PageFeatures:
    """
    One page's vision features, held so that many queries can be scored without running the vision tower again
    ([`~TokenOCRProcessor.page_features`]): `features` `(num_tiles, num_locations, hidden_size)`, normalised once
    (`TokenOCRModel.normalize_embeds`), of the grid tiles
    (no thumbnail; one "tile" for a whole-image model), the grid `(cols, rows)`, a whole image's `map_size` `(h, w)`
    (None for tiles) and the page's `image_size` `(height, width)`.
    """

    features: torch.Tensor
    grid_cols_rows: tuple[int, int]
    map_size: tuple[int, int] | None
    image_size: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size()


def stitch_tiles(tile_maps: torch.Tensor, grid_cols_rows) -> torch.Tensor:
    r"""
    Place per-tile maps of one image back on its grid, as the original's `make_grid(nrow=cols, padding=0)` does.

    Args:
        tile_maps (`torch.Tensor` of shape `(..., num_tiles, num_locations)`):
            Maps over each tile's square feature grid (row-major), grid tiles first in row-major order; tiles
            past `cols * rows` (the thumbnail) are left out.
        grid_cols_rows (`(int, int)`): the image's grid as (columns, rows).

    Returns:
        `torch.Tensor` of shape `(..., rows * side, cols * side)`, `side = sqrt(num_locations)`.
    """
    cols, rows = (int(v) for v in grid_cols_rows)
    side = int(round(tile_maps.shape[-1] ** 0.5))
    if side * side != tile_maps.shape[-1]:
        raise ValueError(f"Tiles have {tile_maps.shape[-1]} locations, which is not a square number.")
    if tile_maps.shape[-2] < cols * rows:
        raise ValueError(f"A {cols}x{rows} grid needs {cols * rows} tiles, got {tile_maps.shape[-2]}.")
    leading = tile_maps.shape[:-2]
    grid = tile_maps[..., : cols * rows, :].reshape(*leading, rows, cols, side, side)
    grid = grid.movedim(-3, -2)  # (..., rows, side, cols, side)
    return grid.reshape(*leading, rows * side, cols * side)


def whole_image_map(image_maps: torch.Tensor, map_size) -> torch.Tensor:
    r"""
    The map of one whole image (no tiles, the ResNet variant): stitching is the identity, the image's own locations
    (the first `h * w`, row-major) reshaped onto its map; later locations are batch padding and are left out.

    Args:
        image_maps (`torch.Tensor` of shape `(..., 1, num_locations)` or `(..., num_locations)`): the image's maps.
        map_size (`(int, int)`): the image's map `(h, w)`, the processor's `map_sizes` entry.

    Returns:
        `torch.Tensor` of shape `(..., h, w)`.
    """
    height, width = (int(v) for v in map_size)
    if image_maps.shape[-1] < height * width:
        raise ValueError(f"A {height}x{width} map needs {height * width} locations, got {image_maps.shape[-1]}.")
    return image_maps[..., : height * width].reshape(*image_maps.shape[:-1], height, width)


class TokenOCRProcessor(ProcessorMixin):
    r"""
    Wraps a [`TokenOCRImageProcessor`] and a fast InternLM2 tokenizer (SentencePiece BPE with byte fallback).

    - `processor(text=query)` gives the query ids the original feeds its embedding table: the query rule of
      [`prepare_query`], tokenised without BOS.
    - `processor(images=...)` tiles images and reports each image's grid, tile count and size (or, for the ResNet
      variant, gives them whole with their sizes and map sizes: [`TokenOCRImageProcessor`]'s `do_tiling=False`).
    - [`~TokenOCRProcessor.post_process_similarity`] stitches per-tile similarities into one map per query token.

    Args:
        image_processor ([`TokenOCRImageProcessor`]): the image processor.
        tokenizer ([`PreTrainedTokenizerFast`]): the tokenizer.
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def _load_tokenizer_from_pretrained(cls, sub_processor_type, pretrained_model_name_or_path, subfolder="", **kwargs):
        """
        The tokenizer with transformers' own classes, never a folder's tokenizer code: `trust_remote_code` (which
        `from_pretrained` passes to every part) is turned off here, so an `auto_map` for `AutoTokenizer` in
        `tokenizer_config.json` runs nothing; a tokenizer that needs its own code is refused.
        """
        kwargs["trust_remote_code"] = False
        return super()._load_tokenizer_from_pretrained(
            sub_processor_type, pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )

    @property
    def model_input_names(self) -> list[str]:
        """Every key `__call__` may return: the query's, then the image processor's."""
        return ["input_ids", "attention_mask", *self.image_processor.model_input_names]

    def __call__(self, images=None, text=None, return_tensors=None, **kwargs) -> BatchEncoding:
        r"""
        Args:
            images: an image (path, URL, PIL image, numpy array, torch tensor) or a list of images.
            text (`str` or `list[str]`): one query or several; several are padded with the tokenizer's pad id.
            return_tensors (`str`, *optional*): `"pt"` or `"np"`.
            kwargs: passed to the image processor (`min_tiles`, `max_tiles`, `use_thumbnail`).

        Returns:
            [`BatchEncoding`] with `input_ids` and `attention_mask` when `text` is given, and `pixel_values`,
            `grid_cols_rows`, `num_tiles`, `image_sizes` (plus `pixel_sizes` and `map_sizes` without tiling) when
            `images` is given.
        """
        if images is None and text is None:
            raise ValueError("TokenOCRProcessor needs images, text or both.")
        data = {}
        if text is not None:
            data.update(self._encode_queries(text, return_tensors))
        if images is not None:
            data.update(self.image_processor(images, return_tensors=return_tensors, **kwargs))
        return BatchEncoding(data=data, tensor_type=return_tensors)

    def _encode_queries(self, text, return_tensors) -> dict:
        """Query ids with the original rule (`prepare_query`), no BOS; several queries padded with the pad id."""
        queries = check_queries(text)
        for query in queries:
            length = len(self.tokenizer(prepare_query(query), add_special_tokens=False)["input_ids"])
            if length > MAX_QUERY_TOKENS:
                raise ValueError(
                    f"The query {query[:30]!r}... has {length} tokens; at most {MAX_QUERY_TOKENS} tokens per query are "
                    "supported (MAX_QUERY_TOKENS)."
                )
        several = isinstance(text, (list, tuple))
        prepared = [prepare_query(query) for query in queries] if several else prepare_query(text)
        encoded = self.tokenizer(prepared, add_special_tokens=False, padding=several, return_tensors=return_tensors)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def query_tokens(self, input_ids, query: str | None = None) -> list[str]:
        """
        The text of each query token: as the original shows it (`tokenizer.decode` of the id alone) where that is
        whole characters. A byte-level or byte-fallback token may hold part of a character's UTF-8 bytes ('€' is
        three), which decodes alone to U+FFFD; such a token shows the query's own characters that it completes, and
        the tokens before it that hold only part of a character show ''. With `query` (the text given to the
        processor) and a fast tokenizer, those characters come from the tokenizer's offsets into the query;
        otherwise from decoding the run of such tokens together.

        Args:
            input_ids: one query's ids (a list or a 1-D tensor; padding left out).
            query (`str`, *optional*): the query they were made from (before `prepare_query`).
        """
        if isinstance(input_ids, torch.Tensor):
            input_ids = input_ids.tolist()
        ids = [int(token_id) for token_id in input_ids]
        texts = [self.tokenizer.decode([token_id]) for token_id in ids]
        if all("\ufffd" not in text for text in texts):
            return texts
        return self._texts_from_offsets(ids, texts, query) or self._texts_from_runs(ids, texts)

    def _texts_from_offsets(self, ids: list[int], texts: list[str], query: str | None) -> list[str] | None:
        """`query_tokens` from the fast tokenizer's character offsets into the prepared query (None when there are
        none, or the query does not give these ids)."""
        if query is None or not getattr(self.tokenizer, "is_fast", False):
            return None
        prepared = prepare_query(query)
        encoded = self.tokenizer(prepared, add_special_tokens=False, return_offsets_mapping=True)
        if list(encoded["input_ids"]) != ids:
            return None
        offsets = [(int(start), int(end)) for start, end in encoded["offset_mapping"]]
        shown, done = [], 0
        for index, (start, end) in enumerate(offsets):
            # A character belongs to the last token that covers it: a later token starting before `end` still
            # holds some of its bytes.
            later = [first for first, _ in offsets[index + 1:]]
            complete = min([end, *later]) if later else end
            start = max(start, done)
            text = prepared[start:complete] if complete > start else ""
            done = max(done, complete)
            if "\ufffd" in texts[index] and not texts[index][:1].isspace():
                text = text.lstrip()  # as decode shows the token: its leading space only where decode keeps one
            shown.append(text if "\ufffd" in texts[index] else texts[index])
        return shown

    def _texts_from_runs(self, ids: list[int], texts: list[str]) -> list[str]:
        """`query_tokens` without offsets: each run of tokens that decode alone to U+FFFD is decoded growing, one
        token at a time, and each token shows the characters it completes."""
        shown, index = list(texts), 0
        while index < len(ids):
            if "\ufffd" not in texts[index]:
                index += 1
                continue
            last = index
            while last + 1 < len(ids) and "\ufffd" in texts[last + 1]:
                last += 1
            done = ""
            for position in range(index, last + 1):
                decoded = self.tokenizer.decode(ids[index:position + 1])
                if position < last:  # a character still cut at the end waits for the token that completes it
                    decoded = decoded.rstrip("\ufffd")
                shown[position] = decoded[len(done):] if decoded.startswith(done) else decoded
                done = decoded
            index = last + 1
        return shown

    def post_process_similarity(self, similarity, grid_cols_rows, num_tiles=None, map_sizes=None) -> list[torch.Tensor]:
        r"""
        Stitch per-tile similarities onto each image's grid (thumbnails left out); for whole images (the ResNet
        variant, `map_sizes` given) stitching is the identity and each image's padding is cropped away.

        Args:
            similarity (`torch.Tensor` of shape `(..., total_tiles, num_locations)`):
                e.g. [`TokenOCROutput.similarity`] `(batch_size, sequence_length, total_tiles, num_locations)`.
            grid_cols_rows (`(num_images, 2)`): each image's grid as (columns, rows), from the processor.
            num_tiles (`(num_images,)`, *optional*): tiles per image, from the processor; may be left out for a
                single image.
            map_sizes (`(num_images, 2)`, *optional*): without tiling, each image's map `(h, w)`, from the processor
                (`map_sizes`); required then.

        Returns:
            `list[torch.Tensor]`: per image, a tensor of shape `(..., rows * side, cols * side)` with one map per
            query token, `side = sqrt(num_locations)`; with `map_sizes`, of shape `(..., h, w)`.
        """
        grids = np.asarray(grid_cols_rows.tolist() if hasattr(grid_cols_rows, "tolist") else grid_cols_rows)
        grids = grids.reshape(-1, 2)
        if map_sizes is not None:
            return self._whole_image_maps(similarity, grids, num_tiles, map_sizes)
        if num_tiles is None:
            if len(grids) != 1:
                raise ValueError("num_tiles is needed to split the tiles of several images.")
            num_tiles = [similarity.shape[-2]]
        num_tiles = [int(n) for n in (num_tiles.tolist() if hasattr(num_tiles, "tolist") else num_tiles)]
        if len(num_tiles) != len(grids):
            raise ValueError(f"Got {len(grids)} grids but {len(num_tiles)} tile counts.")
        if sum(num_tiles) != similarity.shape[-2]:
            raise ValueError(f"The tile counts add up to {sum(num_tiles)}, but similarity has {similarity.shape[-2]} tiles.")
        maps, start = [], 0
        for grid, count in zip(grids, num_tiles):
            maps.append(stitch_tiles(similarity[..., start : start + count, :], grid))
            start += count
        return maps

    def post_process_token_similarity(
        self,
        similarity,
        input_ids,
        grid_cols_rows,
        image_sizes,
        num_tiles=None,
        map_sizes=None,
        attention_mask=None,
        threshold: float | None = None,
        images=None,
        level: str = "token",
        queries: list[str] | None = None,
    ) -> list[list[list[dict]]]:
        r"""
        From the model's similarity to what each query token finds on each image: the one post-processing path of
        the pipeline, the command line, evaluation and the demo. Each image's maps are stitched from its tiles, or
        cropped out of the batch padding for whole images ([`~TokenOCRProcessor.post_process_similarity`], never
        guessed from the number of locations), resized to the image, thresholded, and turned into boxes.

        Args:
            similarity (`torch.Tensor` of shape `(num_queries, sequence_length, total_tiles, num_locations)`):
                [`TokenOCROutput.similarity`] or `TokenOCRModel.get_similarity(...)`.
            input_ids (`(num_queries, sequence_length)`): the query ids (padded, with `attention_mask`).
            grid_cols_rows, num_tiles, map_sizes: as the processor returned them for the images.
            image_sizes (`(num_images, 2)`): each image's `(height, width)`, as the processor returned them.
            attention_mask (`(num_queries, sequence_length)`, *optional*): 0 at padding, which is left out.
            threshold (`float`, *optional*): mask threshold on the cosine similarity; default the model's own,
                `image_processor.mask_threshold`.
            images (*optional*): the images themselves (one, or a list: paths, URLs, PIL images, arrays or tensors, as
                the processor takes them); when given, each token also gets its
                `heatmap` (RGB PIL image) and `mask` (bool array), both at the image's size (scaled to fit
                `MAX_VISUAL_SIDE` when larger).
            level (`str`, *optional*, defaults to `"token"`): `"query"` gives one result per query instead of a list
                of token results (see Returns).
            queries (`list[str]`, *optional*): the query texts, for the query level's `query` field (default: the
                decoded ids).

        Returns:
            Per image, per query, per token a dict: `token` (its text), `token_id`, `score` (its best similarity
            on the image), `similarity` (float32 map at feature resolution) and `boxes` (`[left, top, right,
            bottom]` of the mask's connected regions, in image pixels), plus `heatmap` and `mask` with `images`.
            With `level="query"`, per image and query one dict: `query`, `score` (the best of the query's map),
            `similarity` (the query's own map, shaped like a token's: [`query_tokenocr.query_similarity`]), `boxes`
            (its occurrences, best first, image pixels) with `box_scores`, `tokens` (the token level's list), and
            `heatmap` and `mask` of the query's map with `images`.
        """
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(map(repr, LEVELS))}, got {level!r}.")
        threshold = self.image_processor.mask_threshold if threshold is None else check_threshold(threshold)
        ids = _unpadded_ids(input_ids, attention_mask)
        sizes = np.asarray(image_sizes.tolist() if hasattr(image_sizes, "tolist") else image_sizes).reshape(-1, 2)
        if images is not None:  # one image or a list; paths, arrays and tensors are opened as the processor opens them
            images = list(images) if isinstance(images, (list, tuple)) else [images]
            images = [to_rgb_image(image, index) for index, image in enumerate(images)]
        maps_per_image = self.post_process_similarity(similarity, grid_cols_rows, num_tiles, map_sizes)
        if len(sizes) != len(maps_per_image) or (images is not None and len(images) != len(sizes)):
            raise ValueError(f"Got maps of {len(maps_per_image)} images but {len(sizes)} image sizes.")
        return [
            self.page_results(maps, ids, (height, width), threshold, level, queries,
                              images[index] if images is not None else None)
            for index, (maps, (height, width)) in enumerate(zip(maps_per_image, sizes))
        ]

    def map_scale(self, map_size, image_size, whole: bool) -> tuple[float, float]:
        """
        Image pixels per map location `(sx, sy)` for an image of `image_size` `(height, width)` whose map is
        `map_size` `(h, w)`: tiles cover the image exactly; a whole image's map covers its (possibly scaled-down)
        pixels rounded up to the tower's stride, so its locations are `feature_stride / 4` processed pixels apart.
        """
        (map_h, map_w), (height, width) = map_size, image_size
        if not whole:
            return width / map_w, height / map_h
        processed_h, processed_w = whole_image_size(height, width, self.image_processor.max_side)
        step = self.image_processor.feature_stride / UPSAMPLING
        return step * width / processed_w, step * height / processed_h

    def query_result(self, query: str, tokens: list[dict], token_maps, scale, image_size, threshold: float,
                     shown=None) -> dict:
        """One query's result on one image from its token results and maps (see `post_process_token_similarity`)."""
        texts = [token["token"] for token in tokens]
        query_map, pitch_map = query_similarity(token_maps, texts)
        boxes, box_scores = query_boxes(query_map, pitch_map, token_maps, texts, threshold, scale, image_size)
        result = {"query": query, "score": float(query_map.max()), "similarity": query_map.numpy().astype(np.float32),
                  "boxes": boxes, "box_scores": box_scores, "tokens": tokens}
        if shown is not None:
            mask, picture = query_visuals(query_map, scale, image_size, threshold, shown, boxes, box_scores)
            result.update(heatmap=picture, mask=mask)
        return result

    def _token_result(self, token_map, token_id: int, text: str, image_size, threshold: float, shown) -> dict:
        mask, boxes, heatmap = token_visuals(token_map, image_size, threshold, shown)
        result = {
            "token": text, "token_id": int(token_id),
            "score": float(token_map.max()), "similarity": token_map.float().numpy().astype(np.float32, copy=True),
            "boxes": boxes,
        }
        if shown is not None:
            result.update(heatmap=heatmap, mask=mask)
        return result

    @staticmethod
    def _whole_image_maps(similarity, grids, num_tiles, map_sizes) -> list[torch.Tensor]:
        """`post_process_similarity` without tiling: one tile per image, its padding cropped away."""
        sizes = np.asarray(map_sizes.tolist() if hasattr(map_sizes, "tolist") else map_sizes).reshape(-1, 2)
        counts = [1] * len(sizes) if num_tiles is None else [int(n) for n in np.asarray(
            num_tiles.tolist() if hasattr(num_tiles, "tolist") else num_tiles).reshape(-1)]
        if len(grids) != len(sizes) or counts != [1] * len(sizes) or similarity.shape[-2] != len(sizes):
            raise ValueError(
                f"map_sizes describe {len(sizes)} whole images (one tile each), but got {len(grids)} grids, tile "
                f"counts {counts} and {similarity.shape[-2]} tiles in similarity."
            )
        return [whole_image_map(similarity[..., index, :], size) for index, size in enumerate(sizes)]

    # ------------------------------------------------------------------ one page, from pixels to results

    def _page_pixels(self, image, max_tiles=None):
        limits = {} if max_tiles is None else {"max_tiles": max_tiles}
        return self.image_processor(image, use_thumbnail=False, return_tensors="pt", **limits)

    def page_features(self, model, image, max_tiles: int | None = None, tiles_per_batch: int = DEFAULT_BATCH_SIZE,
                      progress=None) -> PageFeatures:
        """
        The vision pass over one page (an image input, read as [`to_rgb_image`] reads it): its grid tiles'
        features, `tiles_per_batch` tiles per forward of `model`, held whole for [`~TokenOCRProcessor.page_similarity`]
        (a 12-tile page of a released model holds about 3 GB; without a cache, give the image itself there instead).
        `progress(done, total)` is called before each batch.
        """
        inputs = self._page_pixels(image, max_tiles)
        pixel_values, pixel_sizes = inputs["pixel_values"], inputs.get("pixel_sizes")
        features = []
        with torch.no_grad():
            for start in range(0, len(pixel_values), tiles_per_batch):
                if progress is not None:
                    progress(start, len(pixel_values))
                batch = pixel_values[start : start + tiles_per_batch].to(*_device_and_dtype(model))
                sizes = None if pixel_sizes is None else pixel_sizes[start : start + tiles_per_batch]
                features.append(model.normalize_embeds(model.get_image_features(batch, sizes).pooler_output))
        map_sizes = inputs.get("map_sizes")
        return PageFeatures(
            features=torch.cat(features), grid_cols_rows=tuple(int(v) for v in inputs["grid_cols_rows"][0]),
            map_size=None if map_sizes is None else tuple(int(v) for v in map_sizes[0]),
            image_size=tuple(int(v) for v in inputs["image_sizes"][0]),
        )

    def page_similarity(self, model, page, input_ids, attention_mask=None, max_tiles: int | None = None,
                        tiles_per_batch: int = DEFAULT_BATCH_SIZE) -> torch.Tensor:
        """
        One page's similarity maps for queries: the processor's tiles (or whole image), `model.get_similarity`
        (features never held whole when `page` is an image) and [`~TokenOCRProcessor.post_process_similarity`].
        Evaluation, the converter's card picture and the demo score pages with it; the pipeline runs the same three
        steps a tile batch at a time across images.

        Args:
            page: an image input, or the [`PageFeatures`] of one ([`~TokenOCRProcessor.page_features`]).
            input_ids (`(num_queries, sequence_length)` or `(sequence_length,)`): query ids, e.g. `processor(text=...)`.
            attention_mask (*optional*): 0 at padding, whose maps are 0.

        Returns:
            `torch.Tensor` float32 of shape `(num_queries, sequence_length, h, w)`: the stitched maps (a whole image's
            map for a ResNet tower), on the CPU.
        """
        device, dtype = _device_and_dtype(model)
        input_ids = torch.as_tensor(input_ids)
        input_ids = (input_ids.unsqueeze(0) if input_ids.dim() == 1 else input_ids).to(device)
        mask = None if attention_mask is None else torch.as_tensor(attention_mask).to(device)
        with torch.no_grad():
            if isinstance(page, PageFeatures):
                similarity = model.get_similarity(input_ids=input_ids, attention_mask=mask, image_embeds=page.features,
                                                  image_embeds_normalized=True)
                grids, num_tiles = [page.grid_cols_rows], [len(page.features)]
                map_sizes = None if page.map_size is None else [page.map_size]
            else:
                inputs = self._page_pixels(page, max_tiles)
                similarity = model.get_similarity(
                    inputs["pixel_values"].to(device, dtype), input_ids, mask,
                    pixel_sizes=inputs.get("pixel_sizes"), tiles_per_batch=tiles_per_batch,
                )
                grids, num_tiles, map_sizes = inputs["grid_cols_rows"], inputs["num_tiles"], inputs.get("map_sizes")
        return self.post_process_similarity(similarity.float().cpu(), grids, num_tiles, map_sizes)[0]

    def page_results(self, maps, input_ids, image_size, threshold: float | None = None, level: str = "token",
                     queries: list[str] | None = None, image=None, on_picture=None) -> list:
        """
        One page's results from its maps, exactly as [`~TokenOCRProcessor.post_process_token_similarity`] gives
        them for each image (it calls this): per query a token list, or with `level="query"` one query result.

        Args:
            maps (`(num_queries, sequence_length, h, w)`): [`~TokenOCRProcessor.page_similarity`].
            input_ids: the queries' ids (padding left out: a list of lists, or a tensor without padding).
            image_size (`(height, width)`): the page's size in pixels.
            image (`PIL.Image.Image`, *optional*): the page, to add the pictures (`heatmap`, `mask`), drawn at its
                `visual_size`; or a smaller copy of it (a display's), which sets the pictures' size (boxes and scores
                do not change: they come from the maps at the page's size).
            on_picture (*optional*): with `image`, called as each picture is made, as
                `on_picture(query_index, token_index, result, heatmap, mask)` (`token_index` None for the query's own
                picture, `result` the token's or the query's result); the pictures are then left out of the results,
                so that only one is held at a time (the command line writes them as they come).
        """
        if level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(map(repr, LEVELS))}, got {level!r}.")
        threshold = self.image_processor.mask_threshold if threshold is None else check_threshold(threshold)
        ids = _unpadded_ids(input_ids)
        size = (int(image_size[1]), int(image_size[0]))  # (width, height), as the drawing helpers take it
        shown = visual_image(image) if image is not None else None
        hand_over = _picture_handler(on_picture if shown is not None else None)
        names = (queries or [self.tokenizer.decode(query) for query in ids]) if level == "query" else None
        scale = self.map_scale(maps.shape[-2:], size[::-1], not self.image_processor.do_tiling)
        results = []
        for q, query_ids in enumerate(ids):
            texts = self.query_tokens(query_ids, queries[q] if queries else None)
            tokens = [hand_over(q, t, self._token_result(maps[q, t], token_id, text, size, threshold, shown))
                      for t, (token_id, text) in enumerate(zip(query_ids, texts))]
            if level == "token":
                results.append(tokens)
                continue
            found = self.query_result(names[q], tokens, maps[q, : len(tokens)], scale, size, threshold, shown)
            results.append(hand_over(q, None, found))
        return results


def _picture_handler(on_picture):
    """`(query_index, token_index, result) -> result`: hands a result's pictures to `on_picture` and leaves them out
    of it; without `on_picture`, the result as it is."""
    def hand_over(query_index, token_index, result):
        if on_picture is not None:
            on_picture(query_index, token_index, result, result.pop("heatmap"), result.pop("mask"))
        return result

    return hand_over


def _device_and_dtype(model) -> tuple:
    """Where a model's weights are and their dtype (what its inputs are moved to)."""
    weight = next(model.parameters())
    return weight.device, weight.dtype


def _unpadded_ids(input_ids, attention_mask=None) -> list[list[int]]:
    """Each query's ids as a list, padding (attention mask 0) left out; one unbatched query becomes a batch of one."""
    ids = input_ids.tolist() if hasattr(input_ids, "tolist") else [list(row) for row in input_ids]
    ids = [ids] if ids and not isinstance(ids[0], list) else ids
    if attention_mask is not None:
        mask = attention_mask.tolist() if hasattr(attention_mask, "tolist") else attention_mask
        mask = [mask] if mask and not isinstance(mask[0], list) else mask
        ids = [[i for i, keep in zip(row, keep_row) if keep] for row, keep_row in zip(ids, mask)]
    return ids


# prepare_query: see settings_tokenocr
__all__ = ["PageFeatures", "TokenOCRProcessor", "prepare_query", "stitch_tiles", "whole_image_map"]
