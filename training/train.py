# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
Training TokenOCR on transformers' `Trainer`: what is trained (policies), at which learning rate, and the logging
of each loss component. Multi-GPU, DeepSpeed and FSDP come from `Trainer`/accelerate (`accelerate launch ...`).

Policies (which parameters train):

- `original` (default): the upsampler and projector at the base learning rate, the last `unfrozen_vision_layers`
  vision blocks at `vision_lr_scale` (0.05) times it, and the logit scale (and the learned logit bias when
  `config.fixed_logit_bias` is `None`); the rest of the vision tower and the token-embedding table stay frozen. The
  vision tower's 0.05x learning rate is the authors' optimizer code's (which also exempts every 1-d parameter from
  weight decay; here `Trainer`'s rule applies: biases and normalisation weights); which vision blocks they trained
  is not published: training only the last one is our assumption.
- `vision`: the whole vision side (tower, upsampler, projector, scalars); the embedding table stays frozen.
- `all`: every parameter, the embedding table included (training from scratch).

In every policy the vision tower's trainable parameters get `vision_lr_scale` times the base learning rate.
"""

import json
import os
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments

from ..constants import TRAINING_DEFAULTS
from ..constants import TRAINING_POLICIES as POLICIES
from ..modeling import TokenOCRForTokenAlignment, TokenOCRModel
from ..modeling.modeling_tokenocr import LOSS_COMPONENTS
from ..outputs import TRAIN_MARKER
from .collator import DEFAULT_MAX_TOKENS_PER_IMAGE, TokenMaskCollator


LOGGED_LOSSES = tuple(f"loss_{name}" for name in LOSS_COMPONENTS)
VISION_TOWER = "vision_tower."
SEG_TEMPERATURE = ("seg_logit_scale_log", "seg_logit_bias")  # the head's own parameters when the temperature learns


def apply_training_policy(
    model: TokenOCRForTokenAlignment, policy: str = "original", unfrozen_vision_layers: int = 1,
    train_embeddings: bool = False,
):
    """
    Set `requires_grad` on `model`'s parameters according to `policy` (see the module docstring); with
    `train_embeddings` the token-embedding table trains too, whatever the policy (for a model with its own small
    tokenizer, whose table is not a language model's).

    Returns:
        `list[str]`: the names of the trainable parameters.
    """
    if policy not in POLICIES:
        raise ValueError(f"Unknown training policy {policy!r}; choose one of {', '.join(POLICIES)}.")
    core = model.tokenocr
    for parameter in model.parameters():
        parameter.requires_grad_(policy == "all")
    if policy == "vision":
        for name, parameter in core.named_parameters():
            parameter.requires_grad_(not name.startswith("embed_tokens."))
    if policy == "original":
        # The last used ViT blocks, or the last ResNet stages (the R50 variant).
        if core.config.is_internvit:
            used, blocks = core.config.num_vision_layers_used, core.vision_tower.encoder.layer
        else:
            used, blocks = len(core.vision_tower.encoder.stages), core.vision_tower.encoder.stages
        if not 0 <= unfrozen_vision_layers <= used:
            raise ValueError(f"unfrozen_vision_layers must lie between 0 and {used}, got {unfrozen_vision_layers}.")
        trained = [core.upsampler, core.projector, *blocks[used - unfrozen_vision_layers : used]]
        for module in trained:
            module.requires_grad_(True)
        core.logit_scale.requires_grad_(True)
    # The learned bias trains only when it is the one in use (no `config.fixed_logit_bias`).
    core.logit_bias.requires_grad_(core.config.fixed_logit_bias is None)
    for name, parameter in model.named_parameters(recurse=False):  # loss_seg's temperature, when it is learned
        parameter.requires_grad_(name in SEG_TEMPERATURE)
    if train_embeddings:
        core.embed_tokens.requires_grad_(True)
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


class TokenOCRTrainer(Trainer):
    r"""
    `Trainer` for [`TokenOCRForTokenAlignment`]: logs each loss component (`loss_seg`, `loss_sim`, `loss_l2`,
    `loss_sig`, unweighted, averaged over the logging interval) beside `loss` (the head's weighted sum), and gives the
    vision tower's trainable parameters `vision_lr_scale` times the learning rate. Everything else (schedulers, mixed
    precision, checkpoints, resuming, distributed training) is `Trainer`'s own.
    """

    def __init__(self, *args, vision_lr_scale: float = 0.05, **kwargs):
        super().__init__(*args, **kwargs)
        if vision_lr_scale <= 0:
            raise ValueError(f"vision_lr_scale must be positive, got {vision_lr_scale}.")
        self.vision_lr_scale = vision_lr_scale
        self._component_sums = {name: 0.0 for name in LOGGED_LOSSES}
        self._component_steps = 0

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            model = self.model if model is None else model
            decay = set(self.get_decay_parameter_names(model))
            groups = {}
            for name, parameter in model.named_parameters():
                if parameter.requires_grad:
                    groups.setdefault((name in decay, VISION_TOWER in name), []).append(parameter)
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, model)
            self.optimizer = optimizer_cls(
                [
                    {
                        "params": params,
                        "weight_decay": self.args.weight_decay if decays else 0.0,
                        "lr": self.args.learning_rate * (self.vision_lr_scale if vision else 1.0),
                    }
                    for (decays, vision), params in sorted(groups.items())
                ],
                **optimizer_kwargs,
            )
        return super().create_optimizer(model)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if model.training:
            for name in LOGGED_LOSSES:
                self._component_sums[name] += outputs[name].detach().float()
            self._component_steps += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._component_steps:
            for name in LOGGED_LOSSES:
                mean = torch.as_tensor(self._component_sums[name] / self._component_steps, device=self.args.device)
                logs[name] = round(self.accelerator.reduce(mean, reduction="mean").item(), 4)
                self._component_sums[name] = 0.0
            self._component_steps = 0
        super().log(logs, start_time)


def alignment_model(model, **loss_settings) -> TokenOCRForTokenAlignment:
    """
    Wrap a `TokenOCRModel` (sharing its weights) in the training head; a training head is used as is. Either way,
    `loss_settings` (`loss_weights`, `seg_logit_scale`, `seg_logit_bias`, `learn_seg_temperature`) configure its loss.
    """
    if isinstance(model, TokenOCRForTokenAlignment):
        head = model
    elif isinstance(model, TokenOCRModel):
        with torch.device("meta"):  # the head's own TokenOCRModel is replaced at once: never allocate it
            head = TokenOCRForTokenAlignment(model.config)
        head.tokenocr = model
    else:
        raise TypeError(f"Expected a TokenOCRModel or TokenOCRForTokenAlignment, got {type(model).__name__}.")
    head.configure_loss(**loss_settings)
    return head


def default_training_arguments(output_dir, **overrides) -> TrainingArguments:
    """
    Default settings (`constants.TRAINING_DEFAULTS`: AdamW at learning rate 5e-4, weight decay 0.05, a cosine schedule
    with warm-up; bf16 where the hardware has it: our assumptions, as the authors did not publish their base rate or
    schedule) plus what token-mask batches need (`remove_unused_columns=False`); `overrides` are
    any other `TrainingArguments`.
    """
    settings = {
        "output_dir": str(output_dir),
        **TRAINING_DEFAULTS,
        "lr_scheduler_type": "cosine",
        "optim": "adamw_torch",
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        "dataloader_pin_memory": torch.cuda.is_available(),  # pinning is for copies to a GPU
        "save_total_limit": 2,
        "remove_unused_columns": False,
        "prediction_loss_only": True,
        "report_to": "none",
    }
    settings.update(overrides)
    return TrainingArguments(**settings)


def build_trainer(
    model,
    processor,
    train_dataset,
    args: TrainingArguments,
    eval_dataset=None,
    policy: str = "original",
    vision_lr_scale: float = 0.05,
    unfrozen_vision_layers: int = 1,
    train_embeddings: bool = False,
    max_tokens_per_image: int | None = DEFAULT_MAX_TOKENS_PER_IMAGE,
    max_tiles: int | None = None,
    use_thumbnail: bool | None = None,
    merge_repeated_tokens: bool = False,
    **loss_settings,
) -> TokenOCRTrainer:
    r"""
    A [`TokenOCRTrainer`] for `model` (a `TokenOCRModel` or `TokenOCRForTokenAlignment`) on token-mask datasets,
    with the freezing `policy` applied and a [`TokenMaskCollator`] that puts masks on the model's feature grid.
    `max_tiles` and `use_thumbnail` override the processor's tiling for training (e.g. `use_thumbnail=False` skips
    the thumbnails, which inference does not use, to save compute); `merge_repeated_tokens` and
    `max_tokens_per_image` are the collator's; `loss_settings` (`loss_weights`, `seg_logit_scale`, `seg_logit_bias`,
    `learn_seg_temperature`) the head's ([`TokenOCRForTokenAlignment`]; the default is the authors' objective).
    """
    head = alignment_model(model, **loss_settings)
    processor.image_processor.check_model(head.config)
    # The special ids Trainer would align (with a notice) are the tokenizer's; set them here, quietly.
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(processor.tokenizer, name, None)
        if value is not None and getattr(head.config, name, None) != value:
            setattr(head.config, name, value)
    apply_training_policy(head, policy, unfrozen_vision_layers, train_embeddings)
    if args.remove_unused_columns:
        raise ValueError("Token-mask training needs TrainingArguments(remove_unused_columns=False).")
    collator = TokenMaskCollator(
        processor, feature_side=head.config.feature_side if head.config.is_internvit else None,
        max_tokens_per_image=max_tokens_per_image,
        max_tiles=max_tiles, use_thumbnail=use_thumbnail, merge_repeated_tokens=merge_repeated_tokens,
        vocab_size=head.config.vocab_size,
    )
    trainer = TokenOCRTrainer(
        model=head, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, data_collator=collator,
        processing_class=processor, vision_lr_scale=vision_lr_scale,
    )
    trainer.policy = policy
    trainer.add_callback(ModelFolderCallback(trainer, processor, policy))
    return trainer


def training_facts(trainer: TokenOCRTrainer, policy: str | None = None) -> list[str]:
    """What a trained model's card says about its training, from the trainer's state and arguments."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    args, state = trainer.args, trainer.state
    schedule = getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)
    weights = ", ".join(f"{name} {weight:g}" for name, weight in model.loss_weights.items())
    scale = model.seg_logit_scale_log.exp().item()
    facts = [
        f"{state.global_step} optimizer steps of {args.per_device_train_batch_size * args.gradient_accumulation_steps} "
        f"pages per device ({state.epoch or 0:.2f} epochs over {len(trainer.train_dataset)} pages)",
        f"AdamW, base learning rate {args.learning_rate:g}, {schedule} schedule, weight decay "
        f"{args.weight_decay:g}",
        f"loss weights: {weights} (`sim`, `l2`, `sig` are the authors' terms; `seg` is this project's per-location "
        f"term, with the logit {scale:.3g} * cos {model.seg_logit_bias.item():+.3g})",
    ]
    if policy is not None:
        table = "trained" if model.tokenocr.embed_tokens.weight.requires_grad else "frozen"
        facts.append(f"trained parameters: policy `{policy}` (`tokenocr.training.train.apply_training_policy`), the "
                     f"token-embedding table {table}")
    return facts


