"""Model cards of converted folders, checked offline: huggingface_hub parses them, the metadata is what the hub
expects, every file they reference is in the folder, and the heatmap picture is the converted model's own."""

import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from PIL import Image

from tokenocr.conversion import model_card
from tokenocr.processing.visualization_tokenocr import query_strip

from fixture_cases import CASES, Case, load_case


# The hub's task list (PIPELINE_DATA in huggingface.js, packages/tasks/src/pipelines.ts): a card's pipeline_tag
# must be one of these for the hub to file the model under a task.
HUB_TASKS = {
    "biology", "text-classification", "token-classification", "table-question-answering", "question-answering",
    "zero-shot-classification", "translation", "summarization", "feature-extraction", "text-generation",
    "text2text-generation", "fill-mask", "sentence-similarity", "text-to-speech", "text-to-audio",
    "automatic-speech-recognition", "audio-to-audio", "audio-classification", "audio-text-to-text",
    "voice-activity-detection", "depth-estimation", "image-classification", "object-detection",
    "image-segmentation", "text-to-image", "image-to-text", "image-to-image", "image-to-video",
    "unconditional-image-generation", "video-classification", "reinforcement-learning", "robotics",
    "tabular-classification", "tabular-regression", "tabular-to-text", "table-to-text", "multiple-choice",
    "text-ranking", "text-retrieval", "time-series-forecasting", "text-to-video", "image-text-to-text",
    "visual-question-answering", "document-question-answering", "zero-shot-image-classification", "graph-ml",
    "mask-generation", "zero-shot-object-detection", "text-to-3d", "image-to-3d", "image-feature-extraction",
    "video-text-to-text", "keypoint-detection", "visual-document-retrieval", "any-to-any", "other",
}
# Model-card metadata keys the hub documents, of which these cards may use any.
CARD_KEYS = {"library_name", "license", "pipeline_tag", "base_model", "tags", "language", "widget"}


REPO_ID = "org/TokenOCR"  # the converter's default --repo-id


@pytest.fixture(params=CASES)
def folder(request, converted) -> Path:
    return converted(request.param, "float32")


def referenced_files(card_text: str, metadata: dict) -> list[str]:
    """Every repo-relative file a card points to: widget inputs and outputs, and Markdown images and links."""
    files = []
    for example in metadata.get("widget", []):
        files += [example["src"], example["output"]["url"]]
    body = card_text.split("\n---\n", 1)[1]
    for target in re.findall(r"\]\(([^)\s]+)\)", body):
        if not re.match(r"[a-z]+://|#|mailto:", target):
            files.append(target)
    return files


def check_card(path: Path) -> dict:
    """Parse a card offline and check its metadata; returns the metadata."""
    card = ModelCard.load(path)  # a local file: no network
    metadata = card.data.to_dict()
    assert set(metadata) <= CARD_KEYS, set(metadata) - CARD_KEYS
    assert metadata["library_name"] == "transformers" and metadata["license"] == "mit"
    assert metadata["pipeline_tag"] in HUB_TASKS
    assert "custom_code" in metadata["tags"] and all(isinstance(tag, str) for tag in metadata["tags"])
    if "base_model" in metadata:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", metadata["base_model"])
    [example] = metadata["widget"]
    assert set(example) == {"src", "text", "example_title", "output"} and set(example["output"]) == {"url"}
    assert example["text"] == model_card.SAMPLE_QUERY
    assert "$" not in path.read_text().replace("$$", "")  # no placeholder left behind
    return metadata


def test_converted_cards_parse_and_reference_only_files_they_hold(folder):
    metadata = check_card(folder / "README.md")
    text = (folder / "README.md").read_text()
    files = referenced_files(text, metadata)
    assert model_card.EXAMPLE_PICTURE in files and model_card.EXAMPLE_PAGE in files
    for name in files:
        assert (folder / name).is_file(), name
    assert f"https://huggingface.co/spaces/{REPO_ID.split('/')[0]}/TokenOCR-demo" in text
    assert f'AutoModel.from_pretrained("{REPO_ID}"' in text
    assert (folder / model_card.EXAMPLE_PAGE).read_bytes() == model_card.SAMPLE_PAGE.read_bytes()


def expected_picture(case_name: str) -> np.ndarray:
    """The sample page's strip drawn from the *original* checkpoint's maps, computed here."""
    model, processor = load_case(Case(case_name))
    page = Image.open(model_card.SAMPLE_PAGE).convert("RGB")
    inputs = processor(images=page, text=model_card.SAMPLE_QUERY, return_tensors="pt")
    with torch.no_grad():
        similarity = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"]).similarity
    maps = processor.post_process_similarity(similarity, inputs["grid_cols_rows"], inputs["num_tiles"])[0][0]
    tokens = [{"token": t, "score": float(m.max()), "similarity": m.numpy()}
              for t, m in zip(processor.query_tokens(inputs["input_ids"][0]), maps)]
    relevance = sum(t["score"] for t in tokens) / len(tokens)
    title = f"Query '{model_card.SAMPLE_QUERY}' (relevance {relevance:.3f})"
    return np.asarray(query_strip(page, tokens, panel_width=448, columns=3, title=title), dtype=np.int16)


