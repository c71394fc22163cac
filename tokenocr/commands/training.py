"""
`tokenocr train` and `tokenocr evaluate`: fine-tuning a TokenOCR model on a token-mask dataset, and measuring one
(the library behind them is `tokenocr.training`; `tokenocr.cli` parses the arguments).
"""

import errno
import json
import os
import shutil
import sys
from pathlib import Path

from ..outputs import (
    TRAIN_MARKER, OutputError, building_folder, check_output_location, link_tree, move_into_place,
    remove_stale_leftovers,
)


PROGRAM = "tokenocr"
MARKER_PROGRAM = "tokenocr train"  # the "program" of the marker at the top of a --output this command made


def is_main_process() -> bool:
    """Whether this is the process that checks and writes --output (the first one under `accelerate launch` /
    `torchrun`, which number their processes with `RANK`)."""
    return os.environ.get("RANK", "0") == "0"


def read_train_marker(folder: Path) -> dict | None:
    """What the marker `tokenocr train` writes at the top of its --output says, or `None` where there is none: a
    folder without it was not made by this command, and is never written into."""
    marker = folder / TRAIN_MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("program") == MARKER_PROGRAM else None


def _step(folder: Path) -> int | None:
    number = folder.name.removeprefix("checkpoint-")
    return int(number) if folder.name.startswith("checkpoint-") and number.isdigit() else None


def is_complete_checkpoint(folder: Path) -> bool:
    """
    Whether `folder` is a checkpoint saved whole: its weights, `trainer_state.json` and, written after everything
    else (`ModelFolderCallback`), the training marker. One cut short by an interruption or a full disk is not.
    """
    return (folder.is_dir() and not folder.is_symlink() and (folder / "trainer_state.json").is_file()
            and (folder / TRAIN_MARKER).is_file() and any(folder.glob("model*.safetensors")))


def checkpoint_folders(output: Path) -> list[Path]:
    """The `checkpoint-N` folders of `output`, complete or not (links are not followed)."""
    if not output.is_dir():
        return []
    return [folder for folder in output.iterdir()
            if _step(folder) is not None and folder.is_dir() and not folder.is_symlink()]


def latest_complete_checkpoint(output: Path) -> Path | None:
    """The newest complete `checkpoint-N` in `output` ([`is_complete_checkpoint`]); those cut short are passed over."""
    complete = [folder for folder in checkpoint_folders(output) if is_complete_checkpoint(folder)]
    return max(complete, key=_step, default=None)


def checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step a checkpoint was saved at (its `trainer_state.json`)."""
    state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    return int(state.get("global_step", _step(checkpoint) or 0))


def remove_incomplete_checkpoints(output: Path) -> None:
    """Remove the `checkpoint-N` folders of this command's `output` that were cut short: they would otherwise be
    taken for checkpoints by `Trainer`'s own bookkeeping (which keeps the newest ones)."""
    for folder in checkpoint_folders(output):
        if not is_complete_checkpoint(folder):
            shutil.rmtree(folder, ignore_errors=True)
            print(f"{PROGRAM}: removed '{folder.name}', a checkpoint an earlier run did not finish", file=sys.stderr)


def _final_model_present(output: Path, marker: dict | None) -> bool:
    files = (marker or {}).get("model_files") or []
    return bool(files) and all((output / name).exists() for name in files)


def _nothing_to_do(output: Path, checkpoint: Path, planned: int) -> str | None:
    """The message for resuming a training that had finished (`checkpoint` at or past the `planned` steps) and whose
    model from that step is in `output`; `None` where there is something left to do."""
    done = checkpoint_step(checkpoint)
    marker = read_train_marker(output) if output.is_dir() else None
    if done < planned or not _final_model_present(output, marker) or (marker or {}).get("model_step") != done:
        return None
    return (f"nothing to do: the training in {output} finished at step {done} (of {planned} planned) and its model "
            "is there; pass a larger --max-steps or --epochs to train further")


def _check_resume_checkpoint(checkpoint: str, output: Path) -> Path:
    folder = Path(checkpoint).expanduser().absolute()
    if not folder.is_dir():
        raise OutputError(f"--resume checkpoint '{checkpoint}' is not a folder")
    if not is_complete_checkpoint(folder):
        raise OutputError(
            f"--resume '{checkpoint}' is not a complete checkpoint of tokenocr train (a checkpoint-N folder with its "
            f"weights, trainer_state.json and {TRAIN_MARKER}); --resume alone continues from the last complete one"
        )
    real_output, real_checkpoint = Path(os.path.realpath(output)), Path(os.path.realpath(folder))
    if real_output == real_checkpoint or real_checkpoint in real_output.parents:
        raise OutputError(f"--output '{output}' lies inside the --resume checkpoint; choose a folder outside it")
    return folder


