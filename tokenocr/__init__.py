"""TokenOCR for Transformers.

Importing `tokenocr` registers TokenOCR with transformers' Auto classes (`AutoConfig`, `AutoModel`,
`AutoImageProcessor`, `AutoProcessor`), so folders with `model_type: tokenocr` load without remote code.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

from .modeling import TokenOCRConfig, TokenOCRModel, TokenOCROutput, TokenOCRPreTrainedModel
from .processing import TokenOCRImageProcessor, TokenOCRProcessor


__version__ = "0.1.0"

AutoConfig.register(TokenOCRConfig.model_type, TokenOCRConfig, exist_ok=True)
AutoModel.register(TokenOCRConfig, TokenOCRModel, exist_ok=True)
AutoImageProcessor.register(TokenOCRConfig, slow_image_processor_class=TokenOCRImageProcessor, exist_ok=True)
AutoProcessor.register(TokenOCRConfig, TokenOCRProcessor, exist_ok=True)

__all__ = [
    "TokenOCRConfig",
    "TokenOCRImageProcessor",
    "TokenOCRModel",
    "TokenOCROutput",
    "TokenOCRPreTrainedModel",
    "TokenOCRProcessor",
]
