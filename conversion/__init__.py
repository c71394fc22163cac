"""
`tokenocr.conversion`: original TokenOCR checkpoints (InternVL-style `internvl_chat` folders) to TokenOCR models.

- `weights.py`: reading weight files (safetensors or pickled `.bin`, lazily, never outside the checkpoint folder);
- `tokenizer.py`: the SentencePiece `tokenizer.model` as a fast tokenizer;
- `original.py`: the original config and names translated, `load_original`;
- `convert.py`: `tokenocr-convert`, a verified hub-ready folder; `hub_check.py`: the verification run in a clean
  process with transformers alone.

Package-only (not remote code). Names are loaded on first use, so that `import tokenocr` stays instant.
"""

from typing import TYPE_CHECKING

from tokenocr._lazy import lazy_exports


_EXPORTS = {
    "CheckpointError": "weights",
    "OriginalCheckpoint": "original",
    "convert_tokenizer": "tokenizer",
    "load_original": "original",
    "rename_key": "original",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .original import OriginalCheckpoint, load_original, rename_key
    from .tokenizer import convert_tokenizer
    from .weights import CheckpointError
