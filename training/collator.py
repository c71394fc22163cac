# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""Batches of token-mask pages for `TokenOCRForTokenAlignment`: images and masks tiled as the processor tiles."""

import functools

import numpy as np
import torch

from ..processing.pages_tokenocr import describe_image, to_rgb_image
from .data import mask_array


DEFAULT_MAX_TOKENS_PER_IMAGE = 70  # supervised tokens per image: our assumption (the authors' code does not say)


@functools.lru_cache(maxsize=64)
def resize_support(size_in: int, size_out: int) -> torch.Tensor:
    r"""
    `(size_out, size_in)` bool: which input rows carry weight in each output row when torch resizes bilinearly
    (`align_corners=False`, no antialiasing) from `size_in` to `size_out` rows; read off torch itself by resizing an
    identity matrix along one axis.
    """
    eye = torch.eye(size_in)[None, None]
    return torch.nn.functional.interpolate(eye, size=(size_out, size_in), mode="bilinear", align_corners=False)[0, 0] > 0


def _compose(outer: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """The support of resizing with `inner` then `outer` (boolean matrix product)."""
    return (outer.float() @ inner.float()) > 0


def _tile_supports(size: int, count: int, tile_size: int, side: int, thumbnail: bool) -> list[torch.Tensor]:
    """Per tile along one axis (then the thumbnail): `(side, size)` support from page pixels to tile features."""
    canvas = resize_support(size, count * tile_size)
    supports = [canvas[i * tile_size : (i + 1) * tile_size] for i in range(count)]
    if thumbnail:
        supports.append(resize_support(size, tile_size))
    if side != tile_size:
        supports = [_compose(resize_support(tile_size, side), support) for support in supports]
    return supports


def _mask_boxes(mask: np.ndarray, mask_indices) -> list[tuple[int, int, int, int] | None]:
    """`(top, bottom, left, right)` (exclusive ends) of each mask index's pixels, `None` where it has none."""
    ys, xs = np.nonzero(mask > 0)
    values = mask[ys, xs]
    size = max([int(values.max(initial=0)), *mask_indices]) + 1
    top, left = np.full(size, mask.shape[0]), np.full(size, mask.shape[1])
    bottom, right = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
    np.minimum.at(top, values, ys)
    np.minimum.at(left, values, xs)
    np.maximum.at(bottom, values, ys + 1)
    np.maximum.at(right, values, xs + 1)
    return [(int(top[i]), int(bottom[i]), int(left[i]), int(right[i])) if bottom[i] else None for i in mask_indices]


def tile_token_masks(
    mask: np.ndarray, mask_indices, grid, tile_size: int, thumbnail: bool, feature_side: int | None = None
) -> torch.Tensor:
    r"""
    Cut the masks of a page's tokens into tiles the way [`TokenOCRImageProcessor`] cuts the page: resize to the
    grid's canvas `(rows * tile_size, cols * tile_size)`, cut the tiles row-major, and append a thumbnail (the whole
    mask resized to one tile) when `thumbnail`. Resizing is torch's bilinear (`align_corners=False`) followed by
    `> 0`, as in the original training; with `feature_side` each tile is resized once more, the same way, to the
    model's feature grid.

    The result equals resizing each token's full-page mask with `torch.nn.functional.interpolate`, but is computed
    from each token's bounding box: a bilinear resize followed by `> 0` is positive exactly where some input pixel
    with non-zero weight is inside the mask, so it is a boolean product with the resize's (separable) support.

    Args:
        mask (`np.ndarray` of shape `(height, width)`): the page's mask map (pixel value = mask index).
        mask_indices (`list[int]`): the mask index of each token.
        grid (`(cols, rows)`): the page's tile grid.

    Returns:
        `torch.BoolTensor` of shape `(num_tiles, num_tokens, side, side)`, `side = feature_side or tile_size`.
    """
    cols, rows = (int(v) for v in grid)
    side = feature_side or tile_size
    row_supports = torch.stack(_tile_supports(mask.shape[0], rows, tile_size, side, thumbnail)).float()
    col_supports = torch.stack(_tile_supports(mask.shape[1], cols, tile_size, side, thumbnail)).float()
    pairs = [(r, c) for r in range(rows) for c in range(cols)] + ([(rows, cols)] if thumbnail else [])
    pick_rows, pick_cols = torch.tensor([r for r, _ in pairs]), torch.tensor([c for _, c in pairs])
    result = torch.zeros(len(pairs), len(mask_indices), side, side, dtype=torch.bool)
    for token, (index, box) in enumerate(zip(mask_indices, _mask_boxes(mask, list(mask_indices)))):
        if box is None:
            continue
        top, bottom, left, right = box
        token_mask = torch.from_numpy(mask[top:bottom, left:right] == index).float()
        through_rows = row_supports[:, :, top:bottom] @ token_mask  # (tile rows, side, box width)
        grid_masks = torch.einsum("rsw,ctw->rcst", through_rows, col_supports[:, :, left:right])
        result[:, token] = grid_masks[pick_rows, pick_cols] > 0
    return result


def whole_image_token_masks(mask: np.ndarray, mask_indices, map_size) -> torch.Tensor:
    r"""
    The masks of a page's tokens on a whole image's `map_size = (h, w)` feature map (the ResNet variant): each token's
    mask resized bilinearly (`align_corners=False`) to the map and binarised `> 0`, as the authors' R50 training
    does, computed from each token's bounding box like [`tile_token_masks`].

    Returns:
        `torch.BoolTensor` of shape `(num_tokens, h * w)`, row-major on the map.
    """
    height, width = (int(v) for v in map_size)
    rows, cols = resize_support(mask.shape[0], height).float(), resize_support(mask.shape[1], width).float()
    result = torch.zeros(len(mask_indices), height, width, dtype=torch.bool)
    for token, (index, box) in enumerate(zip(mask_indices, _mask_boxes(mask, list(mask_indices)))):
        if box is not None:
            top, bottom, left, right = box
            token_mask = torch.from_numpy(mask[top:bottom, left:right] == index).float()
            result[token] = (rows[:, top:bottom] @ token_mask @ cols[:, left:right].T) > 0
    return result.flatten(1)


class TokenMaskCollator:
    r"""
    Turns examples of a token-mask dataset (see `tokenocr.training.data`) into a batch for
    [`TokenOCRForTokenAlignment`]:

    - `pixel_values` `(total_tiles, 3, S, S)`: every page tiled by the processor's image processor;
    - `num_tiles` `(num_images,)`: tiles per page, thumbnail included;
    - `input_ids`, `attention_mask` `(num_images, max_tokens)`: each page's supervised token ids, padded;
    - `token_masks` `(total_tiles, max_tokens, side, side)` bool: each tile's mask of each of its page's tokens, cut
      exactly like the page ([`tile_token_masks`]), on the feature grid when `feature_side` is given.

    Args:
        processor ([`TokenOCRProcessor`]): its image processor tiles the pages; its tokenizer's pad id pads.
        feature_side (`int`, *optional*): the model's feature-grid side (`config.feature_side`); masks are resized to
            it here, which keeps batches small. Without it masks stay at tile resolution and the model resizes them.
        max_tokens_per_image (`int`, *optional*, defaults to 70): pages with more tokens get a random subset (torch's
            random generator); `None` keeps every token. (How many tokens the authors supervised per image is not
            published; 70 is our assumption.)
        merge_repeated_tokens (`bool`, *optional*, defaults to `False`): supervise a token id that occurs several
            times on a page once, with the union of its occurrences' masks. By default each occurrence is supervised
            separately (the dataset's entries as they are), so each occurrence's location is also a negative for the other occurrences' entries (the
            same embedding), which slows `loss_seg` down where ids repeat; merging removes that conflict.
        vocab_size (`int`, *optional*): when given, token ids outside `[0, vocab_size)` are an error naming the page.
        min_tiles, max_tiles, use_thumbnail: tiling settings, the image processor's by default.
    """

    def __init__(
        self,
        processor,
        feature_side: int | None = None,
        max_tokens_per_image: int | None = DEFAULT_MAX_TOKENS_PER_IMAGE,
        min_tiles: int | None = None,
        max_tiles: int | None = None,
        use_thumbnail: bool | None = None,
        merge_repeated_tokens: bool = False,
        vocab_size: int | None = None,
    ):
        if max_tokens_per_image is not None and max_tokens_per_image < 1:
            raise ValueError(f"max_tokens_per_image must be at least 1, got {max_tokens_per_image}.")
        self.image_processor = processor.image_processor
        pad = processor.tokenizer.pad_token_id
        self.pad_token_id = 0 if pad is None else int(pad)
        self.feature_side = feature_side
        self.max_tokens_per_image = max_tokens_per_image
        self.min_tiles = self.image_processor.min_tiles if min_tiles is None else min_tiles
        self.max_tiles = self.image_processor.max_tiles if max_tiles is None else max_tiles
        self.use_thumbnail = self.image_processor.use_thumbnail if use_thumbnail is None else use_thumbnail
        self.merge_repeated_tokens = merge_repeated_tokens
        self.vocab_size = vocab_size

    def _select(self, tokens: list[dict], name: str) -> list[tuple[int, list[int]]]:
        """The supervised tokens as `(id, mask indices)`: one per entry, or per id when merging; sampled."""
        groups: dict = {}
        for number, token in enumerate(tokens):
            token_id = int(token["id"])
            if self.vocab_size is not None and not 0 <= token_id < self.vocab_size:
                raise ValueError(f"{name}: token id {token_id} is outside the vocabulary (size {self.vocab_size}).")
            key = token_id if self.merge_repeated_tokens else number
            groups.setdefault(key, (token_id, []))[1].append(int(token["mask_index"]))
        selected = list(groups.values())
        limit = self.max_tokens_per_image
        if limit is None or len(selected) <= limit:
            return selected
        return [selected[i] for i in sorted(torch.randperm(len(selected))[:limit].tolist())]

    def page(self, example: dict, index: int = 0) -> dict:
        """One page: its tiles, grid, selected tokens and tiled masks (`index`: its place in the batch)."""
        name = describe_image(example["image"], position=f"page {index} of the batch")
        image = to_rgb_image(example["image"], name=name)
        mask = mask_array(example["mask"])
        if mask.shape != (image.height, image.width):
            raise ValueError(
                f"{name}: the mask map is {mask.shape[1]}x{mask.shape[0]} but the image is "
                f"{image.width}x{image.height}."
            )
        listed = {int(t["mask_index"]) for t in example["tokens"]}
        absent = sorted(listed - set(np.unique(mask).tolist()))
        if absent and len(absent) == len(listed):  # not one token on its mask: the wrong mask, or the wrong list
            raise ValueError(
                f"{name}: none of its tokens' mask indices (e.g. {absent[:5]}) occur in its mask map; the token "
                "list and the mask disagree."
            )
        tokens = self._select(example["tokens"], name)
        if not self.image_processor.do_tiling:  # the ResNet variant: the whole image, masks on its own map
            whole = self.image_processor(image, return_tensors="pt")
            map_size = whole["map_sizes"][0].tolist()
            indices = [i for _, group in tokens for i in group]
            masks = whole_image_token_masks(mask, indices, map_size)
            owner = torch.tensor([n for n, (_, group) in enumerate(tokens) for _ in group], dtype=torch.long)
            merged = torch.zeros(len(tokens), masks.shape[1], dtype=torch.int32).index_add_(0, owner, masks.int())
            return {"pixel_values": whole["pixel_values"], "pixel_sizes": whole["pixel_sizes"], "map_size": map_size,
                    "tokens": tokens, "token_masks": (merged > 0)[None]}  # (1 image, tokens, h * w)
        tiles = self.image_processor(
            image, min_tiles=self.min_tiles, max_tiles=self.max_tiles, use_thumbnail=self.use_thumbnail,
            return_tensors="pt",
        )
        grid = tiles["grid_cols_rows"][0].tolist()
        thumbnail = int(tiles["num_tiles"][0]) > grid[0] * grid[1]
        size = self.image_processor.size["height"]
        indices = [i for _, group in tokens for i in group]
        masks = tile_token_masks(mask, indices, grid, size, thumbnail, self.feature_side)
        if len(indices) > len(tokens):  # merged occurrences: the union of their masks
            owner = torch.tensor([n for n, (_, group) in enumerate(tokens) for _ in group])
            merged = torch.zeros(masks.shape[0], len(tokens), *masks.shape[2:], dtype=torch.int32)
            masks = merged.index_add_(1, owner, masks.to(torch.int32)) > 0
        return {"pixel_values": tiles["pixel_values"], "grid": grid, "tokens": tokens, "token_masks": masks}

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        pages = [self.page(example, index) for index, example in enumerate(examples)]
        if not self.image_processor.do_tiling:
            return self._whole_image_batch(pages)
        width = max([len(page["tokens"]) for page in pages] + [1])
        input_ids = torch.full((len(pages), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(pages), width), dtype=torch.long)
        token_masks = []
        for row, page in enumerate(pages):
            count = len(page["tokens"])
            input_ids[row, :count] = torch.tensor([token_id for token_id, _ in page["tokens"]], dtype=torch.long)
            attention_mask[row, :count] = 1
            masks = page["token_masks"]
            padding = torch.zeros(masks.shape[0], width - count, *masks.shape[2:], dtype=torch.bool)
            token_masks.append(torch.cat([masks, padding], dim=1))
        return {
            "pixel_values": torch.cat([page["pixel_values"] for page in pages]),
            "num_tiles": torch.tensor([len(page["pixel_values"]) for page in pages], dtype=torch.long),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_masks": torch.cat(token_masks),
        }

    def _whole_image_batch(self, pages: list[dict]) -> dict[str, torch.Tensor]:
        """The ResNet variant's batch: images zero-padded to a common size, masks on each image's map, padded."""
        from ..processing.image_processing_tokenocr import pad_images

        width = max([len(page["tokens"]) for page in pages] + [1])
        locations = max(page["token_masks"].shape[-1] for page in pages)
        input_ids = torch.full((len(pages), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(pages), width), dtype=torch.long)
        token_masks = torch.zeros(len(pages), width, locations, dtype=torch.bool)
        for row, page in enumerate(pages):
            count, masks = len(page["tokens"]), page["token_masks"][0]
            input_ids[row, :count] = torch.tensor([token_id for token_id, _ in page["tokens"]], dtype=torch.long)
            attention_mask[row, :count] = 1
            token_masks[row, :count, : masks.shape[-1]] = masks
        pixel_values, sizes = pad_images([page["pixel_values"][0] for page in pages])
        return {
            "pixel_values": pixel_values, "pixel_sizes": torch.tensor(sizes, dtype=torch.long),
            "map_sizes": torch.tensor([page["map_size"] for page in pages], dtype=torch.long),
            "num_tiles": torch.ones(len(pages), dtype=torch.long),  # one whole image each
            "input_ids": input_ids, "attention_mask": attention_mask, "token_masks": token_masks,
        }
