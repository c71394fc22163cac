"""
TokenOCR demo: where is each token of a text query written on a document page?

    python demo/app.py [--model MODEL ...] [--port PORT] [--host HOST] [--device cpu|cuda] [--preload]
    tokenocr demo [--model MODEL ...] [--port PORT]

Upload an image (or paste one, or take a webcam picture) or a PDF and pick a page, type the text to find and press
Run: the query's own map with its boxes (where the whole query stands), one heatmap per query token (captioned with
the token and its best cosine similarity), the query's boxes, the text mask and the token boxes, the query's
relevance, a table of tokens, scores and boxes, and the summary as JSON.

MODEL is a converted TokenOCR folder, a hub repo id, or an original checkpoint folder; `--model` may be repeated
(or `TOKENOCR_DEMO_MODEL` may list several, separated by commas) to offer a choice. Without either, the demo loads
`DEFAULT_MODEL` when it is there (in a checkout of the repository) and otherwise `HUB_MODELS` (on a Space). Models
are loaded on first use, so the app starts without a network; analytics are off and no share link is made.

With the `tokenocr` package installed, models and helpers come from it (original checkpoints need it). Without it
(a Space holds only this folder and `requirements.txt`), a hub repo id or converted folder is loaded with
transformers alone through the folder's remote code, helpers included.

The vision pass over a page's tiles is cached per (model, page content, page number), so a new query or threshold
on the same page only scores the query.
"""

import argparse
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

if __package__:
    from .scoring import (
        DEFAULT_CACHE_GB, DEFAULT_MODEL, DEFAULT_THRESHOLD, HUB_MODELS, MODEL_ENV, PDF_DPI, CachedPage, FeatureCache,  # noqa: F401
        ModelPool, check_device, is_untrained, model_kind, model_threshold, page_count, page_key, read_page, resolve_models,
        score_query, vision_pass,
    )
    from .uploads import (
        EXAMPLES_DIR, MAX_UPLOAD, DemoError, checked_query, checked_threshold, file_path, one_line, page_request,
        upload_folder,
    )
else:  # run as a script, or loaded by path as on a Space: the modules beside this one
    if str(Path(__file__).resolve().parent) not in sys.path:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scoring import (  # noqa: E402
        DEFAULT_CACHE_GB, DEFAULT_MODEL, DEFAULT_THRESHOLD, HUB_MODELS, MODEL_ENV, PDF_DPI, CachedPage, FeatureCache,  # noqa: F401
        ModelPool, check_device, is_untrained, model_kind, model_threshold, page_count, page_key, read_page, resolve_models,
        score_query, vision_pass,
    )
    from uploads import (  # noqa: E402
        EXAMPLES_DIR, MAX_UPLOAD, DemoError, checked_query, checked_threshold, file_path, one_line, page_request,
        upload_folder,
    )

ANNOTATED_SIDE = 1280  # longest side of the annotated view (masks are drawn at this size)
# The relevance box is read-only, and Gradio draws a disabled field's placeholder in the text colour: grey it, so
# that "shown after Run" does not read as a value.
CSS = "#relevance input::placeholder { -webkit-text-fill-color: var(--input-placeholder-color); }"
STRIP_PANEL_WIDTH = 360

logger = logging.getLogger("tokenocr.demo")


# ------------------------------------------------------------------------------------------------ results


