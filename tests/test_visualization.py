"""Heatmap overlays that keep the page readable, and per-query strips with captions."""

import tracemalloc

import numpy as np
import torch
import pytest
from PIL import Image

from tokenocr.processing.visualization_tokenocr import (
    colorize,
    format_caption,
    heatmap_strip,
    normalize_map,
    overlay_heatmap,
    query_strip,
    resize_map,
)


PAPER, INK = 245, 15


def ruled_page(width=240, height=120) -> Image.Image:
    """Light paper with dark 'text' bars on every other 8-pixel band."""
    page = np.full((height, width, 3), PAPER, dtype=np.uint8)
    for top in range(8, height - 8, 16):
        page[top : top + 6, 10 : width - 10] = INK
    return Image.fromarray(page)


def right_half_map(width=240, height=120, low=-0.1, high=0.6) -> np.ndarray:
    values = np.full((height, width), low, dtype=np.float32)
    values[:, width // 2 :] = high
    return values


def test_page_is_untouched_where_the_map_is_low():
    page = ruled_page()
    result = np.asarray(overlay_heatmap(page, right_half_map()))
    original = np.asarray(page)
    np.testing.assert_array_equal(result[:, :100], original[:, :100])


def test_colour_appears_where_the_map_is_high_and_text_stays_dark():
    page = ruled_page()
    result = np.asarray(overlay_heatmap(page, right_half_map())).astype(int)
    paper = result[2, 200]  # a paper pixel on the right (high) half
    assert paper[0] > 150 and paper[1] < 100 and paper[2] < 100, paper  # the peak colour is red
    text = result[10, 200]  # a text pixel on the right half
    assert text.max() < 40, text  # still dark: readable under the colour
    # Painting over (for dark pages) colours text pixels too.
    painted = np.asarray(overlay_heatmap(page, right_half_map(), blend="over")).astype(int)
    assert painted[10, 200, 0] > 150


def test_colour_grows_with_the_map_and_floor_decides_where_it_starts():
    page = Image.new("RGB", (100, 10), (255, 255, 255))
    ramp = np.tile(np.linspace(0.0, 1.0, 100, dtype=np.float32), (10, 1))
    result = np.asarray(overlay_heatmap(page, ramp, floor=0.5)).astype(int)
    assert (result[:, :50] == 255).all()  # at or below the floor: unchanged
    assert (result[:, 60:] != 255).any(axis=-1).all()  # above it: coloured
    assert result[5, 99, 1] < result[5, 75, 1]  # redder (less green) towards the maximum
    result = np.asarray(overlay_heatmap(page, ramp, floor=0.0)).astype(int)
    assert (result[:, 5:] != 255).any(axis=-1).all()


def test_overlay_takes_maps_at_feature_resolution_and_leaves_inputs_alone():
    page = ruled_page()
    small_map = right_half_map(24, 12)
    before_page, before_map = np.asarray(page).copy(), small_map.copy()
    result = overlay_heatmap(page, small_map)
    assert result.size == page.size and result.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(page), before_page)
    np.testing.assert_array_equal(small_map, before_map)
    flat = overlay_heatmap(page, np.zeros((12, 24), dtype=np.float32))  # a flat map colours nothing
    np.testing.assert_array_equal(np.asarray(flat), before_page)


def test_fixed_value_range():
    page = Image.new("RGB", (20, 20), (255, 255, 255))
    values = np.full((20, 20), 0.1, dtype=np.float32)
    values[:, 10:] = 0.15
    # Own range: 0.15 is the maximum and gets full colour; a fixed range (0, 1) keeps both halves uncoloured.
    assert (np.asarray(overlay_heatmap(page, values))[:, 10:] != 255).any()
    assert (np.asarray(overlay_heatmap(page, values, value_range=(0.0, 1.0))) == 255).all()


