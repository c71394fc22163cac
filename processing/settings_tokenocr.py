# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
Defaults, limits and input checks shared by the processor, the pipeline and the command line. No heavy imports: the
command line reads them while parsing arguments, before torch or transformers are loaded.
"""

import math
import re


# The default threshold for turning a similarity map into a text mask (on the raw cosine similarity): our choice for
# the released models, which store no threshold of their own; a trained model stores the one chosen on its validation
# pages.
DEFAULT_THRESHOLD = 0.2

# Tiles per vision-tower forward in the pipeline (its `batch_size`) when the caller does not choose.
DEFAULT_BATCH_SIZE = 4

# Most tiles per vision-tower forward that may be asked for (the pipeline's `batch_size`, the command line's
# `--batch-size`): far above what any accelerator holds at once (a tile is 448 x 448 pixels, and tiles of consecutive
# images share a forward), so that only a mistyped number (10**9) is refused, before anything is allocated.
MAX_BATCH_SIZE = 1024

# Query locations projected and scored at once by the pipeline; bounds its working memory.
LOCATIONS_PER_CHUNK = 2048

# Most tokens one query may have: its similarity maps and pictures grow with it.
MAX_QUERY_TOKENS = 256

# Longest side, in pixels, of the image-size heatmaps and masks; larger images get them scaled down to fit (their
# boxes stay in the image's own pixel coordinates).
MAX_VISUAL_SIDE = 4096

# Dynamic tiling limits of the original quick start.
MIN_TILES, MAX_TILES = 1, 12

# Without tiling (the ResNet variant, R50), each image goes whole through the model at its own size, except that an
# image whose longer side exceeds this many pixels is first scaled down to it (aspect ratio kept), which bounds the
# working resolution and memory for very large pages. None turns the bound off.
DEFAULT_MAX_SIDE = 2048

# A ResNet tower's last stage has one location per 32 x 32 pixels (ceil at the borders); the upsampler makes 4 x 4
# locations of each: an image of H x W pixels gets a map of (4 * ceil(H / 32)) x (4 * ceil(W / 32)).
RESNET_STRIDE, UPSAMPLING = 32, 4

# Resolution PDF pages are rendered at, in dots per inch, unless the caller chooses.
DEFAULT_PDF_DPI = 150

# Largest PDF page, in pixels at the chosen dpi, that is rendered (an A0 sheet at 300 dpi is 140 MP; a tiny PDF can
# declare a page of 200 x 200 inches, 900 MP at 150 dpi). Larger pages are refused before rendering.
MAX_PDF_PAGE_PIXELS = 150_000_000

# Largest tile side, in pixels, an image processor may be configured with (the released models use 448): a larger
# `size` in a model folder's preprocessor_config.json is refused instead of allocating tiles of that size.
MAX_TILE_SIDE = 2048

# Largest `max_side` (whole-image processors, the ResNet variant): a page is scaled down to at most this many pixels
# on its longer side; 8192 pixels is a Letter page at about 750 dpi.
MAX_SIDE_LIMIT = 8192

# Most tiles per image that may be asked for: the grid choice is quadratic in it, and 12 is the original's.
MAX_TILES_LIMIT = 64

# The characters after which the original quick start does NOT prepend a space to a query. This is its literal
# list: ASCII punctuation and digits, except that '[', '\\', ']' and '`' are missing from it.
NO_SPACE_PREFIX_CHARACTERS = frozenset("!\"#$%&'()*+,-./0123456789:;<=>?@^_{|}~")


def prepare_query(query) -> str:
    """
    The text the original TokenOCR tokenises for `query`: the query itself when it starts with an ASCII
    punctuation mark or digit from the original's list, otherwise `" " + query`.

    Raises:
        TypeError: `query` is not a string.
        ValueError: `query` is empty or whitespace only.
    """
    if not isinstance(query, str):
        raise TypeError(f"A query must be a string, got {type(query).__name__}: {query!r:.60}.")
    if not query.strip():
        raise ValueError(f"A query must contain at least one non-whitespace character, got {query!r}.")
    return query if query[0] in NO_SPACE_PREFIX_CHARACTERS else " " + query


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # half of a UTF-16 pair, alone: not text


def check_queries(queries) -> list[str]:
    """
    `queries` (one string, or a list or tuple of strings) as a non-empty list, each checked by `prepare_query`.

    Raises:
        TypeError: a query is not a string.
        ValueError: no query; an empty one; or one holding a lone surrogate (U+D800 to U+DFFF, not text: Python
            gives one for each byte of a command-line argument that is not UTF-8), named by its position.
    """
    if isinstance(queries, str):
        queries = [queries]
    elif not isinstance(queries, (list, tuple)):
        raise TypeError(f"queries must be a string or a list of strings, got {type(queries).__name__}.")
    if not queries:
        raise ValueError("No query was given.")
    for position, query in enumerate(queries, 1):
        prepare_query(query)
        surrogate = _LONE_SURROGATE.search(query)
        if surrogate:
            raise ValueError(
                f"Query {position} ({ascii(query)[:60]}) holds the lone surrogate {ascii(surrogate.group())[1:-1]} at "
                f"character {surrogate.start() + 1}, which is not text (bytes that are not UTF-8 give one on a command "
                "line); give the query as UTF-8 text."
            )
    return list(queries)


def check_batch_size(batch_size) -> int:
    """Tiles (or whole images) per vision-tower forward: an integer from 1 to `MAX_BATCH_SIZE`."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be an integer from 1 to {MAX_BATCH_SIZE} (tiles per forward), "
                         f"got {batch_size!r}.")
    return batch_size


