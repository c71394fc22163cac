# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
Token masks from PDF text layers (`tokenocr make-data`): each page is rendered, its characters and their boxes are
read from the text layer with pypdfium2, the page's text is tokenised with the model's tokenizer (with offsets), and
each token's mask is the union of its characters' boxes, written in the token-mask dataset format
(`tokenocr.training.data`), so that `tokenocr train` and `tokenocr evaluate` read it as it is.

What the text layer gives, and what becomes of it:

- Positions come from PDFium's own page-to-pixel mapping, so crop boxes and `/Rotate` are what the rendered page
  shows. A character's box is its tight glyph box, axis-aligned: rotated text gets the box around the rotated glyph.
- Ligatures (U+FB00-FB06, e.g. "ﬁ") are spelled out ("fi"); both letters share the ligature's box.
- Spaces and line breaks PDFium infers between words have no box: they separate tokens but mask nothing. A word
  hyphenated across lines stays two pieces, each on its own line, the hyphen included.
- Characters without a Unicode mapping (a font with no ToUnicode table) are left out with every token that holds
  one; a page where more than `MAX_UNMAPPED_FRACTION` of the characters lack a mapping is skipped.
- Invisible text (render mode 3, the OCR layer over a scan) is kept: its boxes are where the OCR engine put them.
- Pages with no text layer, too large pages, damaged pages, and encrypted or damaged files are skipped and counted
  with the reason.

`scan_augmentation` makes a rendered page look scanned or photographed (paper tint, blur, noise, JPEG, lower
resolution, a small rotation and perspective), moving the mask with the image.
"""

import json
import math
import os
import random
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from ..processing.settings_tokenocr import DEFAULT_PDF_DPI, MAX_PDF_PAGE_PIXELS, parse_pages
from .data import METADATA_FILE, save_mask


MAX_UNMAPPED_FRACTION = 0.05  # a page with more characters lacking a Unicode mapping is skipped
MAX_MASK_INDEX = 65535  # 16-bit mask maps
LIGATURES = {chr(code): unicodedata.normalize("NFKC", chr(code)) for code in range(0xFB00, 0xFB07)}
INVISIBLE_RENDER_MODE = 3
AUGMENTATIONS = ("none", "scan", "photo")


class SkippedPage(Exception):
    """A page (or file) that gives no training page; the message is the reason, counted in the summary."""


@dataclass
class PageText:
    """A page's text as a string, one box per character (`[left, top, right, bottom]` pixels, NaN for none)."""

    text: str
    boxes: np.ndarray  # (len(text), 4) float
    unmapped: np.ndarray  # (len(text),) bool: characters without a Unicode mapping
    invisible: int = 0


def _device_point(raw, page, size, x: float, y: float) -> tuple[float, float]:
    import ctypes

    device_x, device_y = ctypes.c_int(), ctypes.c_int()
    # PDFium's own mapping (crop box, /Rotate) from page space to the rendered bitmap; integer pixels, so points are
    # mapped at 16x and divided back for sub-pixel boxes.
    raw.FPDF_PageToDevice(page, 0, 0, size[0] * 16, size[1] * 16, 0, x, y, device_x, device_y)
    return device_x.value / 16, device_y.value / 16


def read_page_text(page, textpage, size: tuple[int, int]) -> PageText:
    """The characters of `page` with their boxes in pixels of a rendering of `size` `(width, height)`."""
    import pypdfium2.raw as raw

    chars, boxes, unmapped, invisible = [], [], [], 0
    for index in range(textpage.count_chars()):
        code = raw.FPDFText_GetUnicode(textpage, index)
        char = chr(code) if 0 < code < 0x110000 and not 0xD800 <= code < 0xE000 else "\ufffd"
        missing = bool(raw.FPDFText_HasUnicodeMapError(textpage, index))
        box = (math.nan,) * 4
        if not raw.FPDFText_IsGenerated(textpage, index) and not char.isspace():
            left, bottom, right, top = textpage.get_charbox(index)
            if right > left and top > bottom:
                corners = [_device_point(raw, page, size, x, y) for x in (left, right) for y in (bottom, top)]
                xs, ys = [c[0] for c in corners], [c[1] for c in corners]
                box = (min(xs), min(ys), max(xs), max(ys))
            textobj = raw.FPDFText_GetTextObject(textpage, index)
            if textobj and raw.FPDFTextObj_GetTextRenderMode(textobj) == INVISIBLE_RENDER_MODE:
                invisible += 1
        for part in LIGATURES.get(char, char):
            chars.append("\n" if part in "\r\n" else part)
            boxes.append(box)
            unmapped.append(missing)
    return PageText("".join(chars), np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                    np.asarray(unmapped, dtype=bool), invisible)


