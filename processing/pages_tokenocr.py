# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
The page reader: every input a user can give (an image file, a URL, PIL image, numpy array or torch tensor, a PDF
with page ranges) as RGB pages, one at a time, with one-line errors that name the input. The pipeline, the command
line, evaluation and the demo all read pages here. Light on purpose: PIL and numpy (pypdfium2 for PDFs), no torch or
transformers, so the command line can check its inputs before loading a model.
"""

import io
import math
import os
import stat
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .settings_tokenocr import DEFAULT_PDF_DPI, MAX_PDF_PAGE_PIXELS, parse_pages, selected_pdf_pages


# An image URL is read within this many seconds in all and this many bytes (a scanned page is a few MB).
URL_TIMEOUT_SECONDS = 60
MAX_DOWNLOAD_BYTES = 256 * 2**20


class _TooLarge(Exception):
    """An image over the caller's pixel bound (raised inside `_decode`, reported as a ValueError)."""


# PIL modes holding more than 8 bits per sample; PIL's own convert("RGB") clips them to 255.
_WIDE_INTEGER_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N")


def describe_image(image, index: int = 0, position: str | None = None) -> str:
    """How an image input is named in messages: its path or file name, else `position` (default `images[index]`, its
    place in the list given)."""
    if isinstance(image, (str, os.PathLike)):
        return f"'{os.fsdecode(image)}'"
    filename = getattr(image, "filename", None)
    return f"'{filename}'" if filename else (position or f"images[{index}]")


def _array_to_pil(array: np.ndarray, name: str) -> Image.Image:
    """
    A numpy image (HW, HWC or CHW) as a PIL image. uint8 as is; bool as 0/255; uint16 as 16-bit (scaled to 8 bits);
    any other integer dtype as 0-255 values (clipped); floats as [0, 1] when their maximum is at most 1, else 0-255.
    """
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
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype == np.uint16:
        array = np.round(array.astype(np.float32) / 257.0).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        array = np.clip(array, 0, 255).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float32)
        if not np.isfinite(array).all():
            raise ValueError(f"{name} contains NaN or infinite values.")
        scale = 255.0 if array.max(initial=0.0) <= 1.0 else 1.0
        array = np.clip(np.round(array * scale), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"Cannot read {name} as an image: unsupported dtype {array.dtype}.")
    return Image.fromarray(array)


def _tensor_to_numpy(tensor, name: str) -> np.ndarray:
    if tensor.is_floating_point():
        tensor = tensor.float()  # numpy has no bfloat16
    elif tensor.is_complex():
        raise ValueError(f"Cannot read {name} as an image: complex tensor of dtype {tensor.dtype}.")
    return tensor.detach().cpu().numpy()


# Paths and URLs are opened here rather than with `transformers.image_utils.load_image`, which converts to RGB and
# applies the EXIF orientation at once: 16-bit images must be rescaled before the RGB conversion (PIL would clip them
# to white), the orientation is optional, and every failure must name the image on one line.
def _open_file(location: str, name: str, max_pixels: int | None = None) -> Image.Image:
    if not os.path.exists(location):
        raise FileNotFoundError(f"Image file {name} does not exist.")
    if os.path.isdir(location):
        raise ValueError(f"{name} is a folder, not an image file.")
    if not stat.S_ISREG(os.stat(location).st_mode):  # a FIFO or a device would block or never end
        raise ValueError(f"{name} is not a regular file.")
    return _decode(lambda: Image.open(location), name, max_pixels, location)


def _open_url(url: str, name: str, max_pixels: int | None = None) -> Image.Image:
    import time
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + URL_TIMEOUT_SECONDS
    content = bytearray()
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_SECONDS) as response:
            while block := response.read1(1 << 16):  # whatever has arrived: a slow server cannot hold one read
                content += block
                if len(content) > MAX_DOWNLOAD_BYTES:
                    raise ValueError(f"it is larger than {MAX_DOWNLOAD_BYTES // 2**20} MiB")
                if time.monotonic() > deadline:
                    raise ValueError(f"it took more than {URL_TIMEOUT_SECONDS} s")
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise ValueError(f"Cannot download image {name}: {error}") from error
    return _decode(lambda: Image.open(io.BytesIO(content)), name, max_pixels)


