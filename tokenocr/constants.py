"""
Facts the command line, the loader and the converter share. No heavy imports here: the command line reads them while
parsing arguments, before torch or transformers are loaded. (Defaults that the hub's remote code also needs, such
as the mask threshold, live in `processing/settings_tokenocr.py`.)
"""

# Weight dtypes a TokenOCR model can be loaded or converted to (names of torch dtypes).
DTYPE_NAMES = ("float32", "bfloat16", "float16")

# `model_type` of an original TokenOCR checkpoint's config.json (InternVL-style).
ORIGINAL_MODEL_TYPE = "internvl_chat"

# The weight files of the original R50 release (no config.json): one file, or the demo's two parts.
ORIGINAL_R50_SINGLE_FILE = "checkpoint.pth"
ORIGINAL_R50_PART_FILES = ("checkpoint_part1.pth", "checkpoint_part2.pth")
ORIGINAL_R50_FILES = (ORIGINAL_R50_SINGLE_FILE, *ORIGINAL_R50_PART_FILES)

# A hub repo id: `owner/name`.
HUB_ID_PATTERN = r"[A-Za-z0-9][\w.-]*/[\w.-]+"

# The SigLIP bias the released models were trained with: the authors' training code replaced the learnable `b` by this
# constant, so a checkpoint's stored `b` (-2.71) is its untrained initial value. Original checkpoints are loaded and
# converted with `TokenOCRConfig.fixed_logit_bias` set to it.
ORIGINAL_FIXED_LOGIT_BIAS = -8.9375

# What `tokenocr train` may train (see tokenocr.training.train.apply_training_policy).
TRAINING_POLICIES = ("original", "vision", "all")

# Training defaults of ours (the authors did not publish their base rate or schedule): `tokenocr train`'s options and
# `tokenocr.training.train.default_training_arguments` both start from these, as `TrainingArguments` names them.
TRAINING_DEFAULTS = {
    "learning_rate": 5e-4,
    "weight_decay": 0.05,
    "warmup_steps": 0.03,  # a fraction of training when below 1
    "per_device_train_batch_size": 8,
    "logging_steps": 10,
    "save_steps": 500,
}
