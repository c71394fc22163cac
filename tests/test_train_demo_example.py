"""examples/train_demo_model.py runs end to end (at a tiny scale) and never touches a folder it did not make."""

import importlib.util
import json
from pathlib import Path

import pytest
from transformers import AutoModel

import tokenocr  # noqa: F401  (registers the Auto classes)
from tokenocr import TokenOCRModel
from tokenocr.training import recipe


EXAMPLE = Path(__file__).parents[1] / "examples" / "train_demo_model.py"


def load_example():
    spec = importlib.util.spec_from_file_location("train_demo_model", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_recipe_runs_end_to_end_at_a_tiny_scale(tmp_path, monkeypatch):
    for name, value in {"TOKENIZER_LINES": 300, "TRAIN_PAGES": 4, "HELDOUT_PAGES": 2, "MAX_STEPS": 2, "BATCH_SIZE": 2}.items():
        monkeypatch.setattr(recipe, name, value)
    example = load_example()
    work, output = tmp_path / "work", tmp_path / "model"
    example.main(["--work", str(work), "--output", str(output)])
    figures = json.loads((work / "figures.json").read_text())
    assert figures["trained"]["pages"] == figures["untrained"]["pages"] == 2
    assert 0.0 <= figures["trained"]["pointing_accuracy"] <= 1.0
    assert type(AutoModel.from_pretrained(output)) is TokenOCRModel
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "work"]  # no temporary folder left

    before = sorted(p.name for p in output.iterdir())
    with pytest.raises(SystemExit, match="already exists"):
        example.main(["--work", str(work), "--output", str(output)])
    assert sorted(p.name for p in output.iterdir()) == before
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit, match="was not made by this script"):
        example.main(["--work", str(mine), "--output", str(tmp_path / "other")])
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and not (tmp_path / "other").exists()
