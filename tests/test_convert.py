"""tokenocr-convert: hub-ready folders that load with transformers alone, verified, and never a lost byte."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import tokenocr.conversion.convert as convert_module
from tokenocr.cli import convert_main as main
from tokenocr.conversion.original import load_original

from fixture_cases import CASES, FIXTURES, Case, load_case
from hub_cache import add_to_hub_cache, report_as_hub_user


SEG = FIXTURES / "tiny_seg" / "checkpoint"
LEGACY = FIXTURES / "tiny_legacy" / "checkpoint"


def stored_dtypes(folder: Path) -> set:
    dtypes = set()
    for file in folder.glob("*.safetensors"):
        with safe_open(file, framework="pt") as handle:
            dtypes.update(handle.get_slice(name).get_dtype() for name in handle.keys())
    return dtypes


@pytest.mark.parametrize(
    "case_name, dtype",
    [("tiny_seg", None), ("tiny_seg", "float32"), ("tiny_legacy", "float32")],
)
def test_converted_folder_contents(converted, case_name, dtype):
    folder = converted(case_name, dtype)
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json", "model.safetensors", "preprocessor_config.json", "processor_config.json", "tokenizer.json",
        "tokenizer_config.json", "special_tokens_map.json", "README.md", "configuration_tokenocr.py",
        "modeling_tokenocr.py", "image_processing_tokenocr.py", "processing_tokenocr.py", "pipeline_tokenocr.py",
        "settings_tokenocr.py",
    } <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".model"))]
    assert [n for n in names if n.startswith(".")] == [convert_module.CONVERT_MARKER]  # nothing else hidden
    marked = json.loads((folder / convert_module.CONVERT_MARKER).read_text())["files"]
    assert set(marked) == {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {
        convert_module.CONVERT_MARKER}
    expected = {None: "BF16", "float32": "F32"}[dtype]  # None: the source's, bfloat16
    assert stored_dtypes(folder) == {expected, "I64"}  # I64: BatchNorm's num_batches_tracked

    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "tokenocr"
    assert config["fixed_logit_bias"] == -8.9375  # the bias the released models were trained with
    assert not {"tile_size", "min_tiles", "max_tiles", "use_thumbnail"} & set(config)  # the processor's settings
    assert config["auto_map"] == {
        "AutoConfig": "configuration_tokenocr.TokenOCRConfig",
        "AutoModel": "modeling_tokenocr.TokenOCRModel",
    }
    assert config["custom_pipelines"]["token-similarity"]["impl"] == "pipeline_tokenocr.TokenSimilarityPipeline"
    preprocessor = json.loads((folder / "preprocessor_config.json").read_text())
    assert preprocessor["auto_map"]["AutoImageProcessor"] == "image_processing_tokenocr.TokenOCRImageProcessor"
    assert preprocessor["size"] == {"height": Case(case_name).manifest["tile_size"]} | {"width": Case(case_name).manifest["tile_size"]}
    assert json.loads((folder / "processor_config.json").read_text())["auto_map"] == {
        "AutoProcessor": "processing_tokenocr.TokenOCRProcessor"
    }
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert "AutoTokenizer" not in tokenizer_config.get("auto_map", {})
    assert not tokenizer_config["tokenizer_class"].startswith("InternLM2")

    card = (folder / "README.md").read_text()
    metadata = card.split("---")[1]
    for key in ("library_name: transformers", "license: mit", "pipeline_tag:", "- custom_code"):
        assert key in metadata
    assert "$" not in card.replace("$$", "")


def test_remote_code_is_complete_and_imports_nothing_from_the_package():
    files = convert_module.remote_code_files()
    root = Path(convert_module.__file__).resolve().parent.parent
    on_disk = {p.name for folder in ("modeling", "processing") for p in (root / folder).glob("*_tokenocr.py")}
    assert {file.name for file in files} == on_disk  # a new remote-code file must be listed in its __init__.py
    for file in files:
        source = file.read_text()
        assert not re.search(r"^\s*(from|import)\s+tokenocr\b", source, flags=re.MULTILINE), file.name
        for module in re.findall(r"^\s*from\s+\.(\w+)\s+import", source, flags=re.MULTILINE):
            assert (file.parent / f"{module}.py").is_file(), (file.name, module)


def test_converted_folders_work_for_a_hub_user_with_transformers_alone(converted, tmp_path):
    """Both cases as hub repos in a local cache, used offline by a process without `tokenocr`: Auto classes, the
    pipeline from remote code, and the model card's usage code."""
    cache = tmp_path / "hub"
    repos = {case_name: f"org/TokenOCR-{case_name}" for case_name in CASES}
    for case_name, repo in repos.items():
        add_to_hub_cache(cache, repo, converted(case_name, "float32"))
    card = (converted("tiny_seg", "float32") / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.DOTALL)
    assert blocks and all("org/TokenOCR" in block for block in blocks)
    image = Case("tiny_seg").image_path("doc_wide.png")
    code = "\n".join(block.replace('"page.png"', repr(str(image))) for block in blocks).replace(
        '"org/TokenOCR"', repr(repos["tiny_seg"]))
    report = report_as_hub_user("hub_user_report", [json.dumps(repos), FIXTURES, code], cache, tmp_path)
    for case_name in CASES:
        case_report = report[case_name]
        assert case_report["config"] == "TokenOCRConfig" and case_report["model"] == "TokenOCRModel"
        assert case_report["model_module"].startswith("transformers_modules")
        assert case_report["image_processor"] == "TokenOCRImageProcessor"
        assert case_report["tokenizer_fast"] and case_report["tokenizer_module"].startswith("transformers.")
        assert case_report["ids_equal"]
        assert case_report["features"] < 1e-4
        assert case_report["similarity"] < 1e-4
        pipeline = case_report["pipeline"]
        assert pipeline["class"] == "TokenSimilarityPipeline" and pipeline["module"].startswith("transformers_modules")
        assert pipeline["sizes_ok"]
        assert pipeline["worst"] < 1e-4
    assert "' Invoice'" in report["card_code_printed"]


