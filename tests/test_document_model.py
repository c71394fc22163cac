"""
The shipped document model (`models/tokenocr-tiny-documents`): it finds words on held-out real-looking pages (pages
of documents of kinds it never saw in training, with their words' boxes from the PDFs' text layers), it is a complete
model folder, and the README's first command finds a word on the sample page.
"""

import filecmp
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import tokenocr  # noqa: F401  (registers the Auto classes and the task)
from tokenocr.conversion.convert import remote_code_files
from tokenocr.loading import load_pipeline


ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "tokenocr-tiny-documents"
PAGES = ROOT / "tests" / "fixtures" / "documents"


@pytest.fixture(scope="module")
def finder():
    return load_pipeline(str(MODEL))


def peak_in_pixels(finder, result, image) -> tuple[float, float]:
    query_map = torch.as_tensor(result["similarity"])
    y, x = divmod(int(torch.argmax(query_map)), query_map.shape[1])
    scale = finder.processor.map_scale(query_map.shape, (image.height, image.width), True)
    return (x + 0.5) * scale[0], (y + 0.5) * scale[1]


def inside(point, boxes, margin: float = 0.0) -> bool:
    x, y = point
    return any(left - margin <= x < right + margin and top - margin <= y < bottom + margin
               for left, top, right, bottom in boxes)


def test_the_document_model_points_at_held_out_words(finder):
    hits = total = with_box = 0
    for page in json.loads((PAGES / "pages.json").read_text()):
        image = Image.open(PAGES / page["image"]).convert("RGB")
        queries = page["queries"]
        results = finder(image, list(queries), level="query", return_visuals=False)
        for result in results:
            occurrences = queries[result["query"]]
            hits += inside(peak_in_pixels(finder, result, image), occurrences)
            with_box += bool(result["boxes"]) and inside(
                ((result["boxes"][0][0] + result["boxes"][0][2]) / 2, (result["boxes"][0][1] + result["boxes"][0][3]) / 2),
                occurrences, margin=4)
            total += 1
    # The card reports the full held-out set; these 4 pages (32 words) leave room for the sample's spread. The
    # synthetic model points at none of them.
    assert total == 32
    assert hits / total >= 0.65, (hits, total)
    assert with_box / total >= 0.55, (with_box, total)


def test_the_document_model_is_a_model_folder_without_code():
    assert not list(MODEL.glob("*.py"))  # the package's classes run it; `tokenocr export` adds the remote code
    config = json.loads((MODEL / "config.json").read_text())
    assert config["vision_config"]["model_type"] == "resnet" and "auto_map" not in config
    processor = json.loads((MODEL / "preprocessor_config.json").read_text())
    assert processor["do_tiling"] is False and processor["feature_stride"] == 16 and processor["max_side"] >= 1700
    card = (MODEL / "README.md").read_text()
    assert "| word pointing |" in card and "synthetic model" in card
    assert (MODEL / "model.safetensors").stat().st_size < 10_000_000


def _readme_command() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if "tokenocr similarity --model" in line and "&&" in line)
    return shlex.split(line.split("&& tokenocr similarity", 1)[1])


@pytest.mark.slow
def test_the_readmes_first_command_finds_the_word_on_the_sample_page(tmp_path):
    arguments = _readme_command()
    out = arguments.index("--out")
    arguments[out + 1] = str(tmp_path / "results")
    result = subprocess.run([sys.executable, "-m", "tokenocr.cli", "similarity", *arguments], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    words = json.loads((ROOT / "demo" / "examples" / "document_page.words.json").read_text())
    [page] = summary["images"]
    for query in page["queries"]:
        occurrences = [word["box"] for word in words if word["text"] == query["query"]]
        assert occurrences, query["query"]
        left, top, right, bottom = query["boxes"][0]
        assert inside(((left + right) / 2, (top + bottom) / 2), occurrences, margin=4), (query["query"], query["boxes"])
        assert (tmp_path / "results" / query["picture"]).is_file()


@pytest.mark.slow
def test_an_export_loads_with_transformers_alone_and_finds_the_same_boxes(tmp_path):
    from hub_cache import add_to_hub_cache, report_as_hub_user

    from tokenocr.cli import main

    export = tmp_path / "export"
    assert main(["export", str(MODEL), "--output", str(export)]) == 0
    for file in remote_code_files():
        assert filecmp.cmp(file, export / file.name, shallow=False), file.name
    config = json.loads((export / "config.json").read_text())
    assert set(config["auto_map"]) == {"AutoConfig", "AutoModel"} and "token-similarity" in config["custom_pipelines"]
    assert config["_name_or_path"] == "" and (export / "README.md").read_text() == (MODEL / "README.md").read_text()
    page = str(ROOT / "demo" / "examples" / "document_page.png")
    add_to_hub_cache(tmp_path / "cache", "org/TokenOCR-tiny-documents", export)
    report = report_as_hub_user("query_report", ["org/TokenOCR-tiny-documents", page, "February"], tmp_path / "cache",
                                tmp_path)
    assert not report["pipeline_module"].startswith("tokenocr")  # the folder's own code ran
    installed = load_pipeline(str(MODEL))(page, "February", level="query", return_visuals=False)
    assert report["boxes"] == installed["boxes"] and report["score"] == pytest.approx(installed["score"], abs=1e-5)
    assert main(["export", str(MODEL), "--output", str(export)]) == 1  # an existing output needs --force
    assert main(["export", str(MODEL), "--output", str(export), "--force"]) == 0  # an earlier export: replaced
    copy = tmp_path / "copy"
    shutil.copytree(MODEL, copy)  # a model folder export did not make: never replaced, even with --force
    assert main(["export", str(MODEL), "--output", str(copy), "--force"]) == 1
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in MODEL.iterdir())
