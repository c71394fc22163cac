"""
`tokenocr train` and `tokenocr evaluate`: fine-tuning a TokenOCR model on a token-mask dataset, and measuring one
(the library behind them is `tokenocr.training`; `tokenocr.cli` parses the arguments).
"""

import json
import os
from pathlib import Path

from ..outputs import OutputError, check_output_location


def check_train_output(args) -> Path:
    """
    The training folder: new (created by the run), or, with `--resume`, an earlier run's folder holding checkpoints.
    Never the current folder, an input or a folder around one.
    """
    inputs = [args.model, args.data, *([args.eval_data] if args.eval_data else [])]
    output = check_output_location(args.output, inputs, "--output")
    if args.resume is None:
        if output.exists():
            raise OutputError(
                f"--output '{output}' already exists; choose a new folder, or pass --resume to continue the training "
                "saved there"
            )
        return output
    if args.resume is True and latest_complete_checkpoint(output) is None:
        raise OutputError(f"--resume: --output '{output}' holds no complete checkpoint-* folder to continue from")
    if args.resume is not True and not Path(args.resume).is_dir():
        raise OutputError(f"--resume checkpoint '{args.resume}' is not a folder")
    return output


def latest_complete_checkpoint(output: Path) -> Path | None:
    """
    The newest `checkpoint-N` in `output` that was saved whole (`Trainer` writes `trainer_state.json` after the
    weights, optimizer and scheduler); one cut short by an interruption is passed over.
    """
    complete = [folder for folder in output.glob("checkpoint-*")
                if folder.name.split("-")[-1].isdigit() and (folder / "trainer_state.json").is_file()
                and any(folder.glob("model*.safetensors"))]
    return max(complete, key=lambda folder: int(folder.name.split("-")[-1]), default=None)


def run_train(args) -> Path:
    """Train as `args` says; returns the output folder, which then holds the trained `TokenOCRModel`."""
    from ..loading import load_model_and_processor
    from ..modeling.modeling_tokenocr import LOSS_COMPONENTS
    from ..training.data import load_token_mask_dataset
    from ..training.train import build_trainer, default_training_arguments, save_trained_model

    output = check_train_output(args)
    train_dataset = load_token_mask_dataset(args.data)
    eval_dataset = load_token_mask_dataset(args.eval_data) if args.eval_data else None
    model, processor = load_model_and_processor(args.model, "float32", args.trust_remote_code)
    overrides = {
        "num_train_epochs": args.epochs, "max_steps": args.max_steps, "per_device_train_batch_size": args.batch_size,
        "per_device_eval_batch_size": args.batch_size, "gradient_accumulation_steps": args.gradient_accumulation,
        "learning_rate": args.learning_rate, "weight_decay": args.weight_decay, "warmup_steps": args.warmup,
        "activation_checkpointing": args.gradient_checkpointing, "save_steps": args.save_steps,
        "logging_steps": args.logging_steps, "dataloader_num_workers": args.num_workers, "seed": args.seed,
        "use_cpu": args.cpu, "eval_strategy": "steps" if eval_dataset is not None else "no",
        "eval_steps": args.save_steps,
    }
    if args.bf16 is not None:
        overrides["bf16"] = args.bf16
    trainer = build_trainer(
        model.train(), processor, train_dataset, default_training_arguments(output, **overrides),
        eval_dataset=eval_dataset, policy=args.policy, vision_lr_scale=args.vision_lr_scale,
        unfrozen_vision_layers=args.unfrozen_vision_layers, train_embeddings=args.train_embeddings,
        max_tokens_per_image=args.max_tokens_per_image,
        max_tiles=args.max_tiles, use_thumbnail=False if args.no_thumbnails else None,
        merge_repeated_tokens=args.merge_repeated_tokens,
        loss_weights=None if args.loss_weights is None else dict(zip(LOSS_COMPONENTS, args.loss_weights)),
        seg_logit_scale=args.seg_temperature[0], seg_logit_bias=args.seg_temperature[1],
        learn_seg_temperature=args.learn_seg_temperature,
    )
    resume = str(latest_complete_checkpoint(output)) if args.resume is True else args.resume
    created = args.resume is None  # check_train_output made sure it did not exist
    try:
        trainer.train(resume_from_checkpoint=resume)
    except BaseException:
        if created and output.is_dir() and not any(output.iterdir()):
            output.rmdir()  # interrupted before anything was saved: the empty folder we made would block a rerun
        raise
    threshold = evaluation = None
    if eval_dataset is not None:  # the model's mask threshold, chosen on the evaluation pages, and their figures
        from ..training.evaluate import evaluate_model, figures_table

        core = trainer.accelerator.unwrap_model(trainer.model).tokenocr.eval()
        best = evaluate_model(core, processor, eval_dataset, num_queries=0).best_threshold
        if best == best:  # not NaN: the evaluation pages have supervised tokens
            threshold = best
            result = evaluate_model(core, processor, eval_dataset, threshold=threshold)
            evaluation = (f"On the {result.pages} pages of `--eval-data` (which also chose the threshold "
                          f"{threshold:g}, so these are not held-out figures):\n\n"
                          + figures_table({"trained": result.to_dict()}))
    save_trained_model(trainer, processor, output, threshold=threshold, evaluation=evaluation)
    return output


def run_evaluate(args):
    """Evaluate as `args` says: print the figures (and write them to `--json`); returns the `EvaluationResult`."""
    from huggingface_hub.utils import tqdm

    from ..loading import check_device, load_model_and_processor
    from ..training.data import load_token_mask_dataset
    from ..training.evaluate import evaluate_model

    json_path = None
    if args.json is not None and not args.json.strip():
        raise OutputError("--json needs a file name (got an empty one)")
    if args.json:
        if Path(args.json).exists() or Path(args.json).is_symlink():
            raise OutputError(f"--json '{args.json}' already exists; it is never replaced, choose a new file name")
        json_path = check_output_location(args.json, [args.model, args.data], "--json")
    device = check_device(args.device)
    dataset = load_token_mask_dataset(args.data)
    if args.max_pages is not None:
        dataset = dataset.select(range(min(args.max_pages, len(dataset))))
    model, processor = load_model_and_processor(args.model, args.dtype or "float32", args.trust_remote_code)
    model.to(device)
    result = evaluate_model(
        model, processor, dataset, threshold=args.threshold, k=args.k, num_queries=args.num_queries,
        max_tiles=args.max_tiles, tiles_per_batch=args.batch_size, seed=args.seed,
        progress=lambda pages: tqdm(pages, desc="Pages", unit="page"),
    )
    print(result.report())
    if json_path is not None:  # written whole or not at all
        partial = json_path.with_name(f".{json_path.name}.partial-{os.getpid()}")
        try:
            partial.write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
            os.link(partial, json_path)  # fails, replacing nothing, if the file appeared meanwhile
        finally:
            partial.unlink(missing_ok=True)
    return result

