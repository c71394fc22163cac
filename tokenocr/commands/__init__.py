"""
The work behind each `tokenocr` subcommand (`tokenocr.cli` parses the arguments and reports errors; these modules
import torch and transformers only when the work starts). Package-only, not remote code.
"""
