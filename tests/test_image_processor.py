"""TokenOCRImageProcessor against the original tiles, and its handling of every kind of input."""

import numpy as np
import pytest
import torch
from PIL import Image

from tokenocr import TokenOCRImageProcessor


def make_processor(case):
    return TokenOCRImageProcessor(size=case.manifest["tile_size"])


def test_tiles_equal_original(case):
    processor = make_processor(case)
    for image in case.images:
        expected = case.expected(image)
        out = processor(str(case.image_path(image)), return_tensors="pt")
        assert out["pixel_values"].shape == expected["pixel_values"].shape, image
        np.testing.assert_allclose(out["pixel_values"].numpy(), expected["pixel_values"], atol=1e-5, rtol=0)
        assert out["grid_cols_rows"][0].tolist() == expected["grid_cols_rows"].tolist()
        assert out["num_tiles"].tolist() == [case.manifest["images"][image]["num_tiles"]]
        with Image.open(case.image_path(image)) as pil:
            assert out["image_sizes"][0].tolist() == [pil.height, pil.width]


def test_rgba_alpha_is_dropped_not_composited(case):
    """The original's convert("RGB") keeps the colours under transparent pixels; compositing would not."""
    processor = make_processor(case)
    expected = case.expected("rgba_label.png")["pixel_values"]
    with Image.open(case.image_path("rgba_label.png")) as pil:
        assert pil.mode == "RGBA"
        composited = Image.alpha_composite(Image.new("RGBA", pil.size, "white"), pil)
    ours = processor(str(case.image_path("rgba_label.png")))["pixel_values"]
    theirs = processor(composited)["pixel_values"]
    np.testing.assert_allclose(ours, expected, atol=1e-5, rtol=0)
    assert np.abs(theirs - expected).max() > 1e-2


def test_batch_of_different_sizes_concatenates_per_image_results(case):
    processor = make_processor(case)
    paths = [str(case.image_path(image)) for image in case.images]
    batch = processor(paths, return_tensors="pt")
    expected = np.concatenate([case.expected(image)["pixel_values"] for image in case.images])
    np.testing.assert_allclose(batch["pixel_values"].numpy(), expected, atol=1e-5, rtol=0)
    assert batch["num_tiles"].tolist() == [case.manifest["images"][i]["num_tiles"] for i in case.images]
    assert batch["grid_cols_rows"].tolist() == [case.manifest["images"][i]["grid_cols_rows"] for i in case.images]


def test_numpy_and_torch_inputs_match_pil(case):
    processor = make_processor(case)
    with Image.open(case.image_path("doc_wide.png")) as pil:
        rgb = np.asarray(pil.convert("RGB"))
    expected = case.expected("doc_wide.png")["pixel_values"]
    inputs = {
        "uint8 HWC": rgb,
        "uint8 CHW": rgb.transpose(2, 0, 1).copy(),
        "float HWC in [0, 1]": rgb.astype(np.float32) / 255.0,
        "torch uint8 CHW": torch.from_numpy(rgb.transpose(2, 0, 1).copy()),
    }
    for label, image in inputs.items():
        out = processor(image)["pixel_values"]
        np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0, err_msg=label)


@pytest.mark.parametrize("mode", ["L", "LA", "P", "CMYK", "RGBA", "1"])
def test_colour_modes_follow_pil_convert_rgb(mode):
    processor = TokenOCRImageProcessor(size=28)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (40, 90, 3), dtype=np.uint8))
    image = rgb.convert(mode)
    out = processor(image)["pixel_values"]
    reference = processor(image.convert("RGB"))["pixel_values"]
    np.testing.assert_array_equal(out, reference)
    assert out.shape[1] == 3


def test_sixteen_bit_images_are_rescaled_not_clipped():
    processor = TokenOCRImageProcessor(size=28)
    ramp = np.tile(np.linspace(0, 65535, 56).astype(np.uint16), (28, 1))
    as_pil = Image.fromarray(ramp)
    assert as_pil.mode.startswith("I;16")
    eight_bit = Image.fromarray(np.round(ramp / 257.0).astype(np.uint8)).convert("RGB")
    expected = processor(eight_bit)["pixel_values"]
    np.testing.assert_allclose(processor(as_pil)["pixel_values"], expected, atol=1e-6)
    np.testing.assert_allclose(processor(ramp)["pixel_values"], expected, atol=1e-6)
    np.testing.assert_allclose(processor(as_pil.convert("I"))["pixel_values"], expected, atol=1e-6)


def test_thumbnail_can_be_turned_off(case):
    processor = make_processor(case)
    expected = case.expected("doc_wide.png")["pixel_values"]
    out = processor(str(case.image_path("doc_wide.png")), use_thumbnail=False)
    assert out["num_tiles"].tolist() == [len(expected) - 1]
    np.testing.assert_allclose(out["pixel_values"], expected[:-1], atol=1e-5, rtol=0)


def test_max_tiles_limits_the_grid(case):
    out = make_processor(case)(str(case.image_path("doc_tall.png")), max_tiles=4)
    cols, rows = out["grid_cols_rows"][0].tolist()
    assert cols * rows <= 4
    assert out["num_tiles"].tolist() == [cols * rows + (1 if cols * rows > 1 else 0)]