def _decode(opener, name: str, max_pixels: int | None = None, location: str | None = None) -> Image.Image:
    """Open and decode an image; errors name it `name` (PIL's own messages hold its `location`, which is left out:
    the caller chose how the image is named, e.g. without a server's folders)."""
    try:
        image = opener()
        if max_pixels is not None and image.width * image.height > max_pixels:  # known from the header alone
            raise _TooLarge(
                f"{name} is {image.width} x {image.height} pixels; at most {max_pixels / 1_000_000:g} megapixels are "
                "taken here (scale it down)"
            )
        image.load()
    except Image.DecompressionBombError as error:
        raise ValueError(
            f"Image {name} is too large to decode safely ({error}); PIL refuses images above "
            f"{2 * Image.MAX_IMAGE_PIXELS} pixels."
        ) from error
    except _TooLarge as error:
        raise ValueError(str(error)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        reason = str(error).replace(f"'{location}'", "").replace(location, "") if location else str(error)
        raise ValueError(f"Cannot read image file {name}: {' '.join(reason.split())}") from None
    return image


def to_rgb_image(image, index: int = 0, apply_exif_orientation: bool = True, name: str | None = None,
                 max_pixels: int | None = None) -> Image.Image:
    """
    Open `image` (a path, URL, PIL image, numpy array or torch tensor) as a PIL RGB image the way the original
    TokenOCR code does: PIL's `convert("RGB")`, which drops an alpha channel without compositing it. 16-bit images
    are rescaled to 8 bits first (PIL alone would clip them to white). With `apply_exif_orientation` (the default,
    a deliberate difference from the original), a file's or PIL image's EXIF orientation is applied, so a phone
    photo is processed upright. Messages name the image `name`, else as `describe_image(image, index)` does. A file
    or URL of more than `max_pixels` pixels (default: PIL's own bound) is refused from its header, before decoding.

    Raises:
        FileNotFoundError: a path that does not exist.
        TypeError: an input of another type.
        ValueError: an unreadable, truncated, empty, zero-size or too large image, or a URL that cannot be fetched
            (in `URL_TIMEOUT_SECONDS`, within `MAX_DOWNLOAD_BYTES`); the message names it.
    """
    name = name or describe_image(image, index)
    if isinstance(image, (str, os.PathLike)):
        location = os.fsdecode(image)
        is_url = location.startswith(("http://", "https://"))
        image = _open_url(location, name, max_pixels) if is_url else _open_file(location, name, max_pixels)
    elif isinstance(image, Image.Image):
        image = _decode(lambda: image, name)
    else:
        if hasattr(image, "detach") and hasattr(image, "cpu"):  # torch.Tensor
            image = _tensor_to_numpy(image, name)
        if not isinstance(image, np.ndarray):
            raise TypeError(
                f"{name} is a {type(image).__name__}; expected a path, URL, PIL image, numpy array or torch tensor."
            )
        image = _array_to_pil(image, name)

    if image.width == 0 or image.height == 0:
        raise ValueError(f"{name} has zero size ({image.width}x{image.height} pixels).")
    if apply_exif_orientation:
        image = ImageOps.exif_transpose(image)
    if image.mode in _WIDE_INTEGER_MODES:
        image = _array_to_pil(np.asarray(image).astype(np.uint16, copy=False), name)
    return image.convert("RGB")


def is_pdf(source) -> bool:
    """Whether `source` is a PDF: bytes starting with the PDF signature, a path ending in `.pdf`, or a local file that
    starts with the signature whatever its name."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source[:5]) == b"%PDF-"
    if not isinstance(source, (str, os.PathLike)):
        return False
    location = os.fsdecode(source)
    if location.lower().endswith(".pdf"):
        return True
    try:
        if location.startswith(("http://", "https://")) or not stat.S_ISREG(os.stat(location).st_mode):
            return False
        with open(location, "rb") as file:
            return file.read(5) == b"%PDF-"
    except (OSError, ValueError):
        return False


def _open_pdf(source, name: str | None = None):
    """`(document, name)` for a PDF path or bytes; one-line errors for what cannot be read."""
    try:
        import pypdfium2
    except ImportError as error:
        raise ImportError("Reading PDFs needs pypdfium2: pip install pypdfium2") from error
    name = name or _source_name(source, 0, None)
    if isinstance(source, (str, os.PathLike)) and not os.path.isfile(source):
        raise FileNotFoundError(f"PDF file {name} does not exist.")
    try:
        document = pypdfium2.PdfDocument(os.fspath(source) if isinstance(source, os.PathLike) else source)
    except pypdfium2.PdfiumError as error:
        raise ValueError(f"Cannot read PDF {name}: {error} (damaged, or encrypted with a password)") from None
    if len(document) == 0:
        document.close()
        raise ValueError(f"PDF {name} has no pages.")
    return document, name


def pdf_page_numbers(source, pages: str | None = None, name: str | None = None) -> list[int]:
    """The 1-based numbers of the `pages` selected (`"1-3,7"`, default all) in a PDF (a path or its bytes)."""
    document, name = _open_pdf(source, name)
    try:
        return selected_pdf_pages(len(document), pages, name)
    finally:
        document.close()


def _check_dpi(dpi) -> None:
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not 18 <= dpi <= 1200:
        raise ValueError(f"dpi must be between 18 and 1200, got {dpi!r}.")


def _render_page(document, number: int, name: str, dpi, max_pixels: int) -> Image.Image:
    """Page `number` (1-based) rendered at `dpi` as RGB; one that would exceed `max_pixels` is refused first."""
    page = document[number - 1]
    try:
        width, height = (round(side * dpi / 72) for side in page.get_size())
        if width * height > max_pixels:
            fitting = int(dpi * math.sqrt(max_pixels / (width * height)))
            raise ValueError(
                f"Page {number} of {name} would be {width} x {height} pixels at {dpi} dpi, more than "
                f"{max_pixels / 1_000_000:g} megapixels; render it at {fitting} dpi or less."
            )
        return page.render(scale=dpi / 72).to_pil().convert("RGB")
    except ValueError:
        raise
    except Exception as error:  # pdfium reports a page it cannot load or render with its own exception types
        raise ValueError(f"Cannot render page {number} of {name}: {' '.join(str(error).split())}") from None
    finally:
        page.close()


def _pdf_pages(source, name: str, pages, dpi, max_pixels: int, skip_errors: bool) -> Iterator[
        tuple[int | None, Image.Image | None, Exception | None]]:
    """`(number, image, None)` per selected page of one PDF, opened once, or `(number, None, error)` for a page that
    cannot be rendered or, with `skip_errors`, is past the end (and the rest go on); `(None, None, error)` when the
    document cannot be opened."""
    try:
        document, name = _open_pdf(source, name)
    except (ValueError, OSError) as error:
        yield None, None, error
        return
    try:
        count = len(document)
        try:
            numbers = selected_pdf_pages(count, pages, name)
        except ValueError as error:
            if not skip_errors:
                yield None, None, error
                return
            # each selected page on its own: past the end, an open range ('10-') stands for its first page
            numbers = [number for first, last in parse_pages(pages)
                       for number in range(first, (last if last is not None else max(first, count)) + 1)]
        for number in numbers:
            if number > count:
                yield number, None, ValueError(f"PDF {name} has {count} pages; page {number} was asked for.")
                continue
            try:
                yield number, _render_page(document, number, name, dpi, max_pixels), None
            except ValueError as error:
                yield number, None, error
    finally:
        document.close()


def load_pdf_pages(source, pages: str | None = None, dpi: int = DEFAULT_PDF_DPI,
                   max_pixels: int = MAX_PDF_PAGE_PIXELS) -> Iterator[tuple[int, Image.Image]]:
    """
    Render the pages of a PDF (a path, or its bytes) as RGB images, one at a time: yields `(page_number, image)`
    with 1-based page numbers, for the `pages` selected (`"1-3,7"`, default all) at `dpi` dots per inch. Needs
    `pypdfium2` (`pip install pypdfium2`, or the package's `pdf` extra).

    Raises:
        ImportError: pypdfium2 is not installed.
        ValueError: the PDF is encrypted, damaged or has no pages, a selected page does not exist, or a page at
            `dpi` would exceed `max_pixels` (checked before it is rendered).
    """
    for page in read_pages([source], pages, dpi, max_pixels=max_pixels):
        yield page.number, page.image


@dataclass
class Page:
    """
    One page read by [`read_pages`]: `image` (RGB, `None` when it could not be read and `error` says why), `index`
    (the place of its input among those given), `number` (1-based page of a PDF; `None` for an image) and `name` (how
    messages name the input).
    """

    image: Image.Image | None
    index: int
    number: int | None
    name: str
    error: Exception | None = None

    @property
    def label(self) -> str:
        """The input's name, with the page number for a PDF page (`'report.pdf' page 3`)."""
        return self.name if self.number is None else f"{self.name} page {self.number}"


def _source_name(source, index: int, names: Sequence[str] | None) -> str:
    if names is not None:
        return names[index]
    return "PDF given as bytes" if isinstance(source, (bytes, bytearray, memoryview)) else describe_image(source, index)


def read_pages(sources: Iterable, pages: str | None = None, dpi: int = DEFAULT_PDF_DPI, skip_errors: bool = False,
               max_pixels: int | None = None, names: Sequence[str] | None = None) -> Iterator[Page]:
    """
    Read `sources` as RGB pages, one at a time, in order: each image input (a path, URL, PIL image, numpy array or
    torch tensor; see [`to_rgb_image`]) is one [`Page`]; a PDF (a `.pdf` path or PDF bytes) gives its `pages`
    (`"1-3,7"`, default all) rendered at `dpi`, opened once. Only the page being handed out is held.

    Args:
        skip_errors: give an input or page that cannot be read as a `Page` with `error` set (and go on) instead of
            raising.
        max_pixels: the largest page taken, in pixels (default: PIL's bound for images, `MAX_PDF_PAGE_PIXELS` for
            PDF pages); a larger one is refused from its header or its declared size, before decoding.
        names: how messages name each input (default: its path, file name or place in `sources`).

    Raises:
        FileNotFoundError, TypeError, ValueError, ImportError: as [`to_rgb_image`] and [`load_pdf_pages`] do,
            naming the input; not raised for unreadable inputs with `skip_errors`.
    """
    _check_dpi(dpi)
    for index, source in enumerate(sources):
        name = _source_name(source, index, names)
        if is_pdf(source):
            pdf_pixels = MAX_PDF_PAGE_PIXELS if max_pixels is None else max_pixels
            for number, image, error in _pdf_pages(source, name, pages, dpi, pdf_pixels, skip_errors):
                if error is not None and not skip_errors:
                    raise error
                yield Page(image, index, number, name, error)
            continue
        try:
            image = to_rgb_image(source, index, name=name, max_pixels=max_pixels)
        except (ValueError, OSError, TypeError) as error:
            if not skip_errors:
                raise
            yield Page(None, index, None, name, error)
            continue
        yield Page(image, index, None, name)


def page_numbers(source, pages: str | None = None, name: str | None = None) -> list[int] | None:
    """
    A quick look at one input before anything is computed: the 1-based numbers of a PDF's selected `pages`, or `None`
    for an image (a local file's header is read, so a file that is not an image is refused now; a URL is not
    fetched).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: a folder, a file that is neither an image nor a PDF that can be read, or pages past a PDF's end.
    """
    name = name or _source_name(source, 0, None)
    if isinstance(source, (bytes, bytearray, memoryview)) and is_pdf(source):
        return pdf_page_numbers(source, pages, name=name)
    if not isinstance(source, (str, os.PathLike)) or os.fsdecode(source).startswith(("http://", "https://")):
        return None
    location = os.fsdecode(source)
    if not os.path.exists(location):
        raise FileNotFoundError(f"{name} does not exist.")
    if os.path.isdir(location):
        raise ValueError(f"{name} is a folder; give image or PDF files.")
    if not stat.S_ISREG(os.stat(location).st_mode):
        raise ValueError(f"{name} is not a regular file.")
    if is_pdf(location):
        return pdf_page_numbers(location, pages, name=name)
    try:
        with Image.open(location):
            return None
    except Image.DecompressionBombError as error:
        raise ValueError(f"Image {name} is too large to decode safely ({error}).") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{name} is neither an image nor a PDF that can be read ({error}).") from None
