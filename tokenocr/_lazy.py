"""Lazy package attributes, so that `import tokenocr` (and the command line's argument parsing) stays instant."""

import importlib


def lazy_exports(package: str, exports: dict[str, str]):
    """
    `__getattr__` and `__dir__` for a package whose public names live in submodules imported on first use.

    Args:
        package: the package's `__name__`.
        exports: public name -> submodule (relative to `package`) that defines it.
    """

    def __getattr__(name: str):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__
