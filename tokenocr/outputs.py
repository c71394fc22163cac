"""
Writing a command's output folder without ever losing data: what `--out` / `--output` and `--force` may touch.

- An output may not be the current folder or one of its ancestors, and may not be, contain or lie inside any input
  (model, checkpoint, images): `check_output_location`.
- An existing output is replaced only with `--force`, and only when it is an earlier output of the same command,
  recognised by what that command writes (`check_replaceable`); a file or a link is never replaced.
- The new output is built in a hidden temporary folder beside the destination (`building_folder`) and renamed into
  place only once complete (`move_into_place`). Any failure, Ctrl-C or SIGTERM removes it; what a SIGKILL leaves
  behind is recognised by its marker and removed by the next run (`remove_stale_leftovers`).

No heavy imports: the command line uses this before loading torch or transformers.
"""

import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path


PARTIAL_MARKER = ".tokenocr-partial"
# Written only by `tokenocr train` (tokenocr.commands.training): at the top of its --output, and last into each
# checkpoint it saves, so that a checkpoint holding it is complete.
TRAIN_MARKER = ".tokenocr-train"


class OutputError(ValueError):
    """An output location the command refuses to write; the message is the one-line reason."""


def printable(text: str) -> str:
    """
    `text` safe to show on a terminal: control characters (a file name's escape codes, newlines) and the surrogate
    escapes of a name that is not valid UTF-8 are shown as Python escapes (`\\x1b`, `\\udcff`); the rest as is.
    """
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in str(text))


def json_ready(value):
    """`value` with every float that is not finite (NaN, infinity: a broken model's scores) as `None`, so that JSON
    written from it is valid (`json.dumps` would write bare `NaN`)."""
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else None
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    return value


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _is_within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_output_location(output: str | os.PathLike, inputs: Iterable[str | os.PathLike], flag: str) -> Path:
    """
    The absolute destination for `output`, after refusing one that would overwrite or swallow something the user
    gave: the current folder or an ancestor of it, an input path, an ancestor of one, or a place inside one.

    Args:
        output: the `--out` / `--output` value.
        inputs: every local path the command reads (model or checkpoint folder, images); non-paths are skipped.
        flag: the option's name, for messages.
    """
    destination = Path(output).expanduser().absolute()
    real = _real(destination)
    if _is_within(_real(Path.cwd()), real):
        raise OutputError(f"{flag} '{output}' is the current folder or contains it; choose a new folder")
    for given in inputs:
        source = Path(given).expanduser()
        if not source.exists():
            continue
        source = _real(source)
        if _is_within(source, real):
            raise OutputError(f"{flag} '{output}' is or contains the input '{given}'; choose another folder")
        if _is_within(real, source):
            raise OutputError(f"{flag} '{output}' lies inside the input '{given}'; choose a folder outside it")
    if destination.is_symlink() or (destination.exists() and not destination.is_dir()):
        raise OutputError(f"{flag} '{output}' exists and is not a folder; it is never replaced, choose another name")
    if not destination.parent.is_dir():
        raise OutputError(f"cannot write {flag} '{output}': folder '{destination.parent}' does not exist")
    if not os.access(destination.parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {flag} '{output}': folder '{destination.parent}' is not writable")
    return destination


def check_replaceable(destination: Path, force: bool, foreign_entries: Callable[[Path], list[str]], flag: str) -> None:
    """
    Allow an existing `destination` only with `force`, and only when `foreign_entries(destination)` (what in it the
    command did not write) is empty.
    """
    if not destination.exists():
        return
    if not force:
        raise OutputError(f"{flag} '{destination}' already exists; pass --force to replace it")
    foreign = foreign_entries(destination)
    if foreign:
        shown = ", ".join(f"'{name}'" for name in foreign[:3]) + (" ..." if len(foreign) > 3 else "")
        raise OutputError(
            f"{flag} '{destination}' is not an earlier output of this command (it holds {shown}), so --force will "
            "not replace it; choose another folder"
        )


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _leftover_pid(entry: Path, destination: Path) -> tuple[str, int] | None:
    """`(kind, pid)` for `.NAME.partial-PID-*` / `.NAME.previous-PID` entries of `destination`, else None."""
    for kind in ("partial", "previous"):
        prefix = f".{destination.name}.{kind}-"
        if entry.name.startswith(prefix):
            digits = entry.name[len(prefix) :].split("-")[0]
            if digits.isdigit():
                return kind, int(digits)
    return None


def remove_stale_leftovers(destination: Path, program: str) -> None:
    """
    Clean up after an earlier run of this command that was killed (SIGKILL, power loss) while writing
    `destination`: its temporary folder is removed; an earlier output it had moved aside is put back if nothing took
    its place, else removed. Only entries named after `destination`, made by a process that no longer runs, and (for
    temporary folders) holding this tool's marker are touched.
    """
    if not destination.parent.is_dir():
        return
    for entry in sorted(destination.parent.iterdir()):
        found = _leftover_pid(entry, destination)
        if found is None or _pid_alive(found[1]) or entry.is_symlink() or not entry.is_dir():
            continue
        kind = found[0]
        if kind == "partial" and (entry / PARTIAL_MARKER).is_file():
            shutil.rmtree(entry, ignore_errors=True)
            print(f"{program}: removed '{entry.name}', left by an interrupted earlier run", file=sys.stderr)
        elif kind == "previous" and not destination.exists():
            entry.rename(destination)
            print(f"{program}: restored '{destination.name}' from an interrupted earlier run", file=sys.stderr)
        elif kind == "previous":
            shutil.rmtree(entry, ignore_errors=True)
            print(f"{program}: removed '{entry.name}', left by an interrupted earlier run", file=sys.stderr)


@contextmanager
def _signals_held():
    """Hold Ctrl-C, SIGTERM and SIGHUP until the block ends (where the platform allows), so that a step that must be
    completed together (create a folder and remember it) is not cut in the middle."""
    names = [getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
    held = hasattr(signal, "pthread_sigmask")
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, names) if held else None
    try:
        yield
    finally:
        if held:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def building_folder(destination: Path, program: str) -> Iterator[Path]:
    """
    A hidden temporary folder beside `destination` to build the output in; removed on leaving the block whatever
    happened (move it into place with `move_into_place` before that).
    """
    remove_stale_leftovers(destination, program)
    building = None
    try:
        with _signals_held():
            try:
                building = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-{os.getpid()}-",
                                                 dir=destination.parent))
                (building / PARTIAL_MARKER).write_text(json.dumps({"program": program, "pid": os.getpid()}) + "\n")
            except OSError as error:
                raise OutputError(f"cannot write '{destination}': {error}") from None
        yield building
    finally:
        if building is not None and building.exists():
            shutil.rmtree(building, ignore_errors=True)