def write_model_folder(core: TokenOCRModel, processor, folder, facts: list[str], evaluation: str | None = None,
                       threshold: float | None = None, weights: bool = True, title: str | None = None,
                       remote_code: bool = True) -> None:
    """
    Make `folder` the folder a conversion writes: weights (unless `weights=False`, when they are already there),
    `config.json` with `auto_map` and `custom_pipelines`, the remote code, the processor and tokenizer files
    (`mask_threshold` set to `threshold` when given) and a model card of `facts` and `evaluation`. With
    `remote_code=False` no code and no `auto_map` (the repository's `models/` folders; `tokenocr export` adds them).
    """
    from ..conversion.convert import write_configs
    from ..conversion.model_card import render_trained_card
    from ..processing.settings_tokenocr import check_threshold

    if threshold is not None:
        processor.image_processor.mask_threshold = check_threshold(threshold)
    if weights:
        core.save_pretrained(folder)
    folder = Path(folder)
    write_configs(core.config, next(core.parameters()).dtype, processor, folder, remote_code)
    drop_dangling_auto_map(folder / "tokenizer_config.json")
    render_trained_card(core.config, processor, folder, facts, evaluation, title=title)


def drop_dangling_auto_map(file: Path) -> None:
    """
    Remove from the JSON `file` (a `tokenizer_config.json`) the `auto_map` entries whose code is not in its folder:
    an entry kept from the input model (`"AutoTokenizer": ["tokenization_x.XTokenizer", null]`, or one naming
    another repo's code, `"repo--module.Class"`) would send `AutoTokenizer` after a file the output does not hold.
    """
    if not file.is_file():
        return
    data = json.loads(file.read_text(encoding="utf-8"))
    auto_map = data.get("auto_map")
    if auto_map is None:
        return

    def present(reference) -> bool:
        if reference is None:
            return True
        if not isinstance(reference, str) or "--" in reference or "." not in reference:
            return False
        return (file.parent / f"{reference.rsplit('.', 1)[0].replace('.', '/')}.py").is_file()

    kept = {}
    if isinstance(auto_map, dict):
        for name, references in auto_map.items():
            listed = references if isinstance(references, (list, tuple)) else [references]
            if all(present(reference) for reference in listed):
                kept[name] = references
    if kept == auto_map:
        return
    if kept:
        data["auto_map"] = kept
    else:
        del data["auto_map"]
    file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


