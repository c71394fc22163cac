"""
The R50 variant (ResNet-50 tower, whole images) against the original R50 code's outputs (`fixtures/original/r50_tiny`):
processing, model, loading both layouts, the pipeline and the command line, conversion to a folder that loads with
transformers alone.
"""

import json
import math
import re
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import AutoModel, AutoProcessor, ResNetModel

import tokenocr  # noqa: F401  (registers the Auto classes and the task)
import tokenocr.conversion.convert as convert_module
from tokenocr import TokenOCRConfig, TokenOCRImageProcessor, TokenOCRModel, TokenSimilarityPipeline
from tokenocr.cli import convert_main, main
from tokenocr.conversion import CheckpointError, OriginalCheckpoint, load_original
from tokenocr.conversion.original_r50 import OriginalR50Checkpoint

from fixture_cases import FIXTURES, Case, load_case
from hub_cache import add_to_hub_cache, report_as_hub_user
from r50_helpers import R50, TOKENIZER_FILES, read_state, reference_features, reference_maps, split_into_parts


CASE = Case("r50_tiny")


@pytest.fixture(scope="module")
def loaded():
    return load_case(CASE)


def paths(images):
    return [str(CASE.image_path(image)) for image in images]


def assert_maps_equal_original(maps_per_image, images):
    """`maps_per_image[i]`: `(queries, padded tokens, h, w)` for `images[i]` and the case's queries, in order."""
    for image, maps in zip(images, maps_per_image):
        expected = CASE.expected(image)
        for index, query in enumerate(CASE.queries):
            reference = expected[f"similarity_q{index}"]
            ours = maps[index, : len(reference)]
            assert tuple(ours.shape) == reference.shape == (len(reference), *CASE.manifest["images"][image]["map_hw"])
            np.testing.assert_allclose(ours.numpy(), reference, atol=1e-4, rtol=0, err_msg=f"{image} {query!r}")


# ------------------------------------------------------------------------------------------- processing


def test_whole_images_equal_original_pixels():
    processor = TokenOCRImageProcessor(do_tiling=False)
    for image in CASE.images:
        out = processor(str(CASE.image_path(image)), return_tensors="pt")
        expected = CASE.expected(image)["pixel_values"]
        assert out["pixel_values"].shape == expected.shape, image
        np.testing.assert_allclose(out["pixel_values"].numpy(), expected, atol=1e-6, rtol=0, err_msg=image)
        width, height = CASE.manifest["images"][image]["size_wh"]
        assert out["image_sizes"].tolist() == out["pixel_sizes"].tolist() == [[height, width]]
        assert out["map_sizes"].tolist() == [CASE.manifest["images"][image]["map_hw"]]
        assert out["grid_cols_rows"].tolist() == [[1, 1]] and out["num_tiles"].tolist() == [1]


def test_batches_are_padded_at_the_bottom_and_right():
    batch = TokenOCRImageProcessor(do_tiling=False)(paths(CASE.images), return_tensors="pt")
    sizes = [CASE.manifest["images"][image]["size_wh"][::-1] for image in CASE.images]
    assert batch["pixel_values"].shape == (len(sizes), 3, max(h for h, _ in sizes), max(w for _, w in sizes))
    assert batch["pixel_sizes"].tolist() == sizes
    for row, (image, (height, width)) in enumerate(zip(CASE.images, sizes)):
        np.testing.assert_allclose(batch["pixel_values"][row, :, :height, :width].numpy(),
                                   CASE.expected(image)["pixel_values"][0], atol=1e-6, rtol=0)
        assert not batch["pixel_values"][row, :, height:].any() and not batch["pixel_values"][row, :, :, width:].any()


