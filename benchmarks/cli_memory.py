"""
Peak memory of `tokenocr similarity` on an A4 page scanned at 300 dpi (2480 x 3508 pixels) with a 150-token query,
against the same run with a 5-token query: does memory grow with (query tokens x image pixels)?

    python benchmarks/cli_memory.py [--model tests/fixtures/original/tiny_seg/checkpoint] [--tokens 150]

Each run is the real command in its own process; the figure is its peak resident memory above what it held once
the model was loaded (the peak is reset at that point), measured in this one run. The model's own size does not
matter for the question, so the default is the small test checkpoint.
"""

from pathlib import Path

from memory_run import parser_with_model, run_hooked, work_folder


_HOOK = r"""
import tokenocr.loading as loading

marks = {}
real = loading.load_pipeline

def load_and_mark(*args, **kwargs):
    finder = real(*args, **kwargs)
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # peak := current
    marks["loaded_mb"] = status("VmRSS")
    return finder

loading.load_pipeline = load_and_mark
code = main(sys.argv[1:])
print(json.dumps({"code": code, "peak_mb": status("VmHWM"), **marks}))
"""


def query_with_tokens(model: str, count: int) -> str:
    """Words appended until the model's processor gives exactly `count` query tokens (or the nearest above)."""
    from tokenocr.loading import load_pipeline

    processor = load_pipeline(model).processor
    words, query = ["invoice", "total", "2024", "amount", "due", "paid", "tax", "number", "date", "ACME"], ""
    index = 0
    while len(processor(text=query or "x")["input_ids"]) < count:
        query = f"{query} {words[index % len(words)]}{index}".strip()
        index += 1
    return query


def run(model: str, page: Path, query: str, out: Path) -> dict:
    return run_hooked(_HOOK, ["similarity", "--model", model, "--image", str(page), "--query", query, "--out", str(out)])


def main():
    parser = parser_with_model(__doc__)
    parser.add_argument("--tokens", type=int, default=150)
    args = parser.parse_args()
    import numpy as np
    from PIL import Image

    with work_folder("cli-memory") as work:
        page = work / "a4-300dpi.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(180, 256, (3508, 2480, 3), dtype=np.uint8)).save(page)
        long_query, short_query = query_with_tokens(args.model, args.tokens), query_with_tokens(args.model, 5)
        long = run(args.model, page, long_query, work / "long")
        short = run(args.model, page, short_query, work / "short")
    above = {name: r["peak_mb"] - r["loaded_mb"] for name, r in (("long", long), ("short", short))}
    print(f"A4 page at 300 dpi (2480 x 3508), model {Path(args.model).name}")
    print(f"{args.tokens}-token query: peak {above['long']:7.0f} MiB above the loaded model")
    print(f"  5-token query: peak {above['short']:7.0f} MiB above the loaded model")
    print(f"ratio:                {above['long'] / above['short']:7.2f}  (goal: under 1.5)")


if __name__ == "__main__":
    main()
