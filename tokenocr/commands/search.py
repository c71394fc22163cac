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
    from ..processing.pages_tokenocr import is_pdf, page_numbers

    entries = []
    for file in files:
        if not is_pdf(file):
            entries.append({"image": file, "page": None})  # read, and checked, when its turn comes
            continue
        try:
            numbers = page_numbers(file, pages)
        except ValueError as error:
            if skipped is None:
                raise
            _report_skipped(file, error)
            skipped.append({"image": file, "page": None})
            continue
        entries.extend({"image": file, "page": number} for number in numbers)
    return entries


def _report_skipped(where: str, error: Exception) -> None:
    print(printable(f"{PROGRAM}: skipped {where!r}: {' '.join(str(error).split())}"), file=sys.stderr)


def _key(entry: dict) -> tuple:
    return entry["image"], entry["page"]


LINE_START = b'{"image": '  # how every line this command writes begins (json.dumps keeps the key order)
# The longest line this command writes (`_encoded` refuses a longer one): a page and query's line is a few kilobytes
# (a 256-token query with hundreds of boxes per token stays far below). `--resume` reads an earlier output line by
# line with this bound, so a file with a longer line is not ours and is refused without being read into memory.
MAX_LINE_BYTES = 64 * 1024 * 1024


def _is_output_line(line) -> bool:
    """Whether a decoded line has the fields, of the types, that `page_lines` writes (so that `print_top` and the page
    bookkeeping can rely on them)."""
    number = (int, float)
    return (isinstance(line, dict) and isinstance(line.get("image"), str) and isinstance(line.get("query"), str)
            and (line.get("page") is None or (type(line.get("page")) is int and line["page"] >= 1))
            and isinstance(line.get("relevance"), number) and not isinstance(line.get("relevance"), bool)
            and isinstance(line.get("tokens"), list))


def _is_torn_line(raw: bytes) -> bool:
    """Whether an unterminated last line can be the start of a line of ours, cut short by a kill or a full disk: it
    begins as ours do (or is a beginning of that), is UTF-8 up to a character cut in two, and is not a complete JSON
    value of another shape (a file that merely lacks its final newline is somebody else's)."""
    if not (raw.startswith(LINE_START) or LINE_START.startswith(raw)):
        return False
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.reason != "unexpected end of data":
            return False
        text = raw[:error.start].decode("utf-8", "replace")
    try:
        line = json.loads(text)
    except ValueError:
        return _begins_like_ours(text)
    return _is_output_line(line)  # a whole line of ours that lost only its newline (it is scored again)


def _begins_like_ours(text: str) -> bool:
    """Whether `text` is a beginning of `{"image": "<name>", "page": ...`, as every line of ours begins: once the
    name is whole, what follows it must be (a beginning of) `, "page": `."""
    head = LINE_START.decode()
    if len(text) <= len(head):
        return head.startswith(text)
    rest = text[len(head):]
    if not rest.startswith('"'):
        return False
    try:
        _, end = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        return True  # the name itself was cut
    after, follows = rest[end:], ', "page": '
    return after.startswith(follows) or follows.startswith(after)


