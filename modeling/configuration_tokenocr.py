# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""TokenOCR model configuration."""

import math

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .loss_tokenocr import check_seg_temperature, resolve_loss_weights


# The settings of the training head's loss (`TokenOCRForTokenAlignment`), kept in the config so that a saved head keeps them.
LOSS_SETTINGS = ("loss_weights", "seg_logit_scale", "seg_logit_bias", "learn_seg_temperature")

# The vision towers a TokenOCR model can have, by `vision_config.model_type`.
INTERNVIT = "internvl_vision"  # transformers' InternVLVisionModel: the ViT releases (tiles)
RESNET = "resnet"  # transformers' ResNetModel: the R50 release (whole images)
VISION_TOWERS = (INTERNVIT, RESNET)


@strict
class TokenOCRConfig(PreTrainedConfig):
    r"""
    Configuration of a [`TokenOCRModel`]: a vision tower, a 4x transposed-convolution upsampler, a projector into the
    token-embedding space, and the token-embedding table of the language model TokenOCR was trained against. Every
    width of the model is read from here. How images are cut into tiles (tile size, number of tiles, thumbnail) or
    given whole is the image processor's business and lives in its own configuration ([`TokenOCRImageProcessor`]).

    The vision tower is chosen by `vision_config`'s `model_type`:

    - `"internvl_vision"` (the default, also for a `vision_config` dict without `model_type`): transformers'
      `InternVLVisionModel`, the InternViT tower of the ViT releases (English 4096, bilingual 2048), run on tiles.
    - `"resnet"`: transformers' `ResNetModel` (bottleneck blocks), the tower of the R50 release, run on whole
      images; its last stage (width `hidden_sizes[-1]`; stride 32 with the R50 release's four stages, 16 or 8 with
      three or two, `resnet_stride`) feeds the upsampler.

    Args:
        vision_config (`dict`, `InternVLVisionConfig` or `ResNetConfig`, *optional*):
            Configuration of the vision tower. The ViT releases use InternViT-300M (width 1024, 24 layers, 16 heads,
            patch 14, tile 448); the R50 release a ResNet-50 (`ResNetConfig()`: depths 3, 4, 6, 3, widths 256, 512,
            1024, 2048).
        hidden_size (`int`, *optional*, defaults to 4096):
            Width `D` of the token embeddings and of the projected image features (4096 for the English
            release, 2048 for the bilingual one).
        vocab_size (`int`, *optional*, defaults to 92553):
            Number of rows of the token-embedding table.
        pad_token_id (`int`, *optional*, defaults to 2):
            Padding index of the token-embedding table.
        upsampler_hidden_size (`int`, *optional*, defaults to 512):
            Channels between the two transposed convolutions of the upsampler.
        upsampler_output_size (`int`, *optional*):
            Channels the upsampler ends with, the projector's input width. Defaults to the vision width for an
            InternViT tower (the ViT releases go back to it) and to `upsampler_hidden_size` for a ResNet tower (the R50
            release stays at the middle width).
        projector_layer_norm (`bool`, *optional*):
            Whether the projector starts with a LayerNorm. Defaults to `True` for an InternViT tower (the ViT
            releases) and `False` for a ResNet tower (the R50 release has none).
        vision_feature_layer (`int`, *optional*, defaults to -1):
            Index into the vision tower's hidden states (0 = patch embeddings, -1 = last layer) that feeds the
            upsampler; the original checkpoints call it `select_layer`. A ResNet tower always uses its last stage
            (-1).
        projector_layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the projector's LayerNorm.
        batch_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the upsampler's BatchNorm layers.
        logit_scale_init_value (`float`, *optional*, defaults to `log(10)`):
            Initial value of `logit_scale` (the original's `t_prime`, a log temperature).
        logit_bias_init_value (`float`, *optional*, defaults to -2.71):
            Initial value of `logit_bias` (the original's `b`).
        fixed_logit_bias (`float`, *optional*):
            Which bias `logits` and the sigmoid (SigLIP-style) training loss use. `None` (default): the learned
            `logit_bias` parameter. A number: that constant, and `logit_bias` is then neither used nor trained. The
            released TokenOCR models were trained with the constant -8.9375 (their stored `b`, -2.71, was never
            trained), so `load_original` and `tokenocr-convert` set -8.9375 for original checkpoints.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialiser of linear and embedding weights.
        loss_weights (`dict[str, float]`, *optional*):
            Training head ([`TokenOCRForTokenAlignment`]) only: the weights of the loss components `seg`, `sim`, `l2`,
            `sig` in its `loss`; names left out keep their default, the authors' objective (`seg` 0, the others 1).
            Stored whole (all four names) once the config is built.
        seg_logit_scale (`float`, *optional*, defaults to 10.0):
            Training head only: the scale of `loss_seg`'s logit, `seg_logit_scale * cos + seg_logit_bias` (the
            starting value when `learn_seg_temperature`). A raw cosine (scale 1, bias 0) keeps the sigmoid within
            0.27-0.73 and learns far more slowly.
        seg_logit_bias (`float`, *optional*, defaults to -5.0):
            Training head only: the bias of `loss_seg`'s logit (the starting value when `learn_seg_temperature`).
        learn_seg_temperature (`bool`, *optional*, defaults to `False`):
            Training head only: train `loss_seg`'s scale (as its logarithm) and bias, starting from the values above.
            They are then weights of the head (saved with it), never of a [`TokenOCRModel`].

    Example:

    ```python
    >>> from tokenocr.modeling import TokenOCRConfig, TokenOCRModel

    >>> config = TokenOCRConfig(hidden_size=2048)  # InternViT tower, bilingual width
    >>> model = TokenOCRModel(config)

    >>> r50 = TokenOCRConfig(vision_config={"model_type": "resnet"}, hidden_size=2048)  # the R50 release's shape
    >>> (r50.upsampler_output_size, r50.projector_layer_norm)
    (512, False)
    ```"""

    model_type = "tokenocr"
    sub_configs_defaults = {"vision_config": SubConfigSpec(AutoConfig, model_type=INTERNVIT)}

    vision_config: dict | PreTrainedConfig | None = None
    hidden_size: int = 4096
    vocab_size: int = 92553
    pad_token_id: int | None = 2
    upsampler_hidden_size: int = 512
    upsampler_output_size: int | None = None
    projector_layer_norm: bool | None = None
    vision_feature_layer: int = -1
    projector_layer_norm_eps: float = 1e-5
    batch_norm_eps: float = 1e-5
    logit_scale_init_value: float = math.log(10)
    logit_bias_init_value: float = -2.71
    fixed_logit_bias: float | None = None
    initializer_range: float = 0.02
    loss_weights: dict | None = None
    seg_logit_scale: float = 10.0
    seg_logit_bias: float = -5.0
    learn_seg_temperature: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.vision_config.model_type not in VISION_TOWERS:
            raise ValueError(
                f"vision_config.model_type must be one of {', '.join(map(repr, VISION_TOWERS))}, got "
                f"{self.vision_config.model_type!r}."
            )
        if self.upsampler_output_size is None:
            self.upsampler_output_size = self.vision_width if self.is_internvit else self.upsampler_hidden_size
        if self.projector_layer_norm is None:
            self.projector_layer_norm = self.is_internvit
        self._check_consistency()
        self.update_loss_settings()

    def update_loss_settings(self, **settings) -> None:
        """
        Set the training head's loss settings (`loss_weights`, `seg_logit_scale`, `seg_logit_bias`,
        `learn_seg_temperature`; those not given keep their value), checked first: a `ValueError` leaves the config
        as it was. `loss_weights` is completed with the defaults of the names it leaves out.
        """
        unknown = set(settings) - set(LOSS_SETTINGS)
        if unknown:
            raise TypeError(f"Unknown loss setting(s) {', '.join(sorted(unknown))}; the settings are {', '.join(LOSS_SETTINGS)}.")
        values = {name: getattr(self, name) for name in LOSS_SETTINGS} | settings
        values["loss_weights"] = resolve_loss_weights(values["loss_weights"])
        check_seg_temperature(values["seg_logit_scale"], values["seg_logit_bias"])
        values["seg_logit_scale"], values["seg_logit_bias"] = float(values["seg_logit_scale"]), float(values["seg_logit_bias"])
        values["learn_seg_temperature"] = bool(values["learn_seg_temperature"])
        for name, value in values.items():
            setattr(self, name, value)

    @property
    def is_internvit(self) -> bool:
        """Whether the vision tower is InternViT (tiles) rather than ResNet (whole images)."""
        return self.vision_config.model_type == INTERNVIT

    @property
    def vision_width(self) -> int:
        """Channels of the vision tower's output that feeds the upsampler."""
        vision = self.vision_config
        return vision.hidden_size if self.is_internvit else vision.hidden_sizes[-1]

    def _check_consistency(self):
        """Raise a `ValueError` naming the first pair of settings that cannot describe one model."""
        for name in ("hidden_size", "vocab_size", "upsampler_hidden_size", "upsampler_output_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"TokenOCRConfig.{name} must be a positive integer, got {value!r}.")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"TokenOCRConfig.pad_token_id={self.pad_token_id} is outside the embedding table "
                f"(vocab_size={self.vocab_size})."
            )
        if self.is_internvit:
            self._check_internvit()
        else:
            self._check_resnet()

    def _check_internvit(self):
        vision = self.vision_config
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

    def _check_resnet(self):
        vision = self.vision_config
        stages = len(vision.depths)
        if stages < 1 or len(vision.hidden_sizes) != stages:
            raise ValueError(
                f"vision_config has {stages} stage depths but {len(vision.hidden_sizes)} stage widths (hidden_sizes)."
            )
        values = [vision.embedding_size, *vision.hidden_sizes, *vision.depths]
        if not all(isinstance(value, int) and not isinstance(value, bool) and value > 0 for value in values):
            raise ValueError(
                f"vision_config widths and depths must be positive integers, got embedding_size="
                f"{vision.embedding_size}, hidden_sizes={list(vision.hidden_sizes)}, depths={list(vision.depths)}."
            )
        if not 2 <= stages <= 4 or vision.downsample_in_first_stage:
            raise ValueError(
                f"vision_config must describe a ResNet with 2 to 4 stages and no downsampling in the first one (output "
                f"stride 8 to 32: the image processor's feature_stride), got {stages} stages, "
                f"downsample_in_first_stage={vision.downsample_in_first_stage}."
            )
        if self.vision_feature_layer not in (-1, stages):
            raise ValueError(
                f"TokenOCRConfig.vision_feature_layer={self.vision_feature_layer}: a ResNet tower feeds the upsampler "
                f"from its last stage (-1)."
            )

    @property
    def resnet_stride(self) -> int:
        """ResNet tower: pixels per location of its last stage (32 with four stages, as the R50 release; 16 with
        three; 8 with two); the image processor's `feature_stride` must equal it."""
        if self.is_internvit:
            raise ValueError("An InternViT tower works on tiles: its stride is the patch size.")
        return 4 * 2 ** (len(self.vision_config.depths) - 1)

    @property
    def feature_side(self) -> int:
        """InternViT: the side of one tile's feature map, 4x its patch grid (the upsampler doubles it twice)."""
        if not self.is_internvit:
            raise ValueError("A ResNet tower has no fixed feature grid: its map size follows each image's size.")
        return 4 * (self.vision_config.image_size[0] // self.vision_config.patch_size[0])

    @property
    def num_vision_layers_used(self) -> int:
        """How many vision-tower layers must run to produce hidden state `vision_feature_layer` (InternViT)."""
        return self.vision_feature_layer % (self.vision_config.num_hidden_layers + 1)

    # A converted folder declares its pipeline in `custom_pipelines` for environments with transformers alone, where
    # `pipeline("token-similarity", model=..., trust_remote_code=True)` then runs the folder's pipeline code. A config
    # built by the installed `tokenocr` package (which registered that task) does not show the declaration to
    # `pipeline()`: it would demand `trust_remote_code` and run the folder's copy instead of the installed pipeline.
    # The declaration is kept (and saved by `to_dict`) either way; a config built from a folder's own code shows it.
    @property
    def custom_pipelines(self) -> dict:
        """The folder's pipeline declaration, or `{}` for the installed package's config (it provides the task)."""
        installed = type(self).__module__.startswith("tokenocr.") and _task_installed()
        return {} if installed else self.__dict__.get("_declared_pipelines", {})

    @custom_pipelines.setter
    def custom_pipelines(self, value: dict) -> None:
        self.__dict__["_declared_pipelines"] = value

    def to_dict(self) -> dict:
        output = super().to_dict()
        declared = output.pop("_declared_pipelines", None)
        if declared:
            output["custom_pipelines"] = declared
        return output


def _task_installed() -> bool:
    """Whether the installed `tokenocr` package has registered the `token-similarity` task with transformers."""
    import sys

    if "transformers.pipelines" not in sys.modules:  # registering imports it: not imported, not registered
        return False
    from transformers.pipelines import PIPELINE_REGISTRY

    implementation = PIPELINE_REGISTRY.supported_tasks.get("token-similarity", {}).get("impl")
    return implementation is not None and implementation.__module__.startswith("tokenocr.")


__all__ = ["TokenOCRConfig"]
