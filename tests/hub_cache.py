"""Helpers to lay folders out as hub repos in a local Hugging Face cache and use them offline in a subprocess."""

import os
import shutil
import subprocess
import sys
from pathlib import Path


COMMIT = "0123456789abcdef0123456789abcdef01234567"

BLOCK_TOKENOCR = """
import sys
class _BlockTokenOCR:
    def find_spec(self, name, path=None, target=None):
        if name == "tokenocr" or name.startswith("tokenocr."):
            raise ImportError("tokenocr is not installed here")
sys.meta_path.insert(0, _BlockTokenOCR())
"""


def add_to_hub_cache(cache: Path, repo_id: str, folder: Path, skip=()) -> Path:
    """Put `folder`'s files in `cache` as the `main` revision of model repo `repo_id`; return the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for file in folder.iterdir():
        if file.is_file() and file.name not in skip:
            shutil.copyfile(file, snapshot / file.name)
    return snapshot


def offline_env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf-home"))
    return env


def run_offline(script: str, args, cache: Path, workdir: Path, block_tokenocr: bool = True):
    """Run `script` in a fresh Python with the hub offline and (by default) `tokenocr` not importable."""
    code = (BLOCK_TOKENOCR if block_tokenocr else "") + script
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        cwd=workdir, env=offline_env(cache), capture_output=True, text=True, timeout=600,
    )