def check_threshold(threshold) -> float:
    """A mask threshold on the cosine similarity: a finite number in [-1, 1]."""
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise TypeError(f"threshold must be a number, got {type(threshold).__name__}.")
    if not math.isfinite(threshold) or not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a finite number in [-1, 1] (a cosine similarity), got {threshold}.")
    return float(threshold)


def check_tiles(min_tiles, max_tiles) -> None:
    """`1 <= min_tiles <= max_tiles`, as integers (the released models were used with at most 12 tiles)."""
    values = (min_tiles, max_tiles)
    if not all(isinstance(value, int) and not isinstance(value, bool) for value in values) or not (
        1 <= min_tiles <= max_tiles <= MAX_TILES_LIMIT
    ):
        raise ValueError(
            f"Need 1 <= min_tiles <= max_tiles <= {MAX_TILES_LIMIT} (integers), got min_tiles={min_tiles!r}, "
            f"max_tiles={max_tiles!r}."
        )


def check_max_side(max_side) -> None:
    """`max_side` is None or an integer from 1 to `MAX_SIDE_LIMIT` (pixels)."""
    if max_side is not None and (isinstance(max_side, bool) or not isinstance(max_side, int)
                                 or not 1 <= max_side <= MAX_SIDE_LIMIT):
        raise ValueError(f"max_side must be an integer from 1 to {MAX_SIDE_LIMIT} (pixels) or None, got {max_side!r}.")


def check_tile_size(size) -> None:
    """A tile `size` `{"height": H, "width": W}` with both sides integers from 1 to `MAX_TILE_SIDE` pixels."""
    sides = list(size.values()) if isinstance(size, dict) else []
    if set(size if isinstance(size, dict) else ()) != {"height", "width"} or not all(
        isinstance(side, int) and not isinstance(side, bool) and 1 <= side <= MAX_TILE_SIDE for side in sides
    ):
        raise ValueError(f"size must be {{'height': H, 'width': W}} with sides from 1 to {MAX_TILE_SIDE} pixels "
                         f"(the released models use 448), got {size!r}.")


def parse_pages(pages: str | None) -> list[tuple[int, int | None]] | None:
    """`"1-3,7,10-"` -> `[(1, 3), (7, 7), (10, None)]` (1-based, inclusive; None = to the end); None -> all pages."""
    if pages is None:
        return None
    ranges = []
    for part in str(pages).replace(" ", "").split(","):
        first, _, last = part.partition("-")
        if not first.isdigit() or (last and not last.isdigit()) or int(first) < 1:
            raise ValueError(f"pages must look like '1-3,7,10-' (numbers from 1), got {pages!r}.")
        end = int(first) if not _ else (int(last) if last else None)
        if end is not None and end < int(first):
            raise ValueError(f"pages: '{part}' ends before it starts.")
        ranges.append((int(first), end))
    return ranges


def selected_pdf_pages(count: int, pages: str | None, name: str) -> list[int]:
    """
    The 1-based page numbers `pages` (`"1-3,7"`, default all) selects in a PDF of `count` pages named `name`.

    Raises:
        ValueError: a selected page past the end (the message names the PDF and its page count).
    """
    numbers = []
    for first, given_last in parse_pages(pages) or [(1, None)]:
        last = count if given_last is None else given_last
        if first > count or last > count:
            asked = f"{first}-" if given_last is None else f"{first}-{given_last}"
            raise ValueError(f"PDF {name} has {count} pages; pages {asked} were asked for.")
        numbers.extend(range(first, last + 1))
    return numbers
