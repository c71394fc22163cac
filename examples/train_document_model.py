"""Train the document model: a small TokenOCR that finds words on real document pages, from nothing, on a CPU.

    python examples/documents/make_documents.py --output docs-train --split train --count 360 --seed 1
    python examples/documents/make_documents.py --output docs-heldout --split heldout --count 30 --seed 2
    python examples/train_document_model.py --pdfs docs-train --heldout docs-heldout --work doc-work --steps 4000 \
        --output MODEL

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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pdfs", required=True, type=Path, help="folder of training PDFs")
    parser.add_argument("--heldout", required=True, type=Path, help="folder of held-out PDFs (other kinds)")
    parser.add_argument("--work", required=True, type=Path)
    parser.add_argument("--output", type=Path, help="where the finished model goes (new); omit to only train")
    parser.add_argument("--steps", type=int, default=4000, help="optimizer steps of the schedule (default: 4000)")
    parser.add_argument("--minutes", type=float, default=None, help="stop this run after this much training")
    parser.add_argument("--compare", type=Path, default=Path("models/tokenocr-tiny-synthetic"),
                        help="the model measured beside it (default: the synthetic demonstration model)")
    return parser.parse_args(argv)


def prepare_data(args):
    """`(processor, pages folder, training windows dataset)`, each made once in `--work` and then reused."""
    from huggingface_hub.utils import tqdm

    from tokenocr import TokenOCRProcessor
    from tokenocr.training import recipe_documents as recipe
    from tokenocr.training.data import load_token_mask_dataset

    if (args.work / "processor" / "tokenizer.json").is_file():
        processor = TokenOCRProcessor.from_pretrained(args.work / "processor")
    else:
        processor = recipe.document_processor(recipe.document_tokenizer())
        processor.save_pretrained(args.work / "processor")
    pages = prepare_pages(args.pdfs, args.work, "train-pages", processor.tokenizer, recipe.rendition)
    windows = args.work / "train-windows"
    if not windows.is_dir():
        shutil.rmtree(args.work / "train-windows.partial", ignore_errors=True)
        count = recipe.crop_windows(pages, args.work / "train-windows.partial",
                                    progress=lambda records: tqdm(records, desc="windows", unit="page"))
        (args.work / "train-windows.partial").rename(windows)
        print(f"{count} training windows", flush=True)
    return processor, pages, load_token_mask_dataset(windows)


def document_trainer(args, processor, dataset, started: float):
    """The recipe's model and `Trainer`, stopping (with a checkpoint) once `--minutes` have passed since `started`."""
    import torch
    from transformers import TrainerCallback

    from tokenocr.modeling import TokenOCRForTokenAlignment
    from tokenocr.training import recipe_documents as recipe
    from tokenocr.training.train import build_trainer, default_training_arguments

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

    class TimeLimit(TrainerCallback):
        def on_step_end(self, arguments, state, control, **kwargs):
            if args.minutes is not None and time.time() - started > args.minutes * 60:
                control.should_save = control.should_training_stop = True

    trainer.add_callback(TimeLimit())
    return trainer


def main(argv=None):
    args = parse_args(argv)
    if args.output is not None and args.output.exists():
        raise SystemExit(f"error: --output '{args.output}' already exists")
    claim_work_folder(args.work)

    import torch

    torch.set_num_threads(2)
    processor, pages, dataset = prepare_data(args)
    started = time.time()
    trainer = document_trainer(args, processor, dataset, started)
    resume = any((args.work / "checkpoints").glob("checkpoint-*/trainer_state.json")) or None
    trainer.train(resume_from_checkpoint=resume)
    minutes = (time.time() - started) / 60
    record = args.work / "training-minutes.json"
    runs = json.loads(record.read_text())["runs"] if record.is_file() else []
    record.write_text(json.dumps({"runs": runs + [round(minutes, 2)]}) + "\n")
    print(f"trained {trainer.state.global_step} steps; {minutes:.1f} min in this run, {sum(runs) + minutes:.1f} in all",
          flush=True)
    if args.output is not None and trainer.state.global_step >= args.steps:
        finish(args, trainer, processor, pages, round(sum(runs) + minutes, 1))


def evaluate(model, processor, dataset, threshold):
    from huggingface_hub.utils import tqdm

    from tokenocr.training.evaluate import evaluate_model

    return evaluate_model(model, processor, dataset, threshold=threshold, k=3, num_queries=50,
                          progress=lambda pages: tqdm(pages, desc="Evaluating", unit="page")).to_dict()


def finish(args, trainer, processor, pages: Path, minutes: float) -> None:
    """Choose the threshold on training-document pages, measure on the held-out documents and synthetic pages
    (beside the synthetic demonstration model), and write the model folder with its card."""
    from transformers import AutoTokenizer

    from tokenocr.loading import load_model_and_processor
    from tokenocr.outputs import building_folder, move_into_place
    from tokenocr.training import recipe, recipe_documents
    from tokenocr.training.data import load_token_mask_dataset
    from tokenocr.training.evaluate import calibrate_threshold
    from tokenocr.training.train import save_trained_model, training_facts

    core = trainer.accelerator.unwrap_model(trainer.model).tokenocr.eval().float()
    validation = load_token_mask_dataset(pages)
    validation = validation.select(range(0, len(validation), max(1, len(validation) // 40))[:40])
    threshold = calibrate_threshold(core, processor, validation)
    print(f"threshold chosen on {len(validation)} training-document pages: {threshold}", flush=True)
    heldout = load_token_mask_dataset(prepare_pages(args.heldout, args.work, "heldout-words", processor.tokenizer,
                                                    lambda pdf: (150, "none")))
    old_model, old_processor = load_model_and_processor(str(args.compare), "float32")
    old_heldout = load_token_mask_dataset(prepare_pages(args.heldout, args.work, "heldout-words-old",
                                                        old_processor.tokenizer, lambda pdf: (150, "none")))
    synthetic = {}
    for name, tokenizer in (("new", processor.tokenizer), ("old", old_processor.tokenizer)):
        folder = args.work / f"synthetic-heldout-{name}"
        if not folder.is_dir():
            recipe.generate_demo_data(folder, tokenizer, "heldout", num_pages=60)
        synthetic[name] = load_token_mask_dataset(folder)
    figures = {
        "steps": trainer.state.global_step, "training_minutes": minutes, "threshold": threshold,
        "train_windows": len(trainer.train_dataset), "heldout_pages": len(heldout),
        "document model, held-out documents": evaluate(core, processor, heldout, threshold),
        "document model, synthetic held-out": evaluate(core, processor, synthetic["new"], threshold),
        "synthetic model, held-out documents": evaluate(old_model, old_processor, old_heldout, None),
        "synthetic model, synthetic held-out": evaluate(old_model, old_processor, synthetic["old"], None),
    }
    (args.work / "figures.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    facts, evaluation = recipe_documents.card_text(figures, training_facts(trainer, recipe_documents.POLICY))
    with building_folder(args.output.absolute(), "train_document_model") as building:
        save_trained_model(trainer, processor, building, threshold=threshold, evaluation=evaluation, facts=facts,
                           title=recipe_documents.TITLE, remote_code=False)
        move_into_place(building, args.output.absolute())
    print(f"wrote {args.output}")


if __name__ == "__main__":
    sys.exit(main())
