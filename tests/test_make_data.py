"""`tokenocr make-data`: token masks from PDF text layers (PDFs written by hand here, so no tool is needed)."""

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pypdfium2")
pytest.importorskip("datasets")

from tokenocr.training.data import load_token_mask_dataset, read_metadata  # noqa: E402
from tokenocr.training.pdf_data import find_pdfs, make_data, scan_augmentation  # noqa: E402


DEMO_MODEL = Path(__file__).resolve().parents[1] / "models" / "tokenocr-tiny-synthetic"


def write_pdf(path: Path, pages: list[dict]) -> Path:
    """
    A PDF written byte by byte: each page `{"lines": [(x, y, size, text)], "rotate": 0, "crop": None,
    "rectangle": False}` in Helvetica (a standard font: PDFium knows its widths and Unicode), on a Letter media box.
    """
    objects = {1: b"<< /Type /Catalog /Pages 2 0 R >>", 3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
                                                            b"/Encoding /WinAnsiEncoding >>"}
    kids = []
    for number, page in enumerate(pages):
        page_id, content_id = 4 + 2 * number, 5 + 2 * number
        kids.append(f"{page_id} 0 R")
        stream = "".join(f"BT /F1 {size} Tf {x} {y} Td ({text}) Tj ET\n" for x, y, size, text in page.get("lines", []))
        if page.get("rectangle"):
            stream += "0.2 g 100 100 200 50 re f\n"
        data = stream.encode("latin-1")
        objects[content_id] = b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"
        extra = f" /Rotate {page['rotate']}" if page.get("rotate") else ""
        if page.get("crop"):
            extra += " /CropBox [{} {} {} {}]".format(*page["crop"])
        objects[page_id] = (f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792]{extra} /Resources << /Font << "
                            f"/F1 3 0 R >> >> /Contents {content_id} 0 R >>").encode()
    objects[2] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(pages)} >>".encode()
    out, offsets = bytearray(b"%PDF-1.4\n"), {}
    for number in sorted(objects):
        offsets[number] = len(out)
        out += b"%d 0 obj\n" % number + objects[number] + b"\nendobj\n"
    xref = len(out)
    count = max(objects) + 1
    out += b"xref\n0 %d\n0000000000 65535 f \n" % count
    out += b"".join(b"%010d 00000 n \n" % offsets[n] for n in range(1, count))
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (count, xref)
    path.write_bytes(bytes(out))
    return path


LINES = [(72, 700, 28, "Invoice 2024"), (72, 640, 20, "Bank account balance"), (300, 500, 14, "due date 12/05")]


@pytest.fixture(scope="module")
def char_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_MODEL)


def _ink_inside_masks(image: Image.Image, mask: np.ndarray, grow: int = 1) -> float:
    """The share of dark pixels of the page that lie in some token's mask (grown by `grow` pixels)."""
    from tokenocr.training.synthetic import grow_mask

    ink = np.asarray(image.convert("L")) < 110
    return float(grow_mask(mask > 0, grow)[ink].mean())


def _pages(folder: Path):
    return [(Image.open(r["image"]), np.asarray(Image.open(r["mask"])), r) for r in read_metadata(folder)]


@pytest.mark.parametrize("page", [{}, {"rotate": 90}, {"crop": (50, 300, 560, 760)}], ids=["plain", "rotated", "cropped"])
def test_masks_lie_on_the_characters(tmp_path, char_tokenizer, page):
    pdf = write_pdf(tmp_path / "a.pdf", [{"lines": LINES, **page}])
    summary = make_data([pdf], char_tokenizer, tmp_path / "out", dpi=100)
    assert summary.written == 1 and not summary.skipped
    [(image, mask, record)] = _pages(tmp_path / "out")
    assert image.size == (mask.shape[1], mask.shape[0])
    if page.get("rotate"):
        assert image.width > image.height  # a landscape rendering of a portrait page
    # Every dark pixel of the rendered text is inside a token's mask, and every token's mask holds ink.
    assert _ink_inside_masks(image, mask) > 0.97
    ink = np.asarray(image.convert("L")) < 110
    for token in record["tokens"]:
        assert ink[mask == token["mask_index"]].any(), token
    texts = "".join(token["text"] for token in record["tokens"])
    expected = "".join(text for *_, text in LINES).replace(" ", "")
    if page.get("crop"):
        assert set(texts) <= set(expected)
    else:  # the same characters (a rotated page's reading order is PDFium's)
        assert sorted(texts) == sorted(expected)
    word = next(word for word in record["words"] if word["text"] == "Bank")
    left, top, right, bottom = (round(v) for v in word["box"])
    assert ink[top:bottom, left:right].sum() > 30


