# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""Train a small SentencePiece BPE tokenizer laid out like the original InternLM2 one, as a fast tokenizer."""

import io
import json
import tempfile
from pathlib import Path


# Pieces every tokenizer trained here has before any character: <unk>, <s>, </s> and the 256 byte pieces.
BYTE_FALLBACK_LAYOUT = 3 + 256


def train_sentencepiece(texts, vocab_size: int = 512) -> bytes:
    r"""
    A SentencePiece BPE model (the bytes of `tokenizer.model`) trained on `texts`, with the original tokenizer's
    layout: ids 0/1/2 are `<unk>`/`<s>`/`</s>`, byte fallback (the 256 byte pieces count in `vocab_size`), digits
    split, no normalisation and no dummy prefix (queries get their leading space from the query rule).

    Args:
        texts (iterable of `str`): training sentences; give them the leading space that pages and queries get.
        vocab_size (`int`): total vocabulary, byte pieces and specials included: at least `BYTE_FALLBACK_LAYOUT` plus
            the number of distinct characters of `texts` (exactly that gives a character-level tokenizer).
    """
    try:
        import sentencepiece as spm
    except ImportError as error:
        raise ImportError("Training a tokenizer needs sentencepiece: pip install 'tokenocr[dev]'") from error
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise ValueError("No text to train the tokenizer on.")
    characters = len(set("".join(texts)))  # every character gets a piece (full coverage)
    if vocab_size < BYTE_FALLBACK_LAYOUT + characters:
        raise ValueError(
            f"vocab_size {vocab_size} is too small for the {characters} distinct characters of the texts: it needs at "
            f"least {BYTE_FALLBACK_LAYOUT + characters} (3 specials, 256 byte pieces, one piece per character)."
        )
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        add_dummy_prefix=False,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def build_fast_tokenizer(model_bytes: bytes):
    """
    The fast tokenizer for a SentencePiece model, via the project's converter (`convert_tokenizer`), with the
    original's special-token settings (BOS added by a plain call, `</s>` as padding).
    """
    from ..conversion.tokenizer import convert_tokenizer

    settings = {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
        "pad_token": "</s>", "unk_token": "<unk>", "clean_up_tokenization_spaces": False,
    }
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "tokenizer.model").write_bytes(model_bytes)
        (Path(folder) / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
        return convert_tokenizer(folder)


def train_tokenizer(texts, vocab_size: int = 512):
    """`train_sentencepiece` then `build_fast_tokenizer`: a small fast tokenizer trained on `texts`."""
    return build_fast_tokenizer(train_sentencepiece(texts, vocab_size))
