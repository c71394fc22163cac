"""Tokenizer conversion and TokenOCRProcessor: query ids, SentencePiece equality, stitching."""

import numpy as np
import pytest
import sentencepiece as spm
import torch

from tokenocr.conversion import convert_tokenizer
from tokenocr.processing import prepare_query, stitch_tiles

from fixture_cases import load_case


CORPUS = [
    "Invoice",
    " Invoice",
    "they are not",
    "  two  leading and inner spaces  ",
    "tab\tseparated\tvalues",
    "line one\nline two\r\nline three",
    "mixed \t\n whitespace   at the end   ",
    "11/12/2020",
    "$1,234.56",
    "0123456789 9876543210",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "café naïve résumé Ångström",
    "ÆØÅ æøå ß ł ğ ş",
    "中文文本 测试 日本語 한국어",
    "emoji 😀👍🏽 🇳🇴",
    "ﬁ ligature and \u00a0non-breaking\u200bzero-width",
    "x",
    " ",
    "",
]


def test_fast_tokenizer_equals_sentencepiece(case):
    tokenizer = convert_tokenizer(case.checkpoint)
    reference = spm.SentencePieceProcessor(model_file=str(case.checkpoint / "tokenizer.model"))
    for text in CORPUS + case.queries + [prepare_query(q) for q in case.queries]:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == reference.encode(text), repr(text)
        # Like the original InternLM2Tokenizer, plain calls start with BOS.
        assert tokenizer(text)["input_ids"] == [reference.bos_id()] + reference.encode(text), repr(text)


def test_query_ids_equal_original(case):
    _, processor = load_case(case)
    for query in case.queries:
        ids = processor(text=query)["input_ids"]
        assert ids == case.manifest["query_input_ids"][query], query
        assert processor.query_tokens(ids) == case.manifest["query_tokens"][query], query


def test_query_rule():
    assert prepare_query("Invoice") == " Invoice"
    assert prepare_query("11/12") == "11/12"
    assert prepare_query("$5") == "$5"
    assert prepare_query("(a)") == "(a)"
    # The original's list of characters leaves out [ \ ] and the backtick.
    assert prepare_query("[a]") == " [a]"
    assert prepare_query("`a`") == " `a`"


@pytest.mark.parametrize("query", ["", " ", "\t\n", "   \u3000"])
def test_empty_or_whitespace_query_is_value_error(case, query):
    _, processor = load_case(case)
    with pytest.raises(ValueError, match="non-whitespace"):
        processor(text=query)
    with pytest.raises(ValueError, match="non-whitespace"):
        processor(text=["fine", query])


def test_several_queries_are_padded(case):
    _, processor = load_case(case)
    out = processor(text=case.queries, return_tensors="pt")
    pad_id = processor.tokenizer.pad_token_id
    assert pad_id == 2
    for row, query in enumerate(case.queries):
        ids = case.manifest["query_input_ids"][query]
        length = len(ids)
        assert out["input_ids"][row, :length].tolist() == ids
        assert out["attention_mask"][row].tolist() == [1] * length + [0] * (out["input_ids"].shape[1] - length)
        assert (out["input_ids"][row, length:] == pad_id).all()


def test_images_and_text_together(case):
    _, processor = load_case(case)
    out = processor(images=str(case.image_path("doc_wide.png")), text="Invoice", return_tensors="pt")
    assert set(out) == {"input_ids", "attention_mask", "pixel_values", "grid_cols_rows", "num_tiles", "image_sizes"}
    assert out["input_ids"][0].tolist() == case.manifest["query_input_ids"]["Invoice"]
    np.testing.assert_allclose(out["pixel_values"].numpy(), case.expected("doc_wide.png")["pixel_values"], atol=1e-5)


def test_stitch_places_tiles_row_major_and_drops_thumbnail():
    side = 2
    # 3 columns x 2 rows + thumbnail; tile k holds the value k everywhere.
    tiles = torch.arange(7, dtype=torch.float32)[:, None].repeat(1, side * side)
    stitched = stitch_tiles(tiles, (3, 2))
    assert stitched.shape == (2 * side, 3 * side)
    expected = np.kron(np.array([[0, 1, 2], [3, 4, 5]]), np.ones((side, side)))
    np.testing.assert_array_equal(stitched.numpy(), expected)
    # Locations inside a tile keep their row-major order.
    tile = torch.arange(4, dtype=torch.float32)[None, :]
    assert stitch_tiles(tile, (1, 1)).tolist() == [[0.0, 1.0], [2.0, 3.0]]


def test_post_process_splits_several_images(case):
    _, processor = load_case(case)
    similarity = torch.randn(1, 2, 7 + 1, 9)  # image A: 3x2 grid + thumbnail; image B: single tile
    maps = processor.post_process_similarity(similarity, [[3, 2], [1, 1]], [7, 1])
    assert [m.shape for m in maps] == [(1, 2, 6, 9), (1, 2, 3, 3)]
    torch.testing.assert_close(maps[1], similarity[:, :, 7].reshape(1, 2, 3, 3))
    with pytest.raises(ValueError, match="add up"):
        processor.post_process_similarity(similarity, [[3, 2], [1, 1]], [7, 2])
