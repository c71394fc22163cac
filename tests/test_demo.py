"""The demo, used as a person would: `python demo/app.py` on localhost, driven with gradio_client; network refused."""

import importlib.util
import json
import math
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from optional_deps import require_demo_dependencies

require_demo_dependencies()
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

from demo_server import APP, NETWORK_GUARD, DemoServer  # noqa: E402
from fixture_cases import Case, load_case  # noqa: E402


ROOT = Path(__file__).resolve().parent.parent
SAMPLE_PAGE = ROOT / "hub_cards" / "sample_page.png"


def load_app_module():
    """demo/app.py imported by path, as on a Space (no package needed)."""
    spec = importlib.util.spec_from_file_location("tokenocr_demo_app_under_test", APP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


app_module = load_app_module()
MODEL = str(ROOT / "tests/fixtures/original/tiny_seg/checkpoint")  # random weights: its pipeline output is the reference


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with DemoServer(tmp_path_factory.mktemp("demo"), args=["--model", MODEL]) as running:
        yield running
    assert running.process.returncode is not None


@pytest.fixture(scope="module")
def client(server, tmp_path_factory):
    return Client(server.url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))


def run(client, image=None, pdf=None, page=1, query="Invoice total", threshold=0.2):
    return client.predict(
        handle_file(str(image)) if image else None, handle_file(str(pdf)) if pdf else None, page, query, threshold,
        MODEL, api_name="/run",
    )


def expected_tokens(image, query, level="token"):
    """The pipeline's tokens (or query result) for the same page and query (the demo must agree with it)."""
    from tokenocr import TokenSimilarityPipeline

    model, processor = load_case(Case("tiny_seg"))
    finder = TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity", device="cpu")
    return finder(image, query, level=level)


def test_image_and_query_give_one_heatmap_per_token(client):
    with Image.open(SAMPLE_PAGE) as page:
        page_size = page.size
    gallery, strip, annotated, relevance, table, summary_file, status = run(client, image=SAMPLE_PAGE)
    expected = expected_tokens(str(SAMPLE_PAGE), "Invoice total")
    found = expected_tokens(str(SAMPLE_PAGE), "Invoice total", level="query")
    assert len(gallery) == len(expected) + 1 == 4  # the query's picture first, then one per token
    assert gallery[0]["caption"].startswith("the query")
    for item, token in zip(gallery[1:], expected):
        with Image.open(item["image"]) as heatmap:
            assert heatmap.size == page_size
        assert item["caption"].startswith(f"'{token['token']}'")
        assert item["caption"].endswith(f"{token['score']:.3f}")
    assert isinstance(relevance, float) and math.isfinite(relevance)
    summary = json.loads(Path(summary_file).read_text())
    assert [t["token_id"] for t in summary["tokens"]] == [t["token_id"] for t in expected]
    for reported, token in zip(summary["tokens"], expected):
        assert reported["score"] == pytest.approx(token["score"], abs=1e-4)
        assert reported["boxes"] == token["boxes"]
    assert summary["relevance"] == pytest.approx(found["score"], abs=1e-5)  # the query's score, as the pipeline's
    assert summary["boxes"] == found["boxes"]
    assert relevance == pytest.approx(summary["relevance"], abs=1e-4)
    assert [row[2] for row in table["data"]] == [t["token_id"] for t in expected]
    assert summary["page"] == {"source": "image", "file": "sample_page.png", "page_number": 1, "size": list(page_size)}
    with Image.open(strip) as picture:
        assert picture.width > 3 * 300  # three captioned panels side by side
    with Image.open(annotated["image"]) as view:
        assert view.size == page_size
    first = "boxes of the query" if found["boxes"] else "text mask"
    assert annotated["annotations"][0]["label"].startswith(first)
    assert "vision pass" in status and "cache" not in status


def test_a_new_query_on_the_same_page_reuses_the_vision_pass(client, tmp_path):
    page = tmp_path / "receipt.png"
    page.write_bytes((ROOT / "demo" / "examples" / "receipt.png").read_bytes())
    first = run(client, image=page, query="TOTAL")[-1]
    second = run(client, image=page, query="Thank you", threshold=0.1)[-1]
    assert "reused from the cache" not in first
    assert "reused from the cache" in second


