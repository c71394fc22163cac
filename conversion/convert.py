# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
`tokenocr-convert`: turn an original TokenOCR checkpoint into a hub-ready folder that loads with transformers alone.

    tokenocr-convert --input SRC --output DST [--dtype float32|bfloat16|float16] [--max-shard-size SIZE] [--force]

The folder is built next to DST, verified in a separate Python process in which `tokenocr` cannot be imported,
and only then renamed into place. Any failure exits non-zero with a one-line reason and leaves no partial DST.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from .original import (
    SAFETENSORS_DTYPES,
    CheckpointError,
    OriginalCheckpoint,
    build_processor,
    check_and_convert,
    conversion_plan,
    is_skipped,
)
from .model_card import EXAMPLE_PICTURE_SCRIPT, example_picture_arguments, render_card


PROGRAM = "tokenocr-convert"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DEFAULT_MAX_SHARD_SIZE = "5GB"
DEFAULT_REPO_ID = "org/TokenOCR"
PIPELINE_TASK = "token-similarity"

# Largest allowed |converted - source| on the probe image, relative to max(1, max |source features|). Both sides
# run in float32, so this measures what the stored dtype loses.
VERIFY_TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 5e-2}

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
REMOTE_CODE_DIRS = (PACKAGE_ROOT / "modeling", PACKAGE_ROOT / "processing")


class ConversionError(Exception):
    """A conversion that cannot go on; the message is the one-line reason shown to the user."""


def parse_size(text: str) -> int:
    """`"5GB"`, `"500MB"`, `"10KiB"` or a number of bytes -> bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*", str(text), flags=re.IGNORECASE)
    if not match:
        raise ConversionError(f"--max-shard-size {text!r} is not a size such as 5GB, 500MB or 1048576")
    number, unit, binary = match.groups()
    base = 1024 if binary else 1000
    size = int(float(number) * base ** " KMGT".index(unit.upper() or " "))
    if size < 1:
        raise ConversionError(f"--max-shard-size {text!r} must be positive")
    return size


# --------------------------------------------------------------------------------------------- the source


def fetch_from_hub(repo_id: str, revision: str | None = None) -> Path:
    """
    Download what TokenOCR needs of an original checkpoint on the hub: config, tokenizer files, the weight index
    first when there is one, then only the shards that hold tensors TokenOCR keeps.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    def download(filename: str, required: bool = True) -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, filename, revision=revision))
        except EntryNotFoundError:
            if required:
                raise ConversionError(f"hub repo '{repo_id}' has no {filename}") from None
            return None
        except RepositoryNotFoundError:
            raise ConversionError(f"'{repo_id}' is not a local folder and not a hub repo that can be reached") from None
        except (HfHubHTTPError, OSError) as error:
            raise ConversionError(f"cannot download {filename} from '{repo_id}': {error}".splitlines()[0]) from None

    folder = download("config.json").parent
    for name in ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"):
        download(name, required=name == "tokenizer.model")
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = download(index_name, required=False)
        if index is not None:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
            needed = sorted({shard for key, shard in weight_map.items() if not is_skipped(key)})
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
    if re.fullmatch(r"[\w.-]+/[\w.-]+", source) and not source.startswith((".", "/")):
        return fetch_from_hub(source), source
    raise ConversionError(f"--input '{source}' is neither an existing folder nor a hub repo id (owner/name)")


# ------------------------------------------------------------------------------------------- the folder


def _progress(iterable, description: str, total: int | None = None, unit: str = "it"):
    from huggingface_hub.utils import tqdm

    return tqdm(iterable, desc=description, total=total, unit=unit, file=sys.stderr, leave=False)


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


