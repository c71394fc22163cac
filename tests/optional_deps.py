"""Optional dependencies of some test modules: skipped without them, except where the run says they must be there."""

import importlib
import os

import pytest

DEMO_INSTALL = 'pip install -e ".[demo]" && pip install --no-warn-conflicts "pillow>=13"'


def require_demo_dependencies() -> None:
    """
    Import Gradio, gradio_client and pypdfium2 for a demo test module, or skip the module with the command that
    installs them. With `TOKENOCR_REQUIRE_DEMO=1` (set by CI) a missing one is an error, so the demo's tests can never
    be skipped there unnoticed.
    """
    for name in ("gradio", "gradio_client", "pypdfium2"):
        if os.environ.get("TOKENOCR_REQUIRE_DEMO") == "1":
            importlib.import_module(name)
        else:
            pytest.importorskip(name, reason=f"the demo's tests need {name}: {DEMO_INSTALL}")