def _bpe_tokenizer():
    from tokenocr.training.tokenizer import BYTE_FALLBACK_LAYOUT, train_tokenizer

    lines = [" ".join(text for *_, text in LINES)] * 20 + [" Invoice account balance due date"] * 20
    return train_tokenizer(lines, vocab_size=BYTE_FALLBACK_LAYOUT + 60)


def _byte_level_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator([" ".join(text for *_, text in LINES)] * 10,
                                  trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer)


@pytest.mark.parametrize("kind", ["sentencepiece-bpe", "byte-level-bpe"])
def test_every_tokenizer_kind_gives_token_masks_on_their_characters(tmp_path, kind):
    tokenizer = _bpe_tokenizer() if kind == "sentencepiece-bpe" else _byte_level_tokenizer()
    make_data([write_pdf(tmp_path / "a.pdf", [{"lines": LINES}])], tokenizer, tmp_path / "out", dpi=100)
    [(image, mask, record)] = _pages(tmp_path / "out")
    assert _ink_inside_masks(image, mask) > 0.97
    assert any(len(token["text"].strip()) > 1 for token in record["tokens"])  # merged pieces, not characters
    for token in record["tokens"]:
        assert token["text"] in record["text"]
        assert tokenizer.decode([token["id"]]).strip() == token["text"].strip()


def test_skips_are_counted_with_their_reason_and_pages_selected(tmp_path, char_tokenizer):
    good = write_pdf(tmp_path / "good.pdf", [{"lines": LINES}, {"rectangle": True}, {"lines": LINES[:1]}])
    damaged = tmp_path / "damaged.pdf"
    damaged.write_bytes(b"%PDF-1.4\n" + bytes(random.Random(0).randrange(256) for _ in range(300)))
    summary = make_data([good, damaged], char_tokenizer, tmp_path / "out", pages="2-4", dpi=72)
    assert summary.written == 1
    assert summary.skipped == {"no text layer": 1, "no such page": 1, "damaged or unreadable file": 1}
    records = [json.loads(line) for line in (tmp_path / "out" / "metadata.jsonl").read_text().splitlines()]
    assert [r["source"]["page"] for r in records] == [3]


def test_a_resumed_run_keeps_finished_pages_and_cuts_a_torn_line(tmp_path, char_tokenizer):
    first = write_pdf(tmp_path / "first.pdf", [{"lines": LINES}])
    second = write_pdf(tmp_path / "second.pdf", [{"lines": LINES[1:]}])
    out = tmp_path / "out"
    make_data([first], char_tokenizer, out, dpi=72)
    with open(out / "metadata.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"image": "images/000001.png", "mask"')  # a line cut short by a kill
    summary = make_data([first, second], char_tokenizer, out, dpi=72)
    assert summary.written == 2
    records = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["source"]["file"] for r in records] == [str(first), str(second)]
    assert len(load_token_mask_dataset(out)) == 2


def test_scan_and_photo_looks_move_the_masks_with_the_page(tmp_path, char_tokenizer):
    make_data([write_pdf(tmp_path / "a.pdf", [{"lines": LINES}])], char_tokenizer, tmp_path / "out", dpi=100)
    [(image, mask, _)] = _pages(tmp_path / "out")
    for kind in ("scan", "photo"):
        for seed in range(3):
            looked, moved = scan_augmentation(image.convert("RGB"), mask, random.Random(seed), kind)
            assert looked.size == image.size and moved.shape == mask.shape and moved.dtype == np.uint16
            assert set(np.unique(moved)) <= set(np.unique(mask))
            # The ink stays on the masks (blur and noise move a few border pixels).
            assert _ink_inside_masks(looked, moved, grow=2) > 0.9
    with pytest.raises(ValueError, match="augmentation"):
        scan_augmentation(image, mask, random.Random(0), "sepia")


