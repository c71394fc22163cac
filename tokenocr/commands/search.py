"""
`tokenocr search`: rank a collection of pages (images, folders, globs, PDFs) for a set of queries.

One vision pass per page scores every query. Each page's lines (one JSON object per page and query: relevance (the
query's score), its best box and each token's score and boxes) are appended to the output as soon as the page is done, so an interrupted run keeps
what it wrote and `--resume` skips finished pages. Under `accelerate launch` / `torchrun` the pages are split
between the processes with accelerate's `PartialState.split_between_processes`; each process writes its own part
file beside the output and the main process merges them, in page order, into the output at the end.
"""

import contextlib
import glob
import itertools
import json
import os
import re
import stat
import sys
from collections import deque
from pathlib import Path

from ..outputs import OutputError, json_ready, printable


PROGRAM = "tokenocr"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".gif", ".pdf")


def _walk(folder: str) -> list[str]:
    """The image and PDF files under `folder`, subfolders included; links to folders are not followed (no loops)."""
    found = []
    for root, folders, names in os.walk(folder, followlinks=False):
        folders.sort()
        found.extend(os.path.join(root, name) for name in sorted(names))
    return found


def _glob(pattern: str) -> list[str]:
    """
    The paths matching a glob `pattern` as `glob.glob(pattern, recursive=True)` gives them (hidden files and folders
    only where the pattern names them with a leading dot, a `**` inside a name works as `*`, the pattern's fixed
    part spelled as written), except that `**` never descends a link to a folder: a link loop would otherwise list
    files endlessly. pathlib's matching expands `**` that way.
    """
    parts = pattern.split(os.sep)
    fixed = next((index for index, part in enumerate(parts) if glob.has_magic(part)), len(parts))
    if fixed == len(parts):
        return [pattern] if os.path.lexists(pattern) else []
    prefix = os.sep.join(parts[:fixed]) or (os.sep if pattern.startswith(os.sep) else "")
    rest = [part if part == "**" else re.sub(r"\*\*+", "*", part) for part in parts[fixed:] if part]
    if rest[-1] == "**":  # pathlib's trailing `**` lists folders only; glob's lists everything below
        rest.append("*")
    hidden_named = any(part.startswith(".") for part in rest)
    root = Path(prefix or ".")
    found = []
    for path in root.glob("/".join(rest)):
        relative = path.relative_to(root)
        if not hidden_named and any(part.startswith(".") for part in relative.parts):
            continue
        found.append(os.path.join(prefix, str(relative)) if prefix else str(relative))
    return sorted(found)


def list_sources(specs: list[str]) -> list[str]:
    """
    Every image or PDF file named by `specs` (files, folders searched recursively, glob patterns), in a deterministic
    order (sorted paths). Folders and globs contribute only files with an image or PDF extension; a file named twice
    (overlapping inputs, links) is listed once.
    """
    files, seen = [], set()
    for spec in specs:
        if os.path.isdir(spec):
            found = _walk(spec)
        elif os.path.isfile(spec):
            found = [spec]
        else:
            found = [path for path in _glob(spec) if os.path.isfile(path)]
        if not os.path.isfile(spec):
            found = [path for path in found if os.path.isfile(path) and Path(path).suffix.lower() in IMAGE_EXTENSIONS]
        if not found:
            raise FileNotFoundError(f"--images '{spec}' names no image or PDF file")
        for path in found:
            if os.path.realpath(path) not in seen:
                seen.add(os.path.realpath(path))
                files.append(path)
    return files


