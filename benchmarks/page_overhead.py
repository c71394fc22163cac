"""
What a 12-tile page costs in the pipeline beyond the arithmetic it must do, and against an earlier release.

At the released widths (InternViT-300M-like tower, feature width 4096, random weights: `throughput.build`), on one
synthetic page of a 4x3 grid of 448-pixel tiles (1792 x 1344 px, white with black text) and the 5 queries of
`throughput.QUERIES`, in one process, alternating A/B over `--repeats` after one warm-up of each:

- port: `TokenSimilarityPipeline(...)(page, QUERIES, return_visuals=False, level="query")`, batch size 4;
- bare: the minimal arithmetic, written with the model's submodules at the same batch (4 tiles per vision forward)
  and dtype: the vision tower to the used layer, class token dropped, the patch grid, the upsampler one tile at a
  time, the projector over the tile's locations, normalisation, dot products with the queries' normalised token
  embeddings. No processor, no post-processing: the pixel tiles are prepared ONCE, outside the timing.

With `--previous DIR` it also times the same port call under an earlier release: DIR is a folder whose `tokenocr/`
holds that release's package with its `modeling/`, `processing/`, ... folders copied in as subpackages (as
pyproject's package-dir maps them). Current and previous then each run in their own subprocess (same page, same
seed), alternating over `--rounds`, and the ratio current / previous is printed. `--profile` prints where one port
call spends its time (cProfile, cumulative). Every port call is also split into the pipeline's stages (timers wrapped
around the instance's `preprocess` (tiling), `_forward` (the model) and `postprocess` (stitching, query maps, boxes);
no library code changes). `--bare-chunk 2048` runs the bare projector over 2048 locations at a time, as the pipeline
does (`LOCATIONS_PER_CHUNK`), instead of the whole tile at once; on this CPU that is the faster of the two.

    python benchmarks/page_overhead.py --dtype bfloat16 --repeats 3
    python benchmarks/page_overhead.py --dtype bfloat16 --repeats 3 --previous PREVIOUS_RELEASE_DIR --rounds 2
    python benchmarks/page_overhead.py --dtype bfloat16 --repeats 1 --profile

Each ratio is printed of medians, of minima and (port / bare) of adjacent pairs, for wall-clock and for process CPU
seconds: on a shared CPU other work can double a call's wall time, so a ratio whose three forms disagree was disturbed
and should be run again.
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont


HERE = Path(__file__).resolve().parent
COLS, ROWS, SIDE = 4, 3, 448
BATCH = 4


def make_page() -> Image.Image:
    """A white 1792 x 1344 page with lines of black text (the queries among them); deterministic."""
    from throughput import QUERIES

    page = Image.new("RGB", (COLS * SIDE, ROWS * SIDE), "white")
    draw = ImageDraw.Draw(page)
    try:
        font = ImageFont.load_default(size=28)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    words = QUERIES + ["lorem", "ipsum", "dolor", "sit", "amet", "page", "number", "12", "report", "of", "the"]
    for line in range(30):
        text = " ".join(words[(line * 3 + k) % len(words)] for k in range(8))
        draw.text((60 + (line % 3) * 40, 40 + line * 42), text, fill="black", font=font)
    return page


def setup(device: str, dtype: torch.dtype, threads: int):
    """Model, processor, pipeline and page, seeded; imports whichever `tokenocr` comes first on sys.path."""
    torch.set_num_threads(threads)
    sys.path.insert(0, str(HERE))
    from throughput import QUERIES, build

    import tokenocr
    from tokenocr import TokenSimilarityPipeline

    model, processor = build(device, dtype, "sdpa")  # seeds torch with 0
    finder = TokenSimilarityPipeline(model=model, processor=processor, task="token-similarity", device=device,
                                     batch_size=BATCH)
    return tokenocr, model, processor, finder, make_page(), QUERIES


def port_call(finder, page, queries, tiles):
    return finder(page, queries, return_visuals=False, level="query", min_tiles=tiles, max_tiles=tiles)


def make_bare(model, processor, page, queries, tiles, device, chunk: int = 0):
    """The bare computation as a function of nothing: tiles and token ids prepared here, once."""
    processed = processor.image_processor(page, use_thumbnail=False, min_tiles=tiles, max_tiles=tiles,
                                          return_tensors="pt")
    pixel_values = processed["pixel_values"].to(device=device, dtype=model.dtype)
    assert len(pixel_values) == tiles, (len(pixel_values), tiles)
    encoded = processor(text=queries, return_tensors="pt")
    input_ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
    tower, layers = model.vision_tower, model.config.num_vision_layers_used
    patch = model.config.vision_config.patch_size
    patch = patch[0] if isinstance(patch, (tuple, list)) else patch
    grid_side = SIDE // patch

    def bare():
        with torch.inference_mode():
            text = torch.nn.functional.normalize(model.embed_tokens(input_ids), dim=-1) * mask[..., None].to(model.dtype)
            flat_text = text.reshape(-1, text.shape[-1])  # (queries * tokens, hidden)
            scores = []
            for first in range(0, len(pixel_values), BATCH):
                states = tower.embeddings(pixel_values[first : first + BATCH])
                for layer in tower.encoder.layer[:layers]:
                    states = layer(states)
                states = states[:, 1:, :]  # class token dropped
                grid = states.transpose(1, 2).reshape(len(states), states.shape[-1], grid_side, grid_side)
                for tile in range(len(grid)):
                    locations = model.upsampler(grid[tile : tile + 1]).flatten(2).transpose(1, 2)[0]  # (L, width)
                    step = chunk or len(locations)  # the projector over the whole tile, or `chunk` locations at once
                    scores.append(torch.cat([
                        flat_text @ torch.nn.functional.normalize(model.projector(locations[start : start + step]),
                                                                  dim=-1).T
                        for start in range(0, len(locations), step)
                    ], dim=-1))  # (queries * tokens, L)
            return torch.stack(scores, dim=1).reshape(*input_ids.shape, len(pixel_values), -1)

    return bare


def timed(function) -> dict:
    """Wall-clock and process CPU seconds (all threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}


