"""`tokenocr search`: many pages, one vision pass each, resumable, and the same output from one or two processes."""

import contextlib
import errno
import io
import json
import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from tokenocr.cli import main

from fixture_cases import FIXTURES, Case


SEG = FIXTURES / "tiny_seg" / "checkpoint"
CASE = Case("tiny_seg")
QUERIES = ["they are not", "x"]


@pytest.fixture
def pages(tmp_path):
    folder = tmp_path / "pages"
    folder.mkdir()
    for image in CASE.images:
        shutil.copyfile(CASE.image_path(image), folder / image)
    first, second = (Image.open(CASE.image_path(name)).convert("RGB") for name in ("doc_wide.png", "doc_tall.png"))
    first.save(folder / "scan.pdf", format="PDF", save_all=True, append_images=[second], resolution=72)
    return folder


def search(tmp_path, pages, *extra, out="results.jsonl"):
    return main(["search", "--model", str(SEG), "--images", str(pages), "--query", *QUERIES, "--out",
                 str(tmp_path / out), "--dpi", "72", *extra])


def read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_one_line_per_page_and_query_with_the_original_scores(tmp_path, pages, capsys):
    assert search(tmp_path, pages) == 0
    lines = read(tmp_path / "results.jsonl")
    keys = [(line["image"].rsplit("/", 1)[-1], line["page"], line["query"]) for line in lines]
    files = sorted(CASE.images + ["scan.pdf"])
    expected_pages = [(f, p) for f in files for p in ((1, 2) if f.endswith(".pdf") else (None,))]
    assert keys == [(f, p, q) for f, p in expected_pages for q in QUERIES]
    wide = next(line for line in lines if line["image"].endswith("doc_wide.png") and line["query"] == "they are not")
    reference = CASE.expected("doc_wide.png")["similarity_q2"]
    assert [t["score"] for t in wide["tokens"]] == pytest.approx([float(m.max()) for m in reference], abs=1e-4)
    # relevance: the query's score, from the original's token maps where the tokens stand side by side
    from tokenocr.processing.query_tokenocr import query_similarity

    texts = [t["token"] for t in wide["tokens"]]
    assert wide["relevance"] == pytest.approx(float(query_similarity(reference, texts)[0].max()), abs=1e-4)
    assert wide["box"] is None or (len(wide["box"]) == 4 and wide["box_score"] <= wide["relevance"] + 1e-6)
    printed = capsys.readouterr().out
    assert "'they are not':" in printed and "'x':" in printed


def test_resume_skips_finished_pages_and_completes_the_rest(tmp_path, pages, capsys):
    assert search(tmp_path, pages, out="full.jsonl") == 0
    full = (tmp_path / "full.jsonl").read_text(encoding="utf-8")
    cut = full.splitlines(keepends=True)
    (tmp_path / "results.jsonl").write_text("".join(cut[:5]) + cut[5][:20], encoding="utf-8")  # killed mid-line
    assert search(tmp_path, pages) == 1
    assert "pass --resume" in capsys.readouterr().err
    assert search(tmp_path, pages, "--resume") == 0
    assert "scored 5 of 7 pages" in capsys.readouterr().err  # pages 1-2 finished; page 3 had one query of two
    resumed = read(tmp_path / "results.jsonl")
    assert [(l["image"], l["page"], l["query"]) for l in resumed] == [
        (l["image"], l["page"], l["query"]) for l in read(tmp_path / "full.jsonl")]
    for a, b in zip(resumed, read(tmp_path / "full.jsonl")):
        assert a["relevance"] == pytest.approx(b["relevance"], abs=1e-6)


