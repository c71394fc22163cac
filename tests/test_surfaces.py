"""
Every surface gives the same answer for the same page and query: the pipeline, `tokenocr similarity` (its
summary and mask PNGs), `tokenocr search` (its line), the demo (its summary) and evaluation (its maps and masks).
They all score through `TokenOCRModel.get_similarity` and post-process through the processor; this test would catch
a surface that drifted onto its own path. The demonstration model on its sample page, so the maps are not noise.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tokenocr.cli import main

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "tokenocr-tiny-synthetic"
PAGE = ROOT / "demo" / "examples" / "synthetic_page.png"
QUERY = "2024"


@pytest.fixture(scope="module")
def reference():
    """The pipeline's tokens (with masks) for QUERY on PAGE, the model, its processor and threshold."""
    from tokenocr.loading import load_pipeline

    finder = load_pipeline(str(MODEL))
    tokens = finder(str(PAGE), QUERY)
    return finder, tokens


def assert_same_tokens(reported: list[dict], tokens: list[dict]) -> None:
    assert [t["token_id"] for t in reported] == [t["token_id"] for t in tokens]
    for got, expected in zip(reported, tokens):
        assert got["score"] == pytest.approx(expected["score"], abs=1e-5)
        assert got["boxes"] == expected["boxes"]


def test_the_maps_are_not_noise(reference):
    _, tokens = reference
    assert min(token["score"] for token in tokens) > 0.5 and all(token["boxes"] for token in tokens)


def test_cli_summary_and_masks_equal_the_pipeline(reference, tmp_path):
    from tokenocr.processing import relevance_score

    _, tokens = reference
    assert main(["similarity", "--model", str(MODEL), "--image", str(PAGE), "--query", QUERY,
                 "--out", str(tmp_path / "out")]) == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    (query,) = summary["images"][0]["queries"]
    assert query["relevance"] == pytest.approx(relevance_score(tokens), abs=1e-6)
    assert_same_tokens(query["tokens"], tokens)
    for written, token in zip(query["tokens"], tokens):
        mask = np.asarray(Image.open(tmp_path / "out" / written["mask"])) > 0
        np.testing.assert_array_equal(mask, token["mask"])


def test_search_line_equals_the_pipeline(reference, tmp_path):
    from tokenocr.processing import relevance_score

    _, tokens = reference
    out = tmp_path / "r.jsonl"
    assert main(["search", "--model", str(MODEL), "--images", str(PAGE), "--query", QUERY, "--out", str(out)]) == 0
    (line,) = [json.loads(raw) for raw in out.read_text(encoding="utf-8").splitlines()]
    assert line["relevance"] == pytest.approx(relevance_score(tokens), abs=1e-6)
    assert_same_tokens(line["tokens"], tokens)


def test_demo_summary_equals_the_pipeline(reference):
    from tokenocr.processing import relevance_score

    _, tokens = reference
    spec = importlib.util.spec_from_file_location("tokenocr_demo_app_for_surfaces", ROOT / "demo" / "app.py")
    app_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app_module)
    app = app_module.DemoApp([str(MODEL)], allowed_dirs=[PAGE.parent])
    try:
        outputs = app.run({"path": str(PAGE)}, None, 1, QUERY, None, None)
        summary = json.loads(Path(outputs[5]).read_text(encoding="utf-8"))
    finally:
        app.close()
    assert summary["relevance"] == pytest.approx(relevance_score(tokens), abs=1e-5)
    assert_same_tokens(summary["tokens"], tokens)


def test_evaluation_maps_and_masks_equal_the_pipeline(reference):
    from tokenocr.training.evaluate import page_maps, resize_maps

    finder, tokens = reference
    page = Image.open(PAGE).convert("RGB")
    maps = page_maps(finder.model, finder.processor, page, [token["token_id"] for token in tokens])
    np.testing.assert_allclose(maps.numpy(), np.stack([token["similarity"] for token in tokens]), atol=1e-5, rtol=0)
    threshold = finder.processor.image_processor.mask_threshold
    masks = resize_maps(maps, page.height, page.width) > threshold
    np.testing.assert_array_equal(masks, np.stack([token["mask"] for token in tokens]))
