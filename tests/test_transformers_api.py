"""
The transformers 5.x model API on a tiny ViT-tower and a tiny ResNet-tower TokenOCR, checked the way transformers'
own common tests check a model: output objects, hidden states and attentions, eager == SDPA, activation
checkpointing, dynamic-shape export and the processor's `model_input_names`.
"""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPooling

from tokenocr import TokenOCRImageProcessor, TokenOCRProcessor
from tokenocr.conversion import convert_tokenizer
from tokenocr.modeling import TokenOCRConfig, TokenOCRModel

from fixture_cases import FIXTURES


def vit_config(**overrides) -> TokenOCRConfig:
    settings = {
        "vision_config": {"hidden_size": 16, "num_attention_heads": 2, "num_hidden_layers": 3, "image_size": 28,
                          "intermediate_size": 32, "patch_size": 14},
        "hidden_size": 8, "vocab_size": 64, "upsampler_hidden_size": 8, "vision_feature_layer": -2,
    }
    settings.update(overrides)
    return TokenOCRConfig(**settings)


def resnet_config() -> TokenOCRConfig:
    return TokenOCRConfig(
        vision_config={"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16, 16, 16],
                       "depths": [1, 1, 1, 1], "layer_type": "bottleneck", "downsample_in_first_stage": False},
        hidden_size=8, vocab_size=64, upsampler_hidden_size=8,
    )


def tiny(config, attn: str = "sdpa") -> TokenOCRModel:
    torch.manual_seed(0)
    return TokenOCRModel(config).eval().to(torch.float32).requires_grad_(True) if attn == "sdpa" else (
        TokenOCRModel._from_config(config, attn_implementation=attn).eval()
    )


TILES = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(1))
IMAGES = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
IDS = torch.tensor([[5, 6, 7], [8, 9, 2]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


def test_image_features_are_an_output_object_with_the_features_in_pooler_output():
    model = tiny(vit_config())
    with torch.no_grad():
        output = model.get_image_features(TILES)
        as_tuple = model.get_image_features(TILES, return_dict=False)
        forward = model(pixel_values=TILES, input_ids=IDS)
    assert isinstance(output, BaseModelOutputWithPooling)
    assert output.pooler_output.shape == (2, 64, 8)  # (tiles, (4 * 28 / 14) ** 2 locations, hidden_size)
    assert output.last_hidden_state.shape == (2, 1 + 4, 16)  # the selected ViT state, class token first
    torch.testing.assert_close(output.pooler_output, forward.image_embeds)
    assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], output.last_hidden_state)
    assert output.hidden_states is None and output.attentions is None
    assert isinstance(model(pixel_values=TILES, input_ids=IDS, return_dict=False), tuple)


def test_text_features_take_an_attention_mask():
    model = tiny(vit_config())
    output = model.get_text_features(IDS, attention_mask=MASK)
    assert isinstance(output, BaseModelOutputWithPooling)
    torch.testing.assert_close(output.pooler_output[0], model.embed_tokens.weight[IDS[0]])
    assert torch.count_nonzero(output.pooler_output[1, 2]) == 0  # the padded position
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model.get_text_features(IDS, attention_mask=MASK[:, :2])


def test_vit_hidden_states_are_the_layers_run_and_attentions_are_recorded():
    model = tiny(vit_config(), attn="eager")
    with torch.no_grad():
        output = model(pixel_values=TILES, input_ids=IDS, output_hidden_states=True, output_attentions=True)
        features = model.get_image_features(TILES, output_hidden_states=True)
    # vision_feature_layer -2 of 3 layers: the embeddings output and 2 layers are run, the last layer is not.
    assert len(output.hidden_states) == 3
    assert all(state.shape == (2, 5, 16) for state in output.hidden_states)
    torch.testing.assert_close(output.hidden_states[-1], features.last_hidden_state)
    torch.testing.assert_close(output.hidden_states[0], model.vision_tower.embeddings(TILES))
    assert len(output.attentions) == 2 and output.attentions[0].shape == (2, 2, 5, 5)  # (tiles, heads, tokens, tokens)
    torch.testing.assert_close(output.attentions[0].sum(-1), torch.ones(2, 2, 5))
    # The config's default applies as in transformers' models.
    model.config.output_hidden_states = True
    with torch.no_grad():
        assert len(model.get_image_features(TILES).hidden_states) == 3


