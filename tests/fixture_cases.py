"""The reference cases produced by the original TokenOCR implementation, and a cached loader for them."""

import json
from pathlib import Path

import numpy as np


FIXTURES = Path(__file__).parent / "fixtures" / "original"
CASES = ["tiny_seg", "tiny_legacy"]


class Case:
    def __init__(self, name: str):
        self.name = name
        self.root = FIXTURES / name
        self.checkpoint = self.root / "checkpoint"
        self.manifest = json.loads((self.root / "manifest.json").read_text())
        self.queries = json.loads((self.root / "inputs" / "queries.json").read_text())
        self.images = sorted(self.manifest["images"])

    def image_path(self, image: str) -> Path:
        return self.root / "inputs" / image

    def expected(self, image: str):
        return np.load(self.root / "expected" / (Path(image).stem + ".npz"))


_loaded = {}


def load_case(case: Case, dtype="float32"):
    """`load_original` on a fixture checkpoint, cached per (case, dtype) for the session."""
    from tokenocr.conversion import load_original

    key = (case.name, str(dtype))
    if key not in _loaded:
        _loaded[key] = load_original(case.checkpoint, dtype=dtype)
    return _loaded[key]
