"""
The `tokenocr` and `tokenocr-convert` commands: argument parsing, and one-line errors for every failure.

    tokenocr similarity --model M --image PATH [PATH ...] --query TEXT [TEXT ...] --out DIR [--force] ...
    tokenocr search --model M --images FOLDER_GLOB_OR_PDF [...] --query TEXT [TEXT ...] --out FILE.jsonl [--resume]
                    [--top-k K]
    tokenocr demo [--model M ...] [--port P]      (the Gradio demo in demo/)
    tokenocr train --model M --data DATASET --output DIR [--policy original|vision|all] [--resume] ...
    tokenocr evaluate --model M --data DATASET [--threshold T] [--k K] [--json FILE]
    tokenocr make-data PDF [PDF ...] --model M --output DIR [--pages RANGES] [--dpi N] [--augment scan|photo] [--resume]
    tokenocr export MODEL --output DIR [--force]   (a model folder made hub-ready: remote code and auto_map added)
    tokenocr convert ...            (the same as tokenocr-convert)
    tokenocr-convert --input SRC --output DST [--dtype ...] [--max-shard-size SIZE] [--force] [--tokenizer ...] ...

Parsing, `--help` and argument errors import neither torch nor transformers: heavy imports happen when the work
starts (in `tokenocr.commands` and `tokenocr.conversion`). Every failure prints one line, `PROGRAM: error: ...`,
and exits non-zero; Ctrl-C, SIGTERM and SIGHUP leave nothing behind.
"""

import argparse
import math
import sys

from .constants import DTYPE_NAMES, TRAINING_DEFAULTS, TRAINING_POLICIES
from .loading import MODEL_HELP
from .outputs import interrupt_on_termination, printable, was_interrupted
from .processing.settings_tokenocr import (
    DEFAULT_BATCH_SIZE, DEFAULT_PDF_DPI, DEFAULT_THRESHOLD, MAX_BATCH_SIZE, MAX_TILES_LIMIT, check_threshold,
    parse_pages,
)


TRUST_REMOTE_CODE_HELP = ("allow the model folder's or repo's own Python code where the installed package has no classes "
                          "for it (a model_type other than tokenocr); TokenOCR folders use the installed ones")


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


def _at_least(convert, minimum, what: str):
    """An argparse type: `convert(text)`, refused (NaN too) unless it is at least `minimum`."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not value >= minimum or (isinstance(value, float) and not math.isfinite(value)):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _at_least(int, 1, "a positive integer")


MIN_DPI, MAX_DPI = 18, 1200  # PDF rendering resolutions accepted: a quarter of screen resolution to fine print scans


def _dpi(text: str) -> int:
    """`--dpi` of similarity, search and make-data, checked while parsing (before any model loads)."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not MIN_DPI <= value <= MAX_DPI:
        raise argparse.ArgumentTypeError(f"expected a resolution between {MIN_DPI} and {MAX_DPI} dpi (a whole number), "
                                         f"got {text!r}")
    return value


def _batch_size(text: str) -> int:
    """`--batch-size` of similarity and search (tiles per vision-tower forward), bounded by `MAX_BATCH_SIZE`."""
    value = _positive_int(text)
    if value > MAX_BATCH_SIZE:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_BATCH_SIZE} tiles per forward, got {text!r}")
    return value


def _tile_count(text: str) -> int:
    value = _positive_int(text)
    if value > MAX_TILES_LIMIT:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_TILES_LIMIT} tiles, got {text!r}")
    return value


def _values_checked(check, expected: str):
    """An argparse action for an `nargs` option whose values are checked together: `check(values)` or an error."""

    class Checked(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            if not check(values):
                parser.error(f"argument {option_string}: expected {expected}, got {' '.join(map(str, values))}")
            setattr(namespace, self.dest, values)

    return Checked


_finite_float = _at_least(float, -math.inf, "a finite number")

# Bounds no real training meets; past them a typing slip would fork thousands of processes, allocate a batch that
# cannot exist, or turn every weight into infinity.
MAX_NUM_WORKERS = 64
MAX_TRAIN_BATCH_SIZE = 4096
MAX_LEARNING_RATE = 10.0


def _at_most(parse, maximum, what: str):
    """An argparse type: `parse(text)`, refused above `maximum` with a message that states the bound."""

    def bounded(text: str):
        value = parse(text)
        if value > maximum:
            raise argparse.ArgumentTypeError(f"expected {what} (at most {maximum:g}), got {text!r}")
        return value

    return bounded


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_LEARNING_RATE):
        raise argparse.ArgumentTypeError(
            f"expected a learning rate above 0 and at most {MAX_LEARNING_RATE:g}, got {text!r}"
        )
    return value
