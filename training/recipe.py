# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
A recipe for a small demonstration model trained from nothing on synthetic pages, on a CPU: every setting and seed.
`examples/train_demo_model.py` runs it end to end and reports held-out figures beside the untrained model's. (It
model it builds is the repository's demonstration model, `models/tokenocr-tiny-synthetic`.)

1. Tokenizer: character-level (SentencePiece with byte fallback and no merges: one piece per character seen in
   `TOKENIZER_LINES` lines written with the training words, `split_words()[0]`), so that words never seen in training
   are made of known tokens. (A 400-piece BPE vocabulary learned far more slowly at these sizes.)
2. Data: `TRAIN_PAGES` synthetic pages (generator seed `TRAIN_SEED`, training words) and `HELDOUT_PAGES` held-out
   pages (seed `HELDOUT_SEED`, held-out words only), all in the style `demo_style()`.
   `VALIDATION_PAGES` more pages (seed `VALIDATION_SEED`, training words) choose the mask threshold stored with the
   model; the held-out pages are used for the reported figures only, and half of their text blocks are set in
   `HELDOUT_FONT`, a font never used in training (Pillow's built-in font is the only training font).
3. Model: `demo_config()`, the TokenOCR architecture at small widths, initialised with `MODEL_SEED`; every part
   trained but the token-embedding table (policy `vision`), which stays at its random initialisation: a fixed set
   of target vectors, as the released models keep their language model's table frozen.
4. Training: transformers' `Trainer` (`demo_training_arguments()`) on `LOSS_WEIGHTS`: our per-location `loss_seg`
   with the temperature `SEG_TEMPERATURE` (logit `10 * cos - 5`) weighted by 100, plus the authors' `loss_sim` and
   `loss_sig`. The authors' `loss_l2` is left out (weight 0) because the runs that chose this recipe were measured
   without it. Each repeated token id of a page is supervised once with the union of its masks
   (`merge_repeated_tokens`), thumbnails left out.
"""

from pathlib import Path

from ..constants import ORIGINAL_FIXED_LOGIT_BIAS
from .synthetic import PageStyle, sample_sentences
from .tokenizer import BYTE_FALLBACK_LAYOUT
from .words import split_words


TOKENIZER_LINES = 5000
TOKENIZER_SEED = 0
TRAIN_PAGES = 4000
TRAIN_SEED = 1
HELDOUT_PAGES = 200
HELDOUT_SEED = 2
VALIDATION_PAGES = 100
VALIDATION_SEED = 3
HELDOUT_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # Debian's fonts-dejavu-core
MODEL_SEED = 0
TILE_SIZE = 112
MAX_TILES = 4
POLICY = "vision"
MAX_STEPS = 16000
BATCH_SIZE = 8
LEARNING_RATE = 2e-3
LOSS_WEIGHTS = {"seg": 100.0, "sim": 1.0, "l2": 0.0, "sig": 1.0}
SEG_TEMPERATURE = (10.0, -5.0)  # loss_seg's logit: scale * cosine + bias


def demo_style() -> PageStyle:
    """How the demonstration model's pages look (training and held-out alike)."""
    return PageStyle(
        tile_size=TILE_SIZE, max_tiles=MAX_TILES, font_size=(28, 40), max_rotation=2.0, noise=(0.0, 6.0),
        background_boxes=4, background_box_size=(6, 14), max_columns=1,
    )


def heldout_style() -> PageStyle:
    """The held-out pages' style: `demo_style()` with `HELDOUT_FONT` beside the built-in font."""
    import dataclasses

    if not Path(HELDOUT_FONT).is_file():
        raise FileNotFoundError(f"The held-out font {HELDOUT_FONT} is missing (Debian: apt-get install fonts-dejavu-core).")
    return dataclasses.replace(demo_style(), fonts=(HELDOUT_FONT,))


def demo_tokenizer():
    """The demonstration model's character-level tokenizer, trained from the training words."""
    from .tokenizer import train_tokenizer

    train_words, _ = split_words()
    lines = sample_sentences(train_words, TOKENIZER_LINES, seed=TOKENIZER_SEED, style=demo_style())
    return train_tokenizer(lines, vocab_size=BYTE_FALLBACK_LAYOUT + len(set("".join(lines))))


def demo_processor(tokenizer):
    """A `TokenOCRProcessor` with the demonstration model's tiling."""
    from ..processing import TokenOCRImageProcessor, TokenOCRProcessor

    image_processor = TokenOCRImageProcessor(size=TILE_SIZE, max_tiles=MAX_TILES)
    return TokenOCRProcessor(image_processor=image_processor, tokenizer=tokenizer)


def demo_config(vocab_size: int):
    """The demonstration model's configuration: TokenOCR's architecture at small widths."""
    from ..modeling import TokenOCRConfig

    return TokenOCRConfig(
        vision_config={
            "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 256,
            "image_size": TILE_SIZE, "patch_size": 14, "norm_type": "layer_norm", "use_qk_norm": False,
            "attention_bias": True, "layer_scale_init_value": 1.0, "layer_norm_eps": 1e-6,
        },
        hidden_size=128,
        vocab_size=vocab_size,
        upsampler_hidden_size=64,
        fixed_logit_bias=ORIGINAL_FIXED_LOGIT_BIAS,  # the authors' constant SigLIP bias
        architectures=["TokenOCRModel"],
    )


SPLITS = ("train", "validation", "heldout")


def generate_demo_data(folder, tokenizer, split: str, num_pages: int | None = None, progress=None) -> Path:
    """The recipe's pages of `split` (one of `SPLITS`); `num_pages` overrides the recipe's count."""
    from .synthetic import generate_dataset

    train_words, heldout_words = split_words()
    words, seed, default, style = {
        "train": (train_words, TRAIN_SEED, TRAIN_PAGES, demo_style()),
        "validation": (train_words, VALIDATION_SEED, VALIDATION_PAGES, demo_style()),
        "heldout": (heldout_words, HELDOUT_SEED, HELDOUT_PAGES, heldout_style()),
    }[split]
    return generate_dataset(
        folder, tokenizer, num_pages or default, seed=seed, words=words, style=style, progress=progress
    )


def demo_training_arguments(output_dir, **overrides):
    """`TrainingArguments` of the recipe (CPU, float32)."""
    from .train import default_training_arguments

    settings = {
        "max_steps": MAX_STEPS, "per_device_train_batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE,
        "warmup_steps": 0.05, "logging_steps": 50, "save_steps": 1000, "save_total_limit": 1,
        "dataloader_num_workers": 1, "seed": MODEL_SEED, "use_cpu": True, "bf16": False, "disable_tqdm": False,
    }
    settings.update(overrides)
    return default_training_arguments(output_dir, **settings)


def demo_card_text(figures: dict, trainer_facts: list[str]) -> tuple[list[str], str]:
    """The demonstration model card's training facts and evaluation section, from `figures` (the example's)."""
    from .evaluate import figures_table

    trained, untrained = figures["trained"], figures["untrained"]
    facts = [
        f"Trained from nothing on {figures['train_pages']} synthetic pages (`tokenocr.training.synthetic`, seed "
        f"{TRAIN_SEED}, training words, Pillow's built-in font only), with a character-level tokenizer learned from "
        f"the training words; the recipe and its seeds are `tokenocr.training.recipe`, rebuilt by "
        "`python examples/train_demo_model.py --work WORK --output OUT`.",
        *trainer_facts,
        f"Training time: {figures['training_minutes']} min on a CPU (one thread).",
        f"Mask threshold chosen on {figures['validation_pages']} validation pages (seed {VALIDATION_SEED}): "
        f"{figures['threshold']:g}.",
    ]
    evaluation = (
        f"On {trained['pages']} held-out synthetic pages (seed {HELDOUT_SEED}; words never seen in training; about "
        f"half of the text blocks in DejaVu Sans, a font never seen in training), {trained['tokens']} (page, token) pairs, "
        f"at the stored threshold {figures['threshold']:g}, beside the same model before training:\n\n"
        + figures_table({"trained": trained, "untrained (same seed)": untrained})
        + "\n\nThis is a small demonstration model for synthetic pages (Latin letters, digits, a few punctuation marks); "
        "it is not a substitute for the released TokenOCR models on real documents."
    )
    return facts, evaluation


DEMO_TITLE = "TokenOCR tiny (synthetic pages): the demonstration model"
SAMPLE_LINES = ("Bank account", "balance 2024", "check the", "address")  # held-out words: never seen in training
SAMPLE_QUERIES = ("2024", "Bank")  # characters written once on the page (a character-level model lights each occurrence)


def render_sample_page(lines=SAMPLE_LINES, font_size: int = 32):
    """The demonstration model's sample page: `lines` in Pillow's built-in font on a 2 x 2-tile page (224 x 224)."""
    from PIL import Image, ImageDraw

    from .synthetic import load_font

    side = 2 * TILE_SIZE
    page = Image.new("RGB", (side, side), (250, 248, 240))
    draw = ImageDraw.Draw(page)
    font = load_font(None, font_size)
    pitch = (side - 16) // len(lines)
    for number, line in enumerate(lines):
        draw.text((10, 10 + number * pitch), line, font=font, fill=(25, 25, 35))
    return page
