"""
The shipped demonstration model (`models/tokenocr-tiny-synthetic`): it finds text on held-out synthetic pages, it is
a model folder without code (the package's classes run it; `tokenocr export` makes it hub-ready).
"""

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoImageProcessor

import tokenocr  # noqa: F401  (registers the Auto classes)
from tokenocr.loading import load_model_and_processor
from tokenocr.training import recipe
from tokenocr.training.evaluate import evaluate_model
from tokenocr.training.synthetic import SyntheticPageGenerator
from tokenocr.training.words import split_words


ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "models" / "tokenocr-tiny-synthetic"


@pytest.fixture(scope="module")
def demo():
    return load_model_and_processor(str(DEMO_MODEL))


def heldout_pages(tokenizer, count: int) -> list[dict]:
    """Pages of the recipe's held-out seed and words, in the training style (the built-in font: no font files)."""
    generator = SyntheticPageGenerator(tokenizer, words=split_words()[1], style=recipe.demo_style(),
                                       seed=recipe.HELDOUT_SEED)
    pages = []
    for index in range(count):
        image, mask, tokens, text = generator.render(index)
        pages.append({"image": image, "mask": mask, "tokens": tokens, "text": text})
    return pages


def test_the_demo_model_finds_held_out_words(demo):
    model, processor = demo
    result = evaluate_model(model, processor, heldout_pages(processor.tokenizer, 12), num_queries=0)
    # The card reports the full 200-page figures; on 12 pages the bounds leave room for the sample's spread. A model
    # with random weights scores about 0.03 and 0.01 here.
    assert result.tokens > 100
    assert result.pointing_accuracy >= 0.8, result.report()
    assert result.mean_iou >= 0.45, result.report()
    assert result.threshold == processor.image_processor.mask_threshold != 0.2  # its own, chosen on validation pages


def test_the_demo_model_is_a_model_folder_without_code():
    assert not list(DEMO_MODEL.glob("*.py"))  # the package's classes run it; `tokenocr export` adds the remote code
    config = json.loads((DEMO_MODEL / "config.json").read_text())
    assert "auto_map" not in config and "custom_pipelines" not in config
    assert AutoImageProcessor.from_pretrained(DEMO_MODEL).mask_threshold > 0
    card = (DEMO_MODEL / "README.md").read_text()
    assert "| pointing accuracy |" in card and "untrained (same seed)" in card
    assert (DEMO_MODEL / "model.safetensors").stat().st_size < 8_000_000

