"""
Never lose data: what `--out`/`--output` and `--force` may touch, in both commands, and what interrupted runs leave.
Every case runs in a temporary folder and checks that everything that was there before is still there, byte for byte.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tokenocr.cli import convert_main, main
from tokenocr.outputs import PARTIAL_MARKER, building_folder, move_into_place

from fixture_cases import FIXTURES
from safety import INTERRUPTED_STATUSES, folder_digest


SEG = FIXTURES / "tiny_seg" / "checkpoint"
IMAGE = FIXTURES / "tiny_seg" / "inputs" / "single_tile.png"


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A user's folder: a checkpoint, an image and a notes file; the current folder is inside it."""
    shutil.copytree(SEG, tmp_path / "ckpt")
    shutil.copyfile(IMAGE, tmp_path / "page.png")
    (tmp_path / "notes.txt").write_text("precious")
    work = tmp_path / "work"
    work.mkdir()
    (work / "draft.txt").write_text("also precious")
    monkeypatch.chdir(work)
    return tmp_path


def similarity(workspace, out, *extra):
    return main(["similarity", "--model", str(workspace / "ckpt"), "--image", str(workspace / "page.png"),
                 "--query", "x", "--out", str(out), *extra])


def one_error_line(capsys, program="tokenocr") -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) >= 1 and lines[-1].startswith(f"{program}: error:"), lines
    return lines[-1]


@pytest.mark.parametrize("out", [".", "..", "{root}", "{root}/ckpt", "{root}/ckpt/results", "{root}/page.png",
                                 "{root}/notes.txt", "{root}/work"])
def test_similarity_refuses_outputs_that_hold_or_lie_in_inputs(workspace, capsys, out):
    before = folder_digest(workspace)
    assert similarity(workspace, out.format(root=workspace), "--force") == 1
    assert "error: --out" in one_error_line(capsys)
    assert folder_digest(workspace) == before


@pytest.mark.parametrize("out", ["{root}", "{root}/ckpt", "{root}/ckpt/converted", "{root}/work", "."])
def test_converter_refuses_outputs_that_hold_or_lie_in_the_source(workspace, capsys, out):
    before = folder_digest(workspace)
    assert convert_main(["--input", str(workspace / "ckpt"), "--output", out.format(root=workspace), "--force"]) == 1
    assert "error: --output" in one_error_line(capsys, "tokenocr-convert")
    assert folder_digest(workspace) == before


def test_force_never_replaces_a_foreign_folder_a_file_or_a_link(workspace, capsys):
    foreign = workspace / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    (foreign / "summary.json").write_text(json.dumps({"tool": "something else"}))
    os.symlink(foreign, workspace / "link")
    before = folder_digest(workspace)
    for out in (foreign, workspace / "notes.txt", workspace / "link"):
        assert similarity(workspace, out, "--force") == 1
        assert "error: --out" in one_error_line(capsys)
        assert convert_main(["--input", str(workspace / "ckpt"), "--output", str(out), "--force"]) == 1
        assert "error: --output" in one_error_line(capsys, "tokenocr-convert")
    assert folder_digest(workspace) == before
    assert not [p for p in workspace.iterdir() if p.name.startswith(".")]


def test_similarity_force_replaces_only_its_own_earlier_output(workspace, capsys):
    out = workspace / "results"
    assert similarity(workspace, out) == 0
    assert similarity(workspace, out) == 1
    assert "already exists; pass --force" in one_error_line(capsys)
    assert similarity(workspace, out, "--force", "--threshold", "0.1") == 0
    assert json.loads((out / "summary.json").read_text())["threshold"] == 0.1
    (out / "my-notes.txt").write_text("added by the user")
    before = folder_digest(workspace)
    assert similarity(workspace, out, "--force") == 1
    assert "my-notes.txt" in one_error_line(capsys)
    assert folder_digest(workspace) == before


