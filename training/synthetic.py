# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
Synthetic token-mask pages: text rendered on page-like backgrounds, with each token's mask taken from the glyph
boxes of its characters.

A page is sized around a grid of tiles (so tiling barely rescales it), filled with one or two columns of lines in
random fonts, sizes and colours, optionally crossed by rules, rotated slightly, and degraded with noise and blur.
Each line is tokenised with the page's tokenizer the way queries are (a leading space, no BOS); a token's mask is
the rectangle around the ink boxes of its characters (from the tokenizer's offsets), rotated with the page. Tokens
without visible characters (a lone space) are not supervised. Small boxes away from any text are added as
background tokens labelled with the space token (our assumption of the "-seg" models' background labelling, which
the authors did not publish).

Fonts: Pillow's built-in scalable font always works (no font files needed); `PageStyle.fonts` adds TrueType files
and `PageStyle.use_system_fonts` adds the fonts found in the usual system folders.
"""

import functools
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from .data import TokenMaskDatasetWriter
from .words import WORDS


SYSTEM_FONT_FOLDERS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "C:\\Windows\\Fonts")
PUNCTUATION = ".,:;"


@dataclass
class PageStyle:
    r"""
    How synthetic pages look. Sizes are in pixels of the page.

    Args:
        tile_size: the model's tile side; a page measures about `cols x rows` tiles (times `size_jitter`).
        min_tiles, max_tiles: the range of `cols * rows` a page is sized for.
        size_jitter: random factor applied to each side of the page.
        font_size: range of font sizes; headings may be up to 1.5x larger.
        line_spacing: range of line pitch as a multiple of the font size.
        max_columns: 1 or 2 text columns.
        max_rotation: largest page rotation in degrees (either way).
        noise: range of the standard deviation of Gaussian pixel noise (0-255 scale).
        blur_probability: chance of a slight Gaussian blur.
        rule_probability: chance of horizontal rules and frames (ink that is not text).
        background_boxes: background boxes per page, labelled as the space token.
        background_box_size: range of their side.
        capitalize_probability, number_probability, punctuation_probability: word decoration rates.
        fonts: extra TrueType/OpenType font files.
        use_system_fonts: also use the fonts found under `SYSTEM_FONT_FOLDERS`.
    """

    tile_size: int = 448
    min_tiles: int = 1
    max_tiles: int = 6
    size_jitter: tuple[float, float] = (0.85, 1.15)
    font_size: tuple[int, int] = (18, 40)
    line_spacing: tuple[float, float] = (1.2, 1.7)
    max_columns: int = 2
    max_rotation: float = 3.0
    noise: tuple[float, float] = (0.0, 8.0)
    blur_probability: float = 0.25
    rule_probability: float = 0.3
    background_boxes: int = 10
    background_box_size: tuple[int, int] = (10, 20)
    capitalize_probability: float = 0.15
    number_probability: float = 0.08
    punctuation_probability: float = 0.08
    fonts: tuple[str, ...] = field(default_factory=tuple)
    use_system_fonts: bool = False

    def __post_init__(self):
        if not 1 <= self.min_tiles <= self.max_tiles:
            raise ValueError(f"Need 1 <= min_tiles <= max_tiles, got {self.min_tiles} and {self.max_tiles}.")
        if not 4 <= self.font_size[0] <= self.font_size[1]:
            raise ValueError(f"font_size must be a range of at least 4 pixels, got {self.font_size}.")
        if self.max_columns not in (1, 2):
            raise ValueError(f"max_columns must be 1 or 2, got {self.max_columns}.")
        for path in self.fonts:
            if not Path(path).is_file():
                raise FileNotFoundError(f"Font file '{path}' does not exist.")


def find_system_fonts() -> list[str]:
    """TrueType/OpenType files under the usual system font folders (none on a bare system)."""
    found = []
    for folder in SYSTEM_FONT_FOLDERS:
        if os.path.isdir(folder):
            for root, _, files in os.walk(folder):
                found.extend(os.path.join(root, name) for name in files if name.lower().endswith((".ttf", ".otf")))
    return sorted(found)


@functools.lru_cache(maxsize=512)
def load_font(source: str | None, size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font (`source=None`) or a font file, with Pillow's basic layout."""
    if source is None:
        return ImageFont.load_default(size=size)
    return ImageFont.truetype(source, size=size, layout_engine=ImageFont.Layout.BASIC)


@dataclass
class Line:
    x: int
    y: int
    text: str
    font: ImageFont.FreeTypeFont
    color: tuple[int, int, int]


class SyntheticPageGenerator:
    r"""
    Renders synthetic pages with token masks (see the module docstring).

    Args:
        tokenizer: a fast tokenizer (offsets are needed), e.g. the model's.
        words (`list[str]`): the vocabulary pages are written with.
        style ([`PageStyle`]): how pages look.
        seed (`int`): page `i` of generator seed `s` is always the same page.
    """

    def __init__(self, tokenizer, words=WORDS, style: PageStyle | None = None, seed: int = 0):
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError("The synthetic generator needs a fast tokenizer (it uses token offsets).")
        words = [word for word in words if word.strip()]
        if not words:
            raise ValueError("The synthetic generator needs at least one word.")
        self.tokenizer, self.words, self.seed = tokenizer, list(words), seed
        self.style = style or PageStyle()
        self.space_token_id = None  # background boxes' label; needed only when there are background boxes
        if self.style.background_boxes:
            space = tokenizer(" ", add_special_tokens=False)["input_ids"]
            if len(space) != 1:
                raise ValueError(
                    f"The tokenizer encodes ' ' as {len(space)} tokens, but background boxes are labelled with one "
                    "space token; use PageStyle(background_boxes=0) with this tokenizer."
                )
            self.space_token_id = space[0]
        extra = find_system_fonts() if self.style.use_system_fonts else []
        self.font_sources = [None, *self.style.fonts, *extra]

    def _line_text(self, rng: random.Random, font, width: float) -> str:
        words = []
        for _ in range(64):
            candidate = " ".join([*words, random_word(rng, self.words, self.style)])
            if font.getlength(candidate) > width:
                if words:
                    break
                continue
            words = candidate.split(" ")
        return " ".join(words)

    def _block(self, rng, x0: int, width: int, y: int, bottom: int) -> tuple[list[Line], int]:
        """One paragraph (or heading) of lines starting at `y`; returns the lines and the next free `y`."""
        style = self.style
        size = rng.randint(*style.font_size)
        heading = rng.random() < 0.15
        if heading:
            size = min(int(size * rng.uniform(1.2, 1.5)), int(style.font_size[1] * 1.5))
        font = load_font(rng.choice(self.font_sources), size)
        pitch = max(int(size * rng.uniform(*style.line_spacing)), size + 2)
        dark = rng.random() < 0.8
        color = tuple(rng.randint(0, 70) for _ in range(3)) if dark else tuple(rng.randint(0, 150) for _ in range(3))
        lines = []
        for number in range(1 if heading else rng.randint(1, 6)):
            if y + pitch > bottom:
                break
            indent = int(size * rng.uniform(0.5, 2.0)) if number == 0 and not heading and rng.random() < 0.4 else 0
            text = self._line_text(rng, font, width - indent)
            if text:
                lines.append(Line(x0 + indent, y, text, font, color))
            y += pitch
        return lines, y + int(size * rng.uniform(0.2, 1.2))

    def _layout(self, rng: random.Random, width: int, height: int, angle: float) -> list[Line]:
        # Room for the rotation: a corner moves by about half the page's longer side times sin(angle).
        turn = int(0.5 * max(width, height) * abs(np.sin(np.radians(angle))))
        margin = int(min(width, height) * rng.uniform(0.03, 0.07)) + 2 + turn
        columns = 2 if self.style.max_columns == 2 and width > 12 * self.style.font_size[1] and rng.random() < 0.5 else 1
        gap = int(width * 0.04)
        column_width = (width - 2 * margin - (columns - 1) * gap) // columns
        lines = []
        for column in range(columns):
            x0 = margin + column * (column_width + gap)
            y = margin + rng.randint(0, max(1, self.style.font_size[0]))
            while y < height - margin - self.style.font_size[0]:
                block, y = self._block(rng, x0, column_width, y, height - margin)
                lines.extend(block)
        return lines

    def _page_size(self, rng: random.Random) -> tuple[int, int]:
        style = self.style
        grids = [(c, r) for c in range(1, style.max_tiles + 1) for r in range(1, style.max_tiles + 1)
                 if style.min_tiles <= c * r <= style.max_tiles]
        cols, rows = rng.choice([(c, r) for c, r in grids if max(c, r) <= 3 * min(c, r)] or grids)
        width = int(cols * style.tile_size * rng.uniform(*style.size_jitter))
        height = int(rows * style.tile_size * rng.uniform(*style.size_jitter))
        return max(width, 4 * style.font_size[1]), max(height, 3 * style.font_size[1])

    def render(self, index: int):
        r"""
        Page `index` of this generator.

        Returns:
            `(image, mask, tokens, text)`: the RGB page, its mask map (`int32`, pixel value = mask index, 0 = none),
            the token entries `{"id", "text", "mask_index"}` in reading order (background boxes last) and the
            page's text (lines joined by newlines).
        """
        rng = random.Random(f"tokenocr-synthetic-{self.seed}-{index}")
        noise_rng = np.random.default_rng([self.seed, index])
        width, height = self._page_size(rng)
        angle = rng.uniform(-self.style.max_rotation, self.style.max_rotation)
        lines = self._layout(rng, width, height, angle)
        ink = Image.new("RGBA", (width, height), (0, 0, 0, 0))
        draw = ImageDraw.Draw(ink)
        mask = np.zeros((height, width), dtype=np.int32)
        tokens = []
        for line in lines:
            boxes = draw_line(draw, line)
            for token_id, text, box in token_boxes(self.tokenizer, line.text, boxes):
                tokens.append({"id": token_id, "text": text, "mask_index": len(tokens) + 1})
                left, top, right, bottom = box
                mask[top:bottom, left:right] = len(tokens)
        ink, mask = rotate_page(ink, mask, angle)
        present = set(np.unique(mask).tolist())
        tokens = [token for token in tokens if token["mask_index"] in present]
        tokens += self._background(rng, mask, max((t["mask_index"] for t in tokens), default=0))
        image = finish_page(rng, noise_rng, ink, self.style)
        return image, mask, tokens, "\n".join(line.text for line in lines)

    def _background(self, rng: random.Random, mask: np.ndarray, last_index: int) -> list[dict]:
        boxes = background_boxes(rng, mask, self.style.background_boxes, self.style.background_box_size)
        entries = []
        for number, (left, top, right, bottom) in enumerate(boxes, start=last_index + 1):
            mask[top:bottom, left:right] = number
            entries.append({"id": self.space_token_id, "text": " ", "mask_index": number})
        return entries


def random_word(rng: random.Random, words, style: PageStyle) -> str:
    """A word of `words`, sometimes capitalised or followed by punctuation, or now and then a number or a date."""
    if rng.random() < style.number_probability:
        kind = rng.randrange(3)
        if kind == 0:
            return str(rng.randrange(1, 10000))
        if kind == 1:
            return f"{rng.randrange(1, 1000)}.{rng.randrange(100):02d}"
        return f"{rng.randrange(1, 29):02d}/{rng.randrange(1, 13):02d}/{rng.randrange(1990, 2031)}"
    word = rng.choice(words)
    if rng.random() < style.capitalize_probability:
        word = word[:1].upper() + word[1:]
    if rng.random() < style.punctuation_probability:
        word += rng.choice(PUNCTUATION)
    return word


def sample_sentences(words, count: int, seed: int = 0, style: PageStyle | None = None) -> list[str]:
    """
    `count` lines of text written the way synthetic pages are (same word decoration), each with the leading space
    pages and queries are tokenised with: text to train a page tokenizer on.
    """
    rng, style = random.Random(f"tokenocr-sentences-{seed}"), style or PageStyle()
    return [" " + " ".join(random_word(rng, words, style) for _ in range(rng.randint(2, 10))) for _ in range(count)]


def draw_line(draw: ImageDraw.ImageDraw, line: Line) -> list[tuple[int, int, int, int] | None]:
    """Draw a line character by character; returns each character's ink box (`None` for whitespace)."""
    boxes = []
    for position, character in enumerate(line.text):
        x = line.x + int(round(line.font.getlength(line.text[:position])))
        if character.isspace():
            boxes.append(None)
            continue
        draw.text((x, line.y), character, font=line.font, fill=(*line.color, 255))
        left, top, right, bottom = draw.textbbox((x, line.y), character, font=line.font)
        boxes.append((int(np.floor(left)), int(np.floor(top)), int(np.ceil(right)), int(np.ceil(bottom))))
    return boxes


def token_boxes(tokenizer, line_text: str, char_boxes) -> list[tuple[int, str, tuple[int, int, int, int]]]:
    """
    `(token_id, token_text, box)` for each token of `" " + line_text` with at least one visible character; the box
    surrounds the ink boxes of the characters the token covers (from the tokenizer's offsets).
    """
    text = " " + line_text
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    result = []
    for token_id, (start, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        inked = [char_boxes[i - 1] for i in range(max(start, 1), end) if char_boxes[i - 1] is not None]
        if not inked:
            continue
        box = (min(b[0] for b in inked), min(b[1] for b in inked), max(b[2] for b in inked), max(b[3] for b in inked))
        result.append((int(token_id), text[start:end], box))
    return result


def rotate_page(ink: Image.Image, mask: np.ndarray, angle: float) -> tuple[Image.Image, np.ndarray]:
    """Rotate the ink layer (bicubic) and the mask map (nearest) together about the page centre."""
    if abs(angle) < 1e-3:
        return ink, mask
    ink = ink.rotate(angle, resample=Image.Resampling.BICUBIC)
    rotated = Image.fromarray(mask.astype(np.int32), mode="I").rotate(angle, resample=Image.Resampling.NEAREST)
    return ink, np.asarray(rotated, dtype=np.int32).copy()


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """A bool mask grown by `pixels` in every direction (a square neighbourhood)."""
    if pixels <= 0:
        return mask.copy()
    height, width = mask.shape
    padded = np.pad(mask, pixels)
    grown = np.zeros_like(mask)
    for dy in range(2 * pixels + 1):
        for dx in range(2 * pixels + 1):
            grown |= padded[dy : dy + height, dx : dx + width]
    return grown


def background_boxes(rng: random.Random, mask: np.ndarray, count: int, size_range, margin: int = 3) -> list[tuple]:
    """Up to `count` random boxes that stay `margin` pixels away from any token mask and from each other."""
    height, width = mask.shape
    taken = grow_mask(mask > 0, margin)
    boxes = []
    for _ in range(count * 20):
        if len(boxes) == count:
            break
        box_w, box_h = rng.randint(*size_range), rng.randint(*size_range)
        if box_w >= width or box_h >= height:
            continue
        left, top = rng.randrange(width - box_w), rng.randrange(height - box_h)
        if taken[max(top - margin, 0) : top + box_h + margin, max(left - margin, 0) : left + box_w + margin].any():
            continue
        boxes.append((left, top, left + box_w, top + box_h))
        taken[top : top + box_h, left : left + box_w] = True
    return boxes


def paper(rng: random.Random, noise_rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A light page background with slow variations of tint."""
    base = np.array([rng.randint(215, 255), rng.randint(210, 255), rng.randint(195, 250)], dtype=np.float32)
    coarse = noise_rng.normal(0.0, rng.uniform(0.0, 8.0), size=(max(height // 48, 2), max(width // 48, 2), 1))
    shading = np.asarray(Image.fromarray(coarse[..., 0].astype(np.float32)).resize((width, height), Image.BILINEAR))
    pixels = base[None, None, :] + shading[..., None]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def finish_page(rng: random.Random, noise_rng: np.random.Generator, ink: Image.Image, style: PageStyle) -> Image.Image:
    """Paper, rules, the ink layer on top, then noise and blur."""
    page = paper(rng, noise_rng, *ink.size)
    if rng.random() < style.rule_probability:
        draw = ImageDraw.Draw(page)
        shade = tuple(rng.randint(60, 180) for _ in range(3))
        for _ in range(rng.randint(1, 3)):
            y = rng.randrange(ink.height)
            draw.line([(0, y), (ink.width, y)], fill=shade, width=rng.randint(1, 2))
        if rng.random() < 0.5:
            draw.rectangle([2, 2, ink.width - 3, ink.height - 3], outline=shade, width=rng.randint(1, 3))
    page = Image.alpha_composite(page.convert("RGBA"), ink).convert("RGB")
    sigma = rng.uniform(*style.noise)
    if sigma > 0:
        pixels = np.asarray(page, dtype=np.float32) + noise_rng.normal(0.0, sigma, size=(ink.height, ink.width, 3))
        page = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if rng.random() < style.blur_probability:
        page = page.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.3, 0.8)))
    return page


def generate_dataset(
    folder, tokenizer, num_pages: int, seed: int = 0, words=WORDS, style: PageStyle | None = None, progress=None
):
    """
    Write `num_pages` synthetic pages (generator seed `seed`) in the token-mask format to `folder`, which must not
    exist yet or be empty. `progress`, if given, wraps the page indices (e.g. `tqdm`). Returns the folder as a `Path`.
    """
    folder = Path(folder)
    if num_pages < 1:
        raise ValueError(f"num_pages must be at least 1, got {num_pages}.")
    generator = SyntheticPageGenerator(tokenizer, words=words, style=style, seed=seed)
    existed = folder.exists()
    writer = TokenMaskDatasetWriter(folder)  # refuses a folder that is not new or empty
    try:
        with writer:
            for index in progress(range(num_pages)) if progress else range(num_pages):
                image, mask, tokens, text = generator.render(index)
                writer.add(image, mask, tokens, text)
    except BaseException:
        # Everything in the folder is this call's (it was new or empty): take it away, leave no half dataset.
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        else:
            for entry in folder.iterdir():
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        raise
    return folder
