"""`tokenocr similarity`: per image and query, the query's picture (its map with its boxes), one heatmap and one mask
PNG per query token, one strip per query (all its tokens side by side, captioned), and `summary.json` (per query:
relevance, boxes with their scores, and each token's score and boxes)."""

import json
import os
import re
import sys
from pathlib import Path

from ..outputs import building_folder, check_output_location, check_replaceable, json_ready, move_into_place


PROGRAM = "tokenocr"
TOOL = "tokenocr similarity"  # written into summary.json: how an earlier output of this command is recognised


def display_name(path: str) -> str:
    """A path as text that can always be written to JSON (undecodable bytes of a file name shown as U+FFFD)."""
    return os.fsencode(path).decode("utf-8", "replace")


def safe_name(text: str) -> str:
    """`text` as part of a file name; a text of only spaces or punctuation (' ', '/') is named by its code points."""
    cleaned = re.sub(r"[^\w.-]+", "_", display_name(text).strip()).strip("._")
    return cleaned[:40] or "U" + "-".join(f"{ord(character):04X}" for character in display_name(text))[:39]


def foreign_entries(folder: Path) -> list[str]:
    """What in `folder` an earlier `tokenocr similarity` did not write (everything, if it is not such an output)."""
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        summary = None
    entries = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))
    if not isinstance(summary, dict) or summary.get("tool") != TOOL:
        return entries or ["no summary.json"]
    written = {"summary.json"}
    for image in summary.get("images", []):
        written.add(image.get("folder", ""))
        for query in image.get("queries", []):
            written.update((query.get("strip", ""), query.get("picture", "")))
            for token in query.get("tokens", []):
                written.update((token.get("heatmap", ""), token.get("mask", "")))
    return [entry for entry in entries if entry not in written]


def check_readable(path: str, pages: str | None) -> int:
    """
    A local `--image` file is an image PIL can open (header only) or a PDF holding the `pages` asked for; returns
    how many pages it stands for (1 for an image).
    """
    from PIL import Image, UnidentifiedImageError

    with open(path, "rb") as file:
        is_pdf = file.read(5) == b"%PDF-"
    if is_pdf:
        return pdf_pages_asked(path, pages)  # a damaged PDF or pages past its end: a ValueError naming it
    try:
        with Image.open(path):
            return 1
    except Image.DecompressionBombError as error:
        raise ValueError(f"--image '{display_name(path)}' is too large to decode safely ({error})") from None
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"--image '{display_name(path)}' is neither an image nor a PDF that can be read ({error})") from None


def pdf_pages_asked(path: str, pages: str | None) -> int:
    """
    How many pages of the PDF at `path` the `pages` ranges select, with pypdfium2 alone (no torch, no transformers:
    a page past the end is refused in a moment). Raises `ValueError` for a damaged or encrypted file or such a page.
    """
    from ..processing.settings_tokenocr import selected_pdf_pages

    try:
        import pypdfium2
    except ImportError as error:
        raise ImportError("Reading PDFs needs pypdfium2: pip install pypdfium2") from error
    name = f"'{display_name(path)}'"
    try:
        document = pypdfium2.PdfDocument(path)
    except pypdfium2.PdfiumError as error:
        raise ValueError(f"Cannot read PDF {name}: {error} (damaged, or encrypted with a password)") from None
    try:
        count = len(document)
    finally:
        document.close()
    if count == 0:
        raise ValueError(f"PDF {name} has no pages.")
    return len(selected_pdf_pages(count, pages, name))


def check_inputs(args) -> int:
    """Everything that can be checked before loading the model; returns how many pages the images stand for."""
    from ..processing.settings_tokenocr import check_queries

    check_queries(args.query)
    total = 0
    for image in args.image:
        if image.startswith(("http://", "https://")):
            total += 1
            continue
        if not os.path.exists(image):
            raise FileNotFoundError(f"--image '{display_name(image)}' does not exist")
        if os.path.isdir(image):
            raise ValueError(f"--image '{display_name(image)}' is a folder; give image or PDF files")
        total += check_readable(image, args.pages)
    destination = check_output_location(args.out, [args.model, *args.image], "--out")
    check_replaceable(destination, args.force, foreign_entries, "--out")
    return total


