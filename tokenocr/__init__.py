"""TokenOCR for Transformers.

Importing `tokenocr` registers TokenOCR with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoImageProcessor`, `AutoProcessor`) and the `token-similarity` pipeline, so folders with
`model_type: tokenocr` load without remote code.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY

from .modeling import TokenOCRConfig, TokenOCRModel, TokenOCROutput, TokenOCRPreTrainedModel
from .processing import TokenOCRImageProcessor, TokenOCRProcessor, TokenSimilarityPipeline


__version__ = "0.1.0"

AutoConfig.register(TokenOCRConfig.model_type, TokenOCRConfig, exist_ok=True)
AutoModel.register(TokenOCRConfig, TokenOCRModel, exist_ok=True)
AutoImageProcessor.register(TokenOCRConfig, slow_image_processor_class=TokenOCRImageProcessor, exist_ok=True)
AutoProcessor.register(TokenOCRConfig, TokenOCRProcessor, exist_ok=True)
if "token-similarity" not in PIPELINE_REGISTRY.get_supported_tasks():
    PIPELINE_REGISTRY.register_pipeline(
        "token-similarity", pipeline_class=TokenSimilarityPipeline, pt_model=AutoModel, type="multimodal"
    )

__all__ = [
    "TokenOCRConfig",
    "TokenOCRImageProcessor",
    "TokenOCRModel",
    "TokenOCROutput",
    "TokenOCRPreTrainedModel",
    "TokenOCRProcessor",
    "TokenSimilarityPipeline",
]