def list_pages(files: list[str], pages: str | None, skipped: list | None = None) -> list[dict]:
    """
    One `{"image", "page"}` entry per image file and per selected PDF page (page None for images). A PDF that cannot
    be opened (damaged, encrypted) is named on one line and added to `skipped` (when given; else it is an error).
    """
    from ..processing.image_processing_tokenocr import is_pdf, pdf_page_numbers

    entries = []
    for file in files:
        if is_pdf(file):
            try:
                numbers = pdf_page_numbers(file, pages)
            except ValueError as error:
                if skipped is None:
                    raise
                print(printable(f"{PROGRAM}: skipped {file!r}: {' '.join(str(error).split())}"), file=sys.stderr)
                skipped.append({"image": file, "page": None})
                continue
            entries.extend({"image": file, "page": number} for number in numbers)
        else:
            entries.append({"image": file, "page": None})
    return entries


def _key(entry: dict) -> tuple:
    return entry["image"], entry["page"]


LINE_START = b'{"image": '  # how every line this command writes begins (json.dumps keeps the key order)


def _is_output_line(line) -> bool:
    """Whether a decoded line has the fields, of the types, that `page_lines` writes (so that `print_top` and the page
    bookkeeping can rely on them)."""
    number = (int, float)
    return (isinstance(line, dict) and isinstance(line.get("image"), str) and isinstance(line.get("query"), str)
            and (line.get("page") is None or (type(line.get("page")) is int and line["page"] >= 1))
            and isinstance(line.get("relevance"), number) and not isinstance(line.get("relevance"), bool)
            and isinstance(line.get("tokens"), list))


def read_earlier_output(path: Path) -> tuple[dict, int, int]:
    """`{(image, page): queries with a line}` of an earlier output, the byte length of its complete lines, and how
    many bytes were read."""
    seen, complete_length = {}, 0
    foreign = OutputError(f"--out '{path}' is not an earlier output of tokenocr search; choose another file")
    with open(path, "rb") as file:
        for raw in file:
            if not raw.endswith(b"\n"):
                # The last line of a killed run is rewritten, but only after lines of ours, and only if it starts
                # as ours: a file that merely lacks a final newline is somebody else's.
                if not seen or not raw.startswith(LINE_START):
                    raise foreign
                break
            try:
                line = json.loads(raw)
            except ValueError:
                raise foreign from None
            if not _is_output_line(line):
                raise foreign
            key, query = (line["image"], line["page"]), line["query"]
            seen.setdefault(key, set()).add(query)
            complete_length += len(raw)
        read_size = file.tell()  # what was read: a line appended after this makes the file 'changed'
    return seen, complete_length, read_size


