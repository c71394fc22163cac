"""tokenocr-convert: hub-ready folders that load with transformers alone, and nothing half-written on failure."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import tokenocr.conversion.convert as convert_module
from tokenocr.conversion.convert import main

from fixture_cases import CASES, FIXTURES, Case, load_case
from hub_cache import add_to_hub_cache, offline_env, run_offline


SEG = FIXTURES / "tiny_seg" / "checkpoint"
LEGACY = FIXTURES / "tiny_legacy" / "checkpoint"
_converted = {}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Convert (case, dtype) once per module; dtype None means the default (the source's)."""

    def get(case_name: str, dtype: str | None):
        key = (case_name, dtype)
        if key not in _converted:
            output = tmp_path_factory.mktemp("converted") / f"{case_name}-{dtype or 'default'}"
            args = ["--input", str(FIXTURES / case_name / "checkpoint"), "--output", str(output)]
            if dtype:
                args += ["--dtype", dtype]
            assert main(args) == 0
            _converted[key] = output
        return _converted[key]

    return get


def stored_dtypes(folder: Path) -> set:
    dtypes = set()
    for file in folder.glob("*.safetensors"):
        with safe_open(file, framework="pt") as handle:
            dtypes.update(handle.get_slice(name).get_dtype() for name in handle.keys())
    return dtypes


@pytest.mark.parametrize("case_name", CASES)
@pytest.mark.parametrize("dtype", [None, "float32", "bfloat16", "float16"])
def test_converted_folder_contents(converted, case_name, dtype, capfd):
    folder = converted(case_name, dtype)
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json", "model.safetensors", "preprocessor_config.json", "processor_config.json", "tokenizer.json",
        "tokenizer_config.json", "special_tokens_map.json", "README.md", "configuration_tokenocr.py",
        "modeling_tokenocr.py", "image_processing_tokenocr.py", "processing_tokenocr.py",
    } <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".model"))]
    expected = {None: "BF16", "float32": "F32", "bfloat16": "BF16", "float16": "F16"}[dtype]
    assert stored_dtypes(folder) == {expected, "I64"}  # I64: BatchNorm's num_batches_tracked

    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "tokenocr"
    assert config["auto_map"] == {
        "AutoConfig": "configuration_tokenocr.TokenOCRConfig",
        "AutoModel": "modeling_tokenocr.TokenOCRModel",
    }
    assert config["custom_pipelines"]["token-similarity"]["impl"] == "pipeline_tokenocr.TokenSimilarityPipeline"
    assert (folder / "pipeline_tokenocr.py").is_file()
    assert json.loads((folder / "preprocessor_config.json").read_text())["auto_map"]["AutoImageProcessor"] == (
        "image_processing_tokenocr.TokenOCRImageProcessor"
    )
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


def test_remote_code_imports_nothing_from_the_package():
    for file in convert_module.remote_code_files():
        source = file.read_text()
        assert not re.search(r"^\s*(from|import)\s+tokenocr\b", source, flags=re.MULTILINE), file.name
        for module in re.findall(r"^\s*from\s+\.(\w+)\s+import", source, flags=re.MULTILINE):
            assert (file.parent / f"{module}.py").is_file(), (file.name, module)


_LOAD_AS_HUB_REPO = """
import json
import numpy as np
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor, AutoTokenizer

repo, fixtures = sys.argv[1], sys.argv[2]
manifest = json.load(open(f"{fixtures}/manifest.json"))
config = AutoConfig.from_pretrained(repo, trust_remote_code=True)
model = AutoModel.from_pretrained(repo, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True)
image_processor = AutoImageProcessor.from_pretrained(repo, trust_remote_code=True)
tokenizer = AutoTokenizer.from_pretrained(repo, trust_remote_code=True)
report = {"config": type(config).__name__, "model": type(model).__name__, "model_module": type(model).__module__,
          "image_processor": type(image_processor).__name__, "tokenizer_fast": tokenizer.is_fast,
          "tokenizer_module": type(tokenizer).__module__, "features": 0.0, "similarity": 0.0, "ids_equal": True}
for image in manifest["images"]:
    expected = np.load(f"{fixtures}/expected/{image[:-4]}.npz")
    inputs = processor(images=f"{fixtures}/inputs/{image}", return_tensors="pt")
    with torch.no_grad():
        features = model.get_image_features(inputs["pixel_values"])
    report["features"] = max(report["features"], float(np.abs(features.numpy() - expected["features"]).max()))
    for index, query in enumerate(manifest["queries"]):
        text = processor(text=query, return_tensors="pt")
        report["ids_equal"] &= text["input_ids"][0].tolist() == manifest["query_input_ids"][query]
        with torch.no_grad():
            similarity = model(image_embeds=features, input_ids=text["input_ids"]).similarity
        maps = processor.post_process_similarity(similarity, inputs["grid_cols_rows"], inputs["num_tiles"])[0][0]
        report["similarity"] = max(report["similarity"], float(np.abs(maps.numpy() - expected[f"similarity_q{index}"]).max()))
print(json.dumps(report))
"""


