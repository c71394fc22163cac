"""Train the document model: a small TokenOCR that finds words on real document pages, from nothing, on a CPU.

    python examples/documents/make_documents.py --output docs-train --split train --count 360 --seed 1
    python examples/documents/make_documents.py --output docs-heldout --split heldout --count 30 --seed 2
    python examples/train_document_model.py --pdfs docs-train --heldout docs-heldout --work doc-work --output MODEL

Every setting and seed is in `tokenocr.training.recipe_documents`. `--work` (created by this script and reused when
it is run again with the same folder) holds the tokenizer, the token-mask pages, the training windows and the
checkpoints: an interrupted run continues where it stopped. `--minutes` bounds this run's training time (the
schedule is set by `--steps`); the finished model, evaluated on the held-out documents' pages, goes to `--output`
(which must not exist).
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


WORK_MARKER = ".tokenocr-document-work"


def claim_work_folder(work: Path) -> None:
    if work.exists() and not (work / WORK_MARKER).is_file():
        raise SystemExit(f"error: --work '{work}' exists and was not made by this script; choose a new folder")
    work.mkdir(parents=True, exist_ok=True)
    (work / WORK_MARKER).touch()


def prepare_pages(pdf_folder: Path, work: Path, name: str, tokenizer, renditions) -> Path:
    """make-data on every PDF of `pdf_folder`, each at its rendition `(dpi, look)`; resumable, renamed when done."""
    from huggingface_hub.utils import tqdm

    from tokenocr.training.pdf_data import find_pdfs, make_data

    done = work / name
    if done.is_dir():
        return done
    building = work / f"{name}.partial"
    building.mkdir(exist_ok=True)
    groups = {}
    for pdf in find_pdfs([pdf_folder]):
        groups.setdefault(renditions(pdf), []).append(pdf)
    for (dpi, look), pdfs in sorted(groups.items()):
        progress = lambda total, dpi=dpi, look=look: tqdm(total=total, desc=f"{name}: {dpi} dpi, {look}", unit="pdf")
        summary = make_data(pdfs, tokenizer, building, dpi=dpi, augmentation=look, progress=progress)
    print(f"{name}: {summary.report()}", flush=True)
    building.rename(done)
    return done


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdfs", required=True, type=Path, help="folder of training PDFs")
    parser.add_argument("--heldout", required=True, type=Path, help="folder of held-out PDFs (other kinds)")
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--output", type=Path, help="where the finished model goes (new); omit to only train")
    parser.add_argument("--steps", type=int, default=6000, help="optimizer steps of the schedule")
    parser.add_argument("--minutes", type=float, default=None, help="stop this run after this much training")
    args = parser.parse_args(argv)
    if args.output is not None and args.output.exists():
        raise SystemExit(f"error: --output '{args.output}' already exists")
    claim_work_folder(args.work)

    import torch
    from huggingface_hub.utils import tqdm
    from transformers import TrainerCallback

    from tokenocr import TokenOCRProcessor
    from tokenocr.modeling import TokenOCRForTokenAlignment
    from tokenocr.training import recipe_documents as recipe
    from tokenocr.training.data import load_token_mask_dataset
    from tokenocr.training.train import build_trainer, default_training_arguments

    torch.set_num_threads(2)
    if (args.work / "processor" / "tokenizer.json").is_file():
        processor = TokenOCRProcessor.from_pretrained(args.work / "processor")
    else:
        processor = recipe.document_processor(recipe.document_tokenizer())
        processor.save_pretrained(args.work / "processor")
    pages = prepare_pages(args.pdfs, args.work, "train-pages", processor.tokenizer, recipe.rendition)
    prepare_pages(args.heldout, args.work, "heldout-pages", processor.tokenizer, lambda pdf: (150, "none"))
    windows = args.work / "train-windows"
    if not windows.is_dir():
        shutil.rmtree(args.work / "train-windows.partial", ignore_errors=True)
        count = recipe.crop_windows(pages, args.work / "train-windows.partial",
                                    progress=lambda records: tqdm(records, desc="windows", unit="page"))
        (args.work / "train-windows.partial").rename(windows)
        print(f"{count} training windows", flush=True)
    dataset = load_token_mask_dataset(windows)

    torch.manual_seed(recipe.MODEL_SEED)
    model = TokenOCRForTokenAlignment(recipe.document_config(len(processor.tokenizer)))
    training_args = default_training_arguments(
        args.work / "checkpoints", max_steps=args.steps, per_device_train_batch_size=recipe.BATCH_SIZE,
        learning_rate=recipe.LEARNING_RATE, warmup_steps=0.03, logging_steps=25, save_steps=200, save_total_limit=2,
        dataloader_num_workers=0, seed=recipe.MODEL_SEED, use_cpu=True, bf16=True, disable_tqdm=True,
    )
    trainer = build_trainer(
        model.train(), processor, dataset, training_args, policy=recipe.POLICY, vision_lr_scale=1.0,
        merge_repeated_tokens=True, loss_weights=recipe.LOSS_WEIGHTS, seg_logit_scale=recipe.SEG_TEMPERATURE[0],
        seg_logit_bias=recipe.SEG_TEMPERATURE[1],
    )
    started = time.time()

    class TimeLimit(TrainerCallback):
        def on_step_end(self, arguments, state, control, **kwargs):
            if args.minutes is not None and time.time() - started > args.minutes * 60:
                control.should_save = control.should_training_stop = True

    trainer.add_callback(TimeLimit())
    resume = any((args.work / "checkpoints").glob("checkpoint-*/trainer_state.json")) or None
    trainer.train(resume_from_checkpoint=resume)
    minutes = (time.time() - started) / 60
    record = args.work / "training-minutes.json"
    runs = json.loads(record.read_text())["runs"] if record.is_file() else []
    record.write_text(json.dumps({"runs": runs + [round(minutes, 2)]}) + "\n")
    print(f"trained {trainer.state.global_step} steps; {minutes:.1f} min in this run, {sum(runs) + minutes:.1f} in all",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
