"""Lazy package attributes, so that `import tokenocr` (and the command line's argument parsing) stays instant."""

import importlib


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]):
    """
    `(__getattr__, __dir__, __all__)` for a package whose public names live in submodules imported on first use.

    Args:
        package: the package's `__name__`.
        modules: submodule (relative to `package`) -> the public names it defines.
    """
    exports = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)
