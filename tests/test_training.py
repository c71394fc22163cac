"""The training objective, freezing policies, Trainer wiring and the train / evaluate commands."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

import tokenocr  # noqa: F401  (registers the Auto classes)
from tokenocr import TokenOCRImageProcessor, TokenOCRProcessor
from tokenocr.conversion import convert_tokenizer
from tokenocr.modeling import TokenOCRConfig, TokenOCRForTokenAlignment, TokenOCRModel
from tokenocr.modeling.loss_tokenocr import masks_on_feature_grid
from tokenocr.cli import main
from tokenocr.loading import load_pipeline
from tokenocr.training.collator import TokenMaskCollator, tile_token_masks
from tokenocr.training.data import TokenMaskDatasetWriter, load_token_mask_dataset
from tokenocr.training.evaluate import evaluate_model
from tokenocr.training.train import apply_training_policy, build_trainer, default_training_arguments

from fixture_cases import FIXTURES
from hub_cache import report_as_hub_user


ROOT = Path(__file__).parents[1]
LN10 = math.log(10.0)


def tiny_config(**overrides) -> TokenOCRConfig:
    settings = {
        "vision_config": {"hidden_size": 16, "num_attention_heads": 2, "num_hidden_layers": 2, "image_size": 28,
                          "intermediate_size": 32, "patch_size": 14},
        "hidden_size": 8, "vocab_size": 640, "upsampler_hidden_size": 8,
        "fixed_logit_bias": -8.9375,
    }
    settings.update(overrides)
    return TokenOCRConfig(**settings)


# ---------------------------------------------------------------------------------------------------------------
# The objective, against a reference computed by hand with explicit loops.
# ---------------------------------------------------------------------------------------------------------------

def cosine(a, b):
    return float(torch.dot(a, b) / (a.norm() * b.norm()))


def bce_with_logits(x, y):
    p = 1.0 / (1.0 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def log_sigmoid(x):
    return -math.log(1.0 + math.exp(-x))


def hand_losses(features, embeddings, ids, valid, masks, tiles_of, scale, bias, seg_scale=10.0, seg_bias=-5.0):
    """The four components as the authors' code (sim, l2, sig) and our docstring (seg) state them, one loop per sum."""
    per_image = []
    for image, tiles in enumerate(tiles_of):
        terms = [bce_with_logits(seg_scale * cosine(features[t, l], embeddings[image][k]) + seg_bias,
                                 float(masks[t][k][l]))
                 for t in tiles for k in range(len(ids[image])) if valid[image][k] for l in range(features.shape[1])]
        per_image.append(sum(terms) / len(terms))
    loss_seg = sum(per_image) / len(per_image)
    present = []  # (id, e, v) of tokens with a non-empty mask
    for image, tiles in enumerate(tiles_of):
        for k in range(len(ids[image])):
            locations = [(t, l) for t in tiles for l in range(features.shape[1]) if valid[image][k] and masks[t][k][l]]
            if locations:
                v = sum(features[t, l] for t, l in locations) / len(locations)
                present.append((ids[image][k], embeddings[image][k], v))
    loss_sim = sum(1 - cosine(v, e) for _, e, v in present) / len(present)
    loss_l2 = sum(math.sqrt(sum((float(a) - float(b)) ** 2 for a, b in zip(v, e))) for _, e, v in present) / len(present)
    loss_sig = 0.0
    for id_i, e_i, _ in present:
        for id_j, _, v_j in present:
            z = 1.0 if id_i == id_j else -1.0
            loss_sig -= log_sigmoid(z * (cosine(e_i, v_j) * math.exp(scale) + bias))
    return loss_seg, loss_sim, loss_l2, loss_sig / len(present)


def tiny_case():
    torch.manual_seed(0)
    features = torch.randn(3, 4, 8)  # image 0: tile 0; image 1: tiles 1 and 2; a 2x2 feature grid
    input_ids = torch.tensor([[4, 5, 2], [5, 6, 7]])
    attention_mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    masks = torch.zeros(3, 3, 4, dtype=torch.bool)
    masks[0, 0, 0] = True                        # image 0, id 4
    masks[0, 1, [1, 2]] = True                   # image 0, id 5
    masks[0, 2, :] = True                        # padding: must not count
    masks[1, 0, [0, 1]] = masks[2, 0, 2] = True  # image 1, id 5 on both tiles (same id as in image 0)
    masks[1, 1, 3] = True                        # image 1, id 6; id 7 has an empty mask
    return features, input_ids, attention_mask, masks


