"""
Loading a TokenOCR model for the command line and the demo, from whatever the user names: a converted folder, a
hub repo id, or an original checkpoint folder (a ViT release's `internvl_chat` folder or the R50 release's
`checkpoint.pth` / parts). `model_type: tokenocr` is always served by the installed package's classes (its tokenizer
by transformers' own); a folder's or repo's own Python files run only with `trust_remote_code=True`, for a model the
package has no classes for. A folder whose weights do not fit its config.json or hold NaN/infinity, or whose tokenizer
files are unreadable, is refused with a one-line `BrokenModelError` naming the tensor or file.
"""

import json
import re
from contextlib import contextmanager
from pathlib import Path

from .constants import DTYPE_NAMES, HUB_ID_PATTERN, ORIGINAL_MODEL_TYPE, ORIGINAL_R50_FILES


MODEL_HELP = (
    "a converted TokenOCR folder (made with `tokenocr-convert --input ORIGINAL --output DIR`), a hub repo id such as "
    f"org/TokenOCR, or an original TokenOCR checkpoint folder (config.json with model_type {ORIGINAL_MODEL_TYPE}, or "
    "the R50 release's checkpoint.pth or checkpoint_part1.pth + checkpoint_part2.pth with its tokenizer.model)"
)


class ModelNotFoundError(ValueError):
    """`--model` names nothing that can be loaded; the message says what to pass."""


class BrokenModelError(ValueError):
    """A model folder or repo whose files are there but cannot be used: weights that do not fit its config.json or
    hold NaN/infinity, an unreadable tokenizer file. The message names the file or tensor."""


# Elements checked at a time by `all_finite`: bounds the temporary it allocates, whatever the tensor's size.
_FINITE_CHUNK = 1 << 24


def all_finite(tensor) -> bool:
    """Whether a tensor holds no NaN or infinity (always true for integer tensors); one pass, in bounded chunks."""
    import torch

    if not tensor.is_floating_point() and not tensor.is_complex():
        return True
    flat = tensor.reshape(-1)
    return all(bool(torch.isfinite(flat[start : start + _FINITE_CHUNK]).all())
               for start in range(0, flat.numel(), _FINITE_CHUNK))


def check_finite_weights(network, model: str) -> None:
    """Refuse a model any of whose parameters or buffers holds NaN or infinity, naming the first such tensor."""
    from itertools import chain

    for name, tensor in chain(network.named_parameters(), network.named_buffers()):
        if not all_finite(tensor.detach()):
            raise BrokenModelError(
                f"the weights of '{model}' hold NaN or infinite values (first in '{name}'); the model is broken"
            )