_non_negative_int = _at_least(int, 0, "a non-negative integer")
_non_negative_float = _at_least(float, 0.0, "a non-negative number")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR_OR_REPO",
                        help="converted folder, hub repo id, or original checkpoint folder")
    parser.add_argument("--query", required=True, nargs="+", metavar="TEXT", help="text to look for")
    parser.add_argument("--threshold", type=_threshold, default=None,
                        help="mask threshold on the cosine similarity, in [-1, 1] (default: the model's own, "
                        f"{DEFAULT_THRESHOLD} for the released models)")
    parser.add_argument("--max-tiles", type=_tile_count, default=None, metavar="N",
                        help="most tiles per image (default: the model's processor's; tiled models only)")
    parser.add_argument("--pages", type=_pages, default=None, metavar="RANGES", help="PDF pages to use, e.g. 1-3,7 (default: all)")
    parser.add_argument("--dpi", type=_dpi, default=DEFAULT_PDF_DPI,
                        help=f"PDF rendering resolution, {MIN_DPI} to {MAX_DPI} (default: {DEFAULT_PDF_DPI})")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="weights dtype (default: the model's)")
    parser.add_argument("--batch-size", type=_batch_size, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"tiles per vision-tower forward, 1 to {MAX_BATCH_SIZE} (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help=TRUST_REMOTE_CODE_HELP)


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


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR_OR_REPO",
                        help="converted folder, hub repo id, or original checkpoint folder to start from")
    parser.add_argument("--data", required=True, metavar="DIR", help="token-mask dataset folder to train on")
    parser.add_argument("--output", required=True, metavar="DIR",
                        help="folder to create: checkpoints, then the trained model (a TokenOCRModel folder)")
    parser.add_argument("--eval-data", metavar="DIR",
                        help="token-mask dataset for the evaluation loss; at the end it also chooses the model's mask "
                        "threshold (best mean IoU) and gives the card its figures")
    parser.add_argument("--policy", choices=TRAINING_POLICIES, default="original",
                        help="what trains: original = upsampler, projector and the last vision block (default); "
                        "vision = the whole vision side; all = everything, the embedding table included")
    parser.add_argument("--train-embeddings", action="store_true",
                        help="train the token-embedding table too, whatever the policy (for a model with its own small "
                        "tokenizer)")
    parser.add_argument("--vision-lr-scale", type=_non_negative_float, default=0.05, metavar="F",
                        help="learning-rate factor of the trained vision-tower parameters (default: 0.05)")
    parser.add_argument("--unfrozen-vision-layers", type=_non_negative_int, default=1, metavar="N",
                        help="vision blocks the original policy trains, counted from the last (default: 1)")
    parser.add_argument("--epochs", type=_non_negative_float, default=1.0, help="training epochs (default: 1)")
    parser.add_argument("--max-steps", type=_positive_int, default=-1, metavar="N",
                        help="stop after N optimizer steps (overrides --epochs)")
    parser.add_argument("--batch-size", type=_at_most(_positive_int, MAX_TRAIN_BATCH_SIZE, "a positive integer"),
                        default=TRAINING_DEFAULTS["per_device_train_batch_size"], metavar="N",
                        help=f"pages per device and step, at most {MAX_TRAIN_BATCH_SIZE} (default: %(default)s)")
    parser.add_argument("--gradient-accumulation", type=_positive_int, default=1, metavar="N", help="micro-batches per step")
    parser.add_argument("--learning-rate", type=_learning_rate, default=TRAINING_DEFAULTS["learning_rate"], metavar="LR",
                        help=f"base learning rate, above 0 and at most {MAX_LEARNING_RATE:g} (default: %(default)g)")
    parser.add_argument("--weight-decay", type=_non_negative_float, default=TRAINING_DEFAULTS["weight_decay"],
                        help="AdamW weight decay (default: %(default)g)")
    parser.add_argument("--warmup", type=_non_negative_float, default=TRAINING_DEFAULTS["warmup_steps"],
                        help="warm-up: steps (>= 1) or a fraction of training (< 1); a cosine decay follows "
                        "(default: %(default)g)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                        help="bfloat16 mixed precision (default: on where the GPU supports it)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in the backward pass")
    parser.add_argument("--max-tokens-per-image", type=_positive_int, default=70, metavar="N",
                        help="supervised tokens sampled per page (default: 70, the original's)")
    parser.add_argument("--max-tiles", type=_tile_count, default=None, metavar="N", help="most tiles per page (default: the processor's)")
    parser.add_argument("--no-thumbnails", action="store_true", help="leave the thumbnails out of training")
    parser.add_argument("--merge-repeated-tokens", action="store_true",
                        help="supervise a token id that repeats on a page once, with the union of its masks")
    parser.add_argument("--loss-weights", type=_non_negative_float, nargs=4, default=None,
                        metavar=("SEG", "SIM", "L2", "SIG"),
                        action=_values_checked(lambda weights: sum(weights) > 0, "at least one weight above 0"),
                        help="weights of loss_seg (a per-location term of ours), loss_sim, loss_l2 and loss_sig "
                        "(default: 0 1 1 1, the authors' objective)")
    parser.add_argument("--seg-temperature", type=_finite_float, nargs=2, default=(10.0, -5.0), metavar=("SCALE", "BIAS"),
                        action=_values_checked(lambda values: values[0] > 0, "a positive SCALE"),
                        help="loss_seg's logit is SCALE * cosine + BIAS (default: 10 -5)")
    parser.add_argument("--learn-seg-temperature", action="store_true",
                        help="train loss_seg's scale and bias, starting from --seg-temperature")
    parser.add_argument("--save-steps", type=_positive_int, default=TRAINING_DEFAULTS["save_steps"], metavar="N",
                        help="checkpoint every N steps (default: %(default)s)")
    parser.add_argument("--logging-steps", type=_positive_int, default=TRAINING_DEFAULTS["logging_steps"], metavar="N",
                        help="log every N steps (default: %(default)s)")
    parser.add_argument("--num-workers", type=_at_most(_non_negative_int, MAX_NUM_WORKERS, "a non-negative integer"),
                        default=2, metavar="N", help=f"data-loading processes, at most {MAX_NUM_WORKERS} (default: 2)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is available")
    parser.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                        help="continue the training saved in --output, an earlier output of tokenocr train (its last "
                        "complete checkpoint, or CHECKPOINT); a finished training is not trained further")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help=TRUST_REMOTE_CODE_HELP)


