"""
`tokenocr.modeling`: `TokenOCRConfig`, `TokenOCRModel` and its training head `TokenOCRForTokenAlignment`, whose
losses are the functions of `loss_tokenocr`.

The `*_tokenocr.py` files here are also a converted hub folder's remote code (the converter copies them flat), so
they import only each other (relatively), transformers, torch, PIL, numpy and huggingface_hub. This `__init__.py` is
package-only: it loads its names on first use, so that `import tokenocr` stays instant.
"""

from typing import TYPE_CHECKING

from tokenocr._lazy import lazy_exports


# The files of this folder that a converted hub folder carries as its remote code.
REMOTE_CODE_FILES = ("configuration_tokenocr.py", "loss_tokenocr.py", "modeling_tokenocr.py")

_EXPORTS = {  # submodule -> the public names it defines
    "modeling_tokenocr": (
        "TokenOCRAlignmentOutput", "TokenOCRForTokenAlignment", "TokenOCRModel", "TokenOCROutput",
        "TokenOCRPreTrainedModel",
    ),
    "configuration_tokenocr": ("TokenOCRConfig",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .configuration_tokenocr import TokenOCRConfig
    from .modeling_tokenocr import (
        TokenOCRAlignmentOutput, TokenOCRForTokenAlignment, TokenOCRModel, TokenOCROutput, TokenOCRPreTrainedModel,
    )