def test_the_picture_is_the_converted_models_own_heatmaps(folder):
    with Image.open(folder / model_card.EXAMPLE_PICTURE) as stored:
        picture = np.asarray(stored.convert("RGB"), dtype=np.int16)
    case_name = folder.name.rsplit("-", 1)[0]  # the session fixture names folders CASE-DTYPE
    own = expected_picture(case_name)
    other = expected_picture(next(name for name in CASES if name != case_name))
    assert picture.shape == own.shape
    # The stored picture has a 256-colour palette, so it matches its own model's strip closely but not exactly;
    # the other checkpoint's heatmaps are elsewhere.
    rows = min(picture.shape[0], other.shape[0])  # the other tokenizer may split the query into more rows of panels
    own_difference, other_difference = np.abs(picture - own).mean(), np.abs(picture[:rows] - other[:rows]).mean()
    assert own_difference < 1.5, own_difference
    assert other_difference > 3 * own_difference + 1, (own_difference, other_difference)


def fake_config(width: int, tower: str = "vit"):
    if tower == "resnet":
        vision = SimpleNamespace(depths=[3, 4, 6, 3])
        return SimpleNamespace(hidden_size=width, vocab_size=92553, vision_config=vision, is_internvit=False,
                               vision_width=2048, upsampler_output_size=512)
    vision = SimpleNamespace(hidden_size=1024, num_hidden_layers=24)
    return SimpleNamespace(hidden_size=width, vocab_size=92553, vision_config=vision, is_internvit=True)


FAKE_PROCESSOR = SimpleNamespace(image_processor=SimpleNamespace(size={"height": 448, "width": 448}, max_side=2048))


@pytest.mark.parametrize("width, tower, released", [(4096, "vit", True), (2048, "vit", True), (640, "vit", False),
                                                    (2048, "resnet", False)])
def test_every_template_renders_a_valid_card(tmp_path, width, tower, released):
    for name in (model_card.EXAMPLE_PICTURE, model_card.EXAMPLE_PAGE):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"\x89PNG")
    path = model_card.render_card(fake_config(width, tower), torch.bfloat16, FAKE_PROCESSOR, tmp_path, "acme/TokenOCR-x",
                                  None, 1e-3, space_id="acme/my-space")
    metadata = check_card(path)
    assert ("base_model" in metadata) == released
    if released:
        assert metadata["language"][0] == "en"
    text = path.read_text()
    assert "https://huggingface.co/spaces/acme/my-space" in text
    for name in referenced_files(text, metadata):
        assert (tmp_path / name).is_file(), name


def test_pipeline_tag_choice_is_explained_in_the_templates():
    for template in model_card.CARDS_DIR.glob("TokenOCR-*.md"):
        front_matter = template.read_text().split("---")[1]
        tag = re.search(r"^pipeline_tag: (.+)$", front_matter, flags=re.MULTILINE).group(1)
        assert tag in HUB_TASKS
        assert re.search(r"^# pipeline_tag:", front_matter, flags=re.MULTILINE), template.name


def test_widget_metadata_is_the_hub_format():
    [example] = yaml.safe_load(model_card.widget_metadata("Total: 12"))["widget"]
    assert example == {"src": model_card.EXAMPLE_PAGE, "text": "Total: 12", "output": {"url": model_card.EXAMPLE_PICTURE},
                       "example_title": example["example_title"]}


def test_a_card_needs_its_picture(tmp_path):
    with pytest.raises(model_card.CardError, match="token_heatmaps.png"):
        model_card.render_card(fake_config(4096), torch.float32, FAKE_PROCESSOR, tmp_path, "acme/x", None, 0.0)
    assert model_card.default_space_id("acme/TokenOCR") == "acme/TokenOCR-demo"


@pytest.mark.parametrize("repo_id, space_id", [('acme/x"); import os; #', None), ("acme/x", "acme/demo)\n[click](http://x"),
                                                ("acme/x y", None), ("acme", None)])
def test_a_card_quotes_only_hub_repo_ids(tmp_path, repo_id, space_id):
    """The card pastes the repo id into its code and links: anything but owner/name is refused, and no card written."""
    for name in (model_card.EXAMPLE_PICTURE, model_card.EXAMPLE_PAGE):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"\x89PNG")
    with pytest.raises(model_card.CardError, match="is not a hub repo id") as error:
        model_card.render_card(fake_config(4096), torch.float32, FAKE_PROCESSOR, tmp_path, repo_id, None, 0.0,
                               space_id=space_id)
    assert "\n" not in str(error.value)  # one line, whatever the value holds
    assert not (tmp_path / "README.md").exists()
    assert model_card.check_repo_id("acme/TokenOCR-x.v2_1") == "acme/TokenOCR-x.v2_1"
