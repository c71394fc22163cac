"""Turn original TokenOCR checkpoints (InternVL-style `internvl_chat` folders) into TokenOCR models."""

from .original import CheckpointError, OriginalCheckpoint, convert_tokenizer, load_original, rename_key


__all__ = ["CheckpointError", "OriginalCheckpoint", "convert_tokenizer", "load_original", "rename_key"]
