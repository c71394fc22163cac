# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
The training objective of [`TokenOCRForTokenAlignment`]: the authors' stage-1 losses (mask-pooled alignment) and this
project's per-location term, as functions of the features, the token embeddings and the token masks.

Remote code, like the model file it serves: it imports torch only.
"""

import math

import torch
from torch import nn


# The loss components of `TokenOCRForTokenAlignment`, and their weights in the authors' objective (no `seg` term).
LOSS_COMPONENTS = ("seg", "sim", "l2", "sig")
ORIGINAL_LOSS_WEIGHTS = {"seg": 0.0, "sim": 1.0, "l2": 1.0, "sig": 1.0}


def resolve_loss_weights(loss_weights: dict | None) -> dict[str, float]:
    """`ORIGINAL_LOSS_WEIGHTS` updated with `loss_weights` (names among `LOSS_COMPONENTS`, non-negative numbers)."""
    weights = dict(ORIGINAL_LOSS_WEIGHTS)
    for name, weight in (loss_weights or {}).items():
        if name not in LOSS_COMPONENTS:
            raise ValueError(f"Unknown loss component {name!r}; choose among {', '.join(LOSS_COMPONENTS)}.")
        if not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight < 0:
            raise ValueError(f"The weight of loss_{name} must be a non-negative number, got {weight!r}.")
        weights[name] = float(weight)
    if not any(weights.values()):
        raise ValueError("At least one loss weight must be above 0; with all of them 0 nothing would be trained.")
    return weights


def check_seg_temperature(seg_logit_scale: float, seg_logit_bias: float) -> None:
    """Refuse a `loss_seg` temperature that is not a positive, finite scale and a finite bias."""
    numbers = all(isinstance(value, (int, float)) for value in (seg_logit_scale, seg_logit_bias))
    if not numbers or not math.isfinite(seg_logit_scale) or seg_logit_scale <= 0 or not math.isfinite(seg_logit_bias):
        raise ValueError(
            f"loss_seg's temperature needs a positive scale and a finite bias, got {seg_logit_scale}, {seg_logit_bias}."
        )


def tile_image_index(num_tiles: torch.Tensor | None, total_tiles: int, num_images: int, device) -> torch.Tensor:
    """`(total_tiles,)`: the index of the image each tile belongs to, from the tile count of each image."""
    if num_tiles is None:
        if num_images not in (1, total_tiles):  # one image owns every tile; as many tiles as images: one each
            raise ValueError(f"num_tiles is needed to tell which tiles belong to which of the {num_images} images.")
        num_tiles = torch.tensor([total_tiles]) if num_images == 1 else torch.ones(num_images, dtype=torch.long)
    num_tiles = torch.as_tensor(num_tiles, device=device).flatten().long()
    if len(num_tiles) != num_images:
        raise ValueError(f"num_tiles gives {len(num_tiles)} images but input_ids has {num_images}.")
    if int(num_tiles.sum()) != total_tiles or bool((num_tiles < 1).any()):
        raise ValueError(f"num_tiles {num_tiles.tolist()} does not split {total_tiles} tiles into non-empty images.")
    return torch.repeat_interleave(torch.arange(num_images, device=device), num_tiles)


def masks_on_feature_grid(token_masks: torch.Tensor, side: int) -> torch.Tensor:
    r"""
    Token masks as booleans on the `side x side` feature grid of each tile, flattened row-major.

    Args:
        token_masks (`torch.Tensor` of shape `(num_tiles, num_tokens, height, width)`): masks per tile (any
            resolution, any dtype; non-zero means inside). Masks of another size are resized bilinearly
            (`align_corners=False`) and binarised `> 0`, as the original training does.

    Returns:
        `torch.BoolTensor` of shape `(num_tiles, num_tokens, side * side)`.
    """
    if token_masks.dim() != 4:
        raise ValueError(
            f"token_masks must have shape (num_tiles, num_tokens, height, width), got {tuple(token_masks.shape)}."
        )
    if tuple(token_masks.shape[-2:]) == (side, side):
        return (token_masks != 0).flatten(2)
    resized = [
        nn.functional.interpolate(tile[None].float(), size=(side, side), mode="bilinear", align_corners=False)[0] > 0
        for tile in token_masks
    ]
    return torch.stack(resized).flatten(2)


def segmentation_loss(logits, masks, token_valid, tile_image, location_valid=None):
    """
    `loss_seg`: BCE-with-logits(logits, mask), mean over an image's tokens, tiles and locations, then images.
    `location_valid` `(tiles, locations)` leaves out padding locations (whole images of different sizes).
    """
    bce = nn.functional.binary_cross_entropy_with_logits(logits.float(), masks.float(), reduction="none")
    weights = token_valid[tile_image].float()  # (tiles, tokens): padding tokens do not count
    if location_valid is None:
        per_location = bce.mean(-1)
    else:
        valid = location_valid.float()[:, None, :]
        per_location = (bce * valid).sum(-1) / valid.sum(-1).clamp(min=1.0)
    per_tile = (per_location * weights).sum(-1)
    num_images = token_valid.shape[0]
    per_image = torch.zeros(num_images, device=bce.device).index_add(0, tile_image, per_tile)
    tiles_per_image = torch.bincount(tile_image, minlength=num_images)
    counts = tiles_per_image * token_valid.sum(-1)
    supervised = counts > 0
    if not bool(supervised.any()):
        return logits.sum() * 0.0
    return (per_image[supervised] / counts[supervised]).mean()


def mask_mean_features(image_embeds, masks, tile_image, num_images):
    """`(v, counts)`: per image and token, the mean feature over the token's mask on all of the image's tiles."""
    tile_sums = torch.einsum("tkl,tld->tkd", masks.to(image_embeds.dtype), image_embeds).float()
    sums = torch.zeros(num_images, *tile_sums.shape[1:], device=tile_sums.device).index_add(0, tile_image, tile_sums)
    tile_counts = masks.sum(-1).float()
    counts = torch.zeros(num_images, masks.shape[1], device=masks.device).index_add(0, tile_image, tile_counts)
    return sums / counts.clamp(min=1.0)[..., None], counts


def similarity_loss(mean_features, text_embeds, present):
    """`loss_sim`: mean of `1 - cos(v, e)` over tokens with a non-empty mask."""
    if not bool(present.any()):
        return mean_features.sum() * 0.0
    cosine = nn.functional.cosine_similarity(mean_features[present], text_embeds[present].float(), dim=-1)
    return (1.0 - cosine).mean()


def l2_loss(mean_features, text_embeds, present):
    """`loss_l2`: mean of `||v - e||_2` over tokens with a non-empty mask."""
    if not bool(present.any()):
        return mean_features.sum() * 0.0
    return torch.linalg.vector_norm(mean_features[present] - text_embeds[present].float(), dim=-1).mean()


def sigmoid_loss(mean_features, text_embeds, input_ids, present, logit_scale, logit_bias):
    """`loss_sig`: SigLIP over all present tokens of the batch, positives where token ids are equal."""
    if not bool(present.any()):
        return mean_features.sum() * 0.0
    text = nn.functional.normalize(text_embeds[present].float(), dim=-1)
    image = nn.functional.normalize(mean_features[present], dim=-1)
    logits = text @ image.t() * logit_scale.float().exp() + logit_bias.float()
    ids = input_ids[present]
    targets = 2.0 * (ids[:, None] == ids[None, :]).float() - 1.0
    return -nn.functional.logsigmoid(targets * logits).sum() / len(ids)


def token_alignment_losses(
    similarity, image_embeds, text_embeds, input_ids, valid, token_masks, tile_image, *, loss_weights,
    seg_logit_scale_log, seg_logit_bias, logit_scale, logit_bias, whole_images=False, map_sizes=None,
) -> dict[str, torch.Tensor]:
    r"""
    Every loss of [`TokenOCRForTokenAlignment`] for one batch: `loss` (the weighted sum) and its components
    `loss_seg`, `loss_sim`, `loss_l2`, `loss_sig` ([`TokenOCRAlignmentOutput`] says what each is).

    Args:
        similarity (`torch.Tensor` of shape `(num_tiles, num_tokens, num_locations)`): cosine of every location of
            every tile with each token of its image.
        image_embeds (`torch.Tensor` of shape `(num_tiles, num_locations, hidden_size)`): the unnormalised features.
        text_embeds (`torch.Tensor` of shape `(num_images, num_tokens, hidden_size)`): the token embeddings.
        input_ids, valid (`torch.Tensor` of shape `(num_images, num_tokens)`): token ids; `True` for a supervised
            token, `False` for padding.
        token_masks (`torch.Tensor`): tiles: `(num_tiles, num_tokens, height, width)` at any resolution (resized to
            the feature grid, [`masks_on_feature_grid`]); whole images (`whole_images=True`): `(num_images,
            num_tokens, num_locations)` on each image's own map, whose `(h, w)` `map_sizes` gives (the rest is
            padding, left out).
        tile_image (`torch.Tensor` of shape `(num_tiles,)`): the image of each tile ([`tile_image_index`]).
        loss_weights (`dict[str, float]`): the weight of each of `LOSS_COMPONENTS` in `loss`.
        seg_logit_scale_log, seg_logit_bias (`torch.Tensor`): `loss_seg`'s logit is
            `seg_logit_scale_log.exp() * cos + seg_logit_bias`.
        logit_scale, logit_bias (`torch.Tensor`): `loss_sig`'s logit is `logit_scale.exp() * cos + logit_bias`.
    """
    location_valid = None
    if not whole_images:
        side = int(round(image_embeds.shape[1] ** 0.5))
        masks = masks_on_feature_grid(token_masks.to(image_embeds.device), side)
        where = f"on a {side}x{side} grid"
    else:  # whole images: masks already on each image's map, padded to the batch's locations
        if map_sizes is None:
            raise ValueError("A ResNet tower's losses need map_sizes (each image's map), as the collator gives them.")
        masks = token_masks.to(image_embeds.device).bool()
        counts = torch.as_tensor(map_sizes, device=masks.device).prod(-1)
        location_valid = torch.arange(similarity.shape[-1], device=masks.device)[None, :] < counts[:, None]
        where = "on the images' maps"
    if masks.shape != similarity.shape:
        raise ValueError(
            f"token_masks gives {masks.shape[0]} tiles x {masks.shape[1]} tokens {where}, but the batch has "
            f"{similarity.shape[0]} tiles x {similarity.shape[1]} tokens x {similarity.shape[2]} locations."
        )
    mean_features, counts = mask_mean_features(image_embeds, masks, tile_image, input_ids.shape[0])
    present = valid & (counts > 0)
    seg_logits = similarity.float() * seg_logit_scale_log.float().exp() + seg_logit_bias.float()
    losses = {
        "loss_seg": segmentation_loss(seg_logits, masks, valid, tile_image, location_valid),
        "loss_sim": similarity_loss(mean_features, text_embeds, present),
        "loss_l2": l2_loss(mean_features, text_embeds, present),
        "loss_sig": sigmoid_loss(mean_features, text_embeds, input_ids, present, logit_scale, logit_bias),
    }
    loss = sum(loss_weights[name] * losses[f"loss_{name}"] for name in LOSS_COMPONENTS)
    return {"loss": loss, **losses}


__all__ = [
    "LOSS_COMPONENTS",
    "ORIGINAL_LOSS_WEIGHTS",
    "check_seg_temperature",
    "l2_loss",
    "mask_mean_features",
    "masks_on_feature_grid",
    "resolve_loss_weights",
    "segmentation_loss",
    "sigmoid_loss",
    "similarity_loss",
    "tile_image_index",
    "token_alignment_losses",
]
