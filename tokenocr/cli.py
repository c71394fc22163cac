"""
The `tokenocr` and `tokenocr-convert` commands: argument parsing, and one-line errors for every failure.

    tokenocr similarity --model M --image PATH [PATH ...] --query TEXT [TEXT ...] --out DIR [--force] ...
    tokenocr search --model M --images FOLDER_GLOB_OR_PDF [...] --query TEXT [TEXT ...] --out FILE.jsonl [--resume]
                    [--top-k K]
    tokenocr demo [--model M ...] [--port P]      (the Gradio demo in demo/)
    tokenocr convert ...            (the same as tokenocr-convert)
    tokenocr-convert --input SRC --output DST [--dtype ...] [--max-shard-size SIZE] [--force] [--tokenizer ...] ...

Parsing, `--help` and argument errors import neither torch nor transformers: heavy imports happen when the work
starts (in `tokenocr.commands` and `tokenocr.conversion`). Every failure prints one line, `PROGRAM: error: ...`,
and exits non-zero; Ctrl-C, SIGTERM and SIGHUP leave nothing behind.
"""

import argparse
import sys

from .constants import DTYPE_NAMES
from .loading import MODEL_HELP
from .outputs import interrupt_on_termination, was_interrupted
from .processing.settings_tokenocr import (
    DEFAULT_BATCH_SIZE, DEFAULT_PDF_DPI, DEFAULT_THRESHOLD, check_threshold, parse_pages,
)


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, in the `PROGRAM: error: ...` form of every other failure."""

    program = "tokenocr"

    def error(self, message):
        if "--model" in message and "required" in message:
            message = f"--model is required: {MODEL_HELP}"
        self.exit(2, f"{self.program}: error: {message} (see '{self.prog} --help')\n")


class _ConvertParser(_Parser):
    program = "tokenocr-convert"


def _threshold(text: str) -> float:
    try:
        return check_threshold(float(text))
    except (TypeError, ValueError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _pages(text: str) -> str:
    try:
        parse_pages(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR_OR_REPO",
                        help="converted folder, hub repo id, or original checkpoint folder")
    parser.add_argument("--query", required=True, nargs="+", metavar="TEXT", help="text to look for")
    parser.add_argument("--threshold", type=_threshold, default=DEFAULT_THRESHOLD,
                        help=f"mask threshold on the cosine similarity, in [-1, 1] (default: {DEFAULT_THRESHOLD})")
    parser.add_argument("--max-tiles", type=_positive_int, default=None, metavar="N", help="most tiles per image")
    parser.add_argument("--pages", type=_pages, default=None, metavar="RANGES", help="PDF pages to use, e.g. 1-3,7 (default: all)")
    parser.add_argument("--dpi", type=_positive_int, default=DEFAULT_PDF_DPI, help="PDF rendering resolution")
    parser.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, mps")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="weights dtype (default: the model's)")
    parser.add_argument("--batch-size", type=_positive_int, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"tiles per vision-tower forward (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="run the model folder's or repo's own Python code instead of the installed classes")


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, metavar="SRC", help="original checkpoint folder or hub repo id")
    parser.add_argument("--output", required=True, metavar="DST", help="folder to create")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, help="dtype of the written weights (default: the source's)")
    parser.add_argument("--max-shard-size", default="5GB", metavar="SIZE",
                        help="largest weight file, e.g. 5GB or 500MB (default: 5GB)")
    parser.add_argument("--force", action="store_true",
                        help="replace DST if it is an earlier output of this command (only once the new one is complete)")
    parser.add_argument("--repo-id", default="org/TokenOCR",
                        help="hub repo the folder will be published as, used in the model card (default: org/TokenOCR)")
    parser.add_argument("--space-id", default=None,
                        help="demo Space the model card links to (default: OWNER/TokenOCR-demo, OWNER from --repo-id)")
    parser.add_argument("--thorough-verification", action="store_true",
                        help="verify on a 3x2-tile probe page instead of one tile (slower, also exercises tiling)")
    parser.add_argument("--tokenizer", default=None, metavar="PATH_OR_REPO",
                        help="folder with tokenizer.model (or the file itself, or a hub repo id) to use instead of the "
                        "source's own; the original R50 release keeps its tokenizer outside the checkpoint folder")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tokenocr", description="TokenOCR: token-level text-image similarity for document images.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    similarity = commands.add_parser(
        "similarity", help="per-token heatmaps, masks and boxes for text queries on document images",
        description="Write one heatmap and one mask PNG per query token and image (PDF pages included), and "
        "summary.json (tokens, scores, boxes, relevance).",
    )
    _add_model_arguments(similarity)
    similarity.add_argument("--image", required=True, nargs="+", metavar="PATH", help="document image(s) or PDF(s)")
    similarity.add_argument("--out", required=True, metavar="DIR", help="folder to create")
    similarity.add_argument("--force", action="store_true",
                            help="replace --out if it is an earlier output of this command")
    search = commands.add_parser(
        "search", help="rank many pages (images, folders, globs, PDFs) for text queries",
        description="Score every page for every query with one vision pass per page; write one JSON line per page and "
        "query (relevance, each token's score and boxes) as soon as the page is done; print the best pages per query. "
        "Runs data-parallel under `accelerate launch` or `torchrun` (one process per GPU).",
    )
    _add_model_arguments(search)
    search.add_argument("--images", required=True, nargs="+", metavar="PATH",
                        help="image or PDF files, folders (their image and PDF files) or glob patterns")
    search.add_argument("--out", required=True, metavar="FILE.jsonl", help="file to write (one JSON line per page and query)")
    search.add_argument("--resume", action="store_true", help="continue an earlier --out, skipping the finished pages")
    search.add_argument("--top-k", type=_positive_int, default=5, metavar="K", help="best pages printed per query (default: 5)")
    demo = commands.add_parser("demo", help="start the Gradio demo (needs the demo extra: gradio, pypdfium2)",
                               description="Serve the Gradio demo on this machine (see demo/README.md).")
    from .demo.app import add_demo_arguments

    add_demo_arguments(demo)
    convert = commands.add_parser("convert", help="the same as tokenocr-convert",
                                  description="Convert an original TokenOCR checkpoint into a hub-ready folder.")
    add_convert_arguments(convert)
    return parser


def build_convert_parser() -> argparse.ArgumentParser:
    parser = _ConvertParser(
        prog="tokenocr-convert",
        description="Convert an original TokenOCR checkpoint into a hub-ready folder that loads with transformers.",
    )
    add_convert_arguments(parser)
    return parser


def _run_similarity(args) -> str:
    from .commands import similarity
    from .loading import load_pipeline

    similarity.check_inputs(args)
    finder = load_pipeline(args.model, args.device, args.dtype, args.trust_remote_code, args.batch_size)
    return f"wrote {similarity.run(args, finder)}"


def _run_search(args) -> str:
    import torch
    from accelerate import PartialState

    from .commands import search
    from .loading import check_device, load_pipeline

    work = search.plan(args)
    device = check_device(args.device)
    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    if state.num_processes > 1:
        device = str(state.device)  # one process per device under accelerate launch / torchrun
    finder = load_pipeline(args.model, device, args.dtype, args.trust_remote_code, args.batch_size)
    out = search.run(args, finder, state, work)
    return f"scored {len(work['todo'])} of {work['pages']} pages; results in {out}"


def _run_demo(args) -> str:
    from .demo.app import run_demo

    run_demo(args)
    return "demo stopped"


def _run_convert(args) -> str:
    from .conversion.convert import convert

    destination = convert(args.input, args.output, args.dtype, args.max_shard_size, args.force, args.repo_id,
                          args.thorough_verification, args.space_id, args.tokenizer)
    return f"wrote {destination}"


_COMMANDS = {"similarity": _run_similarity, "search": _run_search, "demo": _run_demo, "convert": _run_convert}


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, MemoryError):
        return f"out of memory ({text or 'MemoryError'}); try fewer or smaller images, fewer query tokens or --batch-size 1"
    if isinstance(error, (OSError, ImportError, ValueError, TypeError)) or type(error).__name__.endswith("Error"):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}"


def run_command(program: str, command, args) -> int:
    """Run `command(args)`; report its outcome or any failure on one line. Returns the exit status."""
    try:
        with interrupt_on_termination():
            message = command(args)
    except KeyboardInterrupt:
        print(f"{program}: error: interrupted; nothing was written", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every failure is one line, whatever raised it
        if was_interrupted():  # a signal that a library reported as its own error
            print(f"{program}: error: interrupted; nothing was written", file=sys.stderr)
            return 130
        print(f"{program}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    print(f"{program}: {message}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return run_command("tokenocr", _COMMANDS[args.command], args)
    except KeyboardInterrupt:
        print("tokenocr: error: interrupted", file=sys.stderr)
        return 130


def convert_main(argv=None) -> int:
    try:
        return run_command("tokenocr-convert", _run_convert, build_convert_parser().parse_args(argv))
    except KeyboardInterrupt:
        print("tokenocr-convert: error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