def token_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """`(ids, offsets)` of `text` in `tokenizer` (a fast tokenizer: offsets are character spans), no special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"make-data needs a fast tokenizer (tokenizer.json) for character offsets; "
                         f"{type(tokenizer).__name__} has none.")
    encoding = backend.encode(text, add_special_tokens=False)
    return list(encoding.ids), [tuple(span) for span in encoding.offsets]


def page_token_masks(page_text: PageText, tokenizer, size: tuple[int, int]) -> tuple[np.ndarray, list[dict]]:
    """
    The mask map `(height, width)` and token list of a page: each token holding at least one boxed character gets a
    mask index (1, 2, ... in reading order) painted over the union of its characters' boxes. Tokens holding a
    character without a Unicode mapping are left out.
    """
    width, height = size
    mask = np.zeros((height, width), dtype=np.uint16)
    tokens = []
    ids, offsets = token_offsets(tokenizer, page_text.text)
    for token_id, (start, end) in zip(ids, offsets):
        if end <= start or page_text.unmapped[start:end].any():
            continue
        boxes = page_text.boxes[start:end]
        boxes = boxes[~np.isnan(boxes[:, 0])]
        if not len(boxes):
            continue
        if len(tokens) == MAX_MASK_INDEX:
            raise SkippedPage(f"more than {MAX_MASK_INDEX} tokens on one page")
        index = len(tokens) + 1
        for left, top, right, bottom in boxes:
            x0, y0 = max(0, math.floor(left)), max(0, math.floor(top))
            x1, y1 = min(width, math.ceil(right)), min(height, math.ceil(bottom))
            mask[y0:y1, x0:x1] = index
        tokens.append({"id": int(token_id), "text": page_text.text[start:end], "mask_index": index})
    present = np.zeros(len(tokens) + 1, dtype=bool)
    present[np.unique(mask)] = True
    return mask, [token for token in tokens if present[token["mask_index"]]]  # a token painted over entirely is dropped


WORD_PUNCTUATION = ".,;:!?()[]{}\"'“”‘’«»"


def page_words(page_text: PageText) -> list[dict]:
    """
    The page's words with their boxes: runs of characters between whitespace, without their leading and trailing
    punctuation (`WORD_PUNCTUATION`), each with the union of its characters' boxes (`[left, top, right, bottom]`,
    pixels). Words holding a character without a box or a Unicode mapping are left out. Evaluation's word figures
    (word pointing, query box IoU, page retrieval) are measured on them.
    """
    words, text = [], page_text.text
    start = 0
    for end in range(len(text) + 1):
        if end < len(text) and not text[end].isspace():
            continue
        first, last = start, end
        while first < last and text[first] in WORD_PUNCTUATION:
            first += 1
        while last > first and text[last - 1] in WORD_PUNCTUATION:
            last -= 1
        boxes = page_text.boxes[first:last]
        if last > first and not np.isnan(boxes).any() and not page_text.unmapped[first:last].any():
            words.append({"text": text[first:last], "box": [round(float(boxes[:, 0].min()), 1),
                                                            round(float(boxes[:, 1].min()), 1),
                                                            round(float(boxes[:, 2].max()), 1),
                                                            round(float(boxes[:, 3].max()), 1)]})
        start = end + 1
    return words


def scan_augmentation(image: Image.Image, mask: np.ndarray, rng: random.Random, kind: str = "scan"):
    """
    `(image, mask)` made to look scanned (`"scan"`: tint, slight rotation, blur, noise, lower resolution, JPEG) or
    photographed (`"photo"`: the same, stronger, with a perspective tilt and uneven light). The geometry moves the
    mask with the image (nearest-neighbour, so indices stay whole); `"none"` returns them unchanged.
    """
    if kind == "none":
        return image, mask
    if kind not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {kind!r}; choose one of {', '.join(AUGMENTATIONS)}.")
    photo = kind == "photo"
    width, height = image.size
    angle = rng.uniform(-2.5, 2.5) if photo else rng.uniform(-1.0, 1.0)
    tilt = rng.uniform(0.0, 0.04) if photo else 0.0
    coefficients = _perspective(width, height, angle, tilt, rng)
    paper = tuple(rng.randint(225, 255) for _ in range(3))
    image = image.transform(image.size, Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.BICUBIC,
                            fillcolor=paper)
    mask_image = Image.fromarray(mask.astype(np.int32), mode="I").transform(
        image.size, Image.Transform.PERSPECTIVE, coefficients, Image.Resampling.NEAREST, fillcolor=0)
    mask = np.asarray(mask_image).astype(np.uint16)
    pixels = np.asarray(image, dtype=np.float32)
    pixels = pixels * (np.asarray(paper, dtype=np.float32) / 255.0)  # paper tint (multiplies: ink stays dark)
    if photo:  # uneven light: a gentle gradient across the page
        ramp = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(0.9, 1.1), width if rng.random() < 0.5 else height)
        pixels = pixels * (ramp[None, :, None] if len(ramp) == width else ramp[:, None, None])
    pixels = pixels + np.random.default_rng(rng.getrandbits(32)).normal(0, rng.uniform(2, 14 if photo else 8),
                                                                        pixels.shape)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < 0.6:
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.3 if photo else 0.9)))
    if rng.random() < 0.4:  # scanned at a lower resolution, shown at this one
        factor = rng.uniform(0.55, 0.85)
        small = image.resize((max(1, round(width * factor)), max(1, round(height * factor))), Image.Resampling.BILINEAR)
        image = small.resize((width, height), Image.Resampling.BILINEAR)
    if rng.random() < 0.7:
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=rng.randint(25, 85))
        image = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    return image, mask


def _perspective(width: int, height: int, angle: float, tilt: float, rng: random.Random) -> list[float]:
    """PIL's perspective coefficients (output -> input) for a rotation by `angle` degrees about the centre and a
    tilt that moves each corner by up to `tilt` of the page's size."""
    theta = math.radians(angle)
    cx, cy = width / 2, height / 2
    corners = [(0, 0), (width, 0), (width, height), (0, height)]
    moved = []
    for x, y in corners:
        dx, dy = x - cx, y - cy
        moved.append((cx + dx * math.cos(theta) - dy * math.sin(theta) + rng.uniform(-tilt, tilt) * width,
                      cy + dx * math.sin(theta) + dy * math.cos(theta) + rng.uniform(-tilt, tilt) * height))
    # Solve for the 8 coefficients mapping each output corner (moved) to its input corner.
    rows, values = [], []
    for (x, y), (u, v) in zip(moved, corners):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        values.extend([u, v])
    return np.linalg.solve(np.asarray(rows, dtype=np.float64), np.asarray(values, dtype=np.float64)).tolist()