def test_sharded_conversion_replaces_an_earlier_output(converted, tmp_path):
    output = tmp_path / "sharded"
    shutil.copytree(converted("tiny_seg"), output)  # an earlier converted folder: --force may replace it
    assert main(["--input", str(LEGACY), "--output", str(output), "--max-shard-size", "100KB", "--force"]) == 0
    index = json.loads((output / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 3 and not (output / "model.safetensors").exists()
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    for shard in shards:
        assert (output / shard).stat().st_size <= 100_000 + 50_000  # one oversized tensor may overflow a shard
    from tokenocr import TokenOCRModel

    reloaded = TokenOCRModel.from_pretrained(output)
    reference, _ = load_case(Case("tiny_legacy"), "auto")
    assert set(index["weight_map"]) == set(reference.state_dict())
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, atol=0, rtol=0, msg=name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sharded"]


def test_hub_source_fetches_only_the_shards_it_needs(tmp_path, monkeypatch, capsys):
    """An original repo whose index lists a language-model-only shard that is not even in the cache converts."""
    import huggingface_hub.constants

    source = tmp_path / "source"
    shutil.copytree(LEGACY, source)
    index = json.loads((source / "pytorch_model.bin.index.json").read_text())
    index["weight_map"]["language_model.model.layers.1.attention.wqkv.weight"] = "pytorch_model-00003-of-00003.bin"
    (source / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    cache = tmp_path / "hub"
    add_to_hub_cache(cache, "someone/TokenOCR-original", source)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    output = tmp_path / "out"
    assert main(["--input", "someone/TokenOCR-original", "--output", str(output)]) == 0, capsys.readouterr().err
    assert "max |features - source features|" in capsys.readouterr().err
    assert "base_model: someone/TokenOCR-original" in (output / "README.md").read_text()

    assert main(["--input", "someone/absent", "--output", str(tmp_path / "x")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "tokenocr-convert: error: cannot get config.json of 'someone/absent': the hub cannot be reached (offline?) "
        "and it is not in the local cache"
    ]
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------- failures


def test_interrupt_leaves_nothing(tmp_path, monkeypatch, capsys):
    real = convert_module.convert_tensors

    def interrupted_after_first_tensor(*args, **kwargs):
        tensors = real(*args, **kwargs)
        yield next(tensors)
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_module, "convert_tensors", interrupted_after_first_tensor)
    output = tmp_path / "out"
    assert main(["--input", str(SEG), "--output", str(output)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("tokenocr-convert: error: interrupted")
    assert list(tmp_path.iterdir()) == []


def test_a_difference_above_the_bound_fails_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    real = convert_module.hub_check.run_as_hub_user

    def drifted(*args, **kwargs):
        return {**real(*args, **kwargs), "difference": 0.5}  # as if the converted weights were wrong

    monkeypatch.setattr(convert_module.hub_check, "run_as_hub_user", drifted)
    assert main(["--input", str(SEG), "--output", str(tmp_path / "out"), "--dtype", "float32"]) == 1
    assert "verification failed: the converted model differs from the source by 5.000e-01" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_verification_failure_in_the_child_names_its_log(tmp_path, monkeypatch, capsys):
    """A folder that does not load as a hub user fails with one line that names the child's full log."""
    real = convert_module.write_configs

    def broken_remote_code(config, dtype, processor, folder):
        real(config, dtype, processor, folder)
        (folder / "modeling_tokenocr.py").write_text("raise RuntimeError('planted failure')\n")

    monkeypatch.setattr(convert_module, "write_configs", broken_remote_code)
    assert main(["--input", str(SEG), "--output", str(tmp_path / "out")]) == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("tokenocr-convert: error: verification failed:") and "planted failure" in line
    log = Path(re.search(r"full log: (\S+)\)", line).group(1))
    assert "Traceback" in log.read_text() and "planted failure" in log.read_text()
    log.unlink()
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path, capsys):
    assert main(["--input", str(SEG), "--output", str(tmp_path / "o"), "--max-shard-size", "lots"]) == 1
    assert "--max-shard-size" in capsys.readouterr().err
    assert main(["--input", str(tmp_path / "nothing-here"), "--output", str(tmp_path / "o")]) == 1
    assert "neither an existing folder nor a hub repo id" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--input", str(SEG), "--output", str(tmp_path / "o"), "--dtype", "int8"])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokenocr-convert: error: argument --dtype: invalid choice: 'int8'")
    assert not (tmp_path / "o").exists()


MODELS = Path(__file__).resolve().parent.parent / "models"


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tokenocr-convert: error:"), lines
    return lines[0]


def test_force_never_replaces_a_model_folder_it_did_not_write(tmp_path, capsys):
    """A copy of a shipped model (what `tokenocr train` writes too), and a folder holding only files with the names a
    converted folder has: without the marker only the converter writes, --force replaces neither."""
    from safety import folder_digest

    trained = tmp_path / "trained"
    shutil.copytree(MODELS / "tokenocr-tiny-synthetic", trained)
    look_alike = tmp_path / "look-alike"
    look_alike.mkdir()
    (look_alike / "config.json").write_text(json.dumps({"model_type": "tokenocr"}))
    (look_alike / "model.safetensors").write_bytes(b"someone's weights")
    for folder in (trained, look_alike):
        before = folder_digest(tmp_path)
        assert main(["--input", str(SEG), "--output", str(folder), "--force"]) == 1
        line = one_error_line(capsys)
        assert f"was not written by tokenocr-convert (it has no {convert_module.CONVERT_MARKER}" in line
        assert folder_digest(tmp_path) == before


def test_force_refuses_an_earlier_output_changed_since(converted, tmp_path, capsys):
    from safety import folder_digest

    output = tmp_path / "converted"
    shutil.copytree(converted("tiny_seg"), output)
    with open(output / "README.md", "a") as card:
        card.write("\nMy notes on this model.\n")
    (output / "examples" / "my-page.png").write_bytes(b"mine")
    before = folder_digest(tmp_path)
    assert main(["--input", str(SEG), "--output", str(output), "--force"]) == 1
    line = one_error_line(capsys)
    assert "'README.md (changed since)'" in line and "'examples/my-page.png'" in line
    assert folder_digest(tmp_path) == before


@pytest.mark.parametrize("flag, value", [
    ("--repo-id", 'org/x"); import os; os.system("echo hi'), ("--repo-id", "org/TokenOCR\n```"),
    ("--repo-id", "TokenOCR"), ("--repo-id", "https://huggingface.co/org/x"), ("--space-id", "org/demo'<script>"),
])
def test_repo_ids_that_are_not_hub_ids_are_refused_before_anything_is_written(tmp_path, capsys, flag, value):
    output = tmp_path / "out"
    assert main(["--input", str(SEG), "--output", str(output), flag, value]) == 1
    line = one_error_line(capsys)
    assert line.startswith(f"tokenocr-convert: error: {flag} ") and "is not a hub repo id" in line
    assert list(tmp_path.iterdir()) == []


def test_parse_size():
    assert convert_module.parse_size("5GB") == 5_000_000_000
    assert convert_module.parse_size("500MiB") == 500 * 1024**2
    assert convert_module.parse_size("1024") == 1024
