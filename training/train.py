# Copyright 2026 The TokenOCR for Transformers authors.
# Licensed under the MIT License.
"""
Training TokenOCR on transformers' `Trainer`: what is trained (policies), at which learning rate, and the logging
of each loss component. Multi-GPU, DeepSpeed and FSDP come from `Trainer`/accelerate (`accelerate launch ...`).

Policies (which parameters train):

- `original` (default, the released models' stage-1 recipe): the upsampler and projector at the base learning rate,
  the last `unfrozen_vision_layers` vision blocks at `vision_lr_scale` (0.05) times it, and the logit scale (and the
  learned logit bias when `config.fixed_logit_bias` is `None`); the rest of the vision tower and the token-embedding
  table stay frozen.
- `vision`: the whole vision side (tower, upsampler, projector, scalars); the embedding table stays frozen.
- `all`: every parameter, the embedding table included (training from scratch).

In every policy the vision tower's trainable parameters get `vision_lr_scale` times the base learning rate.
"""

import torch
from transformers import Trainer, TrainingArguments

from ..constants import TRAINING_POLICIES as POLICIES
from ..modeling import TokenOCRConfig, TokenOCRForTokenAlignment, TokenOCRModel
from .collator import DEFAULT_MAX_TOKENS_PER_IMAGE, TokenMaskCollator


LOSS_COMPONENTS = ("loss_seg", "loss_sim", "loss_sig")
VISION_TOWER = "vision_tower."


