"""
What a hub user runs against a converted folder, as real functions: the tests call them in a fresh Python process in
which `tokenocr` cannot be imported (`hub_cache.run_as_hub_user`), each returning a JSON report.
"""

import json

import numpy as np


def fixture_report(repo: str, fixtures: str) -> dict:
    """Load `repo` with the Auto classes and compare features and maps with the original's fixture outputs."""
    import torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor, AutoTokenizer

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
            features = model.get_image_features(inputs["pixel_values"]).pooler_output
        report["features"] = max(report["features"], float(np.abs(features.numpy() - expected["features"]).max()))
        for index, query in enumerate(manifest["queries"]):
            text = processor(text=query, return_tensors="pt")
            report["ids_equal"] &= text["input_ids"][0].tolist() == manifest["query_input_ids"][query]
            with torch.no_grad():
                similarity = model(image_embeds=features, input_ids=text["input_ids"]).similarity
            maps = processor.post_process_similarity(similarity, inputs["grid_cols_rows"], inputs["num_tiles"],
                                                     inputs.get("map_sizes"))[0][0]  # map_sizes: whole images (R50)
            difference = float(np.abs(maps.numpy() - expected[f"similarity_q{index}"]).max())
            report["similarity"] = max(report["similarity"], difference)
    return report


def pipeline_report(repo: str, fixtures: str) -> dict:
    """Run `pipeline("token-similarity")` from `repo`'s remote code on every fixture image and query."""
    from PIL import Image
    from transformers import pipeline

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
    return report


def fixture_and_pipeline_report(repo: str, fixtures: str) -> dict:
    """Both reports from one process (each new process costs seconds of imports)."""
    return {**fixture_report(repo, fixtures), "pipeline": pipeline_report(repo, fixtures)}


def hub_user_report(repos: str, fixtures: str, card_code: str) -> dict:
    """For each `case name -> repo` of `repos` (JSON), both reports; then the card's code, in one process (each new
    process costs seconds of imports)."""
    report = {case: fixture_and_pipeline_report(repo, f"{fixtures}/{case}") for case, repo in json.loads(repos).items()}
    report["card_code_printed"] = run_code(card_code)["printed"]
    return report


def run_code(code: str) -> dict:
    """Execute a code block (e.g. from a model card) as a hub user would paste it; report what it printed."""
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "<code block>", "exec"), {"__name__": "__main__"})
    return {"printed": printed.getvalue()}


def trained_folder_report(folder: str, image: str, query: str) -> dict:
    """`pipeline("token-similarity")` from a trained folder's own remote code: classes, threshold and token maps."""
    from transformers import pipeline

    finder = pipeline("token-similarity", model=folder, trust_remote_code=True)
    tokens = finder(image, query, return_visuals=False)
    return {"model_module": type(finder.model).__module__, "threshold": finder.processor.image_processor.mask_threshold,
            "tokens": [token["token_id"] for token in tokens],
            "maps": [token["similarity"].tolist() for token in tokens]}


def query_report(repo: str, image: str, query: str) -> dict:
    """The `token-similarity` pipeline of `repo` (its remote code) at the query level on `image`."""
    from transformers import pipeline

    finder = pipeline("token-similarity", model=repo, trust_remote_code=True)
    found = finder(image, query, level="query", return_visuals=False)
    return {"pipeline_module": type(finder).__module__, "score": found["score"], "boxes": found["boxes"]}