def instrument(finder) -> dict:
    """
    Wraps the pipeline instance's `preprocess` (tiling), `_forward` (the model) and `postprocess` (stitching, query
    maps, boxes) with wall-clock timers, on the instance only; returns the dict they add their seconds to.
    """
    stages = {"preprocess": 0.0, "forward": 0.0, "postprocess": 0.0}
    preprocess, forward, postprocess = finder.preprocess, finder._forward, finder.postprocess

    def timed_preprocess(*args, **kwargs):
        items = preprocess(*args, **kwargs)
        while True:
            start = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                stages["preprocess"] += time.perf_counter() - start
                return
            stages["preprocess"] += time.perf_counter() - start
            yield item

    def timed_stage(name, function):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                stages[name] += time.perf_counter() - start
        return wrapper

    finder.preprocess = timed_preprocess
    finder._forward = timed_stage("forward", forward)
    finder.postprocess = timed_stage("postprocess", postprocess)
    return stages


def timed_port(finder, stages, page, queries, tiles) -> dict:
    for name in stages:
        stages[name] = 0.0
    result = timed(lambda: port_call(finder, page, queries, tiles))
    result.update(stages)
    result["other"] = result["wall"] - sum(stages.values())
    return result


def summary(runs: list, key: str = "wall") -> str:
    values = [run[key] for run in runs]
    return f"median {statistics.median(values):6.2f} s, min {min(values):6.2f} s"


def stage_line(runs: list) -> str:
    return ", ".join(f"{name} {statistics.median(run[name] for run in runs):.2f}"
                     for name in ("preprocess", "forward", "postprocess", "other")) + " s (medians)"


def worker(args, dtype) -> None:
    """One process timing the port only (for the current/previous comparison): a JSON line on stdout."""
    tokenocr, model, processor, finder, page, queries = setup(args.device, dtype, args.threads)
    stages = instrument(finder)
    port_call(finder, page, queries, args.tiles)  # warm-up
    runs = [timed_port(finder, stages, page, queries, args.tiles) for _ in range(args.repeats)]
    print("RESULT " + json.dumps({"tokenocr": tokenocr.__file__, "runs": runs}), flush=True)