def find_pdfs(paths) -> list[Path]:
    """The PDF files named in `paths`: files as given, folders searched recursively (sorted; links to folders are
    not followed). Raises `FileNotFoundError` for a path that does not exist and `ValueError` when none is found."""
    found = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for root, folders, files in os.walk(path):
                folders.sort()
                found.extend(Path(root) / name for name in sorted(files) if name.lower().endswith(".pdf"))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"'{given}' does not exist.")
    if not found:
        raise ValueError("No PDF file found in " + ", ".join(f"'{p}'" for p in paths) + ".")
    return found


@dataclass
class MakeDataSummary:
    """What a make-data run did: pages written, and pages or files skipped by reason."""

    written: int = 0
    skipped: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict:
        return {"pages_written": self.written, "skipped": dict(sorted(self.skipped.items()))}

    def report(self) -> str:
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
        return f"{self.written} pages written" + (f"; skipped: {skipped}" if skipped else "")


def pdf_pages_to_records(pdf: Path, tokenizer, pages: str | None, dpi: float, done: set):
    """
    Yield `(page_number, image, mask, tokens, page_text)` for each selected page of `pdf` not in `done`, or
    `(page_number, None, reason)` for a page that is skipped. Raises `SkippedPage` when the file itself cannot be
    read (encrypted, damaged, no pages).
    """
    import pypdfium2

    try:
        document = pypdfium2.PdfDocument(str(pdf))
    except pypdfium2.PdfiumError as error:
        reason = "encrypted file" if "password" in str(error).lower() else "damaged or unreadable file"
        raise SkippedPage(reason) from None
    try:
        count = len(document)
        if count == 0:
            raise SkippedPage("file without pages")
        selected = []
        for first, last in parse_pages(pages) or [(1, None)]:
            selected.extend(range(first, (count if last is None else last) + 1))
        for number in selected:
            if number in done:
                continue
            if number > count:
                yield number, None, "no such page"
                continue
            yield (number, *_render_page(document, number, tokenizer, dpi))
    finally:
        document.close()


def _render_page(document, number: int, tokenizer, dpi: float):
    import pypdfium2

    try:
        page = document[number - 1]
    except pypdfium2.PdfiumError:
        return None, "damaged page"
    try:
        scale = dpi / 72
        width, height = (round(side * scale) for side in page.get_size())
        if width * height > MAX_PDF_PAGE_PIXELS:
            return None, "page too large at this dpi"
        if width < 1 or height < 1:
            return None, "empty page"
        textpage = page.get_textpage()
        try:
            if textpage.count_chars() == 0:
                return None, "no text layer"
            image = page.render(scale=scale).to_pil().convert("RGB")
            page_text = read_page_text(page, textpage, image.size)
        finally:
            textpage.close()
        if not np.isfinite(page_text.boxes[:, 0]).any():
            return None, "no text layer"
        if page_text.unmapped.mean() > MAX_UNMAPPED_FRACTION:
            return None, "text without Unicode mapping"
        try:
            mask, tokens = page_token_masks(page_text, tokenizer, image.size)
        except SkippedPage as reason:
            return None, str(reason)
        if not tokens:
            return None, "no token with a box"
        return image, mask, tokens, page_text
    except pypdfium2.PdfiumError:
        return None, "damaged page"
    finally:
        page.close()


