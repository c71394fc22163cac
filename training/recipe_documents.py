# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
The recipe of the document model (`models/tokenocr-tiny-documents`): a small TokenOCR trained from nothing, on a
CPU, on real PDF documents made with real document tooling (`examples/documents/make_documents.py`: HTML through
headless Chromium, manual pages through groff). `examples/train_document_model.py` runs it end to end.

1. Tokenizer: character-level (SentencePiece with byte fallback, one piece per character of `CHARACTERS`), so that
   every word is made of known tokens; a query is found where its characters stand side by side (the query level).
2. Data: `tokenocr.training.pdf_data.make_data` on the training PDFs, each document at one resolution of `DPIS`
   and one look of `LOOKS` (clean, scanned, photographed), chosen by a seeded generator; then `WINDOWS_PER_PAGE`
   windows of `WINDOW` x `WINDOW` pixels per page, each holding text (`crop_windows`): the model sees pages at their
   own resolution, and a step costs a window, not a page.
3. Model: `document_config()`: the R50 variant's shape (a ResNet tower on whole pages, no tiles) at small widths
   with three stages (stride 16, so the map has one location per 4 x 4 pixels); processor defaults give a page whole
   at its own resolution up to `MAX_SIDE` pixels (a Letter page at 150 dpi is 1275 x 1650).
4. Training: transformers' `Trainer`, policy `vision` (the embedding table stays at its random initialisation),
   `LOSS_WEIGHTS` with our per-location `loss_seg` (`SEG_TEMPERATURE`), the authors' `loss_sim` and `loss_sig`.
"""

import random
from pathlib import Path

import numpy as np

from ..constants import ORIGINAL_FIXED_LOGIT_BIAS


CHARACTERS = (
    "".join(chr(code) for code in range(0x20, 0x7F))
    + "–—‘’“”•…€£¥°±×÷§©®™·¢µ¿¡"
    + "àáâãäåæçèéêëìíîïñòóôõöøùúûüýÿßÀÁÂÃÄÅÆÇÈÉÊËÌÍÎÏÑÒÓÔÕÖØÙÚÛÜÝœŒłŁšŠžŽčČćęąńśźż"
)
DATA_SEED = 1
MODEL_SEED = 0
DPIS = (100, 125, 150, 150, 175, 200)
LOOKS = ("none", "none", "none", "scan", "scan", "photo")
WINDOW = 384
WINDOWS_PER_PAGE = 6
MAX_SIDE = 2048
STAGES = {"embedding_size": 32, "hidden_sizes": [48, 96, 192], "depths": [2, 2, 2]}
HIDDEN_SIZE = 128
UPSAMPLER_HIDDEN_SIZE = 96
POLICY = "vision"
BATCH_SIZE = 12
LEARNING_RATE = 2e-3
LOSS_WEIGHTS = {"seg": 100.0, "sim": 1.0, "l2": 0.0, "sig": 1.0}
SEG_TEMPERATURE = (10.0, -5.0)
TITLE = "TokenOCR tiny (documents): a small TokenOCR that finds words on real document pages"


def document_tokenizer():
    """The character-level tokenizer: one piece per character of `CHARACTERS` (others fall back to bytes)."""
    from .tokenizer import BYTE_FALLBACK_LAYOUT, train_tokenizer

    lines = [CHARACTERS[start : start + 20] for start in range(0, len(CHARACTERS), 20)] * 4
    return train_tokenizer(lines, vocab_size=BYTE_FALLBACK_LAYOUT + len(set(CHARACTERS)))


def document_processor(tokenizer):
    """Whole pages at their own resolution (up to `MAX_SIDE`), on the three-stage tower's stride."""
    from ..processing import TokenOCRImageProcessor, TokenOCRProcessor

    image_processor = TokenOCRImageProcessor(do_tiling=False, max_side=MAX_SIDE, feature_stride=4 * 2 ** 2)
    return TokenOCRProcessor(image_processor=image_processor, tokenizer=tokenizer)


def document_config(vocab_size: int):
    """The model: a three-stage ResNet (basic blocks) tower, the upsampler and projector, a D=128 table."""
    from ..modeling import TokenOCRConfig

    return TokenOCRConfig(
        vision_config={"model_type": "resnet", "layer_type": "basic", "downsample_in_first_stage": False, **STAGES},
        hidden_size=HIDDEN_SIZE,
        vocab_size=vocab_size,
        upsampler_hidden_size=UPSAMPLER_HIDDEN_SIZE,
        fixed_logit_bias=ORIGINAL_FIXED_LOGIT_BIAS,
        architectures=["TokenOCRModel"],
    )