def report_as_hub_repo(folder: Path, script: str, case_name: str, tmp_path: Path) -> dict:
    """Publish `folder` as `org/TokenOCR` in a local cache; run `script` offline without tokenocr; its JSON report."""
    cache = tmp_path / "hub"
    add_to_hub_cache(cache, "org/TokenOCR", folder)
    result = run_offline(script, ["org/TokenOCR", FIXTURES / case_name], cache, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("case_name", CASES)
def test_loads_offline_as_hub_repo_with_transformers_alone(converted, case_name, tmp_path):
    report = report_as_hub_repo(converted(case_name, "float32"), _LOAD_AS_HUB_REPO, case_name, tmp_path)
    assert report["config"] == "TokenOCRConfig" and report["model"] == "TokenOCRModel"
    assert report["model_module"].startswith("transformers_modules")
    assert report["image_processor"] == "TokenOCRImageProcessor"
    assert report["tokenizer_fast"] and report["tokenizer_module"].startswith("transformers.")
    assert report["ids_equal"]
    assert report["features"] < 1e-4
    assert report["similarity"] < 1e-4


_PIPELINE_AS_HUB_REPO = """
import json
import numpy as np
from PIL import Image
from transformers import pipeline

repo, fixtures = sys.argv[1], sys.argv[2]
manifest = json.load(open(f"{fixtures}/manifest.json"))
finder = pipeline("token-similarity", model=repo, trust_remote_code=True)
report = {"class": type(finder).__name__, "module": type(finder).__module__, "worst": 0.0, "sizes_ok": True}
for image in manifest["images"]:
    expected = np.load(f"{fixtures}/expected/{image[:-4]}.npz")
    size = Image.open(f"{fixtures}/inputs/{image}").size
    results = finder(f"{fixtures}/inputs/{image}", manifest["queries"])
    for index, tokens in enumerate(results):
        for token, reference in zip(tokens, expected[f"similarity_q{index}"]):
            report["worst"] = max(report["worst"], float(np.abs(token["similarity"] - reference).max()))
            report["sizes_ok"] &= token["heatmap"].size == size and token["mask"].shape == (size[1], size[0])
print(json.dumps(report))
"""


@pytest.mark.parametrize("case_name", CASES)
def test_pipeline_through_converted_folder(converted, case_name, tmp_path):
    report = report_as_hub_repo(converted(case_name, "float32"), _PIPELINE_AS_HUB_REPO, case_name, tmp_path)
    assert report["class"] == "TokenSimilarityPipeline" and report["module"].startswith("transformers_modules")
    assert report["sizes_ok"]
    assert report["worst"] < 1e-4


def test_model_card_usage_runs(converted, tmp_path):
    folder = converted("tiny_seg", "float32")
    cache = tmp_path / "hub"
    add_to_hub_cache(cache, "org/TokenOCR", folder)
    blocks = re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), flags=re.DOTALL)
    assert blocks
    image = Case("tiny_seg").image_path("doc_wide.png")
    for block in blocks:
        result = run_offline(block.replace('"page.png"', repr(str(image))), [], cache, tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
    assert "' Invoice'" in result.stdout


def test_sharding_round_trip(tmp_path):
    output = tmp_path / "sharded"
    assert main(["--input", str(LEGACY), "--output", str(output), "--max-shard-size", "100KB"]) == 0
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


def test_hub_source_fetches_only_the_shards_it_needs(tmp_path):
    """An original repo whose index lists a language-model-only shard that is not even in the cache converts."""
    source = tmp_path / "source"
    shutil.copytree(LEGACY, source)
    index = json.loads((source / "pytorch_model.bin.index.json").read_text())
    index["weight_map"]["language_model.model.layers.1.attention.wqkv.weight"] = "pytorch_model-00003-of-00003.bin"
    (source / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    cache = tmp_path / "hub"
    add_to_hub_cache(cache, "someone/TokenOCR-original", source)
    output = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "tokenocr.conversion", "--input", "someone/TokenOCR-original", "--output", str(output)],
        cwd=tmp_path, env=offline_env(cache), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max |features - source features|" in result.stderr
    assert "base_model: someone/TokenOCR-original" in (output / "README.md").read_text()

    missing = subprocess.run(
        [sys.executable, "-m", "tokenocr.conversion", "--input", "someone/absent", "--output", str(tmp_path / "x")],
        cwd=tmp_path, env=offline_env(cache), capture_output=True, text=True, timeout=600,
    )
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines()[-1].startswith("tokenocr-convert: error:")
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------- failures


def folder_digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def broken_copy(tmp_path, source, breakage):
    folder = tmp_path / "broken"
    shutil.copytree(source, folder)
    breakage(folder)
    return folder


def _rewrite(change):
    def apply(folder):
        tensors = load_file(folder / "model.safetensors")
        change(tensors)
        save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})

    return apply


