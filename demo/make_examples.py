"""
Draw the synthetic pages the demo and the model card show (run once; the outputs are committed).

    python demo/make_examples.py

Writes `hub_cards/sample_page.png` (the model card's example page: a one-tile invoice), and the demo's examples
`demo/examples/receipt.png` (a two-tile receipt), `demo/examples/notice.pdf` (two pages) and
`demo/examples/synthetic_page.png` (the demonstration model's sample page, `tokenocr.training.recipe`), and
`demo/examples/document_page.png`, the document model's sample page, from `document_page.html` (needs Chromium),
with `document_page.words.json`, its words and their boxes from the PDF's text layer. The text is drawn
with Pillow's default font, dark on light paper, large enough to read once the page is scaled down in a strip.
"""

import json
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont


ROOT = Path(__file__).resolve().parent.parent
INK, GREY, PAPER = (25, 25, 30), (110, 110, 120), (250, 249, 245)


def _font(size: int):
    return ImageFont.load_default(size=size)


def _page(size, lines) -> Image.Image:
    """`lines`: (x, y, text, font size, colour) tuples, or (x0, y, x1) for a horizontal rule."""
    page = Image.new("RGB", size, PAPER)
    draw = ImageDraw.Draw(page)
    for line in lines:
        if len(line) == 3:
            x0, y, x1 = line
            draw.line([(x0, y), (x1, y)], fill=GREY, width=2)
        else:
            x, y, text, font_size, colour = line
            draw.text((x, y), text, fill=colour, font=_font(font_size))
    return page


def invoice() -> Image.Image:
    """A square invoice: one tile for the ViT models, so drawing the card's picture costs one vision pass."""
    rows = [("Printer paper, A4", "10", "45.00"), ("Toner cartridge", "2", "118.50")]
    lines = [
        (28, 28, "Northwind Office Supplies", 30, INK),
        (28, 70, "12 Harbour Street, Springfield", 20, GREY),
        (28, 118, "Invoice No. 2024-117", 26, INK),
        (28, 156, "Date: 11/12/2020", 20, GREY),
        (28, 200, 532),
        (28, 214, "Description", 20, GREY), (330, 214, "Qty", 20, GREY), (430, 214, "Amount", 20, GREY),
    ]
    for index, (text, quantity, amount) in enumerate(rows):
        y = 256 + 44 * index
        lines += [(28, y, text, 24, INK), (340, y, quantity, 24, INK), (440, y, amount, 24, INK)]
    lines += [(28, 352, 532), (28, 372, "Invoice total", 30, INK), (430, 372, "163.50", 30, INK),
              (28, 440, "Payment due within 30 days.", 20, GREY)]
    return _page((560, 560), lines)


def receipt() -> Image.Image:
    items = [("Coffee beans 500 g", "8.90"), ("Oat milk", "2.10"), ("Croissant x2", "3.60"), ("Orange juice", "2.95")]
    lines = [(40, 40, "CORNER BAKERY", 40, INK), (40, 96, "OPEN 24 HOURS", 26, GREY), (40, 132, "Receipt 00417", 24, GREY),
             (40, 180, 408)]
    for index, (name, price) in enumerate(items):
        y = 204 + 56 * index
        lines += [(40, y, name, 26, INK), (330, y, price, 26, INK)]
    lines += [(40, 440, 408), (40, 464, "TOTAL", 34, INK), (318, 464, "17.55", 34, INK),
              (40, 540, "Paid by card", 24, GREY), (40, 580, "Thank you!", 28, INK)]
    return _page((448, 896), lines)


def notice_pages() -> list[Image.Image]:
    """Two 2:1 pages (1200 x 600 pixels, drawn for 150 dpi)."""
    first = [(60, 50, "Meeting notice", 56, INK), (60, 140, 1140),
             (60, 180, "The annual meeting of members will be held", 36, INK),
             (60, 236, "on Tuesday, 4 March, at 10:00 in Room 12.", 36, INK),
             (60, 330, "Please confirm attendance by 25 February.", 32, GREY),
             (60, 500, "Page 1 of 2", 26, GREY)]
    second = [(60, 50, "Agenda", 56, INK), (60, 140, 1140),
              (60, 180, "1. Opening and minutes of the last meeting", 36, INK),
              (60, 236, "2. Accounts for the year", 36, INK),
              (60, 292, "3. Election of the board", 36, INK),
              (60, 500, "Page 2 of 2", 26, GREY)]
    return [_page((1200, 600), first), _page((1200, 600), second)]


def _save_png(image: Image.Image, path: Path) -> None:
    """A small palette PNG: the pages hold a few dozen colours at most."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image.quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path.relative_to(ROOT)} ({path.stat().st_size // 1024} KiB)")


def main() -> None:
    _save_png(invoice(), ROOT / "hub_cards" / "sample_page.png")
    _save_png(receipt(), ROOT / "demo" / "examples" / "receipt.png")
    pdf = ROOT / "demo" / "examples" / "notice.pdf"
    first, second = notice_pages()
    first.save(pdf, "PDF", resolution=150.0, save_all=True, append_images=[second])
    print(f"wrote {pdf.relative_to(ROOT)} ({pdf.stat().st_size // 1024} KiB)")
    from tokenocr.training.recipe import render_sample_page  # the demonstration model's page (needs the package)

    page = ROOT / "demo" / "examples" / "synthetic_page.png"
    render_sample_page().save(page)
    print(f"wrote {page.relative_to(ROOT)} ({page.stat().st_size // 1024} KiB)")
    render_document_page()
    print("wrote demo/examples/document_page.png")


def render_document_page(dpi: int = 150) -> None:
    """`demo/examples/document_page.png` (the document model's sample page) from `document_page.html`: HTML to PDF by
    headless Chromium (Debian: apt-get install chromium), the PDF's page to PNG by pypdfium2 at `dpi`."""
    import subprocess
    import tempfile

    import pypdfium2

    source = ROOT / "demo" / "examples" / "document_page.html"
    with tempfile.TemporaryDirectory() as folder:
        pdf = Path(folder) / "document_page.pdf"
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--no-pdf-header-footer", f"--print-to-pdf={pdf}", source.as_uri()],
                       check=True, capture_output=True, timeout=120)
        document = pypdfium2.PdfDocument(str(pdf))
        page = document[0]
        image = page.render(scale=dpi / 72).to_pil().convert("RGB")
        image.save(source.with_suffix(".png"), optimize=True)
        # Its words and their boxes from the text layer: the ground truth the tests check the README's command on.
        from tokenocr.training.pdf_data import page_words, read_page_text

        textpage = page.get_textpage()
        words = page_words(read_page_text(page, textpage, image.size))
        textpage.close()
        page.close()
        document.close()
    (source.parent / "document_page.words.json").write_text(
        "[\n" + ",\n".join(json.dumps(word) for word in words) + "\n]\n", encoding="utf-8")


if __name__ == "__main__":
    main()