def add_evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="DIR_OR_REPO",
                        help="converted folder, hub repo id, or original checkpoint folder")
    parser.add_argument("--data", required=True, metavar="DIR", help="token-mask dataset folder to evaluate on")
    parser.add_argument("--threshold", type=_threshold, default=None,
                        help="mask threshold on the cosine similarity, for IoU and F1 (default: the model's own, "
                        f"{DEFAULT_THRESHOLD} for the released models)")
    parser.add_argument("--k", type=_positive_int, default=5, help="k of retrieval precision@k (default: 5)")
    parser.add_argument("--num-queries", type=_non_negative_int, default=100, metavar="N", help="retrieval queries (default: 100)")
    parser.add_argument("--max-pages", type=_positive_int, default=None, metavar="N", help="evaluate the first N pages")
    parser.add_argument("--max-tiles", type=_tile_count, default=None, metavar="N", help="most tiles per page (default: the processor's)")
    parser.add_argument("--batch-size", type=_batch_size, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"tiles per vision-tower forward, 1 to {MAX_BATCH_SIZE} (default: {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: cuda when available, else cpu)")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="weights dtype (default: float32)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the retrieval queries' choice (default: 0)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures to FILE (a new file)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help=TRUST_REMOTE_CODE_HELP)


def add_make_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pdfs", nargs="+", metavar="PDF", help="PDF files, or folders (their PDFs, recursively)")
    parser.add_argument("--model", required=True, metavar="DIR_OR_REPO",
                        help="the model whose tokenizer the tokens come from (converted, trained or original folder, or "
                        "hub repo id)")
    parser.add_argument("--output", required=True, metavar="DIR", help="dataset folder to create")
    parser.add_argument("--pages", type=_pages, default=None, metavar="RANGES",
                        help="pages of each PDF, e.g. 1-3,7 (default: all)")
    parser.add_argument("--dpi", type=_dpi, default=DEFAULT_PDF_DPI,
                        help=f"rendering resolution, {MIN_DPI} to {MAX_DPI} (default: {DEFAULT_PDF_DPI})")
    parser.add_argument("--augment", choices=("none", "scan", "photo"), default="none",
                        help="make pages look scanned or photographed, masks moved alike (default: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the augmentations (default: 0)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run for --output")
    parser.add_argument("--trust-remote-code", action="store_true", help=TRUST_REMOTE_CODE_HELP)


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="TokenOCR model folder or hub repo id")
    parser.add_argument("--output", required=True, metavar="DIR", help="folder to create")
    parser.add_argument("--force", action="store_true", help="replace --output if it is an earlier export")


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tokenocr")
    except PackageNotFoundError:
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tokenocr", description="TokenOCR: token-level text-image similarity for document images.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_installed_version()}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    similarity = commands.add_parser(
        "similarity", help="per-token heatmaps, masks and boxes for text queries on document images",
        description="Write one heatmap and one mask PNG per query token and image (PDF pages included), and "
        "summary.json (tokens, scores, boxes, relevance).",
    )
    _add_model_arguments(similarity)
    similarity.add_argument("--image", "--images", dest="image", required=True, nargs="+", metavar="PATH",
                            help="document image(s) or PDF(s)")
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
    search.add_argument("--images", "--image", dest="images", required=True, nargs="+", metavar="PATH",
                        help="image or PDF files, folders (their image and PDF files) or glob patterns")
    search.add_argument("--out", required=True, metavar="FILE.jsonl", help="file to write (one JSON line per page and query)")
    search.add_argument("--resume", action="store_true", help="continue an earlier --out, skipping the finished pages")
    search.add_argument("--top-k", type=_positive_int, default=5, metavar="K", help="best pages printed per query (default: 5)")
    demo = commands.add_parser("demo", help="start the Gradio demo (needs the demo extra: gradio, pypdfium2)",
                               description="Serve the Gradio demo on this machine (see demo/README.md).")
    from .demo.app import add_demo_arguments

    add_demo_arguments(demo)
    train = commands.add_parser(
        "train", help="fine-tune (or train) a TokenOCR model on a token-mask dataset (needs the train extra)",
        description="Train with the original objective on transformers' Trainer; checkpoints go to --output, then the "
        "trained model. Multi-GPU: accelerate launch -m tokenocr.cli train ...",
    )
    add_train_arguments(train)
    evaluate = commands.add_parser(
        "evaluate", help="pointing accuracy, mask IoU / F1 and retrieval precision@k on a token-mask dataset",
        description="Measure a TokenOCR model on a token-mask dataset (needs the train extra).",
    )
    add_evaluate_arguments(evaluate)
    add_make_data_arguments(commands.add_parser(
        "make-data", help="token masks from PDF text layers, as a token-mask dataset (train / evaluate read it)",
        description="Render PDF pages, read each character's box from the text layer, tokenise the page text with the "
        "model's tokenizer and write each token's mask (the union of its characters' boxes). Pages without a text "
        "layer, encrypted or damaged files are skipped and counted.",
    ))
    add_export_arguments(commands.add_parser(
        "export", help="make a TokenOCR model folder hub-ready (remote code and auto_map added)",
        description="Copy a TokenOCR model folder (e.g. models/tokenocr-tiny-documents, a tokenocr train output) with "
        "the remote code and auto_map that let transformers alone load it with trust_remote_code=True.",
    ))
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

    total = similarity.check_inputs(args)  # before the model loads: a mistake costs a second
    finder = load_pipeline(args.model, args.device, args.dtype, args.trust_remote_code, args.batch_size)
    return f"wrote {similarity.run(args, finder, total)}"


