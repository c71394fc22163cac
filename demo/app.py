"""
TokenOCR demo: where is each token of a text query written on a document page?

    python demo/app.py [--model MODEL ...] [--port PORT] [--host HOST] [--device cpu|cuda] [--preload]
    tokenocr demo [--model MODEL ...] [--port PORT]

Upload an image (or paste one, or take a webcam picture) or a PDF and pick a page, type the text to find and press
Run: the query's own map with its boxes (where the whole query stands), one heatmap per query token (captioned with
the token and its best cosine similarity), the query's boxes, the text mask and the token boxes, the query's
relevance, a table of tokens, scores and boxes, and the summary as JSON.

MODEL is a converted TokenOCR folder, a hub repo id, or an original checkpoint folder; `--model` may be repeated
(or `TOKENOCR_DEMO_MODEL` may list several, separated by commas) to offer a choice. Without either, the demo loads
`DEFAULT_MODEL` when it is there (in a checkout of the repository) and otherwise `HUB_MODELS` (on a Space). Models
are loaded on first use, so the app starts without a network; analytics are off and no share link is made.

With the `tokenocr` package installed, models and helpers come from it (original checkpoints need it). Without it
(a Space holds only this folder and `requirements.txt`), a hub repo id or converted folder is loaded with
transformers alone through the folder's remote code, helpers included.

The vision pass over a page's tiles is cached per (model, page content, page number), so a new query or threshold
on the same page only scores the query.
"""

import argparse
import hashlib
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path


DEMO_DIR = Path(__file__).resolve().parent
REPO_ROOT = DEMO_DIR.parent
# The model loaded when none is given, relative to the repository root (or absolute, or a hub repo id): the small
# document model trained on real PDF pages (training/recipe_documents.py), which runs offline in seconds.
DEFAULT_MODEL = "models/tokenocr-tiny-documents"
# Checkpoints in here have random weights; the interface says so when one is chosen.
UNTRAINED_DIR = REPO_ROOT / "tests" / "fixtures"
# Loaded when DEFAULT_MODEL is not there, as on a Space (keep in step with the `models:` of README.md).
HUB_MODELS = ("org/TokenOCR-4096-English-seg", "org/TokenOCR-2048-Bilingual-seg")
MODEL_ENV = "TOKENOCR_DEMO_MODEL"

EXAMPLES_DIR = DEMO_DIR / "examples"
DEFAULT_THRESHOLD = 0.2  # settings_tokenocr.DEFAULT_THRESHOLD (a copy: a Space has no package; a test keeps them equal)
PDF_DPI = 150  # settings_tokenocr.DEFAULT_PDF_DPI (a copy, kept equal by a test)
MAX_PAGE_PIXELS = 40_000_000
MAX_QUERY_CHARACTERS = 300
TILES_PER_BATCH = 2
DEFAULT_CACHE_GB = 4.0
ANNOTATED_SIDE = 1280  # longest side of the annotated view (masks are drawn at this size)
STRIP_PANEL_WIDTH = 360

logger = logging.getLogger("tokenocr.demo")


class DemoError(Exception):
    """A problem with the user's input or the model; the message is shown in the interface as it is."""


# ---------------------------------------------------------------------------------------------- models


def _resolve_path(spec: str) -> Path:
    path = Path(spec).expanduser()
    return path if path.is_absolute() else (Path.cwd() / path if (Path.cwd() / path).exists() else REPO_ROOT / path)


def resolve_models(models: list[str] | None = None, environ=os.environ) -> list[str]:
    """The models to offer: `models` (from `--model`), else `$TOKENOCR_DEMO_MODEL`, else the defaults."""
    chosen = [m for m in (models or []) if m.strip()]
    if not chosen:
        chosen = [m.strip() for m in environ.get(MODEL_ENV, "").split(",") if m.strip()]
    if not chosen:
        chosen = [DEFAULT_MODEL] if _resolve_path(DEFAULT_MODEL).exists() else list(HUB_MODELS)
    return list(dict.fromkeys(chosen))