def _display_size(width: int, height: int) -> tuple[int, int]:
    scale = min(1.0, ANNOTATED_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _boxes_mask(boxes, page_size, display_size):
    """A float32 mask at `display_size` with each box's outline at 1 and its inside at 0.25."""
    import numpy as np

    width, height = display_size
    sx, sy = width / page_size[0], height / page_size[1]
    mask = np.zeros((height, width), dtype=np.float32)
    for left, top, right, bottom in boxes:
        x0, y0 = int(left * sx), int(top * sy)
        x1, y1 = max(x0 + 1, math.ceil(right * sx)), max(y0 + 1, math.ceil(bottom * sy))
        mask[y0:y1, x0:x1] = np.maximum(mask[y0:y1, x0:x1], 0.25)
        for region in (mask[y0:y1, x0 : x0 + 2], mask[y0:y1, x1 - 2 : x1], mask[y0 : y0 + 2, x0:x1], mask[y1 - 2 : y1, x0:x1]):
            region[...] = 1.0
    return mask


def annotated_view(page, shown, found: dict, threshold: float, captions: list[str]):
    """`(shown, annotations)` for an annotated image of `page` at `shown`'s (display) size: the query's boxes first,
    then the text mask (all tokens; their masks are at the display size) and each token's boxes."""
    import numpy as np

    size = shown.size
    union = np.zeros((size[1], size[0]), dtype=bool)
    for token in found["tokens"]:
        union |= token["mask"]
    annotations = [(_boxes_mask(found["boxes"], page.size, size), "boxes of the query")] if found["boxes"] else []
    annotations.append((union.astype(np.float32) * 0.5, f"text mask (similarity > {threshold:g})"))
    for token, caption in zip(found["tokens"], captions):
        if token["boxes"]:
            annotations.append((_boxes_mask(token["boxes"], page.size, size), f"boxes of {caption.split('  ')[0]}"))
    return shown, annotations


def _boxes_text(boxes: list, limit: int = 4) -> str:
    shown = json.dumps(boxes[:limit])
    return shown if len(boxes) <= limit else f"{shown[:-1]}, ...] ({len(boxes)} boxes)"


def summary_json(spec, request, page, query, threshold, found) -> dict:
    return {
        "model": spec,
        "page": {"source": request.kind, "file": request.name, "page_number": request.page_number,
                 "size": [page.width, page.height]},
        "query": query, "threshold": threshold, "relevance": found["score"],
        "boxes": found["boxes"], "box_scores": found["box_scores"],
        "tokens": [{k: token[k] for k in ("token", "token_id", "score", "boxes")} for token in found["tokens"]],
    }


# ---------------------------------------------------------------------------------------------- the app


class DemoApp:
    """Everything but the interface: models, the vision-pass cache, and one Run."""

    def __init__(self, specs: list[str], device: str = "cpu", dtype: str = "float32", cache_gb: float = DEFAULT_CACHE_GB,
                 allowed_dirs=None):
        # Pages are opened only from these folders: Gradio's uploads and the demo's own examples.
        self.allowed_dirs = tuple(allowed_dirs) if allowed_dirs is not None else (upload_folder(), EXAMPLES_DIR)
        self.pool = ModelPool(specs, device, dtype)
        self.cache = FeatureCache(int(cache_gb * 1024**3))
        self.output_dir = Path(tempfile.mkdtemp(prefix="tokenocr-demo-"))
        self._runs = 0

    @property
    def specs(self) -> list[str]:
        return self.pool.specs

    def note(self, spec: str) -> str:
        if is_untrained(spec):
            return (f"**Note: the weights of `{spec}` are not trained** (a small test checkpoint with random weights): "
                    "the heatmaps show the demo working, not where the text is. Start the demo with `--model` and a "
                    "released TokenOCR model to see real results.")
        return ""

    def page_count(self, pdf, spec: str | None = None) -> int:
        """How many pages an uploaded PDF has (read by the page reader of `spec`'s code, default the first model)."""
        path = file_path(pdf)
        return page_count(self.pool.get(spec or self.specs[0]), path) if path else 1

    def page_features(self, loaded, request, progress=None):
        """`(CachedPage, seconds spent or None when cached)` for the requested page."""
        key = page_key(loaded, request)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, None
        start = time.perf_counter()
        entry = vision_pass(loaded, read_page(loaded, request), progress)
        self.cache.put(key, entry)
        return entry, time.perf_counter() - start

    def run(self, image, pdf, page_number, query, threshold, spec, progress=None) -> tuple:
        """One press of Run; returns the interface's outputs (see [`build_interface`])."""
        query = checked_query(query)
        given = checked_threshold(threshold, None)  # refused before any model loads
        request = page_request(image, pdf, page_number, self.allowed_dirs)
        spec = spec or self.specs[0]
        if progress is not None:
            progress(0.0, desc=f"Loading {spec}")
        loaded = self.pool.get(spec)
        # No threshold given: the model's own (stored with its image processor; 0.2 for the released models).
        threshold = loaded.processor.image_processor.mask_threshold if given is None else given
        entry, vision_seconds = self.page_features(loaded, request, progress)
        start = time.perf_counter()
        from PIL import Image

        shown = entry.page.resize(_display_size(*entry.page.size), Image.Resampling.BILINEAR)
        found = score_query(loaded, entry, query, threshold, shown)
        scoring_seconds = time.perf_counter() - start
        return self._outputs(spec, loaded, request, entry, shown, query, threshold, found,
                             self._status(spec, request, entry, vision_seconds, scoring_seconds))

    def _status(self, spec, request, entry, vision_seconds, scoring_seconds) -> str:
        vision = "reused from the cache" if vision_seconds is None else f"{vision_seconds:.1f} s"
        features = entry.features
        cols, rows = features.grid_cols_rows
        layout = "whole page" if features.map_size is not None else f"{cols} x {rows} tiles"
        return (f"`{spec}` · {request.label}: {entry.page.width} x {entry.page.height} px, {layout} · "
                f"vision pass {vision} · scoring {scoring_seconds:.2f} s")

    def _outputs(self, spec, loaded, request, entry, shown, query, threshold, found, status) -> tuple:
        """The interface's outputs for one query result (pictures made by the library; arranged here)."""
        tokens, relevance = found["tokens"], found["score"]
        captions = [loaded.drawing.format_caption(token["token"], token["score"]) for token in tokens]
        # Pictures of the tokens that stand for text: a whitespace token (the space a character tokenizer puts before
        # a word) is left out of the query's map, and of the gallery and strip; the table and summary keep it.
        pictured = [i for i, token in enumerate(tokens) if token["token"].strip()] or list(range(len(tokens)))
        strip = loaded.drawing.heatmap_strip(
            [tokens[i]["heatmap"] for i in pictured], [captions[i] for i in pictured], panel_width=STRIP_PANEL_WIDTH,
            columns=min(4, len(pictured)), title=f"'{query}' on {request.label}: relevance {relevance:.3f}",
        )
        self._runs += 1
        summary = self.output_dir / f"tokenocr-summary-{self._runs:04d}.json"
        data = summary_json(spec, request, entry.page, query, threshold, found)
        summary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        table = [[i + 1, caption.rsplit("  ", 1)[0], token["token_id"], round(token["score"], 4), _boxes_text(token["boxes"])]
                 for i, (token, caption) in enumerate(zip(tokens, captions))]
        gallery = [(found["heatmap"], f"the query  {relevance:.3f}")]
        gallery += [(tokens[i]["heatmap"], captions[i]) for i in pictured]
        annotated = annotated_view(entry.page, shown, found, threshold, captions)
        return gallery, strip, annotated, relevance, table, str(summary), status

    def close(self) -> None:
        shutil.rmtree(self.output_dir, ignore_errors=True)


# ------------------------------------------------------------------------------------------ the interface


def _examples() -> list[list]:
    """Example inputs: [image, pdf, page, query] (filled in on click; the model runs only on Run, with the threshold
    the Options hold)."""
    examples = []
    if (EXAMPLES_DIR / "document_page.png").is_file():  # a Letter page at 150 dpi: what the document model reads
        examples.append([str(EXAMPLES_DIR / "document_page.png"), None, 1, "February"])
    if (EXAMPLES_DIR / "synthetic_page.png").is_file():  # what the synthetic model was trained for
        examples.append([str(EXAMPLES_DIR / "synthetic_page.png"), None, 1, "2024"])
    if (EXAMPLES_DIR / "receipt.png").is_file():
        examples.append([str(EXAMPLES_DIR / "receipt.png"), None, 1, "TOTAL"])
    if (EXAMPLES_DIR / "notice.pdf").is_file():
        examples.append([None, str(EXAMPLES_DIR / "notice.pdf"), 2, "Agenda"])
    return examples


def _guarded(function):
    """Turn every failure of an event handler into a message in the interface (never a traceback)."""
    import functools

    import gradio as gr

    @functools.wraps(function)
    def handler(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except DemoError as error:
            raise gr.Error(str(error), print_exception=False) from None
        except gr.Error:
            raise
        except Exception as error:  # anything unexpected: logged on the server, one line for the user
            logger.exception("run failed")
            raise gr.Error(f"Something went wrong: {one_line(error)[:300]}", print_exception=False) from None

    return handler


def _input_column(gr, app: DemoApp) -> dict:
    """The input widgets, in the current layout column."""
    widgets = {}
    with gr.Tabs():
        with gr.Tab("Image"):
            widgets["image"] = gr.Image(label="Page image", type="filepath", image_mode=None, elem_id="page-image",
                                        sources=["upload", "clipboard", "webcam"], height=200)
        with gr.Tab("PDF"):
            widgets["pdf"] = gr.File(label="PDF", file_types=[".pdf"], elem_id="page-pdf")
            widgets["page"] = gr.Number(label="Page", value=1, precision=0, minimum=1, elem_id="page-number")
    widgets["query"] = gr.Textbox(label="Text to find", placeholder="e.g. Invoice total", max_lines=1, elem_id="query")
    with gr.Accordion("Options", open=False):  # closed: the first screen shows the examples
        widgets["threshold"] = gr.Slider(-1.0, 1.0, value=model_threshold(app.specs[0]), step=0.01,
                                         elem_id="threshold", label="Mask threshold (cosine similarity)")
        widgets["model"] = gr.Dropdown(choices=app.specs, value=app.specs[0], label="Model", elem_id="model",
                                       visible=len(app.specs) > 1)
    widgets["run"] = gr.Button("Run", variant="primary", elem_id="run-button")
    examples = _examples()
    if examples:  # under Run, in view on first paint
        gr.Examples(examples, [widgets[k] for k in ("image", "pdf", "page", "query")],
                    cache_examples=False, label="Examples (click one, then Run)")
    return widgets


def _output_column(gr) -> dict:
    outputs = {}
    outputs["status"] = gr.Markdown(label="Status", elem_id="status")
    outputs["gallery"] = gr.Gallery(label="Heatmap per token", columns=3, height="auto", object_fit="contain",
                                   elem_id="heatmaps")
    with gr.Row():
        outputs["relevance"] = gr.Number(value=None, label="Relevance (the query's score)", precision=4,
                                         placeholder="shown after Run", interactive=False, elem_id="relevance")
        outputs["summary"] = gr.File(label="Summary (JSON)", elem_id="summary")
    outputs["annotated"] = gr.AnnotatedImage(label="Text mask and boxes", height=480, elem_id="annotated")
    outputs["table"] = gr.Dataframe(headers=["#", "token", "id", "score", "boxes [left, top, right, bottom]"],
                                    label="Tokens", interactive=False, elem_id="tokens")
    outputs["strip"] = gr.Image(label="All tokens side by side", type="pil", elem_id="strip", height=420)
    return outputs


def build_interface(app: DemoApp):
    """The Gradio Blocks: inputs on the left, outputs on the right; `/run` is the API endpoint of Run."""
    import gradio as gr

    with gr.Blocks(title="TokenOCR demo", analytics_enabled=False, delete_cache=(3600, 3600)) as interface:
        gr.Markdown("# TokenOCR: where is each token written?\nUpload a document page (or a PDF and pick a page), "
                    "type some text and press **Run**: one heatmap per token of the text, with its score.")
        note = gr.Markdown(app.note(app.specs[0]), elem_id="model-note")
        with gr.Row():
            with gr.Column(scale=2):
                inputs = _input_column(gr, app)
            with gr.Column(scale=3):
                outputs = _output_column(gr)
        _wire_events(gr, interface, app, inputs, outputs, note)
    return interface


def _wire_events(gr, interface, app: DemoApp, inputs: dict, outputs: dict, note) -> None:
    def run(image, pdf, page, query, threshold, spec, progress=gr.Progress()):
        return app.run(image, pdf, page, query, threshold, spec, progress=progress)

    def pdf_uploaded(pdf):
        count = app.page_count(pdf)
        return gr.update(value=1, maximum=count, label=f"Page (1-{count})"), None

    run_inputs = [inputs[k] for k in ("image", "pdf", "page", "query", "threshold", "model")]
    run_outputs = [outputs[k] for k in ("gallery", "strip", "annotated", "relevance", "table", "summary", "status")]
    inputs["run"].click(_guarded(run), run_inputs, run_outputs, api_name="run", preprocess=False)
    inputs["query"].submit(_guarded(run), run_inputs, run_outputs, api_visibility="private", preprocess=False)
    inputs["pdf"].upload(_guarded(pdf_uploaded), inputs["pdf"], [inputs["page"], inputs["image"]],
                         api_visibility="private")
    inputs["image"].input(lambda: None, None, inputs["pdf"], api_visibility="private")  # the newest upload wins
    inputs["model"].change(app.note, inputs["model"], note, api_visibility="private")
    # Gradio's Number shows an initial None as 0 until a value arrives: set None on load, so it starts empty.
    interface.load(lambda: None, None, outputs["relevance"], api_visibility="private")


# ---------------------------------------------------------------------------------------------- command line


def _cache_size(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number of GiB >= 0, got {text!r}")
    return value


def add_demo_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The demo's options, for `python demo/app.py` and `tokenocr demo`."""
    parser.add_argument("--model", action="append", metavar="MODEL",
                        help="converted folder, hub repo id or original checkpoint folder; repeat to offer a choice "
                        f"(default: ${MODEL_ENV}, else the repository's demonstration model)")
    parser.add_argument("--port", type=int, default=None, help="port to serve on (default: 7860 or $GRADIO_SERVER_PORT)")
    parser.add_argument("--host", default=None, help="address to serve on (default: 127.0.0.1 or $GRADIO_SERVER_NAME)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                        help="weights' dtype (default: %(default)s)")
    parser.add_argument("--cache-gb", type=_cache_size, default=DEFAULT_CACHE_GB,
                        help="memory for cached vision passes, in GiB (the newest page is always kept)")
    parser.add_argument("--preload", action="store_true", help="load the models before serving instead of on first use")
    return parser


def run_demo(args: argparse.Namespace) -> int:
    """Start the app (blocks until interrupted). Returns an exit code."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"  # before gradio is imported: no calls home
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    specs = resolve_models(args.model)
    for spec in specs:
        model_kind(spec)  # a misspelt --model fails now, not on the first Run
    device = check_device(args.device)
    app = DemoApp(specs, device=device, dtype=args.dtype, cache_gb=args.cache_gb)
    if args.preload:
        for spec in specs:
            app.pool.get(spec)
    interface = build_interface(app)
    try:
        interface.queue(default_concurrency_limit=1).launch(
            server_name=args.host, server_port=args.port, share=False, inbrowser=False, ssr_mode=False,
            mcp_server=False, footer_links=["api"], max_file_size=MAX_UPLOAD, css=CSS,
        )
    finally:
        app.close()
    return 0


def main(argv=None) -> int:
    parser = add_demo_arguments(argparse.ArgumentParser(prog="tokenocr demo", description=__doc__.splitlines()[1]))
    args = parser.parse_args(argv)
    try:
        return run_demo(args)
    except DemoError as error:
        print(f"tokenocr demo: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
