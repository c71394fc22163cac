"""
What the memory benchmarks share: the command under test runs in its own process (`tokenocr ...` through
`tokenocr.cli.main`), with a few lines of code that hook into it and report, as one JSON line on stdout, what they
read from `/proc/self/status` (peak and current resident memory, in MiB).
"""

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
# The model's own size does not matter for the memory questions asked, so the default is the small test checkpoint.
TEST_MODEL = str(ROOT / "tests/fixtures/original/tiny_seg/checkpoint")

# Prepended to each benchmark's hook code: `status("VmHWM")` (peak) or `status("VmRSS")` (current), in MiB.
STATUS = r"""
import json, re, sys
from tokenocr.cli import main

def status(field):
    with open("/proc/self/status") as file:
        return int(re.search(field + r":\s+(\d+)", file.read()).group(1)) / 1024
"""


def parser_with_model(doc: str) -> argparse.ArgumentParser:
    """An argument parser described by the script's docstring, with `--model` (default: the test checkpoint)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[1])
    parser.add_argument("--model", default=TEST_MODEL)
    return parser


def run_hooked(hook: str, argv: list[str]) -> dict:
    """Run `tokenocr ARGV` in a new process with `hook` (code after `STATUS`, ending by printing its JSON line);
    return that line, or stop with the command's error output."""
    result = subprocess.run([sys.executable, "-c", STATUS + hook, *argv], capture_output=True, text=True)
    report = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
    if result.returncode != 0 or report.get("code", 0) != 0:
        raise SystemExit(result.stderr[-3000:])
    return report


@contextlib.contextmanager
def work_folder(name: str):
    """A temporary folder for one benchmark's pages and outputs, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix=f"tokenocr-{name}-") as work:
        yield Path(work)