def test_zero_size_image_is_a_clear_error():
    processor = TokenOCRImageProcessor(size=28)
    with pytest.raises(ValueError, match="zero size"):
        processor(np.zeros((0, 10, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="zero size"):
        processor(Image.new("RGB", (0, 5)))


def test_unreadable_and_missing_files_are_named(tmp_path):
    processor = TokenOCRImageProcessor(size=28)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(ValueError, match="corrupt.png"):
        processor(str(corrupt))
    good = Image.new("RGB", (64, 64), "white")
    good.save(tmp_path / "good.png")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes((tmp_path / "good.png").read_bytes()[:60])
    with pytest.raises(ValueError, match="truncated.png"):
        processor(str(truncated))
    with pytest.raises(FileNotFoundError, match="missing.png"):
        processor(str(tmp_path / "missing.png"))


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="min_tiles"):
        TokenOCRImageProcessor(min_tiles=3, max_tiles=2)
    processor = TokenOCRImageProcessor(size=28)
    with pytest.raises(ValueError, match="No image"):
        processor([])
    with pytest.raises(TypeError, match="expected a path"):
        processor(12345)


def test_save_and_load_round_trip(tmp_path, case):
    processor = TokenOCRImageProcessor(size=case.manifest["tile_size"], max_tiles=6, use_thumbnail=False)
    processor.save_pretrained(tmp_path)
    again = TokenOCRImageProcessor.from_pretrained(tmp_path)
    assert (again.size, again.max_tiles, again.use_thumbnail) == (processor.size, 6, False)
    image = str(case.image_path("doc_tall.png"))
    np.testing.assert_array_equal(again(image)["pixel_values"], processor(image)["pixel_values"])


def test_exif_orientation_is_applied_unless_turned_off(tmp_path):
    """A phone photo stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to view) is tiled upright."""
    upright = Image.new("RGB", (40, 120), "white")
    upright.paste((0, 0, 0), (0, 0, 40, 20))  # a black band at the top of the upright page
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what the camera wrote: 120 x 40
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "photo.jpg", exif=exif, quality=95)
    processor = TokenOCRImageProcessor(size=28)
    with Image.open(tmp_path / "photo.jpg") as photo:
        for image in (str(tmp_path / "photo.jpg"), photo):
            out = processor(image)
            assert out["image_sizes"][0].tolist() == [120, 40]
            np.testing.assert_allclose(out["pixel_values"], processor(upright)["pixel_values"], atol=0.1)
    original = processor(str(tmp_path / "photo.jpg"), apply_exif_orientation=False)
    assert original["image_sizes"][0].tolist() == [40, 120]
    assert TokenOCRImageProcessor(size=28, apply_exif_orientation=False)(str(tmp_path / "photo.jpg"))[
        "image_sizes"][0].tolist() == [40, 120]


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.uint32])
def test_integer_arrays_are_0_to_255_whatever_their_range(dtype):
    processor = TokenOCRImageProcessor(size=28)
    binary = np.zeros((30, 60), dtype=dtype)
    binary[:, 30:] = 1  # a 0/1 image is nearly black, not black and white
    as_uint8 = processor(binary.astype(np.uint8))["pixel_values"]
    np.testing.assert_array_equal(processor(binary)["pixel_values"], as_uint8)
    np.testing.assert_array_equal(processor(np.full((30, 60), 300, dtype=dtype))["pixel_values"],
                                  processor(np.full((30, 60), 255, dtype=np.uint8))["pixel_values"])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_float_tensors_of_any_dtype(dtype):
    processor = TokenOCRImageProcessor(size=28)
    values = torch.linspace(0, 1, 3 * 30 * 60).reshape(3, 30, 60)
    reference = processor(values)["pixel_values"]
    np.testing.assert_allclose(processor(values.to(dtype))["pixel_values"], reference, atol=0.05)
    with pytest.raises(ValueError, match="complex"):
        processor(torch.zeros(3, 8, 8, dtype=torch.complex64))


def test_saved_settings_are_the_ones_that_take_effect(tmp_path):
    """The GOT-OCR2 base's crop_to_patches / min_patches / max_patches do nothing here, so they are not saved."""
    import json

    TokenOCRImageProcessor(size=28, max_tiles=3).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert not {"crop_to_patches", "min_patches", "max_patches"} & set(saved)
    assert saved["max_tiles"] == 3 and saved["mask_threshold"] == 0.2


def test_sizes_from_a_model_folder_are_bounded_before_anything_is_allocated(tmp_path):
    """A preprocessor_config.json asking for 20000-pixel tiles (an 8.9 GiB array for a small page) or a 100000-pixel
    whole page is refused on loading, in one line that states the bound."""
    import json

    from transformers import AutoImageProcessor

    TokenOCRImageProcessor().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    for key, value, message in (("size", {"height": 20000, "width": 20000}, "sides from 1 to 2048 pixels"),
                                ("size", {"height": 448, "width": True}, "sides from 1 to 2048 pixels"),
                                ("max_side", 100000, "from 1 to 8192")):
        (tmp_path / "preprocessor_config.json").write_text(json.dumps({**config, key: value}))
        with pytest.raises(ValueError, match=message):
            AutoImageProcessor.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="sides from 1 to 2048"):
        TokenOCRImageProcessor()(Image.new("RGB", (8, 8)), size={"height": 9000, "width": 9000})
    assert TokenOCRImageProcessor(size=2048, max_side=8192).size == {"height": 2048, "width": 2048}  # the bounds