def iter_pages(paths: list[str], pages: str | None, dpi: int):
    """`(index, path, page number or None, RGB image)` for every image file and every selected PDF page."""
    from ..processing.image_processing_tokenocr import is_pdf, load_pdf_pages, to_rgb_image

    index = 0
    for path in paths:
        if is_pdf(path):
            for number, image in load_pdf_pages(path, pages, dpi):
                yield index, path, number, image
                index += 1
        else:
            yield index, path, None, to_rgb_image(path, index)
            index += 1


def write_token_pictures(token: dict, image, shown, threshold: float, folder: Path, stem: str) -> dict:
    """Write one token's heatmap and mask PNGs (made and released one token at a time); its summary entry."""
    import numpy as np
    import torch
    from PIL import Image

    from ..processing.visualization_tokenocr import token_visuals

    mask, _, heatmap = token_visuals(torch.from_numpy(token["similarity"]), image.size, threshold, shown)
    heatmap.save(folder / f"{stem}-heatmap.png")
    Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{stem}-mask.png")
    return {
        "token": token["token"], "token_id": token["token_id"], "score": token["score"], "boxes": token["boxes"],
        "heatmap": f"{folder.name}/{stem}-heatmap.png", "mask": f"{folder.name}/{stem}-mask.png",
    }


def run(args, finder, total: int | None = None) -> Path:
    """Write the results for `args` with the loaded pipeline `finder` (`total` pages, for the progress bar); returns the
    output folder."""
    from huggingface_hub.utils import tqdm

    from ..processing.visualization_tokenocr import query_strip, query_visuals, visual_image

    destination = Path(args.out).expanduser().absolute()
    threshold = finder.processor.image_processor.mask_threshold if args.threshold is None else args.threshold
    summary = {"tool": TOOL, "model": args.model, "threshold": threshold, "images": []}
    with building_folder(destination, PROGRAM) as building:
        pages = iter_pages(args.image, args.pages, args.dpi)
        for index, path, page, image in tqdm(pages, total=total, desc="Images", unit="image", file=sys.stderr):
            results = finder(image, list(args.query), threshold=threshold, max_tiles=args.max_tiles,
                             return_visuals=False, level="query")
            folder = building / (f"{index:03d}-{safe_name(Path(path).stem)}" + (f"-p{page}" if page else ""))
            folder.mkdir()
            shown = visual_image(image)
            entry = {"image": display_name(path), "size": [image.width, image.height], "folder": folder.name,
                     "queries": [], **({"page": page} if page else {})}
            for query_index, (query, found) in enumerate(zip(args.query, results)):
                tokens = found["tokens"]
                scale = finder.processor.map_scale(found["similarity"].shape, (image.height, image.width),
                                                   not finder.processor.image_processor.do_tiling)
                _, picture = query_visuals(found["similarity"], scale, image.size, threshold, shown, found["boxes"],
                                           found["box_scores"])
                picture.save(folder / f"q{query_index}-query.png")
                written = [
                    write_token_pictures(token, image, shown, threshold, folder,
                                         f"q{query_index}-t{token_index:02d}-{safe_name(token['token'])}")
                    for token_index, token in enumerate(tokens)
                ]
                relevance = found["score"]
                query_strip(image, tokens, title=f"{query!r} (relevance {relevance:.3f})").save(
                    folder / f"q{query_index}-strip.png")
                entry["queries"].append({"query": query, "relevance": relevance, "boxes": found["boxes"],
                                         "box_scores": found["box_scores"],
                                         "picture": f"{folder.name}/q{query_index}-query.png",
                                         "strip": f"{folder.name}/q{query_index}-strip.png", "tokens": written})
            summary["images"].append(entry)
        (building / "summary.json").write_text(
            json.dumps(json_ready(summary), indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
        move_into_place(building, destination)
    return destination