@pytest.mark.parametrize("fixed_bias", [-8.9375, None])
def test_each_loss_component_equals_the_hand_computed_reference(fixed_bias):
    features, input_ids, attention_mask, masks = tiny_case()
    model = TokenOCRForTokenAlignment(tiny_config(fixed_logit_bias=fixed_bias))
    with torch.no_grad():
        model.tokenocr.logit_scale.fill_(LN10 + 0.1)
        model.tokenocr.logit_bias.fill_(-3.0)
    out = model(image_embeds=features, input_ids=input_ids, attention_mask=attention_mask,
                num_tiles=torch.tensor([1, 2]), token_masks=masks.reshape(3, 3, 2, 2))
    table = model.tokenocr.embed_tokens.weight.detach()
    embeddings = [[table[i] for i in row] for row in input_ids.tolist()]
    bias = -3.0 if fixed_bias is None else fixed_bias
    seg, sim, l2, sig = hand_losses(features, embeddings, input_ids.tolist(), attention_mask.tolist(),
                                    masks.tolist(), [[0], [1, 2]], LN10 + 0.1, bias)
    assert out.loss_seg.item() == pytest.approx(seg, rel=1e-5)
    assert out.loss_sim.item() == pytest.approx(sim, rel=1e-5)
    assert out.loss_l2.item() == pytest.approx(l2, rel=1e-5)
    assert out.loss_sig.item() == pytest.approx(sig, rel=1e-5)
    # The default objective is the authors': loss_sim + loss_l2 + loss_sig; loss_seg is logged only.
    assert out.loss.item() == pytest.approx(sim + l2 + sig, rel=1e-5)
    assert out.similarity.shape == (3, 3, 4)
    assert out.similarity[2, 1, 3].item() == pytest.approx(cosine(features[2, 3], embeddings[1][1]), rel=1e-5)
    assert set(out.keys()) >= {"loss", "loss_seg", "loss_sim", "loss_l2", "loss_sig"}


def test_loss_weights_and_the_seg_temperature_follow_their_formulas():
    features, input_ids, attention_mask, masks = tiny_case()
    model = TokenOCRForTokenAlignment(
        tiny_config(), loss_weights={"seg": 2.0, "l2": 0.0, "sig": 0.5}, seg_logit_scale=3.0, seg_logit_bias=0.5
    )
    inputs = dict(image_embeds=features, input_ids=input_ids, attention_mask=attention_mask,
                  num_tiles=torch.tensor([1, 2]), token_masks=masks.reshape(3, 3, 2, 2))
    out = model(**inputs)
    table = model.tokenocr.embed_tokens.weight.detach()
    embeddings = [[table[i] for i in row] for row in input_ids.tolist()]
    seg, sim, l2, sig = hand_losses(features, embeddings, input_ids.tolist(), attention_mask.tolist(), masks.tolist(),
                                    [[0], [1, 2]], model.tokenocr.logit_scale.item(), -8.9375, seg_scale=3.0,
                                    seg_bias=0.5)
    assert out.loss_seg.item() == pytest.approx(seg, rel=1e-5)
    assert out.loss.item() == pytest.approx(2.0 * seg + sim + 0.5 * sig, rel=1e-5)
    # The raw cosine of earlier versions is scale 1, bias 0.
    raw = hand_losses(features, embeddings, input_ids.tolist(), attention_mask.tolist(), masks.tolist(), [[0], [1, 2]],
                      model.tokenocr.logit_scale.item(), -8.9375, seg_scale=1.0, seg_bias=0.0)[0]
    model.configure_loss(seg_logit_scale=1.0, seg_logit_bias=0.0)
    assert model(**inputs).loss_seg.item() == pytest.approx(raw, rel=1e-5)


def test_a_learned_seg_temperature_trains_and_bad_settings_are_refused():
    features, input_ids, attention_mask, masks = tiny_case()
    model = TokenOCRForTokenAlignment(tiny_config(), loss_weights={"seg": 1.0}, learn_seg_temperature=True)
    assert {"seg_logit_scale_log", "seg_logit_bias"} <= {name for name, _ in model.named_parameters()}
    assert model.seg_logit_scale_log.exp().item() == pytest.approx(10.0) and model.seg_logit_bias.item() == -5.0
    out = model(image_embeds=features, input_ids=input_ids, attention_mask=attention_mask,
                num_tiles=torch.tensor([1, 2]), token_masks=masks.reshape(3, 3, 2, 2))
    out.loss.backward()
    assert model.seg_logit_scale_log.grad is not None and model.seg_logit_scale_log.grad.abs() > 0
    assert model.seg_logit_bias.grad.abs() > 0
    # A fixed temperature is no parameter, and the saved model never carries it.
    fixed = TokenOCRForTokenAlignment(tiny_config())
    assert not any("seg_logit" in name for name, _ in fixed.named_parameters())
    assert not any("seg_logit" in name for name in fixed.state_dict())
    for bad in ({"loss_weights": {"dice": 1.0}}, {"loss_weights": {"sim": -1.0}}, {"seg_logit_scale": 0.0},
                {"seg_logit_bias": float("nan")}):
        with pytest.raises(ValueError):
            TokenOCRForTokenAlignment(tiny_config(), **bad)


