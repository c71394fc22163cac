# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""Read an original TokenOCR checkpoint (InternVL-style `internvl_chat` folder) into TokenOCR classes."""

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from ..modeling import TokenOCRConfig, TokenOCRModel
from ..processing import TokenOCRImageProcessor, TokenOCRProcessor


ORIGINAL_MODEL_TYPE = "internvl_chat"

# Tiling the original quick start applies, whatever the training-time limits in config.json say.
QUICK_START_MIN_TILES = 1
QUICK_START_MAX_TILES = 12
QUICK_START_USE_THUMBNAIL = True

# Parts of an original checkpoint the similarity model never uses.
SKIPPED_PREFIXES = ("language_model.", "mlp1.")
EMBEDDING_KEYS = ("tok_embeddings.weight", "language_model.model.tok_embeddings.weight")

# safetensors' dtype names, to read a tensor's dtype from a file header without reading the tensor.
SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}

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


def _template_regex(template: str) -> re.Pattern:
    pattern = re.escape(template).replace(r"\{layer\}", r"(?P<layer>\d+)").replace(r"\{param\}", r"(?P<param>[A-Za-z_]+)")
    return re.compile(f"^{pattern}$")


_FORWARD = [(_template_regex(original), ours) for original, ours in _NAME_PAIRS]
_BACKWARD = [
    (_template_regex(ours.replace("q_proj", part)), original)
    for original, ours in _NAME_PAIRS
    for part in (_QKV_PARTS if ".attn.qkv." in original else ("q_proj",))
]


class CheckpointError(ValueError):
    """An original checkpoint folder that cannot be read as TokenOCR; the message names the problem."""


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


