"""
The R50 reference case (`fixtures/original/r50_tiny`): its other layout (the demo's two parts), edits for broken
checkpoints, and the original R50 computation written out with `torch.nn.functional` from the fixtures README, to
check images the fixtures do not cover (it is itself checked against the fixtures first).
"""

import shutil
from pathlib import Path

import torch
import torch.nn.functional as F

from fixture_cases import FIXTURES


R50 = FIXTURES / "r50_tiny" / "checkpoint"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")


def read_state(folder: Path = R50, name: str = "checkpoint.pth") -> dict:
    return torch.load(folder / name, map_location="cpu", weights_only=True)["model"]


def split_into_parts(source: Path, target: Path, keep_tokenizer: bool = True, duplicate: str | None = None) -> Path:
    """`target` holding `source`'s state dict as the demo ships it: backbone in part 1, the rest in part 2."""
    target.mkdir(parents=True)
    state = read_state(source)
    first = {key: value for key, value in state.items() if key.startswith("backbone.")}
    second = {key: value for key, value in state.items() if key not in first}
    if duplicate is not None:  # also put this tensor in the part that does not hold it
        (second if duplicate in first else first)[duplicate] = state[duplicate]
    torch.save({"model": first}, target / "checkpoint_part1.pth")
    torch.save({"model": second}, target / "checkpoint_part2.pth")
    if keep_tokenizer:
        for name in TOKENIZER_FILES:
            shutil.copyfile(source / name, target / name)
    return target


def rewrite_state(change, name: str = "checkpoint.pth"):
    """
    A breakage for the broken-checkpoint table: `change(state)` applied to the `.pth`'s `{"model": ...}` (in place, or
    returning a new dict).
    """

    def apply(folder: Path):
        state = read_state(folder, name)
        changed = change(state)
        state = changed if isinstance(changed, dict) else state
        torch.save({"model": state}, folder / name)

    return apply


def _batch_norm(state: dict, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"], state[f"{prefix}.weight"],
                        state[f"{prefix}.bias"], training=False, eps=1e-5)


def _bottleneck(state: dict, prefix: str, x: torch.Tensor, stride: int) -> torch.Tensor:
    """torchvision's Bottleneck (stride on the 3x3 convolution), in eval mode."""
    y = F.relu(_batch_norm(state, f"{prefix}.bn1", F.conv2d(x, state[f"{prefix}.conv1.weight"])))
    y = F.conv2d(y, state[f"{prefix}.conv2.weight"], stride=stride, padding=1)
    y = F.relu(_batch_norm(state, f"{prefix}.bn2", y))
    y = _batch_norm(state, f"{prefix}.bn3", F.conv2d(y, state[f"{prefix}.conv3.weight"]))
    if f"{prefix}.downsample.0.weight" in state:
        x = F.conv2d(x, state[f"{prefix}.downsample.0.weight"], stride=stride)
        x = _batch_norm(state, f"{prefix}.downsample.1", x)
    return F.relu(y + x)


def reference_features(state: dict, pixels: torch.Tensor) -> torch.Tensor:
    """The original `forward_tokenocr` of the R50 variant, `(1, 3, H, W)` -> `(1, h * w, D)`, in float32."""
    state = {key: value.float() for key, value in state.items()}
    body = "backbone.body"
    x = F.relu(_batch_norm(state, f"{body}.bn1", F.conv2d(pixels, state[f"{body}.conv1.weight"], stride=2, padding=3)))
    x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
    for stage in range(1, 5):
        blocks = 1 + max(int(key.split(".")[3]) for key in state if key.startswith(f"{body}.layer{stage}."))
        for block in range(blocks):
            x = _bottleneck(state, f"{body}.layer{stage}.{block}", x, 2 if stage > 1 and block == 0 else 1)
    x = _batch_norm(state, "upsample.1", F.conv_transpose2d(x, state["upsample.0.weight"], stride=2, padding=1))
    x = _batch_norm(state, "upsample.3", F.conv_transpose2d(x, state["upsample.2.weight"], stride=2, padding=1))
    x = x.flatten(2).transpose(1, 2)
    x = F.gelu(F.linear(x, state["ocr_mlp.0.weight"], state["ocr_mlp.0.bias"]))
    return F.linear(x, state["ocr_mlp.2.weight"], state["ocr_mlp.2.bias"])


def reference_maps(state: dict, features: torch.Tensor, ids: list[int], map_hw) -> torch.Tensor:
    """The quick start's `attn_map`: cosine of each token's embedding with every location, `(tokens, h, w)`."""
    embeddings = state["language_embedding.weight"].float()[ids]
    features = features[0] / features[0].norm(dim=-1, keepdim=True)
    embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True)
    return (embeddings @ features.T).reshape(len(ids), *map_hw)