def test_masks_at_another_resolution_are_resized_bilinearly_and_binarised():
    masks = torch.zeros(2, 3, 8, 8)
    masks[0, 0, 0, 0] = 1.0   # one pixel in a corner
    masks[1, 2, 3:5, 3:5] = 1.0
    resized = masks_on_feature_grid(masks, 4)
    expected = torch.nn.functional.interpolate(masks, size=(4, 4), mode="bilinear", align_corners=False) > 0
    assert torch.equal(resized, expected.flatten(2))
    assert resized[0, 0].sum() == 1 and resized[1, 2].sum() == 4


def test_model_logits_use_the_learned_bias_without_a_fixed_one():
    torch.manual_seed(0)
    model = TokenOCRModel(tiny_config(fixed_logit_bias=None)).eval()
    with torch.no_grad():
        model.logit_bias.fill_(-1.25)
        out = model(image_embeds=torch.randn(1, 4, 8), input_ids=torch.tensor([[3, 4]]))
    torch.testing.assert_close(out.logits, out.similarity * model.logit_scale.exp() - 1.25)
    model.config.fixed_logit_bias = -8.9375
    with torch.no_grad():
        out = model(image_embeds=out.image_embeds, input_ids=torch.tensor([[3, 4]]))
    torch.testing.assert_close(out.logits, out.similarity * model.logit_scale.exp() - 8.9375)


def test_bad_batches_are_named():
    features, input_ids, attention_mask, masks = tiny_case()
    model = TokenOCRForTokenAlignment(tiny_config())
    with pytest.raises(ValueError, match="num_tiles"):
        model(image_embeds=features, input_ids=input_ids, token_masks=masks.reshape(3, 3, 2, 2))
    with pytest.raises(ValueError, match="does not split 3 tiles"):
        model(image_embeds=features, input_ids=input_ids, num_tiles=torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="token_masks gives 3 tiles x 2 tokens"):
        model(image_embeds=features, input_ids=input_ids, num_tiles=torch.tensor([1, 2]),
              token_masks=masks[:, :2].reshape(3, 2, 2, 2))


def test_a_resnet_tower_has_no_fixed_feature_grid():
    config = TokenOCRConfig(vision_config={"model_type": "resnet", "depths": [1, 1, 1, 1], "hidden_sizes": [8] * 4,
                                           "embedding_size": 8}, hidden_size=8, vocab_size=10, upsampler_hidden_size=8)
    with pytest.raises(ValueError, match="no fixed feature grid"):
        config.feature_side


def test_head_and_model_share_a_checkpoint_layout(tmp_path):
    torch.manual_seed(0)
    base = TokenOCRModel(tiny_config()).eval()
    base.save_pretrained(tmp_path / "base")
    head = TokenOCRForTokenAlignment.from_pretrained(tmp_path / "base")
    for name, tensor in base.state_dict().items():
        assert torch.equal(head.tokenocr.state_dict()[name], tensor), name
    head.save_pretrained(tmp_path / "head")
    again = AutoModel.from_pretrained(tmp_path / "head")
    assert type(again) is TokenOCRModel
    for name, tensor in base.state_dict().items():
        assert torch.equal(again.state_dict()[name], tensor), name


# ---------------------------------------------------------------------------------------------------------------
# Data: collator against a direct reference, and the dataset format.
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    return convert_tokenizer(FIXTURES / "tiny_seg" / "checkpoint")


@pytest.fixture(scope="module")
def processor(tokenizer):
    return TokenOCRProcessor(image_processor=TokenOCRImageProcessor(size=28, max_tiles=6), tokenizer=tokenizer)


def make_page(seed: int, width: int, height: int, num_tokens: int):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8))
    mask = np.zeros((height, width), dtype=np.int64)
    tokens = []
    for index in range(1, num_tokens + 1):
        top, left = int(rng.integers(0, height - 6)), int(rng.integers(0, width - 9))
        mask[top : top + int(rng.integers(2, 6)), left : left + int(rng.integers(2, 9))] = index
        tokens.append({"id": int(rng.integers(3, 600)), "text": f" t{index}", "mask_index": index})
    return {"image": image, "mask": Image.fromarray(mask.astype(np.uint16)), "tokens": tokens, "text": ""}


