# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
The model card (`README.md`) of a converted folder, rendered from the templates in `hub_cards/`.

Besides the text, the card shows what the model does: a picture of per-token heatmaps for a bundled sample page
(`hub_cards/sample_page.png`), made by the converted model itself while the converter verifies the folder
(`hub_check.make_example_picture`, in the process that loads the folder without the package), stored in the folder as `examples/token_heatmaps.png` next to a copy of the page, and
declared as `widget:` example input (the page and a query) with the picture as its example output. The hub's
inference widget does not run custom-code models or custom tasks, so pre-rendered outputs and a link to the demo
Space are what a visitor can have.
"""

import string
from importlib import resources
from pathlib import Path

import yaml


CARDS_DIR = Path(str(resources.files("tokenocr.hub_cards")))
# Released variants, told apart by the feature width D (ViT) or the tower (R50).
CARD_FOR_WIDTH = {4096: "TokenOCR-4096-English-seg", 2048: "TokenOCR-2048-Bilingual-seg"}
GENERIC_CARD = "TokenOCR-custom"
R50_CARD = "TokenOCR-R50"
# Where the released variants' original checkpoints live on the hub (the cards' `base_model`).
RELEASED_SOURCES = {
    "TokenOCR-4096-English-seg": "TongkunGuan/TokenFD_4096_English_seg",
    "TokenOCR-2048-Bilingual-seg": "TongkunGuan/TokenFD_2048_Bilingual_seg",
}

SAMPLE_PAGE = CARDS_DIR / "sample_page.png"  # a synthetic one-tile invoice (demo/make_examples.py draws it)
SAMPLE_QUERY = "Invoice total"
# Paths inside the converted folder.
EXAMPLE_PAGE = "examples/sample_page.png"
EXAMPLE_PICTURE = "examples/token_heatmaps.png"
DEMO_SPACE_NAME = "TokenOCR-demo"


class CardError(ValueError):
    """The card cannot be rendered; the message is the one-line reason."""


def check_repo_id(value: str, flag: str = "repo id") -> str:
    """
    `value` checked to be a hub repo id `owner/name` (`huggingface_hub.utils.validate_repo_id`'s rules: letters,
    digits, `-`, `_`, `.`), as the card's code and links quote it; anything else (quotes, spaces, new lines, a URL) is
    refused with a one-line `CardError` naming `flag`, before anything is written.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(value, str):
        raise CardError(f"{flag} {value!r} is not a hub repo id (owner/name)")
    try:
        validate_repo_id(value)
    except HFValidationError as error:
        reason = " ".join(str(error).split())
        raise CardError(f"{flag} {value!r} is not a hub repo id (owner/name): {reason}") from None
    if "/" not in value:
        raise CardError(f"{flag} {value!r} is not a hub repo id: give it as owner/name")
    return value


def default_space_id(repo_id: str) -> str:
    """The demo Space the card links to when none is given: `TokenOCR-demo` under the model repo's owner."""
    owner = repo_id.split("/")[0] if "/" in repo_id else repo_id
    return f"{owner}/{DEMO_SPACE_NAME}"


def widget_metadata(query: str = SAMPLE_QUERY) -> str:
    """
    The `widget:` block of the card's metadata: the sample page and a query as example input, the heatmap picture as
    example output (`output.url`, a path inside the repo), in the hub's widget-example format.
    """
    example = {
        "src": EXAMPLE_PAGE,
        "text": query,
        "example_title": "Where is each token of the query written?",
        "output": {"url": EXAMPLE_PICTURE},
    }
    return yaml.safe_dump({"widget": [example]}, sort_keys=False, allow_unicode=True, width=1000)


def _template(name: str) -> string.Template:
    path = CARDS_DIR / name
    if not path.is_file():
        raise CardError(f"model-card template '{name}' is missing from hub_cards/")
    return string.Template(path.read_text(encoding="utf-8"))


def _tower_values(config, processor) -> dict:
    """What a card says about the vision tower and the input: InternViT and tiles, or ResNet and whole images."""
    image_processor = processor.image_processor
    if config.is_internvit:
        return dict(vision_width=config.vision_config.hidden_size, vision_layers=config.vision_config.num_hidden_layers,
                    tile_size=image_processor.size["height"])
    return dict(vision_width=config.vision_width, depths=", ".join(map(str, config.vision_config.depths)),
                upsampler_width=config.upsampler_output_size, max_side=image_processor.max_side)


