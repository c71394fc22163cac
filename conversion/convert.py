# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
`tokenocr-convert`: turn an original TokenOCR checkpoint into a hub-ready folder that loads with transformers alone.

    tokenocr-convert --input SRC --output DST [--dtype float32|bfloat16|float16] [--max-shard-size SIZE] [--force]
                     [--repo-id ID] [--thorough-verification] [--tokenizer PATH_OR_REPO]

SRC is an original ViT checkpoint (folder or hub repo id) or an original R50 folder (`checkpoint.pth` or its two
parts), whose tokenizer may be given separately with `--tokenizer`.

The folder is built in a hidden temporary folder beside DST, verified in a separate Python process in which
`tokenocr` cannot be imported, and only then renamed into place. Any failure exits non-zero with a one-line reason
and leaves no partial DST. (The command line itself is parsed in `tokenocr.cli`; this module does the work.)
"""

import gc
import json
import os
import re
import shutil
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..constants import DTYPE_NAMES, HUB_ID_PATTERN
from ..modeling import REMOTE_CODE_FILES as MODELING_FILES
from ..outputs import (
    PARTIAL_MARKER, OutputError, building_folder, check_output_location, check_replaceable, move_into_place,
)
from ..processing import REMOTE_CODE_FILES as PROCESSING_FILES
from . import hub_check
from .model_card import EXAMPLE_PAGE, EXAMPLE_PICTURE, SAMPLE_PAGE, SAMPLE_QUERY, check_repo_id, render_card
from .original import OriginalCheckpoint, convert_tensors, is_skipped, load_checkpoint, plan_conversion
from .weights import SAFETENSORS_DTYPES, first_line, read_weight_index


PROGRAM = "tokenocr-convert"
DEFAULT_MAX_SHARD_SIZE = "5GB"
DEFAULT_REPO_ID = "org/TokenOCR"
PIPELINE_TASK = "token-similarity"
PROBE_QUERY = "Invoice 2024"

# Largest allowed |converted - source| on the probe page, relative to max(1, max |source features|). Both sides
# run in float32, so this measures what the stored dtype loses.
VERIFY_TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}

# The probe page of the verification for a ResNet tower (whole images), as (height, width): sides that are not
# multiples of the stride 32, so that the partial windows at the borders are checked; larger with
# --thorough-verification.
R50_PROBE_SIZE, R50_THOROUGH_PROBE_SIZE = (420, 300), (1100, 850)

# Written only by `tokenocr-convert`, last, into the folder it makes: the files it wrote and their sizes. How `--force`
# recognises an earlier output of this command: a folder without it (a trained model, a copy of one in models/) or
# with anything added or changed since is never replaced.
CONVERT_MARKER = ".tokenocr-convert"

# Everything a converted or exported folder may hold (an export whose marker lists no files is checked with it).
CONVERTED_FILES = re.compile(
    r"config\.json|model(-\d{5}-of-\d{5})?\.safetensors|model\.safetensors\.index\.json|preprocessor_config\.json"
    r"|processor_config\.json|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|README\.md"
    r"|\w+_tokenocr\.py|examples"
)


class ConversionError(Exception):
    """A conversion that cannot go on; the message is the one-line reason shown to the user."""


def parse_size(text: str) -> int:
    """`"5GB"`, `"500MB"`, `"10KiB"` or a number of bytes -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise ConversionError(f"--max-shard-size {text!r} is not a size such as 5GB, 500MB or 1048576")
    number, unit, binary = match.groups()
    size = int(float(number) * (1024 if binary else 1000) ** " KMGT".index(unit.upper() or " "))
    if size < 1:
        raise ConversionError(f"--max-shard-size {text!r} must be positive")
    return size


def write_marker(folder: Path, marker: str, program: str) -> None:
    """Record in `folder/marker` every file the command wrote into `folder` (relative path -> size): written last,
    just before the folder is moved into place."""
    files = {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not path.is_symlink()
        and path.relative_to(folder).as_posix() not in (PARTIAL_MARKER, marker)
    }
    (folder / marker).write_text(json.dumps({"program": program, "files": files}, indent=2) + "\n", encoding="utf-8")


def _marked_files(folder: Path, marker: str) -> dict[str, int] | None:
    """The files `folder/marker` says the command wrote (path -> size); None without a readable marker (a link is
    none), `{}` for a marker that lists no files."""
    path = folder / marker
    if path.is_symlink() or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    files = data.get("files", {}) if isinstance(data, dict) else None
    if not isinstance(files, dict) or not all(isinstance(size, int) for size in files.values()):
        return None
    return files