def reference_tiles(mask, indices, grid, tile, thumbnail, side):
    """Each token's full-page mask through torch's own resize, as the original training tiles masks."""
    cols, rows = grid
    full = torch.from_numpy(np.stack([mask == i for i in indices])).float()[None]
    canvas = torch.nn.functional.interpolate(full, size=(rows * tile, cols * tile), mode="bilinear") > 0
    tiles = [canvas[0, :, r * tile : (r + 1) * tile, c * tile : (c + 1) * tile] for r in range(rows) for c in range(cols)]
    if thumbnail:
        tiles.append(torch.nn.functional.interpolate(full, size=(tile, tile), mode="bilinear")[0] > 0)
    stacked = torch.stack(tiles).float()
    return torch.nn.functional.interpolate(stacked, size=(side, side), mode="bilinear") > 0


@pytest.mark.parametrize("grid,thumbnail,side", [((3, 2), True, 8), ((1, 1), False, 8), ((2, 3), True, 28)])
def test_token_masks_are_tiled_like_the_page(grid, thumbnail, side):
    page = make_page(1, 61, 47, 9)
    mask = np.asarray(page["mask"]).astype(np.int64)
    indices = [t["mask_index"] for t in page["tokens"]] + [77]  # 77: absent from the map
    fast = tile_token_masks(mask, indices, grid, 28, thumbnail, side)
    assert torch.equal(fast, reference_tiles(mask, indices, grid, 28, thumbnail, side))
    assert fast[:, -1].sum() == 0 and fast.sum() > 0


def test_collator_batches_pages_with_different_tile_counts(processor):
    pages = [make_page(2, 90, 30, 5), make_page(3, 28, 28, 2)]
    collator = TokenMaskCollator(processor, feature_side=8)
    batch = collator(pages)
    expected_pixels = processor.image_processor([p["image"] for p in pages], return_tensors="pt")
    assert torch.equal(batch["pixel_values"], expected_pixels["pixel_values"])
    assert batch["num_tiles"].tolist() == expected_pixels["num_tiles"].tolist() == [4, 1]
    assert batch["input_ids"].tolist()[1] == [t["id"] for t in pages[1]["tokens"]] + [2, 2, 2]
    assert batch["attention_mask"].tolist() == [[1] * 5, [1, 1, 0, 0, 0]]
    assert batch["token_masks"].shape == (5, 5, 8, 8)
    assert not batch["token_masks"][4, 2:].any()
    first = np.asarray(pages[0]["mask"]).astype(np.int64)
    reference = reference_tiles(first, [1, 2, 3, 4, 5], (3, 1), 28, True, 8)
    assert torch.equal(batch["token_masks"][:4], reference)


def test_collator_limits_tokens_and_checks_sizes(processor):
    page = make_page(4, 40, 40, 12)
    torch.manual_seed(0)
    batch = TokenMaskCollator(processor, feature_side=8, max_tokens_per_image=5)([page])
    assert batch["input_ids"].shape == (1, 5)
    assert set(batch["input_ids"][0].tolist()) <= {t["id"] for t in page["tokens"]}
    page["mask"] = Image.fromarray(np.zeros((10, 10), dtype=np.uint16))
    with pytest.raises(ValueError, match="mask map is 10x10 but the image is 40x40"):
        TokenMaskCollator(processor)([page])


def write_dataset(folder, pages):
    with TokenMaskDatasetWriter(folder) as writer:
        for page in pages:
            writer.add(page["image"], np.asarray(page["mask"]), page["tokens"], page["text"])
    return folder


