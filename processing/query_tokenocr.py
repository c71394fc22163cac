# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
Where is this query: one map, one score and boxes for a whole query, from its tokens' maps.

A query's tokens stand side by side on the page, in reading order. So the query's map at a location is the
combination of each token's map shifted by where that token stands relative to the query's centre: a word is found
where all of its tokens are, not wherever its commonest letter is. The spacing is not known in advance (it depends on
the font size), so it is searched over `QUERY_PITCHES` (locations per character) and the best one kept per location.
Each token's map is first max-pooled along the line over about a third of a character's width on each side, which
absorbs the width differences of proportional fonts (more would let a wide spacing match a narrow word). Whitespace-only tokens (the query rule's leading space) are left out.

The combination (`QUERY_COMBINATION`, the mean of the shifted token maps) was chosen by measurement on held-out
document pages (word pointing; see the document model's card); `"min"` and `"softmin"` are kept for comparison.
"""

import math

import numpy as np
import torch


# Character spacings searched, in map locations per character: 0.5 to 8, in steps of sqrt(2).
QUERY_PITCHES = tuple(0.5 * 2 ** (step / 2) for step in range(9))
QUERY_COMBINATIONS = ("mean", "min", "softmin")
QUERY_COMBINATION = "mean"
SPACING_PENALTY = 0.01  # per sqrt(2) step of character spacing above the narrowest, in cosine units
MAX_QUERY_BOXES = 20  # most boxes one query gets on one image


def token_layout(texts: list[str]) -> list[tuple[int, float, float]]:
    """
    `(token index, centre, length)` in characters of each visible token of a query, in reading order; a token's
    leading whitespace counts as one character of gap (between words); whitespace-only tokens are left out, and so
    are empty ones (a byte token holding part of a character, whose character the next token shows: no gap).
    """
    layout, position = [], 0.0
    for index, text in enumerate(texts):
        if text == "":
            continue
        visible = text.strip()
        if not visible:
            position += 1.0 if layout else 0.0
            continue
        if text[:1].isspace() and layout:
            position += 1.0
        layout.append((index, position + len(visible) / 2, float(len(visible))))
        position += len(visible)
    return layout


def _shifted(values: torch.Tensor, dx: int, fill: float) -> torch.Tensor:
    """`out[..., x] = values[..., x + dx]`, `fill` where that falls outside."""
    if dx == 0:
        return values
    out = torch.full_like(values, fill)
    width = values.shape[-1]
    if abs(dx) < width:
        if dx > 0:
            out[..., : width - dx] = values[..., dx:]
        else:
            out[..., -dx:] = values[..., : width + dx]
    return out


def _combine_shifted(maps: torch.Tensor, shifts: list[int], fill: float, combination: str) -> torch.Tensor:
    """
    `_combine` of `_shifted(maps[n], shifts[n], fill)` for every token `n`, for the mean and the minimum accumulated
    in place, one slice per token, instead of making and stacking a shifted copy of every map (the copies, not the
    arithmetic, were the query level's cost).
    """
    if combination not in ("mean", "min"):
        return _combine(torch.stack([_shifted(map_, dx, fill) for map_, dx in zip(maps, shifts)]), combination)
    width, mean = maps.shape[-1], combination == "mean"
    result = torch.full_like(maps[0], 0.0 if mean else math.inf)
    for map_, dx in zip(maps, shifts):
        # result[..., x] (+= or min=) map_[..., x + dx] where x + dx is inside the map, else fill
        low, high = min(width, max(0, -dx)), max(0, min(width, width - dx))
        if low < high:
            inside, source = result[..., low:high], map_[..., low + dx : high + dx]
            inside.add_(source) if mean else torch.minimum(inside, source, out=inside)
        for outside in (result[..., :low], result[..., max(low, high):]):
            outside.add_(fill) if mean else outside.clamp_(max=fill)
    return result.div_(len(shifts)) if mean else result


def _combine(stack: torch.Tensor, combination: str) -> torch.Tensor:
    if combination == "mean":
        return stack.mean(0)
    if combination == "min":
        return stack.min(0).values
    if combination == "softmin":  # between the two: a soft minimum at temperature 0.05
        return -0.05 * torch.logsumexp(-stack / 0.05, dim=0) + 0.05 * math.log(stack.shape[0])
    raise ValueError(f"Unknown query combination {combination!r}; choose one of {', '.join(QUERY_COMBINATIONS)}.")


def query_similarity(token_maps, texts: list[str], combination: str = QUERY_COMBINATION):
    r"""
    The query's own map from its tokens' maps.

    Args:
        token_maps (`torch.Tensor` or `np.ndarray` of shape `(num_tokens, height, width)`): each token's stitched
            similarity map, in the query's token order.
        texts (`list[str]`): each token's text (as the tokenizer decodes it, leading space included).
        combination (`str`): how the shifted token maps are combined (`QUERY_COMBINATIONS`).

    Returns:
        `(query_map, pitch_map)`: float32 tensors of shape `(height, width)`: the query's similarity at each location
        (centred on the query: the combined token similarities, less `SPACING_PENALTY` per step of spacing above the
        narrowest), and the character spacing (locations per character) that gave it.
    """
    maps = torch.as_tensor(np.asarray(token_maps, dtype=np.float32)) if not isinstance(token_maps, torch.Tensor) \
        else token_maps.float()
    if maps.dim() != 3 or maps.shape[0] != len(texts):
        raise ValueError(f"Expected one (height, width) map per token text ({len(texts)}), got {tuple(maps.shape)}.")
    layout = token_layout(texts) or [(index, 0.5, 1.0) for index in range(len(texts))]
    if len(layout) == 1:
        single = maps[layout[0][0]]
        return single.clone(), torch.full_like(single, 1.0)
    centre = (layout[0][1] - layout[0][2] / 2 + layout[-1][1] + layout[-1][2] / 2) / 2
    visible = maps[[index for index, _, _ in layout]]
    best = torch.full(maps.shape[1:], -math.inf)
    best_pitch = torch.ones(maps.shape[1:])
    for step, pitch in enumerate(QUERY_PITCHES):
        reach = int(0.3 * pitch * min(length for _, _, length in layout) + 0.5)
        pooled = torch.nn.functional.max_pool2d(visible[None], kernel_size=(1, 2 * reach + 1), stride=1,
                                                padding=(0, reach))[0]
        shifts = [round((middle - centre) * pitch) for _, middle, _ in layout]
        combined = _combine_shifted(pooled, shifts, -1.0, combination)
        # A wider spacing must win by SPACING_PENALTY per step: with tolerance, a wide spacing can also string
        # together letters of neighbouring words, so among near-equal matches the tighter one is the word.
        penalised = combined - SPACING_PENALTY * step
        better = penalised > best
        best = torch.where(better, penalised, best)
        best_pitch = torch.where(better, torch.full_like(best_pitch, pitch), best_pitch)
    return best, best_pitch


def query_boxes(query_map, pitch_map, token_maps, texts: list[str], threshold: float,
                scale: tuple[float, float], image_size: tuple[int, int], max_boxes: int = MAX_QUERY_BOXES):
    """
    Boxes of the query's occurrences, best first: each local maximum of the query map above `threshold` (not inside
    an earlier box) gives a box spanning the query's characters at the spacing found there, made tight by each
    token's own map (its locations above `threshold` near where the token should stand).

    Args:
        query_map, pitch_map (`(height, width)`): from [`query_similarity`].
        token_maps (`(num_tokens, height, width)`): the tokens' maps; texts: their texts.
        threshold (`float`): on the cosine similarity, as the token masks.
        scale (`(sx, sy)`): image pixels per map location along x and y.
        image_size (`(width, height)`): to clip the boxes to the image.

    Returns:
        `(boxes, box_scores)`: `[left, top, right, bottom]` in image pixels (right/bottom exclusive) and each box's
        query similarity.
    """
    query_map = torch.as_tensor(query_map).float()
    maps = torch.as_tensor(np.asarray(token_maps, dtype=np.float32)) if not isinstance(token_maps, torch.Tensor) \
        else token_maps.float()
    layout = token_layout(texts) or [(index, 0.5, 1.0) for index in range(len(texts))]
    total = layout[-1][1] + layout[-1][2] / 2 - (layout[0][1] - layout[0][2] / 2)
    centre = layout[0][1] - layout[0][2] / 2 + total / 2
    height, width = query_map.shape
    peaks = (query_map == torch.nn.functional.max_pool2d(query_map[None, None], 3, 1, 1)[0, 0]) & (query_map > threshold)
    ys, xs = torch.nonzero(peaks, as_tuple=True)
    order = torch.argsort(query_map[ys, xs], descending=True)
    boxes, scores, taken, found_boxes = [], [], torch.zeros_like(query_map, dtype=torch.bool), []
    for y, x in zip(ys[order].tolist(), xs[order].tolist()):
        if taken[y, x]:
            continue
        row = query_map[y]
        right_end = x  # max-pooling flattens a peak: take the middle of its plateau along the row
        while right_end + 1 < width and row[right_end + 1] >= row[x] - 1e-6:
            right_end += 1
        x = (x + right_end) // 2
        pitch = float(pitch_map[y, x])
        box = _tight_box(maps, layout, centre, pitch, y, x, threshold, height, width)
        if box is None:
            half = total * pitch / 2
            box = (x + 0.5 - half, y + 0.5 - pitch, x + 0.5 + half, y + 0.5 + pitch)
        if any(_overlap(box, earlier) > 0.3 for earlier in found_boxes):
            continue
        found_boxes.append(box)
        left, top, right, bottom = box
        taken[max(0, int(top)) : max(int(top) + 1, math.ceil(bottom)),
              max(0, int(left)) : max(int(left) + 1, math.ceil(right))] = True
        boxes.append([max(0, int(left * scale[0])), max(0, int(top * scale[1])),
                      min(image_size[0], math.ceil(right * scale[0])), min(image_size[1], math.ceil(bottom * scale[1]))])
        scores.append(float(query_map[y, x]))
        if len(boxes) == max_boxes:
            break
    return boxes, scores


def _overlap(a, b) -> float:
    """Intersection over the smaller box's area."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return width * height / max(smaller, 1e-9)


def _tight_box(maps, layout, centre, pitch, y, x, threshold, height, width):
    """
    The union, over the query's tokens, of the regions of the token's map above `threshold` (its characters' masks)
    that reach the middle half of where the token should stand, in a band of about one character
    above and below the row (map coordinates, right/bottom exclusive); `None` if no token has one.
    """
    from .visualization_tokenocr import mask_to_boxes

    found = []
    band = max(1.0, pitch)
    top, bottom = max(0, int(y - band)), min(height, int(y + band) + 1)
    for index, middle, length in layout:
        expected = x + (middle - centre) * pitch
        near = (expected - length * pitch / 4, expected + length * pitch / 4)
        left, right = max(0, int(near[0] - 2 * pitch)), min(width, int(near[1] + 2 * pitch) + 1)
        region = (maps[index, top:bottom, left:right] > threshold).numpy()
        for box_left, box_top, box_right, box_bottom in mask_to_boxes(region):
            if left + box_right > near[0] and left + box_left < near[1]:
                found.append((left + box_left, top + box_top, left + box_right, top + box_bottom))
    if not found:
        return None
    return (min(b[0] for b in found), min(b[1] for b in found), max(b[2] for b in found), max(b[3] for b in found))


__all__ = ["QUERY_COMBINATION", "QUERY_COMBINATIONS", "QUERY_PITCHES", "query_boxes", "query_similarity", "token_layout"]