def _run_search(args) -> str:
    from .commands import search

    work = search.plan(args)
    if work["pages"] and not work["todo"]:  # before the model loads: nothing is left to score
        return f"nothing to do: all {work['pages']} pages were scored already in {work['out']}"
    import torch
    from accelerate import PartialState

    from .loading import check_device, load_pipeline

    device = check_device(args.device)
    state = PartialState(cpu=device == "cpu" or not torch.cuda.is_available())
    if state.num_processes > 1:
        device = str(state.device)  # one process per device under accelerate launch / torchrun
    finder = load_pipeline(args.model, device, args.dtype, args.trust_remote_code, args.batch_size)
    out = search.run(args, finder, state, work)
    unreadable = [entry for entry in work["skipped"] if entry in work["todo"]]  # pages planned, then not readable
    note = f"; skipped {len(work['skipped'])} unreadable (named above)" if work["skipped"] else ""
    return f"scored {len(work['todo']) - len(unreadable)} of {work['pages']} pages{note}; results in {out}"


def _run_demo(args) -> str:
    from .demo.app import run_demo

    run_demo(args)
    return "demo stopped"


def _run_train(args) -> str:
    from .commands.training import run_train

    return run_train(args)


def _run_evaluate(args) -> str:
    from .commands.training import run_evaluate

    run_evaluate(args)
    return "evaluated" + (f"; figures in {args.json}" if args.json else "")


