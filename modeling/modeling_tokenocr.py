# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""PyTorch TokenOCR model: token-level text-image similarity (arXiv 2503.02304)."""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import InternVLVisionModel, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.utils import ModelOutput

from .configuration_tokenocr import TokenOCRConfig


@dataclass
class TokenOCROutput(ModelOutput):
    r"""
    Output of [`TokenOCRModel.forward`].

    Args:
        similarity (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_tiles, num_locations)`):
            Cosine similarity between every query token embedding and every location of every tile. Stitch the
            tiles of one image back onto its grid with `TokenOCRProcessor.post_process_similarity`.
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, num_tiles, num_locations)`):
            SigLIP-style logits, `similarity * logit_scale.exp() + logit_bias`, with the trained scalars.
        image_embeds (`torch.FloatTensor` of shape `(num_tiles, num_locations, hidden_size)`):
            The projected per-location image features ([`TokenOCRModel.get_image_features`]).
        text_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            The token embeddings of `input_ids` ([`TokenOCRModel.get_text_features`]).
    """

    similarity: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None


class TokenOCRUpsampler(nn.Module):
    """Two stride-2 transposed convolutions, each followed by BatchNorm: 4x the spatial resolution."""

    def __init__(self, config: TokenOCRConfig):
        super().__init__()
        width = config.vision_config.hidden_size
        middle = config.upsampler_hidden_size
        self.conv_transpose_1 = nn.ConvTranspose2d(width, middle, kernel_size=4, stride=2, padding=1, bias=False)
        self.batch_norm_1 = nn.BatchNorm2d(middle, eps=config.batch_norm_eps)
        self.conv_transpose_2 = nn.ConvTranspose2d(middle, width, kernel_size=4, stride=2, padding=1, bias=False)
        self.batch_norm_2 = nn.BatchNorm2d(width, eps=config.batch_norm_eps)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        """`(batch, width, height, width_px)` -> `(batch, width, 4 * height, 4 * width_px)`."""
        feature_map = self.batch_norm_1(self.conv_transpose_1(feature_map))
        return self.batch_norm_2(self.conv_transpose_2(feature_map))


class TokenOCRProjector(nn.Module):
    """LayerNorm -> Linear -> exact GELU -> Linear, from the vision width into the token-embedding space."""

    def __init__(self, config: TokenOCRConfig):
        super().__init__()
        width = config.vision_config.hidden_size
        self.layer_norm = nn.LayerNorm(width, eps=config.projector_layer_norm_eps)
        self.linear_1 = nn.Linear(width, config.hidden_size)
        self.act = ACT2FN["gelu"]
        self.linear_2 = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(self.layer_norm(features))))


class TokenOCRPreTrainedModel(PreTrainedModel):
    config: TokenOCRConfig
    config_class = TokenOCRConfig
    base_model_prefix = "tokenocr"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["InternVLVisionLayer"]
    # Only what the tests exercise: eager and SDPA attention (tests/test_modeling.py::test_sdpa_equals_eager).
    _supports_sdpa = True

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, TokenOCRModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
            init.constant_(module.logit_bias, self.config.logit_bias_init_value)