def test_find_pdfs_searches_folders_and_refuses_missing_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    write_pdf(tmp_path / "sub" / "b.pdf", [{"lines": LINES}])
    write_pdf(tmp_path / "a.PDF", [{"lines": LINES}])
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in find_pdfs([tmp_path])] == ["a.PDF", "b.pdf"]
    with pytest.raises(FileNotFoundError):
        find_pdfs([tmp_path / "missing.pdf"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No PDF"):
        find_pdfs([tmp_path / "empty"])


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "tokenocr.cli", "make-data", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_command_writes_a_new_folder_resumes_and_refuses_what_it_did_not_make(tmp_path):
    pdf = write_pdf(tmp_path / "a.pdf", [{"lines": LINES}, {"lines": LINES[:2]}])
    done = _cli(pdf, "--model", DEMO_MODEL, "--output", "data", "--dpi", "72", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "2 pages written" in done.stderr and len(read_metadata(tmp_path / "data")) == 2
    assert json.loads((tmp_path / "data" / "make-data.json").read_text())["pages_written"] == 2
    again = _cli(pdf, "--model", DEMO_MODEL, "--output", "data", cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr and again.stderr.count("\n") == 1
    resume = _cli(pdf, "--model", DEMO_MODEL, "--output", "other", "--resume", cwd=tmp_path)
    assert resume.returncode == 1 and "no interrupted make-data run" in resume.stderr
    (tmp_path / ".other.make-data").mkdir()  # not ours: never touched
    foreign = _cli(pdf, "--model", DEMO_MODEL, "--output", "other", cwd=tmp_path)
    assert foreign.returncode == 1 and "was not made by make-data" in foreign.stderr
    assert (tmp_path / ".other.make-data").is_dir()
    # An interrupted run's folder (marked as make-data's) is continued only with --resume and the same settings.
    (tmp_path / ".third.make-data").mkdir()
    settings = {"pdfs": [str(pdf)], "model": str(DEMO_MODEL), "pages": None, "dpi": 100, "augment": "none", "seed": 0}
    (tmp_path / ".third.make-data" / ".tokenocr-make-data").write_text(json.dumps(settings))
    plain = _cli(pdf, "--model", DEMO_MODEL, "--output", "third", cwd=tmp_path)
    assert plain.returncode == 1 and "continue it with --resume" in plain.stderr
    other = _cli(pdf, "--model", DEMO_MODEL, "--output", "third", "--resume", "--dpi", "72", cwd=tmp_path)
    assert other.returncode == 1 and "other settings (dpi)" in other.stderr and "'.third.make-data'" in other.stderr
    same = _cli(pdf, "--model", DEMO_MODEL, "--output", "third", "--resume", "--dpi", "100", cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    assert len(read_metadata(tmp_path / "third")) == 2 and not (tmp_path / ".third.make-data").exists()
    bad = _cli(tmp_path / "nothing.pdf", "--model", DEMO_MODEL, "--output", "x", cwd=tmp_path)
    assert bad.returncode == 1 and "does not exist" in bad.stderr and not (tmp_path / "x").exists()


def test_words_in_a_dataset_line_are_checked(tmp_path, char_tokenizer):
    make_data([write_pdf(tmp_path / "a.pdf", [{"lines": LINES}])], char_tokenizer, tmp_path / "out", dpi=72)
    metadata = tmp_path / "out" / "metadata.jsonl"
    record = json.loads(metadata.read_text())
    assert {"text": "Invoice", "box": pytest.approx(record["words"][0]["box"])} == record["words"][0]
    record["words"] = [{"text": "Invoice", "box": [1, 2, "x", 4]}]
    metadata.write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="line 1: 'words'"):
        read_metadata(tmp_path / "out")