def apply_training_policy(model: TokenOCRForTokenAlignment, policy: str = "original", unfrozen_vision_layers: int = 1):
    """
    Set `requires_grad` on `model`'s parameters according to `policy` (see the module docstring).

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
        used = core.config.num_vision_layers_used
        if not 0 <= unfrozen_vision_layers <= used:
            raise ValueError(f"unfrozen_vision_layers must lie between 0 and {used}, got {unfrozen_vision_layers}.")
        trained = [core.upsampler, core.projector, *core.vision_tower.encoder.layer[used - unfrozen_vision_layers : used]]
        for module in trained:
            module.requires_grad_(True)
        core.logit_scale.requires_grad_(True)
    # The learned bias trains only when it is the one in use (no `config.fixed_logit_bias`).
    core.logit_bias.requires_grad_(core.config.fixed_logit_bias is None)
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


class TokenOCRTrainer(Trainer):
    r"""
    `Trainer` for [`TokenOCRForTokenAlignment`]: logs `loss_seg`, `loss_sim` and `loss_sig` (averaged over the
    logging interval) beside `loss`, and gives the vision tower's trainable parameters `vision_lr_scale` times the
    learning rate. Everything else (schedulers, mixed precision, checkpoints, resuming, distributed training) is
    `Trainer`'s own.

    `loss_weights=(w_seg, w_sim, w_sig)` optimises `w_seg * loss_seg + w_sim * loss_sim + w_sig * loss_sig` in place
    of the original sum (`None`, the default, is the original objective); the logged components stay unweighted.
    """

    def __init__(self, *args, vision_lr_scale: float = 0.05, loss_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        if vision_lr_scale <= 0:
            raise ValueError(f"vision_lr_scale must be positive, got {vision_lr_scale}.")
        if loss_weights is not None and (len(loss_weights) != 3 or min(loss_weights) < 0):
            raise ValueError(f"loss_weights must be three non-negative numbers (seg, sim, sig), got {loss_weights}.")
        self.vision_lr_scale = vision_lr_scale
        self.loss_weights = None if loss_weights is None else tuple(float(w) for w in loss_weights)
        self._component_sums = {name: 0.0 for name in LOSS_COMPONENTS}
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
        if self.loss_weights is not None:
            loss = sum(weight * outputs[name] for weight, name in zip(self.loss_weights, LOSS_COMPONENTS))
        if model.training:
            for name in LOSS_COMPONENTS:
                self._component_sums[name] += outputs[name].detach().float()
            self._component_steps += 1
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs and self._component_steps:
            for name in LOSS_COMPONENTS:
                mean = torch.as_tensor(self._component_sums[name] / self._component_steps, device=self.args.device)
                logs[name] = round(self.accelerator.reduce(mean, reduction="mean").item(), 4)
                self._component_sums[name] = 0.0
            self._component_steps = 0
        super().log(logs, start_time)


def alignment_model(model) -> TokenOCRForTokenAlignment:
    """Wrap a `TokenOCRModel` (sharing its weights) in the training head; a training head is returned as is."""
    if isinstance(model, TokenOCRForTokenAlignment):
        return model
    if not isinstance(model, TokenOCRModel):
        raise TypeError(f"Expected a TokenOCRModel or TokenOCRForTokenAlignment, got {type(model).__name__}.")
    with torch.device("meta"):
        head = TokenOCRForTokenAlignment(model.config)
    head.tokenocr = model
    return head


def default_training_arguments(output_dir, **overrides) -> TrainingArguments:
    """
    The original recipe's settings (AdamW, learning rate 5e-4, cosine schedule with warm-up, weight decay 0.05, bf16
    where the hardware has it) plus what token-mask batches need (`remove_unused_columns=False`); `overrides` are
    any other `TrainingArguments`.
    """
    settings = {
        "output_dir": str(output_dir),
        "learning_rate": 5e-4,
        "weight_decay": 0.05,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.03,
        "optim": "adamw_torch",
        "bf16": torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        "per_device_train_batch_size": 8,
        "logging_steps": 10,
        "save_steps": 500,
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
    max_tokens_per_image: int | None = DEFAULT_MAX_TOKENS_PER_IMAGE,
    max_tiles: int | None = None,
    use_thumbnail: bool | None = None,
    merge_repeated_tokens: bool = False,
    loss_weights=None,
) -> TokenOCRTrainer:
    r"""
    A [`TokenOCRTrainer`] for `model` (a `TokenOCRModel` or `TokenOCRForTokenAlignment`) on token-mask datasets,
    with the freezing `policy` applied and a [`TokenMaskCollator`] that puts masks on the model's feature grid.
    `max_tiles` and `use_thumbnail` override the processor's tiling for training (e.g. `use_thumbnail=False` skips
    the thumbnails, which inference does not use, to save compute); `merge_repeated_tokens` and
    `max_tokens_per_image` are the collator's; `loss_weights` the trainer's.
    """
    head = alignment_model(model)
    apply_training_policy(head, policy, unfrozen_vision_layers)
    if args.remove_unused_columns:
        raise ValueError("Token-mask training needs TrainingArguments(remove_unused_columns=False).")
    collator = TokenMaskCollator(
        processor, feature_side=head.config.feature_side, max_tokens_per_image=max_tokens_per_image,
        max_tiles=max_tiles, use_thumbnail=use_thumbnail, merge_repeated_tokens=merge_repeated_tokens,
        vocab_size=head.config.vocab_size,
    )
    return TokenOCRTrainer(
        model=head, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset, data_collator=collator,
        processing_class=processor, vision_lr_scale=vision_lr_scale, loss_weights=loss_weights,
    )


def save_trained_model(trainer: TokenOCRTrainer, processor, output_dir) -> None:
    """Save the trained weights as a plain `TokenOCRModel` folder (loads with `AutoModel`), with the processor."""
    if trainer.is_world_process_zero():
        model = trainer.accelerator.unwrap_model(trainer.model)
        core = model.tokenocr if isinstance(model, TokenOCRForTokenAlignment) else model
        core.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)


def small_config(vocab_size: int, **overrides) -> TokenOCRConfig:
    """A small TokenOCR configuration (widths for CPU training from scratch); `overrides` replace any field."""
    settings = {
        "vision_config": {
            "hidden_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 512,
            "image_size": 112, "patch_size": 14, "norm_type": "layer_norm", "use_qk_norm": False,
            "attention_bias": True, "layer_scale_init_value": 0.1, "layer_norm_eps": 1e-6,
        },
        "hidden_size": 64,
        "vocab_size": vocab_size,
        "upsampler_hidden_size": 64,
        "fixed_logit_bias": -8.9375,
    }
    settings.update(overrides)
    return TokenOCRConfig(**settings)
