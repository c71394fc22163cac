"""Make real PDF documents for training and held-out evaluation with real document tooling.

    python examples/documents/make_documents.py --output DOCS --split train --count 300 --seed 1
    python examples/documents/make_documents.py --output HELDOUT --split heldout --count 40 --seed 2

Two tools:

- HTML rendered to PDF by headless Chromium (`chromium --print-to-pdf`): articles, two-column papers, reports with
  tables, code listings, invoices and forms, slides; Letter or A4; many fonts. The text is Python's own
  documentation (docstrings of the standard library), its source code, and generated names, dates and amounts.
- Manual pages typeset by groff (`groff -man -Tpdf`).

The held-out split uses other fonts (TeX Gyre, Latin Modern, Computer Modern; groff's Palatino and New Century
Schoolbook) and other layouts (a LaTeX-like paper, a letter, a manual in groff's `-ms` look made from man pages of
other sections) than the training split, so its figures say how a model does on documents unlike its training ones.
Needs Debian's chromium and groff (and the fonts named in `FONTS`).
"""

import argparse
import gzip
import html
import inspect
import importlib
import random
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


FONTS = {
    "train": {
        "serif": ["Liberation Serif", "DejaVu Serif", "Noto Serif", "FreeSerif", "Caladea", "Nimbus Roman",
                  "EB Garamond", "Linux Libertine O", "URW Bookman"],
        "sans": ["Liberation Sans", "DejaVu Sans", "Noto Sans", "FreeSans", "Carlito", "Nimbus Sans", "Open Sans",
                 "Roboto", "Lato", "Cantarell", "Liberation Sans Narrow"],
        "mono": ["Liberation Mono", "DejaVu Sans Mono", "Noto Mono", "FreeMono", "Nimbus Mono PS", "Inconsolata",
                 "Fira Code", "Hack"],
    },
    "heldout": {
        "serif": ["TeX Gyre Termes", "TeX Gyre Pagella", "TeX Gyre Schola", "Latin Modern Roman", "CMU Serif"],
        "sans": ["TeX Gyre Heros", "Latin Modern Sans", "CMU Sans Serif"],
        "mono": ["TeX Gyre Cursor", "Latin Modern Mono", "CMU Typewriter Text"],
    },
}
LAYOUTS = {"train": ["article", "paper", "report", "code", "invoice", "slides"],
           "heldout": ["latex_paper", "letter", "manual"]}
MAN_SECTIONS = {"train": "man1", "heldout": "man8"}
GROFF_FAMILIES = {"train": ["T", "H"], "heldout": ["P", "N"]}
STDLIB_MODULES = [
    "argparse", "asyncio", "base64", "bisect", "calendar", "collections", "colorsys", "configparser", "contextlib",
    "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fileinput", "fnmatch",
    "fractions", "ftplib", "functools", "getopt", "gettext", "glob", "gzip", "hashlib", "heapq", "hmac", "html",
    "http.client", "imaplib", "inspect", "io", "ipaddress", "itertools", "json", "locale", "logging", "lzma",
    "mailbox", "math", "mimetypes", "netrc", "numbers", "operator", "optparse", "os", "pathlib", "pickle", "pkgutil",
    "platform", "plistlib", "poplib", "pprint", "queue", "quopri", "random", "re", "sched", "secrets", "selectors",
    "shelve", "shlex", "shutil", "signal", "smtplib", "socket", "socketserver", "sqlite3", "ssl", "statistics",
    "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "timeit", "tokenize", "trace",
    "traceback", "types", "typing", "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "wave",
    "weakref", "webbrowser", "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zlib",
]
NAMES = ["Alvarez", "Brennan", "Chowdhury", "Dubois", "Eriksen", "Fischer", "Garcia", "Haddad", "Ivanova", "Jensen",
         "Kowalski", "Lindqvist", "Moreau", "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi", "Schmidt", "Tanaka",
         "Urban", "Varga", "Weber", "Xu", "Yilmaz", "Zimmermann"]
FIRST = ["Anna", "Ben", "Clara", "David", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas", "Kira", "Luis",
         "Maya", "Nils", "Olga", "Pablo", "Rosa", "Sven", "Tara", "Viktor"]
CITIES = ["Lisbon", "Oslo", "Toronto", "Nairobi", "Osaka", "Lyon", "Krakow", "Austin", "Porto", "Leeds", "Graz",
          "Bergen", "Quito", "Adelaide", "Tampere", "Ghent"]
ITEMS = ["Consulting hours", "Server rental", "Licence renewal", "Travel expenses", "Printing", "Support plan",
         "Training session", "Hardware repair", "Cloud storage", "Translation", "Office supplies", "Shipping"]


def paragraphs(rng: random.Random) -> list[str]:
    """Prose from the standard library's docstrings: paragraphs of one to a dozen lines, one space between words."""
    found = []
    for name in STDLIB_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a module this Python lacks is simply not used
            continue
        objects = [module] + [value for _, value in inspect.getmembers(module)
                              if (inspect.isclass(value) or inspect.isfunction(value))
                              and getattr(value, "__module__", "") == module.__name__]
        for value in objects:
            for block in (inspect.getdoc(value) or "").split("\n\n"):
                text = " ".join(block.split())
                if 60 <= len(text) <= 900 and not text.startswith((">>>", "..")):
                    found.append(text)
    rng.shuffle(found)
    return found


def code_blocks(rng: random.Random, count: int) -> list[str]:
    """Real code: runs of 6-25 lines from the standard library's Python sources."""
    sources = []
    for name in rng.sample(STDLIB_MODULES, 30):
        try:
            path = inspect.getsourcefile(importlib.import_module(name))
            sources.append(Path(path).read_text(encoding="utf-8").splitlines())
        except Exception:  # noqa: BLE001
            continue
    blocks = []
    for _ in range(count):
        lines = rng.choice(sources)
        start = rng.randrange(max(1, len(lines) - 30))
        block = [line.rstrip()[:90] for line in lines[start : start + rng.randint(6, 25)]]
        blocks.append("\n".join(block))
    return blocks


class Writer:
    """Random document content in one split's fonts."""

    def __init__(self, rng: random.Random, split: str, prose: list[str], code: list[str]):
        self.rng, self.split, self.prose, self.code = rng, split, prose, code

    def font(self, kind: str) -> str:
        return self.rng.choice(FONTS[self.split][kind])

    def text(self) -> str:
        return html.escape(self.rng.choice(self.prose))

    def title(self, words=(3, 8)) -> str:
        words = self.rng.choice(self.prose).split()[: self.rng.randint(*words)]
        return html.escape(" ".join(words).rstrip(".,;:"))

    def date(self) -> str:
        rng = self.rng
        day, month, year = rng.randint(1, 28), rng.randint(1, 12), rng.randint(1990, 2031)
        return rng.choice([f"{year}-{month:02d}-{day:02d}", f"{day:02d}/{month:02d}/{year}",
                           f"{day} {['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'][month - 1]} {year}"])

    def amount(self) -> str:
        value = self.rng.uniform(1, 20000)
        return self.rng.choice([f"{value:,.2f}", f"${value:,.2f}", f"{value:.2f} EUR", f"€{value:,.0f}"])

    def person(self) -> str:
        return f"{self.rng.choice(FIRST)} {self.rng.choice(NAMES)}"

    def table(self, rows=(4, 14)) -> str:
        rng = self.rng
        kinds = rng.sample(["name", "date", "amount", "city", "id", "word", "count"], rng.randint(3, 5))
        headers = {"name": "Name", "date": "Date", "amount": "Amount", "city": "City", "id": "Reference",
                   "word": "Description", "count": "Qty"}
        def cell(kind):
            return {"name": self.person, "date": self.date, "amount": self.amount,
                    "city": lambda: rng.choice(CITIES), "id": lambda: f"{rng.choice('ABCDEFGHKLMNPRSTX')}{rng.randint(100, 99999)}",
                    "word": lambda: self.title((1, 4)), "count": lambda: str(rng.randint(1, 500))}[kind]()
        body = "".join("<tr>" + "".join(f"<td>{cell(kind)}</td>" for kind in kinds) + "</tr>"
                       for _ in range(rng.randint(*rows)))
        return f"<table><tr>{''.join(f'<th>{headers[k]}</th>' for k in kinds)}</tr>{body}</table>"

    def pre(self) -> str:
        return f"<pre>{html.escape(self.rng.choice(self.code))}</pre>"

    def listing(self) -> str:
        tag = self.rng.choice(["ul", "ol"])
        items = "".join(f"<li>{html.escape(' '.join(self.rng.choice(self.prose).split()[:self.rng.randint(4, 16)]))}</li>"
                        for _ in range(self.rng.randint(2, 6)))
        return f"<{tag}>{items}</{tag}>"

    def body(self, blocks: int, tables=0.15, code=0.1, lists=0.1, headings=0.15) -> str:
        parts = []
        for _ in range(blocks):
            roll = self.rng.random()
            if roll < tables:
                parts.append(self.table())
            elif roll < tables + code:
                parts.append(self.pre())
            elif roll < tables + code + lists:
                parts.append(self.listing())
            elif roll < tables + code + lists + headings:
                parts.append(f"<h{self.rng.randint(2, 3)}>{self.title()}</h{2}>")
            else:
                parts.append(f"<p>{self.text()}</p>")
        return "\n".join(parts)


def page_css(writer: Writer, size: str, body_font: str, pt: float, margin: float, extra: str = "") -> str:
    rng = writer.rng
    ink = rng.choice(["#000", "#111", "#222", "#1a1a3a", "#303030"])
    return (f"@page {{ size: {size}; margin: {margin}in; }} body {{ font-family: '{body_font}'; font-size: {pt}pt; "
            f"color: {ink}; line-height: {rng.uniform(1.1, 1.5):.2f}; }} pre {{ font-family: '{writer.font('mono')}'; "
            f"font-size: {pt * rng.uniform(0.8, 0.95):.1f}pt; }} table {{ border-collapse: collapse; margin: 8pt 0; }} "
            f"td, th {{ border: {rng.choice(['0', '0.5pt solid #888', '1px solid #000'])}; padding: 2pt 6pt; }} "
            f"h1, h2, h3 {{ font-family: '{writer.font(rng.choice(['serif', 'sans']))}'; }} {extra}")


def document_html(writer: Writer, layout: str) -> str:
    rng = writer.rng
    size = rng.choice(["letter", "A4"])
    pt = round(rng.uniform(9, 12), 1)
    margin = rng.uniform(0.6, 1.1)
    font = writer.font(rng.choice(["serif", "sans"]))
    if layout in ("article", "manual"):
        css = page_css(writer, size, font, pt, margin, "p { text-align: justify; }" if rng.random() < 0.5 else "")
        content = f"<h1>{writer.title()}</h1>" + writer.body(rng.randint(12, 30))
    elif layout in ("paper", "latex_paper"):
        css = page_css(writer, size, font, round(rng.uniform(8.5, 10.5), 1), margin,
                       f".cols {{ column-count: 2; column-gap: {rng.uniform(0.2, 0.4):.2f}in; text-align: justify; }}")
        authors = ", ".join(writer.person() for _ in range(rng.randint(1, 4)))
        content = (f"<h1 style='text-align:center'>{writer.title()}</h1><p style='text-align:center'>{authors}</p>"
                   f"<p><b>Abstract.</b> {writer.text()}</p><div class='cols'>{writer.body(rng.randint(15, 30), code=0.05)}</div>")
    elif layout == "report":
        css = page_css(writer, size, font, pt, margin)
        content = f"<h1>{writer.title()}</h1><p>{writer.date()}</p>" + writer.body(rng.randint(10, 20), tables=0.45)
    elif layout == "code":
        css = page_css(writer, size, font, pt, margin)
        content = f"<h1>{writer.title()}</h1>" + writer.body(rng.randint(8, 16), code=0.5, tables=0.05)
    elif layout in ("invoice", "letter"):
        css = page_css(writer, size, font, pt, margin)
        lines = "".join(f"<tr><td>{rng.choice(ITEMS)}</td><td>{rng.randint(1, 40)}</td><td>{writer.amount()}</td></tr>"
                        for _ in range(rng.randint(3, 12)))
        content = (f"<h1>{rng.choice(['Invoice', 'Receipt', 'Statement', 'Quotation', 'Letter'])} "
                   f"{rng.randint(1000, 99999)}</h1><p>{writer.person()}<br>{rng.randint(1, 250)} "
                   f"{writer.title((1, 2))} Street<br>{rng.choice(CITIES)}</p><p>Date: {writer.date()}<br>Due: "
                   f"{writer.date()}</p><p>{writer.text()}</p><table><tr><th>Item</th><th>Qty</th><th>Amount</th></tr>"
                   f"{lines}</table><p>Total: <b>{writer.amount()}</b></p><p>{writer.text()}</p><p>{writer.person()}</p>")
    elif layout == "slides":
        pages = []
        for _ in range(rng.randint(2, 5)):
            bullets = "".join(f"<li>{html.escape(' '.join(rng.choice(writer.prose).split()[:rng.randint(3, 9)]))}</li>"
                              for _ in range(rng.randint(2, 5)))
            pages.append(f"<section><h1>{writer.title((2, 6))}</h1><ul>{bullets}</ul></section>")
        background = rng.choice(["#fff", "#f4f1e8", "#eef3fb", "#fdf6e3"])
        css = page_css(writer, "11in 8.5in" if size == "letter" else "A4 landscape", font,
                       round(rng.uniform(20, 30), 1), 0.5,
                       f"section {{ page-break-after: always; }} body {{ background: {background}; }} "
                       f"h1 {{ font-size: {rng.uniform(1.3, 1.8):.2f}em; border-bottom: 2px solid #446; }}")
        content = "".join(pages)
    else:
        raise ValueError(layout)
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{css}</style></head><body>{content}</body></html>"


def chromium_pdf(html_path: Path, pdf_path: Path) -> None:
    subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-pdf-header-footer", f"--print-to-pdf={pdf_path}",
         html_path.as_uri()],
        check=True, capture_output=True, timeout=120,
    )


def man_pdf(source: Path, pdf_path: Path, family: str, paper: str) -> None:
    roff = gzip.decompress(source.read_bytes()) if source.suffix == ".gz" else source.read_bytes()
    result = subprocess.run(["groff", "-man", "-Tpdf", f"-f{family}", f"-dpaper={paper}", f"-P-p{paper}"],
                            input=roff, capture_output=True, timeout=120)
    if result.returncode == 0 and result.stdout.startswith(b"%PDF"):
        pdf_path.write_bytes(result.stdout)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, type=Path, help="new folder for the PDFs and their sources")
    parser.add_argument("--split", choices=("train", "heldout"), required=True)
    parser.add_argument("--count", type=int, default=200, help="HTML documents (plus a quarter as many man pages)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.output.exists():
        raise SystemExit(f"error: --output '{args.output}' exists; choose a new folder")
    for tool in ("chromium", "groff"):
        if shutil.which(tool) is None:
            raise SystemExit(f"error: {tool} is not installed (Debian: apt-get install {tool})")
    rng = random.Random(args.seed)
    prose = paragraphs(rng)
    # Each split takes its own half of the prose, so held-out pages do not repeat training sentences.
    half = len(prose) // 2
    prose = prose[:half] if args.split == "train" else prose[half:]
    writer = Writer(rng, args.split, prose, code_blocks(rng, 200))
    building = Path(tempfile.mkdtemp(prefix=f".{args.output.name}.", dir=args.output.parent))
    jobs = []
    for number in range(args.count):
        layout = LAYOUTS[args.split][number % len(LAYOUTS[args.split])]
        html_path = building / f"{number:04d}-{layout}.html"
        html_path.write_text(document_html(writer, layout), encoding="utf-8")
        jobs.append((chromium_pdf, html_path, html_path.with_suffix(".pdf")))
    pages = sorted(Path("/usr/share/man", MAN_SECTIONS[args.split]).glob("*.gz"))
    for number, source in enumerate(rng.sample(pages, min(len(pages), args.count // 4))):
        family = rng.choice(GROFF_FAMILIES[args.split])
        jobs.append((man_pdf, source, building / f"man-{number:04d}.pdf", family, rng.choice(["letter", "a4"])))
    with ThreadPoolExecutor(2) as pool:
        failures = sum(1 for future in [pool.submit(*job) for job in jobs] if future.exception())
    building.rename(args.output)
    print(f"wrote {len(list(args.output.glob('*.pdf')))} PDFs to {args.output} ({failures} failed)")


if __name__ == "__main__":
    sys.exit(main())
