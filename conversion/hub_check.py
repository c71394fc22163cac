# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
Run code as a hub user would: in a fresh Python process in which `tokenocr` cannot be imported, so that a converted
folder must load with transformers alone (its remote code, `trust_remote_code=True`).

The parent side is `run_as_hub_user(target, args, ...)`; the child side is this file run as a module with its folder
on `PYTHONPATH`:

    python -m hub_check MODULE:FUNCTION JSON_ARGUMENTS

The child blocks `tokenocr`, exits if its parent dies, calls `MODULE.FUNCTION(*arguments)` and prints the JSON of
what it returns as its last line. On failure the child's whole output, traceback included, is kept in a log file
that the error message names. The converter's verification (`verify_converted_folder`) runs this way, and so do
the tests that load converted folders as hub repos. Nothing here imports `tokenocr`: this file must work both as
`tokenocr.conversion.hub_check` and as the child's top-level `hub_check`.
"""

import importlib
import importlib.abc
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


PARENT_PID_VARIABLE = "TOKENOCR_HUB_CHECK_PARENT_PID"


class HubCheckError(RuntimeError):
    """The child process failed; the message is its last error line and where its full log is."""


# ------------------------------------------------------------------------------------------- parent side


def run_as_hub_user(target: str, args: list, workdir: Path, env: dict | None = None, extra_paths=(), what="") -> dict:
    """
    Run `target` (`"module:function"`) with `args` (JSON values) in a fresh Python as a hub user; return its report.

    Args:
        target: the function to call in the child; its module is found on `PYTHONPATH` (this folder plus
            `extra_paths`).
        args: its arguments (paths as strings).
        workdir: the child's working folder (keep it free of a `tokenocr` folder).
        env: the environment (default: this process's), to which the offline and `PYTHONPATH` settings are added.
        extra_paths: more folders for the child's `PYTHONPATH`.
        what: what is being checked, for the error message.

    Raises:
        HubCheckError: the child failed; the message names the last error line and a log file with everything.
    """
    child_env = {k: v for k, v in (os.environ if env is None else env).items() if k != "PYTHONPATH"}
    child_env.setdefault("HF_HUB_OFFLINE", "1")
    child_env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parent), *map(str, extra_paths)])
    child_env[PARENT_PID_VARIABLE] = str(os.getpid())
    command = [sys.executable, "-m", "hub_check", target, json.dumps([str(a) if isinstance(a, Path) else a for a in args])]
    result = subprocess.run(command, cwd=workdir, env=child_env, capture_output=True, text=True)
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1] if lines else f"exit code {result.returncode}"
        log = Path(tempfile.gettempdir()) / f"tokenocr-hub-check-{os.getpid()}.log"
        log.write_text(f"$ {' '.join(command)}\n\n{result.stdout}\n{result.stderr}", encoding="utf-8")
        raise HubCheckError(f"{what or target}: {reason} (full log: {log})")
    return json.loads(result.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------- child side


class _BlockTokenOCR(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tokenocr" or name.startswith("tokenocr."):
            raise ImportError("tokenocr must not be needed to load a converted folder (hub users do not have it)")
        return None


def block_tokenocr() -> None:
    """Make `import tokenocr` fail in this process from now on."""
    for name in [name for name in sys.modules if name == "tokenocr" or name.startswith("tokenocr.")]:
        del sys.modules[name]
    sys.meta_path.insert(0, _BlockTokenOCR())


def exit_with_parent(parent_pid: int) -> None:
    """End this process as soon as the process that started it is gone (even after a SIGKILL of the parent)."""

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="exit-with-parent").start()


def verify_converted_folder(folder: str, probe: str, reference_file: str, reference_shape: list, text_reference_file: str,
                            query: str, *example) -> dict:
    """
    Load `folder` with transformers alone, in float32, and compare it with the source's outputs saved by the parent:
    the features of the probe page's tiles (`reference_file`, raw float32 of `reference_shape` `(tiles, locations,
    D)`, compared chunk by chunk as `iter_image_features` gives them, so neither side is held whole) and the
    embeddings of the probe query's tokens. With
    `example` (`sample_page, sample_query, picture_name, page_name`), also draw the model card's picture with the
    loaded model (`make_example_picture`).
    """
    import numpy as np
    import torch
    from transformers import AutoModel, AutoProcessor, AutoTokenizer

    model = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    if model.config.model_type != "tokenocr" or not type(model).__module__.startswith("transformers_modules"):
        raise TypeError(f"the folder loads as {type(model).__module__}.{type(model).__name__}, not its remote code")
    if not tokenizer.is_fast or not type(tokenizer).__module__.startswith("transformers."):
        raise TypeError(f"the tokenizer is {type(tokenizer).__module__}.{type(tokenizer).__name__}, not a fast one")
    inputs = processor(images=probe, return_tensors="pt")
    pixel_values = inputs["pixel_values"]
    reference = np.memmap(reference_file, dtype=np.float32, mode="r", shape=tuple(reference_shape))
    if reference.shape[0] != pixel_values.shape[0]:
        raise ValueError(f"the probe gives {pixel_values.shape[0]} tiles, the source {reference.shape[0]}")
    # When the probe is the card's sample page, its picture is scored from these same features (no second pass).
    scored = _SampleScores(model, processor, example[1], pixel_values.shape[0], reference.shape[1]) \
        if example and Path(probe) == Path(example[0]) else None
    difference = scale = 0.0
    seen = [0] * len(pixel_values)
    with torch.no_grad():
        for index, start, features in model.iter_image_features(pixel_values):
            expected = torch.from_numpy(np.array(reference[index, start : start + features.shape[0]]))
            if expected.shape != features.shape:
                raise ValueError(f"features of shape {tuple(features.shape)} at tile {index}, location {start}; "
                                 f"the source has {tuple(expected.shape)}")
            difference = max(difference, float((features - expected).abs().max()))
            scale = max(scale, float(expected.abs().max()))
            seen[index] += features.shape[0]
            if scored is not None:
                scored.add(index, start, features)
    if seen != [reference.shape[1]] * len(seen):
        raise ValueError(f"the converted model gives {seen} locations per tile, the source {reference.shape[1]}")
    query_ids = processor(text=query)["input_ids"]
    prepare_query = importlib.import_module(type(processor).__module__).prepare_query
    with torch.no_grad():
        text = model.get_text_features(torch.tensor(query_ids)).pooler_output
    text_difference = float((text - torch.from_numpy(np.load(text_reference_file))).abs().max())
    if example:
        maps = scored.maps(inputs) if scored is not None else None
        make_example_picture(folder, model, processor, *example, maps=maps)
    return {
        "difference": difference,
        "scale": scale,
        "text_difference": text_difference,
        "query_ids": query_ids,
        "tokenizer_ids": tokenizer(prepare_query(query), add_special_tokens=False)["input_ids"],
    }


class _SampleScores:
    """The sample query's similarity on the probe, gathered chunk by chunk from the features being verified."""

    def __init__(self, model, processor, query: str, tiles: int, locations: int):
        import torch

        self.query_ids = processor(text=query, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            self.text = model.get_text_features(self.query_ids).pooler_output  # (1, tokens, D)
        self.score = model.similarity_from_embeds  # the folder's own scoring, as get_similarity does it
        self.processor = processor
        self.similarity = torch.zeros(1, self.text.shape[1], tiles, locations)

    def add(self, index: int, start: int, features) -> None:
        self.similarity[0, :, index, start : start + features.shape[0]] = self.score(self.text, features)[0]

    def maps(self, inputs):
        """`(tokens, H, W)` stitched maps of the sample query on the probe page."""
        return self.processor.post_process_similarity(self.similarity, inputs["grid_cols_rows"], inputs["num_tiles"])[0][0]


def make_example_picture(folder: str, model, processor, sample_page: str, query: str, picture_name: str,
                         page_name: str, maps=None) -> None:
    """
    The model card's picture: the per-token heatmap strip of `query` on `sample_page`, drawn with the folder's own
    code (`visualization_tokenocr.query_strip`) by the loaded model (or from `maps`, the query's stitched maps on
    the page when they were already scored), saved as `folder/picture_name` beside a copy of the page
    (`folder/page_name`).
    """
    import shutil

    from PIL import Image
    # The folder's own drawing code: the module beside the (remote-code) processor's, which imported it already.
    drawing = importlib.import_module(type(processor).__module__.rpartition(".")[0] + ".visualization_tokenocr")
    query_strip = drawing.query_strip
    page = Image.open(sample_page).convert("RGB")
    query_ids = processor(text=query)["input_ids"]
    if maps is None:
        maps = processor.page_similarity(model, page, query_ids)[0]  # the folder's own scoring of a page
    found = processor.page_results(maps[None], [query_ids], (page.height, page.width), level="query",
                                   queries=[query])[0]
    Path(folder, picture_name).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(sample_page, Path(folder, page_name))
    picture = query_strip(page, found["tokens"], panel_width=448, columns=3,
                          title=f"Query '{query}' (relevance {found['score']:.3f})")
    picture.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(Path(folder, picture_name), optimize=True)


def main(argv: list[str]) -> None:
    block_tokenocr()
    if os.environ.get(PARENT_PID_VARIABLE, "").isdigit():
        exit_with_parent(int(os.environ[PARENT_PID_VARIABLE]))
    target, arguments = argv
    module_name, function_name = target.split(":")
    module = sys.modules[__name__] if module_name == "hub_check" else importlib.import_module(module_name)
    report = getattr(module, function_name)(*json.loads(arguments))
    print(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])