def render_card(
    config, dtype, processor, folder: Path, repo_id: str, base_model: str | None, difference: float,
    space_id: str | None = None,
) -> Path:
    """
    Write `folder/README.md` from the template for the checkpoint: by feature width for the ViT releases, the R50
    template for a ResNet tower, else the generic one.

    The example picture ([`EXAMPLE_PICTURE`]) and page must already be in `folder` (the converter's verification
    makes them). Returns the card's path.

    Raises:
        CardError: `repo_id` or `space_id` is not a hub repo id (`check_repo_id`), a template or the example picture
            is missing, or a template has an unknown placeholder.
    """
    folder = Path(folder)
    for name in (EXAMPLE_PICTURE, EXAMPLE_PAGE):
        if not (folder / name).is_file():
            raise CardError(f"the model card needs '{name}' in the converted folder; it was not made")
    check_repo_id(repo_id, "--repo-id")
    if space_id is not None:
        check_repo_id(space_id, "--space-id")
    name = CARD_FOR_WIDTH.get(config.hidden_size, GENERIC_CARD) if config.is_internvit else R50_CARD
    base_model = base_model or RELEASED_SOURCES.get(name)
    space_id = space_id or default_space_id(repo_id)
    values = dict(
        repo_id=repo_id,
        space_id=space_id,
        space_url=f"https://huggingface.co/spaces/{space_id}",
        sample_query=SAMPLE_QUERY,
        example_picture=EXAMPLE_PICTURE,
        example_page=EXAMPLE_PAGE,
        widget=widget_metadata(),
        base_model=base_model or "an original TokenOCR checkpoint",
        base_model_line=f"base_model: {base_model}\n" if base_model else "",
        hidden_size=config.hidden_size,
        vocab_size=config.vocab_size,
        dtype=str(dtype).replace("torch.", ""),
        max_difference=f"{difference:.2e}",
        **_tower_values(config, processor),
    )
    usage = "_usage.md" if config.is_internvit else "_usage_r50.md"
    try:
        parts = {"showcase": _template("_showcase.md").substitute(values).rstrip() + "\n",
                 "usage": _template(usage).substitute(values).rstrip() + "\n"}
        card = _template(f"{name}.md").substitute(values, **parts)
    except (KeyError, ValueError) as error:
        raise CardError(f"model-card template for '{name}' has an unknown or malformed placeholder: {error}") from None
    path = folder / "README.md"
    path.write_text(card, encoding="utf-8")
    return path


TRAINED_CARD = "TokenOCR-trained"


def render_trained_card(
    config, processor, folder: Path, training: list[str], evaluation: str | None = None,
    title: str | None = None, base_model: str | None = None,
) -> Path:
    """
    Write `folder/README.md` for a model trained with `tokenocr train`: `training` is a list of facts (one bullet
    each: data, steps, time, objective), `evaluation` a Markdown block of figures (or `None`: not evaluated).
    Returns the card's path.
    """
    tower = _tower_values(config, processor)
    if config.is_internvit:
        model = (f"- Vision tower: InternViT (width {tower['vision_width']}, {tower['vision_layers']} layers), tiles of "
                 f"{tower['tile_size']} x {tower['tile_size']} pixels.\n- Upsampler: two stride-2 transposed "
                 "convolutions with BatchNorm (4x); projector: LayerNorm, Linear, GELU, Linear.")
    else:
        model = (f"- Vision tower: ResNet (stage depths {tower['depths']}, width {tower['vision_width']}), whole images "
                 f"(longest side at most {tower['max_side']} pixels).\n- Upsampler: two stride-2 transposed "
                 f"convolutions with BatchNorm (4x, to width {tower['upsampler_width']}); projector: Linear, GELU, Linear.")
    values = dict(
        model=model,
        title=title or "TokenOCR (fine-tuned)",
        base_model_line=f"base_model: {base_model}\n" if base_model and "/" in base_model else "",
        training="\n".join(f"- {fact}" for fact in training),
        evaluation=evaluation or "Not evaluated: run `tokenocr evaluate --model THIS_FOLDER --data DATASET`.",
        threshold=f"{processor.image_processor.mask_threshold:g}",
        hidden_size=config.hidden_size,
        vocab_size=config.vocab_size,
    )
    try:
        card = _template(f"{TRAINED_CARD}.md").substitute(values)
    except (KeyError, ValueError) as error:
        raise CardError(f"model-card template '{TRAINED_CARD}' has an unknown or malformed placeholder: {error}") from None
    path = Path(folder) / "README.md"
    path.write_text(card, encoding="utf-8")
    return path


__all__ = [
    "CardError",
    "EXAMPLE_PAGE",
    "EXAMPLE_PICTURE",
    "SAMPLE_PAGE",
    "SAMPLE_QUERY",
    "check_repo_id",
    "default_space_id",
    "render_card",
    "render_trained_card",
    "widget_metadata",
]