def test_refuses_what_it_did_not_write(tmp_path, pages, capsys):
    (tmp_path / "notes.jsonl").write_text('{"something": "else"}\n')
    assert search(tmp_path, pages, "--resume", out="notes.jsonl") == 1
    assert "not an earlier output of tokenocr search" in capsys.readouterr().err
    assert (tmp_path / "notes.jsonl").read_text() == '{"something": "else"}\n'
    # A file without a final newline is not a half-written line of ours: never truncated.
    (tmp_path / "keep.json").write_text('{"k":1}')
    assert search(tmp_path, pages, "--resume", out="keep.json") == 1
    assert "not an earlier output of tokenocr search" in capsys.readouterr().err
    assert (tmp_path / "keep.json").read_text() == '{"k":1}'
    # Lines that start like ours but lack a field, or hold one of another type: refused at once, not after scoring.
    for foreign in ('{"image": "a.png", "page": null, "query": "x"}', '{"image": "a.png", "page": "1", "query": "x", '
                    '"relevance": 0.5, "tokens": []}', '[1, 2]', '{"image": "a.png", "page": null, "query": "x", '
                    '"relevance": true, "tokens": []}'):
        (tmp_path / "like.jsonl").write_text(foreign + "\n")
        assert search(tmp_path, pages, "--resume", out="like.jsonl") == 1
        assert "not an earlier output of tokenocr search" in capsys.readouterr().err
        assert (tmp_path / "like.jsonl").read_text() == foreign + "\n"
    # Never an input, never something that is not a regular file.
    input_image = pages / "doc_wide.png"
    before = input_image.read_bytes()
    assert main(["search", "--model", str(SEG), "--images", str(pages), "--query", "x", "--out", str(input_image),
                 "--resume"]) == 1
    assert "is also one of the --images inputs" in capsys.readouterr().err and input_image.read_bytes() == before
    assert main(["search", "--model", str(SEG), "--images", str(pages), "--query", "x", "--out", "/dev/zero",
                 "--resume"]) == 1
    assert "is not a regular file" in capsys.readouterr().err
    assert main(["search", "--model", str(SEG), "--images", str(tmp_path / "none*.png"), "--query", "x",
                 "--out", str(tmp_path / "o.jsonl")]) == 1
    assert "names no image" in capsys.readouterr().err