def _apply_umask(folder: Path) -> None:
    """Give the finished folder the permissions a plain mkdir/open would have (mkdtemp makes it private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def move_into_place(building: Path, destination: Path) -> None:
    """
    Rename the finished folder `building` to `destination`. An existing destination (already checked with
    `check_replaceable`) is moved aside first and put back if the new folder cannot be moved in.
    """
    (building / PARTIAL_MARKER).unlink(missing_ok=True)
    _apply_umask(building)
    previous = destination.with_name(f".{destination.name}.previous-{os.getpid()}")
    replacing = destination.exists()
    try:
        if replacing:
            destination.rename(previous)
        building.rename(destination)
    except BaseException as error:  # an interrupt between the two renames must not lose the earlier output
        if replacing and previous.exists() and not destination.exists():
            previous.rename(destination)
        if isinstance(error, OSError):
            raise OutputError(f"cannot move the new folder to '{destination}': {error}") from None
        raise
    if replacing:
        shutil.rmtree(previous, ignore_errors=True)


_interrupted = False


def _raise_keyboard_interrupt(signum, frame):
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def was_interrupted() -> bool:
    """Whether Ctrl-C, SIGTERM or SIGHUP arrived inside `interrupt_on_termination` (even if a library turned the
    resulting `KeyboardInterrupt` into another exception, as native extensions sometimes do)."""
    return _interrupted


@contextmanager
def interrupt_on_termination() -> Iterator[None]:
    """Turn Ctrl-C, SIGTERM and SIGHUP into `KeyboardInterrupt`, and remember that one came (`was_interrupted`), so
    that cleanup code runs for all of them and the command reports an interrupt, not whatever it interrupted."""
    names = [name for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)]
    previous = {}
    for name in names:
        try:
            previous[name] = signal.signal(getattr(signal, name), _raise_keyboard_interrupt)
        except ValueError:  # not the main thread: leave signals alone
            pass
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # a file system without hard links: a copy
        shutil.copy2(source, destination)


def link_tree(source: Path, destination: Path) -> None:
    """
    Put `source` (a file, a link or a folder, recursively) at `destination` without copying data where the file
    system allows: files are hard-linked (copied where links are not possible), symbolic links recreated. Used to
    carry what an output already holds into the new one that replaces it.
    """
    if source.is_symlink():
        os.symlink(os.readlink(source), destination)
    elif source.is_dir():
        shutil.copytree(source, destination, symlinks=True, copy_function=_link_or_copy)
    elif source.is_file():
        _link_or_copy(str(source), str(destination))
    else:
        raise OutputError(f"'{source}' is neither a file nor a folder; it cannot be carried into the new output")