def test_resnet_hidden_states_are_the_stages():
    model = tiny(resnet_config())
    with torch.no_grad():
        output = model.get_image_features(IMAGES, output_hidden_states=True)
        plain = model.vision_tower(IMAGES, output_hidden_states=True)
    assert len(output.hidden_states) == 5  # the embedder's output, then each of the 4 stages
    for ours, theirs in zip(output.hidden_states, plain.hidden_states):
        torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(output.last_hidden_state, plain.last_hidden_state)
    assert output.pooler_output.shape == (2, (4 * 2) * (4 * 3), 8)  # 64 x 96 pixels: an 8 x 12 map
    with pytest.raises(ValueError, match="images of one size"):
        model.get_image_features(IMAGES, torch.tensor([[64, 96], [32, 96]]), output_hidden_states=True)


@pytest.mark.parametrize("padded", [False, True])
def test_eager_equals_sdpa(padded):
    eager, sdpa = tiny(vit_config(), attn="eager"), tiny(vit_config(), attn="sdpa")
    mask = MASK if padded else None
    with torch.no_grad():
        a = eager(pixel_values=TILES, input_ids=IDS, attention_mask=mask, output_hidden_states=True)
        b = sdpa(pixel_values=TILES, input_ids=IDS, attention_mask=mask, output_hidden_states=True)
    torch.testing.assert_close(a.similarity, b.similarity, atol=1e-5, rtol=1e-5)
    for x, y in zip(a.hidden_states, b.hidden_states):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    if padded:
        assert torch.count_nonzero(a.similarity[1, 2]) == 0


@pytest.mark.parametrize("config", [vit_config, resnet_config], ids=["vit", "resnet"])
def test_activation_checkpointing_gives_the_same_gradients(config):
    pixels = TILES if config is vit_config else IMAGES
    grads = []
    for checkpointing in (False, True):
        model = tiny(config()).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.is_activation_checkpointing
            layers = [m for m in model.vision_tower.modules() if isinstance(m, GradientCheckpointingLayer)]
            assert layers and all(layer.gradient_checkpointing for layer in layers)  # ViT layers / ResNet stages
        model(pixel_values=pixels, input_ids=IDS).similarity.sum().backward()
        first = next(p for name, p in model.vision_tower.named_parameters() if name.endswith("weight"))
        grads.append(first.grad.clone())
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])


@pytest.mark.parametrize("config", [vit_config, resnet_config], ids=["vit", "resnet"])
def test_dynamic_shape_export(config):
    model = tiny(config())
    pixels = TILES if config is vit_config else IMAGES

    class Features(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            return self.model.get_image_features(pixel_values).pooler_output

    batch = torch.export.Dim("batch", min=1, max=8)
    exported = torch.export.export(Features(model), (pixels,), dynamic_shapes=({0: batch},))
    more = torch.cat([pixels, pixels.flip(0), pixels])
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(more), model.get_image_features(more).pooler_output)


@pytest.fixture(scope="module")
def tokenizer():
    return convert_tokenizer(FIXTURES / "tiny_seg" / "checkpoint")


@pytest.mark.parametrize("do_tiling", [True, False])
def test_model_input_names_list_every_returned_key(tokenizer, do_tiling):
    processor = TokenOCRProcessor(
        image_processor=TokenOCRImageProcessor(size=28, max_tiles=4, do_tiling=do_tiling), tokenizer=tokenizer
    )
    image = Image.fromarray(np.full((40, 90, 3), 200, dtype=np.uint8))
    inputs = processor(images=[image, image], text=["a query", "another"], return_tensors="pt")
    assert set(inputs) == set(processor.model_input_names)  # exactly what this processor returns
    assert set(processor.image_processor(image)) == set(processor.image_processor.model_input_names)
    if not do_tiling:
        assert "pixel_sizes" in inputs and "pixel_sizes" in processor.model_input_names
    saved = processor.image_processor.to_dict()
    assert "model_input_names" not in saved and TokenOCRImageProcessor(**saved).model_input_names == \
        processor.image_processor.model_input_names


