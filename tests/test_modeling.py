"""TokenOCRModel against the original implementation's features and similarity maps."""

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

import tokenocr  # noqa: F401  (registers the Auto classes)
from tokenocr import TokenOCRConfig, TokenOCRModel, TokenOCROutput

from fixture_cases import load_case


def image_features(model, processor, path):
    inputs = processor(images=str(path), return_tensors="pt")
    with torch.no_grad():
        return model.get_image_features(inputs["pixel_values"]).pooler_output, inputs


def test_features_and_similarity_maps_equal_original(case, loaded):
    model, processor = loaded
    for image in case.images:
        expected = case.expected(image)
        features, inputs = image_features(model, processor, case.image_path(image))
        assert features.dtype == torch.float32
        np.testing.assert_allclose(features.numpy(), expected["features"], atol=1e-4, rtol=0, err_msg=image)
        for index, query in enumerate(case.queries):
            text = processor(text=query, return_tensors="pt")
            with torch.no_grad():
                out = model(image_embeds=features, input_ids=text["input_ids"])
            maps = processor.post_process_similarity(out.similarity, inputs["grid_cols_rows"], inputs["num_tiles"])
            reference = expected[f"similarity_q{index}"]
            assert maps[0][0].shape == reference.shape == (len(text["input_ids"][0]), *case.manifest["images"][image]["map_hw"])
            np.testing.assert_allclose(maps[0][0].numpy(), reference, atol=1e-4, rtol=0, err_msg=f"{image} {query!r}")


