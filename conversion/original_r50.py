# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
Read an original TokenOCR R50 checkpoint (the ResNet-50 variant) into TokenOCR classes.

The release is a folder with `checkpoint.pth`, or the demo's `checkpoint_part1.pth` + `checkpoint_part2.pth`, each
`torch.save({"model": state_dict})`, and no config: depths and widths are read from the tensors. Its tokenizer lives
elsewhere in the original repository, so it may be given separately. The state dict holds a torchvision ResNet
(`backbone.body.*`, Bottleneck blocks, no fc), the upsampler (`upsample.0-3`), the projector without LayerNorm
(`ocr_mlp.0/.2`), the token-embedding table (`language_embedding.weight`) and the scalars `t_prime` and `b`.
"""

import os
import re
from functools import cached_property
from pathlib import Path

from ..constants import ORIGINAL_FIXED_LOGIT_BIAS, ORIGINAL_R50_PART_FILES, ORIGINAL_R50_SINGLE_FILE
from ..modeling import TokenOCRConfig
from ..processing import TokenOCRImageProcessor, TokenOCRProcessor
from .original import OriginalCheckpoint, template_regex
from .tokenizer import convert_tokenizer, tokenizer_folder
from .weights import CheckpointError, WeightFile, first_line


EMBEDDING_KEY = "language_embedding.weight"
BACKBONE = "backbone.body."

# Original name <-> TokenOCR name for everything outside the ResNet stages. `{param}` is a parameter or buffer name.
_NAME_PAIRS = [
    ("backbone.body.conv1.weight", "vision_tower.embedder.embedder.convolution.weight"),
    ("backbone.body.bn1.{param}", "vision_tower.embedder.embedder.normalization.{param}"),
    ("upsample.0.{param}", "upsampler.conv_transpose_1.{param}"),
    ("upsample.1.{param}", "upsampler.batch_norm_1.{param}"),
    ("upsample.2.{param}", "upsampler.conv_transpose_2.{param}"),
    ("upsample.3.{param}", "upsampler.batch_norm_2.{param}"),
    ("ocr_mlp.0.{param}", "projector.linear_1.{param}"),
    ("ocr_mlp.2.{param}", "projector.linear_2.{param}"),
    (EMBEDDING_KEY, "embed_tokens.weight"),
    ("t_prime", "logit_scale"),
    ("b", "logit_bias"),
]
_FORWARD = [(template_regex(original), ours) for original, ours in _NAME_PAIRS]
_BACKWARD = [(template_regex(ours), original) for original, ours in _NAME_PAIRS]

# Inside a stage: torchvision's `layerS.B.convK` / `bnK` / `downsample.0|1` <-> transformers' ResNet stage layers.
_STAGE_ORIGINAL = re.compile(
    r"^backbone\.body\.layer(?P<stage>\d+)\.(?P<block>\d+)\."
    r"(?:(?P<kind>conv|bn)(?P<index>\d+)|downsample\.(?P<shortcut>[01]))\.(?P<param>\w+)$"
)
_STAGE_OURS = re.compile(
    r"^vision_tower\.encoder\.stages\.(?P<stage>\d+)\.layers\.(?P<block>\d+)\."
    r"(?:layer\.(?P<index>\d+)|(?P<shortcut>shortcut))\.(?P<part>convolution|normalization)\.(?P<param>\w+)$"
)


def rename_r50_key(key: str) -> list[str] | None:
    """The TokenOCR name of an original R50 tensor name (as a one-element list), or None for an unknown name."""
    match = _STAGE_ORIGINAL.match(key)
    if match:
        stage, block, param = int(match["stage"]) - 1, match["block"], match["param"]
        prefix = f"vision_tower.encoder.stages.{stage}.layers.{block}."
        if match["shortcut"] is not None:
            part = "convolution" if match["shortcut"] == "0" else "normalization"
            return [f"{prefix}shortcut.{part}.{param}"]
        part = "convolution" if match["kind"] == "conv" else "normalization"
        return [f"{prefix}layer.{int(match['index']) - 1}.{part}.{param}"] if int(match["index"]) > 0 else None
    for pattern, template in _FORWARD:
        match = pattern.match(key)
        if match:
            return [template.format(**match.groupdict())]
    return None


def original_r50_name(name: str) -> str:
    """The original R50 name of a TokenOCR tensor name (the name itself when it has none)."""
    match = _STAGE_OURS.match(name)
    if match:
        prefix = f"{BACKBONE}layer{int(match['stage']) + 1}.{match['block']}."
        if match["shortcut"] is not None:
            return f"{prefix}downsample.{0 if match['part'] == 'convolution' else 1}.{match['param']}"
        kind = "conv" if match["part"] == "convolution" else "bn"
        return f"{prefix}{kind}{int(match['index']) + 1}.{match['param']}"
    for pattern, template in _BACKWARD:
        match = pattern.match(name)
        if match:
            return template.format(**match.groupdict())
    return name


class R50WeightFile(WeightFile):
    """A `.pth` file of the original R50 release, `{"model": state_dict}`, read with `weights_only=True`."""

    def __enter__(self):
        super().__enter__()
        state = self._state.get("model")
        if not isinstance(state, dict):
            self.__exit__(None, None, None)
            raise CheckpointError(
                f"weight file '{self.path.name}' does not hold {{'model': state_dict}} as the original R50 saves it"
            )
        self._state = state
        return self


def r50_weight_files(folder: Path) -> list[Path]:
    """The R50 weight files of `folder`: `[checkpoint.pth]` or both parts, in order; raises naming what is wrong."""
    single = folder / ORIGINAL_R50_SINGLE_FILE
    parts = [folder / name for name in ORIGINAL_R50_PART_FILES]
    present = [part for part in parts if part.exists()]
    if single.exists() and present:
        raise CheckpointError(
            f"'{folder}' holds both {single.name} and {present[0].name}; keep one layout (the whole checkpoint or its "
            "two parts)"
        )
    if single.exists():
        return [single]
    missing = [part.name for part in parts if not part.exists()]
    if missing:
        raise CheckpointError(f"R50 checkpoint part '{missing[0]}' is missing from '{folder}' (the parts are "
                              f"{' + '.join(ORIGINAL_R50_PART_FILES)})")
    return parts


class OriginalR50Checkpoint(OriginalCheckpoint):
    """
    An original R50 checkpoint folder (see the module docstring): where each tensor lives, the `TokenOCRConfig` its
    shapes describe, and its processor (whole images, no tiles). Tensors are read lazily with
    `torch.load(weights_only=True, mmap=True)`; the two parts of a split checkpoint are merged by name, and a name in
    both is an error. `tokenizer` (a folder, a `tokenizer.model` file or a hub repo id) replaces the folder's own.
    """

    file_class = R50WeightFile

    def __init__(self, path: str | os.PathLike, tokenizer: str | os.PathLike | None = None):
        self.path = Path(path)
        if not self.path.is_dir():
            raise CheckpointError(f"checkpoint folder '{self.path}' does not exist")
        self.config = None  # the R50 release has no config.json
        self.files = r50_weight_files(self.path)
        self.tokenizer_given = tokenizer is not None
        self.tokenizer_path = tokenizer_folder(tokenizer) if tokenizer is not None else self.path

    @cached_property
    def weight_map(self) -> dict[str, Path]:
        """Original tensor name -> the `.pth` file that holds it (a name in both parts is an error)."""
        weight_map: dict[str, Path] = {}
        for file in self.files:
            with self.file_class(file) as weights:
                for key in weights.keys():
                    if key in weight_map:
                        raise CheckpointError(f"tensor '{key}' is in both '{weight_map[key].name}' and '{file.name}'")
                    weight_map[key] = file
        return weight_map

    @cached_property
    def embedding_key(self) -> str:
        if EMBEDDING_KEY not in self.weight_map:
            raise CheckpointError(f"missing tensor '{EMBEDDING_KEY}' in the checkpoint")
        return EMBEDDING_KEY

    def rename_key(self, key: str) -> list[str] | None:
        return rename_r50_key(key)

    def original_name(self, name: str) -> str:
        return original_r50_name(name)

    def _shape(self, key: str, dimensions: int) -> tuple[int, ...]:
        if key not in self.tensor_info:
            raise CheckpointError(f"missing tensor '{key}' in the checkpoint")
        shape = self.tensor_info[key][0]
        if len(shape) != dimensions:
            raise CheckpointError(f"tensor '{key}' has shape {list(shape)}, expected {dimensions} dimensions")
        return shape

    def resnet_config(self) -> dict:
        """The `ResNetConfig` arguments the backbone's tensors describe: stem width, stage depths and widths."""
        blocks: dict[int, int] = {}
        for key in self.weight_map:
            match = _STAGE_ORIGINAL.match(key)
            if match:
                stage = int(match["stage"])
                blocks[stage] = max(blocks.get(stage, 0), int(match["block"]) + 1)
        if sorted(blocks) != [1, 2, 3, 4]:
            raise CheckpointError(
                f"the backbone has stages {sorted(blocks)} (backbone.body.layerN), expected a ResNet's layer1-layer4"
            )
        for stage in blocks:
            if f"{BACKBONE}layer{stage}.0.conv3.weight" not in self.weight_map:
                raise CheckpointError(
                    f"missing tensor '{BACKBONE}layer{stage}.0.conv3.weight': not a bottleneck ResNet"
                )
        stem = self._shape(f"{BACKBONE}conv1.weight", 4)
        return {
            "model_type": "resnet",
            "num_channels": stem[1],
            "embedding_size": stem[0],
            "hidden_sizes": [self._shape(f"{BACKBONE}layer{stage}.0.conv3.weight", 4)[0] for stage in sorted(blocks)],
            "depths": [blocks[stage] for stage in sorted(blocks)],
            "layer_type": "bottleneck",
            "downsample_in_first_stage": False,
            "downsample_in_bottleneck": False,
        }

    def tokenocr_config(self) -> TokenOCRConfig:
        """A `TokenOCRConfig` with a ResNet tower, every width and depth read from the tensors' shapes."""
        vocab_size, hidden_size = self._shape(EMBEDDING_KEY, 2)
        middle = self._shape("upsample.0.weight", 4)[1]
        output = self._shape("upsample.2.weight", 4)[1]
        vision_config = self.resnet_config()
        try:
            return TokenOCRConfig(
                vision_config=vision_config,
                hidden_size=hidden_size,
                vocab_size=vocab_size,
                pad_token_id=2,
                upsampler_hidden_size=middle,
                upsampler_output_size=output,
                projector_layer_norm=False,
                fixed_logit_bias=ORIGINAL_FIXED_LOGIT_BIAS,
                architectures=["TokenOCRModel"],
            )
        except (ValueError, TypeError, ArithmeticError) as error:
            message = f"the R50 checkpoint does not describe a TokenOCR model: {first_line(error)}"
            raise CheckpointError(message) from error

    def processor(self) -> TokenOCRProcessor:
        """The processor for this checkpoint: whole images (no tiles) and its tokenizer."""
        if not (self.tokenizer_path / "tokenizer.model").is_file() and not self.tokenizer_given:
            raise CheckpointError(
                f"'{self.path}' has no tokenizer.model; the original R50 release keeps its tokenizer elsewhere: pass "
                "it as load_original(..., tokenizer=PATH_OR_REPO), or convert the folder with tokenocr-convert "
                "--tokenizer PATH_OR_REPO"
            )
        image_processor = TokenOCRImageProcessor(do_tiling=False)
        return TokenOCRProcessor(image_processor=image_processor, tokenizer=convert_tokenizer(self.tokenizer_path))


__all__ = ["OriginalR50Checkpoint", "original_r50_name", "rename_r50_key"]
