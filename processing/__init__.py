"""
`tokenocr.processing`: `TokenOCRImageProcessor`, `TokenOCRProcessor` and the `token-similarity` pipeline.

The `*_tokenocr.py` files here are also a converted hub folder's remote code (the converter copies them flat), so
they import only each other (relatively), transformers, torch, PIL, numpy and huggingface_hub. This `__init__.py` is
package-only: it loads its names on first use, so that `import tokenocr` stays instant.
"""

from typing import TYPE_CHECKING

from tokenocr._lazy import lazy_exports


# The files of this folder that a converted hub folder carries as its remote code.
REMOTE_CODE_FILES = (
    "settings_tokenocr.py",
    "pages_tokenocr.py",
    "image_processing_tokenocr.py",
    "processing_tokenocr.py",
    "pipeline_tokenocr.py",
    "visualization_tokenocr.py",
    "query_tokenocr.py",
)

_EXPORTS = {  # submodule -> the public names it defines
    "image_processing_tokenocr": ("TokenOCRImageProcessor",),
    "processing_tokenocr": ("TokenOCRProcessor", "prepare_query", "stitch_tiles", "whole_image_map"),
    "pipeline_tokenocr": ("TokenSimilarityPipeline", "relevance_score"),
    "visualization_tokenocr": ("mask_to_boxes",),
    "pages_tokenocr": ("read_pages",),
    "query_tokenocr": ("query_similarity",),
}
__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .image_processing_tokenocr import TokenOCRImageProcessor
    from .pages_tokenocr import read_pages
    from .pipeline_tokenocr import TokenSimilarityPipeline, relevance_score
    from .visualization_tokenocr import mask_to_boxes
    from .processing_tokenocr import TokenOCRProcessor, prepare_query, stitch_tiles, whole_image_map