def model_kind(spec: str) -> str:
    """`"original"` (an original checkpoint folder), `"folder"` (a converted folder) or `"hub"` (a repo id)."""
    path = _resolve_path(spec)
    if path.is_dir():
        if package_available():  # the package knows every original layout (ViT config.json, R50 .pth files)
            from tokenocr.loading import is_original_folder

            if is_original_folder(path):
                return "original"
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise DemoError(f"'{spec}' is a folder without a readable config.json; it is not a TokenOCR model") from None
        return "original" if isinstance(config, dict) and config.get("model_type") == "internvl_chat" else "folder"
    if re.fullmatch(r"[\w.-]+/[\w.-]+", spec) and not spec.startswith((".", "/")):
        return "hub"
    raise DemoError(f"model '{spec}' is neither a folder nor a hub repo id (owner/name)")


def is_untrained(spec: str) -> bool:
    """Whether `spec` is one of the repository's test checkpoints, whose weights are random."""
    path = _resolve_path(spec).resolve()
    return path.exists() and UNTRAINED_DIR.resolve() in path.parents


def package_available() -> bool:
    try:
        return importlib.util.find_spec("tokenocr") is not None
    except (ImportError, ValueError):
        return False


@dataclass
class Helpers:
    """The functions the demo borrows from TokenOCR's processing code (the package's, or the model folder's)."""

    overlay_heatmap: object
    heatmap_strip: object
    format_caption: object
    mask_to_boxes: object
    resize_map: object
    token_visuals: object
    query_visuals: object


HELPER_NAMES = ("overlay_heatmap", "heatmap_strip", "format_caption", "mask_to_boxes", "resize_map", "token_visuals",
                "query_visuals")


def code_helpers(processor) -> Helpers:
    """
    The helpers from the code the processor itself came from: the package's, or the model folder's remote code
    (which the processor imports, so it is loaded already). One path for both, through a public import.
    """
    package = type(processor).__module__.rpartition(".")[0]
    try:
        module = importlib.import_module(f"{package}.visualization_tokenocr")
        return Helpers(*(getattr(module, name) for name in HELPER_NAMES))
    except (ImportError, AttributeError) as error:
        raise DemoError(f"the model's processing code has no visualization helpers (convert it again): {error}") from None


@dataclass
class LoadedModel:
    spec: str
    model: object
    processor: object
    helpers: Helpers
    device: str