class TokenOCRModel(TokenOCRPreTrainedModel):
    r"""
    TokenOCR: per-location image features that live in the token-embedding space of a language model, so that the
    cosine similarity between a query token's embedding and each location of a document image says where the token
    is written.

    The vision tower is transformers' `InternVLVisionModel`; its hidden state at `config.vision_feature_layer`
    (class token dropped) is upsampled 4x and projected to `config.hidden_size`.
    """

    def __init__(self, config: TokenOCRConfig):
        super().__init__(config)
        self.vision_tower = InternVLVisionModel(config.vision_config)
        self.upsampler = TokenOCRUpsampler(config)
        self.projector = TokenOCRProjector(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.logit_bias = nn.Parameter(torch.tensor(config.logit_bias_init_value))
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.embed_tokens = value

    def _vision_hidden_state(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The vision tower's hidden state `config.vision_feature_layer`, class token included."""
        # InternVLVisionModel.forward always runs every layer (and would return the state we need only among all
        # hidden states); running its embeddings and the first layers ourselves skips the layers after the selected
        # one, which the original computes and throws away. Each layer is a transformers `GradientCheckpointingLayer`,
        # so activation checkpointing and the attention implementation work as inside the tower.
        tower = self.vision_tower
        hidden_states = tower.embeddings(pixel_values)
        for layer in tower.encoder.layer[: self.config.num_vision_layers_used]:
            hidden_states = layer(hidden_states)
        return hidden_states

    def _patch_grid(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """`(num_tiles, channels, height, width)` tiles -> the selected hidden state as `(num_tiles, width, grid_h, grid_w)`."""
        if pixel_values.dim() != 4:
            raise ValueError(
                f"pixel_values must have shape (num_tiles, channels, height, width), got {tuple(pixel_values.shape)}."
            )
        dtype = self.vision_tower.embeddings.patch_embeddings.projection.weight.dtype
        hidden_states = self._vision_hidden_state(pixel_values.to(dtype))[:, 1:, :]
        num_tiles, _, width = hidden_states.shape
        patch_h, patch_w = self.config.vision_config.patch_size
        grid_h, grid_w = pixel_values.shape[-2] // patch_h, pixel_values.shape[-1] // patch_w
        return hidden_states.transpose(1, 2).reshape(num_tiles, width, grid_h, grid_w)

    def get_image_features(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        r"""
        Per-location image features, the original `forward_tokenocr` values.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_tiles, num_channels, tile_size, tile_size)`):
                Normalised tiles, as [`TokenOCRImageProcessor`] makes them.

        Returns:
            `torch.FloatTensor` of shape `(num_tiles, num_locations, hidden_size)`: one feature per location of
            the 4x upsampled patch grid, row-major (`num_locations = (4 * tile_size / patch_size) ** 2`).
        """
        feature_map = self.upsampler(self._patch_grid(pixel_values))
        return self.projector(feature_map.flatten(2).transpose(1, 2))

    def get_text_features(self, input_ids: torch.LongTensor) -> torch.FloatTensor:
        r"""
        Token embeddings, the rows of the embedding table.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)` or `(sequence_length,)`):
                Query token ids, as [`TokenOCRProcessor`] makes them.

        Returns:
            `torch.FloatTensor` of shape `input_ids.shape + (hidden_size,)`.
        """
        return self.embed_tokens(input_ids)

    def get_similarity(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        locations_per_chunk: int = 2048,
    ) -> torch.FloatTensor:
        r"""
        Cosine similarity between query tokens and every location of every tile, computed without holding the
        `(num_tiles, num_locations, hidden_size)` features: the upsampler runs one tile at a time, and the projector,
        the normalisation and the scoring over `locations_per_chunk` locations at a time. Equal to
        `forward(...).similarity` up to float rounding.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_tiles, num_channels, tile_size, tile_size)`):
                Normalised tiles.
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)` or `(sequence_length,)`):
                Query token ids.
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                0 at padded query positions, whose similarity is set to 0.
            locations_per_chunk (`int`, *optional*, defaults to 2048):
                Locations projected and scored at once; bounds the working memory.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, sequence_length, num_tiles, num_locations)`.
        """
        if locations_per_chunk < 1:
            raise ValueError(f"locations_per_chunk must be at least 1, got {locations_per_chunk}.")
        input_ids = input_ids.unsqueeze(0) if input_ids.dim() == 1 else input_ids
        grid = self._patch_grid(pixel_values)
        text = _unit_vectors(self.get_text_features(input_ids))
        similarity = None
        for tile in range(grid.shape[0]):
            locations = self.upsampler(grid[tile : tile + 1]).flatten(2)[0].transpose(0, 1)  # (locations, width)
            if similarity is None:
                similarity = locations.new_empty((*input_ids.shape, grid.shape[0], locations.shape[0]))
                text = text.to(locations.device, locations.dtype)
            for start in range(0, locations.shape[0], locations_per_chunk):
                features = _unit_vectors(self.projector(locations[start : start + locations_per_chunk]))
                similarity[:, :, tile, start : start + features.shape[0]] = text @ features.T
        return _mask_padding(similarity, attention_mask, 0.0)

    def forward(
        self,
        pixel_values: torch.FloatTensor | None = None,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.LongTensor | None = None,
        image_embeds: torch.FloatTensor | None = None,
        return_dict: bool | None = None,
        grid_cols_rows: torch.LongTensor | None = None,
        num_tiles: torch.LongTensor | None = None,
        image_sizes: torch.LongTensor | None = None,
    ) -> TokenOCROutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_tiles, num_channels, tile_size, tile_size)`):
                Normalised tiles. Not needed when `image_embeds` is given.
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Query token ids.
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                0 at padded query positions (as the processor pads several queries): their `similarity` is 0 and
                their `logits` the lowest finite value, so padding never looks like a match and never gives NaN.
            image_embeds (`torch.FloatTensor` of shape `(num_tiles, num_locations, hidden_size)`, *optional*):
                Features from an earlier `get_image_features` call, to score new queries without running the
                vision tower again.
            grid_cols_rows, num_tiles, image_sizes (*optional*):
                The processor's per-image bookkeeping, accepted so that `model(**processor(...))` works; stitching
                the tiles back needs them (`TokenOCRProcessor.post_process_similarity`), the model does not.

        Returns:
            [`TokenOCROutput`], or a tuple `(similarity, logits, image_embeds, text_embeds)` when
            `return_dict=False`.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if input_ids is None:
            raise ValueError("TokenOCRModel.forward needs input_ids (the query tokens).")
        if image_embeds is None:
            if pixel_values is None:
                raise ValueError("TokenOCRModel.forward needs pixel_values or image_embeds.")
            image_embeds = self.get_image_features(pixel_values)
        if input_ids.dim() == 1:
            input_ids = input_ids.unsqueeze(0)
        text_embeds = self.get_text_features(input_ids)

        image_normed = _unit_vectors(image_embeds)
        text_normed = _unit_vectors(text_embeds).to(image_normed.device, image_normed.dtype)
        similarity = torch.einsum("btd,nld->btnl", text_normed, image_normed)
        logit_scale = self.logit_scale.to(similarity.device, similarity.dtype)
        logits = similarity * logit_scale.exp() + self.logit_bias.to(similarity.device, similarity.dtype)
        similarity = _mask_padding(similarity, attention_mask, 0.0)
        logits = _mask_padding(logits, attention_mask, torch.finfo(logits.dtype).min)

        output = TokenOCROutput(
            similarity=similarity, logits=logits, image_embeds=image_embeds, text_embeds=text_embeds
        )
        return output if return_dict else output.to_tuple()


def _unit_vectors(vectors: torch.Tensor) -> torch.Tensor:
    """`vectors / ||vectors||` along the last dimension; an all-zero vector stays zero instead of becoming NaN."""
    return torch.nn.functional.normalize(vectors, dim=-1, eps=torch.finfo(vectors.dtype).tiny)


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


__all__ = ["TokenOCRPreTrainedModel", "TokenOCRModel", "TokenOCROutput"]
