"""pipeline("token-similarity") and the `tokenocr similarity` command, against the original's similarity maps."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline

import tokenocr  # noqa: F401  (registers the task)
from tokenocr import TokenSimilarityPipeline
from tokenocr.processing import mask_to_boxes, relevance_score
from tokenocr.processing.pipeline_tokenocr import token_visuals
from tokenocr.processing.settings_tokenocr import MAX_VISUAL_SIDE

from fixture_cases import Case, load_case

SAMPLE = Path(__file__).resolve().parent.parent / "hub_cards" / "sample_page.png"


def make_pipeline(case):
    model, processor = load_case(case)
    return TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity", device="cpu")


def test_every_token_map_equals_original(case):
    finder = make_pipeline(case)
    for image in case.images:
        expected = case.expected(image)
        results = finder(str(case.image_path(image)), case.queries)
        assert len(results) == len(case.queries)
        with Image.open(case.image_path(image)) as pil:
            size = pil.size
        for index, (query, tokens) in enumerate(zip(case.queries, results)):
            reference = expected[f"similarity_q{index}"]
            assert [t["token_id"] for t in tokens] == case.manifest["query_input_ids"][query]
            assert [t["token"] for t in tokens] == case.manifest["query_tokens"][query]
            for token, token_map in zip(tokens, reference):
                assert token["similarity"].dtype == np.float32
                np.testing.assert_allclose(token["similarity"], token_map, atol=1e-4, rtol=0, err_msg=f"{image} {query}")
                assert token["score"] == pytest.approx(float(token_map.max()), abs=1e-4)
                assert token["heatmap"].size == size and token["heatmap"].mode == "RGB"
                assert token["mask"].shape == (size[1], size[0]) and token["mask"].dtype == bool


def test_output_nesting(case):
    finder = make_pipeline(case)
    one, two = str(case.image_path("single_tile.png")), str(case.image_path("doc_wide.png"))
    single = finder(one, "Invoice")
    assert isinstance(single, list) and isinstance(single[0], dict)
    several_queries = finder(one, ["Invoice", "x"])
    assert [len(q) for q in several_queries] == [len(single), len(case.manifest["query_input_ids"]["x"])]
    several_images = finder([one, two], "Invoice")
    assert len(several_images) == 2 and isinstance(several_images[1][0], dict)
    both = finder([one, two], ["Invoice", "x"])
    assert len(both) == 2 and len(both[0]) == 2 and isinstance(both[0][1][0], dict)
    # Tiles of several images are batched together; results equal those of each image alone.
    np.testing.assert_allclose(both[1][0][0]["similarity"], finder(two, "Invoice")[0]["similarity"], atol=1e-6)


def test_top_k_ranks_images_by_relevance(case):
    finder = make_pipeline(case)
    paths = [str(case.image_path(image)) for image in case.images]
    everything = finder(paths, "Invoice")
    relevance = [relevance_score(tokens) for tokens in everything]
    ranked = finder(paths, "Invoice", top_k=2)
    assert [entry["image_index"] for entry in ranked] == list(np.argsort(relevance)[::-1][:2])
    assert ranked[0]["relevance"] == pytest.approx(max(relevance))
    # relevance = the best of the query's map, made from the original's token maps where the tokens stand side by side
    from tokenocr.processing.query_tokenocr import query_similarity

    best = ranked[0]["image_index"]
    expected = case.expected(case.images[best])["similarity_q1"]
    texts = [token["token"] for token in everything[best]]
    assert ranked[0]["relevance"] == pytest.approx(float(query_similarity(expected, texts)[0].max()), abs=1e-4)
    queried = finder(paths, "Invoice", top_k=2, level="query")
    assert [entry["image_index"] for entry in queried] == [entry["image_index"] for entry in ranked]
    assert queried[0]["query"]["score"] == pytest.approx(ranked[0]["relevance"])


def test_vision_tower_runs_once_per_tile_whatever_the_queries(case):
    finder = make_pipeline(case)
    model = finder.model
    calls = []
    hook = model.vision_tower.embeddings.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    try:
        path = str(case.image_path("doc_tall.png"))
        grid_tiles = int(np.prod(case.manifest["images"]["doc_tall.png"]["grid_cols_rows"]))
        finder(path, case.queries[:1], batch_size=64)
        assert calls == [grid_tiles]  # one forward, thumbnail not computed
        calls.clear()
        finder(path, case.queries, batch_size=64)
        assert calls == [grid_tiles]  # six queries: still one forward over the same tiles
        calls.clear()
        finder(path, case.queries, batch_size=5)
        assert sum(calls) == grid_tiles and max(calls) <= 5
    finally:
        hook.remove()


def test_mask_and_boxes_on_a_known_map():
    """A crafted stitched map: two separate blobs and a diagonal pair that 8-connectivity joins."""
    mask = np.zeros((10, 12), dtype=bool)
    mask[1:3, 1:4] = True  # blob A: rows 1-2, cols 1-3
    mask[6:9, 8:11] = True  # blob B: rows 6-8, cols 8-10
    mask[4, 5] = mask[5, 6] = True  # touch at a corner only
    assert mask_to_boxes(mask) == [[1, 1, 4, 3], [5, 4, 7, 6], [8, 6, 11, 9]]
    assert mask_to_boxes(np.zeros((3, 3), bool)) == []
    assert mask_to_boxes(np.ones((2, 5), bool)) == [[0, 0, 5, 2]]
    u_shape = np.array([[1, 0, 1], [1, 0, 1], [1, 1, 1]], dtype=bool)  # joined only at the bottom row
    assert mask_to_boxes(u_shape) == [[0, 0, 3, 3]]


def test_mask_and_boxes_in_image_coordinates(case):
    """A token map that is high on one known tile region must give a box at that place on the original image."""
    side = case.manifest["images"]["single_tile.png"]["feature_side"]
    token_map = torch.full((side, side), -0.5)
    token_map[: side // 2, side // 2 :] = 0.9  # top-right quarter of the map
    mask, boxes, heatmap = token_visuals(token_map, (200, 100), 0.2, Image.new("RGB", (200, 100), "white"))
    assert mask.shape == (100, 200) and heatmap.size == (200, 100)
    assert mask[:40, 110:].all() and not mask[60:, :].any() and not mask[:, :90].any()
    (left, top, right, bottom), = boxes
    assert abs(left - 100) <= 8 and top == 0 and right == 200 and abs(bottom - 50) <= 4


def test_large_images_get_visuals_at_a_bounded_size_and_boxes_in_their_own_pixels():
    side = 32
    token_map = torch.full((side, side), -0.5)
    token_map[: side // 2, side // 2 :] = 0.9
    width, height = 3 * MAX_VISUAL_SIDE, MAX_VISUAL_SIDE  # 12288 x 4096: visuals at 4096 x 1365
    mask, boxes, heatmap = token_visuals(token_map, (width, height), 0.2)
    assert mask.shape == (round(height / 3), MAX_VISUAL_SIDE) and heatmap is None
    (left, top, right, bottom), = boxes
    assert abs(left - width / 2) <= 3 * 8 and top == 0 and right == width and abs(bottom - height / 2) <= 3 * 4


def test_registered_task_loads_a_saved_folder(case, tmp_path):
    model, processor = load_case(case)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    finder = pipeline("token-similarity", model=str(tmp_path))
    assert isinstance(finder, TokenSimilarityPipeline)
    tokens = finder(str(case.image_path("single_tile.png")), case.queries[1])
    np.testing.assert_allclose(tokens[0]["similarity"], case.expected("single_tile.png")["similarity_q1"][0], atol=1e-4)


@pytest.mark.parametrize("query", ["", "   ", "\n\t"])
def test_empty_query_is_value_error(case, query):
    with pytest.raises(ValueError, match="non-whitespace"):
        make_pipeline(case)(str(case.image_path("single_tile.png")), query)


def test_bad_images_are_named(case, tmp_path):
    finder = make_pipeline(case)
    with pytest.raises(FileNotFoundError, match="nope.png"):
        finder(str(tmp_path / "nope.png"), "x")
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        finder(str(broken), "x")
    with pytest.raises(ValueError, match="zero size"):
        finder(np.zeros((0, 4, 3), dtype=np.uint8), "x")
    good = np.full((40, 60, 3), 255, dtype=np.uint8)
    with pytest.raises(ValueError, match=r"^images\[2\] has zero size"):  # its own place in the list, not 0
        finder([good, good, np.zeros((0, 4, 3), dtype=np.uint8)], "x")


def test_unknown_pieces_fall_back_to_bytes(case):
    import sentencepiece as spm

    finder = make_pipeline(case)
    query = "ꙮ😀"  # neither character is in the vocabulary
    tokens = finder(str(case.image_path("single_tile.png")), query)
    reference = spm.SentencePieceProcessor(model_file=str(case.checkpoint / "tokenizer.model"))
    ids = [t["token_id"] for t in tokens]
    assert ids == reference.encode(" " + query)
    byte_ids = [i for i in ids if reference.id_to_piece(i).startswith("<0x")]
    assert len(byte_ids) == len(query.encode("utf-8"))  # 3 + 4 UTF-8 bytes
    assert all(np.isfinite(t["similarity"]).all() for t in tokens)


def test_inputs_are_not_modified(case):
    finder = make_pipeline(case)
    with Image.open(case.image_path("rgba_label.png")) as pil:
        image = pil.copy()
    array = np.asarray(Image.open(case.image_path("gray_scan.png"))).copy()
    queries = ["Invoice", "x"]
    before = (image.mode, image.size, image.tobytes(), array.copy(), list(queries))
    finder([image, array], queries)
    assert (image.mode, image.size, image.tobytes()) == before[:3]
    np.testing.assert_array_equal(array, before[3])
    assert queries == before[4]


@pytest.mark.parametrize("queries, error", [({"Invoice": 1}, TypeError), (7, TypeError), (["ok", 3], TypeError),
                                            ([], ValueError), ("word " * 400, ValueError)])
def test_bad_queries_are_named_errors(case, queries, error):
    with pytest.raises(error, match="quer"):
        make_pipeline(case)(str(case.image_path("single_tile.png")), queries)


@pytest.mark.parametrize("threshold", [float("nan"), 1.5, -3])
def test_bad_thresholds_are_value_errors(case, threshold):
    with pytest.raises(ValueError, match="threshold"):
        make_pipeline(case)(str(case.image_path("single_tile.png")), "x", threshold=threshold)


# ------------------------------------------------------------------------------------- collections, PDFs


def test_a_generator_streams_in_order_without_holding_earlier_images(case):
    """50 images from a generator: results come back in input order and earlier images are let go."""
    import gc
    import weakref

    finder = make_pipeline(case)
    base = Image.open(case.image_path("single_tile.png")).convert("RGB")
    alive, shades = [], list(range(0, 250, 5))

    def make(shade):
        image = Image.new("RGB", base.size, (shade, shade, shade))
        image.paste(base.crop((0, 0, base.width // 2, base.height)))
        return image

    def images():
        for shade in shades:
            image = make(shade)
            alive.append(weakref.ref(image))
            yield image

    results = finder(images(), "Invoice", return_visuals=False)
    assert not isinstance(results, list)
    reference = finder(make(shades[7]), "Invoice", return_visuals=False)
    for index, tokens in enumerate(results):
        if index == 7:  # in order: the eighth result belongs to the eighth image
            np.testing.assert_allclose(tokens[0]["similarity"], reference[0]["similarity"], atol=1e-5)
        if index == 40:
            gc.collect()
            # Nothing held from early images (transformers' Pipeline keeps the first item of a generator, which it
            # peeks at to tell chats from other inputs: one image, whatever the number).
            assert [i for i, ref in enumerate(alive[:30]) if ref() is not None] in ([], [0])
    assert index == len(shades) - 1


def test_a_dataset_and_batch_size_given_at_construction():
    from transformers.pipelines.pt_utils import KeyDataset

    case = Case("tiny_seg")
    model, processor = load_case(case)
    paths = [str(case.image_path(image)) for image in case.images]
    rows = [{"image": path, "label": index} for index, path in enumerate(paths)]
    sizes = []
    hook = model.vision_tower.embeddings.register_forward_hook(lambda module, args, out: sizes.append(args[0].shape[0]))
    try:
        finder = TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity", batch_size=3)
        streamed = list(finder(KeyDataset(rows, "image"), "x", return_visuals=False))
    finally:
        hook.remove()
    tiles = sum(int(np.prod(case.manifest["images"][image]["grid_cols_rows"])) for image in case.images)
    assert sum(sizes) == tiles and max(sizes) == 3 and sizes.count(3) == tiles // 3  # tiles of consecutive images share
    query_index = case.queries.index("x")
    for image, tokens in zip(case.images, streamed):
        np.testing.assert_allclose(tokens[0]["similarity"], case.expected(image)[f"similarity_q{query_index}"][0], atol=1e-4)


def test_visuals_only_on_demand(case):
    finder = make_pipeline(case)
    lean = finder(str(case.image_path("doc_wide.png")), "Invoice", return_visuals=False)
    full = finder(str(case.image_path("doc_wide.png")), "Invoice")
    assert all("heatmap" not in t and "mask" not in t for t in lean)
    for a, b in zip(lean, full):
        assert a["boxes"] == b["boxes"] and a["score"] == b["score"] and {"heatmap", "mask"} <= set(b)


def make_pdf(path, pages):
    pages[0].save(path, format="PDF", save_all=True, append_images=pages[1:], resolution=72)
    return str(path)


def test_pdf_pages_are_results_that_name_their_page(case, tmp_path):
    from tokenocr.processing.pages_tokenocr import load_pdf_pages

    pages = [Image.open(case.image_path(name)).convert("RGB") for name in ("doc_wide.png", "doc_tall.png")]
    pdf = make_pdf(tmp_path / "two.pdf", pages)
    finder = make_pipeline(case)
    results = finder(pdf, "Invoice", dpi=72)
    assert [tokens[0]["page"] for tokens in results] == [1, 2]
    rendered = dict(load_pdf_pages(pdf, dpi=72))
    assert rendered[2].size == pages[1].size  # 72 dpi: one PDF point per pixel
    np.testing.assert_allclose(results[1][0]["similarity"], finder(rendered[2], "Invoice")[0]["similarity"], atol=1e-6)
    only_second = finder(Path(pdf).read_bytes(), "Invoice", pages="2", dpi=72)
    assert [tokens[0]["page"] for tokens in only_second] == [2]
    mixed = finder([str(case.image_path("single_tile.png")), pdf], "Invoice", dpi=72)
    assert len(mixed) == 3 and "page" not in mixed[0][0] and mixed[2][0]["page"] == 2


def test_bad_pdfs_are_named_errors(case, tmp_path):
    finder = make_pipeline(case)
    damaged = tmp_path / "damaged.pdf"
    damaged.write_bytes(b"%PDF-1.4\n this is not a PDF")
    with pytest.raises(ValueError, match="damaged.pdf"):
        finder(str(damaged), "x")
    pdf = make_pdf(tmp_path / "one.pdf", [Image.new("RGB", (50, 40), "white")])
    with pytest.raises(ValueError, match="has 1 pages"):
        finder(pdf, "x", pages="3")
    encrypted = tmp_path / "encrypted.pdf"
    encrypted.write_bytes(_one_page_pdf())
    with pytest.raises(ValueError, match="encrypted.pdf.*password"):
        finder(str(encrypted), "x")
    huge = tmp_path / "huge.pdf"  # a few hundred bytes declaring a 200 x 200-inch page: 900 MP at 150 dpi
    huge.write_bytes(_one_page_pdf(media_box=b"0 0 14400 14400", encrypted=False))
    with pytest.raises(ValueError, match="Page 1 of .*huge.pdf' would be 30000 x 30000 pixels at 150 dpi.*at 61 dpi or less"):
        finder(str(huge), "x")


def _one_page_pdf(media_box: bytes = b"0 0 50 40", encrypted: bool = True) -> bytes:
    """A one-page PDF of `media_box` (points); `encrypted`: its trailer names a standard (password) security handler."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [" + media_box + b"] >>",
    ]
    if encrypted:
        objects.append(b"<< /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32 + b"> /P -4 >>")
    body, offsets = b"%PDF-1.4\n", []
    for number, content in enumerate(objects, start=1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % number + content + b"\nendobj\n"
    xref = len(body)
    body += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    body += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    security = b" /Encrypt 4 0 R" if encrypted else b""
    body += (b"trailer\n<< /Size %d /Root 1 0 R" % (len(objects) + 1) + security
             + b" /ID [<00112233445566778899aabbccddeeff> <00112233445566778899aabbccddeeff>] >>\n")
    return body + b"startxref\n%d\n%%%%EOF\n" % xref


@pytest.mark.parametrize("order", ["tokenocr first", "transformers first", "a tokenocr module first"])
def test_import_tokenocr_registers_in_any_import_order(order):
    import subprocess
    import sys

    first = {"tokenocr first": "import tokenocr\nimport transformers\n",
             "transformers first": "import transformers\nimport tokenocr\n",
             "a tokenocr module first": "import tokenocr\nfrom tokenocr.modeling import TokenOCRConfig\n"}[order]
    script = first + (
        "import sys\n"
        "from transformers import AutoConfig\n"
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "import tokenocr._registration as registration\n"
        "print(type(AutoConfig.for_model('tokenocr')).__module__)\n"
        "print(PIPELINE_REGISTRY.supported_tasks['token-similarity']['impl'].__module__)\n"
        "print(any(isinstance(f, registration._ImportWatcher) for f in sys.meta_path))\n"
        "print(type(sys.modules['transformers'].__spec__.loader).__name__ != '_NotifyingLoader')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["tokenocr.modeling.configuration_tokenocr", "tokenocr.processing.pipeline_tokenocr",
                                     "False", "True"]


def test_batch_size_is_bounded_where_it_is_given():
    model, processor = load_case(Case("tiny_seg"))
    with pytest.raises(ValueError, match="batch_size must be an integer from 1 to 1024"):
        TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity", batch_size=10**9)
    finder = TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity")
    for bad in (10**9, 0, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be an integer"):
            finder(Image.new("RGB", (64, 64), "white"), "x", batch_size=bad)


def test_tokens_holding_part_of_a_character_show_the_query_s_own_text():
    """The tiny_seg fixture's tokenizer (an original checkpoint's, converted) has byte fallback: '€' is three byte
    tokens, each of which decodes alone to U+FFFD (the first assertion checks it);
    every result shows the query's characters instead (the token that completes '€' shows it)."""
    model, processor = load_case(Case("tiny_seg"))
    finder = TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity")
    page = Image.new("RGB", (64, 64), "white")
    ids = processor(text="5 €")["input_ids"]
    assert any("\ufffd" in processor.tokenizer.decode([i]) for i in ids)  # the case this test is about
    for tokens in (finder(page, "5 €", return_visuals=False), finder(page, "5 €", level="query")["tokens"]):
        texts = [token["token"] for token in tokens]
        assert "\ufffd" not in "".join(texts) and "€" in "".join(texts)
        assert [token["token_id"] for token in tokens] == ids


def test_a_page_scored_by_the_processor_s_steps_equals_the_pipeline(tmp_path):
    """`page_similarity` + `page_results` (what evaluation, the demo, the command line and the converter's picture
    use) give the pipeline's results; the demo's cached features give the same maps."""
    model, processor = load_case(Case("tiny_seg"))
    finder = TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity")
    page = Image.open(SAMPLE).convert("RGB")
    expected = finder(page, "Invoice total", level="query")
    ids = processor(text="Invoice total")["input_ids"]
    maps = processor.page_similarity(model, page, ids)
    cached = processor.page_similarity(model, processor.page_features(model, page), ids)
    torch.testing.assert_close(cached, maps, atol=1e-5, rtol=0)
    found = processor.page_results(maps, [ids], (page.height, page.width), level="query", queries=["Invoice total"],
                                   image=page)[0]
    assert found["boxes"] == expected["boxes"] and found["score"] == pytest.approx(expected["score"], abs=1e-6)
    assert [t["boxes"] for t in found["tokens"]] == [t["boxes"] for t in expected["tokens"]]
    np.testing.assert_array_equal(found["mask"], expected["mask"])


def test_pictures_can_be_taken_one_at_a_time_as_they_are_made():
    """With `on_picture`, each picture is handed over as it is made and left out of the results (what lets the
    command line hold one picture at a time, whatever the number of query tokens)."""
    model, processor = load_case(Case("tiny_seg"))
    page = Image.open(SAMPLE).convert("RGB")
    queries = ["Invoice total", "ACME"]
    ids = [processor(text=query)["input_ids"] for query in queries]
    encoded = processor(text=queries, return_tensors="pt")  # padded: both queries scored at once
    maps = processor.page_similarity(model, page, encoded["input_ids"], encoded["attention_mask"])
    kept = processor.page_results(maps, ids, (page.height, page.width), level="query", queries=queries, image=page)
    handed = []
    streamed = processor.page_results(maps, ids, (page.height, page.width), level="query", queries=queries,
                                      image=page, on_picture=lambda q, t, result, heatmap, mask: handed.append(
                                          (q, t, np.asarray(heatmap).copy(), mask)))
    assert [(q, t) for q, t, _, _ in handed] == [
        (q, t) for q, query_ids in enumerate(ids) for t in [*range(len(query_ids)), None]]
    for q, t, heatmap, mask in handed:
        expected = kept[q] if t is None else kept[q]["tokens"][t]
        np.testing.assert_array_equal(heatmap, np.asarray(expected["heatmap"]))
        np.testing.assert_array_equal(mask, expected["mask"])
    assert all("heatmap" not in found and all("heatmap" not in token for token in found["tokens"])
               for found in streamed)
    assert [found["boxes"] for found in streamed] == [found["boxes"] for found in kept]