def _config(change):
    def apply(folder):
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))

    return apply


def _truncate(name):
    def apply(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[: len(data) // 3])

    return apply


FAILURES = {
    "missing config.json": (SEG, lambda f: (f / "config.json").unlink(), "no config.json"),
    "wrong model_type": (SEG, _config(lambda c: c.update(model_type="llava")), "model_type 'llava'"),
    "missing weights": (SEG, lambda f: (f / "model.safetensors").unlink(), "holds no weights"),
    "truncated safetensors": (SEG, _truncate("model.safetensors"), "model.safetensors"),
    "truncated bin shard": (LEGACY, _truncate("pytorch_model-00001-of-00002.bin"), "pytorch_model-00001-of-00002.bin"),
    "missing bin shard": (LEGACY, lambda f: (f / "pytorch_model-00002-of-00002.bin").unlink(), "pytorch_model-00002"),
    "missing tensor": (SEG, _rewrite(lambda t: t.pop("ocr_mlp.1.weight")), "missing tensor.*ocr_mlp.1.weight"),
    "unexpected tensor": (SEG, _rewrite(lambda t: t.update({"surprise": torch.ones(2)})), "unexpected tensor 'surprise'"),
    "wrong shape": (SEG, _rewrite(lambda t: t.update({"ocr_mlp.0.bias": torch.ones(7)})), "'ocr_mlp.0.bias' has shape"),
    "missing tokenizer.model": (SEG, lambda f: (f / "tokenizer.model").unlink(), "tokenizer.model"),
}


@pytest.mark.parametrize("failure", sorted(FAILURES))
def test_failures_leave_no_output_and_keep_an_existing_one(failure, tmp_path, capsys):
    source, breakage, message = FAILURES[failure]
    folder = broken_copy(tmp_path, source, breakage)
    before = folder_digest(folder)

    output = tmp_path / "out"
    assert main(["--input", str(folder), "--output", str(output)]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("tokenocr-convert: error:") and re.search(message, error[-1]), error[-1]
    assert not output.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["broken"]  # no partial folder left next to DST

    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious")
    assert main(["--input", str(folder), "--output", str(existing), "--force"]) == 1
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken", "existing"]
    assert folder_digest(folder) == before  # the source is never modified


def test_existing_output_needs_force(tmp_path, capsys):
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("precious")
    assert main(["--input", str(SEG), "--output", str(existing)]) == 1
    assert "already exists; pass --force" in capsys.readouterr().err
    assert [p.name for p in existing.iterdir()] == ["keep.txt"]

    assert main(["--input", str(SEG), "--output", str(existing), "--force"]) == 0
    assert (existing / "config.json").is_file() and not (existing / "keep.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing"]


def test_unwritable_output_location(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["--input", str(SEG), "--output", str(blocker / "out")]) == 1
    assert "cannot write" in capsys.readouterr().err
    assert main(["--input", str(SEG), "--output", str(tmp_path / "no" / "such" / "parent")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_interrupt_leaves_nothing(tmp_path, monkeypatch, capsys):
    real = convert_module.check_and_convert

    def interrupted_after_first_tensor(*args, **kwargs):
        tensors = real(*args, **kwargs)
        yield next(tensors)
        raise KeyboardInterrupt

    monkeypatch.setattr(convert_module, "check_and_convert", interrupted_after_first_tensor)
    output = tmp_path / "out"
    assert main(["--input", str(SEG), "--output", str(output)]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_verification_failure_leaves_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(convert_module.VERIFY_TOLERANCE, torch.float32, -1.0)
    output = tmp_path / "out"
    assert main(["--input", str(SEG), "--output", str(output), "--dtype", "float32"]) == 1
    assert "verification failed" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path, capsys):
    assert main(["--input", str(SEG), "--output", str(tmp_path / "o"), "--max-shard-size", "lots"]) == 1
    assert "--max-shard-size" in capsys.readouterr().err
    assert main(["--input", str(tmp_path / "nothing-here"), "--output", str(tmp_path / "o")]) == 1
    assert "neither an existing folder nor a hub repo id" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--input", str(SEG), "--output", str(tmp_path / "o"), "--dtype", "int8"])
    assert not (tmp_path / "o").exists()


def test_parse_size():
    assert convert_module.parse_size("5GB") == 5_000_000_000
    assert convert_module.parse_size("500MiB") == 500 * 1024**2
    assert convert_module.parse_size("1024") == 1024