@pytest.mark.slow
def test_two_processes_give_the_single_process_output(tmp_path, pages):
    assert search(tmp_path, pages, out="one.jsonl") == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "tokenocr.cli", "search",
               "--model", str(SEG), "--images", str(pages), "--query", *QUERIES, "--out", str(tmp_path / "two.jsonl"),
               "--dpi", "72"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = read(tmp_path / "one.jsonl"), read(tmp_path / "two.jsonl")
    assert [(l["image"], l["page"], l["query"]) for l in two] == [(l["image"], l["page"], l["query"]) for l in one]
    for a, b in zip(one, two):
        assert [t["boxes"] for t in a["tokens"]] == [t["boxes"] for t in b["tokens"]]
        assert [t["score"] for t in a["tokens"]] == pytest.approx([t["score"] for t in b["tokens"]], abs=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.jsonl", "pages", "two.jsonl"]  # part files merged away


def test_a_second_search_on_the_same_output_is_refused(tmp_path, pages, capsys):
    import fcntl

    assert search(tmp_path, pages) == 0
    before = (tmp_path / "results.jsonl").read_bytes()
    with open(tmp_path / "results.jsonl", "rb") as other:  # another search holding the file
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        assert search(tmp_path, pages, "--query", "more", "--resume") == 1
    assert "is being written by another tokenocr search" in capsys.readouterr().err
    assert (tmp_path / "results.jsonl").read_bytes() == before


def test_unreadable_pages_are_skipped_and_named_and_collections_are_tidy(tmp_path, pages, capsys):
    (pages / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # corrupt, with an image extension
    (pages / "README.txt").write_text("not an image")                   # no image extension: not an input
    (pages / "damaged.pdf").write_bytes(b"%PDF-1.4\n this is not a PDF")  # fails when its pages are counted
    (pages / "sub").mkdir()
    (pages / "sub" / "loop").symlink_to(pages)                           # a link back up: never followed
    assert main(["search", "--model", str(SEG), "--images", str(pages), str(pages / "doc_wide.png"), "--query", "x",
                 "--out", str(tmp_path / "r.jsonl"), "--dpi", "72"]) == 0
    err = capsys.readouterr().err
    assert "broken.png" in err and "damaged.pdf" in err and "skipped 2 unreadable" in err
    lines = read(tmp_path / "r.jsonl")
    names = [line["image"].rsplit("/", 1)[-1] for line in lines]
    assert "broken.png" not in names and "README.txt" not in names
    assert names.count("doc_wide.png") == 1  # named twice (folder and file), scored once
    assert len(lines) == len(CASE.images) + 2  # every readable image, and the PDF's two pages


def test_globs_never_descend_links_to_folders(tmp_path, monkeypatch):
    from tokenocr.commands.search import list_sources

    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/x.png", "a/b/y.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "a" / "b" / "up").symlink_to(tmp_path / "a")  # two loops: glob.glob's `**` would walk them for ever
    (tmp_path / "a" / "b" / "top").symlink_to(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert list_sources(["**/*.png"]) == ["a/b/y.png", "a/x.png"]
    assert list_sources(["a/**"]) == ["a/b/y.png", "a/x.png"]
    # As glob.glob otherwise: hidden names only when the pattern names them, `**` inside a name is `*`, the
    # pattern's fixed part spelled as given (so earlier outputs' names still match on --resume).
    (tmp_path / "a" / ".hidden.png").write_bytes(b"")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "z.png").write_bytes(b"")
    assert list_sources(["a/*.png"]) == ["a/x.png"] and list_sources(["a/.*.png"]) == ["a/.hidden.png"]
    assert list_sources(["./a/*.png"]) == ["./a/x.png"] and list_sources(["a/**.png"]) == ["a/x.png"]
    assert "z.png" not in " ".join(list_sources(["**/*.png"]))
    assert list_sources([str(tmp_path / "a" / "**" / "*.png")]) == [
        str(tmp_path / "a" / "b" / "y.png"), str(tmp_path / "a" / "x.png")]


def test_names_that_are_not_utf8_or_hold_escape_codes_are_scored_resumed_and_shown_escaped(tmp_path, pages, capsys):
    import os

    folder = tmp_path / "odd"
    folder.mkdir()
    source = sorted(pages.glob("*.png"))[0]
    for raw in (b"scan-\xff.png", b"bell\x1b[31m.png"):
        shutil.copy(source, os.path.join(os.fsencode(folder), raw))
    out = tmp_path / "r.jsonl"
    arguments = ["search", "--model", str(SEG), "--images", str(folder), "--out", str(out), "--query"]
    assert main(arguments + ["x"]) == 0
    shown = capsys.readouterr().out
    assert "\x1b" not in shown and "\\x1b[31m.png" in shown and "\\udcff" in shown
    lines = read(out)  # valid UTF-8 JSON throughout
    assert sorted(os.fsencode(line["image"]).rsplit(b"/", 1)[-1] for line in lines) == [b"bell\x1b[31m.png",
                                                                                         b"scan-\xff.png"]
    assert main(arguments + ["x", "more", "--resume"]) == 0  # the odd names are recognised as done
    assert len(read(out)) == 4


def test_a_long_pdf_is_opened_once_to_count_and_once_to_render_its_pages(tmp_path, monkeypatch):
    import pypdfium2

    page = Image.open(CASE.image_path("doc_wide.png")).convert("RGB")
    page.save(tmp_path / "long.pdf", format="PDF", save_all=True, append_images=[page] * 5, resolution=72)
    openings = []
    opener = pypdfium2.PdfDocument
    monkeypatch.setattr(pypdfium2, "PdfDocument", lambda *args, **kwargs: openings.append(1) or opener(*args, **kwargs))
    assert main(["search", "--model", str(SEG), "--images", str(tmp_path / "long.pdf"), "--query", "x",
                 "--out", str(tmp_path / "r.jsonl"), "--dpi", "72"]) == 0
    assert [line["page"] for line in read(tmp_path / "r.jsonl")] == [1, 2, 3, 4, 5, 6]
    assert len(openings) == 2  # not once per page: a 10,000-page document would be read 10,000 times


@pytest.mark.parametrize("pages_done", [0, 2])
def test_an_interrupted_search_keeps_its_finished_pages_and_says_so(tmp_path, pages, capsys, monkeypatch,
                                                                    pages_done):
    from tokenocr.commands import search as search_command

    written = search_command.page_lines

    def interrupt_after_some_pages(*args, **kwargs):
        if len(calls) == pages_done:
            raise KeyboardInterrupt
        calls.append(1)
        return written(*args, **kwargs)

    calls = []
    monkeypatch.setattr(search_command, "page_lines", interrupt_after_some_pages)
    assert search(tmp_path, pages) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "tokenocr: error: interrupted; the lines of the pages finished so far stay in --out (continue with --resume)"
        if pages_done else "tokenocr: error: interrupted; nothing was written")
    out = tmp_path / "results.jsonl"
    if pages_done:
        assert len(read(out)) == pages_done * len(QUERIES)
    else:  # stopped before its first page: no empty file left to block a plain rerun
        assert not out.exists()
    monkeypatch.setattr(search_command, "page_lines", written)
    assert search(tmp_path, pages, *(["--resume"] if pages_done else [])) == 0
    assert len(read(out)) == (len(CASE.images) + 2) * len(QUERIES)