def test_dataset_format_round_trip_and_errors(tmp_path):
    pages = [make_page(5, 50, 40, 4), make_page(6, 30, 60, 3)]
    folder = write_dataset(tmp_path / "data", pages)
    dataset = load_token_mask_dataset(folder)
    assert len(dataset) == 2 and set(dataset.column_names) == {"image", "mask", "tokens", "text", "words"}
    assert np.array_equal(np.asarray(dataset[1]["mask"]), np.asarray(pages[1]["mask"]))
    assert dataset[0]["tokens"] == pages[0]["tokens"]
    lines = (folder / "metadata.jsonl").read_text().splitlines()
    (folder / "metadata.jsonl").write_text(lines[0] + "\n{not json\n")
    with pytest.raises(ValueError, match="line 2: not valid JSON"):
        load_token_mask_dataset(folder)
    record = json.loads(lines[0])
    record["mask"] = "masks/missing.png"
    (folder / "metadata.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_token_mask_dataset(folder)
    record = json.loads(lines[0])
    del record["tokens"][0]["mask_index"]
    (folder / "metadata.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="token 0 must be an object with keys id, text, mask_index"):
        load_token_mask_dataset(folder)
    outside = tmp_path / "outside.png"
    outside.write_bytes((folder / json.loads(lines[0])["image"]).read_bytes())
    (folder / "images" / "link.png").symlink_to(outside)
    for image in (str(outside), "../outside.png", "images/link.png"):  # absolute, climbing out, a link out
        record = json.loads(lines[0])
        record["image"] = image
        (folder / "metadata.jsonl").write_text(json.dumps(record) + "\n")
        with pytest.raises(ValueError, match="lies outside the dataset folder"):
            load_token_mask_dataset(folder)
    record = json.loads(lines[0])
    record["tokens"][0]["mask_index"] = 150_000_000
    (folder / "metadata.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="mask indices are 1 to 65535"):
        load_token_mask_dataset(folder)
    with pytest.raises(FileNotFoundError, match="has no metadata.jsonl"):
        load_token_mask_dataset(tmp_path)
    record = json.loads(lines[0])
    record["tokens"] = []
    (folder / "metadata.jsonl").write_text(json.dumps(record) + "\n")
    with pytest.raises(ValueError, match="no supervised token on any page"):
        load_token_mask_dataset(folder)


def test_a_token_list_that_does_not_match_its_mask_is_named(processor):
    page = make_page(5, 50, 40, 3)
    page["tokens"] = [{"id": 7, "text": " ghost", "mask_index": 9}, {"id": 8, "text": " x", "mask_index": 12}]
    message = r"page 1 of the batch: none of its tokens' mask indices \(e.g. \[9, 12\]\) occur"
    with pytest.raises(ValueError, match=message):  # the page's own place, not the first one's
        TokenMaskCollator(processor)([make_page(5, 50, 40, 3), page])
    # A token hidden by another one (no pixel left) is simply not supervised: the page's other tokens still are.
    partly = make_page(5, 50, 40, 3)
    partly["tokens"].append({"id": 7, "text": " hidden", "mask_index": 9})
    assert TokenMaskCollator(processor)([partly])["input_ids"].shape[1] == 4


# ---------------------------------------------------------------------------------------------------------------
# Policies, gradients and Trainer.
# ---------------------------------------------------------------------------------------------------------------

def batch_for(processor, seed=7):
    return TokenMaskCollator(processor, feature_side=8)([make_page(seed, 60, 30, 6), make_page(seed + 1, 28, 28, 3)])


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradients_reach_only_the_trainable_parts(processor, checkpointing):
    torch.manual_seed(0)
    model = TokenOCRForTokenAlignment(tiny_config()).train()
    trainable = set(apply_training_policy(model, "original"))
    if checkpointing:
        model.activation_checkpointing_enable()
    model(**batch_for(processor)).loss.backward()
    reached = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert reached == trainable
    assert any(name.startswith("tokenocr.upsampler.") for name in reached)
    assert any(name.startswith("tokenocr.projector.") for name in reached)
    assert any(name.startswith("tokenocr.vision_tower.encoder.layer.1.") for name in reached)
    assert "tokenocr.logit_scale" in reached
    assert not any(name.startswith(("tokenocr.vision_tower.encoder.layer.0.", "tokenocr.vision_tower.embeddings.",
                                    "tokenocr.embed_tokens.")) for name in reached)
    assert "tokenocr.logit_bias" not in reached  # a fixed bias is in force


def test_other_policies(processor):
    model = TokenOCRForTokenAlignment(tiny_config(fixed_logit_bias=None))
    vision = set(apply_training_policy(model, "vision"))
    assert "tokenocr.embed_tokens.weight" not in vision and "tokenocr.logit_bias" in vision
    assert "tokenocr.vision_tower.embeddings.patch_embeddings.projection.weight" in vision
    with_table = set(apply_training_policy(model, "vision", train_embeddings=True))
    assert with_table == vision | {"tokenocr.embed_tokens.weight"}
    original = set(apply_training_policy(model, "original", train_embeddings=True))
    assert "tokenocr.embed_tokens.weight" in original and "tokenocr.vision_tower.embeddings.cls_token" not in original
    everything = set(apply_training_policy(model, "all"))
    assert everything == {name for name, _ in model.named_parameters()}
    with pytest.raises(ValueError, match="Unknown training policy 'some'"):
        apply_training_policy(model, "some")


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(processor):
    torch.manual_seed(0)
    model = TokenOCRForTokenAlignment(tiny_config()).train()
    apply_training_policy(model, "all")
    batch = batch_for(processor)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        out = model(**batch)
        losses.append([out.loss.item(), out.loss_sim.item()])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1][0] < 0.7 * losses[0][0], losses
    assert losses[-1][1] < losses[0][1], losses  # the mean feature over each mask turns towards its token


def test_trainer_logs_each_component_uses_lr_groups_and_resumes(processor, tmp_path):
    pages = [make_page(seed, 56, 28, 5) for seed in range(4)]
    dataset = load_token_mask_dataset(write_dataset(tmp_path / "data", pages))
    torch.manual_seed(0)
    model = TokenOCRModel(tiny_config())
    args = default_training_arguments(tmp_path / "run", per_device_train_batch_size=2, max_steps=4, logging_steps=2,
                                      save_steps=2, learning_rate=1e-3, disable_tqdm=True, use_cpu=True)
    trainer = build_trainer(model, processor, dataset, args, policy="original", vision_lr_scale=0.05)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logged) == 2 and all({"loss_seg", "loss_sim", "loss_l2", "loss_sig"} <= set(entry) for entry in logged)
    rates = sorted({group["initial_lr"] for group in trainer.optimizer.param_groups})
    assert rates == pytest.approx([0.05e-3, 1e-3])
    vision_group = [g for g in trainer.optimizer.param_groups if g["initial_lr"] < 1e-3]
    assert sum(p.numel() for g in vision_group for p in g["params"]) == sum(
        p.numel() for p in model.vision_tower.encoder.layer[1].parameters())
    assert (tmp_path / "run" / "checkpoint-4").is_dir()
    args = default_training_arguments(tmp_path / "run", per_device_train_batch_size=2, max_steps=6, logging_steps=2,
                                      save_steps=2, disable_tqdm=True, use_cpu=True)
    resumed = build_trainer(TokenOCRModel(tiny_config()), processor, dataset, args)
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 6
    assert [e["step"] for e in resumed.state.log_history if "loss" in e] == [2, 4, 6]


# ---------------------------------------------------------------------------------------------------------------
# The commands.
# ---------------------------------------------------------------------------------------------------------------

def train(argv) -> int:
    return main(["train", *argv])


def error_line(capsys) -> str:
    """The command's one-line error (the last line of stderr; progress bars of the test's own loads come before)."""
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("tokenocr: error: ") and "Traceback" not in line, line
    return line


def test_train_command_end_to_end(processor, tmp_path, capsys):
    folder = write_dataset(tmp_path / "data", [make_page(seed, 56, 28, 5) for seed in range(2)])
    torch.manual_seed(0)
    TokenOCRModel(tiny_config()).save_pretrained(tmp_path / "start")
    processor.save_pretrained(tmp_path / "start")
    argv = ["--model", str(tmp_path / "start"), "--data", str(folder), "--output", str(tmp_path / "out"),
            "--max-steps", "2", "--batch-size", "2", "--num-workers", "0", "--save-steps", "2", "--cpu"]
    assert train(argv) == 0, capsys.readouterr().err
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"tokenocr: trained model in {tmp_path / 'out'}"
    trained = AutoModel.from_pretrained(tmp_path / "out")
    assert type(trained) is TokenOCRModel
    assert AutoProcessor.from_pretrained(tmp_path / "out")(text="hello")["input_ids"] == processor(text="hello")["input_ids"]
    start = dict(TokenOCRModel.from_pretrained(tmp_path / "start").state_dict())
    changed = [name for name, tensor in trained.state_dict().items() if not torch.equal(tensor, start[name])]
    assert any(name.startswith("projector.") for name in changed)
    assert not any(name.startswith("embed_tokens.") for name in changed)  # the original policy keeps it frozen
    card = (tmp_path / "out" / "README.md").read_text()
    assert "2 optimizer steps" in card and "loss weights: seg 0, sim 1, l2 1, sig 1" in card

    # The output and each checkpoint are model folders: a hub user (transformers alone) runs them from their own code.
    Image.new("RGB", (56, 28), "white").save(tmp_path / "page.png")
    installed = load_pipeline(str(tmp_path / "out"))(str(tmp_path / "page.png"), "hello", return_visuals=False)
    for model_folder in (tmp_path / "out", tmp_path / "out" / "checkpoint-2"):
        report = report_as_hub_user("trained_folder_report", [model_folder, tmp_path / "page.png", "hello"],
                                    tmp_path / "cache", tmp_path)
        assert report["model_module"].startswith("transformers_modules.") and report["threshold"] == 0.2
        assert report["tokens"] == [token["token_id"] for token in installed]
        np.testing.assert_allclose(np.array(report["maps"]), np.stack([t["similarity"] for t in installed]), atol=1e-5)

    before = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert train(argv) == 1
    assert "already exists; choose a new folder, or pass --resume" in error_line(capsys)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == before

    assert train([*argv[:4], "--output", str(tmp_path / "new"), "--resume"]) == 1
    assert "holds no complete checkpoint-* folder" in error_line(capsys)
    for output in (str(tmp_path / "start"), str(folder), str(tmp_path)):  # an input, or a folder around one
        assert train([*argv[:4], "--output", output]) == 1
        assert "--output" in error_line(capsys)
    assert train(["--model", str(tmp_path / "start"), "--data", str(tmp_path / "nowhere"), "--output",
                  str(tmp_path / "o")]) == 1
    assert "nowhere" in error_line(capsys)
    with pytest.raises(SystemExit) as exit_info:
        train([*argv, "--num-workers", "-1"])
    assert exit_info.value.code == 2 and "expected a non-negative integer, got '-1'" in error_line(capsys)
    for option in ("--learning-rate", "--weight-decay", "--vision-lr-scale"):
        for value in ("inf", "1e999", "nan"):
            with pytest.raises(SystemExit) as exit_info:
                train([*argv, option, value])
            assert exit_info.value.code == 2 and f"got '{value}'" in error_line(capsys)
    for extra, message in ((["--seg-temperature", "0", "-5"], "expected a positive SCALE, got 0.0 -5.0"),
                           (["--seg-temperature", "10", "nan"], "expected a finite number, got 'nan'"),
                           (["--loss-weights", "0", "0", "0", "0"], "expected at least one weight above 0")):
        with pytest.raises(SystemExit) as exit_info:  # refused while parsing, long before the model loads
            train([*argv, *extra])
        assert exit_info.value.code == 2 and message in error_line(capsys)
    assert train(["--model", "no such model", "--data", str(folder), "--output", str(tmp_path / "o")]) == 1
    assert "is not a folder or a hub repo id" in error_line(capsys)
    assert not (tmp_path / "o").exists() and not (tmp_path / "new").exists()


def test_train_with_eval_data_stores_the_chosen_threshold_and_the_figures(processor, tmp_path, capsys):
    folder = write_dataset(tmp_path / "data", [make_page(seed, 56, 28, 5) for seed in range(2)])
    held = write_dataset(tmp_path / "held", [make_page(seed, 56, 28, 5) for seed in range(5, 7)])
    torch.manual_seed(0)
    TokenOCRModel(tiny_config()).save_pretrained(tmp_path / "start")
    processor.save_pretrained(tmp_path / "start")
    argv = ["--model", str(tmp_path / "start"), "--data", str(folder), "--eval-data", str(held), "--output",
            str(tmp_path / "out"), "--max-steps", "1", "--batch-size", "2", "--num-workers", "0", "--cpu"]
    assert train(argv) == 0, capsys.readouterr().err
    trained = TokenOCRModel.from_pretrained(tmp_path / "out").eval()
    stored = AutoProcessor.from_pretrained(tmp_path / "out").image_processor.mask_threshold
    expected = evaluate_model(trained, processor, load_token_mask_dataset(held), num_queries=0).best_threshold
    assert stored == expected
    assert f"which also chose the threshold {expected:g}" in (tmp_path / "out" / "README.md").read_text()


def test_evaluate_command_prints_and_writes_the_figures(processor, tmp_path, capsys):
    folder = write_dataset(tmp_path / "data", [make_page(seed, 56, 28, 5) for seed in range(3)])
    torch.manual_seed(0)
    TokenOCRModel(tiny_config()).save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    argv = ["evaluate", "--model", str(tmp_path / "model"), "--data", str(folder), "--k", "1", "--json",
            str(tmp_path / "figures.json")]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert figures["pages"] == 3 and f"pointing accuracy   {figures['pointing_accuracy']:.4f}" in printed
    assert main(argv) == 1
    assert "figures.json' already exists; it is never replaced" in error_line(capsys)
    assert json.loads((tmp_path / "figures.json").read_text()) == figures
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "figures.json", "model"]


