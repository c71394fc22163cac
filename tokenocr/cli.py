# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
The `tokenocr` command.

    tokenocr similarity --model DIR_OR_REPO --image PATH [PATH...] --query TEXT [TEXT...] --out DIR
                        [--threshold T] [--max-tiles N] [--device D] [--dtype T] [--batch-size N] [--force]
    tokenocr convert ...      (the same as tokenocr-convert)
"""

import argparse
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

from PIL import Image


PROGRAM = "tokenocr"
MODEL_HELP = (
    "--model is required: a converted TokenOCR folder (made with `tokenocr-convert --input ORIGINAL --output DIR`), "
    "a hub repo id such as org/TokenOCR, or an original TokenOCR checkpoint folder (config.json with "
    "model_type internvl_chat)"
)


class CommandError(Exception):
    """A problem with the command's input; the message is the one-line reason shown to the user."""


def _is_original_checkpoint(model: str) -> bool:
    config = Path(model) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "internvl_chat"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return False


def build_pipeline(model: str, device: str | None, dtype: str | None):
    """A `token-similarity` pipeline for a converted folder, a hub repo id or an original checkpoint folder."""
    import torch
    from transformers import pipeline

    torch_dtype = getattr(torch, dtype) if dtype else None
    if _is_original_checkpoint(model):
        from tokenocr.conversion import load_original
        from tokenocr.processing import TokenSimilarityPipeline

        network, processor = load_original(model, dtype=torch_dtype or torch.float32)
        return TokenSimilarityPipeline(
            model=network, processor=processor, task="token-similarity", device=device or "cpu"
        )
    if not Path(model).is_dir() and not re.fullmatch(r"[\w.-]+/[\w.-]+", model):
        raise CommandError(f"--model '{model}' is not a folder or a hub repo id. {MODEL_HELP}")
    import tokenocr  # noqa: F401  (registers the task for folders without remote code)

    return pipeline(
        "token-similarity", model=model, trust_remote_code=True, device=device or "cpu", dtype=torch_dtype or "auto"
    )


def _safe_name(text: str) -> str:
    cleaned = re.sub(r"[^\w.-]+", "_", text.strip()).strip("._")
    return cleaned[:40] or "token"


def _check_images(paths: list[str]) -> None:
    from tokenocr.processing.image_processing_tokenocr import to_rgb_image

    for index, path in enumerate(paths):
        to_rgb_image(path, index)  # raises naming the file: missing, unreadable, truncated or zero-size


def run_similarity(args) -> Path:
    from huggingface_hub.utils import tqdm

    from tokenocr.conversion.convert import move_into_place
    from tokenocr.processing import prepare_query, relevance_score
    from tokenocr.processing.image_processing_tokenocr import to_rgb_image

    destination = Path(args.out).expanduser().absolute()
    if destination.exists() and not args.force:
        raise CommandError(f"--out '{args.out}' already exists; pass --force to replace it")
    if not destination.parent.is_dir():
        raise CommandError(f"cannot write '{args.out}': folder '{destination.parent}' does not exist")
    for query in args.query:
        prepare_query(query)
    _check_images(args.image)
    finder = build_pipeline(args.model, args.device, args.dtype)

    try:
        building = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=destination.parent))
    except OSError as error:
        raise CommandError(f"cannot write '{args.out}': {error}") from None
    try:
        summary = {"model": args.model, "threshold": args.threshold, "images": []}
        for index, path in enumerate(tqdm(args.image, desc="Images", unit="image", file=sys.stderr)):
            image = to_rgb_image(path, index)
            results = finder(
                image, list(args.query), threshold=args.threshold, max_tiles=args.max_tiles, batch_size=args.batch_size
            )
            folder = building / f"{index:03d}-{_safe_name(Path(path).stem)}"
            folder.mkdir()
            entry = {"image": str(path), "size": [image.width, image.height], "queries": []}
            for query_index, (query, tokens) in enumerate(zip(args.query, results)):
                token_entries = []
                for token_index, token in enumerate(tokens):
                    stem = f"q{query_index}-t{token_index:02d}-{_safe_name(token['token'])}"
                    token["heatmap"].save(folder / f"{stem}-heatmap.png")
                    Image.fromarray(token["mask"].astype("uint8") * 255).save(folder / f"{stem}-mask.png")
                    token_entries.append({
                        "token": token["token"], "token_id": token["token_id"], "score": token["score"],
                        "boxes": token["boxes"], "heatmap": f"{folder.name}/{stem}-heatmap.png",
                        "mask": f"{folder.name}/{stem}-mask.png",
                    })
                entry["queries"].append({"query": query, "relevance": relevance_score(tokens), "tokens": token_entries})
            summary["images"].append(entry)
        (building / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        move_into_place(building, destination, force=args.force)
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    return destination


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        if "--model" in message and "required" in message:
            message = MODEL_HELP
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROGRAM, description="TokenOCR: token-level text-image similarity for document images.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    similarity = commands.add_parser(
        "similarity", help="per-token heatmaps, masks and boxes for text queries on document images",
        description="Write one heatmap and one mask PNG per query token and image, and summary.json (tokens, "
        "scores, boxes, relevance).",
    )
    similarity.add_argument("--model", required=True, metavar="DIR_OR_REPO",
                            help="converted folder, hub repo id, or original checkpoint folder")
    similarity.add_argument("--image", required=True, nargs="+", metavar="PATH", help="document image(s)")
    similarity.add_argument("--query", required=True, nargs="+", metavar="TEXT", help="text to look for")
    similarity.add_argument("--out", required=True, metavar="DIR", help="folder to create")
    similarity.add_argument("--threshold", type=float, default=0.2, help="mask threshold on the cosine similarity")
    similarity.add_argument("--max-tiles", type=int, default=None, metavar="N", help="most tiles per image (1-12)")
    similarity.add_argument("--device", default=None, help="cpu (default), cuda, cuda:1, ...")
    similarity.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None)
    similarity.add_argument("--batch-size", type=int, default=4, metavar="N", help="tiles per vision-tower forward")
    similarity.add_argument("--force", action="store_true", help="replace --out if it exists")
    commands.add_parser("convert", help="the same as tokenocr-convert", add_help=False)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["convert"]:
        from tokenocr.conversion.convert import main as convert_main

        return convert_main(argv[1:])
    args = build_parser().parse_args(argv)
    from tokenocr.conversion.convert import ConversionError

    try:
        destination = run_similarity(args)
    except KeyboardInterrupt:
        print(f"{PROGRAM}: error: interrupted; '{args.out}' was not written", file=sys.stderr)
        return 130
    except (CommandError, ConversionError, ValueError, TypeError, OSError, ImportError) as error:
        print(f"{PROGRAM}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    print(f"{PROGRAM}: wrote {destination}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
