# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""TokenOCR model configuration."""

import math

from huggingface_hub.dataclasses import strict
from transformers import InternVLVisionConfig, PreTrainedConfig


@strict
class TokenOCRConfig(PreTrainedConfig):
    r"""
    Configuration of a [`TokenOCRModel`]: an InternViT vision tower, a 4x transposed-convolution upsampler, a
    projector into the token-embedding space, and the token-embedding table of the language model TokenOCR was
    trained against. Every width of the model is read from here. How images are cut into tiles (tile size, number of
    tiles, thumbnail) is the image processor's business and lives in its own configuration
    ([`TokenOCRImageProcessor`]), not here.

    Args:
        vision_config (`dict` or `InternVLVisionConfig`, *optional*):
            Configuration of the vision tower (transformers' `InternVLVisionConfig`). The released models use
            InternViT-300M: width 1024, 24 layers, 16 heads, patch 14, tile 448.
        hidden_size (`int`, *optional*, defaults to 4096):
            Width `D` of the token embeddings and of the projected image features (4096 for the English
            release, 2048 for the bilingual one).
        vocab_size (`int`, *optional*, defaults to 92553):
            Number of rows of the token-embedding table.
        pad_token_id (`int`, *optional*, defaults to 2):
            Padding index of the token-embedding table.
        upsampler_hidden_size (`int`, *optional*, defaults to 512):
            Channels between the two transposed convolutions of the upsampler.
        vision_feature_layer (`int`, *optional*, defaults to -1):
            Index into the vision tower's hidden states (0 = patch embeddings, -1 = last layer) that feeds the
            upsampler; the original checkpoints call it `select_layer`.
        projector_layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the projector's LayerNorm.
        batch_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the upsampler's BatchNorm layers.
        logit_scale_init_value (`float`, *optional*, defaults to `log(10)`):
            Initial value of `logit_scale` (the original's `t_prime`, a log temperature).
        logit_bias_init_value (`float`, *optional*, defaults to -2.71):
            Initial value of `logit_bias` (the original's `b`).
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of linear and embedding weights.

    Example:

    ```python
    >>> from tokenocr.modeling import TokenOCRConfig, TokenOCRModel

    >>> config = TokenOCRConfig(hidden_size=2048)
    >>> model = TokenOCRModel(config)
    ```"""

    model_type = "tokenocr"
    sub_configs_defaults = {"vision_config": InternVLVisionConfig}

    vision_config: dict | PreTrainedConfig | None = None
    hidden_size: int = 4096
    vocab_size: int = 92553
    pad_token_id: int | None = 2
    upsampler_hidden_size: int = 512
    vision_feature_layer: int = -1
    projector_layer_norm_eps: float = 1e-5
    batch_norm_eps: float = 1e-5
    logit_scale_init_value: float = math.log(10)
    logit_bias_init_value: float = -2.71
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self._check_consistency()

    def _check_consistency(self):
        """Raise a `ValueError` naming the first pair of settings that cannot describe one model."""
        vision = self.vision_config
        for name in ("hidden_size", "vocab_size", "upsampler_hidden_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TokenOCRConfig.{name} must be a positive integer, got {value!r}.")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"TokenOCRConfig.pad_token_id={self.pad_token_id} is outside the embedding table "
                f"(vocab_size={self.vocab_size})."
            )
        if vision.hidden_size % vision.num_attention_heads:
            raise ValueError(
                f"vision_config.hidden_size={vision.hidden_size} is not divisible by "
                f"vision_config.num_attention_heads={vision.num_attention_heads}."
            )
        sizes = {"patch_size": vision.patch_size, "image_size": vision.image_size}
        for name, value in sizes.items():
            if not all(isinstance(side, int) and not isinstance(side, bool) and side > 0 for side in value):
                raise ValueError(f"vision_config.{name} must be positive integers, got {list(value)}.")
        if any(image % patch for image, patch in zip(vision.image_size, vision.patch_size)):
            raise ValueError(
                f"vision_config.image_size={list(vision.image_size)} is not a multiple of "
                f"vision_config.patch_size={list(vision.patch_size)}."
            )
        num_hidden_states = vision.num_hidden_layers + 1
        if not -num_hidden_states <= self.vision_feature_layer < num_hidden_states:
            raise ValueError(
                f"TokenOCRConfig.vision_feature_layer={self.vision_feature_layer} does not select one of the "
                f"{num_hidden_states} hidden states of a {vision.num_hidden_layers}-layer vision tower."
            )

    @property
    def num_vision_layers_used(self) -> int:
        """How many vision-tower layers must run to produce hidden state `vision_feature_layer`."""
        return self.vision_feature_layer % (self.vision_config.num_hidden_layers + 1)


__all__ = ["TokenOCRConfig"]
