# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
Image processor for TokenOCR: the original dynamic tiling, with each image's tile grid reported, or whole images for
the ResNet variant (R50). Inputs are read by `pages_tokenocr`.
"""

import math

import numpy as np
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling, SizeDict
from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
    GotOcr2ImageProcessorKwargs,
    GotOcr2ImageProcessorPil,
    get_optimal_tiled_canvas,
)

from .pages_tokenocr import to_rgb_image
from .settings_tokenocr import (
    DEFAULT_MAX_SIDE, DEFAULT_THRESHOLD, MAX_TILES, MIN_TILES, RESNET_STRIDE, UPSAMPLING,
    check_max_side, check_threshold, check_tile_size, check_tiles,
)


def whole_image_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """The `(height, width)` an image is given to the model at without tiling: its own, scaled down to `max_side`."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def whole_image_map_size(height: int, width: int, stride: int = RESNET_STRIDE) -> tuple[int, int]:
    """The `(h, w)` feature (and similarity) map of a whole image of `height x width` pixels in a ResNet tower whose
    last stage has one location per `stride` x `stride` pixels (32 for the R50 release)."""
    return UPSAMPLING * math.ceil(height / stride), UPSAMPLING * math.ceil(width / stride)


def pad_images(images: list):
    r"""
    Stack images of different sizes into one batch, each at the top left, zero-padded at the bottom and right.

    Args:
        images (`list` of `np.ndarray` or `torch.Tensor` of shape `(channels, height_i, width_i)`): normalised images.

    Returns:
        `(batch, sizes)`: `batch` of shape `(len(images), channels, max height_i, max width_i)` (numpy or torch, as
        the inputs), `sizes` each image's `(height_i, width_i)`. The model crops every image out of its padding
        before running it, so padding never changes a result.
    """
    sizes = [tuple(int(side) for side in image.shape[-2:]) for image in images]
    shape = (len(images), images[0].shape[0], max(h for h, _ in sizes), max(w for _, w in sizes))
    if isinstance(images[0], np.ndarray):
        batch = np.zeros(shape, dtype=images[0].dtype)
    else:
        batch = images[0].new_zeros(shape)
    for index, (image, (height, width)) in enumerate(zip(images, sizes)):
        batch[index, :, :height, :width] = image
    return batch, sizes


class TokenOCRImageProcessorKwargs(GotOcr2ImageProcessorKwargs, total=False):
    r"""
    min_tiles (`int`, *optional*, defaults to `self.min_tiles`):
        Fewest tiles per image.
    max_tiles (`int`, *optional*, defaults to `self.max_tiles`):
        Most tiles per image (thumbnail not counted).
    use_thumbnail (`bool`, *optional*, defaults to `self.use_thumbnail`):
        Whether to append a thumbnail of the whole image when it has more than one tile.
    apply_exif_orientation (`bool`, *optional*, defaults to `self.apply_exif_orientation`):
        Whether to turn files and PIL images upright according to their EXIF orientation.
    do_tiling (`bool`, *optional*, defaults to `self.do_tiling`):
        Whether to cut images into tiles (InternViT variants) or give them whole (ResNet variant, R50).
    max_side (`int`, *optional*, defaults to `self.max_side`):
        Without tiling: longest side an image is given at; larger images are scaled down to it. None: no bound.
    """

    min_tiles: int
    max_tiles: int
    use_thumbnail: bool
    apply_exif_orientation: bool
    do_tiling: bool
    max_side: int | None