def _run_make_data(args) -> str:
    from .commands import make_data

    return make_data.run(args)


def _run_export(args) -> str:
    from .conversion.convert import export

    return f"wrote {export(args.model, args.output, args.force)}"


def _run_convert(args) -> str:
    from .conversion.convert import convert

    destination = convert(args.input, args.output, args.dtype, args.max_shard_size, args.force, args.repo_id,
                          args.thorough_verification, args.space_id, args.tokenizer)
    return f"wrote {destination}"


_COMMANDS = {
    "similarity": _run_similarity, "search": _run_search, "demo": _run_demo, "train": _run_train,
    "evaluate": _run_evaluate, "convert": _run_convert, "make-data": _run_make_data,
    "export": _run_export,
}
# What an interrupt leaves behind: nothing, except where a command says otherwise.
_NOTHING_WRITTEN = "interrupted; nothing was written"
_INTERRUPTED = {
    "train": lambda args: ("interrupted; the checkpoints saved so far stay in --output (continue with --resume)"
                           if _train_checkpoints_saved(args) else _NOTHING_WRITTEN),
    "make-data": "interrupted; the pages done so far are kept (continue with --resume)",
    # Only once a line was written (a single process writes --out directly; several write part files first).
    "search": lambda args: ("interrupted; the lines of the pages finished so far stay in --out (continue with --resume)"
                            if getattr(args, "lines_written", False) else _NOTHING_WRITTEN),
}


def _train_checkpoints_saved(args) -> bool:
    """Whether an interrupted `tokenocr train` leaves a checkpoint in --output to continue from."""
    from pathlib import Path

    from .commands.training import latest_complete_checkpoint

    try:
        return latest_complete_checkpoint(Path(args.output).expanduser().absolute()) is not None
    except OSError:
        return False


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, MemoryError):
        return f"out of memory ({text or 'MemoryError'}); try fewer or smaller images, fewer query tokens or --batch-size 1"
    if isinstance(error, (OSError, ImportError, ValueError, TypeError)) or type(error).__name__.endswith("Error"):
        return text or type(error).__name__
    return f"{type(error).__name__}: {text}"


def run_command(program: str, command, args, interrupted=_NOTHING_WRITTEN) -> int:
    """Run `command(args)`; report its outcome or any failure on one line. Returns the exit status. `interrupted` is
    what an interrupt leaves behind: a message, or a function of `args` that gives it."""

    def left_behind() -> str:
        return interrupted(args) if callable(interrupted) else interrupted

    try:
        with interrupt_on_termination():
            message = command(args)
    except KeyboardInterrupt:
        print(f"{program}: error: {left_behind()}", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every failure is one line, whatever raised it
        if was_interrupted():  # a signal that a library reported as its own error
            print(f"{program}: error: {left_behind()}", file=sys.stderr)
            return 130
        print(f"{program}: error: {printable(_one_line(error))}", file=sys.stderr)
        return 1
    print(f"{program}: {printable(message)}", file=sys.stderr)
    return 0


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return run_command("tokenocr", _COMMANDS[args.command], args, _INTERRUPTED.get(args.command, _NOTHING_WRITTEN))
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
