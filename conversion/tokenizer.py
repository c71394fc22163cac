# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""An original TokenOCR `tokenizer.model` (SentencePiece BPE, InternLM2) as a transformers fast tokenizer."""

import json
import os
import re
from pathlib import Path

from ..constants import HUB_ID_PATTERN
from .weights import CheckpointError, first_line


# What a tokenizer folder holds: the SentencePiece model (required) and the original's settings (optional).
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


def tokenizer_folder(source: str | os.PathLike) -> Path:
    """
    The folder holding the `tokenizer.model` named by `source`: a folder, the `tokenizer.model` file itself, or a hub
    repo id (its `tokenizer.model` and, when there, `tokenizer_config.json` and `special_tokens_map.json` are
    downloaded, or taken from the local cache when offline).

    Raises:
        CheckpointError: `source` is none of these, or the hub repo cannot be reached or has no `tokenizer.model`.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        if path.name != "tokenizer.model":
            raise CheckpointError(f"tokenizer '{source}' is a file other than tokenizer.model")
        return path.parent
    if not re.fullmatch(HUB_ID_PATTERN, str(source)):
        raise CheckpointError(f"tokenizer '{source}' is neither a folder, a tokenizer.model file nor a hub repo id")
    return _download_tokenizer(str(source))


def _download_tokenizer(repo_id: str) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    folder = None
    for name in TOKENIZER_FILES:
        try:
            folder = Path(hf_hub_download(repo_id, name)).parent
        except (EntryNotFoundError, LocalEntryNotFoundError) as error:
            if name == "tokenizer.model":
                offline = isinstance(error, LocalEntryNotFoundError)
                reason = "no such file"
                if offline:
                    reason = "the hub cannot be reached (offline?) and it is not in the local cache"
                raise CheckpointError(f"cannot get tokenizer.model of tokenizer repo '{repo_id}': {reason}") from None
        except Exception as error:  # noqa: BLE001 - unknown repo, network and permission errors
            raise CheckpointError(f"cannot get {name} of tokenizer repo '{repo_id}': {first_line(error)}") from None
    return folder


def convert_tokenizer(path: str | os.PathLike):
    """
    A fast tokenizer (`PreTrainedTokenizerFast`) equivalent to the SentencePiece `tokenizer.model` in folder `path`:
    same ids as `SentencePieceProcessor.encode`, same special tokens and BOS behaviour as the original
    `InternLM2Tokenizer` (settings from `tokenizer_config.json` / `special_tokens_map.json` beside it, when present).
    Needs `sentencepiece` (or `protobuf`) to read the model file.

    Raises:
        CheckpointError: no `tokenizer.model`, or one that is not a SentencePiece model; unreadable settings.
    """
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import SpmConverter

    path = Path(path)
    proto = _read_sentencepiece_model(path)
    vocab = {piece.piece: index for index, piece in enumerate(proto.pieces)}
    backend = SpmConverter.build_tokenizer_from_spm_proto(proto, vocab)
    if backend is None:
        raise CheckpointError(f"tokenizer.model in '{path}' uses an unsupported SentencePiece model type")
    settings = _read_settings(path)
    pieces = [piece.piece for piece in proto.pieces]
    spec = proto.trainer_spec

    def special(name: str, default_id: int) -> str:
        value = settings.get(name)
        value = value.get("content") if isinstance(value, dict) else value
        return value if isinstance(value, str) else pieces[default_id]

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=special("bos_token", spec.bos_id),
        eos_token=special("eos_token", spec.eos_id),
        unk_token=special("unk_token", spec.unk_id),
        pad_token=special("pad_token", spec.eos_id),
        add_bos_token=bool(settings.get("add_bos_token", True)),
        add_eos_token=bool(settings.get("add_eos_token", False)),
        clean_up_tokenization_spaces=bool(settings.get("clean_up_tokenization_spaces", False)),
        model_max_length=int(settings.get("model_max_length", 8192)),
    )
    _add_tokens_after_the_vocabulary(tokenizer, settings.get("added_tokens_decoder") or {}, len(pieces))
    return tokenizer


def _read_sentencepiece_model(path: Path):
    from transformers.convert_slow_tokenizer import import_protobuf

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
    return proto


def _read_settings(path: Path) -> dict:
    settings = {}
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        file = path / name
        if not file.is_file():
            continue
        try:
            values = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise CheckpointError(f"{name} in '{path}' is not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise CheckpointError(f"{name} in '{path}' is not a JSON object")
        settings.update(values)
    return settings


def _add_tokens_after_the_vocabulary(tokenizer, added: dict, vocabulary_size: int) -> None:
    """Tokens the original tokenizer adds after the SentencePiece vocabulary (e.g. chat-template markers)."""
    from tokenizers import AddedToken

    if not isinstance(added, dict):
        raise CheckpointError("tokenizer_config.json: 'added_tokens_decoder' is not a JSON object")
    for token_id in sorted(added, key=int):
        spec = added[token_id]
        if int(token_id) < vocabulary_size:
            continue
        flags = {name: bool(spec.get(name, False)) for name in ("normalized", "lstrip", "rstrip", "single_word")}
        is_special = bool(spec.get("special", False))
        tokenizer.add_tokens([AddedToken(spec["content"], special=is_special, **flags)], special_tokens=is_special)
        if tokenizer.convert_tokens_to_ids(spec["content"]) != int(token_id):
            raise CheckpointError(
                f"added token {spec['content']!r} should have id {token_id} but the vocabulary puts it elsewhere"
            )


__all__ = ["convert_tokenizer", "tokenizer_folder"]
