# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""PyTorch TokenOCR model: token-level text-image similarity (arXiv 2503.02304)."""

import math
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, InternVLVisionModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.models.internvl.modeling_internvl import InternVLVisionAttention, InternVLVisionLayer
from transformers.processing_utils import Unpack
from transformers.utils import ModelOutput, TransformersKwargs, auto_docstring
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .configuration_tokenocr import TokenOCRConfig
from .loss_tokenocr import LOSS_COMPONENTS  # noqa: F401  (read here by training/train.py and `tokenocr train`)
from .loss_tokenocr import tile_image_index, token_alignment_losses


@auto_docstring(
    custom_intro="""
    Output of [`TokenOCRModel.forward`]. For a ResNet tower (the R50 variant) each "tile" is a whole image:
    `num_tiles` is the number of images and `num_locations` the largest `h * w` among them; an image's own locations
    come first (row-major on its `h x w` map) and the rest are padding (zero features, similarity 0).
    """
)
@dataclass
class TokenOCROutput(ModelOutput):
    r"""
    similarity (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_tiles, num_locations)`):
        Cosine similarity between every query token embedding and every location of every tile. Stitch the tiles of
        one image back onto its grid with `TokenOCRProcessor.post_process_similarity`.
    logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_tiles, num_locations)`):
        SigLIP-style logits, `similarity * logit_scale.exp() + bias`, where the bias is `config.fixed_logit_bias`
        when set (-8.9375 for the released models) and the `logit_bias` parameter otherwise
        ([`TokenOCRModel.get_logit_bias`]).
    image_embeds (`torch.FloatTensor` of shape `(num_tiles, num_locations, hidden_size)`):
        The projected per-location image features ([`TokenOCRModel.get_image_features`]).
    text_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
        The token embeddings of `input_ids` ([`TokenOCRModel.get_text_features`]).
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
        The vision tower's hidden states ([`TokenOCRModel.get_image_features`]); not when `image_embeds` is given.
    attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
        The ViT tower's attention weights (eager attention only); not when `image_embeds` is given.
    """

    similarity: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@auto_docstring(
    custom_intro="""
    Output of [`TokenOCRForTokenAlignment.forward`]. Every loss is returned when `token_masks` is given.
    """
)
@dataclass
class TokenOCRAlignmentOutput(ModelOutput):
    r"""
    loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `token_masks` is given):
        The weighted sum `sum(config.loss_weights[name] * loss_name)`; with the default weights (`seg` 0, the others
        1) `loss_sim + loss_l2 + loss_sig`, the objective of the authors' training code.
    loss_sim (`torch.FloatTensor` of shape `()`, *optional*, returned when `token_masks` is given):
        Mean over tokens with a non-empty mask of `1 - cos(v, e)`, `v` the mean unnormalised feature over the token's
        mask (all tiles of its image) and `e` its embedding (the authors' `loss1`).
    loss_l2 (`torch.FloatTensor` of shape `()`, *optional*, returned when `token_masks` is given):
        Mean over the same tokens of the Euclidean distance `||v - e||_2` (the authors' `loss2`).
    loss_sig (`torch.FloatTensor` of shape `()`, *optional*, returned when `token_masks` is given):
        SigLIP-style loss over all tokens of the batch with a non-empty mask: `logits = cos(e_i, v_j) *
        logit_scale.exp() + bias`, target +1 where the token ids are equal (across images too), else -1;
        `-sum(logsigmoid(target * logits)) / N`. The bias is [`TokenOCRModel.get_logit_bias`].
    loss_seg (`torch.FloatTensor` of shape `()`, *optional*, returned when `token_masks` is given):
        Not in the authors' code: a per-location term of this project. Binary cross-entropy between
        `seg_logit_scale * cos + seg_logit_bias` (as a logit) and each token's mask, averaged over tokens, tiles and
        locations of an image, then over images. Weighted 0 (logged only) unless `config.loss_weights` says otherwise.
    similarity (`torch.FloatTensor` of shape `(num_tiles, num_tokens, num_locations)`):
        Cosine similarity between every location of every tile and each supervised token of that tile's image.
    image_embeds (`torch.FloatTensor` of shape `(num_tiles, num_locations, hidden_size)`):
        The per-location features `f` before normalisation ([`TokenOCRModel.get_image_features`]).
    text_embeds (`torch.FloatTensor` of shape `(num_images, num_tokens, hidden_size)`):
        The embeddings `e` of the supervised tokens.
    hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned with `output_hidden_states=True`):
        The vision tower's hidden states, as [`TokenOCRModel.get_image_features`] returns them; not when
        `image_embeds` is given.
    attentions (`tuple(torch.FloatTensor)`, *optional*, returned with `output_attentions=True`):
        The ViT tower's attention weights (eager attention only); not when `image_embeds` is given.
    """

    loss: torch.FloatTensor | None = None
    loss_sim: torch.FloatTensor | None = None
    loss_l2: torch.FloatTensor | None = None
    loss_sig: torch.FloatTensor | None = None
    loss_seg: torch.FloatTensor | None = None
    similarity: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


