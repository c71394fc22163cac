"""The `tokenocr similarity` command: results against the original's maps, instant help, one-line errors, consent."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tokenocr.cli import main
from tokenocr.processing import mask_to_boxes

from safety import INTERRUPTED_STATUSES
from fixture_cases import FIXTURES, Case


SEG = FIXTURES / "tiny_seg" / "checkpoint"
CASE = Case("tiny_seg")
IMAGE = str(CASE.image_path("single_tile.png"))


def run(tmp_path, *arguments, model=SEG, image=IMAGE, query=("x",)):
    return main(["similarity", "--model", str(model), "--image", *([image] if isinstance(image, str) else image),
                 "--query", *query, "--out", str(tmp_path / "out"), *arguments])


def error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1].startswith("tokenocr: error:"), lines
    assert not any("Traceback" in line for line in lines), lines
    return lines[-1]


def test_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "results"
    images = [str(CASE.image_path("doc_wide.png")), IMAGE]
    code = main(["similarity", "--model", str(SEG), "--image", *images,
                 "--query", "they are not", "x", "--out", str(out), "--threshold", "0.05"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert [Path(entry["image"]).name for entry in summary["images"]] == ["doc_wide.png", "single_tile.png"]
    expected = CASE.expected("doc_wide.png")
    first = summary["images"][0]["queries"][0]
    assert first["query"] == "they are not"
    assert [t["token_id"] for t in first["tokens"]] == CASE.manifest["query_input_ids"]["they are not"]
    for token, token_map in zip(first["tokens"], expected["similarity_q2"]):
        assert token["score"] == pytest.approx(float(token_map.max()), abs=1e-4)
        heatmap, mask = Image.open(out / token["heatmap"]), Image.open(out / token["mask"])
        assert heatmap.size == mask.size == tuple(summary["images"][0]["size"])
        assert mask_to_boxes(np.asarray(mask) > 0) == token["boxes"]
    # relevance: the query's score, its map made from the original's token maps where the tokens stand side by side
    from tokenocr.processing.query_tokenocr import query_similarity

    texts = [token["token"] for token in first["tokens"]]
    assert first["relevance"] == pytest.approx(float(query_similarity(expected["similarity_q2"], texts)[0].max()), abs=1e-4)
    assert len(first["boxes"]) == len(first["box_scores"]) and (out / first["picture"]).is_file()
    with Image.open(out / first["strip"]) as strip:  # all tokens side by side, one panel each
        assert strip.width >= 3 * 100 and strip.mode == "RGB"
    written = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    listed = {t[k] for image in summary["images"] for q in image["queries"] for t in q["tokens"] for k in ("heatmap", "mask")}
    listed |= {q[k] for image in summary["images"] for q in image["queries"] for k in ("strip", "picture")}
    assert written == listed
    assert any(t["boxes"] for q in summary["images"][0]["queries"] for t in q["tokens"])


def test_help_and_argument_errors_load_neither_torch_nor_transformers(tmp_path):
    script = (
        "import sys\nfrom tokenocr.cli import main, convert_main\n"
        "for command, argv in [(main, ['--help']), (main, ['similarity', '--help']), (convert_main, ['--help']),"
        " (main, ['search', '--help']), (main, ['demo', '--help']), (main, ['convert', '--help']),"
        " (main, ['similarity', '--image', 'a.png', '--query', 'x', '--out', 'o']),"
        " (main, ['similarity', '--model', 'm', '--image', 'a', '--query', 'x', '--out', 'o', '--threshold', 'nan'])]:\n"
        "    try:\n        command(argv)\n    except SystemExit:\n        pass\n"
        "print(sorted(name for name in ('torch', 'transformers') if name in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stderr


@pytest.mark.parametrize("option, value", [("--threshold", "nan"), ("--threshold", "inf"), ("--threshold", "1.5"),
                                           ("--threshold", "-2"), ("--threshold", "abc"), ("--pages", "3-1"),
                                           ("--pages", "x"), ("--max-tiles", "0"), ("--max-tiles", "1000000"),
                                           ("--dtype", "int8")])
def test_bad_arguments_are_refused_at_once(tmp_path, capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        run(tmp_path, option, value)
    assert exit_info.value.code == 2
    assert option in error_line(capsys)


def test_model_folder_code_runs_only_with_consent(tmp_path, converted, capsys):
    folder = tmp_path / "model"
    shutil.copytree(converted("tiny_seg", "float32"), folder)
    marker = tmp_path / "code-ran"
    for name in ("pipeline_tokenocr.py", "modeling_tokenocr.py", "processing_tokenocr.py"):
        planted = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
        (folder / name).write_text(planted + (folder / name).read_text())
    assert run(tmp_path, model=folder) == 0, capsys.readouterr().err
    assert not marker.exists()
    shutil.rmtree(tmp_path / "out")
    # A TokenOCR folder is served by the installed classes even with the flag (transformers prefers registered ones).
    assert run(tmp_path, "--trust-remote-code", model=folder) == 0, capsys.readouterr().err
    assert not marker.exists()
    shutil.rmtree(tmp_path / "out")
    # A model the package has no classes for (here a renamed fork) runs its own code, and only with the flag.
    for name in ("configuration_tokenocr.py", "config.json"):
        (folder / name).write_text((folder / name).read_text().replace('"tokenocr"', '"tokenocr_fork"'))
    assert run(tmp_path, model=folder) == 1
    assert "pass --trust-remote-code to run that code" in error_line(capsys) and not marker.exists()
    assert run(tmp_path, "--trust-remote-code", model=folder) == 0, capsys.readouterr().err
    assert marker.exists()


def test_a_model_folder_loads_with_the_installed_classes(tmp_path, converted):
    """The same maps as the original, through the installed classes (no remote code)."""
    assert run(tmp_path, model=converted("tiny_seg", "float32"), image=str(CASE.image_path("doc_wide.png")),
               query=["they are not"]) == 0
    tokens = json.loads((tmp_path / "out" / "summary.json").read_text())["images"][0]["queries"][0]["tokens"]
    expected = CASE.expected("doc_wide.png")["similarity_q2"]
    assert [t["score"] for t in tokens] == pytest.approx([float(m.max()) for m in expected], abs=1e-4)


def _bomb(path: Path) -> str:
    Image.new("1", (15000, 15000)).save(path)  # 225 megapixels: above PIL's decompression-bomb limit
    return str(path)


def _not_an_object(tmp_path: Path) -> str:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("[1, 2, 3]")
    return str(tmp_path / "m")


ONE_LINE_FAILURES = {
    "missing image": (lambda t: {"image": str(t / "missing.png")}, "missing.png"),
    "corrupt image": (lambda t: {"image": (t / "bad.png").write_bytes(b"\x89PNG nope") and str(t / "bad.png")}, "bad.png"),
    "decompression bomb": (lambda t: {"image": _bomb(t / "huge.png")}, "too large"),
    "unreachable URL": (lambda t: {"image": "http://127.0.0.1:9/page.png"}, "Cannot download image"),
    "folder as image": (lambda t: {"image": str(t)}, "is a folder"),
    "empty query": (lambda t: {"query": ["  "]}, "non-whitespace"),
    "query over the token cap": (lambda t: {"query": ["word " * 400]}, "at most 256 tokens"),
    "no such model": (lambda t: {"model": t / "no-model"}, "--model"),
    "config.json not an object": (lambda t: {"model": _not_an_object(t)}, "config"),
    "unknown device": (lambda t: {"args": ["--device", "bogus"]}, "--device 'bogus' is not a device"),
    "absent CUDA": (lambda t: {"args": ["--device", "cuda:7"]}, "not available"),
}


@pytest.mark.parametrize("failure", sorted(ONE_LINE_FAILURES))
def test_failures_are_one_line_and_write_nothing(tmp_path, capsys, failure):
    make, message = ONE_LINE_FAILURES[failure]
    given = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = run(tmp_path, *given.get("args", []), **{k: v for k, v in given.items() if k != "args"})
    assert code == 1
    line = error_line(capsys)
    assert message in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    import tokenocr.commands.similarity as command

    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(command.PictureWriter, "_save", exhausted)
    assert run(tmp_path) == 1
    assert "out of memory" in error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_undecodable_image_names_work(tmp_path, capsys):
    name = os.fsdecode(b"scan-\xff\xfe.png")
    shutil.copyfile(IMAGE, tmp_path / name)
    assert run(tmp_path, image=str(tmp_path / name)) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    assert summary["images"][0]["image"].endswith("scan-\ufffd\ufffd.png")


@pytest.mark.slow
def test_ctrl_c_during_start_up_is_one_line(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-m", "tokenocr.cli", "similarity", "--model", str(SEG), "--image", IMAGE, "--query", "x",
         "--out", str(tmp_path / "out")],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    time.sleep(1.5)  # parsing is done; torch and the model are loading
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode in INTERRUPTED_STATUSES, stderr
    assert stderr.strip().splitlines() == ["tokenocr: error: interrupted; nothing was written"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("problem", ["empty query", "not an image", "pages past the end"])
def test_input_mistakes_are_reported_before_the_model_loads(tmp_path, capsys, monkeypatch, problem):
    """With a model that cannot load here (an unknown hub id, offline), the input mistake is what is reported."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    image, query, extra = str(IMAGE), "x", []
    if problem == "empty query":
        query = " "
    elif problem == "not an image":
        image = str(tmp_path / "notes.png")
        Path(image).write_text("plain text")
    else:
        image = str(tmp_path / "two.pdf")
        page = Image.new("RGB", (60, 40), "white")
        page.save(image, format="PDF", save_all=True, append_images=[page])
        extra = ["--pages", "1-3"]
    started = time.perf_counter()
    code = main(["similarity", "--model", "nobody/no-such-model", "--image", image, "--query", query,
                 "--out", str(tmp_path / "out"), *extra])
    line = error_line(capsys)
    assert code == 1 and time.perf_counter() - started < 30
    expected = {"empty query": "non-whitespace character", "not an image": "neither an image nor a PDF",
                "pages past the end": "3"}[problem]
    assert expected in line and "nobody/no-such-model" not in line, line
    assert not (tmp_path / "out").exists()