def check_train_output(args) -> Path:
    """
    The training folder: new (created by the run), or, with `--resume`, an earlier output of this command (recognised
    by the marker only it writes, `TRAIN_MARKER`) holding checkpoints; a folder the command did not make is never
    written into. An earlier output with nothing complete in it (its first checkpoint was cut short) is started over.
    Never the current folder, an input or a folder around one.
    """
    inputs = [args.model, args.data, *([args.eval_data] if args.eval_data else [])]
    output = check_output_location(args.output, inputs, "--output")
    remove_stale_leftovers(output, PROGRAM)  # what a killed final save left beside it
    if args.resume not in (None, True):
        _check_resume_checkpoint(args.resume, output)
    if not output.exists():
        if args.resume is True:
            raise OutputError(f"--resume: --output '{output}' holds no complete checkpoint-* folder to continue from")
        return output
    marker = read_train_marker(output)
    if marker is None:
        if args.resume is None:
            raise OutputError(f"--output '{output}' already exists; choose a new folder")
        raise OutputError(
            f"--output '{output}' was not made by tokenocr train (it has no {TRAIN_MARKER}), so --resume will not "
            "write into it; choose the --output of the run to continue, or a new folder"
        )
    nothing_complete = latest_complete_checkpoint(output) is None and not _final_model_present(output, marker)
    if args.resume is None:
        others = [entry for entry in output.iterdir() if entry.name != TRAIN_MARKER and _step(entry) is None]
        if nothing_complete and not others:  # only what a run cut short before its first checkpoint left
            remove_incomplete_checkpoints(output)
            return output
        raise OutputError(
            f"--output '{output}' already exists; choose a new folder, or pass --resume to continue the training "
            "saved there"
        )
    if args.resume is True and latest_complete_checkpoint(output) is None:
        raise OutputError(
            f"--resume: --output '{output}' holds no complete checkpoint-* folder to continue from; run without "
            "--resume to start over"
        )
    return output


def create_train_output(output: Path) -> None:
    """Create `output` with the marker that makes it recognisable as this command's, both at once (a rename)."""
    with building_folder(output, PROGRAM) as building:
        (building / TRAIN_MARKER).write_text(json.dumps({"program": MARKER_PROGRAM}) + "\n", encoding="utf-8")
        move_into_place(building, output)


def clean_failed_run(output: Path, created: bool) -> None:
    """
    After a failed or interrupted run: remove the checkpoints it cut short, and, where the run created `output` and
    nothing complete was saved, `output` itself, so that a plain rerun is not blocked. Only what the command wrote
    is removed.
    """
    if read_train_marker(output) is None:
        return
    remove_incomplete_checkpoints(output)
    if created and latest_complete_checkpoint(output) is None:
        if [entry.name for entry in output.iterdir()] == [TRAIN_MARKER]:
            (output / TRAIN_MARKER).unlink()
            output.rmdir()


def write_failure(error: BaseException, folder: Path) -> OutputError | None:
    """A one-line error for a failure to write in `folder` (a full disk, as `OSError`, safetensors' or torch's
    `[enforce fail at inline_container.cc]` writer error), or `None` for any other failure."""
    text = " ".join(str(error).split())
    full = (isinstance(error, OSError) and error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))) \
        or "No space left" in text or "StorageFull" in text
    torch_writer = "inline_container" in text or "file write failed" in text
    if not (full or torch_writer):
        return None
    place = folder if folder.exists() else folder.parent
    try:
        free = f"{shutil.disk_usage(place).free / 1e6:.0f} MB free"
    except OSError:
        free = "free space unknown"
    cause = "the disk is full" if full else "writing a file failed (is the disk full?)"
    return OutputError(f"cannot write the checkpoint or model in '{folder}': {cause} ({free} there); free some space "
                       "and run again")


