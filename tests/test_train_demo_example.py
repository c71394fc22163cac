"""examples/train_demo_model.py runs end to end (at a tiny scale) and never touches a folder it did not make."""

import importlib.util
import json
from pathlib import Path

import pytest
from transformers import AutoImageProcessor, AutoModel

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
    settings = {"TOKENIZER_LINES": 300, "HELDOUT_PAGES": 2, "VALIDATION_PAGES": 2, "BATCH_SIZE": 2}
    for name, value in settings.items():
        monkeypatch.setattr(recipe, name, value)
    example = load_example()
    work, output = tmp_path / "work", tmp_path / "model"
    example.main(["--work", str(work), "--output", str(output), "--pages", "3", "--steps", "2"])
    figures = json.loads((work / "figures.json").read_text())
    assert figures["steps"] == 2 and figures["train_pages"] == 3
    assert figures["trained"]["pages"] == figures["untrained"]["pages"] == 2
    assert 0.0 <= figures["trained"]["pointing_accuracy"] <= 1.0
    assert type(AutoModel.from_pretrained(output)) is TokenOCRModel
    # The threshold chosen on the validation pages travels with the model, and its card states the figures.
    assert AutoImageProcessor.from_pretrained(output).mask_threshold == figures["threshold"]
    card = (output / "README.md").read_text()
    assert "3 synthetic pages" in card and "| pointing accuracy |" in card and "untrained (same seed)" in card
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


@pytest.mark.parametrize("flag", ["--pages", "--steps"])
def test_small_mode_counts_must_be_positive(flag, tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_example().main(["--work", str(tmp_path / "w"), "--output", str(tmp_path / "o"), flag, "0"])
    assert f"{flag} must be a positive integer" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
