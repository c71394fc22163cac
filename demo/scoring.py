"""
The demo's models and scoring, all through TokenOCR's own code: the `tokenocr` package's loading and device check
when it is installed, else (on a Space) the model's remote code, loaded by transformers alone. Pages are read by the
library's page reader, scored by the processor's `page_features` / `page_similarity` / `page_results` (the steps
every surface uses) and drawn by its visualization helpers; nothing here computes a map or a box itself.
"""

import importlib
import importlib.util
import json
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

if __package__:
    from .uploads import DemoError, PageRequest, file_digest, one_line
else:  # run as a script, or loaded by path as on a Space: the modules beside this one
    import sys

    if str(Path(__file__).resolve().parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    from uploads import DemoError, PageRequest, file_digest, one_line  # noqa: E402


REPO_ROOT = Path(__file__).resolve().parent.parent
# The model loaded when none is given, relative to the repository root (or absolute, or a hub repo id): the small
# document model trained on real PDF pages (training/recipe_documents.py), which runs offline in seconds.
DEFAULT_MODEL = "models/tokenocr-tiny-documents"
# Checkpoints in here have random weights; the interface says so when one is chosen.
UNTRAINED_DIR = REPO_ROOT / "tests" / "fixtures"
# Loaded when DEFAULT_MODEL is not there, as on a Space (keep in step with the `models:` of README.md).
HUB_MODELS = ("org/TokenOCR-4096-English-seg", "org/TokenOCR-2048-Bilingual-seg")
MODEL_ENV = "TOKENOCR_DEMO_MODEL"
DEFAULT_THRESHOLD = 0.2  # settings_tokenocr.DEFAULT_THRESHOLD (a copy: a Space has no package; a test keeps them equal)
PDF_DPI = 150  # settings_tokenocr.DEFAULT_PDF_DPI (a copy, kept equal by a test)
MAX_PAGE_PIXELS = 40_000_000
TILES_PER_BATCH = 2
DEFAULT_CACHE_GB = 4.0


# ---------------------------------------------------------------------------------------------- models


def resolve_path(spec: str) -> Path:
    path = Path(spec).expanduser()
    return path if path.is_absolute() else (Path.cwd() / path if (Path.cwd() / path).exists() else REPO_ROOT / path)


def resolve_models(models: list[str] | None = None, environ=None) -> list[str]:
    """The models to offer: `models` (from `--model`), else `$TOKENOCR_DEMO_MODEL`, else the defaults."""
    import os

    environ = os.environ if environ is None else environ
    chosen = [m for m in (models or []) if m.strip()]
    if not chosen:
        chosen = [m.strip() for m in environ.get(MODEL_ENV, "").split(",") if m.strip()]
    if not chosen:
        chosen = [DEFAULT_MODEL] if resolve_path(DEFAULT_MODEL).exists() else list(HUB_MODELS)
    return list(dict.fromkeys(chosen))


def package_available() -> bool:
    try:
        return importlib.util.find_spec("tokenocr") is not None
    except (ImportError, ValueError):
        return False


def model_kind(spec: str) -> str:
    """`"original"` (an original checkpoint folder), `"folder"` (a converted folder) or `"hub"` (a repo id)."""
    path = resolve_path(spec)
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
    path = resolve_path(spec).resolve()
    return path.exists() and UNTRAINED_DIR.resolve() in path.parents


def model_threshold(spec: str) -> float:
    """The mask threshold stored with a local model folder (`preprocessor_config.json`), else the default 0.2."""
    try:
        stored = json.loads((resolve_path(spec) / "preprocessor_config.json").read_text(encoding="utf-8"))
        value = float(stored.get("mask_threshold", DEFAULT_THRESHOLD))
    except (OSError, ValueError, TypeError, AttributeError):
        return DEFAULT_THRESHOLD
    return value if -1.0 <= value <= 1.0 else DEFAULT_THRESHOLD


def check_device(device: str | None) -> str:
    """The device to run on, checked at start by the package's own check when it is installed (default: CUDA when
    available, else the CPU)."""
    import torch

    if package_available():
        from tokenocr.loading import check_device as library_check

        try:
            return library_check(device)
        except ValueError as error:
            raise DemoError(one_line(error)) from None
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device  # on a Space, where nobody passes --device: a device the machine lacks fails when the model loads


@dataclass
class LoadedModel:
    """A model, its processor and the modules of TokenOCR code they came from (the package's or the folder's)."""

    spec: str
    model: object
    processor: object
    drawing: object  # visualization_tokenocr
    pages: object  # pages_tokenocr: the page reader
    device: str


def code_module(processor, name: str):
    """A module of the code the processor itself came from: the package's, or the model folder's remote code (which
    the processor imports, so it is loaded already). One path for both, through a public import."""
    package = type(processor).__module__.rpartition(".")[0]
    try:
        return importlib.import_module(f"{package}.{name}")
    except ImportError as error:
        raise DemoError(f"the model's processing code has no {name} (convert it again): {one_line(error)}") from None


def load_model(spec: str, device: str = "cpu", dtype: str = "float32") -> LoadedModel:
    """Load `spec` with its processor; a failure is a [`DemoError`] with a one-line reason."""
    kind = model_kind(spec)
    source = str(resolve_path(spec)) if kind != "hub" else spec
    try:
        if package_available():  # the package's loading: installed classes, original checkpoints too
            from tokenocr.loading import load_model_and_processor

            model, processor = load_model_and_processor(source, dtype)
        elif kind == "original":
            raise DemoError(f"'{spec}' is an original checkpoint; loading one needs the tokenocr package")
        else:  # a Space: transformers alone, with the folder's own code
            import torch
            from transformers import AutoModel, AutoProcessor

            model = AutoModel.from_pretrained(source, trust_remote_code=True, dtype=getattr(torch, dtype))
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=True)
    except DemoError:
        raise
    except (OSError, ValueError, ImportError, RuntimeError, KeyError) as error:
        raise DemoError(f"cannot load model '{spec}': {one_line(error)[:300]}") from None
    drawing, pages = code_module(processor, "visualization_tokenocr"), code_module(processor, "pages_tokenocr")
    return LoadedModel(source, model.to(device).eval(), processor, drawing, pages, device)


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


