"""
`tokenocr make-data`: token masks from PDF text layers, in the token-mask dataset format (the library behind it is
`tokenocr.training.pdf_data`; `tokenocr.cli` parses the arguments).

The dataset is built in a hidden folder beside `--output` (`.NAME.make-data`, marked as this command's) and renamed
to `--output` once every page is done. An interrupted run leaves that folder; `--resume` continues it (the same
PDFs, model, pages, dpi and augmentation), anything else refuses to start until it is resumed or removed.
"""

import json
from pathlib import Path

from ..outputs import OutputError, check_output_location


MARKER = ".tokenocr-make-data"
SUMMARY_FILE = "make-data.json"


def _settings(args, pdfs) -> dict:
    return {"pdfs": [str(Path(pdf).absolute()) for pdf in pdfs], "model": str(args.model), "pages": args.pages,
            "dpi": args.dpi, "augment": args.augment, "seed": args.seed}


def plan(args):
    """Check the inputs and the output before the model loads: `(pdfs, output, building, settings)`."""
    from ..training.pdf_data import find_pdfs

    pdfs = find_pdfs(args.pdfs)
    output = check_output_location(args.output, [args.model, *args.pdfs], "--output")
    if output.exists():
        raise OutputError(f"--output '{args.output}' already exists; make-data writes a new folder, choose another name")
    building = output.with_name(f".{output.name}.make-data")
    settings = _settings(args, pdfs)
    if building.is_symlink() or (building.exists() and not (building / MARKER).is_file()):
        raise OutputError(f"'{building}' exists and was not made by make-data; remove it or choose another --output")
    if building.exists():
        earlier = json.loads((building / MARKER).read_text(encoding="utf-8"))
        if not args.resume:
            raise OutputError(f"an interrupted make-data run for '{args.output}' is in '{building.name}'; continue it "
                              "with --resume (same arguments) or remove that folder")
        if earlier != settings:
            changed = ", ".join(key for key in settings if settings[key] != earlier.get(key))
            raise OutputError(f"--resume: the interrupted run used other settings ({changed}); run it with the same "
                              f"arguments or remove '{building.name}'")
    elif args.resume:
        raise OutputError(f"--resume: there is no interrupted make-data run for '{args.output}' to continue")
    return pdfs, output, building, settings


def run(args) -> str:
    from huggingface_hub.utils import tqdm

    from ..loading import load_tokenizer
    from ..training.pdf_data import make_data

    pdfs, output, building, settings = plan(args)
    tokenizer = load_tokenizer(args.model, args.trust_remote_code)
    if not building.exists():
        building.mkdir()
        (building / MARKER).write_text(json.dumps(settings) + "\n", encoding="utf-8")
    summary = make_data(pdfs, tokenizer, building, args.pages, args.dpi, args.augment, args.seed,
                        progress=lambda total: tqdm(total=total, desc="PDFs", unit="pdf"))
    if not summary.written:
        import shutil

        shutil.rmtree(building)  # ours, and it holds no page
        raise ValueError(f"no page gave a training page ({summary.report()}); nothing was written")
    (building / SUMMARY_FILE).write_text(json.dumps({**summary.to_dict(), "settings": settings}, indent=2) + "\n",
                                         encoding="utf-8")
    (building / MARKER).unlink()
    building.rename(output)
    return f"{summary.report()}; dataset in {output}"
