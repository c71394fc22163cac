"""Helpers for the data-loss tests: what a folder holds, byte for byte."""

import hashlib
from pathlib import Path


def folder_digest(folder: Path) -> dict:
    """Every entry under `folder` (relative path -> sha256 of a file, 'dir' or 'link -> target')."""
    digest = {}
    for path in sorted(Path(folder).rglob("*")):
        key = path.relative_to(folder).as_posix()
        if path.is_symlink():
            digest[key] = f"link -> {path.readlink()}"
        elif path.is_dir():
            digest[key] = "dir"
        else:
            digest[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest
