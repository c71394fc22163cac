"""
Does `tokenocr search` hold memory per page? Scores 200 synthetic letter-size pages (two columns of dark strokes on
light paper, 1700 x 2200 pixels) and compares the process's peak resident memory after page 20 with that after
page 200, measured in this one run.

    python benchmarks/search_memory.py [--model tests/fixtures/original/tiny_seg/checkpoint] [--pages 200]
"""

from pathlib import Path

from memory_run import parser_with_model, run_hooked, work_folder


_HOOK = r"""
import tokenocr.commands.search as search

peaks = []
real = search.page_lines

def page_lines_and_peak(*args, **kwargs):
    peaks.append(status("VmHWM"))
    return real(*args, **kwargs)

search.page_lines = page_lines_and_peak
code = main(sys.argv[1:])
print(json.dumps({"code": code, "peaks": peaks}))
"""


def make_pages(folder: Path, count: int) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(count):
        page = np.full((2200, 1700, 3), 240, dtype=np.uint8)
        for _ in range(120):
            top, left = rng.integers(100, 2100), rng.choice([150, 900]) + rng.integers(0, 300)
            page[top : top + 14, left : left + rng.integers(40, 500)] = rng.integers(0, 90)
        Image.fromarray(page).save(folder / f"page-{index:04d}.png", compress_level=1)


def main():
    parser = parser_with_model(__doc__)
    parser.add_argument("--pages", type=int, default=200)
    args = parser.parse_args()
    with work_folder("search-memory") as work:
        (work / "pages").mkdir()
        make_pages(work / "pages", args.pages)
        peaks = run_hooked(_HOOK, ["search", "--model", args.model, "--images", str(work / "pages"),
                                   "--query", "Invoice total", "ACME", "--out", str(work / "results.jsonl")])["peaks"]
    early, late = peaks[19], peaks[-1]
    print(f"{len(peaks)} pages (1700 x 2200), 2 queries, model {Path(args.model).name}")
    print(f"peak RSS after page 20:  {early:8.1f} MiB")
    print(f"peak RSS after page {len(peaks)}: {late:8.1f} MiB")
    print(f"growth: {100 * (late - early) / early:+.1f}%  (goal: within 10%)")


if __name__ == "__main__":
    main()
