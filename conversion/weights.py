# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""Reading an original checkpoint's weight files: safetensors or pickled `.bin`, lazily, never outside its folder."""

import json
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors import safe_open


# safetensors' dtype names, to read a tensor's dtype from a file header without reading the tensor.
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}

INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
SINGLE_FILES = ("model.safetensors", "pytorch_model.bin")


class CheckpointError(ValueError):
    """An original checkpoint folder that cannot be read as TokenOCR; the message names the problem."""


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


@contextmanager
def reading(file: Path):
    """Turn any failure to read `file` into a `CheckpointError` that names it."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as error:  # noqa: BLE001 - truncated, corrupt or malicious files fail in many ways
        raise CheckpointError(f"cannot read weight file '{file.name}': {first_line(error)}") from error


class WeightFile:
    """
    One weight file, opened lazily: `keys()`, `info(name)` (shape and dtype, without reading the data) and
    `get(name)`. Pickled `.bin` files are read with `torch.load(weights_only=True)` (no code can run) and memory-mapped
    where the format allows, so a tensor is read when first touched.
    """

    def __init__(self, path: Path):
        self.path = path
        self._handle = None
        self._state = None

    def __enter__(self):
        if not self.path.is_file():
            raise CheckpointError(f"weight file '{self.path.name}' is missing")
        with reading(self.path):
            if self.path.suffix == ".safetensors":
                self._handle = safe_open(self.path, framework="pt").__enter__()
            else:
                self._state = _load_pickled(self.path)
                if not isinstance(self._state, dict):
                    raise CheckpointError(f"weight file '{self.path.name}' does not hold a dictionary of tensors")
        return self

    def __exit__(self, *exc_info):
        if self._handle is not None:
            self._handle.__exit__(*exc_info)
        self._handle = self._state = None

    def keys(self) -> list[str]:
        with reading(self.path):
            return list(self._handle.keys()) if self._handle is not None else list(self._state)

    def info(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        with reading(self.path):
            if self._handle is not None:
                piece = self._handle.get_slice(name)
                return tuple(piece.get_shape()), SAFETENSORS_DTYPES[piece.get_dtype()]
            tensor = self._tensor(name)
            return tuple(tensor.shape), tensor.dtype

    def get(self, name: str) -> torch.Tensor:
        with reading(self.path):
            return self._handle.get_tensor(name) if self._handle is not None else self._tensor(name)

    def _tensor(self, name: str) -> torch.Tensor:
        tensor = self._state[name]
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"'{name}' in '{self.path.name}' is not a tensor")
        return tensor


def _load_pickled(file: Path):
    try:
        try:
            return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            return torch.load(file, map_location="cpu", weights_only=True)  # the legacy format cannot be mapped
    except pickle.UnpicklingError as error:
        if "weights only" not in str(error).lower():
            raise
        raise CheckpointError(
            f"weight file '{file.name}' holds objects other than tensors, which would run code when loaded; refused"
        ) from error


def containment_root(folder: Path) -> Path:
    """
    The folder that a checkpoint's weight files must resolve into: the checkpoint folder itself, or, for a snapshot
    of the Hugging Face cache (`models--owner--name/snapshots/<revision>`, whose files link to `../../blobs`), the
    cached repo's folder.
    """
    folder = folder.resolve()
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return folder.parent.parent
    return folder


def weight_file_path(folder: Path, name: str, listed_in: str) -> Path:
    """`folder / name`, refusing a name that is absolute, climbs out with `..`, or is a link that leads outside."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise CheckpointError(f"{listed_in} names weight file '{name}', which is outside the checkpoint folder")
    path = folder / relative
    root = containment_root(folder)
    if not path.resolve().is_relative_to(root):
        raise CheckpointError(f"{listed_in} names weight file '{name}', which leads outside the checkpoint folder")
    return path


def read_weight_index(folder: Path, index_file: Path) -> dict[str, Path]:
    """`tensor name -> weight file` from a `*.index.json`, every file checked to lie inside `folder`."""
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"'{index_file.name}' is not a valid weight index: {first_line(error)}") from error
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in weight_map.items()
    ):
        raise CheckpointError(f"'{index_file.name}' is not a valid weight index: no 'weight_map' of names to files")
    files = {shard: weight_file_path(folder, shard, index_file.name) for shard in set(weight_map.values())}
    return {key: files[shard] for key, shard in weight_map.items()}


def find_weight_files(folder: Path) -> dict[str, Path] | Path:
    """
    Where a checkpoint's tensors are: `tensor name -> file` from a weight index, or the single weight file (whose
    names are read when it is opened).
    """
    for index_name in INDEX_FILES:
        if (folder / index_name).is_file():
            return read_weight_index(folder, folder / index_name)
    for single in SINGLE_FILES:
        if (folder / single).is_file():
            return weight_file_path(folder, single, "the checkpoint")
    raise CheckpointError(
        f"'{folder}' holds no weights (looked for {', '.join(SINGLE_FILES)} and their .index.json)"
    )


def iter_file_tensors(files: dict[Path, list[str]], file_class=WeightFile) -> Iterator[tuple[str, torch.Tensor]]:
    """
    Yield `(name, tensor)` for the names listed per file, one file open at a time, in the given order; files are opened
    with `file_class` (a `WeightFile`).
    """
    for file, names in files.items():
        with file_class(file) as weights:
            available = set(weights.keys())
            for name in names:
                if name not in available:
                    raise CheckpointError(f"tensor '{name}' is missing from '{file.name}'")
                yield name, weights.get(name)
