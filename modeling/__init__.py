"""TokenOCR configuration and model (also shipped flat as a converted folder's remote code)."""

from .configuration_tokenocr import TokenOCRConfig
from .modeling_tokenocr import TokenOCRModel, TokenOCROutput, TokenOCRPreTrainedModel


__all__ = ["TokenOCRConfig", "TokenOCRModel", "TokenOCROutput", "TokenOCRPreTrainedModel"]
