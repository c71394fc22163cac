# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
A recipe for a small demonstration model trained from nothing on synthetic pages, on a CPU: every setting and seed.
`examples/train_demo_model.py` runs it end to end and reports held-out figures beside the untrained model's. (It
does not yet reach the accuracy a bundled default model needs; see the README's fine-tuning section.)

1. Tokenizer: character-level (SentencePiece with byte fallback and no merges: one piece per character seen in
   `TOKENIZER_LINES` lines written with the training words, `split_words()[0]`), so that words never seen in training
   are made of known tokens. (A 400-piece BPE vocabulary learned far more slowly at these sizes.)
2. Data: `TRAIN_PAGES` synthetic pages (generator seed `TRAIN_SEED`, training words) and `HELDOUT_PAGES` held-out
   pages (seed `HELDOUT_SEED`, held-out words only), all in the style `demo_style()`.
3. Model: `demo_config()`, the TokenOCR architecture at small widths, initialised with `MODEL_SEED`; every part
   trained but the token-embedding table (policy `vision`), which stays at its random initialisation: a fixed set
   of target vectors, as the released models keep their language model's table frozen.
4. Training: the original objective on transformers' `Trainer` (`demo_training_arguments()`) with `loss_seg`
   weighted by 100 (`LOSS_WEIGHTS`), each repeated token id of a page supervised once with the union of its masks
   (`merge_repeated_tokens`), thumbnails left out.
"""

from pathlib import Path

from .synthetic import PageStyle, sample_sentences
from .tokenizer import BYTE_FALLBACK_LAYOUT
from .words import split_words


TOKENIZER_LINES = 5000
TOKENIZER_SEED = 0
TRAIN_PAGES = 3000
TRAIN_SEED = 1
HELDOUT_PAGES = 200
HELDOUT_SEED = 2
MODEL_SEED = 0
TILE_SIZE = 112
MAX_TILES = 4
POLICY = "vision"
MAX_STEPS = 3500
BATCH_SIZE = 8
LEARNING_RATE = 2e-3
LOSS_WEIGHTS = (100.0, 1.0, 1.0)  # seg, sim, sig: loss_seg, the only per-location term, weighted up


def demo_style() -> PageStyle:
    """How the demonstration model's pages look (training and held-out alike)."""
    return PageStyle(
        tile_size=TILE_SIZE, max_tiles=MAX_TILES, font_size=(28, 40), max_rotation=2.0, noise=(0.0, 6.0),
        background_boxes=4, background_box_size=(6, 14), max_columns=1,
    )


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
        fixed_logit_bias=-8.9375,
        architectures=["TokenOCRModel"],
    )


def generate_demo_data(folder, tokenizer, heldout: bool, num_pages: int | None = None) -> Path:
    """The training pages (`heldout=False`) or the held-out pages (`heldout=True`) of the recipe."""
    from .synthetic import generate_dataset

    train_words, heldout_words = split_words()
    words, seed = (heldout_words, HELDOUT_SEED) if heldout else (train_words, TRAIN_SEED)
    default = HELDOUT_PAGES if heldout else TRAIN_PAGES
    return generate_dataset(folder, tokenizer, num_pages or default, seed=seed, words=words, style=demo_style())


def demo_training_arguments(output_dir, **overrides):
    """`TrainingArguments` of the recipe (CPU, float32)."""
    from .train import default_training_arguments

    settings = {
        "max_steps": MAX_STEPS, "per_device_train_batch_size": BATCH_SIZE, "learning_rate": LEARNING_RATE,
        "warmup_steps": 0.05, "logging_steps": 50, "save_steps": 500, "save_total_limit": 1,
        "dataloader_num_workers": 1, "seed": MODEL_SEED, "use_cpu": True, "bf16": False, "disable_tqdm": True,
    }
    settings.update(overrides)
    return default_training_arguments(output_dir, **settings)