def test_forward_from_pixels_equals_forward_from_features(case, loaded):
    model, processor = loaded
    inputs = processor(images=str(case.image_path("doc_wide.png")), text=case.queries, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"])
        again = model(image_embeds=out.image_embeds, input_ids=inputs["input_ids"])
    assert isinstance(out, TokenOCROutput)
    num_tiles, locations = inputs["pixel_values"].shape[0], case.manifest["images"]["doc_wide.png"]["feature_side"] ** 2
    assert out.similarity.shape == (len(case.queries), inputs["input_ids"].shape[1], num_tiles, locations)
    assert out.text_embeds.shape == (*inputs["input_ids"].shape, case.manifest["embed_dim"])
    torch.testing.assert_close(out.similarity, again.similarity)
    # The released models were trained with the constant bias -8.9375, not their stored (untrained) `b`.
    scale, stored_bias = case.manifest["logit_scale_t_prime"], case.manifest["logit_bias_b"]
    assert model.config.fixed_logit_bias == -8.9375
    assert model.logit_bias.item() == pytest.approx(stored_bias)
    torch.testing.assert_close(out.logits, out.similarity * np.exp(scale) - 8.9375)
    tuple_out = model(image_embeds=out.image_embeds, input_ids=inputs["input_ids"], return_dict=False)
    torch.testing.assert_close(tuple_out[0], out.similarity)


def test_text_features_are_table_rows(case, loaded):
    model, _ = loaded
    ids = torch.tensor(case.manifest["query_input_ids"]["they are not"])
    torch.testing.assert_close(model.get_text_features(ids).pooler_output, model.embed_tokens.weight[ids])


def test_bfloat16_runs_and_stays_close(case):
    model, processor = load_case(case, "bfloat16")
    assert model.dtype == torch.bfloat16
    expected = case.expected("doc_tall.png")
    features, inputs = image_features(model, processor, case.image_path("doc_tall.png"))
    assert features.dtype == torch.bfloat16
    error = np.abs(features.float().numpy() - expected["features"]).max()
    scale = np.abs(expected["features"]).max()
    assert error < 0.05 * scale, (error, scale)
    text = processor(text=case.queries[2], return_tensors="pt")
    with torch.no_grad():
        out = model(image_embeds=features, input_ids=text["input_ids"])
    maps = processor.post_process_similarity(out.similarity, inputs["grid_cols_rows"], inputs["num_tiles"])[0][0]
    assert np.abs(maps.float().numpy() - expected["similarity_q2"]).max() < 0.05


def test_float16_runs_and_stays_close(case):
    model, processor = load_case(case, "float16")
    assert model.embed_tokens.weight.dtype == torch.float16
    assert model.upsampler.batch_norm_1.num_batches_tracked.dtype == torch.int64
    expected = case.expected("doc_tall.png")["features"]
    features, _ = image_features(model, processor, case.image_path("doc_tall.png"))
    assert features.dtype == torch.float16
    assert np.abs(features.float().numpy() - expected).max() < 0.01 * np.abs(expected).max()


def test_sdpa_equals_eager(case, loaded, tmp_path):
    model, processor = loaded
    model.save_pretrained(tmp_path)
    eager = TokenOCRModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    sdpa = TokenOCRModel.from_pretrained(tmp_path, attn_implementation="sdpa").eval()
    assert eager.vision_tower.config._attn_implementation == "eager"
    assert sdpa.vision_tower.config._attn_implementation == "sdpa"
    pixels = processor(images=str(case.image_path("gray_scan.png")), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        torch.testing.assert_close(eager.get_image_features(pixels).pooler_output, sdpa.get_image_features(pixels).pooler_output,
                                   atol=1e-5, rtol=0)


def test_save_and_load_round_trip_through_auto_classes(case, loaded, tmp_path):
    model, processor = loaded
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    assert not list(tmp_path.glob("*.bin"))
    assert AutoConfig.from_pretrained(tmp_path).model_type == "tokenocr"
    again = AutoModel.from_pretrained(tmp_path).eval()
    assert type(again) is TokenOCRModel
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(again.state_dict()[name], tensor, atol=0, rtol=0, msg=name)
    assert type(AutoImageProcessor.from_pretrained(tmp_path)).__name__ == "TokenOCRImageProcessor"
    processor_again = AutoProcessor.from_pretrained(tmp_path)
    query = case.queries[0]
    assert processor_again(text=query)["input_ids"] == case.manifest["query_input_ids"][query]
    expected = case.expected("single_tile.png")
    features, _ = image_features(again, processor_again, case.image_path("single_tile.png"))
    np.testing.assert_allclose(features.numpy(), expected["features"], atol=1e-4, rtol=0)


def test_device_map_auto_loads(case, loaded, tmp_path):
    model, processor = loaded
    model.save_pretrained(tmp_path)
    mapped = TokenOCRModel.from_pretrained(tmp_path, device_map="auto").eval()
    assert {p.device.type for p in mapped.parameters()} <= {"cpu", "cuda"}
    assert not any(p.is_meta for p in mapped.parameters())
    features, _ = image_features(mapped, processor, case.image_path("single_tile.png"))
    np.testing.assert_allclose(features.numpy(), case.expected("single_tile.png")["features"], atol=1e-4, rtol=0)


def test_gradient_checkpointing_gives_the_same_gradients(case, loaded, tmp_path):
    model, processor = loaded
    model.save_pretrained(tmp_path)
    pixels = processor(images=str(case.image_path("single_tile.png")), return_tensors="pt")["pixel_values"]
    ids = processor(text="Invoice", return_tensors="pt")["input_ids"]
    grads, calls = [], []
    for checkpointing in (False, True):
        trainable = TokenOCRModel.from_pretrained(tmp_path)
        trainable.train()
        if checkpointing:
            trainable.activation_checkpointing_enable()
            assert trainable.is_activation_checkpointing
        counter = []
        trainable.vision_tower.encoder.layer[0].mlp.register_forward_hook(lambda *args, calls=counter: calls.append(1))
        trainable(pixel_values=pixels, input_ids=ids).logits.mean().backward()
        grads.append(trainable.vision_tower.encoder.layer[0].attention.q_proj.weight.grad.clone())
        calls.append(len(counter))
    assert grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[0], grads[1])
    assert calls == [1, 2], "with checkpointing the layer must be recomputed during backward"


def test_vision_feature_layer_selects_a_hidden_state(case, loaded, tmp_path):
    """Features from an earlier layer equal the upsampler and projector applied to the tower's own hidden state."""
    model, processor = loaded
    model.save_pretrained(tmp_path)
    layer = model.config.vision_config.num_hidden_layers - 1  # the one before the last
    early = TokenOCRModel.from_pretrained(tmp_path, vision_feature_layer=layer).eval()
    pixels = processor(images=str(case.image_path("single_tile.png")), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hidden = early.vision_tower(pixels, output_hidden_states=True).hidden_states[layer][:, 1:, :]
        side = int(hidden.shape[1] ** 0.5)
        grid = hidden.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], side, side)
        expected = early.projector(early.upsampler(grid).flatten(2).transpose(1, 2))
        torch.testing.assert_close(early.get_image_features(pixels).pooler_output, expected)
        assert (model.get_image_features(pixels).pooler_output - expected).abs().max() > 1e-5  # the last layer is skipped


def test_padded_query_positions_score_nothing(case, loaded):
    model, processor = loaded
    inputs = processor(images=str(case.image_path("single_tile.png")), text=["Invoice", "they are not"],
                       return_tensors="pt")
    assert (inputs["attention_mask"] == 0).any()
    with torch.no_grad():
        out = model(**inputs)
        alone = model(pixel_values=inputs["pixel_values"], input_ids=processor(text="Invoice", return_tensors="pt")["input_ids"])
    padded = inputs["attention_mask"] == 0
    assert (out.similarity[padded] == 0).all()
    assert (out.logits[padded] == torch.finfo(out.logits.dtype).min).all()
    length = int(inputs["attention_mask"][0].sum())
    torch.testing.assert_close(out.similarity[0, :length], alone.similarity[0])


