"""
The demo's inputs, checked before anything is read or loaded: which files a request may name (only uploads and the
demo's examples), the page number, the threshold and the query. Standard library only, so that a Space needs nothing
more and a bad request costs nothing.
"""

import hashlib
import math
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path


DEMO_DIR = Path(__file__).resolve().parent
EXAMPLES_DIR = DEMO_DIR / "examples"
MAX_QUERY_CHARACTERS = 300
# Largest upload Gradio accepts (a scanned page is a few MB; a long PDF some tens).
MAX_UPLOAD = "200mb"


class DemoError(Exception):
    """A problem with the user's input or the model; the message is shown in the interface as it is."""


def one_line(error: Exception) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


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


def file_path(value) -> str | None:
    """The local path of a file input, as Gradio passes it without preprocessing (a dict) or preprocessed (a str)."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        return value.get("path")
    return str(value)


def file_digest(path: str) -> str:
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
    def name(self) -> str:
        """The file's name (never the server's path to it)."""
        return Path(self.path).name

    @property
    def label(self) -> str:
        return f"page {self.page_number} of {self.name}" if self.kind == "pdf" else self.name


def whole_page_number(value) -> int:
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


def checked_threshold(value, default: float | None) -> float | None:
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


def checked_query(query) -> str:
    """The text to find: not empty, at most `MAX_QUERY_CHARACTERS` characters, encodable (no lone surrogate)."""
    query = "" if query is None else str(query)
    if not query.strip():
        raise DemoError("type the text to find (the query is empty)")
    if len(query) > MAX_QUERY_CHARACTERS:
        raise DemoError(f"the query is {len(query)} characters long; the demo takes at most {MAX_QUERY_CHARACTERS}")
    try:
        query.encode("utf-8")
    except UnicodeEncodeError:
        raise DemoError("the query holds a character that is not valid text (a lone surrogate)") from None
    return query


def page_request(image, pdf, page_number, allowed_dirs) -> PageRequest:
    """The page to analyse: a PDF's page when a PDF is given, else the image; only files in `allowed_dirs`."""
    pdf_path, image_path = file_path(pdf), file_path(image)
    pdf_path = checked_file(pdf_path, allowed_dirs) if pdf_path else None
    image_path = checked_file(image_path, allowed_dirs) if image_path else None
    if pdf_path:
        return PageRequest("pdf", pdf_path, whole_page_number(page_number))
    if image_path:
        return PageRequest("image", image_path, 1)
    raise DemoError("no page: upload, paste or take a picture of a page, or upload a PDF")
