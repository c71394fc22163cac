"""TokenOCR image processor and processor (also shipped flat as a converted folder's remote code)."""

from .image_processing_tokenocr import TokenOCRImageProcessor
from .pipeline_tokenocr import TokenSimilarityPipeline, mask_to_boxes, relevance_score
from .processing_tokenocr import TokenOCRProcessor, prepare_query, stitch_tiles


__all__ = [
    "TokenOCRImageProcessor",
    "TokenOCRProcessor",
    "TokenSimilarityPipeline",
    "mask_to_boxes",
    "prepare_query",
    "relevance_score",
    "stitch_tiles",
]
