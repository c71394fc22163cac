"""`python -m tokenocr.conversion` runs `tokenocr-convert`."""

import sys

from .convert import main


sys.exit(main())