class TokenOCRUpsampler(nn.Module):
    """
    Two stride-2 transposed convolutions, each followed by BatchNorm: 4x the spatial resolution, from the vision width
    through `upsampler_hidden_size` to `upsampler_output_size` channels.
    """

    def __init__(self, config: TokenOCRConfig):
        super().__init__()
        width, middle, out = config.vision_width, config.upsampler_hidden_size, config.upsampler_output_size
        self.conv_transpose_1 = nn.ConvTranspose2d(width, middle, kernel_size=4, stride=2, padding=1, bias=False)
        self.batch_norm_1 = nn.BatchNorm2d(middle, eps=config.batch_norm_eps)
        self.conv_transpose_2 = nn.ConvTranspose2d(middle, out, kernel_size=4, stride=2, padding=1, bias=False)
        self.batch_norm_2 = nn.BatchNorm2d(out, eps=config.batch_norm_eps)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        """`(batch, vision_width, height, width)` -> `(batch, upsampler_output_size, 4 * height, 4 * width)`."""
        feature_map = self.batch_norm_1(self.conv_transpose_1(feature_map))
        return self.batch_norm_2(self.conv_transpose_2(feature_map))


class TokenOCRProjector(nn.Module):
    """
    [LayerNorm ->] Linear -> exact GELU -> Linear, from the upsampler's output width into the token-embedding space
    (the R50 release has no LayerNorm: `config.projector_layer_norm`).
    """

    def __init__(self, config: TokenOCRConfig):
        super().__init__()
        width = config.upsampler_output_size
        if config.projector_layer_norm:
            self.layer_norm = nn.LayerNorm(width, eps=config.projector_layer_norm_eps)
        else:
            self.layer_norm = nn.Identity()
        self.linear_1 = nn.Linear(width, config.hidden_size)
        self.act = ACT2FN["gelu"]
        self.linear_2 = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(self.layer_norm(features))))


class TokenOCRResNetStage(GradientCheckpointingLayer):
    """
    One stage of the ResNet tower: transformers' `ResNetStage` computation on its own `layers` (so the weight names
    are the same), as a `GradientCheckpointingLayer`, so that `gradient_checkpointing_enable()` checkpoints the
    ResNet tower stage by stage as it does the ViT tower layer by layer.
    """

    def __init__(self, layers: nn.Sequential):
        super().__init__()
        self.layers = layers

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        return self.layers(hidden_state)


@auto_docstring
class TokenOCRPreTrainedModel(PreTrainedModel):
    config: TokenOCRConfig
    config_class = TokenOCRConfig
    base_model_prefix = "tokenocr"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["InternVLVisionLayer", "ResNetBottleNeckLayer", "ResNetBasicLayer"]
    # Only what the tests exercise: eager and SDPA attention (tests/test_modeling.py::test_sdpa_equals_eager). A ResNet
    # tower has no attention; the setting does not concern it.
    _supports_sdpa = True
    # `output_hidden_states` / `output_attentions` of the ViT tower, recorded by transformers' hooks on its layers.
    _can_record_outputs = {"hidden_states": InternVLVisionLayer, "attentions": InternVLVisionAttention}

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, TokenOCRModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
            init.constant_(module.logit_bias, self.config.logit_bias_init_value)
        elif isinstance(module, TokenOCRForTokenAlignment):  # loss_seg's temperature, from the config's settings
            init.constant_(module.seg_logit_scale_log, math.log(module.config.seg_logit_scale))
            init.constant_(module.seg_logit_bias, module.config.seg_logit_bias)