def test_with_the_package_a_converted_folder_loads_the_installed_classes(converted, tmp_path):
    from transformers import AutoConfig, AutoModel, AutoProcessor, pipeline

    import tokenocr  # noqa: F401  (registers the Auto classes and the task)
    from tokenocr import TokenSimilarityPipeline
    from tokenocr.modeling import TokenOCRConfig
    from tokenocr.processing import TokenOCRProcessor

    folder = converted("tiny_seg")
    assert (folder / "modeling_tokenocr.py").is_file()  # the folder has its own code, which must not run
    assert type(AutoConfig.from_pretrained(folder)) is TokenOCRConfig
    assert type(AutoModel.from_pretrained(folder)) is TokenOCRModel
    assert type(AutoProcessor.from_pretrained(folder)) is TokenOCRProcessor
    # The folder declares its pipeline for hub users (custom_pipelines); with the package that declaration is not
    # what pipeline() sees, so it neither asks for trust_remote_code nor runs the folder's copy.
    assert "custom_pipelines" in json.loads((folder / "config.json").read_text())
    for flag in ({}, {"trust_remote_code": True}):
        finder = pipeline("token-similarity", model=str(folder), **flag)
        assert type(finder) is TokenSimilarityPipeline and type(finder.model) is TokenOCRModel
        assert type(finder.processor) is TokenOCRProcessor
    # Saving keeps the declaration in config.json (the converter and `tokenocr train` add the remote code).
    config = AutoConfig.from_pretrained(folder)
    assert config.custom_pipelines == {}
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["custom_pipelines"]["token-similarity"]["impl"] == "pipeline_tokenocr.TokenSimilarityPipeline"
    assert not any(key.startswith("_") for key in saved)


@pytest.mark.parametrize("config", [vit_config, resnet_config], ids=["vit", "resnet"])
def test_a_config_with_return_dict_false_gives_tuples_and_still_works_inside(config):
    settings = config()
    settings.return_dict = False
    model = tiny(settings)
    pixels = TILES if config is vit_config else IMAGES
    with torch.no_grad():
        as_tuple = model(pixel_values=pixels, input_ids=IDS)
        as_object = model(pixel_values=pixels, input_ids=IDS, return_dict=True)
        fused = model.get_similarity(pixels, IDS)
    assert isinstance(as_tuple, tuple) and isinstance(model.get_image_features(pixels), tuple)
    torch.testing.assert_close(as_tuple[0], as_object.similarity)
    torch.testing.assert_close(fused, as_object.similarity, atol=1e-5, rtol=0)


def test_the_training_head_restores_its_temperature_and_reports_hidden_states(tmp_path):
    from tokenocr.modeling import TokenOCRForTokenAlignment

    head = TokenOCRForTokenAlignment(vit_config(), seg_logit_scale=4.0, seg_logit_bias=-1.5)
    head.save_pretrained(tmp_path)
    loaded = TokenOCRForTokenAlignment.from_pretrained(tmp_path)  # buffers, not saved: set again from the config
    assert loaded.seg_logit_scale_log.item() == pytest.approx(math.log(4.0))
    assert loaded.seg_logit_bias.item() == pytest.approx(-1.5)
    # Two images of one tile each need no num_tiles; the tower's hidden states come back as the model's do.
    output = loaded(pixel_values=TILES, input_ids=IDS[:, :2], output_hidden_states=True)
    assert output.similarity.shape == (2, 2, 64)
    assert len(output.hidden_states) == loaded.config.num_vision_layers_used + 1


def alignment_batch(config):
    """A head's batch for `config`'s tower: two images of one tile (ViT) or one whole image each (ResNet)."""
    masks = torch.rand(2, 3, 96, generator=torch.Generator().manual_seed(4)) > 0.5
    if config.is_internvit:
        return {"pixel_values": TILES, "input_ids": IDS, "attention_mask": MASK, "token_masks": masks[..., :64]
                .reshape(2, 3, 8, 8)}
    return {"pixel_values": IMAGES, "input_ids": IDS, "attention_mask": MASK, "token_masks": masks,
            "map_sizes": torch.tensor([[8, 12], [8, 12]])}