def test_max_side_bounds_the_working_resolution():
    path = str(CASE.image_path("doc_tall.png"))  # 90 x 260
    bounded = TokenOCRImageProcessor(do_tiling=False, max_side=100)(path)
    assert bounded["image_sizes"].tolist() == [[260, 90]]
    assert bounded["pixel_sizes"].tolist() == [[100, 35]] and bounded["map_sizes"].tolist() == [[16, 8]]
    with Image.open(path) as pil:
        resized = pil.convert("RGB").resize((35, 100), Image.Resampling.BICUBIC)
    unbounded = TokenOCRImageProcessor(do_tiling=False, max_side=None)
    np.testing.assert_allclose(bounded["pixel_values"], unbounded(resized)["pixel_values"], atol=1e-6)
    assert unbounded(path)["pixel_sizes"].tolist() == [[260, 90]]
    for bad in (0, -5, 1.5, True):
        with pytest.raises(ValueError, match="max_side"):
            TokenOCRImageProcessor(do_tiling=False, max_side=bad)


# ----------------------------------------------------------------------------------------------- model


def test_config_comes_from_the_tensors(loaded):
    model, processor = loaded
    config = model.config
    assert isinstance(model.vision_tower, ResNetModel) and config.vision_config.model_type == "resnet"
    assert list(config.vision_config.depths) == CASE.manifest["resnet_layers"]
    assert list(config.vision_config.hidden_sizes) == [256, 512, 1024, 2048]
    assert (config.upsampler_hidden_size, config.upsampler_output_size) == (CASE.manifest["upsample_mid"],) * 2
    assert (config.hidden_size, config.vocab_size) == (CASE.manifest["embed_dim"], CASE.manifest["vocab_size"])
    assert config.projector_layer_norm is False and isinstance(model.projector.layer_norm, torch.nn.Identity)
    assert model.logit_scale.item() == pytest.approx(CASE.manifest["logit_scale_t_prime"])
    assert model.logit_bias.item() == pytest.approx(CASE.manifest["logit_bias_b"])
    assert model.get_logit_bias().item() == config.fixed_logit_bias == -8.9375  # what the authors trained with
    assert processor.image_processor.do_tiling is False


def test_features_and_every_query_map_equal_original(loaded):
    model, processor = loaded
    for image in CASE.images:
        inputs = processor(images=str(CASE.image_path(image)), return_tensors="pt")
        with torch.no_grad():
            features = model.get_image_features(inputs["pixel_values"], inputs["pixel_sizes"]).pooler_output
        np.testing.assert_allclose(features.numpy(), CASE.expected(image)["features"], atol=1e-4, rtol=0, err_msg=image)
        for index, query in enumerate(CASE.queries):
            text = processor(text=query, return_tensors="pt")
            assert text["input_ids"][0].tolist() == CASE.manifest["query_input_ids"][query]
            with torch.no_grad():
                out = model(image_embeds=features, input_ids=text["input_ids"])
            maps = processor.post_process_similarity(out.similarity, inputs["grid_cols_rows"], inputs["num_tiles"],
                                                     inputs["map_sizes"])[0][0]
            np.testing.assert_allclose(maps.numpy(), CASE.expected(image)[f"similarity_q{index}"], atol=1e-4, rtol=0,
                                       err_msg=f"{image} {query!r}")


