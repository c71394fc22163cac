"""TokenOCR image processor and processor (also shipped flat as a converted folder's remote code)."""

from .image_processing_tokenocr import TokenOCRImageProcessor
from .processing_tokenocr import TokenOCRProcessor, prepare_query, stitch_tiles


__all__ = ["TokenOCRImageProcessor", "TokenOCRProcessor", "prepare_query", "stitch_tiles"]
