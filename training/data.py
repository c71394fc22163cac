# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
The token-mask dataset format: what TokenOCR is trained and evaluated on.

A dataset is a folder::

    my-dataset/
        metadata.jsonl      one JSON object per page, one per line
        images/...          the page images (any format Pillow reads)
        masks/...           the mask maps: single-channel PNG (8 or 16 bit), same size as their image

Each line of `metadata.jsonl`::

    {"image": "images/000000.png",
     "mask": "masks/000000.png",
     "text": "the page's text (optional)",
     "tokens": [{"id": 415, "text": " they", "mask_index": 1},
                {"id": 262, "text": " ", "mask_index": 57}, ...]}

- `image`, `mask`: paths relative to the folder.
- The mask map's pixel value is the `mask_index` of the token written there; 0 means no token. A token's mask is
  the set of pixels equal to its `mask_index`.
- `tokens`: the supervised tokens of the page, in reading order. `id` is the token id in the model's tokenizer,
  `text` its text (as the page shows it, a leading space included), `mask_index` its region in the mask map (>= 1).
  A token id that occurs several times on a page has one entry (and one mask index) per occurrence.
  Background boxes, regions without text, are entries whose id is the tokenizer's space token and whose text is
  whitespace (our assumption of how the "-seg" models learned where no text is; the authors' labelling is not
  published). Evaluation skips whitespace-only tokens.
- `text` (optional): the page's text, used by retrieval evaluation to decide which pages contain a query (without
  it, the concatenated token texts are used).
- `words` (optional): the page's words, `[{"text": "Invoice", "box": [left, top, right, bottom]}, ...]` in pixels
  (`tokenocr make-data` writes them for pages without augmentation); evaluation's word figures (word pointing, the
  query boxes' IoU, page retrieval for words) are measured on them.

[`load_token_mask_dataset`] reads such a folder (or a dataset written by `datasets.Dataset.save_to_disk` with the
same columns) as a `datasets.Dataset` with columns `image` and `mask` (decoded to PIL images), `tokens`, `text` and
`words`.
"""

import json
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image


METADATA_FILE = "metadata.jsonl"
TOKEN_KEYS = ("id", "text", "mask_index")


def _whole_number(value, what: str, where: str) -> int:
    """`value` as an `int`: a JSON integer, or a float that is one (`3.0`); anything else (text, `true`, NaN,
    infinity, fractions) is an error naming `where`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        isinstance(value, float) and not (math.isfinite(value) and value.is_integer())
    ):
        raise ValueError(f"{where}: {what} must be a whole number, got {json.dumps(value, allow_nan=True)}.")
    return int(value)


def _image_size(source, key: str, where: str) -> tuple[int, int]:
    """The `(width, height)` of an image file or of image bytes, read from its header (nothing is decoded)."""
    import io

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"{where}: the {key} is not an image Pillow reads ({' '.join(str(error).split())}).") from None


def _check_tokens(tokens, where: str) -> list[dict]:
    """A page's `tokens`, checked: a list of `{"id", "text", "mask_index"}` with whole-number ids (>= 0) and mask
    indices (1 to 65535); errors name `where` and the token."""
    if not isinstance(tokens, list):
        raise ValueError(f"{where}: 'tokens' must be a list.")
    checked = []
    for index, token in enumerate(tokens):
        if not isinstance(token, dict) or any(key not in token for key in TOKEN_KEYS):
            raise ValueError(f"{where}: token {index} must be an object with keys {', '.join(TOKEN_KEYS)}.")
        token_id = _whole_number(token["id"], f"token {index}'s id", where)
        mask_index = _whole_number(token["mask_index"], f"token {index}'s mask_index", where)
        if token_id < 0:
            raise ValueError(f"{where}: token {index} has id {token_id}; token ids are 0 or more.")
        if not 1 <= mask_index <= 65535:
            raise ValueError(
                f"{where}: token {index} has mask_index {mask_index}; mask indices are 1 to 65535 (a 16-bit mask)."
            )
        if not isinstance(token["text"], str):
            raise ValueError(f"{where}: token {index}'s text must be a string.")
        checked.append({"id": token_id, "text": token["text"], "mask_index": mask_index})
    return checked


def _check_sizes(image_size, mask_size, where: str) -> None:
    if tuple(image_size) != tuple(mask_size):
        raise ValueError(f"{where}: the mask is {mask_size[0]}x{mask_size[1]} but the image is "
                         f"{image_size[0]}x{image_size[1]}; a mask map has its page's size.")