class TokenOCRImageProcessor(GotOcr2ImageProcessorPil):
    r"""
    Cuts a document image into tiles the way TokenOCR was trained: choose a grid of `cols x rows` tiles (between
    `min_tiles` and `max_tiles`) whose aspect ratio is closest to the image's, resize the image to
    `(cols * tile, rows * tile)` with PIL bicubic, cut the tiles row-major, and append a thumbnail of the whole image
    when there is more than one tile. Tiles are normalised with ImageNet mean and std.

    This is transformers' GOT-OCR2 PIL image processor (`crop_to_patches`), whose grid choice, resizing and
    normalisation give the original's tiles bit for bit, with TokenOCR's own image loading (`to_rgb_image`: PIL's
    `convert("RGB")` as the original, 16-bit images rescaled, EXIF orientation applied) and each image's grid
    reported, which stitching the tiles back needs.

    With `do_tiling=False` (the ResNet variant, R50) there are no tiles: each image is given whole, at its own size
    (scaled down only when its longer side exceeds `max_side`, PIL bicubic), with the same image loading and ImageNet
    normalisation. Images of different sizes are zero-padded at the bottom and right to a common size
    ([`pad_images`]), and each image's own size is reported (`pixel_sizes`) so that the model crops it out of its
    padding: padding never changes a result. Each image counts as one tile on a 1 x 1 grid.

    Args:
        size (`dict[str, int]` or `int`, *optional*, defaults to `{"height": 448, "width": 448}`): tile size.
        min_tiles (`int`, *optional*, defaults to 1): fewest tiles per image.
        max_tiles (`int`, *optional*, defaults to 12): most tiles per image (thumbnail not counted).
        use_thumbnail (`bool`, *optional*, defaults to `True`): append a thumbnail when an image has several tiles.
        apply_exif_orientation (`bool`, *optional*, defaults to `True`): apply files' and PIL images' EXIF
            orientation; `False` reproduces the original, which ignores it.
        do_tiling (`bool`, *optional*, defaults to `True`): cut images into tiles (InternViT variants); `False` gives
            each image whole (ResNet variant, R50), and `size`, `min_tiles`, `max_tiles` and `use_thumbnail` do not
            apply.
        max_side (`int`, *optional*, defaults to 2048): without tiling, the longest side an image is given at;
            larger images are scaled down to it (aspect ratio kept), which bounds time and memory on very large
            pages. `None` gives every image at its own size, as the original does.
        feature_stride (`int`, *optional*, defaults to 32): without tiling, the pixels per location of the ResNet
            tower's last stage (32 for four stages, as the R50 release; 16 for three, 8 for two): the image's map is
            `4 * ceil(side / feature_stride)` per side. It must match the model's `config.resnet_stride`.
        mask_threshold (`float`, *optional*, defaults to 0.2): the model's mask threshold on the cosine similarity,
            the default of the pipeline, the command line and the demo for this model. The released models keep
            our default 0.2; a trained model stores the threshold chosen on its validation pages.
        resample, image_mean, image_std: as in transformers' image processors (bicubic, ImageNet mean and std).
    """

    valid_kwargs = TokenOCRImageProcessorKwargs
    # Everything `preprocess` returns: the model's inputs (`pixel_values`, and `pixel_sizes` without tiling) and the
    # per-image bookkeeping that post-processing needs. An instance lists what its own `do_tiling` returns.
    model_input_names = ["pixel_values", "pixel_sizes", "grid_cols_rows", "num_tiles", "image_sizes", "map_sizes"]
    _WHOLE_IMAGE_ONLY = ("pixel_sizes", "map_sizes")
    size = {"height": 448, "width": 448}
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    resample = PILImageResampling.BICUBIC
    do_convert_rgb = False  # images arrive as RGB from `to_rgb_image`, with the original's convert("RGB") semantics
    crop_to_patches = True
    min_tiles = MIN_TILES
    max_tiles = MAX_TILES
    use_thumbnail = True
    apply_exif_orientation = True
    do_tiling = True
    max_side = DEFAULT_MAX_SIDE
    feature_stride = RESNET_STRIDE
    mask_threshold = DEFAULT_THRESHOLD

    def __init__(self, size: dict[str, int] | int | None = None, **kwargs):
        # Configs saved by older versions may carry the base class's private bookkeeping (`_valid_kwargs_names`,
        # `_valid_processor_keys`): it describes that version's arguments and must not replace this class's own.
        kwargs = {key: value for key, value in kwargs.items() if not key.startswith("_")}
        if isinstance(size, int) and not isinstance(size, bool):
            size = {"height": size, "width": size}
        if size is not None:  # a model folder's preprocessor_config.json is not trusted for sizes
            check_tile_size(size)
        super().__init__(**({"size": size} if size is not None else {}), **kwargs)
        check_tiles(self.min_tiles, self.max_tiles)
        check_max_side(self.max_side)
        if isinstance(self.feature_stride, bool) or not isinstance(self.feature_stride, int) or self.feature_stride < 1:
            raise ValueError(f"feature_stride must be a positive integer, got {self.feature_stride!r}.")
        self.mask_threshold = check_threshold(self.mask_threshold)
        if self.do_tiling:
            self.model_input_names = [name for name in type(self).model_input_names if name not in self._WHOLE_IMAGE_ONLY]

    # The GOT-OCR2 base class's own tiling settings: tiling here is governed by `min_tiles` / `max_tiles` only, so they
    # are not written to `preprocessor_config.json`, where editing them would change nothing.
    _BASE_SETTINGS_NOT_USED = ("crop_to_patches", "min_patches", "max_patches")

    def to_dict(self) -> dict:
        data = super().to_dict()
        for key in (*self._BASE_SETTINGS_NOT_USED, "model_input_names"):
            data.pop(key, None)
        return data

    def check_model(self, config) -> None:
        """
        Raise a `ValueError` when this processor cannot feed the model of `config`: tiles for a ResNet tower, whole
        images for an InternViT one, or a `feature_stride` other than the ResNet tower's (`config.resnet_stride`).
        """
        if getattr(config, "is_internvit", True):
            if not self.do_tiling:
                raise ValueError("The image processor gives whole images (do_tiling=False) but the model's InternViT "
                                 "tower works on tiles; use do_tiling=True.")
            return
        if self.do_tiling:
            raise ValueError("The image processor cuts tiles but the model's ResNet tower takes whole images; use "
                             "do_tiling=False.")
        if self.feature_stride != config.resnet_stride:
            raise ValueError(f"The image processor's feature_stride is {self.feature_stride} but the model's ResNet "
                             f"tower has stride {config.resnet_stride}; set feature_stride={config.resnet_stride}.")

    def get_grid(self, height: int, width: int, min_tiles: int | None = None, max_tiles: int | None = None):
        """The `(cols, rows)` tile grid chosen for an image of `height x width` pixels."""
        return get_optimal_tiled_canvas(
            (height, width),
            (self.size["height"], self.size["width"]),
            self.min_tiles if min_tiles is None else min_tiles,
            self.max_tiles if max_tiles is None else max_tiles,
        )

    def preprocess(self, images, **kwargs) -> BatchFeature:
        r"""
        Tile one image or a list of images.

        Args:
            images: a path, URL, PIL image, numpy array or torch tensor, or a list of them (sizes may differ).
            min_tiles, max_tiles, use_thumbnail, apply_exif_orientation, do_tiling, max_side: override the
                processor's settings.
            return_tensors (`str`, *optional*): `"pt"` for torch tensors, `"np"` or `None` for numpy arrays.

        Returns:
            [`BatchFeature`] with
            - `pixel_values` `(total_tiles, 3, tile_height, tile_width)`: the tiles of every image, in order;
              without tiling `(num_images, 3, max height, max width)`, each image zero-padded at the bottom and right;
            - `grid_cols_rows` `(num_images, 2)`: each image's grid as (columns, rows); `(1, 1)` without tiling;
            - `num_tiles` `(num_images,)`: tiles per image, thumbnail included; 1 without tiling;
            - `image_sizes` `(num_images, 2)`: each input image's (height, width) in pixels;
            - without tiling only: `pixel_sizes` `(num_images, 2)`, each image's (height, width) inside
              `pixel_values` (its own, or scaled down to `max_side`), and `map_sizes` `(num_images, 2)`, the (h, w) of
              its feature and similarity map, `4 * ceil(side / feature_stride)` per side.
        """
        if images is None or (isinstance(images, (list, tuple)) and len(images) == 0):
            raise ValueError("No image was given.")
        images = list(images) if isinstance(images, (list, tuple)) else [images]
        upright = kwargs.pop("apply_exif_orientation", self.apply_exif_orientation)
        images = [to_rgb_image(image, index, upright) for index, image in enumerate(images)]
        check_tiles(kwargs.get("min_tiles", self.min_tiles), kwargs.get("max_tiles", self.max_tiles))
        check_max_side(kwargs.get("max_side", self.max_side))
        if kwargs.get("size") is not None:
            size = kwargs["size"]
            check_tile_size({"height": size, "width": size} if isinstance(size, int) else size)
        return super().preprocess(images, **kwargs)

    def _preprocess(self, images, size, resample, do_rescale, rescale_factor, do_normalize, image_mean, image_std,
                    return_tensors, min_tiles, max_tiles, use_thumbnail, do_tiling=True, max_side=DEFAULT_MAX_SIDE,
                    **kwargs) -> BatchFeature:
        if not do_tiling:
            return self._preprocess_whole(images, max_side, resample, do_rescale, rescale_factor, do_normalize,
                                          image_mean, image_std, return_tensors)
        pixel_values, grids, num_tiles, image_sizes = [], [], [], []
        for image in images:  # (channels, height, width) uint8
            height, width = image.shape[-2:]
            tiles = self.crop_image_to_patches(image, min_tiles, max_tiles, use_thumbnail, size, resample)
            for tile in tiles:
                tile = self.rescale(tile, rescale_factor) if do_rescale else tile
                pixel_values.append(self.normalize(tile, image_mean, image_std) if do_normalize else tile)
            grids.append(self.get_grid(height, width, min_tiles, max_tiles))
            num_tiles.append(len(tiles))
            image_sizes.append((height, width))
        data = {
            "pixel_values": np.stack(pixel_values).astype(np.float32, copy=False),
            "grid_cols_rows": np.asarray(grids, dtype=np.int64),
            "num_tiles": np.asarray(num_tiles, dtype=np.int64),
            "image_sizes": np.asarray(image_sizes, dtype=np.int64),
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _preprocess_whole(self, images, max_side, resample, do_rescale, rescale_factor, do_normalize, image_mean,
                          image_std, return_tensors) -> BatchFeature:
        """No tiling: each image whole (scaled down to `max_side` if larger), normalised, the batch padded."""
        processed, image_sizes = [], []
        for image in images:  # (channels, height, width) uint8
            height, width = image.shape[-2:]
            target = whole_image_size(height, width, max_side)
            if target != (height, width):
                image = self.resize(image, SizeDict(height=target[0], width=target[1]), resample=resample)
            image = self.rescale(image, rescale_factor) if do_rescale else image
            processed.append(self.normalize(image, image_mean, image_std) if do_normalize else image)
            image_sizes.append((height, width))
        pixel_values, pixel_sizes = pad_images([image.astype(np.float32, copy=False) for image in processed])
        data = {
            "pixel_values": pixel_values,
            "grid_cols_rows": np.ones((len(images), 2), dtype=np.int64),
            "num_tiles": np.ones(len(images), dtype=np.int64),
            "image_sizes": np.asarray(image_sizes, dtype=np.int64),
            "pixel_sizes": np.asarray(pixel_sizes, dtype=np.int64),
            "map_sizes": np.asarray([whole_image_map_size(*size, self.feature_stride) for size in pixel_sizes],
                                    dtype=np.int64),
        }
        return BatchFeature(data=data, tensor_type=return_tensors)


__all__ = [
    "TokenOCRImageProcessor", "pad_images", "whole_image_map_size", "whole_image_size",
]
