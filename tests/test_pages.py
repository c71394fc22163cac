"""The one page reader (`processing/pages_tokenocr.py`): every input as RGB pages, one at a time, one-line errors."""

import http.server
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

from tokenocr.processing import pages_tokenocr
from tokenocr.processing.pages_tokenocr import Page, is_pdf, page_numbers, read_pages


def colour_page(colour, size=(120, 80)) -> Image.Image:
    return Image.new("RGB", size, colour)


def make_pdf(path, pages) -> str:
    pages[0].save(path, format="PDF", save_all=True, append_images=pages[1:], resolution=72)
    return str(path)


def test_every_kind_of_input_is_one_page_in_order(tmp_path):
    png = tmp_path / "a.png"
    colour_page((255, 0, 0)).save(png)
    pdf = make_pdf(tmp_path / "b.pdf", [colour_page((0, 255, 0)), colour_page((0, 0, 255))])
    array = np.full((30, 40, 3), 200, dtype=np.uint8)
    tensor = torch.zeros(3, 20, 10)
    pages = list(read_pages([str(png), pdf, colour_page((9, 9, 9)), array, tensor], dpi=72))
    assert [(page.index, page.number) for page in pages] == [(0, None), (1, 1), (1, 2), (2, None), (3, None), (4, None)]
    assert all(page.image.mode == "RGB" and page.error is None for page in pages)
    assert pages[0].image.getpixel((5, 5)) == (255, 0, 0)
    assert pages[2].image.getpixel((5, 5))[2] > 200  # the PDF's second page is the blue one
    assert pages[4].image.size == (40, 30) and pages[5].image.size == (10, 20)
    assert pages[1].label.endswith("b.pdf' page 1")


def test_pdf_page_ranges_and_a_pdf_given_as_bytes(tmp_path):
    pdf = make_pdf(tmp_path / "c.pdf", [colour_page((i * 40, 0, 0)) for i in range(5)])
    assert [page.number for page in read_pages([pdf], "2-3,5", 72)] == [2, 3, 5]
    data = open(pdf, "rb").read()
    assert [page.number for page in read_pages([data], "4-", 72)] == [4, 5]
    with pytest.raises(ValueError, match="has 5 pages; pages 6-6 were asked for"):
        list(read_pages([pdf], "6", 72))


def test_a_pdf_by_its_content_whatever_its_name(tmp_path):
    pdf = make_pdf(tmp_path / "scan.pdf", [colour_page((1, 2, 3)), colour_page((4, 5, 6))])
    renamed = tmp_path / "scan.bin"
    os.rename(pdf, renamed)
    assert is_pdf(str(renamed)) and not is_pdf(str(tmp_path / "absent.png"))
    assert page_numbers(str(renamed)) == [1, 2]
    assert [page.number for page in read_pages([str(renamed)], dpi=72)] == [1, 2]


def test_skip_errors_gives_each_unreadable_page_its_own_outcome(tmp_path):
    good = tmp_path / "good.png"
    colour_page((1, 1, 1)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image at all")
    pdf = make_pdf(tmp_path / "three.pdf", [colour_page((0, 0, 0))] * 3)
    pages = list(read_pages([str(bad), pdf, str(good)], pages="2,4", dpi=72, skip_errors=True))
    assert [(page.index, page.number, page.image is None) for page in pages] == [
        (0, None, True), (1, 2, False), (1, 4, True), (2, None, False)]
    assert "Cannot read image file" in str(pages[0].error) and "bad.png" in str(pages[0].error)
    assert "has 3 pages; page 4 was asked for" in str(pages[2].error)
    with pytest.raises(ValueError, match="bad.png"):  # without skip_errors the first unreadable input is an error
        list(read_pages([str(bad), str(good)]))


def test_large_pages_are_refused_before_decoding(tmp_path):
    big = tmp_path / "big.png"
    Image.new("L", (4000, 3000)).save(big)
    with pytest.raises(ValueError, match=r"4000 x 3000 pixels; at most 10 megapixels"):
        list(read_pages([str(big)], max_pixels=10_000_000))
    huge = make_pdf(tmp_path / "huge.pdf", [Image.new("RGB", (600, 600))])  # 600 x 600 points: 8.3 inches
    with pytest.raises(ValueError, match="more than 0.5 megapixels; render it at 84 dpi or less"):
        list(read_pages([huge], dpi=150, max_pixels=500_000))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_fifo_or_a_folder_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "page.png"
    os.mkfifo(fifo)
    for reader in (lambda: list(read_pages([str(fifo)])), lambda: page_numbers(str(fifo))):
        with pytest.raises(ValueError, match="not a regular file"):
            reader()
    with pytest.raises(ValueError, match="is a folder"):
        page_numbers(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        page_numbers(str(tmp_path / "absent.png"))


def test_names_given_are_used_in_messages(tmp_path):
    bad = tmp_path / "upload-7f3a" / "notes.png"
    bad.parent.mkdir()
    bad.write_text("no pixels here")
    with pytest.raises(ValueError) as raised:
        next(read_pages([str(bad)], names=["'notes.png'"]))
    assert "'notes.png'" in str(raised.value) and "upload-7f3a" not in str(raised.value)


def test_checking_inputs_imports_neither_torch_nor_transformers(tmp_path):
    pdf = make_pdf(tmp_path / "d.pdf", [colour_page((0, 0, 0))] * 2)
    png = tmp_path / "e.png"
    colour_page((0, 0, 0)).save(png)
    code = ("import sys\nfrom tokenocr.processing.pages_tokenocr import page_numbers, read_pages\n"
            f"assert page_numbers({pdf!r}, '2') == [2] and page_numbers({str(png)!r}) is None\n"
            f"assert len(list(read_pages([{pdf!r}], dpi=72))) == 2\n"
            "assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path)


class _SlowOrEndless(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the standard library's name)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.end_headers()
        try:
            if self.path == "/endless":
                block = b"\0" * 65536
                while True:
                    self.wfile.write(block)
            else:  # one byte at a time, slowly
                while True:
                    self.wfile.write(b"\0")
                    self.wfile.flush()
                    time.sleep(0.2)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


def test_an_image_url_is_read_within_a_size_and_a_time_bound(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowOrEndless)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        monkeypatch.setattr(pages_tokenocr, "MAX_DOWNLOAD_BYTES", 2 * 2**20)
        with pytest.raises(ValueError, match="Cannot download image .*larger than 2 MiB"):
            list(read_pages([url + "/endless"]))
        monkeypatch.setattr(pages_tokenocr, "URL_TIMEOUT_SECONDS", 1)
        start = time.monotonic()
        with pytest.raises(ValueError, match="took more than 1 s"):
            list(read_pages([url + "/drip"]))
        assert time.monotonic() - start < 5  # the whole read is bounded, not each read
    finally:
        server.shutdown()


def test_the_page_dataclass_names_its_page():
    assert Page(None, 0, 3, "'r.pdf'").label == "'r.pdf' page 3"
    assert Page(None, 0, None, "images[0]").label == "images[0]"


def test_an_open_range_past_the_end_is_an_error_page_too(tmp_path):
    pdf = make_pdf(tmp_path / "two.pdf", [colour_page((0, 0, 0))] * 2)
    with pytest.raises(ValueError, match="has 2 pages; pages 10- were asked for"):
        list(read_pages([pdf], "10-", 72))
    pages = list(read_pages([pdf], "10-", 72, skip_errors=True))
    assert [(page.number, page.image) for page in pages] == [(10, None)] and "has 2 pages" in str(pages[0].error)
