"""Lay folders out as hub repos in a local Hugging Face cache, and run code on them offline as a hub user would."""

import os
import shutil
from pathlib import Path

from tokenocr.conversion import hub_check
from tokenocr.conversion.hub_check import run_as_hub_user


COMMIT = "0123456789abcdef0123456789abcdef01234567"
TESTS = Path(__file__).parent

# Code to run first in a `python -c` process so that `tokenocr` cannot be imported there (as for a hub user).
BLOCK_TOKENOCR = (
    f"import sys; sys.path.insert(0, {str(Path(hub_check.__file__).parent)!r}); "
    "from hub_check import block_tokenocr; block_tokenocr(); sys.path.pop(0)\n"
)


def add_to_hub_cache(cache: Path, repo_id: str, folder: Path, skip=()) -> Path:
    """Put `folder`'s files in `cache` as the `main` revision of model repo `repo_id`; return the snapshot folder."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for file in folder.iterdir():
        if file.name not in skip:
            (shutil.copytree if file.is_dir() else shutil.copyfile)(file, snapshot / file.name)
    return snapshot


def offline_env(cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf-home"))
    return env


def report_as_hub_user(function: str, args: list, cache: Path, workdir: Path) -> dict:
    """`tests/hub_user_checks.py`'s `function(*args)`, run offline on `cache` in a process without `tokenocr`."""
    return run_as_hub_user(f"hub_user_checks:{function}", [str(a) for a in args], workdir, env=offline_env(cache),
                           extra_paths=[TESTS])
