# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
Read an original TokenOCR checkpoint into TokenOCR classes: an InternVL-style `internvl_chat` folder (the ViT
releases) here, or an R50 folder (`checkpoint.pth` or its two parts) through `original_r50.py`, chosen by what the
folder holds.
"""

import json
import os
import re
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path

import torch

from ..constants import DTYPE_NAMES, ORIGINAL_FIXED_LOGIT_BIAS, ORIGINAL_MODEL_TYPE, ORIGINAL_R50_FILES
from ..loading import all_finite
from ..modeling import TokenOCRConfig, TokenOCRModel
from ..processing import TokenOCRImageProcessor, TokenOCRProcessor
from ..processing.settings_tokenocr import MAX_TILES, MIN_TILES
from .tokenizer import convert_tokenizer, tokenizer_folder
from .weights import CheckpointError, WeightFile, find_weight_files, first_line, iter_file_tensors


# Tiling the original quick start applies, whatever the training-time limits in config.json say.
QUICK_START_TILING = {"min_tiles": MIN_TILES, "max_tiles": MAX_TILES, "use_thumbnail": True}

# Parts of an original checkpoint the similarity model never uses.
SKIPPED_PREFIXES = ("language_model.", "mlp1.")
EMBEDDING_KEYS = ("tok_embeddings.weight", "language_model.model.tok_embeddings.weight")

# Defaults of the original InternVisionConfig, for keys an original config.json leaves out.
_ORIGINAL_VISION_DEFAULTS = {
    "num_channels": 3,
    "patch_size": 14,
    "image_size": 224,
    "qkv_bias": False,
    "hidden_size": 3200,
    "num_attention_heads": 25,
    "intermediate_size": 12800,
    "qk_normalization": True,
    "num_hidden_layers": 48,
    "hidden_act": "gelu",
    "norm_type": "rms_norm",
    "layer_norm_eps": 1e-6,
    "attention_dropout": 0.0,
    "initializer_range": 0.02,
    "initializer_factor": 0.1,
}

# Original name <-> TokenOCR name. `{layer}` is a layer index, `{param}` a parameter or buffer name.
_NAME_PAIRS = [
    ("vision_model.embeddings.class_embedding", "vision_tower.embeddings.cls_token"),
    ("vision_model.embeddings.patch_embedding.{param}", "vision_tower.embeddings.patch_embeddings.projection.{param}"),
    ("vision_model.embeddings.position_embedding", "vision_tower.embeddings.position_embeddings"),
    ("vision_model.encoder.layers.{layer}.attn.proj.{param}", "vision_tower.encoder.layer.{layer}.attention.projection_layer.{param}"),
    ("vision_model.encoder.layers.{layer}.attn.q_norm.{param}", "vision_tower.encoder.layer.{layer}.attention.q_norm.{param}"),
    ("vision_model.encoder.layers.{layer}.attn.k_norm.{param}", "vision_tower.encoder.layer.{layer}.attention.k_norm.{param}"),
    ("vision_model.encoder.layers.{layer}.norm1.{param}", "vision_tower.encoder.layer.{layer}.layernorm_before.{param}"),
    ("vision_model.encoder.layers.{layer}.norm2.{param}", "vision_tower.encoder.layer.{layer}.layernorm_after.{param}"),
    ("vision_model.encoder.layers.{layer}.ls1", "vision_tower.encoder.layer.{layer}.lambda_1"),
    ("vision_model.encoder.layers.{layer}.ls2", "vision_tower.encoder.layer.{layer}.lambda_2"),
    ("vision_model.encoder.layers.{layer}.mlp.fc1.{param}", "vision_tower.encoder.layer.{layer}.mlp.fc1.{param}"),
    ("vision_model.encoder.layers.{layer}.mlp.fc2.{param}", "vision_tower.encoder.layer.{layer}.mlp.fc2.{param}"),
    ("upsample.0.{param}", "upsampler.conv_transpose_1.{param}"),
    ("upsample.1.{param}", "upsampler.batch_norm_1.{param}"),
    ("upsample.2.{param}", "upsampler.conv_transpose_2.{param}"),
    ("upsample.3.{param}", "upsampler.batch_norm_2.{param}"),
    ("ocr_mlp.0.{param}", "projector.layer_norm.{param}"),
    ("ocr_mlp.1.{param}", "projector.linear_1.{param}"),
    ("ocr_mlp.3.{param}", "projector.linear_2.{param}"),
    ("tok_embeddings.weight", "embed_tokens.weight"),
    ("language_model.model.tok_embeddings.weight", "embed_tokens.weight"),
    ("t_prime", "logit_scale"),
    ("b", "logit_bias"),
    # The fused attention input projection: its rows are the query, key and value blocks.
    ("vision_model.encoder.layers.{layer}.attn.qkv.{param}", "vision_tower.encoder.layer.{layer}.attention.q_proj.{param}"),
]
_QKV_PARTS = ("q_proj", "k_proj", "v_proj")
# BatchNorm's batch counter: an integer buffer that inference never reads, accepted when stored as a whole float.
COUNTER_SUFFIX = ".num_batches_tracked"


def template_regex(template: str) -> re.Pattern:
    """A weight-name template (`...layers.{layer}.{param}`) as a regex with named groups `layer` and `param`; the
    name tables of both original layouts (ViT here, R50 in `original_r50`) are built with it."""
    pattern = re.escape(template).replace(r"\{layer\}", r"(?P<layer>\d+)").replace(r"\{param\}", r"(?P<param>[A-Za-z_]+)")
    return re.compile(f"^{pattern}$")


_FORWARD = [(template_regex(original), ours) for original, ours in _NAME_PAIRS]
_BACKWARD = [
    (template_regex(ours.replace("q_proj", part)), original)
    for original, ours in _NAME_PAIRS
    for part in (_QKV_PARTS if ".attn.qkv." in original else ("q_proj",))
]


def is_skipped(key: str) -> bool:
    """Whether `key` belongs to a part of the original checkpoint that TokenOCR never uses."""
    return key.startswith(SKIPPED_PREFIXES) and key not in EMBEDDING_KEYS


def rename_key(key: str) -> list[str] | None:
    """
    TokenOCR names for an original tensor name: one name, three for a fused `qkv` (query, key, value row
    blocks), or `None` for a name that is neither TokenOCR's nor a known unused part.
    """
    for pattern, template in _FORWARD:
        match = pattern.match(key)
        if match:
            name = template.format(**match.groupdict())
            if ".attn.qkv." in key:
                return [name.replace("q_proj", part) for part in _QKV_PARTS]
            return [name]
    return None


def original_name(name: str) -> str:
    """The original checkpoint's name for a TokenOCR tensor name (the fused `qkv` for q/k/v projections)."""
    for pattern, template in _BACKWARD:
        match = pattern.match(name)
        if match:
            return template.format(**match.groupdict())
    return name


