"""
Fine-tuning and evaluating TokenOCR (package-only, not remote code; needs the `train` extra for `datasets`):

- `tokenocr.training.data`: the token-mask dataset format (`load_token_mask_dataset`, `TokenMaskDatasetWriter`).
- `tokenocr.training.collator`: `TokenMaskCollator`, batches tiled exactly as the processor tiles pages.
- `tokenocr.training.synthetic`: `SyntheticPageGenerator`, `generate_dataset`, `PageStyle`: rendered pages.
- `tokenocr.training.tokenizer`: `train_tokenizer` (a small SentencePiece BPE as a fast tokenizer).
- `tokenocr.training.train`: the freezing / learning-rate policies, `TokenOCRTrainer` on transformers' `Trainer`.
- `tokenocr.training.evaluate`: pointing accuracy, mask IoU / F1 and retrieval precision@k.
- `tokenocr.training.recipe`: the settings and seeds of the small demonstration model.

The loss itself lives in the model (`TokenOCRForTokenAlignment`), so a converted folder can be fine-tuned with
transformers alone. `tokenocr train` and `tokenocr evaluate` (`tokenocr.commands.training`) run these.
"""