class ModelFolderCallback(TrainerCallback):
    """Makes every checkpoint a loadable model folder (configs, remote code, processor, card) beside its weights."""

    def __init__(self, trainer: TokenOCRTrainer, processor, policy: str | None = None):
        self.trainer, self.processor, self.policy = trainer, processor, policy

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if self.trainer.is_world_process_zero() and os.path.isdir(folder):
            core = self.trainer.accelerator.unwrap_model(self.trainer.model).tokenocr
            facts = training_facts(self.trainer, self.policy) + ["a training checkpoint (optimizer state included)"]
            write_model_folder(core, self.processor, folder, facts, weights=False)
            # Written last: a checkpoint without it was cut short (an interruption, a full disk) and is not resumed.
            with open(os.path.join(folder, TRAIN_MARKER), "w", encoding="utf-8") as marker:
                marker.write(json.dumps({"checkpoint": state.global_step}) + "\n")
                marker.flush()
                os.fsync(marker.fileno())


def planned_steps(trainer: TokenOCRTrainer) -> int:
    """The optimizer steps `trainer.train()` runs in all (`max_steps`, or the epochs' steps), as `Trainer` counts
    them."""
    return int(trainer.set_initial_training_values(trainer.args, trainer.get_train_dataloader())[6])


def load_checkpoint_weights(trainer: TokenOCRTrainer, checkpoint) -> None:
    """
    Put `checkpoint`'s weights and training state (step, epoch, logs) into `trainer` without training, for a run
    whose training had finished when its final model folder was not written.
    """
    from transformers import TrainerState

    model = trainer.accelerator.unwrap_model(trainer.model)
    core = model.tokenocr if isinstance(model, TokenOCRForTokenAlignment) else model
    saved = TokenOCRModel.from_pretrained(checkpoint, dtype=next(core.parameters()).dtype)
    core.load_state_dict(saved.state_dict())
    trainer.state = TrainerState.load_from_json(os.path.join(checkpoint, "trainer_state.json"))


def save_trained_model(trainer: TokenOCRTrainer, processor, output_dir, threshold: float | None = None,
                       evaluation: str | None = None, facts: list[str] | None = None, title: str | None = None,
                       remote_code: bool = True) -> None:
    """
    Save the trained model as a complete model folder ([`write_model_folder`]): it loads with `AutoModel`, and with
    `pipeline("token-similarity", model=output_dir, trust_remote_code=True)` with transformers alone.
    """
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        core = model.tokenocr if isinstance(model, TokenOCRForTokenAlignment) else model
        facts = training_facts(trainer, getattr(trainer, "policy", None)) if facts is None else facts
        write_model_folder(core, processor, output_dir, facts, evaluation, threshold, title=title,
                           remote_code=remote_code)