class OriginalCheckpoint:
    """
    Lazy view of an original checkpoint folder: its config and where each tensor lives. Tensors are only read
    when asked for, unused ones never; pickled `.bin` files are read with `torch.load(weights_only=True)`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"checkpoint folder '{self.path}' does not exist")
        config_file = self.path / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"'{self.path}' has no config.json")
        try:
            self.config = json.loads(config_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise CheckpointError(f"config.json in '{self.path}' is not valid JSON: {error}") from error
        model_type = self.config.get("model_type")
        if model_type != ORIGINAL_MODEL_TYPE:
            raise CheckpointError(
                f"config.json in '{self.path}' has model_type {model_type!r}; an original TokenOCR checkpoint has "
                f"{ORIGINAL_MODEL_TYPE!r}"
            )
        self.weight_map = self._find_weights()
        self._tensor_info = None

    def _find_weights(self) -> dict[str, Path]:
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            index_file = self.path / index_name
            if index_file.is_file():
                try:
                    weight_map = json.loads(index_file.read_text(encoding="utf-8"))["weight_map"]
                except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as error:
                    raise CheckpointError(f"'{index_file}' is not a valid weight index: {error}") from error
                # Only shards holding tensors TokenOCR keeps must be present; the rest are never opened.
                for shard in sorted({shard for key, shard in weight_map.items() if not is_skipped(key)}):
                    if not (self.path / shard).is_file():
                        raise CheckpointError(f"weight shard '{shard}' listed in {index_name} is missing")
                return {key: self.path / shard for key, shard in weight_map.items()}
        for single in ("model.safetensors", "pytorch_model.bin"):
            file = self.path / single
            if file.is_file():
                return {key: file for key in self._keys_of(file)}
        raise CheckpointError(
            f"'{self.path}' holds no weights (looked for model.safetensors, pytorch_model.bin and their .index.json)"
        )

    @staticmethod
    def _open_bin(file: Path) -> dict[str, torch.Tensor]:
        try:
            try:
                return torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                return torch.load(file, map_location="cpu", weights_only=True)  # legacy non-zip format
        except Exception as error:  # noqa: BLE001 - any failure to unpickle is a bad checkpoint
            raise CheckpointError(f"cannot read weight file '{file.name}': {error}".splitlines()[0]) from error

    def _keys_of(self, file: Path) -> list[str]:
        if file.suffix == ".safetensors":
            try:
                with safe_open(file, framework="pt") as handle:
                    return list(handle.keys())
            except Exception as error:  # noqa: BLE001
                raise CheckpointError(f"cannot read weight file '{file.name}': {error}") from error
        return list(self._open_bin(file).keys())

    def kept_keys(self) -> list[str]:
        """Original names of the tensors TokenOCR keeps (everything but known unused parts)."""
        return [key for key in self.weight_map if not is_skipped(key)]

    def shards_needed(self) -> list[Path]:
        """The weight files holding at least one kept tensor, in order."""
        return sorted({self.weight_map[key] for key in self.kept_keys()})

    def read_order(self, keys=None) -> list[str]:
        """`keys` (default: the kept ones) in the order they are read: by weight file, then by name."""
        wanted = set(self.kept_keys() if keys is None else keys)
        return sorted(wanted, key=lambda key: (self.weight_map[key], key))

    def iter_tensors(self, keys=None) -> Iterator[tuple[str, torch.Tensor]]:
        """
        Yield `(original_name, tensor)` for `keys` (default: the kept ones) in `read_order`, one weight file at a
        time. Tensors from `.bin` files may be memory-mapped views: copy them to keep them past the next file.
        """
        by_file: dict[Path, list[str]] = {}
        for key in self.read_order(keys):
            by_file.setdefault(self.weight_map[key], []).append(key)
        for file, names in by_file.items():
            if file.suffix == ".safetensors":
                try:
                    with safe_open(file, framework="pt") as handle:
                        available = set(handle.keys())
                        for name in names:
                            if name not in available:
                                raise CheckpointError(f"tensor '{name}' is missing from '{file.name}'")
                            yield name, handle.get_tensor(name)
                except CheckpointError:
                    raise
                except Exception as error:  # noqa: BLE001 - truncated or corrupt file
                    raise CheckpointError(f"cannot read weight file '{file.name}': {error}") from error
            else:
                state = self._open_bin(file)
                for name in names:
                    if name not in state:
                        raise CheckpointError(f"tensor '{name}' is missing from '{file.name}'")
                    yield name, state[name]  # memory-mapped where the format allows: read when touched
                del state

    def tensor_info(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """`(shape, dtype)` of each kept tensor, from file headers (safetensors) or memory maps (.bin); read once."""
        if self._tensor_info is None:
            self._tensor_info = self._read_tensor_info()
        return self._tensor_info

    def _read_tensor_info(self) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        info = {}
        kept = set(self.kept_keys())
        for file in self.shards_needed():
            if file.suffix == ".safetensors":
                try:
                    with safe_open(file, framework="pt") as handle:
                        for name in handle.keys():
                            if name in kept:
                                piece = handle.get_slice(name)
                                info[name] = (tuple(piece.get_shape()), SAFETENSORS_DTYPES[piece.get_dtype()])
                except Exception as error:  # noqa: BLE001
                    raise CheckpointError(f"cannot read weight file '{file.name}': {error}") from error
            else:
                state = self._open_bin(file)
                for name, tensor in state.items():
                    if name in kept:
                        if not isinstance(tensor, torch.Tensor):
                            raise CheckpointError(f"'{name}' in '{file.name}' is not a tensor")
                        info[name] = (tuple(tensor.shape), tensor.dtype)
                del state
        for name in kept:
            if name not in info:
                raise CheckpointError(f"tensor '{name}' is missing from '{self.weight_map[name].name}'")
        return info

    def source_dtype(self) -> torch.dtype:
        """The floating dtype of the stored weights (that of the embedding table)."""
        return self.tensor_info()[self.embedding_key()][1]

    def embedding_key(self) -> str:
        found = [key for key in EMBEDDING_KEYS if key in self.weight_map]
        if not found:
            raise CheckpointError(f"missing tensor(s) '{EMBEDDING_KEYS[0]}' (or '{EMBEDDING_KEYS[1]}') in the checkpoint")
        if len(found) > 1:
            raise CheckpointError(f"the checkpoint holds two token-embedding tables: {', '.join(found)}")
        return found[0]

    def tokenocr_config(self) -> TokenOCRConfig:
        """A `TokenOCRConfig` from config.json, with the widths read from the weights and checked against it."""
        shapes = {name: shape for name, (shape, _) in self.tensor_info().items()}
        original = self.config
        vision = {**_ORIGINAL_VISION_DEFAULTS, **(original.get("vision_config") or {})}
        table = self.embedding_key()
        vocab_size, hidden_size = shapes[table]
        llm = original.get("llm_config") or {}
        declared = {
            "hidden_size": llm.get("hidden_size", original.get("hidden_size")),
            "vocab_size": llm.get("vocab_size", original.get("vocab_size")),
        }
        for name, from_weights in (("hidden_size", hidden_size), ("vocab_size", vocab_size)):
            if declared[name] is not None and int(declared[name]) != from_weights:
                raise CheckpointError(
                    f"config.json says {name}={declared[name]} but '{table}' has shape {list(shapes[table])}"
                )
        if "upsample.0.weight" not in shapes:
            raise CheckpointError("missing tensor 'upsample.0.weight'")
        upsample_shape = shapes["upsample.0.weight"]
        if len(upsample_shape) != 4:
            raise CheckpointError(f"tensor 'upsample.0.weight' has shape {list(upsample_shape)}, expected 4 dimensions")
        image_size = vision["image_size"]
        tile_size = original.get("force_image_size") or (image_size[0] if isinstance(image_size, list) else image_size)
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
                    "image_size": image_size,
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
                tile_size=tile_size,
                min_tiles=QUICK_START_MIN_TILES,
                max_tiles=QUICK_START_MAX_TILES,
                use_thumbnail=QUICK_START_USE_THUMBNAIL,
                architectures=["TokenOCRModel"],
            )
        except (ValueError, TypeError) as error:
            raise CheckpointError(f"config.json in '{self.path}' does not describe a TokenOCR model: {error}") from error


def expected_shapes(config: TokenOCRConfig) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a `TokenOCRModel` built from `config`, without allocating it."""
    with torch.device("meta"):
        model = TokenOCRModel(config)
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def conversion_plan(
    checkpoint: OriginalCheckpoint, config: TokenOCRConfig, dtype: torch.dtype | None
) -> list[tuple[str, list[tuple[str, tuple[int, ...], torch.dtype]]]]:
    """
    What converting the checkpoint produces, without reading any tensor data: for each original tensor in read
    order, the TokenOCR `(name, shape, dtype)` it becomes. Checks that every tensor TokenOCR needs is there with
    the right shape and that nothing unexpected is.
    """
    expected = expected_shapes(config)
    info = checkpoint.tensor_info()
    plan, produced = [], {}
    for key in checkpoint.read_order():
        shape, stored = info[key]
        names = rename_key(key)
        if names is None:
            raise CheckpointError(f"unexpected tensor '{key}' in the checkpoint")
        out_dtype = dtype if dtype is not None and stored.is_floating_point else stored
        if len(names) == 3:
            if not shape or shape[0] % 3:
                raise CheckpointError(f"tensor '{key}' has shape {list(shape)}, which does not split into q, k and v")
            shape = (shape[0] // 3, *shape[1:])
        for name in names:
            if name not in expected:
                raise CheckpointError(f"unexpected tensor '{key}' in the checkpoint")
            want = expected[name]
            if key in ("t_prime", "b") and shape in ((), (1,)):
                shape = ()
            if tuple(shape) != want:
                original_shape = list(info[key][0])
                raise CheckpointError(f"tensor '{key}' has shape {original_shape}, expected {list(want)}"
                                      + (" per q/k/v block" if len(names) == 3 else ""))
            produced[name] = key
        plan.append((key, [(name, tuple(shape), out_dtype) for name in names]))
    missing = sorted({original_name(name) for name in set(expected) - set(produced)})
    if missing:
        listed = ", ".join(f"'{name}'" for name in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise CheckpointError(f"missing tensor(s) {listed}{more} in the checkpoint")
    return plan


def check_and_convert(
    checkpoint: OriginalCheckpoint, config: TokenOCRConfig, dtype: torch.dtype | None, copy: bool = True
) -> Iterator[tuple[str, torch.Tensor]]:
    """
    Yield TokenOCR `(name, tensor)` pairs in `conversion_plan` order, one weight file at a time, after the plan's
    checks. With `copy=False` a tensor may be a view of a memory-mapped file, valid until the next one is yielded.
    """
    plan = dict(conversion_plan(checkpoint, config, dtype))
    for key, tensor in checkpoint.iter_tensors():
        for (name, shape, out_dtype), converted in zip(plan[key], _split(key, tensor)):
            try:
                converted = converted.reshape(shape).to(out_dtype, copy=copy)
            except Exception as error:  # noqa: BLE001 - a truncated memory map shows up on first touch
                raise CheckpointError(f"cannot read tensor '{key}' from '{checkpoint.weight_map[key].name}': {error}") from error
            yield name, converted


def _split(key: str, tensor: torch.Tensor) -> list[torch.Tensor]:
    return list(tensor.chunk(3, dim=0)) if ".attn.qkv." in key else [tensor]


def convert_tokenizer(path: str | os.PathLike):
    """
    A fast tokenizer (`PreTrainedTokenizerFast`) equivalent to the checkpoint's SentencePiece `tokenizer.model`:
    same ids as `SentencePieceProcessor.encode`, same special tokens and BOS behaviour as the original
    `InternLM2Tokenizer`. Needs `sentencepiece` (or `protobuf`) to read the model file.
    """
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter, import_protobuf

    path = Path(path)
    model_file = path / "tokenizer.model"
    if not model_file.is_file():
        raise CheckpointError(f"'{path}' has no tokenizer.model")
    try:
        model_pb2 = import_protobuf()
    except ImportError as error:
        raise ImportError(
            "Reading tokenizer.model needs sentencepiece and protobuf: pip install 'tokenocr[convert]'"
        ) from error
    proto = model_pb2.ModelProto()
    try:
        proto.ParseFromString(model_file.read_bytes())
    except Exception as error:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise CheckpointError(f"tokenizer.model in '{path}' is not a SentencePiece model: {error}") from error
    if not proto.pieces:
        raise CheckpointError(f"tokenizer.model in '{path}' is not a SentencePiece model (no pieces)")
    vocab = {piece.piece: index for index, piece in enumerate(proto.pieces)}
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    if backend is None:
        raise CheckpointError(f"tokenizer.model in '{path}' uses an unsupported SentencePiece model type")

    settings = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        file = path / name
        if file.is_file():
            settings.update(json.loads(file.read_text(encoding="utf-8")))

    def token_text(value, default):
        if isinstance(value, dict):
            return value.get("content", default)
        return value if value is not None else default

    pieces = [piece.piece for piece in proto.pieces]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=token_text(settings.get("bos_token"), pieces[proto.trainer_spec.bos_id]),
        eos_token=token_text(settings.get("eos_token"), pieces[proto.trainer_spec.eos_id]),
        unk_token=token_text(settings.get("unk_token"), pieces[proto.trainer_spec.unk_id]),
        pad_token=token_text(settings.get("pad_token"), pieces[proto.trainer_spec.eos_id]),
        add_bos_token=bool(settings.get("add_bos_token", True)),
        add_eos_token=bool(settings.get("add_eos_token", False)),
        clean_up_tokenization_spaces=bool(settings.get("clean_up_tokenization_spaces", False)),
        model_max_length=int(settings.get("model_max_length", 8192)),
    )
    # Tokens the original tokenizer adds after the SentencePiece vocabulary (e.g. chat-template markers).
    added = settings.get("added_tokens_decoder") or {}
    for token_id in sorted(added, key=int):
        spec = added[token_id]
        if int(token_id) < len(pieces):
            continue
        tokenizer.add_tokens(
            [
                AddedToken(
                    spec["content"],
                    special=bool(spec.get("special", False)),
                    normalized=bool(spec.get("normalized", False)),
                    lstrip=bool(spec.get("lstrip", False)),
                    rstrip=bool(spec.get("rstrip", False)),
                    single_word=bool(spec.get("single_word", False)),
                )
            ],
            special_tokens=bool(spec.get("special", False)),
        )
        if tokenizer.convert_tokens_to_ids(spec["content"]) != int(token_id):
            raise CheckpointError(
                f"added token {spec['content']!r} should have id {token_id} but the vocabulary puts it elsewhere"
            )
    return tokenizer


def _resolve_dtype(dtype, checkpoint: OriginalCheckpoint) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return checkpoint.source_dtype()
    if isinstance(dtype, str):
        if dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16, float16 or auto, got {dtype!r}")
        return getattr(torch, dtype)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be float32, bfloat16, float16 or auto, got {dtype}")
    return dtype


def build_processor(checkpoint: OriginalCheckpoint, config: TokenOCRConfig) -> TokenOCRProcessor:
    """The processor for an original checkpoint: its tiling and its tokenizer."""
    image_processor = TokenOCRImageProcessor(
        size=config.tile_size,
        min_tiles=config.min_tiles,
        max_tiles=config.max_tiles,
        use_thumbnail=config.use_thumbnail,
    )
    return TokenOCRProcessor(image_processor=image_processor, tokenizer=convert_tokenizer(checkpoint.path))


def load_original(path: str | os.PathLike, dtype: torch.dtype | str | None = torch.float32):
    r"""
    Load an original TokenOCR checkpoint folder as `(TokenOCRModel, TokenOCRProcessor)`.

    The folder is what the original release holds: `config.json` with `model_type: internvl_chat`, weights as one
    `model.safetensors`, sharded safetensors or sharded `pytorch_model-*.bin` files with an index, and the
    SentencePiece `tokenizer.model`. Tensors the similarity model never uses (`language_model.*` except the
    token-embedding table, `mlp1.*`) are not read.

    Args:
        path: the checkpoint folder.
        dtype: `torch.float32` (default), `torch.bfloat16`, `torch.float16`, their names, or `"auto"`/`None` for
            the stored dtype.

    Returns:
        `(model, processor)`, the model in eval mode.

    Raises:
        CheckpointError (a `ValueError`): missing config or weights, wrong `model_type`, a missing, unexpected or
            wrongly shaped tensor, a truncated weight file, a missing or unreadable `tokenizer.model`.
    """
    checkpoint = OriginalCheckpoint(path)
    config = checkpoint.tokenocr_config()
    dtype = _resolve_dtype(dtype, checkpoint)
    state_dict = dict(check_and_convert(checkpoint, config, dtype))
    with torch.device("meta"):
        model = TokenOCRModel(config)
    model.load_state_dict(state_dict, strict=True, assign=True)
    model.config.dtype = dtype
    model.eval()
    processor = build_processor(checkpoint, config)
    return model, processor


__all__ = ["CheckpointError", "OriginalCheckpoint", "load_original", "convert_tokenizer", "rename_key"]
