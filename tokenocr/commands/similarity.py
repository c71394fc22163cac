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
    """A path as text that can always be written to JSON: undecodable bytes of a file name (and any other lone
    surrogate) shown as U+FFFD; every other character, '€' and 'ß' included, as it is."""
    try:
        return os.fsencode(path).decode("utf-8", "replace")
    except UnicodeEncodeError:  # a surrogate that is no file-name byte ('\ud800'): not one the system can hold
        return re.sub("[\ud800-\udfff]", "\ufffd", path)


def _kept_in_file_name(character: str) -> bool:
    """ASCII letters, digits, '_', '.' and '-' (no character a shell or another system reads specially), and every
    other visible character beyond ASCII ('€', 'ß', 'é', '中'): not spaces, control or format characters, nor U+FFFD."""
    if character.isascii():
        return character.isalnum() or character in "_.-"
    return character.isprintable() and not character.isspace() and character != "\ufffd"


def safe_name(text: str) -> str:
    """`text` as part of a file name, readable: runs of other characters become '_' (see `_kept_in_file_name`); a text
    of only spaces or punctuation (' ', '/') is named by its code points."""
    shown = display_name(text)
    cleaned = "".join(character if _kept_in_file_name(character) else "\0" for character in shown.strip())
    cleaned = re.sub("\0+", "_", cleaned).strip("._")
    return cleaned[:40] or "U" + "-".join(f"{ord(character):04X}" for character in shown)[:39]


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


def check_inputs(args) -> int:
    """Everything that can be checked before loading the model; returns how many pages the images stand for."""
    from ..processing.pages_tokenocr import page_numbers
    from ..processing.settings_tokenocr import check_queries

    check_queries(args.query)
    total = 0
    for image in args.image:
        numbers = page_numbers(image, args.pages, name=f"--image '{display_name(image)}'")  # headers only
        total += 1 if numbers is None else len(numbers)
    destination = check_output_location(args.out, [args.model, *args.image], "--out")
    check_replaceable(destination, args.force, foreign_entries, "--out")
    return total


class PictureWriter:
    """Writes each picture of one page as the post-processing makes it (`page_results(on_picture=...)`), so that one
    picture is held at a time; remembers the file names for the summary."""

    def __init__(self, folder: Path):
        self.folder, self.names = folder, {}

    def __call__(self, query_index: int, token_index: int | None, result: dict, heatmap, mask) -> None:
        import numpy as np
        from PIL import Image

        if token_index is None:  # the query's own picture (its mask is not written)
            self.names[query_index, None] = self._save(heatmap, f"q{query_index}-query.png")
            return
        stem = f"q{query_index}-t{token_index:02d}-{safe_name(result['token'])}"
        self.names[query_index, token_index] = (self._save(heatmap, f"{stem}-heatmap.png"),
                                                self._save(Image.fromarray(mask.astype(np.uint8) * 255), f"{stem}-mask.png"))

    def _save(self, picture, name: str) -> str:
        picture.save(self.folder / name)
        return f"{self.folder.name}/{name}"

    def summary(self, query_index: int, query: str, found: dict, image) -> dict:
        """The query's summary entry; also writes the strip of all its tokens side by side."""
        from ..processing.visualization_tokenocr import query_strip

        strip = f"q{query_index}-strip.png"
        query_strip(image, found["tokens"], title=f"{query!r} (relevance {found['score']:.3f})").save(self.folder / strip)
        tokens = []
        for index, token in enumerate(found["tokens"]):
            heatmap, mask = self.names[query_index, index]
            tokens.append({**{key: token[key] for key in ("token", "token_id", "score", "boxes")},
                           "heatmap": heatmap, "mask": mask})
        return {"query": query, "relevance": found["score"], "boxes": found["boxes"], "box_scores": found["box_scores"],
                "picture": self.names[query_index, None], "strip": f"{self.folder.name}/{strip}", "tokens": tokens}


def run(args, finder, total: int | None = None) -> Path:
    """
    Write the results for `args` with the loaded pipeline `finder`'s model and processor (`total` pages, for the
    progress bar); returns the output folder. Each page is scored once for all queries
    (`TokenOCRProcessor.page_similarity`); its results and pictures come from the post-processing
    (`page_results`), each picture written and released as it is made.
    """
    from huggingface_hub.utils import tqdm

    from ..processing.pages_tokenocr import read_pages

    model, processor = finder.model, finder.processor
    destination = Path(args.out).expanduser().absolute()
    threshold = processor.image_processor.mask_threshold if args.threshold is None else args.threshold
    encoded = processor(text=list(args.query), return_tensors="pt")
    query_ids = [ids[: int(n)].tolist() for ids, n in zip(encoded["input_ids"], encoded["attention_mask"].sum(1))]
    summary = {"tool": TOOL, "model": args.model, "threshold": threshold, "images": []}
    with building_folder(destination, PROGRAM) as building:
        pages = read_pages(args.image, args.pages, args.dpi)
        for index, read in enumerate(tqdm(pages, total=total, desc="Images", unit="image", file=sys.stderr)):
            path, page, image = args.image[read.index], read.number, read.image
            maps = processor.page_similarity(model, image, encoded["input_ids"], encoded["attention_mask"],
                                             args.max_tiles, args.batch_size)
            folder = building / (f"{index:03d}-{safe_name(Path(path).stem)}" + (f"-p{page}" if page else ""))
            folder.mkdir()
            entry = {"image": display_name(path), "size": [image.width, image.height], "folder": folder.name,
                     "queries": [], **({"page": page} if page else {})}
            writer = PictureWriter(folder)
            results = processor.page_results(maps, query_ids, (image.height, image.width), threshold, "query",
                                             list(args.query), image=image, on_picture=writer)
            entry["queries"] = [writer.summary(index, query, found, image)
                                for index, (query, found) in enumerate(zip(args.query, results))]
            summary["images"].append(entry)
        (building / "summary.json").write_text(
            json.dumps(json_ready(summary), indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
        move_into_place(building, destination)
    return destination
