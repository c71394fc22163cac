# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
Pictures of TokenOCR similarity maps that keep the document readable.

- [`overlay_heatmap`]: one token's map over the page. Colour appears only where the map is high (the top part of
  its range); elsewhere the page is left as it is, and where colour appears the paper is tinted rather than painted
  over, so dark text stays dark.
- [`heatmap_strip`]: pictures side by side, each with a caption under it.
- [`query_strip`]: all tokens of one query side by side, captioned with each token and its score, straight from the
  `token-similarity` pipeline's per-token dicts.

Everything works one token at a time in uint8 and float32 (never float64), so a large page costs a few bytes per
pixel, not a copy per token.
"""

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .settings_tokenocr import MAX_VISUAL_SIDE


DEFAULT_FLOOR = 0.5  # the part of a map's range (after normalisation) left uncoloured
DEFAULT_OPACITY = 0.85
DEFAULT_PANEL_WIDTH = 320
_INK = (20, 20, 20)
_PAPER = (255, 255, 255)


def _ramp_table() -> np.ndarray:
    """The 256-entry blue-cyan-yellow-red ramp (jet without its dark ends), `(256, 3)` uint8, computed in float32."""
    x = np.linspace(0.5, 3.5, 256, dtype=np.float32)[:, None]
    centres = np.array([3.0, 2.0, 1.0], dtype=np.float32)
    rgb = np.clip(np.float32(1.5) - np.abs(x - centres), 0.0, 1.0)
    return (rgb * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


_RAMP = _ramp_table()


def colorize(values: np.ndarray) -> np.ndarray:
    """
    Args:
        values (`np.ndarray`, float, any shape): values in `[0, 1]` (clipped).

    Returns:
        `np.ndarray` uint8 of shape `values.shape + (3,)`: the blue (0) to red (1) colour ramp.
    """
    index = np.clip(np.asarray(values, dtype=np.float32) * np.float32(255.0) + np.float32(0.5), 0, 255)
    return _RAMP[index.astype(np.uint8)]


def normalize_map(values: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """
    Scale a map to `[0, 1]`.

    Args:
        values (`np.ndarray` of shape `(height, width)`): e.g. cosine similarities.
        value_range (`(low, high)`, *optional*): the values that map to 0 and 1; by default the map's own minimum
            and maximum (as the original visualisation does). A flat map becomes all zeros.

    Returns:
        `np.ndarray` float32 of shape `(height, width)`, values in `[0, 1]`.
    """
    result = np.array(values, dtype=np.float32)  # a copy: the caller's array is never modified
    if result.ndim != 2:
        raise ValueError(f"A similarity map must have shape (height, width), got {result.shape}.")
    low, high = value_range if value_range is not None else (float(result.min()), float(result.max()))
    if not high > low:
        result.fill(0.0)
        return result
    result -= np.float32(low)
    result *= np.float32(1.0 / (high - low))
    return np.clip(result, 0.0, 1.0, out=result)


def resize_map(values, size: tuple[int, int]) -> np.ndarray:
    """
    A similarity map resized to an image, as every surface does it (pipeline, command line, evaluation, demo):
    bilinear, `align_corners=False`, in float32.

    Args:
        values (`np.ndarray` or `torch.Tensor` of shape `(..., rows, cols)`): e.g. stitched maps at feature resolution.
        size (`(width, height)`): the target size, PIL order (e.g. `image.size`).

    Returns:
        `np.ndarray` float32 of shape `(..., height, width)`.
    """
    import torch

    maps = torch.as_tensor(np.asarray(values, dtype=np.float32) if not isinstance(values, torch.Tensor) else values)
    if maps.dim() < 2:
        raise ValueError(f"A similarity map must have shape (height, width), got {tuple(maps.shape)}.")
    width, height = (int(v) for v in size)
    maps = maps.float()
    if tuple(maps.shape[-2:]) == (height, width):
        return maps.numpy()
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    resized = torch.nn.functional.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False)
    return resized.reshape(*maps.shape[:-2], height, width).numpy()


def overlay_heatmap(
    image,
    values: np.ndarray,
    value_range: tuple[float, float] | None = None,
    floor: float = DEFAULT_FLOOR,
    opacity: float = DEFAULT_OPACITY,
    blend: str = "multiply",
) -> Image.Image:
    r"""
    One token's similarity map over a page, drawn so the page stays readable.

    The map is normalised to `[0, 1]` ([`normalize_map`]); pixels at or below `floor` are left exactly as they are.
    Above it, the colour ramp runs from blue (just above `floor`) to red (the map's maximum), with an opacity that
    grows from 0 to `opacity`. With `blend="multiply"` (default) the colour tints the page (white paper takes the
    colour, dark text stays dark); `blend="over"` paints it over the page (for dark pages).

    Args:
        image (`PIL.Image.Image` or `np.ndarray` uint8 `(height, width, 3)`): the page.
        values (`np.ndarray` of shape `(rows, cols)`): the map; resized bilinearly to the page when its shape differs.
        value_range (`(low, high)`, *optional*): fixed normalisation instead of the map's own minimum and maximum.
        floor (`float`): the share of the normalised range left uncoloured, in `[0, 1)`.
        opacity (`float`): the largest opacity of the colour, in `[0, 1]`.
        blend (`str`): `"multiply"` or `"over"`.

    Returns:
        `PIL.Image.Image`, RGB, the page's size. The inputs are not modified.
    """
    if not 0.0 <= floor < 1.0:
        raise ValueError(f"floor must be in [0, 1), got {floor}.")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], got {opacity}.")
    if blend not in ("multiply", "over"):
        raise ValueError(f"blend must be 'multiply' or 'over', got {blend!r}.")
    page = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
    if page.dtype != np.uint8 or page.ndim != 3 or page.shape[2] != 3:
        raise ValueError(f"The page must be an RGB image or a uint8 (height, width, 3) array, got {page.shape} {page.dtype}.")
    strength = normalize_map(resize_map(values, (page.shape[1], page.shape[0])), value_range)
    strength -= np.float32(floor)
    strength *= np.float32(1.0 / (1.0 - floor))
    np.clip(strength, 0.0, 1.0, out=strength)
    # Only the coloured pixels are blended (a pixel at strength 0 keeps the page's value exactly): a token's map is
    # coloured over a small part of a page, so this is most of the work saved.
    coloured = strength > 0
    output = page.copy()
    if not coloured.any():
        return Image.fromarray(output)
    alpha = strength[coloured] * np.float32(opacity)  # (n,)
    under = page[coloured].astype(np.float32)  # (n, 3)
    result = colorize(strength[coloured]).astype(np.float32)  # (n, 3)
    if blend == "multiply":  # page * (1 - alpha + alpha * colour / 255)
        result *= np.float32(1.0 / 255.0)
        result -= np.float32(1.0)
        result *= alpha[:, None]
        result += np.float32(1.0)
        result *= under
    else:  # page + alpha * (colour - page)
        result -= under
        result *= alpha[:, None]
        result += under
    result += np.float32(0.5)
    np.clip(result, 0.0, 255.0, out=result)
    output[coloured] = result.astype(np.uint8)
    return Image.fromarray(output)


def _display_text(token: str) -> str:
    """`token` with characters the default font may lack (from U+0250 on) or cannot show written as escapes."""
    shown = []
    for character in token:
        if character.isprintable() and ord(character) < 0x250:
            shown.append(character)
        else:
            shown.append(ascii(character)[1:-1])
    return "".join(shown)


def format_caption(token: str, score: float) -> str:
    """
    A token's caption, e.g. `' Invoice'  0.412`: the token between quotes (so a leading space shows) and its score.
    Characters past the Latin blocks (U+0250 on) or not printable are written as escapes (`\\u53d1`), which any
    font can show.
    """
    return f"'{_display_text(token)}'  {score:.3f}"


def _load_font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed-size bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> str:
    """`text` on one line (what the font cannot show, newlines included, as escapes), shortened with '...' until it
    is at most `width` pixels wide."""
    text = _display_text(text)
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def heatmap_strip(
    panels: list,
    captions: list[str],
    panel_width: int = DEFAULT_PANEL_WIDTH,
    columns: int | None = None,
    title: str | None = None,
    font_size: int | None = None,
    gap: int = 8,
) -> Image.Image:
    """
    Pictures side by side, each scaled to `panel_width` and captioned underneath.

    Args:
        panels (`list[PIL.Image.Image]`): the pictures (e.g. one overlay per query token); each is scaled to
            `panel_width` keeping its aspect ratio.
        captions (`list[str]`): one caption per panel, drawn on one line (shortened with '...' if too long).
        panel_width (`int`): width of each panel in pixels.
        columns (`int`, *optional*): panels per row; default all in one row.
        title (`str`, *optional*): a line above the panels.
        font_size (`int`, *optional*): caption size in pixels; default `max(12, panel_width // 20)`.
        gap (`int`): white space between and around panels, in pixels.

    Returns:
        `PIL.Image.Image`, RGB, white background, of width `columns * panel_width + (columns + 1) * gap` and height
        `rows * (panel_height + caption_height + gap) + gap` plus the title's band, where `panel_height` is the
        tallest scaled panel and `caption_height = round(1.5 * font_size)`.
    """
    if not panels:
        raise ValueError("A strip needs at least one panel.")
    if len(captions) != len(panels):
        raise ValueError(f"Got {len(panels)} panels but {len(captions)} captions.")
    if panel_width < 1 or gap < 0:
        raise ValueError(f"panel_width must be positive and gap non-negative, got {panel_width} and {gap}.")
    columns = len(panels) if columns is None else max(1, min(int(columns), len(panels)))
    rows = math.ceil(len(panels) / columns)
    font_size = font_size or max(12, panel_width // 20)
    font = _load_font(font_size)
    caption_height = round(1.5 * font_size)
    scaled = [
        panel.convert("RGB").resize((panel_width, max(1, round(panel.height * panel_width / panel.width))), Image.BICUBIC)
        for panel in panels
    ]
    panel_height = max(panel.height for panel in scaled)
    title_height = caption_height + gap if title else 0
    cell_height = panel_height + caption_height + gap
    strip = Image.new("RGB", (columns * panel_width + (columns + 1) * gap, title_height + rows * cell_height + gap), _PAPER)
    draw = ImageDraw.Draw(strip)
    if title:
        draw.text((gap, gap), _fit_text(draw, title, font, strip.width - 2 * gap), fill=_INK, font=font)
    for index, (panel, caption) in enumerate(zip(scaled, captions)):
        row, column = divmod(index, columns)
        left, top = gap + column * (panel_width + gap), title_height + gap + row * cell_height
        strip.paste(panel, (left, top))
        text = _fit_text(draw, caption, font, panel_width)
        draw.text((left, top + panel_height + (caption_height - font_size) // 3), text, fill=_INK, font=font)
    return strip


def query_strip(
    image,
    tokens: list[dict],
    panel_width: int = DEFAULT_PANEL_WIDTH,
    columns: int | None = None,
    title: str | None = None,
    **overlay_kwargs,
) -> Image.Image:
    """
    All tokens of one query side by side: each token's [`overlay_heatmap`] on a scaled copy of the page, captioned
    with [`format_caption`].

    Args:
        image (`PIL.Image.Image`): the page.
        tokens (`list[dict]`): the `token-similarity` pipeline's result for one image and one query; each dict needs
            `token` (`str`), `score` (`float`) and `similarity` (`np.ndarray` `(rows, cols)`, any resolution).
        panel_width, columns, title: see [`heatmap_strip`].
        overlay_kwargs: passed to [`overlay_heatmap`] (`value_range`, `floor`, `opacity`, `blend`).

    Returns:
        `PIL.Image.Image`, RGB: one captioned panel per token (see [`heatmap_strip`] for the size).
    """
    if not tokens:
        raise ValueError("A query strip needs at least one token.")
    page = image.convert("RGB")
    height = max(1, round(page.height * panel_width / page.width))
    small = page.resize((panel_width, height), Image.BICUBIC)
    panels = [overlay_heatmap(small, token["similarity"], **overlay_kwargs) for token in tokens]
    captions = [format_caption(token["token"], token["score"]) for token in tokens]
    return heatmap_strip(panels, captions, panel_width=panel_width, columns=columns, title=title)


# --------------------------------------------------------------------------------------------------------------------
# From a stitched map to what a user sees: the map on the image, its mask and boxes (one owner for every surface).
# --------------------------------------------------------------------------------------------------------------------


def mask_to_boxes(mask: np.ndarray) -> list[list[int]]:
    """
    Bounding boxes of the 8-connected regions of a boolean mask, as `[left, top, right, bottom]` pixel
    coordinates with `right`/`bottom` exclusive (PIL's crop convention), sorted top to bottom, then left to right.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or not mask.any():
        return []
    rows = np.flatnonzero(mask.any(axis=1))  # only the rows holding some of the mask are scanned
    edges = np.diff(np.pad(mask[rows], ((0, 0), (1, 1))).astype(np.int8), axis=1)
    starts, ends = np.nonzero(edges == 1), np.nonzero(edges == -1)
    run_rows, run_starts, run_ends = starts[0], starts[1], ends[1]  # ends exclusive; both in row-major order
    parent = list(range(len(run_rows)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_first = np.searchsorted(run_rows, np.arange(len(rows) + 1))  # run_rows index `rows`
    for row in (np.flatnonzero(np.diff(rows) == 1) + 1).tolist():  # a row with runs right below one with runs
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
        top = int(rows[run_rows[i]])
        left, right, bottom = int(run_starts[i]), int(run_ends[i]), top + 1
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


def threshold_range(values: np.ndarray, threshold: float, floor: float = DEFAULT_FLOOR) -> tuple[float, float]:
    """
    The `value_range` that draws a result's map in [`overlay_heatmap`] with colour exactly where it passes
    `threshold` (where its mask is), red at its best value: a map that never reaches the threshold is left
    uncoloured instead of being stretched to its own range.
    """
    high = max(float(np.max(values)), float(threshold))
    return (float(threshold) - floor * high) / (1.0 - floor), high


def token_visuals(token_map, image_size: tuple[int, int], threshold: float, shown=None):
    """
    The image-size pictures of one token's stitched map, made one token at a time in float32.

    Args:
        token_map (`torch.Tensor` of shape `(rows * side, cols * side)`): the token's stitched similarity map.
        image_size (`(width, height)`): the input image's size in pixels.
        threshold (`float`): mask threshold on the cosine similarity.
        shown (`PIL.Image.Image`, *optional*): the image to draw the heatmap on: at `visual_size` (`visual_image`),
            or smaller (a display copy), which then sets the size of the heatmap and the returned mask.

    Returns:
        `(mask, boxes, heatmap)`: `mask` a bool array `(height, width)` at the image's `visual_size` (or `shown`'s
        size); `boxes` of the mask's connected regions at `visual_size`, in the image's own pixel coordinates;
        `heatmap` an RGB PIL image of the mask's size, or `None` without `shown`.
    """
    width, height = visual_size(*image_size)
    resized = resize_map(token_map, (width, height))
    mask = resized > threshold
    boxes = mask_to_boxes(mask)
    if (width, height) != tuple(image_size):
        sx, sy = image_size[0] / width, image_size[1] / height
        boxes = [
            [int(left * sx), int(top * sy), min(image_size[0], round(right * sx)), min(image_size[1], round(bottom * sy))]
            for left, top, right, bottom in boxes
        ]
    if shown is None:
        return mask, boxes, None
    if shown.size != (width, height):  # a smaller display copy: its pictures at its own size
        resized = resize_map(token_map, shown.size)
        mask = resized > threshold
    return mask, boxes, overlay_heatmap(shown, resized, threshold_range(resized, threshold))


def map_on_image(values, scale: tuple[float, float], size: tuple[int, int]) -> np.ndarray:
    """
    A map placed on a picture of `size` `(width, height)`: resized so each location covers `scale` `(sx, sy)`
    picture pixels, from the top-left corner (a whole image's map may reach past the picture's edge, which is cut;
    a map that covers less leaves the rest at the map's minimum). Float32 `(height, width)`.
    """
    width, height = size
    values = np.asarray(values, dtype=np.float32)
    covered = (max(1, round(values.shape[-1] * scale[0])), max(1, round(values.shape[-2] * scale[1])))
    resized = resize_map(values, covered)
    placed = np.full((height, width), resized.min(), dtype=np.float32)
    rows, cols = min(height, resized.shape[0]), min(width, resized.shape[1])
    placed[:rows, :cols] = resized[:rows, :cols]
    return placed


def query_visuals(query_map, scale: tuple[float, float], image_size: tuple[int, int], threshold: float, shown,
                  boxes=(), box_scores=()):
    """
    A query's pictures: `(mask, picture)` at `shown`'s size (the image at `visual_size`): the query map above
    `threshold`, and the map drawn over the image with the query's boxes outlined, best first, each with its score.
    `scale` is image pixels per map location; `boxes` are in image pixels.
    """
    factor = shown.width / image_size[0]
    placed = map_on_image(query_map, (scale[0] * factor, scale[1] * factor), shown.size)
    picture = overlay_heatmap(shown, placed, threshold_range(placed, threshold))
    draw = ImageDraw.Draw(picture)
    width = max(2, round(3 * factor))
    font = _load_font(max(10, round(14 * factor)))
    for rank, (box, score) in enumerate(zip(boxes, box_scores)):
        left, top, right, bottom = (round(v * factor) for v in box)
        colour = (220, 20, 60) if rank == 0 else (255, 140, 0)
        draw.rectangle((left - width, top - width, right + width - 1, bottom + width - 1), outline=colour, width=width)
        draw.text((left, max(0, top - width - font.size - 2)), f"{score:.2f}", fill=colour, font=font)
    return placed > threshold, picture


__all__ = [
    "colorize",
    "format_caption",
    "heatmap_strip",
    "map_on_image",
    "mask_to_boxes",
    "normalize_map",
    "overlay_heatmap",
    "query_strip",
    "query_visuals",
    "resize_map",
    "threshold_range",
    "token_visuals",
    "visual_image",
    "visual_size",
]