def make_pdf(path: Path, sizes) -> list[Image.Image]:
    pages = [Image.new("RGB", size, (250, 250, 245)) for size in sizes]
    pages[0].save(path, "PDF", resolution=150.0, save_all=True, append_images=pages[1:])
    return pages


def test_a_pdf_page(client, tmp_path):
    pdf = tmp_path / "two-pages.pdf"
    make_pdf(pdf, [(600, 300), (400, 500)])
    gallery, _, _, relevance, _, summary_file, status = run(client, pdf=pdf, page=2, query="Agenda")
    summary = json.loads(Path(summary_file).read_text())
    width, height = summary["page"]["size"]
    assert abs(width - 400) <= 1 and abs(height - 500) <= 1  # rendered at 150 dpi: the page's own pixels
    assert summary["page"]["source"] == "pdf" and summary["page"]["page_number"] == 2
    pictured = [t for t in summary["tokens"] if t["token"].strip()]  # whitespace tokens are not pictured
    assert len(gallery) == len(pictured) + 1 >= 2  # the query's picture, then one per token
    for item in gallery:
        with Image.open(item["image"]) as heatmap:
            assert heatmap.size == (width, height)
    assert "page 2 of two-pages.pdf" in status and math.isfinite(relevance)


def test_errors_are_messages(client, tmp_path):
    pdf = tmp_path / "two-pages.pdf"
    make_pdf(pdf, [(300, 200), (300, 200)])
    damaged = tmp_path / "damaged.pdf"
    damaged.write_bytes(pdf.read_bytes()[:200])
    huge = tmp_path / "huge.pdf"
    Image.new("RGB", (600, 600), "white").save(huge, "PDF", resolution=2.0)  # a 300 x 300 inch page
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("these are not pixels")
    cases = [
        (dict(image=SAMPLE_PAGE, query="   "), "the query is empty"),
        (dict(query="Invoice"), "no page"),
        # The library's page reader's messages, naming the file (never the server's path to it).
        (dict(pdf=damaged), "Cannot read PDF 'damaged.pdf'"),
        (dict(pdf=pdf, page=3), "PDF 'two-pages.pdf' has 2 pages; pages 3-3 were asked for"),
        (dict(pdf=huge), "megapixels"),
        (dict(image=not_an_image), "Cannot read image file 'notes.png'"),
    ]
    for arguments, message in cases:
        with pytest.raises(AppError) as raised:
            run(client, **arguments)
        text = str(raised.value)
        assert message in text, (arguments, text)
        assert "Traceback" not in text and "\n" not in text.strip()


def test_untrained_weights_are_noted_in_the_page(server):
    with urllib.request.urlopen(server.url + "config", timeout=10) as response:
        config = json.load(response)
    notes = [c["props"].get("value", "") for c in config["components"] if c.get("props", {}).get("elem_id") == "model-note"]
    assert notes and "not trained" in notes[0]


def test_no_network_was_used(server, client):
    run(client, image=SAMPLE_PAGE, query="Northwind")
    assert server.refused_connections() == []
    assert server.process.poll() is None  # still serving


def test_network_guard_refuses_and_logs(tmp_path):
    script = tmp_path / "reach_out.py"
    script.write_text("import socket\ntry:\n    socket.create_connection(('huggingface.co', 443), timeout=2)\n"
                      "except OSError as error:\n    print('refused:', error)\n")
    log = tmp_path / "network.log"
    result = subprocess.run([sys.executable, "-c", NETWORK_GUARD, str(log), str(script)], capture_output=True,
                            text=True, timeout=60)
    assert "refused" in result.stdout and log.read_text().split() == ["huggingface.co"]


# --------------------------------------------------------------------------- the module, without a server