def write_weights(checkpoint, config, dtype, folder: Path, max_shard_size: int) -> int:
    """
    Write the converted weights as safetensors shards, streaming: the shard layout is planned from the tensors'
    shapes, then each tensor's bytes go to disk as soon as it is read, so memory holds about one tensor at a time
    (safetensors' own `save_file` needs a whole shard in memory). Returns the bytes written.
    """
    entries = [entry for _, produced in conversion_plan(checkpoint, config, dtype) for entry in produced]
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
        tensors = check_and_convert(checkpoint, config, dtype, copy=False)
        for name, tensor in _progress(tensors, "Converting weights", len(entries), "tensor"):
            index, (_, shape, out_dtype, size) = layout[name]
            if tuple(tensor.shape) != shape or tensor.dtype != out_dtype:
                raise ConversionError(f"tensor '{name}' came out as {tuple(tensor.shape)} {tensor.dtype}")
            data = tensor.contiguous().reshape(-1).view(torch.uint8).numpy()
            if data.nbytes != size:
                raise ConversionError(f"tensor '{name}' has {data.nbytes} bytes, expected {size}")
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
    files = [file for directory in REMOTE_CODE_DIRS for file in sorted(directory.glob("*_tokenocr.py"))]
    if not files:
        raise ConversionError("the remote-code files (modeling/ and processing/) are missing from the installation")
    return files