def run_worker(args, path: str | None) -> dict:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    else:
        env.pop("PYTHONPATH", None)
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--dtype", args.dtype, "--device",
               args.device, "--repeats", str(args.repeats), "--threads", str(args.threads)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=str(HERE))
    if done.returncode:
        raise RuntimeError(f"worker failed ({path or 'current'}):\n{done.stderr[-4000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def profile_port(finder, page, queries, tiles) -> None:
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    port_call(finder, page, queries, tiles)
    profiler.disable()
    print(f"\nprofiled port call: {time.perf_counter() - start:.2f} s (cProfile on)")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(45)
    print(out.getvalue())


def compare_with_bare(args, dtype) -> None:
    """The port against the bare computation in this process (and, with --profile, where a port call goes)."""
    tokenocr, model, processor, finder, page, queries = setup(args.device, dtype, args.threads)
    print(f"tokenocr from {tokenocr.__file__}", flush=True)
    bare = make_bare(model, processor, page, queries, args.tiles, args.device, args.bare_chunk)
    stages = instrument(finder)
    if not args.skip_bare:
        port_call(finder, page, queries, args.tiles)  # warm-ups
        bare()
        port_runs, bare_runs = [], []
        for _ in range(args.repeats):  # A/B/A/B
            port_runs.append(timed_port(finder, stages, page, queries, args.tiles))
            bare_runs.append(timed(bare))
            print(f"  port {port_runs[-1]['wall']:7.2f} s (cpu {port_runs[-1]['cpu']:6.1f})   "
                  f"bare {bare_runs[-1]['wall']:7.2f} s (cpu {bare_runs[-1]['cpu']:6.1f})   "
                  f"port: preprocess {port_runs[-1]['preprocess']:.2f}, forward {port_runs[-1]['forward']:.2f}, "
                  f"postprocess {port_runs[-1]['postprocess']:.2f}, other {port_runs[-1]['other']:.2f}",
                  flush=True)
        print(f"port: {summary(port_runs)}; bare: {summary(bare_runs)}")
        for key in ("wall", "cpu"):
            medians = [statistics.median(run[key] for run in runs) for runs in (port_runs, bare_runs)]
            minima = [min(run[key] for run in runs) for runs in (port_runs, bare_runs)]
            pairs = statistics.median(p[key] / b[key] for p, b in zip(port_runs, bare_runs))
            print(f"port / bare ({key}): of medians {medians[0] / medians[1]:.3f}, of minima "
                  f"{minima[0] / minima[1]:.3f}, median of adjacent pairs {pairs:.3f}")
        print(f"port stages: {stage_line(port_runs)}", flush=True)
    if args.profile:
        profile_port(finder, page, queries, args.tiles)


def compare_with_previous(args) -> None:
    """The port under the current code and under --previous, each in its own process, alternating."""
    previous = str(Path(args.previous).resolve())
    runs = {"current": [], "previous": []}
    pair_ratios = []
    for round_ in range(args.rounds):  # A/B/A/B, each in its own process
        for name, path in (("current", None), ("previous", previous)):
            result = run_worker(args, path)
            origin = Path(result["tokenocr"]).resolve()
            if (name == "previous") != (Path(previous) in origin.parents):
                raise RuntimeError(f"{name} run imported tokenocr from {origin}")
            runs[name] += result["runs"]
            print(f"  round {round_ + 1} {name:8s} ({origin.parent}): "
                  + ", ".join(f"{run['wall']:.2f}" for run in result["runs"]) + " s; "
                  + stage_line(result["runs"]), flush=True)
        pair_ratios += [c["wall"] / p["wall"] for c, p in zip(runs["current"][-args.repeats:],
                                                             runs["previous"][-args.repeats:])]
    for name, values in runs.items():
        print(f"{name}: {summary(values)}; cpu {summary(values, 'cpu')}; {stage_line(values)}")
    for key in ("wall", "cpu"):
        medians = [statistics.median(run[key] for run in runs[name]) for name in ("current", "previous")]
        minima = [min(run[key] for run in runs[name]) for name in ("current", "previous")]
        print(f"current / previous ({key}): of medians {medians[0] / medians[1]:.3f}, of minima "
              f"{minima[0] / minima[1]:.3f}")
    print(f"current / previous (wall), median of paired calls: {statistics.median(pair_ratios):.3f}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="bfloat16")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls of each, after one warm-up of each")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--previous", metavar="DIR", help="folder holding an earlier release's tokenocr/ package")
    parser.add_argument("--rounds", type=int, default=2, help="current/previous subprocess pairs (with --previous)")
    parser.add_argument("--skip-bare", action="store_true", help="with --previous: only the current/previous runs")
    parser.add_argument("--bare-chunk", type=int, default=0,
                        help="locations per projector call in the bare computation (default 0: the whole tile)")
    parser.add_argument("--profile", action="store_true", help="cProfile one port call")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.tiles = COLS * ROWS
    dtype = getattr(torch, args.dtype)
    if args.worker:
        return worker(args, dtype)

    header = (f"{COLS}x{ROWS} = {args.tiles} tiles ({COLS * SIDE} x {ROWS * SIDE} px), 5 queries, {args.dtype}, "
              f"batch {BATCH}, {args.threads} threads, device {args.device}, {args.repeats} repeats, bare projector chunk "
              f"{args.bare_chunk or 'whole tile'}")
    print(header, flush=True)
    if not args.skip_bare or args.profile:
        compare_with_bare(args, dtype)
    if args.previous:
        compare_with_previous(args)


if __name__ == "__main__":
    main()