def marked_foreign_entries(folder: Path, marker: str, files: dict[str, int]) -> list[str]:
    """What in `folder` is not one of the `files` its marker lists, as written: added files or folders, links, files
    whose size changed since."""
    written_folders = {parent.as_posix() for name in files for parent in Path(name).parents if parent != Path(".")}
    foreign = []
    for root, folders, names in os.walk(folder):  # links are not followed: a link is itself foreign
        for name in sorted(folders + names):
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if relative == marker:
                continue
            if path.is_symlink():
                foreign.append(relative)
            elif path.is_dir():
                if relative not in written_folders:
                    foreign.append(relative)
                    folders.remove(name)
            elif relative not in files:
                foreign.append(relative)
            elif path.stat().st_size != files[relative]:
                foreign.append(f"{relative} (changed since)")
    return sorted(foreign)


def convert_foreign_entries(folder: Path) -> list[str]:
    """What in `folder` an earlier `tokenocr-convert` did not write (see `CONVERT_MARKER`; `_check_arguments` has
    refused a folder without the marker already)."""
    files = _marked_files(folder, CONVERT_MARKER)
    if files is None:
        return sorted(entry.name for entry in folder.iterdir()) or [f"no {CONVERT_MARKER}"]
    return marked_foreign_entries(folder, CONVERT_MARKER, files)


def foreign_entries(folder: Path) -> list[str]:
    """What in `folder` neither the converter nor `export` would write, by names alone (empty for a folder that
    looks converted); used for an export whose marker lists no files."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        config = None
    if not isinstance(config, dict) or config.get("model_type") != "tokenocr":
        return sorted(entry.name for entry in folder.iterdir()) or ["no converted config.json"]
    return sorted(
        entry.name for entry in folder.iterdir()
        if entry.is_symlink() or not CONVERTED_FILES.fullmatch(entry.name)
        or not (entry.is_file() or entry.name == "examples" and _only_pictures(entry))
    )


def _only_pictures(folder: Path) -> bool:
    """The `examples/` folder the converter writes: the model card's sample page and heatmap picture, nothing else."""
    return all(entry.name in {Path(EXAMPLE_PAGE).name, Path(EXAMPLE_PICTURE).name} and entry.is_file()
               and not entry.is_symlink() for entry in folder.iterdir())


# --------------------------------------------------------------------------------------------- the source