@auto_docstring(
    custom_intro="""
    TokenOCR: per-location image features that live in the token-embedding space of a language model, so that the
    cosine similarity between a query token's embedding and each location of a document image says where the token
    is written.

    The vision tower is transformers' `InternVLVisionModel` (the ViT releases: its hidden state at
    `config.vision_feature_layer`, class token dropped, for each tile) or `ResNetModel` (the R50 release: its last
    stage, stride 32, for each whole image), as `config.vision_config` says; the result is upsampled 4x and projected
    to `config.hidden_size`.
    """
)
class TokenOCRModel(TokenOCRPreTrainedModel):

    def __init__(self, config: TokenOCRConfig):
        super().__init__(config)
        if config.is_internvit:
            self.vision_tower = InternVLVisionModel(config.vision_config)
        else:
            # A ResNet has no attention: whichever implementation was asked for (SDPA, eager) does not concern it, so
            # the tower is built as "eager", the only setting transformers accepts for it (as composite models build
            # their towers: `AutoModel.from_config` on the sub-config), in the dtype the rest of the model is built in
            # (not a `dtype` a saved `vision_config` may carry).
            self.vision_tower = AutoModel.from_config(
                config.vision_config, attn_implementation="eager", dtype=torch.get_default_dtype()
            )
            stages = self.vision_tower.encoder.stages
            for index, stage in enumerate(stages):  # same layers, same weight names; checkpointable
                stages[index] = TokenOCRResNetStage(stage.layers)
        self.upsampler = TokenOCRUpsampler(config)
        self.projector = TokenOCRProjector(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.logit_bias = nn.Parameter(torch.tensor(config.logit_bias_init_value))
        self.post_init()

    def set_attn_implementation(self, attn_implementation, *args, **kwargs):
        """As transformers' own; with a ResNet tower (no attention), the tower itself stays as it is."""
        if not self.config.is_internvit and isinstance(attn_implementation, str):
            attn_implementation = {"": attn_implementation, "vision_config": "eager"}
        return super().set_attn_implementation(attn_implementation, *args, **kwargs)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.embed_tokens = value

    def get_logit_bias(self) -> torch.Tensor:
        """The bias of `logits` and of the sigmoid loss: `config.fixed_logit_bias` if set, else `logit_bias`."""
        if self.config.fixed_logit_bias is None:
            return self.logit_bias
        return torch.tensor(self.config.fixed_logit_bias, dtype=self.logit_bias.dtype, device=self.logit_bias.device)

    @capture_outputs(tie_last_hidden_states=False)
    def _vision_outputs(self, pixel_values: torch.Tensor, **kwargs) -> BaseModelOutput:
        """
        ViT tower: its hidden state `config.vision_feature_layer` (class token included) as `last_hidden_state`;
        `output_hidden_states` / `output_attentions` record those of the layers run (embeddings output first).
        """
        # InternVLVisionModel.forward always runs every layer; running its embeddings and the first layers here skips
        # the layers after the selected one, which the original computes and throws away. Each layer is a transformers
        # `GradientCheckpointingLayer`, so activation checkpointing and the attention implementation work as inside
        # the tower, and the tower's own output-recording hooks see them.
        tower = self.vision_tower
        hidden_states = tower.embeddings(pixel_values)
        for layer in tower.encoder.layer[: self.config.num_vision_layers_used]:
            hidden_states = layer(hidden_states)
        return BaseModelOutput(last_hidden_state=hidden_states)

    def _check_tiles(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dim() != 4:
            raise ValueError(
                f"pixel_values must have shape (num_tiles, channels, height, width), got {tuple(pixel_values.shape)}."
            )
        return pixel_values.to(self.vision_tower.embeddings.patch_embeddings.projection.weight.dtype)

    def _patch_grid(self, hidden_states: torch.FloatTensor, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """The selected hidden state `(num_tiles, 1 + patches, width)` as `(num_tiles, width, grid_h, grid_w)`."""
        hidden_states = hidden_states[:, 1:, :]
        num_tiles, _, width = hidden_states.shape
        patch_h, patch_w = self.config.vision_config.patch_size
        grid_h, grid_w = pixel_values.shape[-2] // patch_h, pixel_values.shape[-1] // patch_w
        return hidden_states.transpose(1, 2).reshape(num_tiles, width, grid_h, grid_w)

    def _resnet_stages(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """ResNet tower: the embedder's output, then each stage's (the last is `last_hidden_state`)."""
        tower = self.vision_tower
        states = [tower.embedder(pixels)]
        for stage in tower.encoder.stages:  # each a checkpointing layer (TokenOCRResNetStage)
            states.append(stage(states[-1]))
        return tuple(states)

    def _whole_image_locations(self, pixel_values: torch.FloatTensor, pixel_sizes=None, states=None):
        """
        ResNet tower: yield `(indices, locations)` per group of equally sized images, `locations` of shape
        `(len(indices), h * w, upsampler_output_size)` (row-major on each image's `h x w` map). Each image runs at
        its own size, cropped out of its padding: padding never reaches the tower, so it cannot change a result.
        `indices` is `None` for one group of all images in order. `states`, a list, receives each group's stage
        outputs.
        """
        dtype = self.vision_tower.embedder.embedder.convolution.weight.dtype
        if pixel_sizes is None:  # every image fills pixel_values: one group (no size-keyed grouping, so it exports)
            if pixel_values.dim() != 4:
                raise ValueError(
                    f"pixel_values must have shape (num_images, channels, height, width), got {tuple(pixel_values.shape)}."
                )
            groups = [(None, pixel_values)]
        else:
            sizes = _image_sizes_in_batch(pixel_values, pixel_sizes)
            by_size: dict[tuple[int, int], list[int]] = {}
            for index, size in enumerate(sizes):
                by_size.setdefault(size, []).append(index)
            groups = [
                (indices, (pixel_values if len(indices) == len(sizes) else pixel_values[indices])[:, :, :height, :width])
                for (height, width), indices in by_size.items()
            ]
        for indices, pixels in groups:
            stages = self._resnet_stages(pixels.to(dtype))
            if states is not None:
                states.append(stages)
            yield indices, self.upsampler(stages[-1]).flatten(2).transpose(1, 2)

    @can_return_tuple
    @auto_docstring
    def get_image_features(
        self, pixel_values: torch.FloatTensor, pixel_sizes: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_tiles, num_channels, height, width)`):
            As [`TokenOCRImageProcessor`] makes them: normalised tiles (`height = width = tile_size`) for an
            InternViT tower; for a ResNet tower, whole images, zero-padded at the bottom and right to a common
            size when they differ.
        pixel_sizes (`torch.LongTensor` of shape `(num_tiles, 2)`, *optional*):
            ResNet tower only: each image's own `(height, width)` inside `pixel_values` (the processor's
            `pixel_sizes`); default, every image fills `pixel_values`.

        Returns:
            [`~modeling_outputs.BaseModelOutputWithPooling`] whose `pooler_output` holds the per-location features,
            the original `forward_tokenocr` values, of shape `(num_tiles, num_locations, hidden_size)`: one feature
            per location of the 4x upsampled grid, row-major. InternViT: `num_locations = (4 * tile_size /
            patch_size) ** 2`. ResNet: image `i` has an `h_i x w_i` map, `h_i = 4 * ceil(height_i / 32)` (likewise
            `w_i`; the processor's `map_sizes`), in locations `[0, h_i * w_i)`; `num_locations = max_i(h_i * w_i)` and
            locations past an image's own are zero. `last_hidden_state` is the tower's output the features are made
            from (ViT: hidden state `config.vision_feature_layer`, `(num_tiles, 1 + patches, width)`, class token
            first; ResNet: the last stage's map, images of one size only). `hidden_states` (`output_hidden_states=True`)
            are the ViT layers run (embeddings output first, up to `vision_feature_layer`; the later layers are never
            computed) or the ResNet embedder's and stages' outputs; `attentions` (`output_attentions=True`, eager
            attention) the ViT layers'.
        """
        if self.config.is_internvit:
            pixel_values = self._check_tiles(pixel_values)
            vision = self._vision_outputs(pixel_values, **{**kwargs, "return_dict": True})
            feature_map = self.upsampler(self._patch_grid(vision.last_hidden_state, pixel_values))
            features = self.projector(feature_map.flatten(2).transpose(1, 2))
            return BaseModelOutputWithPooling(
                last_hidden_state=vision.last_hidden_state, pooler_output=features,
                hidden_states=vision.hidden_states, attentions=vision.attentions,
            )
        states = []
        parts = [(indices, self.projector(locations)) for indices, locations in
                 self._whole_image_locations(pixel_values, pixel_sizes, states)]
        features = _gather_images(parts, pixel_values.shape[0], dim=0)
        one_size = len(states) == 1
        hidden_states = None
        if kwargs.get("output_hidden_states", self.config.output_hidden_states):
            if not one_size:
                raise ValueError("output_hidden_states needs images of one size (one call per size).")
            hidden_states = states[0]
        return BaseModelOutputWithPooling(
            last_hidden_state=states[0][-1] if one_size else None, pooler_output=features, hidden_states=hidden_states
        )

    @can_return_tuple
    @auto_docstring
    def get_text_features(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling | tuple:
        r"""
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)` or `(sequence_length,)`):
            Query token ids, as [`TokenOCRProcessor`] makes them.
        attention_mask (`torch.Tensor` of the same shape, *optional*):
            0 at padded positions, whose embeddings are returned as zeros (never a match).

        Returns:
            [`~modeling_outputs.BaseModelOutputWithPooling`] whose `pooler_output` (and `last_hidden_state`) holds
            the token embeddings, the rows of the embedding table, of shape `input_ids.shape + (hidden_size,)`.
        """
        embeddings = self.embed_tokens(input_ids)
        if attention_mask is not None:
            if tuple(attention_mask.shape) != tuple(input_ids.shape):
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)}, input_ids {tuple(input_ids.shape)}."
                )
            embeddings = embeddings * attention_mask.to(embeddings.device, embeddings.dtype)[..., None]
        return BaseModelOutputWithPooling(last_hidden_state=embeddings, pooler_output=embeddings)

    @staticmethod
    def normalize_embeds(embeds: torch.Tensor) -> torch.Tensor:
        r"""`embeds / ||embeds||` along the last dimension (an all-zero vector stays zero): what the cosine similarity
        scores. Features normalised once with it can be scored by many queries without normalising them again."""
        return _unit_vectors(embeds)

    @staticmethod
    def similarity_from_embeds(text_embeds: torch.Tensor, image_embeds: torch.Tensor,
                               normalized: bool = False) -> torch.Tensor:
        r"""
        The cosine similarity every surface scores with: each query token's embedding against each image feature.

        Args:
            text_embeds (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`): token embeddings
                ([`~TokenOCRModel.get_text_features`]).
            image_embeds (`torch.Tensor` of shape `(*locations, hidden_size)`): image features, e.g.
                `(num_tiles, num_locations, hidden_size)` ([`~TokenOCRModel.get_image_features`]) or a chunk of them.
            normalized (`bool`, *optional*, defaults to `False`): both are unit vectors already
                ([`~TokenOCRModel.normalize_embeds`]), so they are scored as they are.

        Returns:
            `torch.Tensor` of shape `(batch_size, sequence_length, *locations)`, in `image_embeds`' dtype and device.
        """
        image = image_embeds if normalized else _unit_vectors(image_embeds)
        text = (text_embeds if normalized else _unit_vectors(text_embeds)).to(image.device, image.dtype)
        flat = image.reshape(-1, image.shape[-1])
        return (text @ flat.T).reshape(*text.shape[:-1], *image.shape[:-1])

    def get_similarity(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        locations_per_chunk: int = 2048,
        pixel_sizes: torch.LongTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        tiles_per_batch: int | None = None,
        image_embeds_normalized: bool = False,
    ) -> torch.FloatTensor:
        r"""
        Cosine similarity between query tokens and every location of every tile, computed without holding the
        `(num_tiles, num_locations, hidden_size)` features: the upsampler runs one tile at a time, and the projector,
        the normalisation and the scoring over `locations_per_chunk` locations at a time. Equal to
        `forward(...).similarity` up to float rounding. The one scoring path of the pipeline, evaluation, the
        converter's card picture and the demo.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_tiles, num_channels, height, width)`):
                Normalised tiles, or whole images for a ResNet tower (see [`~TokenOCRModel.get_image_features`]).
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)` or `(sequence_length,)`):
                Query token ids.
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                0 at padded query positions, whose similarity is set to 0.
            locations_per_chunk (`int`, *optional*, defaults to 2048):
                Locations projected and scored at once; bounds the working memory.
            pixel_sizes (`torch.LongTensor` of shape `(num_tiles, 2)`, *optional*):
                ResNet tower only: each image's own `(height, width)` inside `pixel_values`.
            image_embeds (`torch.FloatTensor` of shape `(num_tiles, num_locations, hidden_size)`, *optional*):
                Features from an earlier `get_image_features(...).pooler_output`, instead of `pixel_values`: new
                queries scored without running the vision tower again.
            tiles_per_batch (`int`, *optional*): tiles (or images) given to the vision tower at once; default all.
            image_embeds_normalized (`bool`, *optional*, defaults to `False`): `image_embeds` are unit vectors already
                ([`~TokenOCRModel.normalize_embeds`]): a cached page's features are then not normalised again for
                every query (for a 12-tile page of a released model that pass, not the scoring, is the cost).

        Returns:
            `torch.FloatTensor` of shape `(batch_size, sequence_length, num_tiles, num_locations)`; for a ResNet tower
            the locations past an image's own `h * w` are 0.
        """
        if input_ids is None or (pixel_values is None) == (image_embeds is None):
            raise ValueError("get_similarity needs input_ids and either pixel_values or image_embeds.")
        input_ids = input_ids.unsqueeze(0) if input_ids.dim() == 1 else input_ids
        text = _unit_vectors(self.get_text_features(input_ids, return_dict=True).pooler_output)  # once, not per chunk
        given_normalized = image_embeds is not None and image_embeds_normalized
        rows: dict[int, list[torch.Tensor]] = {}
        for index, _, features in self._feature_chunks(
            pixel_values, image_embeds, locations_per_chunk, pixel_sizes, tiles_per_batch
        ):
            features = features if given_normalized else _unit_vectors(features)
            rows.setdefault(index, []).append(  # (batch, tokens, chunk)
                self.similarity_from_embeds(text, features, normalized=True))
        parts = [(index, torch.cat(chunks, dim=-1)) for index, chunks in sorted(rows.items())]
        similarity = parts[0][1].new_zeros((*input_ids.shape, len(parts), max(p.shape[-1] for _, p in parts)))
        for index, scores in parts:
            similarity[:, :, index, : scores.shape[-1]] = scores
        return _mask_padding(similarity, attention_mask, 0.0)

    def _feature_chunks(self, pixel_values, image_embeds, locations_per_chunk, pixel_sizes, tiles_per_batch):
        """`(index, start, features)` as `iter_image_features` yields them, from pixels (`tiles_per_batch` at a time)
        or from given `image_embeds`."""
        if image_embeds is not None:
            for index in range(len(image_embeds)):
                for start in range(0, image_embeds.shape[1], locations_per_chunk):
                    yield index, start, image_embeds[index, start : start + locations_per_chunk]
            return
        step = len(pixel_values) if tiles_per_batch is None else tiles_per_batch
        if step < 1:
            raise ValueError(f"tiles_per_batch must be at least 1, got {tiles_per_batch}.")
        for first in range(0, len(pixel_values), step):
            sizes = None if pixel_sizes is None else pixel_sizes[first : first + step]
            for index, start, features in self.iter_image_features(
                pixel_values[first : first + step], locations_per_chunk, sizes
            ):
                yield first + index, start, features

    def iter_image_features(
        self,
        pixel_values: torch.FloatTensor,
        locations_per_chunk: int = 2048,
        pixel_sizes: torch.LongTensor | None = None,
    ):
        r"""
        The values of [`~TokenOCRModel.get_image_features`] a chunk at a time, so that they are never held whole:
        the upsampler runs one tile (ViT) or one group of equally sized images (ResNet) at a time, the projector
        over `locations_per_chunk` locations.

        Args:
            pixel_values, pixel_sizes: as for [`~TokenOCRModel.get_image_features`].
            locations_per_chunk (`int`, *optional*, defaults to 2048): locations per yielded chunk.

        Yields:
            `(index, start, features)`: the tile's (or image's) index in `pixel_values`, the first location of the
            chunk, and `features` of shape `(chunk, hidden_size)` for locations `[start, start + chunk)` of that
            tile's (or image's own) row-major map.
        """
        if locations_per_chunk < 1:
            raise ValueError(f"locations_per_chunk must be at least 1, got {locations_per_chunk}.")
        if self.config.is_internvit:
            pixel_values = self._check_tiles(pixel_values)
            grid = self._patch_grid(self._vision_outputs(pixel_values, return_dict=True).last_hidden_state, pixel_values)
            groups = (
                ((tile,), self.upsampler(grid[tile : tile + 1]).flatten(2).transpose(1, 2)) for tile in range(len(grid))
            )
        else:
            groups = self._whole_image_locations(pixel_values, pixel_sizes)
        for indices, locations in groups:  # locations: (len(indices), L, width)
            for position, index in enumerate(range(len(locations)) if indices is None else indices):
                for start in range(0, locations.shape[1], locations_per_chunk):
                    yield index, start, self.projector(locations[position, start : start + locations_per_chunk])

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        pixel_sizes: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenOCROutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_tiles, num_channels, height, width)`):
            Normalised tiles, or whole images for a ResNet tower (see [`~TokenOCRModel.get_image_features`]). Not
            needed when `image_embeds` is given.
        input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
            Query token ids.
        attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
            0 at padded query positions (as the processor pads several queries): their `similarity` is 0 and
            their `logits` the lowest finite value, so padding never looks like a match and never gives NaN.
        image_embeds (`torch.FloatTensor` of shape `(num_tiles, num_locations, hidden_size)`, *optional*):
            Features from an earlier `get_image_features(...).pooler_output`, to score new queries without running
            the vision tower again.
        pixel_sizes (`torch.LongTensor` of shape `(num_tiles, 2)`, *optional*):
            ResNet tower only: each image's own `(height, width)` inside the padded `pixel_values`.

        The processor's per-image bookkeeping (`grid_cols_rows`, `num_tiles`, `image_sizes`, `map_sizes`), which
        stitching the maps back needs (`TokenOCRProcessor.post_process_similarity`) but the model does not, may be
        passed too (`model(**processor(...))`) and is ignored; `output_hidden_states` and `output_attentions` go to
        [`~TokenOCRModel.get_image_features`].
        """
        for name in PROCESSOR_BOOKKEEPING:
            kwargs.pop(name, None)
        if input_ids is None:
            raise ValueError("TokenOCRModel.forward needs input_ids (the query tokens).")
        vision = None
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("TokenOCRModel.forward needs pixel_values or image_embeds.")
            vision = self.get_image_features(pixel_values, pixel_sizes, **{**kwargs, "return_dict": True})
            image_embeds = vision.pooler_output
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        text_embeds = self.get_text_features(input_ids, return_dict=True).pooler_output

        similarity = self.similarity_from_embeds(text_embeds, image_embeds)
        logit_scale = self.logit_scale.to(similarity.device, similarity.dtype)
        logits = similarity * logit_scale.exp() + self.get_logit_bias().to(similarity.device, similarity.dtype)
        similarity = _mask_padding(similarity, attention_mask, 0.0)
        logits = _mask_padding(logits, attention_mask, torch.finfo(logits.dtype).min)
        return TokenOCROutput(
            similarity=similarity, logits=logits, image_embeds=image_embeds, text_embeds=text_embeds,
            hidden_states=vision.hidden_states if vision is not None else None,
            attentions=vision.attentions if vision is not None else None,
        )


# What the processor returns beside the model's inputs: per-image bookkeeping for post-processing.
PROCESSOR_BOOKKEEPING = ("grid_cols_rows", "num_tiles", "image_sizes", "map_sizes")


def _unit_vectors(vectors: torch.Tensor) -> torch.Tensor:
    """`vectors / ||vectors||` along the last dimension; an all-zero vector stays zero instead of becoming NaN."""
    return torch.nn.functional.normalize(vectors, dim=-1, eps=torch.finfo(vectors.dtype).tiny)


def _image_sizes_in_batch(pixel_values: torch.Tensor, pixel_sizes) -> list[tuple[int, int]]:
    """Each image's `(height, width)` inside `pixel_values` `(images, channels, H, W)`, checked; default `(H, W)`."""
    if pixel_values.dim() != 4:
        raise ValueError(
            f"pixel_values must have shape (num_images, channels, height, width), got {tuple(pixel_values.shape)}."
        )
    height, width = pixel_values.shape[-2:]
    if pixel_sizes is None:
        return [(height, width)] * len(pixel_values)
    sizes = [tuple(int(side) for side in size) for size in (pixel_sizes.tolist() if hasattr(pixel_sizes, "tolist")
                                                              else pixel_sizes)]
    if len(sizes) != len(pixel_values) or any(len(size) != 2 for size in sizes):
        raise ValueError(f"pixel_sizes must hold one (height, width) per image ({len(pixel_values)}), got {sizes}.")
    for h, w in sizes:
        if not (1 <= h <= height and 1 <= w <= width):
            raise ValueError(f"pixel_sizes has ({h}, {w}), which does not fit in pixel_values of {height}x{width}.")
    return sizes


def _gather_images(parts: list, num_images: int, dim: int) -> torch.Tensor:
    """
    Put per-group results `(indices, values)` (`values` holding `len(indices)` images along `dim` and their
    locations along `dim + 1`; `indices` `None`: all images, in order) back in image order, each image's locations
    first and zeros after them.
    """
    if len(parts) == 1 and (parts[0][0] is None or parts[0][0] == list(range(num_images))):
        return parts[0][1]  # one size for all: nothing to pad
    first = parts[0][1]
    locations = max(values.shape[dim + 1] for _, values in parts)
    shape = (*first.shape[:dim], num_images, locations, *first.shape[dim + 2 :])
    gathered = first.new_zeros(shape)
    for indices, values in parts:
        target = gathered.narrow(dim + 1, 0, values.shape[dim + 1])
        target.index_copy_(dim, torch.tensor(indices, device=values.device), values)
    return gathered


def _mask_padding(scores: torch.Tensor, attention_mask: torch.Tensor | None, fill: float) -> torch.Tensor:
    """Set `scores` `(batch, tokens, ...)` to `fill` where `attention_mask` `(batch, tokens)` is 0."""
    if attention_mask is None:
        return scores
    if attention_mask.dim() == 1:
        attention_mask = attention_mask.unsqueeze(0)
    if tuple(attention_mask.shape) != tuple(scores.shape[:2]):
        raise ValueError(
            f"attention_mask has shape {tuple(attention_mask.shape)}, expected {tuple(scores.shape[:2])} "
            "(batch_size, sequence_length)."
        )
    padded = (attention_mask == 0).to(scores.device).reshape(*attention_mask.shape, *[1] * (scores.dim() - 2))
    return scores.masked_fill(padded, fill)


# --------------------------------------------------------------------------------------------------------------------
# Fine-tuning: the original stage-1 training objective as a task head (the losses: loss_tokenocr.py).
# --------------------------------------------------------------------------------------------------------------------


@auto_docstring(
    custom_intro="""
    [`TokenOCRModel`] with a training objective: given token masks, it returns the loss and each of its components
    ([`TokenOCRAlignmentOutput`]). By default the objective is the authors' stage-1 one, `loss_sim + loss_l2 +
    loss_sig` (mask-pooled alignment only); `loss_seg`, a per-location term of this project, is computed and logged
    but weighted 0. Loads the weights of a `TokenOCRModel` folder (they live under `tokenocr.`), and its saved
    weights load back into a `TokenOCRModel`.

    The loss settings are the config's (`loss_weights`, `seg_logit_scale`, `seg_logit_bias`,
    `learn_seg_temperature`, see [`TokenOCRConfig`]), so that `save_pretrained` / `from_pretrained` keep them; given
    as keyword arguments here, they are written into `config` first. The `loss_seg` temperature is a parameter of
    the head (saved with it) only when `learn_seg_temperature`; otherwise a buffer set from the config.

    A batch holds several images, each with its own number of tiles (`num_tiles`) and its own supervised tokens
    (`input_ids`, padded, with `attention_mask`); `token_masks` gives, for every tile, the mask of each of its
    image's tokens. [`tokenocr.training.TokenMaskCollator`] builds such batches from a token-mask dataset.
    """
)
class TokenOCRForTokenAlignment(TokenOCRPreTrainedModel):
    accepts_loss_kwargs = False  # the loss is a per-batch mean; Trainer must not rescale it by token counts

    def __init__(self, config: TokenOCRConfig, **loss_settings):
        # `loss_settings`: any of the config's loss settings, written into `config` (checked first: a ValueError
        # leaves it as it was), so that the saved config keeps them.
        config.update_loss_settings(**loss_settings)
        super().__init__(config)
        self.tokenocr = TokenOCRModel(config)
        self._set_seg_temperature()
        self.post_init()

    @property
    def loss_weights(self) -> dict[str, float]:
        """The weight of each loss component in `loss` (`config.loss_weights`)."""
        return dict(self.config.loss_weights)

    def configure_loss(self, **loss_settings) -> None:
        """
        Change the loss settings (any of `loss_weights`, `seg_logit_scale`, `seg_logit_bias`,
        `learn_seg_temperature`; the others keep the config's values): written into the config, and the `loss_seg`
        temperature set again from it.
        """
        self.config.update_loss_settings(**loss_settings)
        self._set_seg_temperature()

    def _set_seg_temperature(self) -> None:
        """`loss_seg`'s scale (as its logarithm) and bias from the config: parameters when learned, else buffers."""
        device = self.tokenocr.logit_scale.device
        log_scale = torch.tensor(math.log(self.config.seg_logit_scale), device=device)
        bias = torch.tensor(self.config.seg_logit_bias, device=device)
        for name in ("seg_logit_scale_log", "seg_logit_bias"):
            self._parameters.pop(name, None)
            self._buffers.pop(name, None)
        if self.config.learn_seg_temperature:
            self.seg_logit_scale_log = nn.Parameter(log_scale)
            self.seg_logit_bias = nn.Parameter(bias)
        else:
            self.register_buffer("seg_logit_scale_log", log_scale, persistent=False)
            self.register_buffer("seg_logit_bias", bias, persistent=False)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.tokenocr.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Embedding):
        self.tokenocr.set_input_embeddings(value)

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        num_tiles: torch.LongTensor | None = None,
        token_masks: torch.Tensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        pixel_sizes: torch.LongTensor | None = None,
        map_sizes: torch.LongTensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> TokenOCRAlignmentOutput | tuple:
        r"""
        pixel_values (`torch.FloatTensor` of shape `(num_tiles, num_channels, tile_size, tile_size)`):
            The tiles of all images of the batch, image after image (each image's grid tiles, then its thumbnail if
            any), as [`TokenOCRImageProcessor`] makes them. Not needed when `image_embeds` is given.
        input_ids (`torch.LongTensor` of shape `(num_images, num_tokens)`):
            The supervised tokens of each image, padded to the longest.
        attention_mask (`torch.Tensor` of shape `(num_images, num_tokens)`, *optional*):
            1 for a supervised token, 0 for padding. Default: every token is supervised.
        num_tiles (`torch.LongTensor` of shape `(num_images,)`, *optional*):
            Tiles per image, thumbnail included. May be left out for a single image, or for one tile per image.
        token_masks (`torch.Tensor` of shape `(num_tiles, num_tokens, height, width)`, *optional*):
            For every tile, the mask of each token of its image (non-zero inside). On the feature grid
            (`height = width = config.feature_side`) or at any other size, then resized bilinearly and binarised
            `> 0`. Without it no loss is computed.
        image_embeds (`torch.FloatTensor` of shape `(num_tiles, num_locations, hidden_size)`, *optional*):
            Precomputed features, in place of `pixel_values`.
        pixel_sizes (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
            ResNet tower (whole images, one "tile" each): each image's own `(height, width)` inside the padded
            `pixel_values`.
        map_sizes (`torch.LongTensor` of shape `(num_images, 2)`, *optional*):
            ResNet tower: each image's map `(h, w)`. `token_masks` are then `(num_images, num_tokens, num_locations)`,
            each image's masks on its own map (row-major, the first `h * w` locations; the rest is padding, left out).
        """
        if input_ids is None:
            raise ValueError("TokenOCRForTokenAlignment.forward needs input_ids (the supervised tokens).")
        vision = self._vision_features(pixel_values, image_embeds, pixel_sizes, kwargs)
        image_embeds = vision.pooler_output if vision is not None else image_embeds
        input_ids = input_ids[None] if input_ids.dim() == 1 else input_ids
        valid = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        tile_image = tile_image_index(num_tiles, image_embeds.shape[0], input_ids.shape[0], image_embeds.device)
        text_embeds = self.tokenocr.get_text_features(input_ids, return_dict=True).pooler_output
        image_normed = nn.functional.normalize(image_embeds, dim=-1)
        text_normed = nn.functional.normalize(text_embeds, dim=-1).to(image_normed.dtype)
        similarity = torch.einsum("tld,tkd->tkl", image_normed, text_normed[tile_image])

        losses = {}
        if token_masks is not None:
            losses = token_alignment_losses(
                similarity, image_embeds, text_embeds, input_ids, valid, token_masks, tile_image,
                loss_weights=self.config.loss_weights, seg_logit_scale_log=self.seg_logit_scale_log,
                seg_logit_bias=self.seg_logit_bias, logit_scale=self.tokenocr.logit_scale,
                logit_bias=self.tokenocr.get_logit_bias(), whole_images=not self.config.is_internvit,
                map_sizes=map_sizes,
            )
        return TokenOCRAlignmentOutput(
            **losses, similarity=similarity, image_embeds=image_embeds, text_embeds=text_embeds,
            hidden_states=vision.hidden_states if vision is not None else None,
            attentions=vision.attentions if vision is not None else None,
        )

    def _vision_features(self, pixel_values, image_embeds, pixel_sizes, kwargs):
        """The tower's output for `pixel_values` (features, hidden states, attentions), or None for given features."""
        if image_embeds is not None:
            return None
        if pixel_values is None:
            raise ValueError("TokenOCRForTokenAlignment.forward needs pixel_values or image_embeds.")
        return self.tokenocr.get_image_features(pixel_values, pixel_sizes, **{**kwargs, "return_dict": True})


__all__ = [
    "TokenOCRAlignmentOutput",
    "TokenOCRForTokenAlignment",
    "TokenOCRModel",
    "TokenOCROutput",
    "TokenOCRPreTrainedModel",
]
