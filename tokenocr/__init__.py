"""
TokenOCR for Transformers.

`import tokenocr` registers TokenOCR with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoImageProcessor`, `AutoProcessor`) and the `token-similarity` pipeline, so folders with `model_type: tokenocr`
load with the installed classes and without remote code. The import itself is instant: the classes below, and
transformers and torch, are loaded on first use (see `_registration.py` for how registration still happens as soon
as transformers is imported).

Where things live: `tokenocr.modeling` (config and model) and `tokenocr.processing` (image processor, processor,
pipeline) are also the hub's remote code; `tokenocr.conversion` reads original checkpoints and converts them;
`tokenocr.cli` is the command line. See ARCHITECTURE.md.
"""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports
from ._registration import register_now_or_when_transformers_is_imported


__version__ = "0.1.0"

_EXPORTS = {  # submodule -> the public names it defines
    "modeling": (
        "TokenOCRConfig", "TokenOCRForTokenAlignment", "TokenOCRModel", "TokenOCROutput", "TokenOCRPreTrainedModel",
    ),
    "processing": ("TokenOCRImageProcessor", "TokenOCRProcessor", "TokenSimilarityPipeline"),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .modeling import (
        TokenOCRConfig, TokenOCRForTokenAlignment, TokenOCRModel, TokenOCROutput, TokenOCRPreTrainedModel,
    )
    from .processing import TokenOCRImageProcessor, TokenOCRProcessor, TokenSimilarityPipeline

register_now_or_when_transformers_is_imported()