def _update_json(file: Path, change) -> None:
    data = json.loads(file.read_text(encoding="utf-8"))
    change(data)
    file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_configs(config, dtype, processor, folder: Path) -> None:
    """config.json, processor and tokenizer files, with `auto_map`s pointing at the copied remote code."""
    config_dict = config.to_dict()
    config_dict["dtype"] = str(dtype).replace("torch.", "")
    config_dict["architectures"] = ["TokenOCRModel"]
    config_dict["auto_map"] = {
        "AutoConfig": "configuration_tokenocr.TokenOCRConfig",
        "AutoModel": "modeling_tokenocr.TokenOCRModel",
    }
    if (PACKAGE_ROOT / "processing" / "pipeline_tokenocr.py").is_file():
        config_dict["custom_pipelines"] = {
            PIPELINE_TASK: {
                "impl": "pipeline_tokenocr.TokenSimilarityPipeline",
                "pt": ["AutoModel"],
                "tf": [],
                "type": "multimodal",
            }
        }
    (folder / "config.json").write_text(json.dumps(config_dict, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    image_auto_map = {
        "AutoImageProcessor": "image_processing_tokenocr.TokenOCRImageProcessor",
        "AutoProcessor": "processing_tokenocr.TokenOCRProcessor",
    }
    processor.image_processor.save_pretrained(folder)
    processor.save_pretrained(folder)
    _update_json(folder / "preprocessor_config.json", lambda data: data.update(auto_map=image_auto_map))

    def processor_auto_map(data):
        data["auto_map"] = {"AutoProcessor": "processing_tokenocr.TokenOCRProcessor"}
        if isinstance(data.get("image_processor"), dict):
            data["image_processor"]["auto_map"] = image_auto_map

    _update_json(folder / "processor_config.json", processor_auto_map)
    tokenizer = processor.tokenizer
    special = {
        name: getattr(tokenizer, name)
        for name in ("bos_token", "eos_token", "unk_token", "pad_token")
        if getattr(tokenizer, name, None) is not None
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    _update_json(folder / "tokenizer_config.json", lambda data: data.update(add_bos_token=True, add_eos_token=False))
    for file in remote_code_files():
        shutil.copyfile(file, folder / file.name)


# ------------------------------------------------------------------------------------------ verification


_BLOCK_TOKENOCR = """
import sys
class _BlockTokenOCR:
    def find_spec(self, name, path=None, target=None):
        if name == "tokenocr" or name.startswith("tokenocr."):
            raise ImportError("tokenocr must not be needed by a converted folder")
sys.meta_path.insert(0, _BlockTokenOCR())
"""

_CONVERTED_SCRIPT = _BLOCK_TOKENOCR + """
import json
import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoProcessor, AutoTokenizer

folder, probe, reference_file = sys.argv[1:4]
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
model = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
assert model.config.model_type == "tokenocr", model.config.model_type
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
assert tokenizer.is_fast and type(tokenizer).__module__.startswith("transformers."), type(tokenizer)
pixels = processor(images=probe, return_tensors="pt")["pixel_values"]
with torch.no_grad():
    features = model.get_image_features(pixels)
reference = torch.from_numpy(np.load(reference_file))
if reference.shape != features.shape:
    raise SystemExit(f"features of shape {tuple(features.shape)}, expected {tuple(reference.shape)}")
query_ids = processor(text="Invoice 2024")["input_ids"]
print(json.dumps({
    "query_ids": query_ids,
    "tokenizer_ids": tokenizer(" Invoice 2024", add_special_tokens=False)["input_ids"],
    "difference": float((features.float() - reference).abs().max()),
    "scale": float(reference.abs().max()),
}))
""" + EXAMPLE_PICTURE_SCRIPT  # the model card's picture, made by the converted model (see model_card.py)

_REFERENCE_SCRIPT = """
import sys
import numpy as np
import torch
from tokenocr.conversion import load_original

source, probe, out = sys.argv[1:4]
model, processor = load_original(source, dtype=torch.float32)
pixels = processor(images=probe, return_tensors="pt")["pixel_values"]
with torch.no_grad():
    np.save(out, model.get_image_features(pixels).numpy())
"""


def make_probe_image(tile_size: int, path: Path) -> None:
    """A deterministic 3x2-tile page of dark strokes on light paper (thumbnail included: 7 tiles)."""
    from PIL import Image

    rng = np.random.default_rng(2503_02304)
    height, width = 2 * tile_size, 3 * tile_size
    page = np.full((height, width, 3), 235, dtype=np.uint8)
    for _ in range(12):
        top, left = rng.integers(0, height - 4), rng.integers(0, width - 8)
        page[top : top + rng.integers(2, 6), left : left + rng.integers(8, max(9, width // 3))] = rng.integers(0, 80)
    page = np.clip(page.astype(np.int16) + rng.integers(-12, 13, page.shape), 0, 255).astype(np.uint8)
    Image.fromarray(page).save(path)


def _run_python(script: str, args: list[str], workdir: Path, what: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    result = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=workdir, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        raise ConversionError(f"verification failed: {what}: {reason}")
    return result.stdout


def verify(source: Path, folder: Path, tile_size: int, dtype: torch.dtype, expected_query_ids) -> float:
    """Load `folder` with transformers alone in a fresh process; return max |features - source features|."""
    with tempfile.TemporaryDirectory(prefix="tokenocr-verify-") as workdir:
        workdir = Path(workdir)
        probe = workdir / "probe.png"
        make_probe_image(tile_size, probe)
        reference_file = workdir / "reference.npy"
        _run_python(_REFERENCE_SCRIPT, [str(source.absolute()), str(probe), str(reference_file)], workdir,
                    "the source checkpoint could not be evaluated")
        arguments = [str(folder), str(probe), str(reference_file), *example_picture_arguments()]
        stdout = _run_python(_CONVERTED_SCRIPT, arguments, workdir,
                             "the converted folder does not load with transformers alone")
        reported = json.loads(stdout.strip().splitlines()[-1])
        if reported["query_ids"] != expected_query_ids or reported["tokenizer_ids"] != expected_query_ids:
            raise ConversionError(
                f"verification failed: the converted tokenizer gives {reported['query_ids']} for a probe query, "
                f"the source gives {expected_query_ids}"
            )
        difference, scale = reported["difference"], reported["scale"]
    bound = VERIFY_TOLERANCE[dtype] * max(1.0, scale)
    print(f"{PROGRAM}: max |features - source features| on the probe image: {difference:.3e} (bound {bound:.1e})",
          file=sys.stderr)
    if not difference <= bound:
        raise ConversionError(
            f"verification failed: converted features differ from the source by {difference:.3e} (bound {bound:.1e})"
        )
    return difference


# --------------------------------------------------------------------------------------------- main flow


def convert(
    source: str,
    output: str,
    dtype: str | None = None,
    max_shard_size: str = DEFAULT_MAX_SHARD_SIZE,
    force: bool = False,
    repo_id: str = DEFAULT_REPO_ID,
    space_id: str | None = None,
) -> Path:
    """
    Convert `source` (a local original checkpoint folder or a hub repo id) into the hub-ready folder `output`.
    The folder appears only once it is complete and verified. Returns its path.
    """
    destination = Path(output).expanduser().absolute()
    if destination.exists() and not force:
        raise ConversionError(f"--output '{output}' already exists; pass --force to replace it")
    if destination.exists() and not destination.is_dir():
        raise ConversionError(f"--output '{output}' exists and is not a folder")
    parent = destination.parent
    if not parent.is_dir():
        raise ConversionError(f"cannot write '{output}': folder '{parent}' does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConversionError(f"cannot write '{output}': folder '{parent}' is not writable")
    shard_bytes = parse_size(max_shard_size)
    if dtype is not None and dtype not in DTYPES:
        raise ConversionError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")

    folder, hub_id = resolve_source(source)
    checkpoint = OriginalCheckpoint(folder)
    config = checkpoint.tokenocr_config()
    target_dtype = DTYPES[dtype] if dtype else checkpoint.source_dtype()
    if target_dtype not in VERIFY_TOLERANCE:
        raise ConversionError(f"the source weights are {target_dtype}; pass --dtype float32, bfloat16 or float16")
    processor = build_processor(checkpoint, config)

    try:
        building = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-", dir=parent))
    except OSError as error:
        raise ConversionError(f"cannot write '{output}': {error}") from None
    try:
        total = write_weights(checkpoint, config, target_dtype, building, shard_bytes)
        write_configs(config, target_dtype, processor, building)
        query_ids = processor(text="Invoice 2024")["input_ids"]
        difference = verify(folder, building, config.tile_size, target_dtype, query_ids)
        render_card(config, target_dtype, building, repo_id, hub_id, difference, space_id)
        move_into_place(building, destination, force)
    finally:
        if building.exists():
            shutil.rmtree(building, ignore_errors=True)
    print(f"{PROGRAM}: wrote {destination} ({total / 1e6:.1f} MB of {str(target_dtype).replace('torch.', '')} weights)",
          file=sys.stderr)
    return destination


def _apply_umask(folder: Path) -> None:
    """Give the finished folder the permissions a plain mkdir/open would have (mkdtemp makes it private)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for file in folder.iterdir():
        if file.is_file():
            file.chmod(0o666 & ~umask)


def move_into_place(building: Path, destination: Path, force: bool) -> None:
    """
    Rename the finished folder `building` to `destination`. An existing destination is replaced only with
    `force`, and is put back if the new folder cannot be moved in.
    """
    _apply_umask(building)
    if not destination.exists():
        try:
            building.rename(destination)
        except OSError as error:
            raise ConversionError(f"cannot move the new folder to '{destination}': {error}") from None
        return
    if not force:
        raise ConversionError(f"'{destination}' appeared while it was being built; pass --force to replace it")
    previous = destination.with_name(f".{destination.name}.previous-{os.getpid()}")
    destination.rename(previous)
    try:
        building.rename(destination)
    except OSError as error:
        previous.rename(destination)
        raise ConversionError(f"cannot move the new folder to '{destination}': {error}") from None
    shutil.rmtree(previous, ignore_errors=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Convert an original TokenOCR checkpoint into a hub-ready folder that loads with transformers.",
    )
    parser.add_argument("--input", required=True, metavar="SRC", help="original checkpoint folder or hub repo id")
    parser.add_argument("--output", required=True, metavar="DST", help="folder to create")
    parser.add_argument("--dtype", choices=list(DTYPES), help="dtype of the written weights (default: the source's)")
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE, metavar="SIZE",
                        help=f"largest weight file, e.g. 5GB or 500MB (default: {DEFAULT_MAX_SHARD_SIZE})")
    parser.add_argument("--force", action="store_true", help="replace DST if it exists (only once the new one is complete)")
    parser.add_argument("--repo-id", default=DEFAULT_REPO_ID,
                        help=f"hub repo the folder will be published as, used in the model card (default: {DEFAULT_REPO_ID})")
    parser.add_argument("--space-id", default=None,
                        help="demo Space the model card links to (default: OWNER/TokenOCR-demo, OWNER from --repo-id)")
    return parser


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        convert(args.input, args.output, args.dtype, args.max_shard_size, args.force, args.repo_id, args.space_id)
    except KeyboardInterrupt:
        print(f"{PROGRAM}: error: interrupted; '{args.output}' was not written", file=sys.stderr)
        return 130
    except (ConversionError, CheckpointError, ImportError, OSError, ValueError) as error:
        message = " ".join(str(error).split())
        print(f"{PROGRAM}: error: {message}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