def test_a_search_whose_every_page_is_unreadable_ends_normally(tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "r.jsonl"
    assert main(["search", "--model", str(SEG), "--images", str(tmp_path / "bad.png"), "--query", "x",
                 "--out", str(out)]) == 0
    assert "skipped 1 unreadable" in capsys.readouterr().err
    assert out.read_bytes() == b""  # an output with no line, which --resume can continue


def test_a_pdf_that_loses_pages_during_a_search_skips_only_the_missing_ones(tmp_path):
    from tokenocr.commands import search as search_command

    page = Image.open(CASE.image_path("doc_wide.png")).convert("RGB")
    page.save(tmp_path / "short.pdf", format="PDF", save_all=True, append_images=[page] * 2, resolution=72)
    # As if a 5-page PDF had been replaced by this 3-page one after its pages were counted.
    todo = [{"image": str(tmp_path / "short.pdf"), "page": number} for number in [1, 2, 3, 4, 5]]
    outcomes = list(search_command._read(todo, 72))
    assert [entry["page"] for entry, _ in outcomes] == [page.number for _, page in outcomes] == [1, 2, 3, 4, 5]
    assert [page.image is not None for _, page in outcomes] == [True, True, True, False, False]
    assert all("has 3 pages" in str(page.error) for _, page in outcomes[3:])


# --------------------------------------------------------------------------------------------------------------------
# Output safety: part files never through links, resume reads with a bound, write failures leave a resumable file
# --------------------------------------------------------------------------------------------------------------------


class FakeState:
    """accelerate's PartialState as one of `count` processes sees it, the processes run one after the other here."""

    def __init__(self, index, count=2):
        self.process_index, self.num_processes, self.is_main_process = index, count, index == 0

    @contextlib.contextmanager
    def split_between_processes(self, items):
        share = -(-len(items) // self.num_processes)
        yield items[self.process_index * share:(self.process_index + 1) * share]

    def wait_for_everyone(self):
        pass


def fake_score_pages(finder, todo, args, seen, write, skipped):
    """Scores without a model: one line per page and query."""
    from tokenocr.commands.search import _encoded

    for entry in todo:
        write([_encoded({"image": entry["image"], "page": entry["page"], "query": query, "relevance": 0.5,
                         "box": None, "box_score": None, "tokens": []}) for query in args.query])
    return len(todo)


def fake_work(out, pages=5):
    return {"out": out, "todo": [{"image": f"p{index}.png", "page": None} for index in range(pages)], "seen": {},
            "length": 0, "size": None, "pages": pages, "skipped": []}


def fake_args(out):
    import argparse

    return argparse.Namespace(query=["x"], top_k=1, out=str(out), resume=False)


def test_part_files_of_several_processes_are_merged_in_page_order(tmp_path, monkeypatch, capsys):
    from tokenocr.commands import search as search_command

    monkeypatch.setattr(search_command, "score_pages", fake_score_pages)
    out = tmp_path / "r.jsonl"
    for index in (1, 0):  # the main process merges once every process is done
        search_command.run(fake_args(out), None, FakeState(index), fake_work(out))
    assert [line["image"] for line in read(out)] == [f"p{index}.png" for index in range(5)]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["r.jsonl"]


@pytest.mark.parametrize("target", ["file", "nowhere"])
def test_a_link_planted_at_a_part_file_name_is_never_followed(tmp_path, monkeypatch, capsys, target):
    from tokenocr.commands import search as search_command
    from tokenocr.outputs import OutputError

    monkeypatch.setattr(search_command, "score_pages", fake_score_pages)
    out, victim = tmp_path / "r.jsonl", tmp_path / "victim.txt"
    if target == "file":
        victim.write_text("precious\n")
    for index in (0, 1):
        planted = tmp_path / f".r.jsonl.part-{index}-of-2"
        planted.symlink_to(victim)
        with pytest.raises(OutputError, match="something is already there") as error:
            search_command.run(fake_args(out), None, FakeState(index), fake_work(out))
        assert str(planted) in str(error.value) and "\n" not in str(error.value)
        assert planted.is_symlink()  # left as it was
        planted.unlink()
    assert victim.read_text() == "precious\n" if target == "file" else not victim.exists()
    assert not out.exists()


def test_a_part_file_swapped_for_a_link_before_the_merge_is_not_read(tmp_path, monkeypatch):
    from tokenocr.commands import search as search_command
    from tokenocr.outputs import OutputError

    monkeypatch.setattr(search_command, "score_pages", fake_score_pages)
    out, secret = tmp_path / "r.jsonl", tmp_path / "secret.txt"
    secret.write_text('{"image": "secret"}\n')
    search_command.run(fake_args(out), None, FakeState(1), fake_work(out))
    part = tmp_path / ".r.jsonl.part-1-of-2"
    part.unlink()
    part.symlink_to(secret)
    with pytest.raises(OutputError, match="cannot read"):
        search_command.run(fake_args(out), None, FakeState(0), fake_work(out))
    assert "secret" not in (out.read_text() if out.exists() else "")
    assert secret.read_text() == '{"image": "secret"}\n'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["r.jsonl", "secret.txt"]  # parts removed, not targets


def test_a_failing_process_removes_its_own_part_file(tmp_path, monkeypatch):
    from tokenocr.commands import search as search_command

    def fail(*args):
        raise RuntimeError("boom")

    monkeypatch.setattr(search_command, "score_pages", fail)
    out = tmp_path / "r.jsonl"
    with pytest.raises(RuntimeError):
        search_command.run(fake_args(out), None, FakeState(1), fake_work(out))
    assert list(tmp_path.iterdir()) == []


def test_resume_reads_lines_with_a_bound(tmp_path, monkeypatch):
    import tracemalloc

    from tokenocr.commands import search as search_command
    from tokenocr.outputs import OutputError

    line = search_command._encoded({"image": "a.png", "page": None, "query": "x", "relevance": 0.5, "box": None,
                                    "box_score": None, "tokens": [{"token": "x", "boxes": [[1, 2, 3, 4]] * 200}]})
    ours = tmp_path / "ours.jsonl"
    ours.write_bytes(line * 2)
    assert search_command.read_earlier_output(ours)[1] == 2 * len(line)
    monkeypatch.setattr(search_command, "MAX_LINE_BYTES", len(line) - 1)
    with pytest.raises(OutputError, match="not an earlier output"):  # a line longer than any line of ours
        search_command.read_earlier_output(ours)
    with pytest.raises(OutputError, match="more than the"):  # and none of ours is written longer
        search_command._encoded(json.loads(line))
    # A huge unterminated line that starts like ours is refused without being read into memory.
    monkeypatch.setattr(search_command, "MAX_LINE_BYTES", 1 << 20)
    huge = tmp_path / "huge.jsonl"
    with open(huge, "wb") as file:
        file.write(line + search_command.LINE_START + b'"')
        file.truncate(200 << 20)  # 200 MB, sparse
    tracemalloc.start()
    try:
        with pytest.raises(OutputError, match="not an earlier output"):
            search_command.read_earlier_output(huge)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak


@pytest.mark.parametrize("torn", [b'{"image": "/a/b.png", "pa', '{"image": "/a/€'.encode()[:-1],
                                  b'{"image": "a.png", "page": null, "query": "x", "relevance": 0.5, "tokens": []}'])
@pytest.mark.parametrize("after_lines", [0, 2])
def test_resume_cuts_a_torn_last_line_of_ours_even_the_first(tmp_path, torn, after_lines):
    from tokenocr.commands.search import _encoded, read_earlier_output

    line = _encoded({"image": "a.png", "page": None, "query": "x", "relevance": 0.5, "box": None, "box_score": None,
                     "tokens": []})
    path = tmp_path / "r.jsonl"
    path.write_bytes(line * after_lines + torn)
    seen, length, size = read_earlier_output(path)
    assert length == len(line) * after_lines and size == path.stat().st_size
    assert seen == ({("a.png", None): {"x"}} if after_lines else {})


def test_a_short_torn_line_is_cut_only_after_lines_of_ours(tmp_path):
    """`{` alone could begin a line of ours, but a file holding only that is somebody else's: never cut."""
    from tokenocr.commands.search import _encoded, read_earlier_output
    from tokenocr.outputs import OutputError

    line = _encoded({"image": "a.png", "page": None, "query": "x", "relevance": 0.5, "box": None, "box_score": None,
                     "tokens": []})
    path = tmp_path / "r.jsonl"
    path.write_bytes(line + b'{')
    assert read_earlier_output(path)[1] == len(line)
    for content in (b'{', b'{"image": '):
        path.write_bytes(content)
        with pytest.raises(OutputError, match="not an earlier output"):
            read_earlier_output(path)


@pytest.mark.parametrize("content", [b'{"image": "a.png", "other": 1}', b'{"image": "a\xff', b'{"k": 1', b"[1, 2",
                                     b'{"image": "a.png", "labels": [1, 2', b'{"image": 17, "page"'])
def test_resume_still_refuses_an_unterminated_line_that_is_not_ours(tmp_path, content):
    from tokenocr.commands.search import read_earlier_output
    from tokenocr.outputs import OutputError

    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    with pytest.raises(OutputError, match="not an earlier output"):
        read_earlier_output(path)


class FullDisk(io.FileIO):
    """A file on a disk with `room` bytes left; once it is full, `truncate` fails too where `cannot_cut`."""

    room, cannot_cut = 0, False

    def write(self, data):
        if FullDisk.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = super().write(bytes(data)[:FullDisk.room])
        FullDisk.room -= written
        return written

    def truncate(self, size=None):
        if FullDisk.cannot_cut and FullDisk.room <= 0:  # cutting back after the failure fails as well
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return super().truncate(size)


@pytest.mark.parametrize("room, cannot_cut", [(60, True), (3000, False), (3000, True)])
def test_a_full_disk_ends_in_one_line_naming_the_output_and_resume_continues_it(tmp_path, pages, capsys, monkeypatch,
                                                                                 room, cannot_cut):
    from tokenocr.commands import search as search_command

    monkeypatch.setattr(FullDisk, "room", room)
    monkeypatch.setattr(FullDisk, "cannot_cut", cannot_cut)
    monkeypatch.setattr(search_command, "_create",
                        lambda path: FullDisk(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb"))
    out = tmp_path / "results.jsonl"
    assert search(tmp_path, pages) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"tokenocr: error: cannot write --out '{out}' (No space left on device)"), err
    assert "--resume" in err[-1]
    data = out.read_bytes()
    assert data.endswith(b"\n") or cannot_cut  # cut back to its complete lines where it can be
    assert len(data) <= room
    monkeypatch.undo()
    assert search(tmp_path, pages) == 1  # a plain rerun says how to continue
    assert "pass --resume" in capsys.readouterr().err
    assert search(tmp_path, pages, "--resume") == 0
    keys = [(line["image"].rsplit("/", 1)[-1], line["page"], line["query"]) for line in read(out)]
    files = sorted(CASE.images + ["scan.pdf"])
    expected_pages = [(f, p) for f in files for p in ((1, 2) if f.endswith(".pdf") else (None,))]
    assert keys == [(f, p, q) for f, p in expected_pages for q in QUERIES]


def test_a_full_disk_under_a_part_file_is_one_line_and_leaves_no_part(tmp_path, monkeypatch):
    from tokenocr.commands import search as search_command
    from tokenocr.outputs import OutputError

    monkeypatch.setattr(search_command, "score_pages", fake_score_pages)
    monkeypatch.setattr(FullDisk, "room", 100)
    monkeypatch.setattr(search_command, "_create",
                        lambda path: FullDisk(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "wb"))
    out = tmp_path / "r{0}.jsonl"  # braces in the name are text, not a format
    with pytest.raises(OutputError) as error:
        search_command.run(fake_args(out), None, FakeState(1), fake_work(out))
    message = str(error.value)
    assert f"cannot write '{tmp_path / '.r{0}.jsonl.part-1-of-2'}', a part file of --out '{out}'" in message
    assert "No space left on device" in message and "--resume" in message and "\n" not in message
    assert list(tmp_path.iterdir()) == []