def fetch_from_hub(repo_id: str, revision: str | None = None) -> Path:
    """
    Download what TokenOCR needs of an original checkpoint on the hub: config, tokenizer files, the weight index
    first when there is one, then only the shards that hold tensors TokenOCR keeps. (File by file rather than one
    `snapshot_download`: which shards are needed is known only once the index is read, and each missing file gets
    its own one-line error.)
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
    )

    def download(filename: str, required: bool = True) -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision))
        except LocalEntryNotFoundError:
            if not required:  # offline and not cached: as far as this run can tell, the repo has no such file
                return None
            raise ConversionError(
                f"cannot get {filename} of '{repo_id}': the hub cannot be reached (offline?) and it is not in the "
                "local cache"
            ) from None
        except EntryNotFoundError:
            if required:
                raise ConversionError(f"hub repo '{repo_id}' has no {filename}") from None
            return None
        except RepositoryNotFoundError:
            raise ConversionError(f"'{repo_id}' is not a local folder and not a hub repo that can be reached") from None
        except (HfHubHTTPError, OSError) as error:
            raise ConversionError(f"cannot download {filename} from '{repo_id}': {first_line(error)}") from None

    folder = download("config.json").parent
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        download(name, required=name == "tokenizer.model")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = download(index_name, required=False)
        if index is not None:
            weight_map = read_weight_index(folder, index)
            needed = sorted({path.relative_to(folder).as_posix() for key, path in weight_map.items() if not is_skipped(key)})
            for shard in _progress(needed, "Downloading shards", unit="shard"):
                download(shard)
            return folder
    for single in ("model.safetensors", "pytorch_model.bin"):
        if download(single, required=False) is not None:
            return folder
    raise ConversionError(f"hub repo '{repo_id}' holds no weights")


def resolve_source(source: str) -> tuple[Path, str | None]:
    """`(local folder, hub repo id or None)` for `--input`."""
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ConversionError(f"--input '{source}' is a file; give the checkpoint folder")
        return path, None
    if re.fullmatch(HUB_ID_PATTERN, source):
        return fetch_from_hub(source), source
    raise ConversionError(f"--input '{source}' is neither an existing folder nor a hub repo id (owner/name)")


# ------------------------------------------------------------------------------------------- the folder


def _progress(iterable, description: str, total: int | None = None, unit: str = "it"):
    """A progress bar on a terminal only (`disable=None`), erased when done (`leave=False`): a log or a pipe gets no
    bar fragments, so a failure there is one line."""
    from huggingface_hub.utils import tqdm

    return tqdm(iterable, desc=description, total=total, unit=unit, file=sys.stderr, leave=False, disable=None)


_SAFETENSORS_NAMES = {dtype: name for name, dtype in SAFETENSORS_DTYPES.items()}


def plan_shards(entries, max_shard_size: int) -> list[list[tuple[str, tuple[int, ...], torch.dtype, int]]]:
    """Group `(name, shape, dtype)` entries, in order, into shards of at most `max_shard_size` bytes each
    (a single larger tensor gets a shard of its own)."""
    shards, current, current_size = [], [], 0
    for name, shape, dtype in entries:
        size = int(np.prod(shape, dtype=np.int64)) * torch.empty((), dtype=dtype).element_size()
        if current and current_size + size > max_shard_size:
            shards.append(current)
            current, current_size = [], 0
        current.append((name, shape, dtype, size))
        current_size += size
    if current:
        shards.append(current)
    return shards


def _safetensors_header(shard) -> bytes:
    """The header of a safetensors file holding `shard`'s tensors back to back, in order."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape, dtype, size in shard:
        header[name] = {"dtype": _SAFETENSORS_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # the data section starts 8-byte aligned
    return len(encoded).to_bytes(8, "little") + encoded


def write_weights(checkpoint: OriginalCheckpoint, plan: dict, folder: Path, max_shard_size: int) -> int:
    """
    Write the converted weights as safetensors shards, streaming: the shard layout is planned from the tensors'
    shapes, then each tensor's bytes go to disk as soon as it is read, so memory holds about one tensor at a time
    (safetensors' own `save_file` needs a whole shard in memory). Returns the bytes written.
    """
    entries = [entry for produced in plan.values() for entry in produced]
    shards = plan_shards(entries, max_shard_size)
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{n:05d}-of-{len(shards):05d}.safetensors" for n in range(1, len(shards) + 1)]
    )
    layout = {entry[0]: (index, entry) for index, shard in enumerate(shards) for entry in shard}
    handles = {}
    try:
        for index, shard in enumerate(shards):
            handles[index] = open(folder / names[index], "wb")
            handles[index].write(_safetensors_header(shard))
        tensors = convert_tensors(checkpoint, plan, copy=False)
        for name, tensor in _progress(tensors, "Converting weights", len(entries), "tensor"):
            index, (_, shape, out_dtype, size) = layout[name]
            data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
            if tuple(tensor.shape) != shape or tensor.dtype != out_dtype or data.nbytes != size:
                raise ConversionError(f"tensor '{name}' came out as {tuple(tensor.shape)} {tensor.dtype}")
            handles[index].write(memoryview(data))
    finally:
        for handle in handles.values():
            handle.close()
    total_size = sum(entry[3] for shard in shards for entry in shard)
    if len(shards) > 1:
        weight_map = {name: names[index] for name, (index, _) in sorted(layout.items())}
        index_data = {"metadata": {"total_size": total_size}, "weight_map": weight_map}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index_data, indent=2) + "\n", encoding="utf-8")
    return total_size


def remote_code_files() -> list[Path]:
    """The files a converted folder carries as remote code, as listed by `tokenocr.modeling` and `.processing`."""
    files = [
        Path(str(resources.files(f"tokenocr.{package}") / name))
        for package, names in (("modeling", MODELING_FILES), ("processing", PROCESSING_FILES))
        for name in names
    ]
    missing = [file.name for file in files if not file.is_file()]
    if missing:
        raise ConversionError(f"the remote-code files {missing} are missing from the installation")
    return files


def _without_auto_map(data: dict) -> None:
    data.pop("auto_map", None)
    if isinstance(data.get("image_processor"), dict):
        data["image_processor"].pop("auto_map", None)