def assert_same_fields(as_tuple, as_dict):
    """Every field of a tuple output equals the same field of the dict output (nested tuples included)."""
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(as_dict)
    for name, first, second in zip(as_dict.keys(), as_tuple, as_dict.values()):
        if isinstance(second, tuple):
            assert len(first) == len(second), name
            for a, b in zip(first, second):
                torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
        else:
            torch.testing.assert_close(first, second, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("config", [vit_config, resnet_config], ids=["vit", "resnet"])
@pytest.mark.parametrize("flags", [{}, {"output_hidden_states": True}], ids=["plain", "hidden_states"])
def test_tuple_and_dict_outputs_are_equal(config, flags):
    from tokenocr.modeling import TokenOCRForTokenAlignment

    settings = config()
    model, head = tiny(settings), TokenOCRForTokenAlignment(settings).eval()
    batch = alignment_batch(settings)
    inputs = {"pixel_values": batch["pixel_values"], "input_ids": IDS, "attention_mask": MASK}
    with torch.no_grad():
        for module, call in ((model, inputs), (head, batch)):
            as_tuple = module(**call, return_dict=False, **flags)
            as_dict = module(**call, return_dict=True, **flags)
            assert_same_fields(as_tuple, as_dict)
    assert "loss" in as_dict and ("hidden_states" in as_dict) == bool(flags)


def test_a_saved_head_keeps_its_loss_settings(tmp_path):
    from tokenocr.modeling import TokenOCRForTokenAlignment

    settings = {"loss_weights": {"seg": 2.0, "l2": 0.0, "sig": 0.5}, "seg_logit_scale": 3.0, "seg_logit_bias": 0.5}
    for learn in (False, True):
        torch.manual_seed(0)
        head = TokenOCRForTokenAlignment(vit_config(fixed_logit_bias=None), learn_seg_temperature=learn, **settings)
        if learn:  # a learned temperature is saved as it has become, not as it started
            with torch.no_grad():
                head.seg_logit_scale_log.add_(0.25)
                head.seg_logit_bias.sub_(0.125)
        head.eval().save_pretrained(tmp_path / str(learn))
        saved = json.loads((tmp_path / str(learn) / "config.json").read_text())
        assert saved["loss_weights"] == {"seg": 2.0, "sim": 1.0, "l2": 0.0, "sig": 0.5}
        assert (saved["seg_logit_scale"], saved["seg_logit_bias"], saved["learn_seg_temperature"]) == (3.0, 0.5, learn)
        loaded = TokenOCRForTokenAlignment.from_pretrained(tmp_path / str(learn)).eval()
        assert loaded.loss_weights == head.loss_weights == saved["loss_weights"]
        assert loaded.config.learn_seg_temperature is learn
        assert ("seg_logit_bias" in dict(loaded.named_parameters())) is learn
        assert loaded.seg_logit_scale_log.item() == pytest.approx(head.seg_logit_scale_log.item())
        assert loaded.seg_logit_bias.item() == pytest.approx(head.seg_logit_bias.item())
        batch = alignment_batch(head.config)
        with torch.no_grad():
            expected, actual = head(**batch), loaded(**batch)
        for name in ("loss", "loss_seg", "loss_sim", "loss_l2", "loss_sig"):
            torch.testing.assert_close(actual[name], expected[name], msg=name)
        assert expected.loss.item() == pytest.approx(
            2.0 * expected.loss_seg.item() + expected.loss_sim.item() + 0.5 * expected.loss_sig.item(), rel=1e-5
        )


def test_loss_settings_given_to_the_head_are_written_into_its_config_and_checked():
    from tokenocr.modeling import TokenOCRForTokenAlignment

    config = vit_config()
    assert (config.loss_weights, config.seg_logit_scale, config.seg_logit_bias, config.learn_seg_temperature) == (
        {"seg": 0.0, "sim": 1.0, "l2": 1.0, "sig": 1.0}, 10.0, -5.0, False)
    head = TokenOCRForTokenAlignment(config, loss_weights={"seg": 1.0}, seg_logit_scale=2)
    assert head.config is config and config.loss_weights["seg"] == 1.0 and config.seg_logit_scale == 2.0
    head.configure_loss(seg_logit_bias=-1.0)  # the other settings keep their values
    assert (config.loss_weights["seg"], config.seg_logit_scale, head.seg_logit_bias.item()) == (1.0, 2.0, -1.0)
    for bad in ({"loss_weights": {"dice": 1.0}}, {"loss_weights": {"sim": -1.0}}, {"seg_logit_scale": 0.0},
                {"seg_logit_bias": float("nan")}, {"loss_weights": {"seg": 0.0, "sim": 0.0, "l2": 0.0, "sig": 0.0}}):
        with pytest.raises(ValueError):
            TokenOCRForTokenAlignment(vit_config(), **bad)
        with pytest.raises(ValueError):
            vit_config(**bad)
        with pytest.raises(ValueError):
            head.configure_loss(**bad)
        assert config.seg_logit_scale == 2.0 and config.loss_weights["seg"] == 1.0  # a refused setting changes nothing


def test_a_resnet_model_built_from_a_bfloat16_folders_config_is_built_in_one_dtype(tmp_path):
    from transformers import AutoConfig

    tiny(resnet_config()).to(torch.bfloat16).save_pretrained(tmp_path)  # its vision_config now says bfloat16
    fresh = TokenOCRModel(AutoConfig.from_pretrained(tmp_path))
    assert {parameter.dtype for parameter in fresh.parameters()} == {torch.float32}
    assert {p.dtype for p in TokenOCRModel.from_pretrained(tmp_path, dtype=torch.bfloat16).parameters()} == {
        torch.bfloat16}
