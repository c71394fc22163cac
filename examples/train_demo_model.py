"""Train a small TokenOCR from nothing on synthetic pages: tokenizer, pages, training, held-out evaluation.

    python examples/train_demo_model.py --work demo-build --output tokenocr-tiny-synthetic
    python examples/train_demo_model.py --work demo-small --output tiny --pages 64 --steps 20   # a quick look

Every setting and seed comes from `tokenocr.training.recipe`: a small SentencePiece tokenizer trained on the
training words, synthetic training, validation and held-out pages (other seeds; the held-out pages use held-out
words only and a font never seen in training), a small TokenOCR trained from scratch, the mask threshold chosen on
the validation pages, and the held-out figures of the trained model beside those of the same model before training
(printed, written to `--work`/figures.json and into the model card). `--work` (created by this script, and reused
when it is run again with the same folder: pages already generated and training checkpoints are kept) holds the
data and the checkpoints; the finished model folder is moved to `--output`, which must not exist.
"""

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


WORK_MARKER = ".tokenocr-demo-work"  # marks a --work folder as this script's own


def claim_work_folder(work: Path) -> None:
    """Create `work`, or accept it if an earlier run of this script created it; refuse anything else."""
    if work.exists() and not (work / WORK_MARKER).is_file():
        raise SystemExit(f"error: --work '{work}' exists and was not made by this script; choose a new folder")
    work.mkdir(parents=True, exist_ok=True)
    (work / WORK_MARKER).touch()


def prepare(work: Path, train_pages: int | None):
    """The processor and the three datasets, generated once and then reused."""
    from huggingface_hub.utils import tqdm

    from tokenocr import TokenOCRProcessor
    from tokenocr.training import recipe
    from tokenocr.training.data import load_token_mask_dataset

    if (work / "processor" / "tokenizer.json").is_file():
        processor = TokenOCRProcessor.from_pretrained(work / "processor")
    else:
        print("training the tokenizer", flush=True)
        processor = recipe.demo_processor(recipe.demo_tokenizer())
        processor.save_pretrained(work / "processor")
    datasets = {}
    for split in recipe.SPLITS:
        if not (work / split).is_dir():  # generated beside, then renamed: a folder here is complete
            partial = work / f"{split}.partial"
            shutil.rmtree(partial, ignore_errors=True)  # an interrupted generation, inside our own folder
            count = train_pages if split == "train" else None
            progress = lambda pages, split=split: tqdm(pages, desc=f"Generating {split} pages", unit="page")
            recipe.generate_demo_data(partial, processor.tokenizer, split, num_pages=count, progress=progress)
            partial.rename(work / split)
        datasets[split] = load_token_mask_dataset(work / split)
    return processor, datasets


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path, help="folder for data and checkpoints (this script's)")
    parser.add_argument("--output", required=True, type=Path, help="where the trained model folder goes (new)")
    parser.add_argument("--pages", type=int, default=None, metavar="N",
                        help="training pages to generate (default: the recipe's; only when --work has none yet)")
    parser.add_argument("--steps", type=int, default=None, metavar="N", help="training steps (default: the recipe's)")
    args = parser.parse_args(argv)
    for name in ("pages", "steps"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer")
    return args


def main(argv=None):
    args = parse_args(argv)
    output = args.output.absolute()
    if output.exists():
        raise SystemExit(f"error: --output '{output}' already exists; choose a new folder")
    claim_work_folder(args.work)

    import torch

    from tokenocr.modeling import TokenOCRForTokenAlignment
    from tokenocr.training import recipe
    from tokenocr.training.train import build_trainer

    processor, datasets = prepare(args.work, args.pages)
    torch.manual_seed(recipe.MODEL_SEED)
    model = TokenOCRForTokenAlignment(recipe.demo_config(len(processor.tokenizer)))
    untrained_state = {name: tensor.clone() for name, tensor in model.tokenocr.state_dict().items()}
    overrides = {} if args.steps is None else {"max_steps": args.steps, "save_steps": args.steps}
    trainer = build_trainer(
        model.train(), processor, datasets["train"], recipe.demo_training_arguments(args.work / "checkpoints", **overrides),
        policy=recipe.POLICY, vision_lr_scale=1.0, use_thumbnail=False, merge_repeated_tokens=True,
        loss_weights=recipe.LOSS_WEIGHTS, seg_logit_scale=recipe.SEG_TEMPERATURE[0],
        seg_logit_bias=recipe.SEG_TEMPERATURE[1],
    )
    started = time.time()
    trainer.train(resume_from_checkpoint=any((args.work / "checkpoints").glob("checkpoint-*")) or None)
    minutes = (time.time() - started) / 60
    total_minutes = record_training_minutes(args.work, minutes)
    print(f"training took {minutes:.1f} min in this run, {total_minutes:.1f} min in all "
          f"({trainer.state.global_step} steps)", flush=True)

    from tokenocr.training.evaluate import calibrate_threshold, evaluate_model
    from tokenocr.outputs import building_folder, move_into_place
    from tokenocr.training.train import save_trained_model, training_facts

    core = model.tokenocr.eval()
    threshold = calibrate_threshold(core, processor, datasets["validation"])
    print(f"threshold chosen on the validation pages: {threshold}", flush=True)
    trained = evaluate_model(core, processor, datasets["heldout"], threshold=threshold)
    print("trained model, held-out pages:\n" + trained.report(), flush=True)
    trained_state = {name: tensor.clone() for name, tensor in core.state_dict().items()}
    core.load_state_dict(untrained_state)
    untrained = evaluate_model(core, processor, datasets["heldout"], threshold=threshold)
    print("untrained model (same seed), held-out pages:\n" + untrained.report(), flush=True)
    core.load_state_dict(trained_state)

    figures = {
        "steps": trainer.state.global_step, "training_minutes": round(total_minutes, 1),
        "train_pages": len(datasets["train"]), "validation_pages": len(datasets["validation"]),
        "threshold": threshold, "trained": trained.to_dict(), "untrained": untrained.to_dict(),
    }
    (args.work / "figures.json").write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    facts, evaluation = recipe.demo_card_text(figures, training_facts(trainer, recipe.POLICY))
    with building_folder(output, "train_demo_model") as building:
        save_trained_model(trainer, processor, building, threshold=threshold, evaluation=evaluation, facts=facts,
                           title=recipe.DEMO_TITLE, remote_code=False)
        move_into_place(building, output)
    print(f"wrote {output}")


def record_training_minutes(work: Path, minutes: float) -> float:
    """Add this run's training minutes to `work`/training-minutes.json; returns the total over all runs."""
    record = work / "training-minutes.json"
    runs = json.loads(record.read_text(encoding="utf-8"))["runs"] if record.is_file() else []
    runs.append(round(minutes, 2))
    record.write_text(json.dumps({"runs": runs}) + "\n", encoding="utf-8")
    return sum(runs)


if __name__ == "__main__":
    sys.exit(main())