# ------------------------------------------------------------------------------------------ configuration


def read_original_config(folder: Path) -> dict:
    """The `config.json` of an original checkpoint folder, checked to be an `internvl_chat` JSON object."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"'{folder}' has no config.json")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"config.json in '{folder}' is not valid JSON: {first_line(error)}") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"config.json in '{folder}' is not a JSON object")
    if config.get("model_type") != ORIGINAL_MODEL_TYPE:
        raise CheckpointError(
            f"config.json in '{folder}' has model_type {config.get('model_type')!r}; an original TokenOCR checkpoint "
            f"has {ORIGINAL_MODEL_TYPE!r}"
        )
    for section in ("vision_config", "llm_config"):
        if not isinstance(config.get(section) or {}, dict):
            raise CheckpointError(f"config.json in '{folder}': '{section}' is not a JSON object")
    return config


def tile_size_from_original(original: dict) -> int:
    """The side of the square tiles an original checkpoint was trained on (`force_image_size`, else `image_size`)."""
    image_size = (original.get("vision_config") or {}).get("image_size", _ORIGINAL_VISION_DEFAULTS["image_size"])
    return original.get("force_image_size") or (image_size[0] if isinstance(image_size, list) else image_size)


def processor_settings_from_original(original: dict) -> dict:
    """`TokenOCRImageProcessor` arguments for an original checkpoint: its tile size and the quick start's tiling."""
    return {"size": tile_size_from_original(original), **QUICK_START_TILING}


