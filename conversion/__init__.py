"""
`tokenocr.conversion`: original TokenOCR checkpoints (InternVL-style `internvl_chat` folders of the ViT releases, and
the R50 release's `checkpoint.pth` or its two parts) to TokenOCR models.

- `weights.py`: reading weight files (safetensors or pickled `.bin`/`.pth`, lazily, never outside the checkpoint
  folder);
- `tokenizer.py`: the SentencePiece `tokenizer.model` as a fast tokenizer (from the folder, or given separately);
- `original.py`: the original config and names translated, `load_original`, which reads either kind of folder;
- `original_r50.py`: the R50 release (ResNet-50 tower; depths and widths from the tensors);
- `convert.py`: `tokenocr-convert`, a verified hub-ready folder; `hub_check.py`: the verification run in a clean
  process with transformers alone.

Package-only (not remote code). Names are loaded on first use, so that `import tokenocr` stays instant.
"""

from typing import TYPE_CHECKING

from tokenocr._lazy import lazy_exports


_EXPORTS = {  # submodule -> the public names it defines
    "weights": ("CheckpointError",),
    "original": ("OriginalCheckpoint", "load_original", "rename_key"),
    "original_r50": ("OriginalR50Checkpoint",),
    "tokenizer": ("convert_tokenizer",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .original import OriginalCheckpoint, load_original, rename_key
    from .original_r50 import OriginalR50Checkpoint
    from .tokenizer import convert_tokenizer
    from .weights import CheckpointError