def read_page(loaded: LoadedModel, request: PageRequest):
    """The requested page as an RGB PIL image, read by the library's page reader (at most `MAX_PAGE_PIXELS`)."""
    try:
        page = next(loaded.pages.read_pages([request.path], str(request.page_number), PDF_DPI,
                                            max_pixels=MAX_PAGE_PIXELS, names=[f"'{request.name}'"]))
    except (ValueError, OSError, ImportError) as error:
        raise DemoError(one_line(error)) from None
    return page.image


def page_count(loaded: LoadedModel, path: str) -> int:
    """How many pages the PDF at `path` has, by the library's page reader (headers only)."""
    try:
        return len(loaded.pages.page_numbers(path, name=f"'{Path(path).name}'") or [1])
    except (ValueError, OSError, ImportError) as error:
        raise DemoError(one_line(error)) from None


@dataclass
class CachedPage:
    """A page and its vision features (`PageFeatures` of the model's processor)."""

    page: object
    features: object

    @property
    def nbytes(self) -> int:
        return self.features.nbytes + self.page.width * self.page.height * 3


class FeatureCache:
    """A least-recently-used cache of [`CachedPage`]s, bounded in bytes (the newest entry is always kept)."""

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

    def put(self, key, entry: CachedPage) -> None:
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and sum(e.nbytes for e in self._entries.values()) > self.max_bytes:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def page_key(loaded: LoadedModel, request: PageRequest) -> tuple:
    """What a page's vision pass depends on: the model, the file's content, the page and the resolution."""
    return loaded.spec, file_digest(request.path), request.page_number, PDF_DPI


def vision_pass(loaded: LoadedModel, page, progress=None):
    """The page's features by the processor's `page_features`, a few tiles at a time, with progress per batch."""
    def report(done, total):
        if progress is not None:
            progress(done / total, desc=f"Vision pass: tile {done + 1} of {total}")

    return CachedPage(page, loaded.processor.page_features(loaded.model, page, tiles_per_batch=TILES_PER_BATCH,
                                                           progress=report))


def score_query(loaded: LoadedModel, cached: CachedPage, query: str, threshold: float, shown) -> dict:
    """
    The query's result on the cached page, as the pipeline's `level="query"` gives it, with pictures drawn on `shown`
    (the page, or a smaller display copy: what a request keeps grows with the display's pixels, not the page's):
    `score`, `similarity`, `boxes`, `box_scores`, `heatmap` (the query's map with its boxes), `mask`, and `tokens`
    (each with its own `heatmap`, `mask`, `score` and `boxes`, in page pixels).
    """
    processor = loaded.processor
    try:
        query_ids = processor(text=query)["input_ids"]
    except ValueError as error:
        raise DemoError(one_line(error)) from None
    maps = processor.page_similarity(loaded.model, cached.features, query_ids)
    page = cached.page
    return processor.page_results(maps, [query_ids], (page.height, page.width), threshold, level="query",
                                  queries=[query], image=shown)[0]