def read_earlier_output(path: Path) -> tuple[dict, int, int]:
    """
    `{(image, page): queries with a line}` of an earlier output, the byte length of its complete lines, and how many
    bytes were read. Lines are read with the bound `MAX_LINE_BYTES`. An unterminated last line that is the start of
    a line of ours (a killed run's, or one cut short by a full disk) is left out of the complete length, so that the
    run cuts it and scores its page again; any other content refuses the file.
    """
    seen, complete_length = {}, 0
    foreign = OutputError(f"--out '{path}' is not an earlier output of tokenocr search; choose another file")
    with open(path, "rb") as file:
        while raw := file.readline(MAX_LINE_BYTES + 1):
            if len(raw) > MAX_LINE_BYTES:  # longer than any line of ours: not read further
                raise foreign
            if not raw.endswith(b"\n"):
                # Without a complete line of ours before it, only a torn line that holds at least the beginning of
                # its image name is cut: a file of a few bytes that merely could be one is somebody else's.
                if not _is_torn_line(raw) or (not seen and not raw.startswith(LINE_START + b'"')):
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
    JSON `\\u` escapes instead, which read back to the same name. A line longer than `MAX_LINE_BYTES` is refused (it
    could not be read back by `--resume`)."""
    try:
        encoded = (json.dumps(json_ready(line), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    except UnicodeEncodeError:
        encoded = (json.dumps(json_ready(line), allow_nan=False) + "\n").encode("ascii")
    if len(encoded) > MAX_LINE_BYTES:
        raise OutputError(f"the line of {line['image']!r} page {line['page']} for query {line['query'][:30]!r} would "
                          f"be {len(encoded)} bytes, more than the {MAX_LINE_BYTES} a tokenocr search line may hold; "
                          "try a higher --threshold (fewer boxes) or a shorter query")
    return encoded


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


def _read(todo: list[dict], dpi: int):
    """`(entry, page)` for each entry of `todo`, in order, read by the library's page reader with errors kept (a page
    that cannot be read has `page.error`); the consecutive pages of one PDF share one opening."""
    from ..processing.pages_tokenocr import read_pages

    for (file, is_pdf_page), group in itertools.groupby(todo, key=lambda entry: (entry["image"], entry["page"] is not None)):
        group = list(group)
        if not is_pdf_page:
            for entry in group:
                yield entry, next(read_pages([file], skip_errors=True))
            continue
        wanted = {entry["page"]: entry for entry in group}
        for page in read_pages([file], ",".join(str(number) for number in wanted), dpi, skip_errors=True):
            if page.number is None:  # the document itself cannot be read now: every page of the group is skipped
                yield from ((entry, page) for entry in wanted.values())
                break
            yield wanted.pop(page.number), page


def _images(todo: list[dict], dpi: int, pending: deque, skipped: list):
    """
    The images of `todo`, decoded one at a time; each entry is queued in `pending` as its image is handed out. A page
    that cannot be read (a corrupt image, a damaged PDF page) is reported on one line, added to `skipped`, and the
    search goes on.
    """
    for entry, page in _read(todo, dpi):
        if page.error is not None:
            _report_skipped(entry["image"] + (f" page {entry['page']}" if entry["page"] else ""), page.error)
            skipped.append(entry)
            continue
        pending.append(entry)
        yield page.image


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


_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)  # where the system has it; O_EXCL alone already refuses a link at a new name
_BINARY = getattr(os, "O_BINARY", 0)


def _create(path: Path):
    """A new file at `path`, open for writing without buffering. Created exclusively: whatever is already at that name
    (a file, a link, even one to nowhere) raises FileExistsError and is never followed or changed."""
    return open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NO_FOLLOW | _BINARY, 0o666), "wb", buffering=0)


def _open_existing(path: Path):
    """The existing regular file at `path`, open for reading and writing without buffering and without following a
    link (a link put there since `check_output` looked is refused)."""
    try:
        file = open(os.open(path, os.O_RDWR | _NO_FOLLOW | _BINARY), "r+b", buffering=0)
    except OSError as error:
        raise OutputError(f"--out '{path}' cannot be opened ({error.strerror or error}); give a .jsonl file name "
                          "that is not a link") from None
    if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
        file.close()
        raise OutputError(f"--out '{path}' is not a regular file; give a .jsonl file name")
    return file


def _write_failure(out: Path):
    """What a failed write to the output says, given the reason."""
    return lambda reason: (f"cannot write --out '{out}' ({reason}); the lines of the pages finished so far are kept: "
                           "free some space (or mend the cause) and continue it with --resume")


class _Writer:
    """
    Appends bytes to an unbuffered file, all of them (a short write is continued). A failed write (a full disk, a quota,
    an I/O error) cuts the file back to its last complete line where it can (a torn line left anyway is cut by
    `--resume`) and raises one line, `failure(reason)`.
    """

    def __init__(self, file, failure):
        self.file, self.failure = file, failure
        self.end = self.complete = file.tell()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                written = self.file.write(view)
                if not written:  # a regular file never takes nothing; do not spin
                    raise OSError(f"the write made no progress ({len(view)} bytes left)")
                view = view[written:]
        except OSError as error:
            with contextlib.suppress(OSError):
                self.file.truncate(self.complete)
            raise OutputError(self.failure(error.strerror or str(error))) from error
        newline = data.rfind(b"\n")
        if newline >= 0:
            self.complete = self.end + newline + 1
        self.end += len(data)


@contextlib.contextmanager
def output_file(work: dict):
    """
    The output opened for this run alone: created exclusively when it did not exist, else opened without following a
    link, locked (an advisory lock, where the system has one) and checked unchanged since `plan` read it; then cut
    back to its complete lines and positioned at their end. Another search on the same file is refused instead of
    interleaving with it. Unbuffered: what `write` returned from is in the file.
    """
    out = work["out"]
    busy = OutputError(f"--out '{out}' is being written by another tokenocr search (or changed since this one "
                       "started); wait for it, or choose another file")
    created = work["size"] is None
    try:
        file = _create(out) if created else _open_existing(out)
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
        here, there = os.fstat(file.fileno()), os.stat(out, follow_symlinks=False)
    except OSError:
        return
    if here.st_size == 0 and os.path.samestat(here, there):
        out.unlink()


def run(args, finder, state, work: dict) -> Path:
    """Score `work["todo"]` (from `plan`) with `finder`; `state` is accelerate's `PartialState`."""
    out = work["out"]
    if state.num_processes == 1:
        def write(lines):
            writer.write(b"".join(lines))
            args.lines_written = True  # an interrupt from now on leaves these lines in --out (the CLI says so)

        with output_file(work) as file:
            writer = _Writer(file, _write_failure(out))
            score_pages(finder, work["todo"], args, work["seen"], write, work["skipped"])
    else:
        _run_distributed(out, work, finder, args, state)
    if state.is_main_process:
        print_top(out, args.query, args.top_k)
    return out