# ---------------------------------------------------------------------------------------------------------------
# The ResNet tower (the R50 variant): whole images, masks on each image's own map.
# ---------------------------------------------------------------------------------------------------------------

def resnet_config() -> TokenOCRConfig:
    return TokenOCRConfig(
        vision_config={"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 16, 16],
                       "depths": [1, 1, 1, 1], "layer_type": "bottleneck", "downsample_in_first_stage": False},
        hidden_size=8, vocab_size=640, upsampler_hidden_size=8, fixed_logit_bias=-8.9375,
    )


@pytest.fixture(scope="module")
def whole_image_processor(tokenizer):
    return TokenOCRProcessor(image_processor=TokenOCRImageProcessor(do_tiling=False), tokenizer=tokenizer)


def test_whole_image_masks_are_torchs_resize_on_each_map(whole_image_processor):
    pages = [make_page(3, 70, 40, 4), make_page(4, 33, 64, 3)]
    batch = TokenMaskCollator(whole_image_processor)(pages)
    assert batch["map_sizes"].tolist() == [[8, 12], [8, 8]]  # 4 * ceil(side / 32)
    assert batch["pixel_sizes"].tolist() == [[40, 70], [64, 33]] and batch["pixel_values"].shape == (2, 3, 64, 70)
    for row, page in enumerate(pages):
        mask = np.asarray(page["mask"])
        h, w = batch["map_sizes"][row].tolist()
        for k, token in enumerate(page["tokens"]):
            full = torch.from_numpy(mask == token["mask_index"]).float()[None, None]
            expected = torch.nn.functional.interpolate(full, size=(h, w), mode="bilinear")[0, 0] > 0
            assert torch.equal(batch["token_masks"][row, k, : h * w], expected.flatten())
            assert not batch["token_masks"][row, k, h * w :].any()  # padding locations