def test_overlay_memory_stays_within_a_few_float32_copies():
    height, width = 1200, 1000
    page = Image.new("RGB", (width, height), (240, 240, 240))
    values = np.random.default_rng(0).random((300, 250), dtype=np.float32)
    tracemalloc.start()
    try:
        overlay_heatmap(page, values)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # uint8 page + float32 map + float32 (height, width, 3) blend + uint8 result is about 36 bytes per pixel;
    # a float64 copy of the blend alone would add 24 more.
    assert peak / (height * width) < 48, peak / (height * width)


def test_map_helpers():
    assert colorize(np.array([0.0, 1.0], dtype=np.float32)).dtype == np.uint8
    blue, red = colorize(np.array([0.0, 1.0], dtype=np.float32))
    assert blue[2] > blue[0] and red[0] > red[2]
    normalised = normalize_map(np.array([[2.0, 4.0], [3.0, 4.0]]))
    assert normalised.dtype == np.float32 and normalised.min() == 0.0 and normalised.max() == 1.0
    resized = resize_map(np.zeros((4, 8), dtype=np.float64), (80, 40))
    assert resized.shape == (40, 80) and resized.dtype == np.float32
    with pytest.raises(ValueError, match="height, width"):
        normalize_map(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="floor"):
        overlay_heatmap(ruled_page(), right_half_map(), floor=1.0)


def test_captions():
    assert format_caption(" Invoice", 0.41234) == "' Invoice'  0.412"
    assert format_caption("tal", -0.05) == "'tal'  -0.050"
    assert format_caption("发票", 0.5) == "'\\u53d1\\u7968'  0.500"  # the default font has no CJK glyphs
    assert format_caption("\n", 0.5) == "'\\n'  0.500"


def _ink_columns(strip: Image.Image, band_top: int, band_bottom: int) -> np.ndarray:
    """Which columns of a horizontal band hold dark pixels."""
    band = np.asarray(strip.convert("L"))[band_top:band_bottom]
    return (band < 100).any(axis=0)


def test_strip_layout_and_one_caption_per_panel():
    panels = [Image.new("RGB", (200, 100), colour) for colour in [(200, 220, 255), (255, 220, 200), (220, 255, 200)]]
    strip = heatmap_strip(panels, ["' a'  0.100", "'b'  0.200", "'c'  0.300"], panel_width=120, gap=8, font_size=14)
    caption_height = 21
    assert strip.size == (3 * 120 + 4 * 8, 60 + caption_height + 8 + 8)
    pixels = np.asarray(strip)
    for index, colour in enumerate([(200, 220, 255), (255, 220, 200), (220, 255, 200)]):
        left = 8 + index * 128
        assert tuple(pixels[8 + 30, left + 60]) == colour  # each panel in its place, scaled to 120 x 60
    ink = _ink_columns(strip, 8 + 60, 8 + 60 + caption_height)
    for index in range(3):
        left = 8 + index * 128
        assert ink[left : left + 120].any(), f"caption {index} missing"
        assert not ink[left + 120 : left + 128].any()  # nothing drawn in the gaps


def test_strip_wraps_into_rows_with_a_title():
    panels = [Image.new("RGB", (100, 100), (230, 230, 230))] * 5
    strip = heatmap_strip(panels, [f"'{n}'  0.000" for n in range(5)], panel_width=50, columns=2, title="Query", font_size=12)
    assert strip.width == 2 * 50 + 3 * 8
    assert strip.height == (18 + 8) + 3 * (50 + 18 + 8) + 8
    # Row 3 has one panel: its second cell is blank.
    last_caption_top = (18 + 8) + 2 * (50 + 18 + 8) + 8 + 50
    ink = _ink_columns(strip, last_caption_top, last_caption_top + 18)
    assert ink[8 : 8 + 50].any() and not ink[66 : 66 + 50].any()
    with pytest.raises(ValueError, match="captions"):
        heatmap_strip(panels, ["only one"])


