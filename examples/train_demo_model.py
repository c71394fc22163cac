"""Train a small TokenOCR from nothing on synthetic pages: tokenizer, pages, training, held-out evaluation.

    python examples/train_demo_model.py --work demo-build --output tokenocr-tiny-synthetic

Every setting and seed comes from `tokenocr.training.recipe`: a small SentencePiece tokenizer trained on the
training words, synthetic training pages and held-out pages (another seed, held-out words only), a small TokenOCR
trained from scratch with the original objective, and the held-out figures of the trained model beside those of the
same model before training (printed, and written to `--work`/figures.json). `--work` (created by this script, and
reused when it is run again with the same folder: pages already generated are kept) holds the data and the training
checkpoints; the finished model folder is moved to `--output`, which must not exist.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from tokenocr import TokenOCRProcessor
from tokenocr.modeling import TokenOCRForTokenAlignment
from tokenocr.outputs import building_folder, move_into_place
from tokenocr.training import recipe
from tokenocr.training.data import load_token_mask_dataset
from tokenocr.training.evaluate import evaluate_model
from tokenocr.training.train import build_trainer, save_trained_model


WORK_MARKER = ".tokenocr-demo-work"  # marks a --work folder as this script's own


def claim_work_folder(work: Path) -> None:
    """Create `work`, or accept it if an earlier run of this script created it; refuse anything else."""
    if work.exists() and not (work / WORK_MARKER).is_file():
        raise SystemExit(f"error: --work '{work}' exists and was not made by this script; choose a new folder")
    work.mkdir(parents=True, exist_ok=True)
    (work / WORK_MARKER).touch()


def prepare(work: Path):
    """The processor and both datasets, generated once and then reused."""
    if (work / "processor" / "tokenizer.json").is_file():
        processor = TokenOCRProcessor.from_pretrained(work / "processor")
    else:
        processor = recipe.demo_processor(recipe.demo_tokenizer())
        processor.save_pretrained(work / "processor")
    for name, heldout in (("train", False), ("heldout", True)):
        if not (work / name).is_dir():  # generated beside, then renamed: a folder here is complete
            partial = work / f"{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)  # an interrupted generation, inside our own folder
            started = time.time()
            recipe.generate_demo_data(partial, processor.tokenizer, heldout=heldout)
            partial.rename(work / name)
            print(f"generated {name} pages in {time.time() - started:.0f} s", flush=True)
    return processor, load_token_mask_dataset(work / "train"), load_token_mask_dataset(work / "heldout")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path, help="folder for data and checkpoints (this script's)")
    parser.add_argument("--output", required=True, type=Path, help="where the trained model folder goes (new)")
    args = parser.parse_args(argv)
    output = args.output.absolute()
    if output.exists():
        raise SystemExit(f"error: --output '{output}' already exists; choose a new folder")
    claim_work_folder(args.work)

    processor, train_pages, heldout_pages = prepare(args.work)
    torch.manual_seed(recipe.MODEL_SEED)
    model = TokenOCRForTokenAlignment(recipe.demo_config(len(processor.tokenizer)))
    untrained = evaluate_model(model.tokenocr.eval(), processor, heldout_pages)
    print("untrained model, held-out pages:\n" + untrained.report(), flush=True)

    trainer = build_trainer(
        model.train(), processor, train_pages, recipe.demo_training_arguments(args.work / "checkpoints"),
        policy=recipe.POLICY, vision_lr_scale=1.0, use_thumbnail=False, merge_repeated_tokens=True,
        loss_weights=recipe.LOSS_WEIGHTS,
    )
    started = time.time()
    trainer.train(resume_from_checkpoint=any((args.work / "checkpoints").glob("checkpoint-*")) or None)
    minutes = (time.time() - started) / 60
    print(f"training took {minutes:.1f} min", flush=True)

    trained = evaluate_model(model.tokenocr.eval(), processor, heldout_pages)
    print("trained model, held-out pages:\n" + trained.report(), flush=True)
    figures = {"training_minutes": round(minutes, 1), "trained": trained.to_dict(), "untrained": untrained.to_dict()}
    (args.work / "figures.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    with building_folder(output, "train_demo_model") as building:
        save_trained_model(trainer, processor, building)
        move_into_place(building, output)
    print(f"wrote {output}")


if __name__ == "__main__":
    sys.exit(main())
