"""
Registration of TokenOCR with transformers' Auto classes and pipeline registry.

`import tokenocr` registers `model_type: tokenocr` with `AutoConfig`, `AutoModel`, `AutoImageProcessor`,
`AutoProcessor` and the `token-similarity` task. It must also stay instant (the command line answers `--help` and
argument errors before anything heavy is loaded), so it cannot import transformers (and torch) itself. Instead:

- when transformers is already imported, `import tokenocr` registers at once;
- otherwise a small import watcher registers as soon as transformers has been imported: right after the import of
  `transformers` completes, or, when that import was started by one of TokenOCR's own modules, right after the
  outermost of those modules has finished importing (registering earlier would import a half-initialised module).
"""

import importlib.abc
import sys


_registered = False
_tokenocr_imports_running = 0


def register() -> None:
    """Register TokenOCR's classes and pipeline task with transformers now. Idempotent."""
    global _registered
    if _registered:
        return
    _registered = True
    try:
        from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor
        from transformers.pipelines import PIPELINE_REGISTRY

        from .modeling import TokenOCRConfig, TokenOCRModel
        from .processing import TokenOCRImageProcessor, TokenOCRProcessor, TokenSimilarityPipeline

        AutoConfig.register(TokenOCRConfig.model_type, TokenOCRConfig, exist_ok=True)
        AutoModel.register(TokenOCRConfig, TokenOCRModel, exist_ok=True)
        AutoImageProcessor.register(TokenOCRConfig, image_processor_classes={"pil": TokenOCRImageProcessor}, exist_ok=True)
        AutoProcessor.register(TokenOCRConfig, TokenOCRProcessor, exist_ok=True)
        if "token-similarity" not in PIPELINE_REGISTRY.get_supported_tasks():
            PIPELINE_REGISTRY.register_pipeline(
                "token-similarity", pipeline_class=TokenSimilarityPipeline, pt_model=AutoModel, type="multimodal"
            )
    except BaseException:
        _registered = False
        raise
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _ImportWatcher)]


def _register_when_ready() -> None:
    if not _registered and not _tokenocr_imports_running and "transformers" in sys.modules:
        register()


class _NotifyingLoader(importlib.abc.Loader):
    """
    Runs a module with the loader that found it, then calls `_register_when_ready`. A wrapper around the other
    finder's loader (which stays as it was); everything else a loader offers is passed through to it.
    """

    def __init__(self, loader, is_tokenocr: bool):
        self._loader = loader
        self._is_tokenocr = is_tokenocr

    def __getattr__(self, name):  # only for what this class does not define itself
        if name.startswith("__") or name in ("_loader", "_is_tokenocr"):
            raise AttributeError(name)
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        global _tokenocr_imports_running
        module.__loader__ = module.__spec__.loader = self._loader  # as anyone who asks sees it: the real one
        _tokenocr_imports_running += self._is_tokenocr
        try:
            self._loader.exec_module(module)
        finally:
            _tokenocr_imports_running -= self._is_tokenocr
        _register_when_ready()


class _ImportWatcher(importlib.abc.MetaPathFinder):
    """Finds nothing itself: asks the other finders, and watches the imports of transformers and of TokenOCR."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "transformers" and not fullname.startswith("tokenocr."):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _NotifyingLoader(spec.loader, fullname != "transformers")
                return spec
        return None


def register_now_or_when_transformers_is_imported() -> None:
    if "transformers" in sys.modules:
        register()
    elif not any(isinstance(finder, _ImportWatcher) for finder in sys.meta_path):
        sys.meta_path.insert(0, _ImportWatcher())
