"""
Loading a converted or trained TokenOCR folder safely: none of its Python files runs (its tokenizer's included, even
with `--trust-remote-code`), and a folder whose files are broken is refused in one line naming the problem: weights
that do not fit config.json, NaN or infinite weights, an unreadable tokenizer.json.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tokenocr.cli import main
from tokenocr.loading import BrokenModelError, load_model_and_processor, load_pipeline, load_tokenizer

from fixture_cases import FIXTURES


MODEL = Path(__file__).resolve().parent.parent / "models" / "tokenocr-tiny-synthetic"
IMAGE = FIXTURES / "tiny_seg" / "inputs" / "single_tile.png"


@pytest.fixture
def model_copy(tmp_path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(MODEL, folder)
    return folder


def edit_json(file: Path, change) -> None:
    data = json.loads(file.read_text())
    change(data)
    file.write_text(json.dumps(data))


def similarity(folder: Path, out: Path, *extra) -> int:
    return main(["similarity", "--model", str(folder), "--image", str(IMAGE), "--query", "Invoice", "--out", str(out),
                 *extra])


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("tokenocr")]
    assert len(lines) == 1 and lines[0].startswith("tokenocr: error:"), lines
    return lines[0]


# ------------------------------------------------------------------------------ a folder's tokenizer code


def plant_tokenizer_code(folder: Path, sentinel: Path, keep_class: bool = True) -> None:
    """An `auto_map` for AutoTokenizer in tokenizer_config.json, pointing at a file that writes `sentinel` when run."""
    (folder / "planted_tokenizer.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(sentinel)!r}).write_text('the folder tokenizer code ran')\n"
        "from transformers import PreTrainedTokenizerFast\n\n\n"
        "class PlantedTokenizer(PreTrainedTokenizerFast):\n"
        "    pass\n"
    )

    def change(config):
        config["auto_map"] = {"AutoTokenizer": [None, "planted_tokenizer.PlantedTokenizer"]}
        if not keep_class:
            config.pop("tokenizer_class", None)

    edit_json(folder / "tokenizer_config.json", change)


def loaders(folder: Path):
    from transformers import AutoProcessor, pipeline

    return {
        "load_model_and_processor": lambda: load_model_and_processor(str(folder), trust_remote_code=True)[1].tokenizer,
        "load_pipeline": lambda: load_pipeline(str(folder), trust_remote_code=True).processor.tokenizer,
        "load_tokenizer": lambda: load_tokenizer(str(folder), trust_remote_code=True),
        "pipeline": lambda: pipeline("token-similarity", model=str(folder), trust_remote_code=True).processor.tokenizer,
        "AutoProcessor": lambda: AutoProcessor.from_pretrained(str(folder), trust_remote_code=True).tokenizer,
    }


@pytest.mark.parametrize("way", sorted(loaders(Path("."))))
def test_trust_remote_code_never_runs_a_tokenocr_folders_tokenizer_code(model_copy, tmp_path, way):
    sentinel = tmp_path / "tokenizer-code-ran"
    plant_tokenizer_code(model_copy, sentinel)
    tokenizer = loaders(model_copy)[way]()
    assert not sentinel.exists()
    assert type(tokenizer).__module__.startswith("transformers.") and type(tokenizer).__name__ != "PlantedTokenizer"
    assert tokenizer("Invoice")["input_ids"]  # and it works


def test_a_tokenizer_that_only_its_own_code_could_load_is_refused(model_copy, tmp_path, capsys):
    sentinel = tmp_path / "tokenizer-code-ran"
    plant_tokenizer_code(model_copy, sentinel, keep_class=False)
    for way, load in loaders(model_copy).items():
        with pytest.raises(Exception):  # noqa: B017 - transformers' own refusal: the point is that nothing ran
            load()
        assert not sentinel.exists(), way
    assert similarity(model_copy, tmp_path / "out", "--trust-remote-code") == 1
    assert "custom code" in one_error_line(capsys)
    assert not sentinel.exists() and not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------------ broken folders


@pytest.mark.parametrize("change, message", [
    (lambda config: config["vision_config"].update(intermediate_size=512),
     r"'vision_tower\.encoder\.layer\.0\.mlp\.fc1\.bias' has shape \[256\] in the weights but \[512\] by config.json"),
    (lambda config: config["vision_config"].update(num_hidden_layers=5), r"the weights lack 'vision_tower\.encoder\.layer\.4\."),
    (lambda config: config["vision_config"].update(num_hidden_layers=3), r"the weights hold 'vision_tower\.encoder\.layer\.3\."),
], ids=["shape", "missing layer", "extra layer"])
def test_a_config_that_disagrees_with_the_weights_is_one_line(model_copy, tmp_path, capsys, change, message):
    edit_json(model_copy / "config.json", change)
    with pytest.raises(BrokenModelError, match=message):
        load_model_and_processor(str(model_copy))
    capsys.readouterr()
    assert similarity(model_copy, tmp_path / "out") == 1
    captured = capsys.readouterr()
    assert "LOAD REPORT" not in captured.err + captured.out
    line = [line for line in captured.err.splitlines() if line.startswith("tokenocr")]
    assert len(line) == 1 and line[0].startswith("tokenocr: error: config.json of ") and "does not fit its weights" in line[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", ['{"version": "1.0", "truncation": null}', "{}", "not JSON at all {", ""],
                         ids=["no model", "empty object", "not JSON", "empty file"])
def test_a_garbage_tokenizer_json_is_named(model_copy, tmp_path, capsys, content):
    (model_copy / "tokenizer.json").write_text(content)
    with pytest.raises(BrokenModelError, match="^tokenizer.json of .* is not a valid tokenizer file"):
        load_tokenizer(str(model_copy))
    assert similarity(model_copy, tmp_path / "out") == 1
    line = one_error_line(capsys)
    assert "tokenizer.json of " in line and "'added_tokens'" not in line.split("tokenizer file")[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_at_load_time(model_copy, tmp_path, capsys, value):
    tensors = load_file(model_copy / "model.safetensors")
    name = "upsampler.batch_norm_1.running_var" if value == float("inf") else "projector.linear_2.weight"
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[-1] = value
    save_file(tensors, model_copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(BrokenModelError, match=f"NaN or infinite values \\(first in '{name}'\\)"):
        load_model_and_processor(str(model_copy))
    assert similarity(model_copy, tmp_path / "out") == 1
    assert f"'{name}'" in one_error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_a_sound_folder_still_loads(model_copy):
    model, processor = load_model_and_processor(str(model_copy))
    assert all(torch.isfinite(p).all() for p in model.parameters()) and processor.tokenizer("Invoice")["input_ids"]


@pytest.mark.parametrize("named_type", ["TokenOCRImageProcessor", "GotOcr2ImageProcessor"])
def test_trust_remote_code_never_runs_a_tokenocr_folders_image_processor_code(model_copy, tmp_path, named_type):
    """The same promise for the image processor: an `auto_map` for AutoImageProcessor in preprocessor_config.json
    (with the type named as ours or as one of transformers' own) runs nothing; the installed class is used."""
    from transformers import AutoProcessor, pipeline

    sentinel = tmp_path / "image-processor-code-ran"
    (model_copy / "planted_image_processing.py").write_text(
        "from pathlib import Path\n"
        f"Path({str(sentinel)!r}).write_text('the folder image processor code ran')\n"
        "from transformers import GotOcr2ImageProcessor\n\n\n"
        "class PlantedImageProcessor(GotOcr2ImageProcessor):\n"
        "    pass\n"
    )
    edit_json(model_copy / "preprocessor_config.json", lambda config: config.update(
        image_processor_type=named_type,
        auto_map={"AutoImageProcessor": "planted_image_processing.PlantedImageProcessor"}))
    ways = {
        "load_model_and_processor": lambda: load_model_and_processor(str(model_copy), trust_remote_code=True)[1],
        "load_pipeline": lambda: load_pipeline(str(model_copy), trust_remote_code=True).processor,
        "pipeline": lambda: pipeline("token-similarity", model=str(model_copy), trust_remote_code=True).processor,
        "AutoProcessor": lambda: AutoProcessor.from_pretrained(str(model_copy), trust_remote_code=True),
    }
    for way, load in ways.items():
        image_processor = load().image_processor
        assert not sentinel.exists(), way
        assert type(image_processor).__module__ == "tokenocr.processing.image_processing_tokenocr", way