def test_a_padded_batch_gives_each_image_its_own_result(loaded):
    """Different sizes (and a repeated one) in one batch: every map equals the original's; padding is cropped away."""
    model, processor = loaded
    images = [*CASE.images, "doc_wide.png"]
    inputs = processor(images=paths(images), text=CASE.queries, return_tensors="pt")
    with torch.no_grad():
        out = model(**inputs)
        fused = model.get_similarity(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"], 100,
                                     pixel_sizes=inputs["pixel_sizes"])
        one_at_a_time = model.get_similarity(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"],
                                             pixel_sizes=inputs["pixel_sizes"], tiles_per_batch=1)
    features = out.image_embeds
    torch.testing.assert_close(fused, out.similarity, atol=1e-5, rtol=0)
    torch.testing.assert_close(one_at_a_time, out.similarity, atol=1e-5, rtol=0)
    maps = processor.post_process_similarity(out.similarity, inputs["grid_cols_rows"], inputs["num_tiles"],
                                             inputs["map_sizes"])
    assert_maps_equal_original(maps, images)
    for row, (h, w) in enumerate(inputs["map_sizes"].tolist()):
        assert features.shape[1] == max(a * b for a, b in inputs["map_sizes"].tolist())
        assert not features[row, h * w :].any() and (out.similarity[:, :, row, h * w :] == 0).all()
    # What running the padded batch as it is would give: the padding reaches the image's border locations.
    with torch.no_grad():
        naive = model.upsampler(model.vision_tower(inputs["pixel_values"]).last_hidden_state)
        naive = model.projector(naive[images.index("doc_tall.png")].permute(1, 2, 0))
    h, w = CASE.manifest["images"]["doc_tall.png"]["map_hw"]
    naive = naive[:h, :w].reshape(h * w, -1)
    assert np.abs(naive.numpy() - CASE.expected("doc_tall.png")["features"][0]).max() > 1e-2


@pytest.mark.parametrize("box", [(3, 5, 27, 22), (0, 40, 50, 47), (10, 10, 11, 11)])  # left, top, right, bottom
def test_images_smaller_than_the_stride_match_the_original_computation(loaded, box):
    """Images under 32 px on a side: the original R50 computation (written out, and checked on the fixtures first)."""
    model, processor = loaded
    state = read_state()
    for image in ("single_tile.png", "doc_tall.png"):
        pixels = torch.from_numpy(CASE.expected(image)["pixel_values"])
        np.testing.assert_allclose(reference_features(state, pixels).numpy(), CASE.expected(image)["features"],
                                   atol=1e-4, rtol=0)
    with Image.open(CASE.image_path("doc_wide.png")) as pil:
        crop = pil.convert("RGB").crop(box)
    inputs = processor(images=crop, text="they are not", return_tensors="pt")
    height, width = crop.height, crop.width
    assert inputs["map_sizes"].tolist() == [[4 * math.ceil(height / 32), 4 * math.ceil(width / 32)]]
    expected = reference_features(state, inputs["pixel_values"])
    with torch.no_grad():
        features = model.get_image_features(inputs["pixel_values"], inputs["pixel_sizes"]).pooler_output
        similarity = model(**inputs).similarity
    np.testing.assert_allclose(features.numpy(), expected.numpy(), atol=1e-4, rtol=0)
    maps = processor.post_process_similarity(similarity, inputs["grid_cols_rows"], inputs["num_tiles"],
                                             inputs["map_sizes"])
    ids = inputs["input_ids"][0].tolist()
    reference = reference_maps(state, expected, ids, inputs["map_sizes"][0].tolist())
    np.testing.assert_allclose(maps[0][0].numpy(), reference.numpy(), atol=1e-4, rtol=0)


def test_dtypes_attention_settings_and_auto_classes_round_trip(loaded, tmp_path):
    model, processor = loaded
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    again = AutoModel.from_pretrained(tmp_path).eval()
    assert type(again) is TokenOCRModel and again.config.vision_config.model_type == "resnet"
    processor_again = AutoProcessor.from_pretrained(tmp_path)
    assert processor_again.image_processor.do_tiling is False
    expected = CASE.expected("gray_scan.png")["features"]
    inputs = processor_again(images=str(CASE.image_path("gray_scan.png")), return_tensors="pt")
    # attn_implementation is the ViT tower's setting: a ResNet tower takes either and ignores it.
    for dtype, bound, attention in ((torch.float32, 1e-4, "sdpa"), (torch.bfloat16, 0.05, "eager"),
                                    (torch.float16, 0.01, "sdpa")):
        typed = TokenOCRModel.from_pretrained(tmp_path, dtype=dtype, attn_implementation=attention).eval()
        with torch.no_grad():
            features = typed.get_image_features(inputs["pixel_values"]).pooler_output
        assert features.dtype == dtype
        assert np.abs(features.float().numpy() - expected).max() < bound * max(1.0, np.abs(expected).max())
    typed.set_attn_implementation("eager")