def _check_record(record, line_number: int, folder: Path) -> dict:
    """One metadata line, checked and with its paths resolved; errors name the line."""
    where = f"{folder / METADATA_FILE}, line {line_number}"
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}.")
    for key in ("image", "mask", "tokens"):
        if key not in record:
            raise ValueError(f"{where}: missing key '{key}'.")
    tokens = _check_tokens(record["tokens"], where)
    paths = {}
    root = folder.resolve()
    for key in ("image", "mask"):
        path = folder / str(record[key])
        if not path.resolve().is_relative_to(root):  # absolute, climbing out with "..", or a link leading elsewhere
            raise ValueError(f"{where}: {key} '{record[key]}' lies outside the dataset folder; paths are relative to it.")
        if not path.is_file():
            raise FileNotFoundError(f"{where}: {key} file '{path}' does not exist.")
        paths[key] = str(path)
    _check_sizes(_image_size(paths["image"], "image", where), _image_size(paths["mask"], "mask", where), where)
    words = record.get("words") or []
    if not isinstance(words, list) or not all(
        isinstance(word, dict) and isinstance(word.get("text"), str) and isinstance(word.get("box"), list)
        and len(word["box"]) == 4 and all(isinstance(v, (int, float)) and math.isfinite(v) for v in word["box"])
        for word in words
    ):
        raise ValueError(f"{where}: 'words' must be a list of {{\"text\": str, \"box\": [left, top, right, bottom]}}.")
    words = [{"text": word["text"], "box": [float(v) for v in word["box"]]} for word in words]
    return {**paths, "tokens": tokens, "text": str(record.get("text") or ""), "words": words}


def read_metadata(folder: str | os.PathLike) -> list[dict]:
    """The checked records of a token-mask dataset folder, paths made absolute."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Dataset folder '{folder}' does not exist.")
    metadata = folder / METADATA_FILE
    if not metadata.is_file():
        raise FileNotFoundError(f"Dataset folder '{folder}' has no {METADATA_FILE}.")
    records = []
    for line_number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{metadata}, line {line_number}: not valid JSON ({error.msg}).") from None
        records.append(_check_record(record, line_number, folder))
    if not records:
        raise ValueError(f"{metadata} lists no pages.")
    return records


def dataset_features():
    """The `datasets.Features` of a token-mask dataset."""
    import datasets

    token = {"id": datasets.Value("int64"), "text": datasets.Value("string"), "mask_index": datasets.Value("int64")}
    return datasets.Features(
        {
            "image": datasets.Image(),
            "mask": datasets.Image(),
            "tokens": datasets.List(token),
            "text": datasets.Value("string"),
            "words": datasets.List({"text": datasets.Value("string"), "box": datasets.List(datasets.Value("float32"))}),
        }
    )


def load_token_mask_dataset(path: str | os.PathLike):
    """
    Load a token-mask dataset as a `datasets.Dataset` (columns `image`, `mask`, `tokens`, `text`).

    Args:
        path: a folder with `metadata.jsonl` (the format above), or a folder written by `Dataset.save_to_disk`.

    Raises:
        FileNotFoundError: the folder, its metadata or a file it names does not exist.
        ValueError: a malformed metadata line (the message names the file and line) or missing columns.
    """
    import datasets

    folder = Path(path)
    if folder.is_dir() and not (folder / METADATA_FILE).exists() and (folder / "state.json").is_file():
        dataset = datasets.load_from_disk(str(folder))
        missing = {"image", "mask", "tokens"} - set(dataset.column_names)
        if missing:
            raise ValueError(f"Dataset '{folder}' lacks the column(s) {', '.join(sorted(missing))}.")
        check_saved_dataset(dataset, folder)
        return dataset
    records = read_metadata(folder)
    if not any(record["tokens"] for record in records):
        raise ValueError(f"Dataset '{folder}' has no supervised token on any page: there is nothing to learn from.")
    return datasets.Dataset.from_list(records, features=dataset_features())


def check_saved_dataset(dataset, folder: str | os.PathLike, batch_size: int = 256) -> None:
    """
    Check a dataset written by `Dataset.save_to_disk` as [`read_metadata`] checks a metadata line, naming the row:
    `image` and `mask` must be image data (`datasets.Image` columns holding the images' bytes, as `save_to_disk`
    stores them), never file paths, which would let a dataset make training open any file of the machine (or hang
    on a pipe); mask and page the same size; tokens as the format says. Images are not decoded (their headers
    give their sizes).
    """
    import datasets

    for key in ("image", "mask"):
        if not isinstance(dataset.features[key], datasets.Image):
            raise ValueError(
                f"Dataset '{folder}': the '{key}' column holds {dataset.features[key]!r}, not images; it must be a "
                "datasets.Image column of image data (file paths are refused)."
            )
    raw = dataset.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))
    raw = raw.select_columns(["image", "mask", "tokens"])
    for start in range(0, len(raw), batch_size):
        batch = raw[start : start + batch_size]
        for offset, (image, mask, tokens) in enumerate(zip(batch["image"], batch["mask"], batch["tokens"])):
            where = f"Dataset '{folder}', row {start + offset}"
            sizes = {}
            for key, value in (("image", image), ("mask", mask)):
                data = value.get("bytes") if isinstance(value, dict) else None
                if not isinstance(data, bytes) or not data:
                    named = value.get("path") if isinstance(value, dict) else value
                    raise ValueError(
                        f"{where}: the {key} is a file path ({named!r}), not image data; a saved dataset must hold its "
                        "images (datasets.Image with their bytes, as save_to_disk writes them)."
                    )
                sizes[key] = _image_size(data, key, where)
            _check_sizes(sizes["image"], sizes["mask"], where)
            _check_tokens(tokens, where)


def where_row(dataset_path: str | os.PathLike, row: int) -> str:
    """How an error names page `row` of the token-mask dataset at `dataset_path`: the metadata file and line, or the
    saved dataset's row."""
    folder = Path(dataset_path)
    metadata = folder / METADATA_FILE
    if metadata.is_file():
        with open(metadata, encoding="utf-8") as lines:
            pages = (number for number, line in enumerate(lines, start=1) if line.strip())
            for number in pages:
                if row == 0:
                    return f"{metadata}, line {number}"
                row -= 1
    return f"Dataset '{folder}', row {row}"