def _declared_widths(original: dict) -> dict:
    llm = original.get("llm_config") or {}
    return {
        "hidden_size": llm.get("hidden_size", original.get("hidden_size")),
        "vocab_size": llm.get("vocab_size", original.get("vocab_size")),
    }


def tokenocr_config_from_original(original: dict, shapes: dict[str, tuple[int, ...]], embedding_key: str) -> TokenOCRConfig:
    """
    A `TokenOCRConfig` from an original `config.json` and the shapes of the checkpoint's tensors: the widths are read
    from the weights and checked against what the config declares.
    """
    vision = {**_ORIGINAL_VISION_DEFAULTS, **(original.get("vision_config") or {})}
    vocab_size, hidden_size = shapes[embedding_key]
    for name, from_weights in (("hidden_size", hidden_size), ("vocab_size", vocab_size)):
        declared = _declared_widths(original)[name]
        if declared is not None and declared != from_weights:
            raise CheckpointError(
                f"config.json says {name}={declared} but '{embedding_key}' has shape {list(shapes[embedding_key])}"
            )
    upsample_shape = shapes.get("upsample.0.weight")
    if upsample_shape is None:
        raise CheckpointError("missing tensor 'upsample.0.weight'")
    if len(upsample_shape) != 4:
        raise CheckpointError(f"tensor 'upsample.0.weight' has shape {list(upsample_shape)}, expected 4 dimensions")
    try:
        return TokenOCRConfig(
            vision_config={
                "hidden_size": vision["hidden_size"],
                "num_hidden_layers": vision["num_hidden_layers"],
                "num_attention_heads": vision["num_attention_heads"],
                "intermediate_size": vision["intermediate_size"],
                "hidden_act": vision["hidden_act"],
                "layer_norm_eps": vision["layer_norm_eps"],
                "norm_type": vision["norm_type"],
                "attention_bias": bool(vision["qkv_bias"]),
                "use_qk_norm": bool(vision["qk_normalization"]),
                "image_size": vision["image_size"],
                "patch_size": vision["patch_size"],
                "num_channels": vision["num_channels"],
                "attention_dropout": vision["attention_dropout"],
                "initializer_range": vision["initializer_range"],
                "layer_scale_init_value": vision["initializer_factor"],
            },
            hidden_size=hidden_size,
            vocab_size=vocab_size,
            pad_token_id=2,
            upsampler_hidden_size=upsample_shape[1],
            vision_feature_layer=original.get("select_layer", -1),
            fixed_logit_bias=ORIGINAL_FIXED_LOGIT_BIAS,
            architectures=["TokenOCRModel"],
        )
    except (ValueError, TypeError, ArithmeticError) as error:
        raise CheckpointError(f"config.json does not describe a TokenOCR model: {first_line(error)}") from error


# --------------------------------------------------------------------------------------------- the folder


def is_original_r50_folder(folder: Path) -> bool:
    """
    Whether `folder` holds an original R50 checkpoint: `checkpoint.pth` or `checkpoint_part*.pth`, and no
    `config.json` of an `internvl_chat` (ViT) checkpoint.
    """
    if not any((folder / name).is_file() for name in ORIGINAL_R50_FILES):
        return False
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return True
    return not (isinstance(config, dict) and config.get("model_type") == ORIGINAL_MODEL_TYPE)