def test_the_resnet_tower_trains_with_padding_left_out(whole_image_processor):
    torch.manual_seed(0)
    model = TokenOCRForTokenAlignment(resnet_config(), loss_weights={"seg": 1.0})
    trainable = set(apply_training_policy(model, "original"))
    assert any(name.startswith("tokenocr.vision_tower.encoder.stages.3.") for name in trainable)
    assert not any(name.startswith("tokenocr.vision_tower.encoder.stages.2.") for name in trainable)
    pages = [make_page(3, 70, 40, 4), make_page(4, 33, 64, 3)]
    batch = TokenMaskCollator(whole_image_processor)(pages)
    out = model(**batch)
    # Each image alone (no padding) gives the same per-image terms: padding changes nothing.
    alone = [model(**TokenMaskCollator(whole_image_processor)([page])) for page in pages]
    assert out.loss_seg.item() == pytest.approx(np.mean([a.loss_seg.item() for a in alone]), rel=1e-5)
    out.loss.backward()
    reached = {name for name, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert reached <= trainable
    for part in ("tokenocr.upsampler.", "tokenocr.projector.", "tokenocr.vision_tower.encoder.stages.3."):
        assert any(name.startswith(part) for name in reached), part
    with pytest.raises(ValueError, match="need map_sizes"):
        model(**{key: value for key, value in batch.items() if key != "map_sizes"})


def test_trainer_trains_the_resnet_tower(whole_image_processor, tmp_path):
    dataset = load_token_mask_dataset(write_dataset(tmp_path / "data", [make_page(s, 70, 40, 4) for s in range(3)]))
    torch.manual_seed(0)
    model = TokenOCRModel(resnet_config())
    before = model.projector.linear_1.weight.detach().clone()
    args = default_training_arguments(tmp_path / "run", per_device_train_batch_size=2, max_steps=2, save_steps=2,
                                      disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)
    trainer = build_trainer(model, whole_image_processor, dataset, args, policy="vision")
    trainer.train()
    assert trainer.state.global_step == 2 and not torch.equal(before, model.projector.linear_1.weight)
    assert type(AutoModel.from_pretrained(tmp_path / "run" / "checkpoint-2")) is TokenOCRModel


def test_resume_passes_over_a_checkpoint_cut_short(tmp_path):
    from tokenocr.commands.training import latest_complete_checkpoint

    complete = ("model.safetensors", "trainer_state.json", ".tokenocr-train")
    for step, files in ((2, complete), (4, ("model.safetensors", "trainer_state.json")), (5, ("model.safetensors",)),
                        (3, ())):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in files:
            (folder / name).write_text("x")
    # 4 lacks the marker written last (cut short while its model folder was written), 5 its state, 3 is empty
    assert latest_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    assert latest_complete_checkpoint(tmp_path / "checkpoint-3") is None


def test_an_interrupted_first_run_leaves_no_folder_behind(processor, tmp_path, monkeypatch, capsys):
    import os

    from tokenocr.training.train import TokenOCRTrainer

    folder = write_dataset(tmp_path / "data", [make_page(seed, 56, 28, 5) for seed in range(2)])
    TokenOCRModel(tiny_config()).save_pretrained(tmp_path / "start")
    processor.save_pretrained(tmp_path / "start")

    def interrupted(self, **kwargs):
        os.makedirs(self.args.output_dir, exist_ok=True)  # as Trainer does before its first save
        raise KeyboardInterrupt

    monkeypatch.setattr(TokenOCRTrainer, "train", interrupted)
    argv = ["--model", str(tmp_path / "start"), "--data", str(folder), "--output", str(tmp_path / "out"),
            "--max-steps", "2", "--num-workers", "0", "--cpu"]
    assert train(argv) in (130, -2)
    assert not (tmp_path / "out").exists()  # a rerun is not blocked