def rendition(pdf: Path, seed: int = DATA_SEED) -> tuple[int, str]:
    """The `(dpi, look)` a training document is rendered at: seeded by the file's name."""
    rng = random.Random(f"{seed}:{pdf.name}")
    return rng.choice(DPIS), rng.choice(LOOKS)


def crop_windows(source, destination, size: int = WINDOW, per_page: int = WINDOWS_PER_PAGE, seed: int = DATA_SEED,
                 progress=None) -> int:
    """
    Write `per_page` windows of `size` x `size` pixels of every page of the token-mask dataset `source` into the new
    dataset `destination`, each centred on a random token of the page; a token keeps its entry only if at least half
    of its pixels are inside the window (the pixels of one that is cut more are cleared). Returns the window count.
    """
    from PIL import Image

    from .data import TokenMaskDatasetWriter, mask_array, read_metadata

    rng = random.Random(seed)
    records = read_metadata(source)
    with TokenMaskDatasetWriter(destination) as writer:
        for record in progress(records) if progress else records:
            if not record["tokens"]:
                continue
            image = Image.open(record["image"]).convert("RGB")
            mask = mask_array(record["mask"])
            totals = np.bincount(mask.ravel(), minlength=65536)
            ys, xs = np.nonzero(mask)
            for _ in range(per_page):
                pick = rng.randrange(len(ys))
                left = int(np.clip(xs[pick] - rng.randrange(size), 0, max(0, image.width - size)))
                top = int(np.clip(ys[pick] - rng.randrange(size), 0, max(0, image.height - size)))
                window = mask[top : top + size, left : left + size].copy()
                inside = np.bincount(window.ravel(), minlength=65536)
                kept = [token for token in record["tokens"]
                        if inside[token["mask_index"]] * 2 >= totals[token["mask_index"]] > 0]
                keep = np.zeros(65536, dtype=bool)
                keep[[token["mask_index"] for token in kept]] = True
                window[~keep[window]] = 0
                if not kept:
                    continue
                crop = image.crop((left, top, left + size, top + size))  # pads with black past a small page's edge
                padded = np.zeros((size, size), dtype=np.int64)
                padded[: window.shape[0], : window.shape[1]] = window
                writer.add(crop, padded, kept, "")
        return writer.count


def card_text(figures: dict, trainer_facts: list[str]) -> tuple[list[str], str]:
    """The document model card's training facts and evaluation section, from `figures` (the example script's)."""
    from .evaluate import figures_table

    facts = [
        f"Trained from nothing on {figures['train_windows']} windows of {WINDOW} x {WINDOW} pixels cut from real PDF "
        "pages made with real document tooling (`examples/documents/make_documents.py`: HTML rendered by headless "
        "Chromium in 28 fonts and six layouts — articles, two-column papers, reports with tables, code listings, "
        "invoices, slides — and manual pages typeset by groff), through `tokenocr make-data`, each document at one of "
        f"{sorted(set(DPIS))} dpi, a third of them made to look scanned or photographed; a character-level tokenizer; "
        "the recipe and its seeds are `tokenocr.training.recipe_documents`, rebuilt by "
        "`python examples/train_document_model.py` (its docstring has the commands).",
        *trainer_facts,
        f"Training time: {figures['training_minutes']} min on a 2-core CPU.",
        f"Mask threshold chosen on 40 pages of the training documents: {figures['threshold']:g}.",
    ]
    heldout = figures["document model, held-out documents"]
    evaluation = (
        f"**Held-out documents**: {figures['heldout_pages']} pages at 150 dpi of documents of kinds never seen in "
        "training (other fonts: TeX Gyre, Latin Modern, Computer Modern; other layouts: LaTeX-like papers, letters, "
        "manuals; manual pages of another section in groff's Palatino and New Century Schoolbook), "
        f"{heldout['word_queries']} word queries (words of at least 3 characters, up to 8 per page), beside the "
        "synthetic demonstration model (`models/tokenocr-tiny-synthetic`) on the same pages:\n\n"
        + figures_table({"document model": heldout,
                         "synthetic model": figures["synthetic model, held-out documents"]})
        + "\n\n**Synthetic held-out pages** (the synthetic model's own held-out set: 60 pages, words never seen in "
        "its training, half in a font it never saw):\n\n"
        + figures_table({"document model": figures["document model, synthetic held-out"],
                         "synthetic model": figures["synthetic model, synthetic held-out"]})
        + "\n\nWord pointing: the query's map (`level=\"query\"`) peaks inside an occurrence of the word. Query box "
        "IoU: the query's best box against the nearest occurrence. Rare-word P@1: words found on one or two pages, "
        "the page with the best query score holds the word. A small model for Latin-script documents rendered at "
        "100-200 dpi; it has not seen handwriting, other scripts or real camera photos."
    )
    return facts, evaluation