class OriginalCheckpoint:
    """
    An original checkpoint folder: its config and where each tensor lives. Tensors are only read when asked for,
    unused ones never; pickled `.bin` files are read with `torch.load(weights_only=True)`; every weight file must
    lie inside the folder.

    `OriginalCheckpoint(path)` looks at what the folder holds: a `config.json` of an `internvl_chat` checkpoint (the
    ViT releases) gives this class, `checkpoint.pth` or its two parts (the R50 release) an `OriginalR50Checkpoint`.
    `tokenizer` (a folder holding `tokenizer.model`, or a hub repo id) replaces the folder's own tokenizer.
    """

    file_class = WeightFile  # how a weight file is opened

    def __new__(cls, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None):
        if cls is OriginalCheckpoint and Path(path).is_dir() and is_original_r50_folder(Path(path)):
            from .original_r50 import OriginalR50Checkpoint

            cls = OriginalR50Checkpoint
        return super().__new__(cls)

    def __init__(self, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"checkpoint folder '{self.path}' does not exist")
        self.config = read_original_config(self.path)
        self._weights = find_weight_files(self.path)
        self.tokenizer_path = tokenizer_folder(tokenizer) if tokenizer is not None else self.path

    @cached_property
    def weight_map(self) -> dict[str, Path]:
        """Original tensor name -> the weight file that holds it."""
        if isinstance(self._weights, dict):
            return self._weights
        with self.file_class(self._weights) as weights:
            return {key: self._weights for key in weights.keys()}

    def rename_key(self, key: str) -> list[str] | None:
        """TokenOCR names for an original tensor name (see the module's `rename_key`)."""
        return rename_key(key)

    def original_name(self, name: str) -> str:
        """The original name of a TokenOCR tensor name (see the module's `original_name`)."""
        return original_name(name)

    def kept_keys(self) -> list[str]:
        """Original names of the tensors TokenOCR keeps (everything but known unused parts)."""
        return [key for key in self.weight_map if not is_skipped(key)]

    def read_order(self) -> dict[Path, list[str]]:
        """The kept tensors grouped by weight file, files and names sorted: the order they are read in."""
        by_file: dict[Path, list[str]] = {}
        for key in sorted(self.kept_keys(), key=lambda key: (self.weight_map[key], key)):
            by_file.setdefault(self.weight_map[key], []).append(key)
        return by_file

    def iter_tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """
        Yield `(original_name, tensor)` for the kept tensors in `read_order`, one weight file open at a time. Tensors
        from `.bin` files may be memory-mapped views: copy them to keep them past the next file.
        """
        yield from iter_file_tensors(self.read_order(), self.file_class)

    @cached_property
    def tensor_info(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """`(shape, dtype)` of each kept tensor, from file headers (safetensors) or memory maps (.bin)."""
        info = {}
        for file, names in self.read_order().items():
            with self.file_class(file) as weights:
                available = set(weights.keys())
                for name in names:
                    if name not in available:
                        raise CheckpointError(f"tensor '{name}' is missing from '{file.name}'")
                    info[name] = weights.info(name)
        return info

    @cached_property
    def embedding_key(self) -> str:
        found = [key for key in EMBEDDING_KEYS if key in self.weight_map]
        if not found:
            raise CheckpointError(f"missing tensor(s) '{EMBEDDING_KEYS[0]}' (or '{EMBEDDING_KEYS[1]}') in the checkpoint")
        if len(found) > 1:
            raise CheckpointError(f"the checkpoint holds two token-embedding tables: {', '.join(found)}")
        return found[0]

    def source_dtype(self) -> torch.dtype:
        """The dtype of the stored weights (that of the embedding table)."""
        return self.tensor_info[self.embedding_key][1]

    def tokenocr_config(self) -> TokenOCRConfig:
        """A `TokenOCRConfig` from config.json, with the widths read from the weights and checked against it."""
        shapes = {name: shape for name, (shape, _) in self.tensor_info.items()}
        return tokenocr_config_from_original(self.config, shapes, self.embedding_key)

    def processor(self) -> TokenOCRProcessor:
        """The processor for this checkpoint: its tiling and its tokenizer."""
        image_processor = TokenOCRImageProcessor(**processor_settings_from_original(self.config))
        return TokenOCRProcessor(image_processor=image_processor, tokenizer=convert_tokenizer(self.tokenizer_path))


# ------------------------------------------------------------------------------------------------ weights


def expected_tensors(config: TokenOCRConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Name -> (shape, dtype) of every tensor of a `TokenOCRModel` built from `config`, without allocating it."""
    with torch.device("meta"):
        model = TokenOCRModel(config)
    return {name: (tuple(tensor.shape), tensor.dtype) for name, tensor in model.state_dict().items()}


def _check_tensor(key: str, names: list[str], shape: tuple, stored: torch.dtype, expected: dict) -> tuple:
    """The per-name shape of original tensor `key` after checking it against the model; raises naming the problem."""
    if len(names) == 3:
        if not shape or shape[0] % 3:
            raise CheckpointError(f"tensor '{key}' has shape {list(shape)}, which does not split into q, k and v")
        shape = (shape[0] // 3, *shape[1:])
    if key in ("t_prime", "b") and shape in ((), (1,)):
        shape = ()
    for name in names:
        if name not in expected:
            raise CheckpointError(f"unexpected tensor '{key}' in the checkpoint")
        want_shape, want_dtype = expected[name]
        if tuple(shape) != want_shape:
            raise CheckpointError(
                f"tensor '{key}' has shape {list(shape if len(names) == 1 else (shape[0] * 3, *shape[1:]))}, "
                f"expected {list(want_shape if len(names) == 1 else (want_shape[0] * 3, *want_shape[1:]))}"
            )
        if stored.is_floating_point != want_dtype.is_floating_point and not (
            name.endswith(COUNTER_SUFFIX) and stored.is_floating_point  # a checkpoint cast wholesale to a float dtype
        ):
            kind = "a floating-point" if want_dtype.is_floating_point else "an integer"
            raise CheckpointError(f"tensor '{key}' is stored as {stored}, expected {kind} tensor")
    return tuple(shape)


def plan_conversion(
    checkpoint: OriginalCheckpoint, config: TokenOCRConfig, dtype: torch.dtype | None
) -> dict[str, list[tuple[str, tuple[int, ...], torch.dtype]]]:
    """
    What converting the checkpoint produces, without reading any tensor data: for each original tensor, in read
    order, the TokenOCR `(name, shape, dtype)` entries it becomes (three for a fused qkv). Checks that every tensor
    TokenOCR needs is there with the right shape and kind of dtype, and that nothing unexpected is.
    """
    expected = expected_tensors(config)
    plan, produced = {}, set()
    for key in (key for names in checkpoint.read_order().values() for key in names):
        shape, stored = checkpoint.tensor_info[key]
        names = checkpoint.rename_key(key)
        if names is None:
            raise CheckpointError(f"unexpected tensor '{key}' in the checkpoint")
        shape = _check_tensor(key, names, shape, stored, expected)
        want_dtype = expected[names[0]][1]
        if not want_dtype.is_floating_point:  # an integer buffer: kept as stored, or as the model's when stored as float
            out_dtype = want_dtype if stored.is_floating_point else stored
        else:
            out_dtype = dtype if dtype is not None else stored
        plan[key] = [(name, shape, out_dtype) for name in names]
        produced.update(names)
    missing = sorted({checkpoint.original_name(name) for name in set(expected) - produced})
    if missing:
        listed = ", ".join(f"'{name}'" for name in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CheckpointError(f"missing tensor(s) {listed}{more} in the checkpoint")
    return plan


def convert_tensors(
    checkpoint: OriginalCheckpoint, plan: dict, copy: bool = True
) -> Iterator[tuple[str, torch.Tensor]]:
    """
    Yield TokenOCR `(name, tensor)` pairs following `plan` (from `plan_conversion`), one weight file at a time. With
    `copy=False` a tensor may be a view of a memory-mapped file, valid until the next one is yielded.

    Each tensor is checked as it goes by (one pass, no second read): a floating-point one must hold only finite values
    in the dtype it is converted to; a counter stored as a float (`num_batches_tracked` of a checkpoint cast wholesale
    to bfloat16) must hold a whole non-negative number, and becomes the model's integer dtype.
    """
    for key, tensor in checkpoint.iter_tensors():
        parts = tensor.chunk(3, dim=0) if len(plan[key]) == 3 else [tensor]
        for (name, shape, out_dtype), part in zip(plan[key], parts):
            try:
                if part.is_floating_point() and not out_dtype.is_floating_point:
                    _check_counter(key, part)
                converted = part.reshape(shape).to(out_dtype, copy=copy)
                finite = all_finite(converted)
            except CheckpointError:
                raise
            except Exception as error:  # noqa: BLE001 - a truncated memory map shows up on first touch
                raise CheckpointError(
                    f"cannot read tensor '{key}' from '{checkpoint.weight_map[key].name}': {first_line(error)}"
                ) from error
            if not finite:
                overflow = f" once converted to {str(out_dtype).replace('torch.', '')}" if all_finite(part) else ""
                raise CheckpointError(f"tensor '{key}' holds NaN or infinite values{overflow}; the checkpoint is broken")
            yield name, converted


def _check_counter(key: str, tensor: torch.Tensor) -> None:
    """A counter (`num_batches_tracked`) stored as a float: refused unless it holds whole non-negative numbers."""
    values = tensor.double()
    whole = (values >= 0) & (values < 2.0**63) & (values == values.round())  # NaN and infinity are neither
    if not whole.all():
        shown = values.reshape(-1)[:1].tolist()
        raise CheckpointError(
            f"tensor '{key}' is stored as {tensor.dtype} and holds {shown[0] if shown else 'nothing'}, "
            "not a whole non-negative count"
        )


def resolve_dtype(dtype, checkpoint: OriginalCheckpoint) -> torch.dtype:
    """`dtype` (a torch dtype, its name, `"auto"` or `None` for the stored one) as a supported torch dtype."""
    if dtype is None or dtype == "auto":
        dtype = checkpoint.source_dtype()
    name = dtype if isinstance(dtype, str) else str(dtype).replace("torch.", "")
    if name not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)} or auto, got {dtype!r}")
    return getattr(torch, name)


def load_original(
    path: str | os.PathLike,
    dtype: torch.dtype | str | None = torch.float32,
    tokenizer: str | os.PathLike | None = None,
):
    r"""
    Load an original TokenOCR checkpoint folder as `(TokenOCRModel, TokenOCRProcessor)`.

    The folder is what an original release holds, either
    - a ViT release: `config.json` with `model_type: internvl_chat`, weights as one `model.safetensors`, sharded
      safetensors or sharded `pytorch_model-*.bin` files with an index, and the SentencePiece `tokenizer.model`.
      Tensors the similarity model never uses (`language_model.*` except the token-embedding table, `mlp1.*`) are
      not read; or
    - the R50 release: `checkpoint.pth` (or the demo's `checkpoint_part1.pth` + `checkpoint_part2.pth`), each
      `{"model": state_dict}`, with no config (depths and widths are read from the tensors), and a `tokenizer.model`
      beside it or given as `tokenizer`. Its processor gives whole images, no tiles.

    Args:
        path: the checkpoint folder.
        dtype: `torch.float32` (default), `torch.bfloat16`, `torch.float16`, their names, or `"auto"`/`None` for
            the stored dtype.
        tokenizer: where the tokenizer is, when not in `path` (the original R50 release keeps it elsewhere): a
            folder holding `tokenizer.model` (and optionally `tokenizer_config.json`, `special_tokens_map.json`), the
            `tokenizer.model` file itself, or a hub repo id.

    Returns:
        `(model, processor)`, the model in eval mode. Its `config.fixed_logit_bias` is -8.9375, the bias the released
        models were trained with, so `logits` are calibrated; the checkpoint's untrained `b` stays in `logit_bias`.

    Raises:
        CheckpointError (a `ValueError`): missing config or weights, wrong `model_type`, a missing, unexpected or
            wrongly shaped tensor, a truncated weight file, a weight file outside the folder, a pickle that would run
            code, a missing part or a tensor in both parts of a split R50 checkpoint, a missing or unreadable
            `tokenizer.model`.
    """
    return load_checkpoint(OriginalCheckpoint(path, tokenizer=tokenizer), dtype)


def load_checkpoint(checkpoint: OriginalCheckpoint, dtype: torch.dtype | str | None = torch.float32):
    """`load_original` for an `OriginalCheckpoint` already opened: `(model in eval mode, processor)`."""
    config = checkpoint.tokenocr_config()
    dtype = resolve_dtype(dtype, checkpoint)
    state_dict = dict(convert_tensors(checkpoint, plan_conversion(checkpoint, config, dtype)))
    with torch.device("meta"):
        model = TokenOCRModel(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.config.dtype = dtype
    model.eval()
    return model, checkpoint.processor()


__all__ = ["CheckpointError", "OriginalCheckpoint", "load_original", "convert_tokenizer", "rename_key"]