class MakeDataWriter:
    """
    Appends pages to a token-mask dataset folder that make-data builds (resumable): images and masks first, then
    the metadata line, so a line is only ever written for a complete page; each record carries its `source` (file
    and page), and skipped pages go to `skipped.jsonl`, so a resumed run knows what is done.
    """

    SKIPPED_FILE = "skipped.jsonl"

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(exist_ok=True)
        (folder / "images").mkdir(exist_ok=True)
        (folder / "masks").mkdir(exist_ok=True)
        self.done = {}  # source file -> set of page numbers already written or skipped
        self.summary = MakeDataSummary()
        self.count = 0
        for name in (METADATA_FILE, self.SKIPPED_FILE):
            for record in _complete_lines(folder / name):
                source = record.get("source", {})
                self.done.setdefault(source.get("file"), set()).add(source.get("page"))
                if name == METADATA_FILE:
                    self.count += 1
                    self.summary.written += 1
                else:
                    self.summary.skipped[record["reason"]] += 1
        self._metadata = open(folder / METADATA_FILE, "a", encoding="utf-8")
        self._skipped = open(folder / self.SKIPPED_FILE, "a", encoding="utf-8")

    def add(self, source: dict, image: Image.Image, mask: np.ndarray, tokens: list[dict], text: str,
            words: list[dict] = ()) -> None:
        name = f"{self.count:06d}.png"
        image.save(self.folder / "images" / name)
        save_mask(mask, self.folder / "masks" / name)
        record = {"image": f"images/{name}", "mask": f"masks/{name}", "text": text, "tokens": tokens,
                  "words": list(words), "source": source}
        self._metadata.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._metadata.flush()
        self.count += 1
        self.summary.written += 1

    def skip(self, source: dict, reason: str) -> None:
        self._skipped.write(json.dumps({"source": source, "reason": reason}, ensure_ascii=False) + "\n")
        self._skipped.flush()
        self.summary.skipped[reason] += 1

    def close(self) -> None:
        self._metadata.close()
        self._skipped.close()


def _complete_lines(path: Path) -> list[dict]:
    """The complete JSON lines of `path` (an interrupted last line is cut off the file, so appending continues
    cleanly)."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(end)
    return [json.loads(line) for line in data[:end].decode("utf-8").splitlines() if line.strip()]


def make_data(pdfs, tokenizer, folder: Path, pages: str | None = None, dpi: float = DEFAULT_PDF_DPI,
              augmentation: str = "none", seed: int = 0, progress=None) -> MakeDataSummary:
    """
    Write the token masks of every selected page of `pdfs` (files) into `folder` (a folder make-data is building;
    pages already there are kept and not redone). `augmentation` (`AUGMENTATIONS`) is applied to each page with a
    generator seeded by `seed`, the file's name and the page number, so a resumed run makes the same pages.

    Returns:
        [`MakeDataSummary`]: pages written and skipped (by reason), this run and earlier ones together.
    """
    if augmentation not in AUGMENTATIONS:
        raise ValueError(f"Unknown augmentation {augmentation!r}; choose one of {', '.join(AUGMENTATIONS)}.")
    writer = MakeDataWriter(folder)
    try:
        bar = progress(total=len(pdfs)) if progress else None
        for pdf in pdfs:
            key = str(pdf)
            done = writer.done.get(key, set())
            if None in done:  # the whole file was skipped before
                bar and bar.update(1)
                continue
            try:
                for number, image, *rest in pdf_pages_to_records(pdf, tokenizer, pages, dpi, done):
                    source = {"file": key, "page": number}
                    if image is None:
                        writer.skip(source, rest[0])
                        continue
                    mask, tokens, page_text = rest
                    rng = random.Random(f"{seed}:{pdf.name}:{number}")
                    image, mask = scan_augmentation(image, mask, rng, augmentation)
                    kept = set(np.unique(mask).tolist())
                    tokens = [token for token in tokens if token["mask_index"] in kept]
                    # Word boxes are exact for clean pages; under an augmentation's geometry they are left out.
                    words = page_words(page_text) if augmentation == "none" else []
                    writer.add(source, image, mask, tokens, page_text.text, words)
            except SkippedPage as reason:
                writer.skip({"file": key, "page": None}, str(reason))
            if bar:
                bar.update(1)
                bar.set_postfix_str(writer.summary.report(), refresh=False)
        if bar:
            bar.close()
        return writer.summary
    finally:
        writer.close()
