"""
`tokenocr.hub_cards`: model-card templates (`string.Template` Markdown) that `tokenocr-convert` renders into a
converted folder's `README.md`: one per released variant, a generic one, and `_usage.md`, the usage section they
share (`_usage_r50.md` for the R50 variant, which takes whole images). Package data only.
"""
