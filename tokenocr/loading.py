"""
Loading a TokenOCR model for the command line and the demo, from whatever the user names: a converted folder, a
hub repo id, or an original checkpoint folder (a ViT release's `internvl_chat` folder or the R50 release's
`checkpoint.pth` / parts). `model_type: tokenocr` is always served by the installed package's classes; a folder's or
repo's own Python files run only with `trust_remote_code=True`, for a model the package has no classes for.
"""

import json
import re
from pathlib import Path

from .constants import DTYPE_NAMES, HUB_ID_PATTERN, ORIGINAL_MODEL_TYPE, ORIGINAL_R50_FILES


MODEL_HELP = (
    "a converted TokenOCR folder (made with `tokenocr-convert --input ORIGINAL --output DIR`), a hub repo id such as "
    f"org/TokenOCR, or an original TokenOCR checkpoint folder (config.json with model_type {ORIGINAL_MODEL_TYPE}, or "
    "the R50 release's checkpoint.pth or checkpoint_part1.pth + checkpoint_part2.pth with its tokenizer.model)"
)


class ModelNotFoundError(ValueError):
    """`--model` names nothing that can be loaded; the message says what to pass."""


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
    """`spec` (`cpu`, `cuda`, `cuda:1`, `mps`, ...) checked to name a device this machine has; default `cpu`."""
    import torch

    if spec is None:
        return "cpu"
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
    `(TokenOCRModel in eval mode, TokenOCRProcessor)` for `model`: a converted folder or hub repo id (the installed
    classes; with `trust_remote_code`, transformers' Auto classes, which run a folder's own code only where no class
    is registered), or an original checkpoint folder (`load_original`,
    float32 unless `dtype` says otherwise).

    Raises:
        ModelNotFoundError: `model` is neither an existing folder nor a hub repo id, or not a TokenOCR model.
    """
    import torch

    torch_dtype = _torch_dtype(dtype)
    folder = _check_reference(model)
    if folder.is_dir() and is_original_folder(folder):
        from .conversion import load_original

        return load_original(folder, dtype=torch_dtype or torch.float32)
    if trust_remote_code:
        from transformers import AutoModel, AutoProcessor

        network = AutoModel.from_pretrained(model, trust_remote_code=True, dtype=torch_dtype or "auto")
        return network.eval(), AutoProcessor.from_pretrained(model, trust_remote_code=True)
    return _installed_model_and_processor(model, torch_dtype)


def load_tokenizer(model: str, trust_remote_code: bool = False):
    """
    The fast tokenizer of `model`: a converted or trained folder's or hub repo's `tokenizer.json`, or an original
    checkpoint's `tokenizer.model` converted as `tokenocr-convert` converts it. No weights are loaded.
    """
    folder = _check_reference(model)
    if folder.is_dir() and is_original_folder(folder):
        from .conversion.tokenizer import convert_tokenizer

        return convert_tokenizer(folder)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)


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
    if trust_remote_code and not (folder.is_dir() and is_original_folder(folder)):
        from transformers import pipeline

        torch_dtype = _torch_dtype(dtype)
        return pipeline("token-similarity", model=model, trust_remote_code=True, dtype=torch_dtype or "auto", **options)
    from .processing import TokenSimilarityPipeline

    network, processor = load_model_and_processor(model, dtype)
    return TokenSimilarityPipeline(model=network, processor=processor, task="token-similarity", **options)


def _installed_model_and_processor(model: str, torch_dtype):
    """The model and processor built from the installed package's classes: nothing from the folder or repo runs."""
    from transformers import AutoConfig

    from .modeling import TokenOCRConfig, TokenOCRModel
    from .processing import TokenOCRProcessor

    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=False)
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        raise ModelNotFoundError(
            f"--model '{model}' is not a model the installed package has classes for: it needs its own Python code; "
            "pass --trust-remote-code to run that code"
        ) from None
    if not isinstance(config, TokenOCRConfig):
        raise ModelNotFoundError(
            f"--model '{model}' is a '{config.model_type}' model, not TokenOCR; pass {MODEL_HELP}"
        )
    network = TokenOCRModel.from_pretrained(model, dtype=torch_dtype or "auto").eval()
    return network, TokenOCRProcessor.from_pretrained(model)
