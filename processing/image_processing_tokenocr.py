# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""Image processor for TokenOCR: the original dynamic tiling, with each image's tile grid reported."""

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling


try:  # transformers >= 5.x keeps the PIL implementation apart from the torchvision one
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import get_optimal_tiled_canvas
except ImportError:  # pragma: no cover - older layout
    from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas


# PIL modes holding more than 8 bits per sample; PIL's own convert("RGB") clips them to 255.
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def _describe(image, index: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return f"'{os.fspath(image)}'"
    filename = getattr(image, "filename", None)
    return f"'{filename}'" if filename else f"image {index}"


def _array_to_pil(array: np.ndarray, name: str) -> Image.Image:
    """A numpy image (HW, HWC or CHW; uint8, uint16, bool or float in [0, 1] or [0, 255]) as a PIL image."""
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ValueError(
            f"Cannot read {name} as an image: expected (height, width), (height, width, channels) or "
            f"(channels, height, width) with 1, 3 or 4 channels, got shape {array.shape}."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} has zero size ({array.shape[1]}x{array.shape[0]} pixels).")
    if array.dtype == np.uint8:
        pass
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or infinite values.")
        scale = 255.0 if np.issubdtype(array.dtype, np.floating) and array.max(initial=0) <= 1.0 else 1.0
        array = np.clip(np.round(array * scale), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"Cannot read {name} as an image: unsupported dtype {array.dtype}.")
    return Image.fromarray(array)


def to_rgb_image(image, index: int = 0) -> Image.Image:
    """
    Open `image` (a path, URL, PIL image, numpy array or torch tensor) as a PIL RGB image the way the original
    TokenOCR code does: PIL's `convert("RGB")`, which drops an alpha channel without compositing it. 16-bit
    images are rescaled to 8 bits first (PIL alone would clip them to white).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: an unreadable, truncated, empty or zero-size image; the message names it.
    """
    name = _describe(image, index)
    if isinstance(image, (str, os.PathLike)):
        location = os.fspath(image)
        if location.startswith(("http://", "https://")):
            from transformers.image_utils import load_image

            image = load_image(location)
        else:
            if not os.path.exists(location):
                raise FileNotFoundError(f"Image file {name} does not exist.")
            try:
                image = Image.open(location)
                image.load()
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
                raise ValueError(f"Cannot read image file {name}: {error}") from error
    elif not isinstance(image, Image.Image):
        if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch.Tensor
            image = image.detach().cpu().numpy()
        if not isinstance(image, np.ndarray):
            raise TypeError(
                f"{name} is a {type(image).__name__}; expected a path, URL, PIL image, numpy array or torch tensor."
            )
        image = _array_to_pil(image, name)
    else:
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as error:
            raise ValueError(f"Cannot read {name}: {error}") from error

    if image.width == 0 or image.height == 0:
        raise ValueError(f"{name} has zero size ({image.width}x{image.height} pixels).")
    if image.mode in _WIDE_INTEGER_MODES:
        image = _array_to_pil(np.asarray(image).astype(np.uint16, copy=False), name)
    return image.convert("RGB")


class TokenOCRImageProcessor(BaseImageProcessor):
    r"""
    Cuts a document image into tiles the way TokenOCR was trained: choose a grid of `cols x rows` tiles (between
    `min_tiles` and `max_tiles`) whose aspect ratio is closest to the image's, resize the image to
    `(cols * tile, rows * tile)` with PIL bicubic, cut the tiles row-major, and append a thumbnail of the whole image
    when there is more than one tile. Tiles are normalised with ImageNet mean and std.

    The grid choice is transformers' GOT-OCR2 `get_optimal_tiled_canvas`, which matches the original.

    Args:
        size (`dict[str, int]` or `int`, *optional*, defaults to `{"height": 448, "width": 448}`):
            Tile size.
        min_tiles (`int`, *optional*, defaults to 1):
            Fewest tiles per image.
        max_tiles (`int`, *optional*, defaults to 12):
            Most tiles per image (thumbnail not counted).
        use_thumbnail (`bool`, *optional*, defaults to `True`):
            Whether to append a thumbnail when an image has more than one tile.
        resample (`PILImageResampling`, *optional*, defaults to `BICUBIC`):
            Resampling filter for the grid resize and the thumbnail.
        image_mean (`list[float]`, *optional*, defaults to the ImageNet mean):
            Per-channel mean subtracted after scaling to [0, 1].
        image_std (`list[float]`, *optional*, defaults to the ImageNet std):
            Per-channel standard deviation divided by after subtracting the mean.
    """

    model_input_names = ["pixel_values"]

    def __init__(
        self,
        size: dict[str, int] | int | None = None,
        min_tiles: int = 1,
        max_tiles: int = 12,
        use_thumbnail: bool = True,
        resample: PILImageResampling | int = PILImageResampling.BICUBIC,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        **kwargs,
    ):
        for stale in ("_valid_kwargs_names", "_valid_processor_keys", "image_processor_type"):
            kwargs.pop(stale, None)
        super().__init__(**kwargs)
        self.size = self._size_dict(size if size is not None else 448)
        self.min_tiles = min_tiles
        self.max_tiles = max_tiles
        self.use_thumbnail = use_thumbnail
        self.resample = int(resample)
        self.image_mean = list(image_mean if image_mean is not None else IMAGENET_DEFAULT_MEAN)
        self.image_std = list(image_std if image_std is not None else IMAGENET_DEFAULT_STD)
        self._check_tiling(self.min_tiles, self.max_tiles)

    @staticmethod
    def _size_dict(size) -> dict[str, int]:
        if isinstance(size, int):
            size = {"height": size, "width": size}
        if not isinstance(size, dict) or set(size) != {"height", "width"} or min(size.values()) < 1:
            raise ValueError(f"size must be a positive int or {{'height': H, 'width': W}}, got {size!r}.")
        return {"height": int(size["height"]), "width": int(size["width"])}

    @staticmethod
    def _check_tiling(min_tiles: int, max_tiles: int):
        if not (isinstance(min_tiles, int) and isinstance(max_tiles, int) and 1 <= min_tiles <= max_tiles):
            raise ValueError(f"Need 1 <= min_tiles <= max_tiles, got min_tiles={min_tiles}, max_tiles={max_tiles}.")

    def get_grid(self, height: int, width: int, min_tiles: int | None = None, max_tiles: int | None = None):
        """The `(cols, rows)` tile grid chosen for an image of `height x width` pixels."""
        size = self.size
        return get_optimal_tiled_canvas(
            (height, width),
            (size["height"], size["width"]),
            self.min_tiles if min_tiles is None else min_tiles,
            self.max_tiles if max_tiles is None else max_tiles,
        )

    def tile_image(self, image: Image.Image, min_tiles=None, max_tiles=None, use_thumbnail=None):
        """
        Cut one RGB PIL image into tiles.

        Returns:
            `(tiles, (cols, rows))`: the list of PIL tiles (grid row-major, then the thumbnail if any) and the grid.
        """
        use_thumbnail = self.use_thumbnail if use_thumbnail is None else use_thumbnail
        tile_h, tile_w = self.size["height"], self.size["width"]
        cols, rows = self.get_grid(image.height, image.width, min_tiles, max_tiles)
        canvas = image.resize((cols * tile_w, rows * tile_h), resample=self.resample)
        tiles = [
            canvas.crop((col * tile_w, row * tile_h, (col + 1) * tile_w, (row + 1) * tile_h))
            for row in range(rows)
            for col in range(cols)
        ]
        if use_thumbnail and len(tiles) > 1:
            tiles.append(image.resize((tile_w, tile_h), resample=self.resample))
        return tiles, (cols, rows)

    def _normalize(self, tile: Image.Image) -> np.ndarray:
        pixels = np.asarray(tile, dtype=np.float32) / np.float32(255.0)
        pixels = (pixels - np.asarray(self.image_mean, dtype=np.float32)) / np.asarray(self.image_std, dtype=np.float32)
        return pixels.transpose(2, 0, 1)

    def preprocess(
        self,
        images,
        min_tiles: int | None = None,
        max_tiles: int | None = None,
        use_thumbnail: bool | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        r"""
        Tile one image or a list of images.

        Args:
            images: a path, URL, PIL image, numpy array or torch tensor, or a list of them (sizes may differ).
            min_tiles, max_tiles, use_thumbnail: override the processor's settings for this call.
            return_tensors (`str`, *optional*): `"pt"` for torch tensors, `"np"` or `None` for numpy arrays.

        Returns:
            [`BatchFeature`] with
            - `pixel_values` `(total_tiles, 3, tile_height, tile_width)`: the tiles of every image, in order;
            - `grid_cols_rows` `(num_images, 2)`: each image's grid as (columns, rows);
            - `num_tiles` `(num_images,)`: tiles per image, thumbnail included;
            - `image_sizes` `(num_images, 2)`: each input image's (height, width) in pixels.
        """
        if kwargs:
            raise TypeError(f"TokenOCRImageProcessor got unexpected arguments: {sorted(kwargs)}.")
        min_tiles = self.min_tiles if min_tiles is None else min_tiles
        max_tiles = self.max_tiles if max_tiles is None else max_tiles
        self._check_tiling(min_tiles, max_tiles)
        if images is None or (isinstance(images, (list, tuple)) and len(images) == 0):
            raise ValueError("No image was given.")
        if not isinstance(images, (list, tuple)):
            images = [images]

        pixel_values, grids, num_tiles, image_sizes = [], [], [], []
        for index, image in enumerate(images):
            rgb = to_rgb_image(image, index)
            tiles, grid = self.tile_image(rgb, min_tiles, max_tiles, use_thumbnail)
            pixel_values.extend(self._normalize(tile) for tile in tiles)
            grids.append(grid)
            num_tiles.append(len(tiles))
            image_sizes.append((rgb.height, rgb.width))

        data = {
            "pixel_values": np.stack(pixel_values),
            "grid_cols_rows": np.asarray(grids, dtype=np.int64),
            "num_tiles": np.asarray(num_tiles, dtype=np.int64),
            "image_sizes": np.asarray(image_sizes, dtype=np.int64),
        }
        return BatchFeature(data=data, tensor_type=return_tensors)

    def __call__(self, images, **kwargs) -> BatchFeature:
        return self.preprocess(images, **kwargs)

    def to_dict(self):
        output = super().to_dict()
        for internal in ("_valid_kwargs_names", "_valid_processor_keys", "_processor_class"):
            output.pop(internal, None)
        return output


__all__ = ["TokenOCRImageProcessor"]