def _encoded(line: dict) -> bytes:
    """One output line as UTF-8 JSON. A file name that is not valid UTF-8 (held as surrogate escapes) is written with
    JSON `\\u` escapes instead, which read back to the same name."""
    try:
        return (json.dumps(json_ready(line), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(json_ready(line), allow_nan=False) + "\n").encode("ascii")


def page_lines(entry: dict, queries: list[str], results: list, skip_queries=()) -> list[bytes]:
    """One JSON line per query of a page from its query-level results: relevance (the query's score), its best box
    (`null` when none passes the threshold) with its score, and each token's score and boxes."""
    lines = []
    for query, found in zip(queries, results):
        if query in skip_queries:
            continue
        line = {"image": entry["image"], "page": entry["page"], "query": query, "relevance": found["score"],
                "box": found["boxes"][0] if found["boxes"] else None,
                "box_score": found["box_scores"][0] if found["box_scores"] else None,
                "tokens": [{key: token[key] for key in ("token", "token_id", "score", "boxes")}
                           for token in found["tokens"]]}
        lines.append(_encoded(line))
    return lines


def check_output(args) -> Path:
    """The output file, refused when it is an input, inside the model folder, or exists without `--resume`."""
    out = Path(args.out).expanduser().absolute()
    if out.is_dir() or out.is_symlink():
        raise OutputError(f"--out '{args.out}' is a folder or a link; give a .jsonl file name")
    if not out.parent.is_dir():
        raise OutputError(f"cannot write --out '{args.out}': folder '{out.parent}' does not exist")
    model = Path(args.model).expanduser()
    if model.is_dir() and Path(os.path.realpath(model)) in Path(os.path.realpath(out)).parents:
        raise OutputError(f"--out '{args.out}' lies inside the model folder; choose another place")
    if out.exists() and not args.resume:
        raise OutputError(f"--out '{args.out}' already exists; pass --resume to continue it, or choose another file")
    if out.exists() and not stat.S_ISREG(os.stat(out).st_mode):
        raise OutputError(f"--out '{args.out}' is not a regular file; give a .jsonl file name")
    return out


def _pdf_pages(file: str, numbers: list[int], dpi: int):
    """`(number, image, error)` for the pages `numbers` of one PDF, opened once for all of them (not once per page:
    that would read a long document once per page). When that fails, the first page not yet given is tried alone,
    so that it gets its own outcome (a page that renders, or its own error), and the rest continue together."""
    from ..processing.image_processing_tokenocr import load_pdf_pages

    remaining = list(numbers)
    while remaining:
        try:
            for number, image in load_pdf_pages(file, ",".join(map(str, remaining)), dpi):
                remaining.pop(0)
                yield number, image, None
        except (ValueError, OSError):
            number = remaining.pop(0)
            try:
                yield number, next(image for _, image in load_pdf_pages(file, str(number), dpi)), None
            except (ValueError, OSError) as error:
                yield number, None, error


def _decoded(todo: list[dict], dpi: int):
    """`(entry, image, error)` for each entry of `todo`, in order; the consecutive pages of one PDF share one opening."""
    from ..processing.image_processing_tokenocr import to_rgb_image

    for (file, is_pdf_page), group in itertools.groupby(todo, key=lambda entry: (entry["image"], entry["page"] is not None)):
        group = list(group)
        if is_pdf_page:
            for entry, (_, image, error) in zip(group, _pdf_pages(file, [entry["page"] for entry in group], dpi)):
                yield entry, image, error
            continue
        for entry in group:
            try:
                yield entry, to_rgb_image(file), None
            except (ValueError, OSError) as error:
                yield entry, None, error


def _images(todo: list[dict], dpi: int, pending: deque, skipped: list):
    """
    The images of `todo`, decoded one at a time; each entry is queued in `pending` as its image is handed out. A page
    that cannot be read (a corrupt image, a damaged PDF page) is reported on one line, added to `skipped`, and the
    search goes on.
    """
    for entry, image, error in _decoded(todo, dpi):
        if error is not None:
            where = entry["image"] + (f" page {entry['page']}" if entry["page"] else "")
            print(printable(f"{PROGRAM}: skipped {where!r}: {' '.join(str(error).split())}"), file=sys.stderr)
            skipped.append(entry)
            continue
        pending.append(entry)
        yield image


def score_pages(finder, todo: list[dict], args, seen: dict, write, skipped: list) -> int:
    """Run the pipeline over `todo`, streaming, and `write` each page's new lines as soon as it is done."""
    from huggingface_hub.utils import tqdm

    pending = deque()
    results = finder(_images(todo, args.dpi, pending, skipped), list(args.query), threshold=args.threshold,
                     max_tiles=args.max_tiles, return_visuals=False, level="query")
    count = 0
    for result in tqdm(results, total=len(todo), desc="Pages", unit="page", file=sys.stderr):
        entry = pending.popleft()
        write(page_lines(entry, args.query, result, seen.get(_key(entry), ())))
        count += 1
    return count


def print_top(out: Path, queries: list[str], top_k: int) -> None:
    best = {query: [] for query in queries}
    with open(out, encoding="utf-8") as file:
        for raw in file:
            line = json.loads(raw)
            if line["query"] in best:
                best[line["query"]].append((line["relevance"], line["image"], line["page"]))
    for query in queries:
        print(printable(f"{query!r}:"))
        for relevance, image, page in sorted(best[query], key=lambda item: -item[0])[:top_k]:
            print(printable(f"  {relevance:+.4f}  {image}" + (f"  page {page}" if page else "")))


def plan(args) -> dict:
    """What a run will do, checked before any model is loaded: the output, the pages left to score, and what an
    earlier output (with `--resume`) already holds."""
    from ..processing.settings_tokenocr import check_queries

    check_queries(args.query)
    out = check_output(args)
    sources = list_sources(args.images)
    if os.path.realpath(out) in {os.path.realpath(source) for source in sources}:
        raise OutputError(f"--out '{args.out}' is also one of the --images inputs; choose another file")
    skipped = []
    entries = list_pages(sources, args.pages, skipped)
    # size None: the file is ours to create
    seen, length, size = read_earlier_output(out) if out.exists() else ({}, 0, None)
    todo = [entry for entry in entries if not set(args.query) <= seen.get(_key(entry), set())]
    return {"out": out, "todo": todo, "seen": seen, "length": length, "size": size, "pages": len(entries),
            "skipped": skipped}


@contextlib.contextmanager
def output_file(work: dict):
    """
    The output opened for this run alone: created exclusively when it did not exist, else locked (an advisory lock,
    where the system has one) and checked unchanged since `plan` read it; then cut back to its complete lines and
    positioned at their end. Another search on the same file is refused instead of interleaving with it.
    """
    out = work["out"]
    busy = OutputError(f"--out '{out}' is being written by another tokenocr search (or changed since this one "
                       "started); wait for it, or choose another file")
    created = work["size"] is None
    try:
        file = open(out, "xb") if created else open(out, "r+b")
    except FileExistsError:
        raise busy from None
    with file:
        _lock(file, busy)
        if not created and os.fstat(file.fileno()).st_size != work["size"]:
            raise busy
        file.truncate(work["length"])
        file.seek(work["length"])
        try:
            yield file
        except BaseException:
            if created:
                _remove_if_empty_and_ours(file, out)
            raise


def _lock(file, busy: OutputError) -> None:
    try:
        import fcntl

        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # no advisory locks here (Windows): the size check still applies
        pass
    except OSError:
        raise busy from None


def _remove_if_empty_and_ours(file, out: Path) -> None:
    """A run that created the output and failed before its first line leaves nothing in the way of a plain rerun;
    decided while the file is still open and locked, and only if the path is still that file."""
    try:
        here, there = os.fstat(file.fileno()), os.stat(out)
    except OSError:
        return
    if here.st_size == 0 and os.path.samestat(here, there):
        out.unlink()


def run(args, finder, state, work: dict) -> Path:
    """Score `work["todo"]` (from `plan`) with `finder`; `state` is accelerate's `PartialState`."""
    out = work["out"]
    if state.num_processes == 1:
        def write(lines):
            file.write(b"".join(lines))
            file.flush()
            args.lines_written = True  # an interrupt from now on leaves these lines in --out (the CLI says so)

        with output_file(work) as file:
            score_pages(finder, work["todo"], args, work["seen"], write, work["skipped"])
    else:
        _run_distributed(out, work, finder, args, state)
    if state.is_main_process:
        print_top(out, args.query, args.top_k)
    return out


def _part_files(out: Path, state) -> list[Path]:
    return [out.with_name(f".{out.name}.part-{index}-of-{state.num_processes}") for index in range(state.num_processes)]


def _run_distributed(out: Path, work: dict, finder, args, state) -> None:
    """Each process scores a contiguous share of the pages into its part file; the main process appends them in
    process order (= page order) to the output, then removes them."""
    parts = _part_files(out, state)
    with state.split_between_processes(work["todo"]) as share, open(parts[state.process_index], "wb") as part:
        score_pages(finder, share, args, work["seen"], lambda lines: (part.writelines(lines), part.flush()),
                    work["skipped"])
    state.wait_for_everyone()
    if state.is_main_process:
        with output_file(work) as file:
            for part in parts:
                file.write(part.read_bytes())
        for part in parts:
            part.unlink()
    state.wait_for_everyone()
