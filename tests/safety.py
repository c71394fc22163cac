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


# How an interrupted command may end: our handler's exit status 130, or death by SIGINT, which CPython chooses at exit
# when the KeyboardInterrupt went through C-level evaluation (e.g. during an import) before our handler caught it.
# A shell reports both as 130.
INTERRUPTED_STATUSES = (130, -2)
