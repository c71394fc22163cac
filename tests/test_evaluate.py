"""Evaluation metrics on crafted maps whose answers are known."""


import json

import numpy as np
import pytest
import torch
from PIL import Image

from tokenocr import TokenOCRImageProcessor, TokenOCRProcessor
from tokenocr.conversion import convert_tokenizer
from tokenocr.training.evaluate import (
    THRESHOLDS,
    choose_queries,
    evaluate_model,
    histogram_auc,
    iou_curve,
    mask_iou,
    pointing_hit,
    precision_at_k,
    precision_recall_f1,
    value_histograms,
)

from fixture_cases import FIXTURES


def test_pointing_hit():
    token_map = np.zeros((4, 5))
    token_map[1, 2] = 0.9
    truth = np.zeros((4, 5), dtype=bool)
    truth[1, 1:3] = True
    assert pointing_hit(token_map, truth)
    truth[1, 2] = False
    assert not pointing_hit(token_map, truth)


def test_mask_iou_and_f1():
    predicted = np.zeros((5, 5), dtype=bool)
    truth = np.zeros((5, 5), dtype=bool)
    predicted[0, :4] = True          # 4 pixels
    truth[0, 1:4] = truth[1, 1:4] = True  # 6 pixels, 3 of them shared
    assert mask_iou(predicted, truth) == pytest.approx(3 / 7)
    assert precision_recall_f1(3, 4, 6) == pytest.approx((0.75, 0.5, 0.6))
    assert precision_recall_f1(0, 0, 6) == (0.0, 0.0, 0.0)
    assert mask_iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def test_map_auc_from_histograms():
    token_map = np.array([[0.5, 0.6, 0.1, 0.55]])
    truth = np.array([[True, True, False, False]])
    # Positive/negative pairs ranked right: (0.5, 0.1), (0.6, 0.1), (0.6, 0.55); wrong: (0.5, 0.55).
    assert histogram_auc(*value_histograms(token_map, truth)) == pytest.approx(0.75)
    tied = np.array([[0.3, 0.3]])
    assert histogram_auc(*value_histograms(tied, np.array([[True, False]]))) == pytest.approx(0.5)
    assert np.isnan(histogram_auc(*value_histograms(tied, np.array([[True, True]]))))  # no negatives


def test_iou_curve_over_thresholds():
    token_map = np.array([[0.3, 0.5, 0.4]])
    truth = np.array([[True, True, False]])
    curve = dict(zip(THRESHOLDS, iou_curve(*value_histograms(token_map, truth))))
    assert curve[0.25] == pytest.approx(2 / 3)   # all three predicted, two of them true
    assert curve[0.35] == pytest.approx(1 / 3)   # 0.5 and 0.4 predicted: one true, union 3
    assert curve[0.45] == pytest.approx(1 / 2)   # only 0.5: one true of two
    assert curve[0.55] == 0.0


def test_precision_at_k():
    scores, relevant = [0.9, 0.1, 0.8, 0.7], [True, True, False, True]
    assert precision_at_k(scores, relevant, 1) == 1.0
    assert precision_at_k(scores, relevant, 2) == 0.5
    assert precision_at_k(scores, relevant, 3) == pytest.approx(2 / 3)


def test_queries_need_k_pages_and_a_page_without_them():
    pages = [{"cat", "dog"}, {"cat", "owl"}, {"cat", "dog", "owl"}]
    assert choose_queries(pages, k=2, count=10) == ["dog", "owl"]  # "cat" is everywhere
    assert choose_queries(pages, k=3, count=10) == []


class CraftedModel(torch.nn.Module):
    """Returns, for token id `i`, the page map `maps[page][i]` cut into the page's 28-pixel tiles (28x28 features)."""

    def __init__(self, maps):
        super().__init__()
        self.maps, self.page, self.calls = maps, 0, 0
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self):
        return self.anchor.device

    def get_similarity(self, pixel_values, input_ids, attention_mask=None, pixel_sizes=None, tiles_per_batch=None):
        self.page, self.calls = self.calls, self.calls + 1  # one call per page (all its tiles)
        tiles = []
        for token_id in input_ids[0].tolist():
            page_map = self.maps[self.page].get(token_id, np.full((28, 56), -1.0))
            tiles.append(np.stack([page_map[:, :28].reshape(-1), page_map[:, 28:].reshape(-1)]))
        return torch.tensor(np.stack(tiles), dtype=torch.float32)[None]  # (1, tokens, tiles, locations)


