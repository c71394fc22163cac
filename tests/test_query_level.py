"""The query level: one map, score and boxes per query, from its tokens' maps standing side by side."""

import numpy as np
import pytest
import torch

from tokenocr.processing.query_tokenocr import query_boxes, query_similarity, token_layout


def _line_maps(line: str, top: int, pitch: int, height: int = 40, width: int = 120, letters=None):
    """Character maps of a page holding `line` on rows `top..top+3`, one character every `pitch` locations: each
    character's map is 0.9 on its own cell and 0.1 elsewhere (a perfect character model)."""
    letters = letters or sorted(set(line.replace(" ", "")))
    maps = {letter: torch.full((height, width), 0.1) for letter in letters}
    for column, char in enumerate(line):
        if char != " ":
            maps[char][top : top + 4, 2 + column * pitch : 2 + (column + 1) * pitch] = 0.9
    return maps


def test_layout_skips_whitespace_tokens_and_counts_word_gaps():
    assert token_layout([" ", "c", "a", "b"]) == [(1, 0.5, 1.0), (2, 1.5, 1.0), (3, 2.5, 1.0)]
    assert token_layout([" due", " date"]) == [(0, 1.5, 3.0), (1, 6.0, 4.0)]


@pytest.mark.parametrize("pitch", [1, 2, 3, 5])
def test_a_word_is_found_where_all_its_letters_stand_side_by_side(pitch):
    # "abc" holds the letters of "cab" too, but only the second word has them in that order.
    maps = _line_maps("abc cab", top=10, pitch=pitch)
    texts = [" ", "c", "a", "b"]
    stack = torch.stack([maps["a"]] + [maps[t] for t in texts[1:]])  # the space token's map is any map
    query_map, pitch_map = query_similarity(stack, texts)
    y, x = divmod(int(torch.argmax(query_map)), query_map.shape[1])
    word_left, word_right = 2 + 4 * pitch, 2 + 7 * pitch
    assert 10 <= y < 14 and word_left <= x < word_right
    assert 0.8 < float(query_map.max()) <= 0.9  # the letters' similarity, less a small spacing penalty
    # Each letter alone peaks on the first word as well: the token level cannot tell them apart.
    assert float(maps["a"][:, 2 : 2 + 3 * pitch].max()) == pytest.approx(0.9)
    boxes, scores = query_boxes(query_map, pitch_map, stack, texts, 0.5, (4.0, 4.0), (480, 160))
    left, top, right, bottom = boxes[0]
    assert abs(left - word_left * 4) <= 4 * pitch and abs(right - word_right * 4) <= 4 * pitch
    assert 10 * 4 - 4 <= top and bottom <= 14 * 4 + 4
    assert scores[0] == pytest.approx(float(query_map.max()))


def test_every_occurrence_gets_a_box_best_first_and_a_missing_word_none():
    maps = _line_maps("cab xx cab", top=5, pitch=2) | {}
    lower = _line_maps("cab", top=25, pitch=2, letters=["a", "b", "c", "x"])
    stack = torch.stack([torch.maximum(maps[t], lower[t]) for t in "cab"])
    stack[:, 25:29] *= 0.8  # the lower line is fainter
    query_map, pitch_map = query_similarity(stack, list("cab"))
    boxes, scores = query_boxes(query_map, pitch_map, stack, list("cab"), 0.5, (1.0, 1.0), (120, 40))
    assert len(boxes) == 3 and scores == sorted(scores, reverse=True)
    assert boxes[-1][1] >= 24  # the faint line's box comes last
    absent = torch.full((3, 40, 120), 0.1)
    query_map, pitch_map = query_similarity(absent, list("cab"))
    assert query_boxes(query_map, pitch_map, absent, list("cab"), 0.5, (1.0, 1.0), (120, 40)) == ([], [])


def test_one_token_queries_are_that_token_and_shapes_are_checked():
    single = torch.rand(1, 8, 9)
    query_map, _ = query_similarity(single, [" Invoice"])
    assert torch.equal(query_map, single[0])
    with pytest.raises(ValueError, match="one"):
        query_similarity(torch.rand(2, 8, 9), ["a"])
    with pytest.raises(ValueError, match="combination"):
        query_similarity(torch.rand(2, 8, 9), ["a", "b"], combination="max")
    assert query_similarity(np.zeros((2, 8, 9), dtype=np.float32), ["a", "b"])[0].shape == (8, 9)


def test_the_pipeline_and_the_processor_give_one_result_per_query():
    from fixture_cases import Case, load_case
    from PIL import Image

    from tokenocr import TokenSimilarityPipeline

    case = Case("tiny_seg")
    model, processor = load_case(case)
    finder = TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity", device="cpu")
    path = str(case.image_path(case.images[0]))
    image = Image.open(path)
    tokens = finder(path, ["Invoice", "total 12"])
    found = finder(path, ["Invoice", "total 12"], level="query")
    assert [result["query"] for result in found] == ["Invoice", "total 12"]
    for result, token_list in zip(found, tokens):
        assert [t["token_id"] for t in result["tokens"]] == [t["token_id"] for t in token_list]
        assert result["similarity"].shape == token_list[0]["similarity"].shape
        assert result["score"] == pytest.approx(float(result["similarity"].max()))
        assert len(result["boxes"]) == len(result["box_scores"])
        assert all(0 <= left < right <= image.width and 0 <= top < bottom <= image.height
                   for left, top, right, bottom in result["boxes"])
        assert result["heatmap"].size == image.size and result["mask"].shape == (image.height, image.width)
    single = finder(path, "Invoice", level="query", return_visuals=False)
    assert isinstance(single, dict) and "heatmap" not in single
    with pytest.raises(ValueError, match="level"):
        finder(path, "Invoice", level="word")
    # The processor's post-processing takes the images as a path or a single PIL image, not only a list.
    inputs = processor(images=path, text="Invoice", return_tensors="pt")
    with torch.no_grad():
        similarity = model.get_similarity(inputs["pixel_values"], inputs["input_ids"])
    for images in (path, image, [image]):
        [[result]] = processor.post_process_token_similarity(
            similarity, inputs["input_ids"], inputs["grid_cols_rows"], inputs["image_sizes"], inputs["num_tiles"],
            images=images, level="query", queries=["Invoice"])
        assert result["query"] == "Invoice" and result["heatmap"].size == image.size


def test_a_character_cut_into_byte_tokens_takes_no_gap():
    """A byte-fallback tokenizer shows the bytes before a character's last as '' (the last one shows the character):
    they stand for no text, so the tokens after them keep their places."""
    from tokenocr.processing.query_tokenocr import token_layout

    assert token_layout([" ", "a", "", "€", "b"]) == [(1, 0.5, 1.0), (3, 1.5, 1.0), (4, 2.5, 1.0)]
    assert token_layout(["5", "", "", "€"]) == [(0, 0.5, 1.0), (3, 1.5, 1.0)]  # as "5€": no space between