def test_titles_and_captions_with_newlines_are_drawn_on_one_line():
    panels = [Image.new("RGB", (100, 100), (230, 230, 230))] * 2
    one_line = heatmap_strip(panels, ["'a'  0.1", "'b'  0.2"], panel_width=50, title="first\\nsecond", font_size=12)
    two_lines = heatmap_strip(panels, ["'a'  0.1", "'\n'  0.2"], panel_width=50, title="first\nsecond", font_size=12)
    assert two_lines.size == one_line.size
    title_band = (0, 0, one_line.width, 18 + 8)  # the newline is drawn as the two characters of its escape
    assert np.array_equal(np.asarray(two_lines.crop(title_band)), np.asarray(one_line.crop(title_band)))


def test_query_strip_from_pipeline_results():
    page = ruled_page(400, 200)
    tokens = [
        {"token": " Invoice", "score": 0.6, "similarity": right_half_map(20, 10)},
        {"token": "tal", "score": 0.2, "similarity": right_half_map(20, 10)[:, ::-1].copy()},
    ]
    strip = query_strip(page, tokens, panel_width=100, title="Query: 'Invoice total'")
    assert strip.width == 2 * 100 + 3 * 8
    pixels = np.asarray(strip).astype(int)
    top = strip.height - 8 - (15 + 8) - 50 + 5  # inside the panels' row: 100 x 50 each
    first_right, second_left = pixels[top, 8 + 90], pixels[top, 8 + 108 + 10]
    assert first_right[0] > 150 and first_right[2] < 120  # token 1 is high on the right
    assert second_left[0] > 150 and second_left[2] < 120  # token 2 on the left
    assert (pixels[top, 8 + 10] >= PAPER - 15).all()  # token 1's left half: paper only


def test_result_pictures_colour_only_where_the_mask_is():
    """A token whose map never reaches the threshold is drawn as the bare page (not stretched to its own range and
    painted red); one that does is coloured exactly where its mask is."""
    from tokenocr.processing.visualization_tokenocr import token_visuals

    page = Image.new("RGB", (40, 20), "white")
    weak = np.full((20, 40), -0.1, dtype=np.float32)
    weak[5:10, 5:15] = 0.22
    mask, boxes, heatmap = token_visuals(torch.from_numpy(weak), page.size, 0.41, page)
    assert not mask.any() and boxes == [] and np.array_equal(np.asarray(heatmap), np.asarray(page))
    mask, boxes, heatmap = token_visuals(torch.from_numpy(weak), page.size, 0.1, page)
    coloured = (np.asarray(heatmap) != 255).any(axis=2)
    assert mask.any() and not coloured[~mask].any() and coloured[mask].mean() > 0.5


def _flood_fill_boxes(mask: np.ndarray) -> list[list[int]]:
    """An independent oracle: 8-connected regions by flood fill, their [left, top, right, bottom] boxes, sorted."""
    height, width = mask.shape
    seen, boxes = np.zeros_like(mask), []
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        stack, seen[y, x] = [(y, x)], True
        left, top, right, bottom = x, y, x + 1, y + 1
        while stack:
            cy, cx = stack.pop()
            left, top, right, bottom = min(left, cx), min(top, cy), max(right, cx + 1), max(bottom, cy + 1)
            for ny in (cy - 1, cy, cy + 1):
                for nx in (cx - 1, cx, cx + 1):
                    if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        boxes.append([int(left), int(top), int(right), int(bottom)])
    return sorted(boxes, key=lambda box: (box[1], box[0]))


def test_mask_boxes_equal_a_flood_fill_on_random_masks():
    """Masks with empty rows and columns between regions (what a token's mask on a page looks like), and dense ones."""
    from tokenocr.processing.visualization_tokenocr import mask_to_boxes

    rng = np.random.default_rng(7)
    for _ in range(60):
        mask = rng.random((50, 70)) > rng.uniform(0.5, 0.97)
        mask[rng.integers(0, 50, 12)] = False
        mask[:, rng.integers(0, 70, 6)] = False
        assert mask_to_boxes(mask) == _flood_fill_boxes(mask)