def load_model(spec: str, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Load `spec` as (model, processor, helpers); a failure is a [`DemoError`] with a one-line reason."""
    import torch

    kind = model_kind(spec)
    use_package = package_available()
    torch_dtype = getattr(torch, dtype)
    try:
        if kind == "original":
            if not use_package:
                raise DemoError(f"'{spec}' is an original checkpoint; loading one needs the tokenocr package")
            from tokenocr.conversion import load_original

            model, processor = load_original(_resolve_path(spec), dtype=torch_dtype)
        else:
            from transformers import AutoModel, AutoProcessor

            if use_package:
                import tokenocr  # noqa: F401  (registers the classes: no remote code needed)
            source = str(_resolve_path(spec)) if kind == "folder" else spec
            remote = not use_package
            model = AutoModel.from_pretrained(source, trust_remote_code=remote, dtype=torch_dtype)
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=remote)
            spec = source
    except DemoError:
        raise
    except (OSError, ValueError, ImportError, RuntimeError, KeyError) as error:
        raise DemoError(f"cannot load model '{spec}': {' '.join(str(error).split())[:300]}") from None
    return LoadedModel(spec, model.to(device).eval(), processor, code_helpers(processor), device)


class ModelPool:
    """Loads each configured model once, on first use."""

    def __init__(self, specs: list[str], device: str, dtype: str):
        self.specs, self.device, self.dtype = list(specs), device, dtype
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()

    def get(self, spec: str) -> LoadedModel:
        if spec not in self.specs:
            raise DemoError(f"model '{spec}' is not one of this demo's models")
        with self._lock:
            if spec not in self._loaded:
                self._loaded[spec] = load_model(spec, self.device, self.dtype)
            return self._loaded[spec]


# ----------------------------------------------------------------------------------------------- pages


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _check_size(width: int, height: int, what: str) -> None:
    if width < 1 or height < 1:
        raise DemoError(f"{what} is empty ({width} x {height} pixels)")
    if width * height > MAX_PAGE_PIXELS:
        raise DemoError(
            f"{what} is {width} x {height} pixels; the demo takes pages of at most {MAX_PAGE_PIXELS // 1_000_000} "
            "megapixels (scale it down, or pick a lower resolution)"
        )


def open_image(path: str):
    """The image at `path` as an RGB PIL image, upright (EXIF orientation applied), within the size limit."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    name = Path(path).name
    try:
        with Image.open(path) as image:
            _check_size(image.width, image.height, f"image '{name}'")
            image.load()
            image = ImageOps.exif_transpose(image)
            return image.convert("RGB")
    except Image.DecompressionBombError:
        raise DemoError(f"image '{name}' is too large to open") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DemoError(f"cannot read '{name}' as an image: {_one_line(error)}") from None


def _open_pdf(path: str):
    import pypdfium2

    name = Path(path).name
    try:
        document = pypdfium2.PdfDocument(path)
    except pypdfium2.PdfiumError as error:
        reason = "it is encrypted (password protected)" if "password" in str(error).lower() else _one_line(error)
        raise DemoError(f"cannot open PDF '{name}': {reason}") from None
    if len(document) == 0:
        document.close()
        raise DemoError(f"PDF '{name}' has no pages")
    return document


def pdf_page_count(path: str) -> int:
    document = _open_pdf(path)
    try:
        return len(document)
    finally:
        document.close()


def render_pdf_page(path: str, page_number: int, dpi: int = PDF_DPI):
    """Page `page_number` (1-based) of the PDF at `path`, rendered at `dpi` as an RGB PIL image."""
    document = _open_pdf(path)
    name = Path(path).name
    try:
        if not 1 <= page_number <= len(document):
            raise DemoError(f"PDF '{name}' has {len(document)} page(s); page {page_number} does not exist")
        page = document[page_number - 1]
        width_points, height_points = page.get_size()
        scale = dpi / 72.0
        _check_size(round(width_points * scale), round(height_points * scale), f"page {page_number} at {dpi} dpi")
        try:
            return page.render(scale=scale).to_pil().convert("RGB")
        except Exception as error:  # pdfium reports rendering failures with its own exception types
            raise DemoError(f"cannot render page {page_number} of '{name}': {_one_line(error)}") from None
    finally:
        document.close()


def upload_folder() -> Path:
    """Where Gradio stores uploaded files (its own rule: `$GRADIO_TEMP_DIR`, else `<tmp>/gradio`)."""
    return Path(os.environ.get("GRADIO_TEMP_DIR") or Path(tempfile.gettempdir()) / "gradio").resolve()


def checked_file(path: str, allowed_dirs) -> str:
    """
    `path` if it is a regular file inside one of `allowed_dirs` (the upload folder, the demo's examples), links
    resolved; anything else is refused with the same message, which names no path and does not tell whether the
    path exists (a request can name any path on the server).
    """
    refused = DemoError("that file was not uploaded to this demo; upload the page again")
    try:
        real = Path(path).resolve(strict=True)
        regular = stat.S_ISREG(os.stat(real).st_mode)  # not a FIFO, a device or a folder: nothing that can block
    except (OSError, RuntimeError, ValueError):
        raise refused from None
    if not regular or not any(real.is_relative_to(Path(folder).resolve()) for folder in allowed_dirs):
        raise refused
    return str(real)


def _file_path(value) -> str | None:
    """The local path of a file input, as Gradio passes it without preprocessing (a dict) or preprocessed (a str)."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return value.get("path")
    return str(value)


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class PageRequest:
    """Where the page comes from: `kind` is "image" or "pdf"; `page_number` is 1-based (1 for an image)."""

    kind: str
    path: str
    page_number: int

    @property
    def label(self) -> str:
        name = Path(self.path).name
        return f"page {self.page_number} of {name}" if self.kind == "pdf" else name


def _whole_page_number(value) -> int:
    """A PDF page number as the command line takes it: a whole number from 1 (2.7, inf, NaN and -1 are refused)."""
    if value in (None, ""):
        return 1
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or number != int(number) or number < 1:
        raise DemoError(f"the page number must be a whole number from 1, got {value!r}")
    return int(number)


def checked_threshold(value, default: float) -> float:
    """The mask threshold as the command line takes it: a number in [-1, 1] (NaN and infinity refused)."""
    if value in (None, ""):
        return default
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        threshold = math.nan
    if not -1.0 <= threshold <= 1.0:  # also false for NaN
        raise DemoError(f"the threshold must be a number between -1 and 1, got {value!r}")
    return threshold


def page_request(image, pdf, page_number, allowed_dirs) -> PageRequest:
    """The page to analyse: a PDF's page when a PDF is given, else the image; only files in `allowed_dirs`."""
    pdf_path, image_path = _file_path(pdf), _file_path(image)
    pdf_path = checked_file(pdf_path, allowed_dirs) if pdf_path else None
    image_path = checked_file(image_path, allowed_dirs) if image_path else None
    if pdf_path:
        number = _whole_page_number(page_number)
        return PageRequest("pdf", pdf_path, number)
    if image_path:
        return PageRequest("image", image_path, 1)
    raise DemoError("no page: upload, paste or take a picture of a page, or upload a PDF")


# ----------------------------------------------------------------------------------------- vision pass


@dataclass
class PageFeatures:
    """
    A page and the vision features of its grid tiles (thumbnail left out), `(tiles, locations, D)`, or of the whole
    page (ResNet variant, `map_size` set: one "tile" on a 1 x 1 grid), with what post-processing needs.
    """

    page: object
    features: object
    grid: tuple[int, int]
    map_size: tuple[int, int] | None = None

    @property
    def nbytes(self) -> int:
        return self.features.numel() * self.features.element_size() + self.page.width * self.page.height * 3


class FeatureCache:
    """A least-recently-used cache of [`PageFeatures`], bounded in bytes (the newest entry is always kept)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get(self, key):
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
                return None
            self.hits += 1
            self._entries.move_to_end(key)
            return entry

    def put(self, key, entry: PageFeatures) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and sum(e.nbytes for e in self._entries.values()) > self.max_bytes:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def page_source(request: PageRequest):
    """`(content key, load)`: a digest of what the page is made from, and a function that returns the page as an
    RGB PIL image (a PDF page is rendered only when its vision pass is not cached)."""
    if request.kind == "pdf":
        return f"pdf:{_file_digest(request.path)}:{PDF_DPI}", lambda: render_pdf_page(request.path, request.page_number)
    page = open_image(request.path)
    return "image:" + hashlib.sha256(page.tobytes()).hexdigest(), lambda: page


def vision_pass(loaded: LoadedModel, page, progress=None) -> PageFeatures:
    """Run the vision tower over the page's grid tiles, a few at a time, reporting progress per batch."""
    import torch

    tiles = loaded.processor(images=page, return_tensors="pt", use_thumbnail=False)
    cols, rows = (int(v) for v in tiles["grid_cols_rows"][0].tolist())
    pixel_values, pixel_sizes = tiles["pixel_values"], tiles.get("pixel_sizes")
    map_size = tuple(int(v) for v in tiles["map_sizes"][0].tolist()) if "map_sizes" in tiles else None
    dtype = next(loaded.model.parameters()).dtype
    features = []
    for start in range(0, len(pixel_values), TILES_PER_BATCH):
        if progress is not None:
            progress(start / len(pixel_values), desc=f"Vision pass: tile {start + 1} of {len(pixel_values)}")
        batch = pixel_values[start : start + TILES_PER_BATCH].to(loaded.device, dtype)
        sizes = None if pixel_sizes is None else pixel_sizes[start : start + TILES_PER_BATCH]
        with torch.no_grad():
            features.append(loaded.model.get_image_features(batch, sizes).pooler_output)
    return PageFeatures(page=page, features=torch.cat(features), grid=(cols, rows), map_size=map_size)


def score_query(loaded: LoadedModel, page_features: PageFeatures, query: str):
    """`(tokens, token ids, maps)`: each query token's text, id and stitched similarity map `(rows * s, cols * s)`."""
    import torch

    try:
        query_ids = loaded.processor(text=query, return_tensors="pt")["input_ids"].to(loaded.device)
    except ValueError as error:
        raise DemoError(_one_line(error)) from None
    with torch.no_grad():  # the cached features, scored as every surface scores them
        similarity = loaded.model.get_similarity(input_ids=query_ids, image_embeds=page_features.features)
    similarity = similarity.float().cpu()  # (1, tokens, tiles, locations)
    map_sizes = None if page_features.map_size is None else [page_features.map_size]
    maps = loaded.processor.post_process_similarity(
        similarity, [page_features.grid], [similarity.shape[2]], map_sizes
    )[0][0]
    return loaded.processor.query_tokens(query_ids[0].cpu()), query_ids[0].tolist(), maps


# ------------------------------------------------------------------------------------------------ results


def _display_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, ANNOTATED_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _boxes_mask(boxes, page_size, display_size):
    """A float32 mask at `display_size` with each box's outline at 1 and its inside at 0.25."""
    import numpy as np

    width, height = display_size
    sx, sy = width / page_size[0], height / page_size[1]
    mask = np.zeros((height, width), dtype=np.float32)
    for left, top, right, bottom in boxes:
        x0, y0 = int(left * sx), int(top * sy)
        x1, y1 = max(x0 + 1, math.ceil(right * sx)), max(y0 + 1, math.ceil(bottom * sy))
        mask[y0:y1, x0:x1] = np.maximum(mask[y0:y1, x0:x1], 0.25)
        for region in (mask[y0:y1, x0 : x0 + 2], mask[y0:y1, x1 - 2 : x1], mask[y0 : y0 + 2, x0:x1], mask[y1 - 2 : y1, x0:x1]):
            region[...] = 1.0
    return mask


def token_results(loaded: LoadedModel, page, tokens, token_ids, maps, threshold: float) -> list[dict]:
    """
    Per token: text, id, score, boxes (in page pixels, exactly as the pipeline finds them), and the heatmap and mask
    at the display size (longest side `ANNOTATED_SIDE`), so that what a request keeps grows with its tokens times
    the display's pixels, not the page's; the page-size work is done one token at a time.
    """
    from PIL import Image

    display = _display_size(page.width, page.height)
    shown = page if display == page.size else page.resize(display, Image.BILINEAR)
    results = []
    for token, token_id, token_map in zip(tokens, token_ids, maps):
        _, boxes, _ = loaded.helpers.token_visuals(token_map, page.size, threshold)
        resized = loaded.helpers.resize_map(token_map, display)
        results.append({
            "token": token, "token_id": int(token_id), "score": float(token_map.max()), "boxes": boxes,
            "heatmap": loaded.helpers.overlay_heatmap(shown, resized), "mask": resized > threshold,
        })
    return results


def annotated_view(page, results: list[dict], threshold: float, captions: list[str], query_boxes=()):
    """`(display page, annotations)` for an annotated image: the query's boxes first, then the text mask (all
    tokens) and each token's boxes."""
    import numpy as np
    from PIL import Image

    size = _display_size(page.width, page.height)
    union = np.zeros((size[1], size[0]), dtype=bool)  # the masks are at the display size already
    for result in results:
        union |= result["mask"]
    union_small = union.astype(np.float32) * 0.5
    annotations = [(_boxes_mask(query_boxes, page.size, size), "boxes of the query")] if query_boxes else []
    annotations.append((union_small, f"text mask (similarity > {threshold:g})"))
    for result, caption in zip(results, captions):
        if result["boxes"]:
            annotations.append((_boxes_mask(result["boxes"], page.size, size), f"boxes of {caption.split('  ')[0]}"))
    return page.resize(size, Image.BILINEAR), annotations


def _boxes_text(boxes: list, limit: int = 4) -> str:
    shown = json.dumps(boxes[:limit])
    return shown if len(boxes) <= limit else f"{shown[:-1]}, ...] ({len(boxes)} boxes)"


def summary_json(spec, request: PageRequest, page, query, threshold, relevance, results, found=None) -> dict:
    return {
        "model": spec,
        "page": {"source": request.kind, "file": Path(request.path).name, "page_number": request.page_number,
                 "size": [page.width, page.height]},
        "query": query, "threshold": threshold, "relevance": relevance,
        "boxes": found["boxes"] if found else [], "box_scores": found["box_scores"] if found else [],
        "tokens": [{k: r[k] for k in ("token", "token_id", "score", "boxes")} for r in results],
    }


# ---------------------------------------------------------------------------------------------- the app


class DemoApp:
    """Everything but the interface: models, the vision-pass cache, and one Run."""

    def __init__(self, specs: list[str], device: str = "cpu", dtype: str = "float32", cache_gb: float = DEFAULT_CACHE_GB,
                 allowed_dirs=None):
        # Pages are opened only from these folders: Gradio's uploads and the demo's own examples.
        self.allowed_dirs = tuple(allowed_dirs) if allowed_dirs is not None else (upload_folder(), EXAMPLES_DIR)
        self.pool = ModelPool(specs, device, dtype)
        self.cache = FeatureCache(int(cache_gb * 1024**3))
        self.output_dir = Path(tempfile.mkdtemp(prefix="tokenocr-demo-"))
        self._runs = 0

    @property
    def specs(self) -> list[str]:
        return self.pool.specs

    def note(self, spec: str) -> str:
        if is_untrained(spec):
            return (f"**Note: the weights of `{spec}` are not trained** (a small test checkpoint with random weights): "
                    "the heatmaps show the demo working, not where the text is. Start the demo with `--model` and a "
                    "released TokenOCR model to see real results.")
        return ""

    def page_features(self, loaded: LoadedModel, request: PageRequest, progress=None):
        """`(PageFeatures, seconds spent or None when cached)` for the requested page."""
        content, load = page_source(request)
        key = (loaded.spec, content, request.page_number)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, None
        start = time.perf_counter()
        entry = vision_pass(loaded, load(), progress)
        self.cache.put(key, entry)
        return entry, time.perf_counter() - start

    def run(self, image, pdf, page_number, query, threshold, spec, progress=None) -> tuple:
        """One press of Run; returns the interface's outputs (see [`build_interface`])."""
        query = "" if query is None else str(query)
        if not query.strip():
            raise DemoError("type the text to find (the query is empty)")
        if len(query) > MAX_QUERY_CHARACTERS:
            raise DemoError(f"the query is {len(query)} characters long; the demo takes at most {MAX_QUERY_CHARACTERS}")
        given = checked_threshold(threshold, None)  # refused before any model loads
        request = page_request(image, pdf, page_number, self.allowed_dirs)
        spec = spec or self.specs[0]
        if progress is not None:
            progress(0.0, desc=f"Loading {spec}")
        loaded = self.pool.get(spec)
        # No threshold given: the model's own (stored with its image processor; 0.2 for the released models).
        threshold = loaded.processor.image_processor.mask_threshold if given is None else given
        entry, vision_seconds = self.page_features(loaded, request, progress)
        start = time.perf_counter()
        tokens, token_ids, maps = score_query(loaded, entry, query)
        results = token_results(loaded, entry.page, tokens, token_ids, maps, threshold)
        page_hw = (entry.page.height, entry.page.width)
        scale = loaded.processor.map_scale(maps.shape[-2:], page_hw, entry.map_size is not None)
        found = loaded.processor.query_result(query, results, maps, scale, entry.page.size, threshold)
        relevance = found["score"]
        display = _display_size(entry.page.width, entry.page.height)
        _, picture = loaded.helpers.query_visuals(found["similarity"], scale, entry.page.size, threshold,
                                                  entry.page.resize(display), found["boxes"], found["box_scores"])
        captions = [loaded.helpers.format_caption(r["token"], r["score"]) for r in results]
        strip = loaded.helpers.heatmap_strip(
            [r["heatmap"] for r in results], captions, panel_width=STRIP_PANEL_WIDTH, columns=min(4, len(results)),
            title=f"'{query}' on {request.label}: relevance {relevance:.3f}",
        )
        scoring_seconds = time.perf_counter() - start
        self._runs += 1
        summary = self.output_dir / f"tokenocr-summary-{self._runs:04d}.json"
        data = summary_json(spec, request, entry.page, query, threshold, relevance, results, found)
        summary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        vision = "reused from the cache" if vision_seconds is None else f"{vision_seconds:.1f} s"
        cols, rows = entry.grid
        layout = "whole page" if entry.map_size is not None else f"{cols} x {rows} tiles"
        status = (f"`{spec}` · {request.label}: {entry.page.width} x {entry.page.height} px, {layout} · "
                  f"vision pass {vision} · scoring {scoring_seconds:.2f} s")
        table = [[i + 1, caption.rsplit("  ", 1)[0], r["token_id"], round(r["score"], 4), _boxes_text(r["boxes"])]
                 for i, (r, caption) in enumerate(zip(results, captions))]
        gallery = [(picture, f"the query  {relevance:.3f}")] + [(r["heatmap"], c) for r, c in zip(results, captions)]
        annotated = annotated_view(entry.page, results, threshold, captions, found["boxes"])
        return gallery, strip, annotated, relevance, table, str(summary), status

    def close(self) -> None:
        shutil.rmtree(self.output_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------ the interface


def model_threshold(spec: str) -> float:
    """The mask threshold stored with a local model folder (`preprocessor_config.json`), else the original's 0.2."""
    try:
        stored = json.loads((_resolve_path(spec) / "preprocessor_config.json").read_text(encoding="utf-8"))
        value = float(stored.get("mask_threshold", DEFAULT_THRESHOLD))
    except (OSError, ValueError, TypeError, AttributeError):
        return DEFAULT_THRESHOLD
    return value if -1.0 <= value <= 1.0 else DEFAULT_THRESHOLD


def _examples(threshold: float = DEFAULT_THRESHOLD) -> list[list]:
    """Example inputs: [image, pdf, page, query, threshold] (filled in on click; the model runs only on Run)."""
    examples = []
    if (EXAMPLES_DIR / "document_page.png").is_file():  # a Letter page at 150 dpi: what the document model reads
        examples.append([str(EXAMPLES_DIR / "document_page.png"), None, 1, "February", threshold])
    if (EXAMPLES_DIR / "synthetic_page.png").is_file():  # what the synthetic model was trained for
        examples.append([str(EXAMPLES_DIR / "synthetic_page.png"), None, 1, "2024", threshold])
    if (EXAMPLES_DIR / "receipt.png").is_file():
        examples.append([str(EXAMPLES_DIR / "receipt.png"), None, 1, "TOTAL", threshold])
    if (EXAMPLES_DIR / "notice.pdf").is_file():
        examples.append([None, str(EXAMPLES_DIR / "notice.pdf"), 2, "Agenda", threshold])
    return examples


def _guarded(function):
    """Turn every failure of an event handler into a message in the interface (never a traceback)."""
    import functools

    import gradio as gr

    @functools.wraps(function)
    def handler(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except DemoError as error:
            raise gr.Error(str(error), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as error:  # anything unexpected: logged on the server, one line for the user
            logger.exception("run failed")
            raise gr.Error(f"Something went wrong: {_one_line(error)[:300]}", print_exception=False) from None

    return handler


def _input_column(gr, app: DemoApp) -> dict:
    """The input widgets, in the current layout column."""
    widgets = {}
    with gr.Tabs():
        with gr.Tab("Image"):
            widgets["image"] = gr.Image(label="Page image", type="filepath", image_mode=None, elem_id="page-image",
                                        sources=["upload", "clipboard", "webcam"], height=360)
        with gr.Tab("PDF"):
            widgets["pdf"] = gr.File(label="PDF", file_types=[".pdf"], elem_id="page-pdf")
            widgets["page"] = gr.Number(label="Page", value=1, precision=0, minimum=1, elem_id="page-number")
    widgets["query"] = gr.Textbox(label="Text to find", placeholder="e.g. Invoice total", max_lines=1, elem_id="query")
    widgets["threshold"] = gr.Slider(-1.0, 1.0, value=model_threshold(app.specs[0]), step=0.01, elem_id="threshold",
                                     label="Mask threshold (cosine similarity)")
    widgets["model"] = gr.Dropdown(choices=app.specs, value=app.specs[0], label="Model", elem_id="model",
                                   visible=len(app.specs) > 1)
    widgets["run"] = gr.Button("Run", variant="primary", elem_id="run-button")
    return widgets


def _output_column(gr) -> dict:
    outputs = {}
    outputs["status"] = gr.Markdown(label="Status", elem_id="status")
    outputs["gallery"] = gr.Gallery(label="Heatmap per token", columns=3, height="auto", object_fit="contain",
                                   elem_id="heatmaps")
    with gr.Row():
        outputs["relevance"] = gr.Number(label="Relevance (the query's score)", precision=4, elem_id="relevance")
        outputs["summary"] = gr.File(label="Summary (JSON)", elem_id="summary")
    outputs["annotated"] = gr.AnnotatedImage(label="Text mask and boxes", height=480, elem_id="annotated")
    outputs["table"] = gr.Dataframe(headers=["#", "token", "id", "score", "boxes [left, top, right, bottom]"],
                                    label="Tokens", interactive=False, elem_id="tokens")
    outputs["strip"] = gr.Image(label="All tokens side by side", type="pil", elem_id="strip", height=420)
    return outputs


def build_interface(app: DemoApp):
    """The Gradio Blocks: inputs on the left, outputs on the right; `/run` is the API endpoint of Run."""
    import gradio as gr

    with gr.Blocks(title="TokenOCR demo", analytics_enabled=False, delete_cache=(3600, 3600)) as interface:
        gr.Markdown("# TokenOCR: where is each token written?\nUpload a document page (or a PDF and pick a page), "
                    "type some text and press **Run**: one heatmap per token of the text, with its score.")
        note = gr.Markdown(app.note(app.specs[0]), elem_id="model-note")
        with gr.Row():
            with gr.Column(scale=2):
                inputs = _input_column(gr, app)
            with gr.Column(scale=3):
                outputs = _output_column(gr)
        examples = _examples(model_threshold(app.specs[0]))
        if examples:
            gr.Examples(examples, [inputs[k] for k in ("image", "pdf", "page", "query", "threshold")],
                        cache_examples=False, label="Examples (click one, then Run)")
        _wire_events(gr, app, inputs, outputs, note)
    return interface


def _wire_events(gr, app: DemoApp, inputs: dict, outputs: dict, note) -> None:
    def run(image, pdf, page, query, threshold, spec, progress=gr.Progress()):
        return app.run(image, pdf, page, query, threshold, spec, progress=progress)

    def pdf_uploaded(pdf):
        count = pdf_page_count(_file_path(pdf))
        return gr.update(value=1, maximum=count, label=f"Page (1-{count})"), None

    run_inputs = [inputs[k] for k in ("image", "pdf", "page", "query", "threshold", "model")]
    run_outputs = [outputs[k] for k in ("gallery", "strip", "annotated", "relevance", "table", "summary", "status")]
    inputs["run"].click(_guarded(run), run_inputs, run_outputs, api_name="run", preprocess=False)
    inputs["query"].submit(_guarded(run), run_inputs, run_outputs, api_visibility="private", preprocess=False)
    inputs["pdf"].upload(_guarded(pdf_uploaded), inputs["pdf"], [inputs["page"], inputs["image"]],
                         api_visibility="private")
    inputs["image"].input(lambda: None, None, inputs["pdf"], api_visibility="private")  # the newest upload wins
    inputs["model"].change(app.note, inputs["model"], note, api_visibility="private")


# ---------------------------------------------------------------------------------------------- command line


def _cache_size(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number of GiB >= 0, got {text!r}")
    return value


def check_device(device: str) -> str:
    """`cpu`, `cuda` or `cuda:N` that this machine has, checked at start rather than at the first Run."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise DemoError(f"--device '{device}' is not a device name (cpu, cuda, cuda:1)") from None
    if parsed.type == "cuda" and (not torch.cuda.is_available() or (parsed.index or 0) >= torch.cuda.device_count()):
        raise DemoError(f"--device '{device}': this machine has no such CUDA device")
    if parsed.type not in ("cpu", "cuda"):
        raise DemoError(f"--device '{device}': the demo runs on cpu or cuda")
    return device


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The demo's options, for `python demo/app.py` and `tokenocr demo`."""
    parser.add_argument("--model", action="append", metavar="MODEL",
                        help="converted folder, hub repo id or original checkpoint folder; repeat to offer a choice "
                        f"(default: ${MODEL_ENV}, else the repository's demonstration model)")
    parser.add_argument("--port", type=int, default=None, help="port to serve on (default: 7860 or $GRADIO_SERVER_PORT)")
    parser.add_argument("--host", default=None, help="address to serve on (default: 127.0.0.1 or $GRADIO_SERVER_NAME)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--cache-gb", type=_cache_size, default=DEFAULT_CACHE_GB,
                        help="memory for cached vision passes, in GiB (the newest page is always kept)")
    parser.add_argument("--preload", action="store_true", help="load the models before serving instead of on first use")
    return parser


def run_demo(args: argparse.Namespace) -> int:
    """Start the app (blocks until interrupted). Returns an exit code."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no calls home
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    specs = resolve_models(args.model)
    for spec in specs:
        model_kind(spec)  # a misspelt --model fails now, not on the first Run
    device = args.device
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = check_device(device)
    app = DemoApp(specs, device=device, dtype=args.dtype, cache_gb=args.cache_gb)
    if args.preload:
        for spec in specs:
            app.pool.get(spec)
    interface = build_interface(app)
    try:
        interface.queue(default_concurrency_limit=1).launch(
            server_name=args.host, server_port=args.port, share=False, inbrowser=False, ssr_mode=False,
            mcp_server=False, footer_links=["api"],
        )
    finally:
        app.close()
    return 0


def main(argv=None) -> int:
    parser = add_demo_arguments(argparse.ArgumentParser(prog="tokenocr demo", description=__doc__.splitlines()[1]))
    args = parser.parse_args(argv)
    try:
        return run_demo(args)
    except DemoError as error:
        print(f"tokenocr demo: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