def _update_json(file: Path, change) -> None:
    data = json.loads(file.read_text(encoding="utf-8"))
    change(data)
    file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_configs(config, dtype: torch.dtype, processor, folder: Path, remote_code: bool = True) -> None:
    """
    config.json, processor and tokenizer files, with `auto_map`s pointing at the copied remote code. Written here
    rather than by `register_for_auto_class` + `save_pretrained`: the converter never builds the model (its weights
    are streamed shard by shard under a memory bound), and transformers copies only the files a class's module
    imports, which leaves out the pipeline (`custom_pipelines`); `REMOTE_CODE_FILES` lists every file that travels,
    and `tests/test_convert.py` loads the result with transformers alone. With `remote_code=False` (the folders in
    the repository's `models/`, used with the package) no code is copied and no `auto_map` points at any;
    `tokenocr export` makes such a folder hub-ready.
    """
    config_dict = config.to_dict()
    config_dict["_name_or_path"] = ""  # where this copy was loaded from is nobody's business
    config_dict["dtype"] = str(dtype).replace("torch.", "")
    config_dict["architectures"] = ["TokenOCRModel"]
    for key in ("auto_map", "custom_pipelines"):
        config_dict.pop(key, None)
    image_auto_map = {
        "AutoImageProcessor": "image_processing_tokenocr.TokenOCRImageProcessor",
        "AutoProcessor": "processing_tokenocr.TokenOCRProcessor",
    }
    if remote_code:
        config_dict["auto_map"] = {
            "AutoConfig": "configuration_tokenocr.TokenOCRConfig",
            "AutoModel": "modeling_tokenocr.TokenOCRModel",
        }
        config_dict["custom_pipelines"] = {
            PIPELINE_TASK: {"impl": "pipeline_tokenocr.TokenSimilarityPipeline", "pt": ["AutoModel"], "tf": [],
                            "type": "multimodal"}
        }
    (folder / "config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    processor.image_processor.save_pretrained(folder)
    processor.save_pretrained(folder)

    def preprocessor_auto_map(data):
        data.pop("auto_map", None)
        if remote_code:
            data["auto_map"] = image_auto_map

    def processor_auto_map(data):
        _without_auto_map(data)
        if remote_code:
            data["auto_map"] = {"AutoProcessor": "processing_tokenocr.TokenOCRProcessor"}
            if isinstance(data.get("image_processor"), dict):
                data["image_processor"]["auto_map"] = image_auto_map

    _update_json(folder / "preprocessor_config.json", preprocessor_auto_map)
    _update_json(folder / "processor_config.json", processor_auto_map)
    tokenizer = processor.tokenizer
    special = {
        name: getattr(tokenizer, name)
        for name in ("bos_token", "eos_token", "unk_token", "pad_token")
        if getattr(tokenizer, name, None) is not None
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    _update_json(folder / "tokenizer_config.json", lambda data: data.update(add_bos_token=True, add_eos_token=False))
    if remote_code:
        for file in remote_code_files():
            shutil.copyfile(file, folder / file.name)


# ------------------------------------------------------------------------------------------ verification


def make_probe(processor, thorough: bool, path: Path) -> Path:
    """
    The verification's probe page. For a tiling processor, the model card's sample page itself (every weight of the
    model takes part, and the card's picture then needs no vision pass of its own), or with `thorough` a 3x2-tile
    page (7 tiles with the thumbnail) that also exercises tiling; for a whole-image processor (R50), a page whose
    sides are not multiples of the ResNet's stride. Returns the probe's path.
    """
    image_processor = processor.image_processor
    if image_processor.do_tiling and not thorough:
        return SAMPLE_PAGE
    if not image_processor.do_tiling:
        size = R50_THOROUGH_PROBE_SIZE if thorough else R50_PROBE_SIZE
    else:
        size = (2 * image_processor.size["height"], 3 * image_processor.size["width"])
    make_probe_image(size, path)
    return path


def make_probe_image(size: tuple[int, int], path: Path) -> None:
    """A deterministic page of `size` `(height, width)`: dark strokes on light paper."""
    from PIL import Image

    rng = np.random.default_rng(2503_02304)
    height, width = size
    page = np.full((height, width, 3), 235, dtype=np.uint8)
    for _ in range(12):
        top, left = rng.integers(0, height - 4), rng.integers(0, width - 8)
        page[top : top + rng.integers(2, 6), left : left + rng.integers(8, max(9, width // 3))] = rng.integers(0, 80)
    page = np.clip(page.astype(np.int16) + rng.integers(-12, 13, page.shape), 0, 255).astype(np.uint8)
    Image.fromarray(page).save(path)


def _source_reference(checkpoint: OriginalCheckpoint, probe: Path, workdir: Path) -> tuple[Path, list, Path, list[int]]:
    """
    The source's float32 features on the probe, written chunk by chunk as raw float32 `(tiles, locations, D)` (never
    held whole), and the embeddings of the probe query's tokens. Returns the features file, its shape, the
    embeddings file and the query ids.
    """
    model, processor = load_checkpoint(checkpoint, dtype=torch.float32)
    features_file, text_file = workdir / "reference.f32", workdir / "text_reference.npy"
    query_ids = processor(text=PROBE_QUERY)["input_ids"]
    pixel_values = processor(images=str(probe), return_tensors="pt")["pixel_values"]
    locations = [0] * len(pixel_values)
    with torch.no_grad(), open(features_file, "wb") as file:
        for index, _, features in model.iter_image_features(pixel_values):
            file.write(features.numpy().tobytes())
            locations[index] += features.shape[0]
        np.save(text_file, model.get_text_features(torch.tensor(query_ids)).pooler_output.numpy())
    shape = [len(pixel_values), locations[0], model.config.hidden_size]
    del model
    gc.collect()
    return features_file, shape, text_file, query_ids


def verify(checkpoint: OriginalCheckpoint, folder: Path, processor, dtype: torch.dtype, thorough: bool) -> float:
    """
    Load `folder` with transformers alone in a fresh process and compare its features and token embeddings with the
    source's (computed here first, then released, so that only one model is in memory at a time). Returns the
    largest feature difference. The probe and the source's outputs live in `folder/.verification` while it runs, so
    that whatever ends the run, cleaning up the folder being built cleans them up too.
    """
    workdir = folder / ".verification"
    workdir.mkdir()
    try:
        probe = make_probe(processor, thorough, workdir / "probe.png")
        features_file, shape, text_file, query_ids = _source_reference(checkpoint, probe, workdir)
        example = [SAMPLE_PAGE, SAMPLE_QUERY, EXAMPLE_PICTURE, EXAMPLE_PAGE]  # the model card's picture, made there
        report = hub_check.run_as_hub_user(
            "hub_check:verify_converted_folder",
            [folder, probe, features_file, shape, text_file, PROBE_QUERY, *example],
            workdir, what="the converted folder does not load with transformers alone",
        )
    except hub_check.HubCheckError as error:
        raise ConversionError(f"verification failed: {error}") from None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if report["query_ids"] != query_ids or report["tokenizer_ids"] != query_ids:
        raise ConversionError(
            f"verification failed: the converted tokenizer gives {report['query_ids']} for a probe query, "
            f"the source gives {query_ids}"
        )
    bound = VERIFY_TOLERANCE[dtype] * max(1.0, report["scale"])
    difference = max(report["difference"], report["text_difference"])
    print(f"{PROGRAM}: max |features - source features| on the probe page: {report['difference']:.3e}, token "
          f"embeddings: {report['text_difference']:.3e} (bound {bound:.1e})", file=sys.stderr)
    if not difference <= bound:
        raise ConversionError(f"verification failed: the converted model differs from the source by {difference:.3e} "
                              f"(bound {bound:.1e})")
    return report["difference"]


# --------------------------------------------------------------------------------------------- main flow


def _check_arguments(output: str, dtype: str | None, max_shard_size: str, force: bool, inputs: list) -> tuple[Path, int]:
    inputs = [source for source in inputs if source is not None]  # the tokenizer, when given, is an input too
    if dtype is not None and dtype not in DTYPE_NAMES:
        raise ConversionError(f"--dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    shard_bytes = parse_size(max_shard_size)
    destination = check_output_location(output, inputs, "--output")
    if force and destination.is_dir() and _marked_files(destination, CONVERT_MARKER) is None:
        raise OutputError(
            f"--output '{destination}' was not written by {PROGRAM} (it has no {CONVERT_MARKER}, which only {PROGRAM} "
            "writes), so --force will not replace it; choose another folder"
        )
    check_replaceable(destination, force, convert_foreign_entries, "--output")
    return destination, shard_bytes


def convert(
    source: str,
    output: str,
    dtype: str | None = None,
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE,
    force: bool = False,
    repo_id: str = DEFAULT_REPO_ID,
    thorough_verification: bool = False,
    space_id: str | None = None,
    tokenizer: str | None = None,
) -> Path:
    """
    Convert `source` (a local original checkpoint folder or a hub repo id) into the hub-ready folder `output`.
    The folder appears only once it is complete and verified; an existing `output` is replaced only with `force`
    and only when it is an earlier converted folder, as written (its `CONVERT_MARKER` lists every file in it, sizes
    unchanged). `repo_id` and `space_id` must be hub repo ids (`owner/name`): the card's code and links name them.
    `tokenizer` (a folder, a `tokenizer.model` file or a hub repo id) replaces the source's own tokenizer (the
    original R50 release keeps it elsewhere). Returns its path.
    """
    check_repo_id(repo_id, "--repo-id")
    if space_id is not None:
        check_repo_id(space_id, "--space-id")
    destination, shard_bytes = _check_arguments(output, dtype, max_shard_size, force, [source, tokenizer])
    folder, hub_id = resolve_source(source)
    if hub_id is not None:
        _check_arguments(output, dtype, max_shard_size, force, [folder, tokenizer])
    checkpoint = OriginalCheckpoint(folder, tokenizer=tokenizer)
    config = checkpoint.tokenocr_config()
    target_dtype = getattr(torch, dtype) if dtype else checkpoint.source_dtype()
    if target_dtype not in VERIFY_TOLERANCE:
        raise ConversionError(f"the source weights are {target_dtype}; pass --dtype {'/'.join(DTYPE_NAMES)}")
    plan = plan_conversion(checkpoint, config, target_dtype)
    processor = checkpoint.processor()

    with building_folder(destination, PROGRAM) as building:
        total = write_weights(checkpoint, plan, building, shard_bytes)
        write_configs(config, target_dtype, processor, building)
        difference = verify(checkpoint, building, processor, target_dtype, thorough_verification)
        render_card(config, target_dtype, processor, building, repo_id, hub_id, difference, space_id)
        write_marker(building, CONVERT_MARKER, PROGRAM)
        move_into_place(building, destination)
    print(f"{PROGRAM}: {total / 1e6:.1f} MB of {str(target_dtype).replace('torch.', '')} weights verified",
          file=sys.stderr)
    return destination


EXPORT_MARKER = ".tokenocr-export"  # written only by `export`: how `--force` knows an earlier export


def export_foreign_entries(folder: Path) -> list[str]:
    """What in `folder` an earlier `tokenocr export` did not write (everything, without its marker)."""
    files = _marked_files(folder, EXPORT_MARKER)
    if files is None:
        return sorted(entry.name for entry in folder.iterdir()) or [f"no {EXPORT_MARKER}"]
    if files:
        return marked_foreign_entries(folder, EXPORT_MARKER, files)
    return [name for name in foreign_entries(folder) if name != EXPORT_MARKER]  # an export that listed no files


def export(source: str, output: str, force: bool = False) -> Path:
    """
    A hub-ready copy of a TokenOCR model folder (the repository's `models/` folders carry no code): its weights,
    configs, tokenizer and card, plus the remote code and the `auto_map`s that let transformers alone load it with
    `trust_remote_code=True`. The model is loaded with the installed classes (nothing from `source` runs). `output`
    appears only once complete; an existing one is replaced only with `force` and only when it is an earlier export
    (recognised by the marker only `export` writes, `EXPORT_MARKER`). Returns its path.
    """
    from ..loading import is_original_folder, load_model_and_processor

    if Path(source).is_dir() and is_original_folder(Path(source)):
        raise ConversionError(f"'{source}' is an original checkpoint: convert it with tokenocr-convert")
    destination = check_output_location(output, [source], "--output")
    check_replaceable(destination, force, export_foreign_entries, "--output")
    model, processor = load_model_and_processor(source)
    with building_folder(destination, PROGRAM) as building:
        model.save_pretrained(building)
        write_configs(model.config, next(model.parameters()).dtype, processor, building)
        card = Path(source) / "README.md"
        if card.is_file():
            shutil.copyfile(card, building / "README.md")
        write_marker(building, EXPORT_MARKER, "tokenocr export")
        move_into_place(building, destination)
    return destination