def test_importing_the_app_loads_neither_gradio_nor_torch():
    code = ("import importlib.util, sys\n"
            f"spec = importlib.util.spec_from_file_location('app', {str(APP)!r})\n"
            "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
            "print(sorted(m for m in ('gradio', 'torch', 'transformers') if m in sys.modules))\n"
            "import tokenocr.demo.app\n"
            "print('gradio' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("\n")[:2] == ["[]", "False"]


def test_which_models_are_offered(monkeypatch, tmp_path):
    resolve = app_module.resolve_models
    assert resolve(["a/b", "c/d", "a/b"], environ={}) == ["a/b", "c/d"]
    assert resolve(None, environ={app_module.MODEL_ENV: " x/y , z/w "}) == ["x/y", "z/w"]
    assert resolve(None, environ={}) == [app_module.DEFAULT_MODEL]  # the shipped demonstration model, trained
    assert not app_module.is_untrained(app_module.DEFAULT_MODEL) and app_module.is_untrained(MODEL)
    assert app_module.model_threshold(app_module.DEFAULT_MODEL) != app_module.DEFAULT_THRESHOLD  # its own threshold
    assert app_module.model_threshold("org/TokenOCR") == app_module.DEFAULT_THRESHOLD
    models_module = sys.modules[resolve.__module__]  # demo/scoring.py, beside the app
    monkeypatch.setattr(models_module, "DEFAULT_MODEL", str(tmp_path / "absent"))  # as on a Space
    assert resolve(None, environ={}) == list(app_module.HUB_MODELS)
    assert app_module.model_kind("org/TokenOCR") == "hub"
    assert app_module.model_kind(str(ROOT / "tests/fixtures/original/tiny_seg/checkpoint")) == "original"
    with pytest.raises(app_module.DemoError, match="neither a folder nor a hub repo id"):
        app_module.model_kind("no such model")
    assert app_module.main(["--model", "no such model"]) == 1


def test_feature_cache_is_bounded_in_bytes():
    import torch

    def entry(megabytes):
        from tokenocr.processing.processing_tokenocr import PageFeatures

        features = PageFeatures(torch.zeros(megabytes * 2**18), grid_cols_rows=(1, 1), map_size=None, image_size=(1, 1))
        return app_module.CachedPage(page=Image.new("RGB", (1, 1)), features=features)

    cache = app_module.FeatureCache(max_bytes=3 * 2**20)
    cache.put("a", entry(1))
    cache.put("b", entry(1))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", entry(2))  # over budget: b (least recently used) goes, then a
    assert cache.get("b") is None and cache.get("a") is None and cache.get("c") is not None
    cache.put("d", entry(8))  # larger than the budget alone: still kept, as the newest
    assert len(cache) == 1 and cache.get("d") is not None


def test_space_metadata():
    import yaml

    text = (ROOT / "demo" / "README.md").read_text()
    metadata = yaml.safe_load(text.split("---")[1])
    assert metadata["sdk"] == "gradio" and (ROOT / "demo" / metadata["app_file"]).is_file()
    assert metadata["models"] == list(app_module.HUB_MODELS)
    assert metadata["title"] and 0 < len(metadata["short_description"]) <= 60
    requirements = (ROOT / "demo" / "requirements.txt").read_text()
    for package in ("torch", "transformers", "pypdfium2"):
        assert package in requirements
    assert "tokenocr" not in [line.split(">")[0].strip() for line in requirements.splitlines()]


def test_the_app_shares_the_packages_defaults():
    """demo/app.py must also run where `tokenocr` is not installed (a Space), so it keeps its own copies of these."""
    from tokenocr.demo import app
    from tokenocr.processing import settings_tokenocr as settings

    assert app.DEFAULT_THRESHOLD == settings.DEFAULT_THRESHOLD
    assert app.PDF_DPI == settings.DEFAULT_PDF_DPI


@pytest.mark.parametrize("layout", ["original", "converted"])
def test_the_demo_serves_the_r50_variant(layout, tmp_path, converted):
    """Both R50 layouts load, and the demo's maps are the pipeline's (whole-image post-processing, not tiles)."""
    from tokenocr import TokenSimilarityPipeline
    from tokenocr.conversion import load_original

    source = ROOT / "tests/fixtures/original/r50_tiny/checkpoint"
    spec = str(source if layout == "original" else converted("r50_tiny"))
    assert app_module.model_kind(spec) == ("original" if layout == "original" else "folder")
    page = tmp_path / "page.png"
    Image.open(ROOT / "tests/fixtures/original/r50_tiny/inputs/doc_wide.png").save(page)
    demo = app_module.DemoApp([spec], allowed_dirs=[tmp_path])
    try:
        gallery, *_, relevance, table, summary, status = demo.run(str(page), None, 1, "Invoice 12", 0.2, spec)
    finally:
        demo.close()
    assert "whole page" in status
    model, processor = load_original(source)
    tokens = TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity")(str(page), "Invoice 12")
    assert [row[2] for row in table] == [token["token_id"] for token in tokens]
    assert [row[3] for row in table] == pytest.approx([round(token["score"], 4) for token in tokens], abs=2e-4)


def test_only_uploaded_files_are_opened(tmp_path):
    """A request can name any server path; only files in the allowed folders (uploads, examples) are opened, and
    every refusal reads the same, so it tells nothing about what exists."""
    import os

    uploads = tmp_path / "uploads"
    uploads.mkdir()
    Image.open(SAMPLE_PAGE).save(uploads / "page.png")
    secret = tmp_path / "secret.png"
    Image.open(SAMPLE_PAGE).save(secret)
    (uploads / "link.png").symlink_to(secret)
    os.mkfifo(uploads / "fifo.png")
    demo = app_module.DemoApp([MODEL], allowed_dirs=[uploads])
    try:
        messages = set()
        for path in (secret, tmp_path / "absent.png", uploads / "link.png", uploads / "fifo.png", uploads):
            for image, pdf in (({"path": str(path)}, None), (str(path), None), (None, {"path": str(path)})):
                with pytest.raises(app_module.DemoError) as error:
                    demo.run(image, pdf, 1, "Invoice", 0.2, MODEL)
                messages.add(str(error.value))
        assert messages == {"that file was not uploaded to this demo; upload the page again"}
        assert demo.run({"path": str(uploads / "page.png")}, None, 1, "Invoice", 0.2, MODEL)[3] is not None
    finally:
        demo.close()


def test_a_large_page_keeps_display_size_pictures_and_the_pipelines_boxes(tmp_path):
    """What a request keeps per token is bounded by the display size; the boxes stay the pipeline's, in page pixels."""
    page = tmp_path / "large.png"
    Image.open(SAMPLE_PAGE).convert("RGB").resize((3000, 2000)).save(page)
    demo = app_module.DemoApp([MODEL], allowed_dirs=[tmp_path])
    try:
        gallery, _, annotated, _, _, summary_file, _ = demo.run(str(page), None, 1, "Invoice total", 0.2, MODEL)
        reported = json.loads(Path(summary_file).read_text())["tokens"]
    finally:
        demo.close()
    display = app_module._display_size(3000, 2000)
    assert display == (1280, 853)
    assert all(heatmap.size == display for heatmap, _ in gallery) and annotated[0].size == display
    expected = expected_tokens(str(page), "Invoice total")
    assert [t["boxes"] for t in reported] == [t["boxes"] for t in expected]


def test_bad_start_options_are_one_line_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        app_module.main(["--model", MODEL, "--cache-gb", "inf"])
    assert exit_info.value.code == 2 and "expected a finite number of GiB" in capsys.readouterr().err
    assert app_module.main(["--model", MODEL, "--device", "bogus"]) == 1  # before any model loads or server starts
    assert capsys.readouterr().err.strip() == "tokenocr demo: error: --device 'bogus' is not a device; use cpu, cuda, cuda:N or mps"  # the package's check


def test_a_very_wide_page_and_a_query_with_a_newline_are_answered(client, tmp_path):
    wide = tmp_path / "wide.png"
    Image.new("RGB", (17000, 40), "white").save(wide)  # wider than WebP's 16383-pixel limit
    gallery, strip, annotated, *_, status = run(client, image=wide, query="In")
    assert len(gallery) == 2 and "17000 x 40 px" in status
    with Image.open(annotated["image"]) as view:
        assert max(view.size) <= 16383
    gallery, strip, _, _, table, summary_file, _ = run(client, image=SAMPLE_PAGE, query="Invoice\ntotal")
    tokens = [t["token"] for t in json.loads(Path(summary_file).read_text())["tokens"]]
    assert "\n" in tokens and "'\\n'" in [row[1] for row in table["data"]]  # in the table and the summary
    assert "'\\n'" not in [item["caption"].split("  ")[0] for item in gallery]  # whitespace is not pictured
    assert len(gallery) == 1 + sum(1 for token in tokens if token.strip())


@pytest.mark.parametrize("threshold, page, message", [
    (float("nan"), 1, "threshold"), (float("inf"), 1, "threshold"), (-5, 1, "threshold"), ("abc", 1, "threshold"),
    (0.2, 2.7, "page number"), (0.2, float("inf"), "page number"), (0.2, 0, "page number"), (0.2, "x", "page number"),
])
def test_the_demo_refuses_what_the_command_line_refuses(tmp_path, threshold, page, message):
    pdf = tmp_path / "two.pdf"
    make_pdf(pdf, [(300, 200), (300, 200)])
    demo = app_module.DemoApp([MODEL], allowed_dirs=[tmp_path])
    try:
        with pytest.raises(app_module.DemoError, match=message):
            demo.run(None, str(pdf), page, "Invoice", threshold, MODEL)
    finally:
        demo.close()


def test_first_paint_shows_no_relevance_and_the_examples_under_run(server):
    """Before any run the relevance box is empty (not a misleading 0); the examples sit in the input column, right
    under Run, where the first screen shows them; uploads are bounded in size."""
    with urllib.request.urlopen(server.url + "config", timeout=10) as response:
        config = json.load(response)
    by_id = {c["id"]: c for c in config["components"]}
    relevance = [c for c in config["components"] if c.get("props", {}).get("elem_id") == "relevance"]
    assert relevance and relevance[0]["props"].get("value") is None
    assert relevance[0]["props"].get("placeholder") == "shown after Run"
    # Gradio's Number shows an initial None as 0 in the browser; a private load event sets None so it starts empty.
    on_load = [d for d in config["dependencies"] if [0, "load"] in d.get("targets", [])]
    assert any(relevance[0]["id"] in d["outputs"] and d["api_visibility"] == "private" for d in on_load)
    assert "#relevance input::placeholder" in (config.get("css") or "")  # drawn grey, not as a value

    def path_to(node, target, trail=()):
        trail = (*trail, node["id"])
        if node["id"] == target:
            return trail
        for child in node.get("children", []):
            found = path_to(child, target, trail)
            if found:
                return found
        return None

    run_button = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == "run-button")
    examples = next(c["id"] for c in config["components"] if c.get("type") == "dataset")
    run_column = path_to(config["layout"], run_button)[-2]
    assert run_column in path_to(config["layout"], examples)  # same column as Run
    assert by_id[run_column]["type"] == "column"
    assert config.get("max_file_size") == 200 * 1024 * 1024


def test_the_demo_pictures_the_tokens_that_stand_for_text(tmp_path):
    """The document model's character tokenizer puts a space token before a word: it is in the table and the
    summary, but not pictured (it is left out of the query's map too)."""
    examples = ROOT / "demo" / "examples"
    demo = app_module.DemoApp([app_module.DEFAULT_MODEL], allowed_dirs=[examples])
    try:
        gallery, _, _, relevance, table, summary_file, _ = demo.run(
            str(examples / "document_page.png"), None, 1, "February", None, app_module.DEFAULT_MODEL)
        tokens = json.loads(Path(summary_file).read_text())["tokens"]
    finally:
        demo.close()
    assert [t["token"] for t in tokens] == [" ", *"February"] and len(table) == 9
    assert [caption.split("'")[1] for _, caption in gallery[1:]] == list("February")
    assert gallery[0][1].startswith("the query") and math.isfinite(relevance)