def check_token_ids(dataset, vocab_size: int, dataset_path: str | os.PathLike) -> None:
    """
    Refuse a dataset with a token id outside the model's vocabulary `[0, vocab_size)`, naming the file and line (or
    row) of the first such page; called once the model, and so its vocabulary, is known.
    """
    import pyarrow.compute as pc

    tokens = dataset.select_columns(["tokens"]).with_format("arrow")[:]["tokens"].combine_chunks()
    ids = pc.struct_field(pc.list_flatten(tokens), "id")
    bad = pc.or_(pc.less(ids, 0), pc.greater_equal(ids, vocab_size))
    if not pc.any(bad).as_py():
        return
    first = pc.index(bad, True).as_py()
    row = pc.list_parent_indices(tokens)[first].as_py()
    token_id = ids[first].as_py()
    position = first - pc.list_value_length(tokens).to_numpy(zero_copy_only=False)[:row].sum()
    raise ValueError(
        f"{where_row(dataset_path, row)}: token {position} has id {token_id}, outside the model's vocabulary "
        f"(ids 0 to {vocab_size - 1})."
    )


def mask_array(mask) -> np.ndarray:
    """A mask map (PIL image, path or array) as a 2-D integer array; errors for colour or empty maps."""
    if isinstance(mask, (str, os.PathLike)):
        mask = Image.open(mask)
    array = np.asarray(mask)
    if array.ndim != 2:
        raise ValueError(f"A mask map must be single-channel (height, width), got shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.integer) and array.dtype != bool:
        raise ValueError(f"A mask map must hold integers (token mask indices), got {array.dtype}.")
    return array.astype(np.int64, copy=False)


def save_mask(mask: np.ndarray, path: str | os.PathLike) -> None:
    """Write a mask map as a 16-bit single-channel PNG (mask indices up to 65535)."""
    mask = np.asarray(mask)
    if not (np.issubdtype(mask.dtype, np.integer) or mask.dtype == bool) and not (
        np.isfinite(mask).all() and np.array_equal(mask, np.round(mask))
    ):
        raise ValueError("Mask indices must be whole numbers (a float mask holds NaN, infinity or fractions).")
    if mask.min(initial=0) < 0 or mask.max(initial=0) > 65535:
        raise ValueError("Mask indices must lie between 0 and 65535 to be stored as a 16-bit PNG.")
    Image.fromarray(mask.astype(np.uint16)).save(path)


class TokenMaskDatasetWriter:
    """
    Writes pages in the token-mask format: `writer.add(image, mask, tokens, text)` saves the image and mask under
    `images/` and `masks/` and appends a line to `metadata.jsonl`. Use as a context manager. `folder` must be new or
    empty: nothing already there is ever overwritten.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        if self.folder.exists() and (not self.folder.is_dir() or any(self.folder.iterdir())):
            raise FileExistsError(f"'{self.folder}' already exists and is not an empty folder.")
        (self.folder / "images").mkdir(parents=True, exist_ok=True)
        (self.folder / "masks").mkdir(parents=True, exist_ok=True)
        self._metadata = open(self.folder / METADATA_FILE, "x", encoding="utf-8")
        self.count = 0

    def add(self, image: Image.Image, mask: np.ndarray, tokens: list[dict], text: str = "") -> dict:
        if (mask.shape[1], mask.shape[0]) != image.size:
            raise ValueError(f"The mask is {mask.shape[1]}x{mask.shape[0]} but the image is {image.width}x{image.height}.")
        name = f"{self.count:06d}.png"
        image.save(self.folder / "images" / name)
        save_mask(mask, self.folder / "masks" / name)
        record = {"image": f"images/{name}", "mask": f"masks/{name}", "text": text, "tokens": tokens}
        self._metadata.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.count += 1
        return record

    def close(self):
        self._metadata.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