def finish_train_output(trainer, processor, output: Path, threshold, evaluation) -> None:
    """
    Write the trained model at the top of `output`: built in a temporary folder beside it, with the checkpoints (and
    anything else `output` holds, but an earlier final model) hard-linked in, then renamed into place, so that an
    interruption leaves `output` as it was and never a half-written model.
    """
    from ..training.train import save_trained_model

    earlier = read_train_marker(output) or {}
    with building_folder(output, PROGRAM) as building:
        save_trained_model(trainer, processor, building, threshold=threshold, evaluation=evaluation)
        written = sorted(entry.name for entry in building.iterdir() if not entry.name.startswith(".tokenocr"))
        replaced = set(written) | set(earlier.get("model_files") or []) | {TRAIN_MARKER}
        for entry in sorted(output.iterdir()):
            if entry.name not in replaced:
                link_tree(entry, building / entry.name)
        marker = {"program": MARKER_PROGRAM, "model_step": trainer.state.global_step, "model_files": written}
        (building / TRAIN_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        move_into_place(building, output)


def run_train(args) -> str:
    """Train as `args` says; returns what was done (the output folder then holds the trained `TokenOCRModel`)."""
    main = is_main_process()
    if main:
        output = check_train_output(args)
    else:  # the first process checks, creates and writes --output
        output = Path(args.output).expanduser().absolute()
    if args.resume not in (None, True):
        checkpoint = _check_resume_checkpoint(args.resume, output)
    else:
        checkpoint = latest_complete_checkpoint(output) if args.resume else None
    if checkpoint is not None and args.max_steps > 0:  # before anything loads, where the plan is known already
        nothing = _nothing_to_do(output, checkpoint, args.max_steps)
        if nothing:
            return nothing
    created = not output.exists()
    if main:  # before Trainer, which creates its output_dir: the folder and its marker appear together
        if created:
            create_train_output(output)
        else:
            remove_incomplete_checkpoints(output)
    try:
        return _train(args, output, checkpoint, main)
    except BaseException as error:
        if main:
            clean_failed_run(output, created)
        failure = write_failure(error, output)
        if failure is not None:
            raise failure from None
        raise


def _train(args, output: Path, checkpoint: Path | None, main: bool) -> str:
    """`run_train` once --output is there: load, train (or not, for a finished training), write the model."""
    from ..training.train import load_checkpoint_weights, planned_steps

    trainer, processor, eval_dataset = _build_trainer(args, output)
    # A finished training (its checkpoint at the last planned step) is never trained further: Trainer would run one
    # more step where the run ended inside an epoch, and replace the model.
    planned = planned_steps(trainer)
    done = checkpoint_step(checkpoint) if checkpoint is not None else 0
    finished = checkpoint is not None and done >= planned
    nothing = finished and _nothing_to_do(output, checkpoint, planned)
    if nothing:
        return nothing
    if finished:  # its final model was not written (the run was cut short while writing it): write it now
        load_checkpoint_weights(trainer, checkpoint)
    else:
        trainer.train(resume_from_checkpoint=None if checkpoint is None else str(checkpoint))
    threshold, evaluation = _threshold_and_figures(trainer, processor, eval_dataset)
    if main:
        finish_train_output(trainer, processor, output, threshold, evaluation)
    if finished:
        return (f"the training in {output} had finished at step {done}: wrote its model from {checkpoint.name}; "
                "nothing more was trained")
    return f"trained model in {output}"


def _build_trainer(args, output: Path):
    """`(trainer, processor, eval_dataset)`: the data and model loaded and checked, the Trainer set up from `args`."""
    from ..loading import load_model_and_processor
    from ..modeling.modeling_tokenocr import LOSS_COMPONENTS
    from ..training.data import check_token_ids, load_token_mask_dataset
    from ..training.train import build_trainer, default_training_arguments

    train_dataset = load_token_mask_dataset(args.data)
    eval_dataset = load_token_mask_dataset(args.eval_data) if args.eval_data else None
    model, processor = load_model_and_processor(args.model, "float32", args.trust_remote_code)
    check_token_ids(train_dataset, model.config.vocab_size, args.data)
    if eval_dataset is not None:
        check_token_ids(eval_dataset, model.config.vocab_size, args.eval_data)
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
    return trainer, processor, eval_dataset


def _threshold_and_figures(trainer, processor, eval_dataset) -> tuple:
    """`(threshold, evaluation text)` of the trained model on `--eval-data` (the mask threshold it chooses, then the
    figures at it); `(None, None)` without evaluation pages or without supervised tokens on them."""
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
    return threshold, evaluation


def run_evaluate(args):
    """Evaluate as `args` says: print the figures (and write them to `--json`); returns the `EvaluationResult`."""
    from huggingface_hub.utils import tqdm

    from ..loading import check_device, load_model_and_processor
    from ..training.data import check_token_ids, load_token_mask_dataset
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
    check_token_ids(dataset, model.config.vocab_size, args.data)
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