def model_type_of_folder(folder: Path) -> str | None:
    """The `model_type` in `folder/config.json`, or None when there is no readable JSON object there."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return config.get("model_type") if isinstance(config, dict) else None


def is_original_folder(folder: Path) -> bool:
    """Whether `folder` is an original TokenOCR checkpoint: an `internvl_chat` config.json or R50 `.pth` files."""
    model_type = model_type_of_folder(folder)
    if model_type == ORIGINAL_MODEL_TYPE:
        return True
    return model_type is None and any((folder / name).is_file() for name in ORIGINAL_R50_FILES)


def check_device(spec: str | None) -> str:
    """`spec` (`cpu`, `cuda`, `cuda:1`, `mps`, ...) checked to name a device this machine has; default: `cuda` when
    this machine has one, else `cpu` (the command line and the demo share this rule)."""
    import torch

    if spec is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device '{spec}' is not a device; use cpu, cuda, cuda:N or mps") from None
    available = {
        "cpu": lambda: True,
        "cuda": lambda: torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count(),
        "mps": lambda: torch.backends.mps.is_available(),
        "xpu": lambda: hasattr(torch, "xpu") and torch.xpu.is_available(),
    }
    if device.type not in available:
        raise ValueError(f"--device '{spec}': device type '{device.type}' is not supported; use cpu, cuda or mps")
    if not available[device.type]():
        raise ValueError(f"--device '{spec}' is not available on this machine")
    return str(device)


def _torch_dtype(dtype: str | None):
    import torch

    if dtype is not None and dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    return getattr(torch, dtype) if dtype else None


def _check_reference(model: str) -> Path:
    """`model` as a folder path, checked to be an original checkpoint, a folder with config.json or a hub repo id."""
    folder = Path(model).expanduser()
    if folder.is_dir() and is_original_folder(folder):
        return folder
    if not folder.is_dir() and not re.fullmatch(HUB_ID_PATTERN, model):
        raise ModelNotFoundError(f"--model '{model}' is not a folder or a hub repo id; pass {MODEL_HELP}")
    if folder.is_dir() and not (folder / "config.json").is_file():
        raise ModelNotFoundError(f"--model '{model}' has no config.json; pass {MODEL_HELP}")
    return folder


def load_model_and_processor(model: str, dtype: str | None = None, trust_remote_code: bool = False):
    """
    `(TokenOCRModel in eval mode, TokenOCRProcessor)` for `model`: a converted folder or hub repo id (`model_type:
    tokenocr`: always the installed classes, `trust_remote_code` or not, so none of the folder's Python files runs,
    its tokenizer's included), another model with `trust_remote_code` (transformers' Auto classes, which run the
    folder's own code), or an original checkpoint folder (`load_original`, float32 unless `dtype` says otherwise).

    Raises:
        ModelNotFoundError: `model` is neither an existing folder nor a hub repo id, or not a TokenOCR model.
        BrokenModelError: weights that do not fit config.json or hold NaN/infinity; an unreadable tokenizer.
    """
    import torch

    torch_dtype = _torch_dtype(dtype)
    folder = _check_reference(model)
    if folder.is_dir() and is_original_folder(folder):
        from .conversion import load_original

        return load_original(folder, dtype=torch_dtype or torch.float32)
    if _tokenocr_config(model, trust_remote_code) is None:  # another model_type, and its own code is allowed
        from transformers import AutoModel, AutoProcessor

        network = _load_network(AutoModel, model, trust_remote_code=True, dtype=torch_dtype or "auto")
        return network, AutoProcessor.from_pretrained(model, trust_remote_code=True)
    return _installed_model_and_processor(model, torch_dtype)


def load_tokenizer(model: str, trust_remote_code: bool = False):
    """
    The fast tokenizer of `model`: a converted or trained folder's or hub repo's `tokenizer.json` (with transformers'
    own tokenizer classes for a TokenOCR model, whatever `trust_remote_code` says), or an original checkpoint's
    `tokenizer.model` converted as `tokenocr-convert` converts it. No weights are loaded.
    """
    folder = _check_reference(model)
    if folder.is_dir() and is_original_folder(folder):
        from .conversion.tokenizer import convert_tokenizer

        return convert_tokenizer(folder)
    from transformers import AutoTokenizer

    trusted = trust_remote_code and _tokenocr_config(model, trust_remote_code) is None
    with _naming_a_broken_tokenizer(model):
        return AutoTokenizer.from_pretrained(model, trust_remote_code=trusted)


def load_pipeline(model: str, device: str | None = None, dtype: str | None = None, trust_remote_code: bool = False,
                  batch_size: int | None = None):
    """
    A `token-similarity` pipeline for `model` (see `load_model_and_processor`); with `trust_remote_code`, a converted
    folder's or repo's own pipeline class too.

    Raises:
        ModelNotFoundError: `model` is neither an existing folder nor a hub repo id, or not a TokenOCR model.
    """
    device = check_device(device)
    options = {"device": device, **({"batch_size": batch_size} if batch_size else {})}
    folder = _check_reference(model)
    original = folder.is_dir() and is_original_folder(folder)
    if trust_remote_code and not original and _tokenocr_config(model, trust_remote_code) is None:
        from transformers import pipeline

        torch_dtype = _torch_dtype(dtype)
        finder = pipeline("token-similarity", model=model, trust_remote_code=True, dtype=torch_dtype or "auto", **options)
        check_finite_weights(finder.model, model)
        return finder
    from .processing import TokenSimilarityPipeline

    network, processor = load_model_and_processor(model, dtype)
    return TokenSimilarityPipeline(model=network, processor=processor, task="token-similarity", **options)


def _tokenocr_config(model: str, trust_remote_code: bool):
    """
    The `TokenOCRConfig` of a converted folder or hub repo, read with the installed classes (no code from `model`
    runs); `None` for another model when `trust_remote_code` lets its own code load it.

    Raises:
        ModelNotFoundError: not a TokenOCR model, and `trust_remote_code` is off.
    """
    from transformers import AutoConfig

    from .modeling import TokenOCRConfig

    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=False)
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        if trust_remote_code:
            return None
        raise ModelNotFoundError(
            f"--model '{model}' is not a model the installed package has classes for: it needs its own Python code; "
            "pass --trust-remote-code to run that code"
        ) from None
    if isinstance(config, TokenOCRConfig):
        return config
    if trust_remote_code:
        return None
    raise ModelNotFoundError(f"--model '{model}' is a '{config.model_type}' model, not TokenOCR; pass {MODEL_HELP}")


def _installed_model_and_processor(model: str, torch_dtype):
    """The model and processor of a TokenOCR folder or repo (see `_tokenocr_config`), built from the installed
    package's classes: nothing from the folder or repo runs, and its tokenizer is transformers' own class."""
    from .modeling import TokenOCRModel
    from .processing import TokenOCRProcessor

    network = _load_network(TokenOCRModel, model, dtype=torch_dtype or "auto")
    with _naming_a_broken_tokenizer(model):
        return network, TokenOCRProcessor.from_pretrained(model, trust_remote_code=False)


def _not_a_load_report(record) -> bool:
    """A logging filter that drops transformers' multi-line weight-loading report: `_load_network` says it in one line."""
    return "LOAD REPORT" not in record.getMessage()


def _load_network(model_class, model: str, **kwargs):
    """
    `model_class.from_pretrained(model, **kwargs)` in eval mode, refused in one line (`BrokenModelError`) when the
    weights do not fit config.json (a tensor of another shape, missing or left over: transformers would print its load
    report and fill the gaps with random values) or hold NaN or infinity.
    """
    import logging

    logger = logging.getLogger("transformers.modeling_utils")
    logger.addFilter(_not_a_load_report)
    try:
        network, info = model_class.from_pretrained(model, output_loading_info=True, ignore_mismatched_sizes=True,
                                                    **kwargs)
    finally:
        logger.removeFilter(_not_a_load_report)
    problem = _weights_disagreement(info)
    if problem:
        raise BrokenModelError(f"config.json of '{model}' does not fit its weights: {problem}")
    check_finite_weights(network, model)
    return network.eval()


def _weights_disagreement(info: dict) -> str | None:
    """The first disagreement in transformers' loading info, in words, or None."""
    mismatched = sorted(info.get("mismatched_keys") or (), key=lambda entry: entry[0])
    missing, unexpected = sorted(info.get("missing_keys") or ()), sorted(info.get("unexpected_keys") or ())
    count = len(mismatched) + len(missing) + len(unexpected)
    more = f" (and {count - 1} more)" if count > 1 else ""
    if mismatched:
        name, stored, wanted = mismatched[0]
        return f"'{name}' has shape {list(stored)} in the weights but {list(wanted)} by config.json{more}"
    if missing:
        return f"the weights lack '{missing[0]}'{more}"
    if unexpected:
        return f"the weights hold '{unexpected[0]}', which config.json has no place for{more}"
    return None


@contextmanager
def _naming_a_broken_tokenizer(model: str):
    """
    Around loading a model's tokenizer: a failure caused by an unreadable `tokenizer.json` or `tokenizer_config.json`
    (not JSON, or JSON without a tokenizer's fields: transformers then fails with a bare `KeyError: 'added_tokens'`)
    becomes one `BrokenModelError` naming the file; any other failure is left as it is.
    """
    try:
        yield
    except (ModelNotFoundError, BrokenModelError):
        raise
    except Exception as error:
        problem = _tokenizer_file_problem(model)
        if problem:
            raise BrokenModelError(problem) from error
        raise


def _tokenizer_file_problem(model: str) -> str | None:
    """What is wrong with `model`'s tokenizer files, if anything: read from the folder or the local hub cache only."""
    from tokenizers import Tokenizer

    for name in ("tokenizer.json", "tokenizer_config.json"):
        path = _local_file(model, name)
        if path is None:
            continue
        try:
            if name == "tokenizer.json":
                Tokenizer.from_file(str(path))
            elif not isinstance(json.loads(path.read_text(encoding="utf-8")), dict):
                return f"{name} of '{model}' is not a JSON object"
        except Exception as error:  # noqa: BLE001 - the tokenizers library and json fail in many ways
            text = " ".join(str(error).split()) or type(error).__name__
            return f"{name} of '{model}' is not a valid tokenizer file: {text}"
    return None


def _local_file(model: str, name: str) -> Path | None:
    """`name` of a model folder, or of a hub repo as far as the local cache has it (nothing is downloaded)."""
    folder = Path(model).expanduser()
    if folder.is_dir():
        return folder / name if (folder / name).is_file() else None
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(model, name)
    return Path(cached) if isinstance(cached, str) else None