def test_resnet_configs_defaults_and_checks():
    config = TokenOCRConfig(vision_config={"model_type": "resnet"}, hidden_size=2048)
    assert (config.vision_width, config.upsampler_output_size, config.projector_layer_norm) == (2048, 512, False)
    vit = TokenOCRConfig()
    assert (vit.vision_config.model_type, vit.upsampler_output_size, vit.projector_layer_norm) == (
        "internvl_vision", vit.vision_config.hidden_size, True)
    new_keys = ("upsampler_output_size", "projector_layer_norm")
    saved_before = {key: value for key, value in vit.to_dict().items() if key not in new_keys}
    restored = TokenOCRConfig.from_dict(saved_before)  # a config.json written before the R50 variant existed
    assert (restored.upsampler_output_size, restored.projector_layer_norm) == (vit.upsampler_output_size, True)
    with pytest.raises(ValueError, match="2 to 4 stages"):
        TokenOCRConfig(vision_config={"model_type": "resnet", "depths": [1], "hidden_sizes": [8]})
    with pytest.raises(ValueError, match="2 to 4 stages"):
        TokenOCRConfig(vision_config={"model_type": "resnet", "depths": [1] * 5, "hidden_sizes": [8] * 5})
    with pytest.raises(ValueError, match="vision_feature_layer"):
        TokenOCRConfig(vision_config={"model_type": "resnet"}, vision_feature_layer=2)
    with pytest.raises(ValueError, match="model_type must be one of"):
        TokenOCRConfig(vision_config={"model_type": "vit"})
    model = TokenOCRModel(TokenOCRConfig(
        vision_config={"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 24, 32], "depths": [1] * 4},
        hidden_size=12, vocab_size=20, upsampler_hidden_size=6)).eval()
    with torch.no_grad():
        features = model.get_image_features(torch.randn(2, 3, 70, 40), torch.tensor([[70, 40], [20, 33]])).pooler_output
    assert features.shape == (2, 12 * 8, 12) and not features[1, 4 * 8 :].any() and features[1, : 4 * 8].all()
    with pytest.raises(ValueError, match="pixel_sizes"):
        model.get_image_features(torch.randn(1, 3, 20, 20), torch.tensor([[21, 20]]))


# -------------------------------------------------------------------------------------------- loading


def test_split_parts_with_a_separate_tokenizer(tmp_path):
    parts = split_into_parts(R50, tmp_path / "parts", keep_tokenizer=False)
    with pytest.raises(CheckpointError, match="tokenizer"):
        load_original(parts)
    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    for name in TOKENIZER_FILES:
        shutil.copyfile(R50 / name, tokenizer / name)
    checkpoint = OriginalCheckpoint(parts, tokenizer=tokenizer)
    assert isinstance(checkpoint, OriginalR50Checkpoint) and [f.name for f in checkpoint.files] == [
        "checkpoint_part1.pth", "checkpoint_part2.pth"]
    for given in (tokenizer, tokenizer / "tokenizer.model"):
        model, processor = load_original(parts, tokenizer=given)
        inputs = processor(images=str(CASE.image_path("rgba_label.png")), text=CASE.queries[4], return_tensors="pt")
        assert inputs["input_ids"][0].tolist() == CASE.manifest["query_input_ids"][CASE.queries[4]]
        with torch.no_grad():
            features = model.get_image_features(inputs["pixel_values"]).pooler_output
        np.testing.assert_allclose(features.numpy(), CASE.expected("rgba_label.png")["features"], atol=1e-4, rtol=0)


def test_tokenizer_from_a_hub_repo(tmp_path, monkeypatch):
    """`tokenizer="owner/name"` fetches tokenizer.model and its settings (here from a stand-in for the hub)."""
    import huggingface_hub
    from huggingface_hub.errors import EntryNotFoundError

    hub = tmp_path / "hub-repo"
    hub.mkdir()
    shutil.copyfile(R50 / "tokenizer.model", hub / "tokenizer.model")
    asked = []

    def download(repo_id, filename, **kwargs):
        asked.append((repo_id, filename))
        if not (hub / filename).is_file():
            raise EntryNotFoundError(f"{filename} not found")
        return str(hub / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    parts = split_into_parts(R50, tmp_path / "parts", keep_tokenizer=False)
    _, processor = load_original(parts, tokenizer="someone/internlm2-tokenizer")
    assert ("someone/internlm2-tokenizer", "tokenizer.model") in asked
    assert processor(text="they are not")["input_ids"] == CASE.manifest["query_input_ids"]["they are not"]
    with pytest.raises(CheckpointError, match="neither a folder"):
        load_original(parts, tokenizer="not a repo id")


# ------------------------------------------------------------------------------------ pipeline and CLI


def test_pipeline_every_token_map_equals_original(loaded):
    model, processor = loaded
    finder = TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity", device="cpu")
    for batch_size, visuals in ((1, False), (3, True)):  # images of different sizes in a batch run one by one
        results = finder(paths(CASE.images), CASE.queries, batch_size=batch_size, return_visuals=visuals)
        for image, per_image in zip(CASE.images, results):
            expected = CASE.expected(image)
            width, height = CASE.manifest["images"][image]["size_wh"]
            for index, (query, tokens) in enumerate(zip(CASE.queries, per_image)):
                assert [t["token"] for t in tokens] == CASE.manifest["query_tokens"][query]
                for token, reference in zip(tokens, expected[f"similarity_q{index}"]):
                    np.testing.assert_allclose(token["similarity"], reference, atol=1e-4, rtol=0, err_msg=image)
                    if visuals:
                        assert token["heatmap"].size == (width, height) and token["mask"].shape == (height, width)


def test_similarity_command_takes_an_original_r50_folder(tmp_path, capsys):
    out = tmp_path / "results"
    code = main(["similarity", "--model", str(R50), "--image", str(CASE.image_path("doc_wide.png")),
                 "--query", "they are not", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    tokens = json.loads((out / "summary.json").read_text())["images"][0]["queries"][0]["tokens"]
    expected = CASE.expected("doc_wide.png")["similarity_q2"]
    assert [t["score"] for t in tokens] == pytest.approx([float(m.max()) for m in expected], abs=1e-4)


def test_quick_start_example_takes_an_original_r50_folder(capsys, monkeypatch):
    script = Path(__file__).parents[1] / "examples" / "quick_start.py"
    monkeypatch.setattr(sys, "argv", [str(script), str(R50), str(CASE.image_path("doc_wide.png")), "they are not"])
    runpy.run_path(str(script), run_name="__main__")
    lines = capsys.readouterr().out.strip().splitlines()
    expected = CASE.expected("doc_wide.png")["similarity_q2"]
    assert lines[0] == "grid [1, 1] (cols, rows); similarity maps (16, 40)" and len(lines) == 1 + len(expected)
    for line, token_map in zip(lines[1:], expected):
        assert f"best similarity {token_map.max():+.4f}" in line


# ------------------------------------------------------------------------------------------ conversion


@pytest.fixture(scope="module")
def converted_parts(tmp_path_factory):
    """The demo's layout (two parts), tokenizer given separately, converted with the command line and verified."""
    root = tmp_path_factory.mktemp("r50")
    parts = split_into_parts(R50, root / "parts", keep_tokenizer=False)
    output = root / "converted"
    assert convert_main(["--input", str(parts), "--output", str(output), "--tokenizer", str(R50), "--dtype", "float32",
                         "--repo-id", "org/TokenOCR-R50"]) == 0
    return output


def test_converted_folder_loads_with_transformers_alone(converted_parts, tmp_path, capsys):
    names = {p.name for p in converted_parts.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json", "README.md",
            "modeling_tokenocr.py", "pipeline_tokenocr.py"} <= names
    hidden = [name for name in names if name.startswith(".")]
    assert hidden == [".tokenocr-convert"]  # only the converter's own marker (how --force recognises its output)
    assert not [name for name in names if name.endswith((".pth", ".model"))]
    assert json.loads((converted_parts / "preprocessor_config.json").read_text())["do_tiling"] is False
    card = (converted_parts / "README.md").read_text()
    assert "# TokenOCR-R50" in card and "$" not in card.replace("$$", "")
    cache = tmp_path / "hub"
    add_to_hub_cache(cache, "org/TokenOCR-R50", converted_parts)
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL)
    code = "\n".join(block.replace('"page.png"', repr(str(CASE.image_path("doc_wide.png")))) for block in blocks)
    reports = report_as_hub_user("hub_user_report", [json.dumps({"r50_tiny": "org/TokenOCR-R50"}), FIXTURES, code],
                                 cache, tmp_path)
    report = reports["r50_tiny"]
    assert report["model"] == "TokenOCRModel" and report["model_module"].startswith("transformers_modules")
    assert report["tokenizer_fast"] and report["ids_equal"]
    assert report["features"] < 1e-4 and report["similarity"] < 1e-4
    assert report["pipeline"]["worst"] < 1e-4 and report["pipeline"]["sizes_ok"]
    assert "' Invoice'" in reports["card_code_printed"]


def test_single_file_layout_converts_to_the_same_weights(converted_parts, tmp_path, monkeypatch):
    """checkpoint.pth gives the same folder as the two parts (verification, checked above, left out here)."""
    monkeypatch.setattr(convert_module, "verify", lambda *args: 0.0)
    monkeypatch.setattr(convert_module, "render_card", lambda *args: None)  # its picture is made by verify
    output = tmp_path / "single"
    assert convert_main(["--input", str(R50), "--output", str(output), "--dtype", "float32",
                         "--repo-id", "org/TokenOCR-R50"]) == 0
    with safe_open(output / "model.safetensors", "pt") as single, \
            safe_open(converted_parts / "model.safetensors", "pt") as split:
        assert set(single.keys()) == set(split.keys()) == set(load_case(CASE)[0].state_dict())
        for name in single.keys():
            torch.testing.assert_close(single.get_tensor(name), split.get_tensor(name), atol=0, rtol=0, msg=name)
    assert json.loads((output / "config.json").read_text()) == json.loads((converted_parts / "config.json").read_text())



@pytest.mark.parametrize("stages", [2, 3, 4])
def test_resnet_stride_follows_stages_and_the_processor_map_matches_the_model(stages):
    """A ResNet tower of 2-4 stages has stride 8-32; an image processor with that feature_stride reports exactly the
    map the model computes, for sizes that are not multiples of the stride."""
    from tokenocr.processing import TokenOCRImageProcessor

    config = TokenOCRConfig(
        vision_config={"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 12, 16, 20][:stages],
                       "depths": [1] * stages, "layer_type": "basic"},
        hidden_size=12, vocab_size=20, upsampler_hidden_size=6)
    assert config.resnet_stride == {2: 8, 3: 16, 4: 32}[stages]
    model = TokenOCRModel(config).eval()
    processor = TokenOCRImageProcessor(do_tiling=False, feature_stride=config.resnet_stride)
    images = [Image.new("RGB", (37, 70), "white"), Image.new("RGB", (101, 45), "white")]
    inputs = processor(images, return_tensors="pt")
    with torch.no_grad():
        embeds = model.get_image_features(inputs["pixel_values"], pixel_sizes=inputs["pixel_sizes"]).pooler_output
    assert embeds.shape[1] == max(int(h) * int(w) for h, w in inputs["map_sizes"])
    for (height, width), (map_h, map_w) in zip(inputs["pixel_sizes"].tolist(), inputs["map_sizes"].tolist()):
        assert (map_h, map_w) == (4 * -(-height // config.resnet_stride), 4 * -(-width // config.resnet_stride))