def _part_files(out: Path, state) -> list[Path]:
    return [out.with_name(f".{out.name}.part-{index}-of-{state.num_processes}") for index in range(state.num_processes)]


def _create_part(part: Path, out: Path):
    """This process's part file, created exclusively (never through a link planted at its name)."""
    try:
        return _create(part)
    except FileExistsError:
        raise OutputError(f"cannot create '{part}', a part file of --out '{out}': something is already there (a part "
                          "file a killed search left, or a link); remove it and run again") from None
    except OSError as error:
        raise OutputError(f"cannot create '{part}', a part file of --out '{out}' ({error.strerror or error})") from None


def _copy_part(part: Path, writer: _Writer, out: Path) -> None:
    """Append a part file to the output through `writer`, a chunk at a time; a link at its name is not followed."""
    try:
        file = open(os.open(part, os.O_RDONLY | _NO_FOLLOW | _BINARY), "rb", buffering=0)
    except OSError as error:
        raise OutputError(f"cannot read '{part}', a part file of --out '{out}' ({error.strerror or error})") from None
    with file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise OutputError(f"'{part}', a part file of --out '{out}', is no longer a regular file")
        while chunk := file.read(1 << 20):
            writer.write(chunk)


def _remove_if_same(path: Path, made: os.stat_result) -> None:
    with contextlib.suppress(OSError):
        if os.path.samestat(made, os.stat(path, follow_symlinks=False)):
            path.unlink()


def _run_distributed(out: Path, work: dict, finder, args, state) -> None:
    """Each process scores a contiguous share of the pages into its part file; the main process appends them in
    process order (= page order) to the output, then removes them. A process that fails removes its own part."""
    parts = _part_files(out, state)
    mine = parts[state.process_index]
    part = _create_part(mine, out)
    made = os.fstat(part.fileno())

    def failure(reason: str) -> str:
        return (f"cannot write '{mine}', a part file of --out '{out}' ({reason}); free some space (or mend the cause) "
                "and continue --out with --resume")

    try:
        with part, state.split_between_processes(work["todo"]) as share:
            writer = _Writer(part, failure)
            score_pages(finder, share, args, work["seen"], lambda lines: writer.write(b"".join(lines)),
                        work["skipped"])
        state.wait_for_everyone()
        if state.is_main_process:
            try:
                with output_file(work) as file:
                    writer = _Writer(file, _write_failure(out))
                    for each in parts:
                        _copy_part(each, writer, out)
            finally:  # merged, or not to be merged: a rerun with --resume scores those pages again
                for each in parts:
                    with contextlib.suppress(FileNotFoundError):
                        each.unlink()
    except BaseException:
        _remove_if_same(mine, made)
        raise
    state.wait_for_everyone()