def test_converter_force_refuses_an_earlier_output_with_something_added(workspace, converted, capsys):
    """(That --force replaces an earlier converted folder: test_convert.py::test_sharded_conversion_replaces_...)"""
    out = workspace / "converted"
    shutil.copytree(converted("tiny_seg"), out)
    (out / ".git").mkdir()
    before = folder_digest(workspace)
    assert convert_main(["--input", str(workspace / "ckpt"), "--output", str(out), "--force"]) == 1
    assert ".git" in one_error_line(capsys, "tokenocr-convert")
    assert folder_digest(workspace) == before


# ------------------------------------------------------------------------------------ interrupted runs


def test_stale_leftovers_of_a_killed_run_are_cleaned_up(tmp_path, capsys):
    destination = tmp_path / "out"
    dead = 2**22 + 12345  # above the default pid_max: no such process
    partial = tmp_path / f".out.partial-{dead}-abc"
    partial.mkdir()
    (partial / PARTIAL_MARKER).write_text("{}")
    unmarked = tmp_path / f".out.partial-{dead}-xyz"  # not ours: no marker
    unmarked.mkdir()
    previous = tmp_path / f".out.previous-{dead}"  # an earlier output moved aside, then the run was killed
    previous.mkdir()
    (previous / "summary.json").write_text("{}")
    with building_folder(destination, "tokenocr") as building:
        assert building.is_dir() and (building / PARTIAL_MARKER).is_file()
    assert not partial.exists() and unmarked.exists()
    assert (destination / "summary.json").is_file() and not previous.exists()  # put back where it was
    assert "restored 'out'" in capsys.readouterr().err


def test_an_interrupt_between_the_two_renames_puts_the_earlier_output_back(tmp_path, monkeypatch):
    destination = tmp_path / "out"
    destination.mkdir()
    (destination / "summary.json").write_text("earlier")
    real_rename = Path.rename

    def interrupted(self, target):
        if self.name.startswith(".out.partial-"):
            raise KeyboardInterrupt
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", interrupted)
    with pytest.raises(KeyboardInterrupt), building_folder(destination, "tokenocr") as building:
        move_into_place(building, destination)
    assert (destination / "summary.json").read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _wait_for(predicate, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_conversion(tmp_path):
    return subprocess.Popen([sys.executable, "-m", "tokenocr.conversion", "--input", str(SEG), "--output",
                             str(tmp_path / "out")], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _terminate_while_building(process, folder: Path, program: str) -> None:
    """SIGTERM `process` once its output is being built in `folder`; it must end as interrupted, say so in one line,
    and leave `folder` empty."""
    assert _wait_for(lambda: any(p.name.startswith(".out.partial-") for p in folder.iterdir()))
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode in INTERRUPTED_STATUSES, (process.returncode, stderr)
    assert stderr.strip().splitlines()[-1] == f"{program}: error: interrupted; nothing was written"
    assert list(folder.iterdir()) == []


@pytest.mark.slow
def test_sigterm_during_conversion_leaves_nothing(tmp_path):
    _terminate_while_building(_start_conversion(tmp_path), tmp_path, "tokenocr-convert")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the verification process")
def test_sigkill_during_verification_leaves_no_orphan_and_the_next_run_cleans_up(tmp_path):
    process = _start_conversion(tmp_path)
    assert _wait_for(lambda: _children(process.pid)), "the verification process never started"
    children = _children(process.pid)
    process.kill()
    process.communicate(timeout=60)
    assert _wait_for(lambda: not any(_alive(child) for child in children), timeout=10), "verification outlived its parent"
    (partial,) = tmp_path.iterdir()  # a SIGKILL cannot be caught: its temporary folder stays, marked as ours
    assert partial.name.startswith(".out.partial-") and (partial / PARTIAL_MARKER).is_file()
    with building_folder(tmp_path / "out", "tokenocr-convert"):  # what the next run does first
        assert not partial.exists()


@pytest.mark.slow
def test_sigterm_during_similarity_leaves_nothing(tmp_path):
    images = [str(IMAGE)] * 200
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenocr.cli", "similarity", "--model", str(SEG), "--image", *images, "--query",
         "x", "--out", str(tmp_path / "out")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _terminate_while_building(process, tmp_path, "tokenocr")
