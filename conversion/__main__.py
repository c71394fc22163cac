"""`python -m tokenocr.conversion` runs `tokenocr-convert`."""

import sys

from tokenocr.cli import convert_main


sys.exit(convert_main())