def tiny_model() -> TokenOCRModel:
    config = TokenOCRConfig(
        vision_config={"hidden_size": 48, "num_attention_heads": 2, "num_hidden_layers": 1, "image_size": 28,
                       "intermediate_size": 96},
        hidden_size=40, vocab_size=50, upsampler_hidden_size=24,
    )
    return TokenOCRModel(config).eval()


def test_zero_vectors_give_zero_similarity_not_nan():
    model = tiny_model()
    with torch.no_grad():
        model.embed_tokens.weight[7] = 0
    image_embeds = torch.randn(2, 16, model.config.hidden_size)
    image_embeds[1, 3] = 0
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        with torch.no_grad():
            out = model.to(dtype)(image_embeds=image_embeds.to(dtype), input_ids=torch.tensor([[7, 5]]))
        assert torch.isfinite(out.similarity).all() and torch.isfinite(out.logits).all(), dtype
        assert (out.similarity[0, 0] == 0).all(), dtype
        assert out.similarity[0, 1, 1, 3] == 0 and out.similarity[0, 1, 1, 2] != 0, dtype


def test_fused_similarity_equals_forward(case, loaded):
    model, processor = loaded
    inputs = processor(images=str(case.image_path("doc_wide.png")), text=case.queries, return_tensors="pt")
    with torch.no_grad():
        reference = model(pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"],
                          attention_mask=inputs["attention_mask"]).similarity
        for chunk in (1000, 4096, 10**6):
            fused = model.get_similarity(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"], chunk)
            torch.testing.assert_close(fused, reference, atol=1e-5, rtol=0)
        # The same scores a tile batch at a time, and from cached features (the demo's path): one scoring path.
        batched = model.get_similarity(inputs["pixel_values"], inputs["input_ids"], inputs["attention_mask"],
                                       tiles_per_batch=2)
        features = model.get_image_features(inputs["pixel_values"]).pooler_output
        cached = model.get_similarity(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                      image_embeds=features, locations_per_chunk=1000)
    torch.testing.assert_close(batched, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(cached, reference, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="either pixel_values or image_embeds"):
        model.get_similarity(inputs["pixel_values"], inputs["input_ids"], image_embeds=features)


def test_inconsistent_config_values_are_errors():
    vision = {"hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2, "image_size": 28}
    with pytest.raises(ValueError, match="vision_feature_layer"):
        TokenOCRConfig(vision_config=vision, vision_feature_layer=3)
    with pytest.raises(ValueError, match="not divisible"):
        TokenOCRConfig(vision_config={**vision, "num_attention_heads": 5})
    with pytest.raises(ValueError, match="not a multiple"):
        TokenOCRConfig(vision_config={**vision, "image_size": 30})
    with pytest.raises(ValueError, match="patch_size must be positive"):
        TokenOCRConfig(vision_config={**vision, "patch_size": 0})
    with pytest.raises(ValueError, match="pad_token_id"):
        TokenOCRConfig(vision_config=vision, vocab_size=2, pad_token_id=2)


def test_widths_come_from_the_config():
    model = tiny_model()
    assert model.upsampler.conv_transpose_1.weight.shape == (48, 24, 4, 4)
    assert model.projector.linear_2.weight.shape == (40, 40)
    with torch.no_grad():
        features = model.get_image_features(torch.randn(3, 3, 28, 28)).pooler_output
    assert features.shape == (3, (4 * 2) ** 2, 40)
    with pytest.raises(ValueError, match="pixel_values"):
        model.get_image_features(torch.randn(3, 28, 28))
    with pytest.raises(ValueError, match="input_ids"):
        model(pixel_values=torch.randn(1, 3, 28, 28))


def test_configs_saved_before_the_loss_settings_load_with_their_defaults():
    from pathlib import Path

    from tokenocr.modeling import TokenOCRForTokenAlignment

    for folder in sorted((Path(__file__).parents[1] / "models").iterdir()):
        config = TokenOCRConfig.from_pretrained(folder)
        assert "loss_weights" not in (folder / "config.json").read_text()
        assert config.loss_weights == {"seg": 0.0, "sim": 1.0, "l2": 1.0, "sig": 1.0}
        assert (config.seg_logit_scale, config.seg_logit_bias, config.learn_seg_temperature) == (10.0, -5.0, False)
        head = TokenOCRForTokenAlignment.from_pretrained(folder)  # a TokenOCRModel folder, into the training head
        assert head.seg_logit_scale_log.exp().item() == pytest.approx(10.0) and head.seg_logit_bias.item() == -5.0
        assert not any("seg_logit" in name for name, _ in head.named_parameters())