def page(regions, text):
    mask = np.zeros((28, 56), dtype=np.int64)
    tokens = []
    for index, (token_id, (top, bottom, left, right)) in enumerate(regions, start=1):
        mask[top:bottom, left:right] = index
        tokens.append({"id": token_id, "text": " " if token_id == 3 else f" w{token_id}", "mask_index": index})
    return {"image": Image.new("RGB", (56, 28), "white"), "mask": mask, "tokens": tokens, "text": text}


def test_evaluation_on_crafted_maps():
    tokenizer = convert_tokenizer(FIXTURES / "tiny_seg" / "checkpoint")
    processor = TokenOCRProcessor(image_processor=TokenOCRImageProcessor(size=28, max_tiles=2), tokenizer=tokenizer)
    # Page 0: id 10 once (left tile), id 11 twice (one occurrence per tile), a background box (space, id 3).
    first = page([(10, (2, 6, 2, 10)), (11, (10, 14, 4, 8)), (11, (10, 14, 40, 44)), (3, (20, 24, 20, 24))],
                 "alpha beta")
    second = page([(10, (2, 6, 30, 40))], "gamma")
    perfect = np.where(first["mask"] == 1, 1.0, -1.0)            # id 10: exactly its mask
    wrong = np.full((28, 56), -1.0)
    wrong[0:2, 50:56] = 0.9                                      # id 11: 12 pixels, none of its 32
    wrong[11, 5] = 0.5                                           # a 1-pixel hit below the maximum
    maps = [{10: perfect, 11: wrong}, {10: np.where(second["mask"] == 1, 1.0, -1.0)}]
    result = evaluate_model(CraftedModel(maps), processor, [first, second], threshold=0.2, num_queries=0)
    assert result.tokens == 3 and result.pages == 2  # background boxes are not evaluated
    assert result.pointing_accuracy == pytest.approx(2 / 3)
    iou_wrong = 1 / (12 + 1 + 32 - 1)
    assert result.mean_iou == pytest.approx((1.0 + iou_wrong + 1.0) / 3)
    precision, recall = (32 + 1 + 40) / (32 + 13 + 40), (32 + 1 + 40) / (32 + 32 + 40)
    assert result.precision == pytest.approx(precision) and result.recall == pytest.approx(recall)
    assert result.f1 == pytest.approx(2 * precision * recall / (precision + recall))

    # Threshold-free figures: the perfect maps rank every truth pixel first; the wrong one mostly ties at -1.
    auc_wrong = (1524 + 31 * 0.5 * 1524) / (32 * 1536)
    assert result.map_auc == pytest.approx((1.0 + auc_wrong + 1.0) / 3)
    assert result.best_threshold == 0.0 and result.best_mean_iou == pytest.approx((2.0 + 1 / 44) / 3)
    # No query qualifies on two pages: the figures say why, and JSON has null, not NaN.
    assert result.retrieval_queries == 0 and "no queries (a query word must appear on at least k=5" in result.report()
    figures = result.to_dict()
    assert figures["precision_at_1"] is None and "extra" not in figures
    json.dumps(figures, allow_nan=False)


def test_r50_pages_are_evaluated_on_the_pipelines_maps():
    from tokenocr import TokenSimilarityPipeline
    from tokenocr.conversion import load_original
    from tokenocr.training.evaluate import page_maps

    model, processor = load_original(FIXTURES / "r50_tiny" / "checkpoint")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 130, 3), dtype=np.uint8))
    finder = TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity")
    tokens = finder(image, "Invoice 12", return_visuals=False)
    maps = page_maps(model, processor, image, [token["token_id"] for token in tokens])
    assert maps.shape == (len(tokens), 4 * 3, 4 * 5)  # a whole image of 70 x 130 pixels: a 12 x 20 map
    np.testing.assert_allclose(maps.numpy(), np.stack([token["similarity"] for token in tokens]), atol=1e-5)
    mask = np.zeros((70, 130), dtype=np.int64)
    mask[10:30, 20:60] = 1
    example = {"image": image, "mask": mask, "tokens": [{"id": tokens[1]["token_id"], "text": "x", "mask_index": 1}]}
    result = evaluate_model(model, processor, [example], num_queries=0)
    assert result.tokens == 1 and 0.0 <= result.map_auc <= 1.0
