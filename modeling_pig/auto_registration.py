"""Register PIG with transformers' Auto classes and `pipeline()` on `import modeling_pig`, without importing PIG's
model code until it is used.

Why: a model library must register itself on import (``import modeling_pig`` and then ``AutoModel.from_pretrained``,
``AutoProcessor.from_pretrained`` and ``pipeline("video-text-retrieval", ...)`` work, no ``trust_remote_code``).
Registering the real classes means importing transformers' modelling, processing and pipeline code, which costs
about twice what ``import torch, transformers`` does; every ``pig`` command would pay it, including a cold
``pig search`` that needs none of it (the index's text encoder runs on torch and ``tokenizers`` alone). So:

* Each registration runs right after transformers imports the module that holds the mapping (a post-import hook
  on ``sys.meta_path``), or at once when it is already imported: ``AutoConfig``'s mapping (whose import alone makes
  transformers scan every model folder it ships, 0.4 to 0.8 s here), ``AutoProcessor``'s, and the pipeline
  registry in ``transformers.pipelines``. ``AutoModel`` is registered right after ``configuration_pig`` is
  imported, because its mapping is keyed by the real `PIGConfig`.
* What is registered is a stand-in (`lazy_class`) for each class whose module is not imported yet: a class with the
  real class's name, module (and ``config_class`` / ``model_type``) whose every other attribute
  (``from_pretrained``, ``from_dict``, ``_from_config``, ...) and whose calls go to the real class, imported at
  first use. Importing a real module replaces its stand-in in the mapping (each module registers its class).
* Hooks import nothing that transformers may be half way through importing (see each one).

`tests/test_auto_registration.py` checks, in fresh interpreters, that ``import modeling_pig`` leaves transformers'
modelling and pipeline code unimported and that the Auto classes and the pipeline still load a saved PIG folder.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
from importlib import import_module
from typing import Callable

__all__ = ["register_with_transformers", "lazy_class", "is_stand_in"]

_CONFIG = ("modeling_pig.configuration_pig", "PIGConfig")
_MODEL = ("modeling_pig.modeling_pig", "PIGModel")
_PROCESSOR = ("modeling_pig.processing_pig", "PIGProcessor")
_PIPELINE = ("modeling_pig.pipeline_pig", "PIGRetrievalPipeline")
PIPELINE_TASK = "video-text-retrieval"  # == pipeline_pig.TASK (tested)


class _LazyClassMeta(type):
    """Metaclass of a stand-in: attribute reads it does not have, calls and isinstance go to the real class."""

    def _pig_resolve(cls) -> type:
        real = cls.__dict__.get("_pig_real")
        if real is None:
            real = getattr(import_module(cls.__dict__["_pig_module"]), cls.__dict__["_pig_name"])
            type.__setattr__(cls, "_pig_real", real)
        return real

    def __getattr__(cls, name: str):
        if name.startswith("__") and name.endswith("__"):  # never import the model for introspection (copy, pickle)
            raise AttributeError(name)
        return getattr(cls._pig_resolve(), name)

    def __call__(cls, *args, **kwargs):
        return cls._pig_resolve()(*args, **kwargs)

    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, cls._pig_resolve())

    def __subclasscheck__(cls, sub) -> bool:
        return issubclass(sub, cls._pig_resolve())

    def __repr__(cls) -> str:
        return f"<lazy class '{cls.__dict__['_pig_module']}.{cls.__dict__['_pig_name']}'>"


def is_stand_in(obj) -> bool:
    """Whether `obj` is a `lazy_class` stand-in (what a module registering its real class replaces)."""
    return isinstance(obj, _LazyClassMeta)


def lazy_class(module: str, name: str, **attributes) -> type:
    """A stand-in for `module.name` that imports the module when first used; `attributes` are answered without it."""
    namespace = {"__module__": module, "__qualname__": name, "_pig_module": module, "_pig_name": name,
                 "_pig_real": None, **attributes}
    return _LazyClassMeta(name, (), namespace)


class _PostImportLoader(importlib.abc.Loader):
    """Runs the real loader, then the callbacks (the module is complete by then)."""

    def __init__(self, loader, callbacks: list[Callable[[], None]]):
        self._loader = loader
        self._callbacks = callbacks

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        for callback in self._callbacks:
            callback()

    def __getattr__(self, name):  # get_source, get_data, is_package, ... as the real loader answers them
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Wraps the loader of a watched module so that callbacks run once it has been executed."""

    def __init__(self):
        self.hooks: dict[str, list[Callable[[], None]]] = {}
        self._lock = threading.Lock()

    def find_spec(self, fullname, path, target=None):
        if fullname not in self.hooks:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        with self._lock:
            callbacks = self.hooks.pop(fullname, None)
        if spec.loader is None or callbacks is None:
            return spec
        spec.loader = _PostImportLoader(spec.loader, callbacks)
        return spec


_FINDER = _PostImportFinder()


def _after_import(module: str, callback: Callable[[], None]) -> None:
    """Run `callback` now if `module` is imported, else right after it is."""
    if module in sys.modules:
        callback()
        return
    _FINDER.hooks.setdefault(module, []).append(callback)
    if _FINDER not in sys.meta_path:
        sys.meta_path.insert(0, _FINDER)


def _real_or_lazy(module: str, name: str, **attributes):
    """The real class when its module is already imported (then the mapping holds the real thing), else a stand-in."""
    loaded = sys.modules.get(module)
    if loaded is not None and hasattr(loaded, name):
        return getattr(loaded, name)
    return lazy_class(module, name, **attributes)


def _register_config() -> None:
    """After transformers' configuration_auto: AutoConfig("pig") -> PIGConfig. Imports nothing: configuration_auto
    may complete while transformers' CLIP configuration, which PIGConfig needs, is still half imported."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if "pig" not in CONFIG_MAPPING:
        CONFIG_MAPPING.register("pig", _real_or_lazy(*_CONFIG, model_type="pig"), exist_ok=True)


def _register_model_classes() -> None:
    """After modeling_pig.configuration_pig (which registers the real PIGConfig with AutoConfig): AutoModel and,
    once transformers' processing_auto is imported, AutoProcessor, both keyed by the real PIGConfig."""
    from transformers import AutoModel

    from .configuration_pig import PIGConfig

    if PIGConfig not in AutoModel._model_mapping._extra_content:  # the real model may have registered itself
        AutoModel.register(PIGConfig, _real_or_lazy(*_MODEL, config_class=PIGConfig), exist_ok=True)
    _after_import("transformers.models.auto.processing_auto", _register_processor)


def _register_processor() -> None:
    """After transformers' processing_auto. PIGConfig is imported here if it is not yet: by then transformers'
    configuration modules are complete (`tests/test_package.py` checks that none of them imports processing_auto)."""
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    from .configuration_pig import PIGConfig

    if PIGConfig not in PROCESSOR_MAPPING._extra_content:  # the real processor may have registered itself
        PROCESSOR_MAPPING.register(PIGConfig, _real_or_lazy(*_PROCESSOR), exist_ok=True)


def _register_pipeline() -> None:
    """After transformers.pipelines: the "video-text-retrieval" task (its model through AutoModel)."""
    from transformers import AutoModel
    from transformers.pipelines import PIPELINE_REGISTRY

    if PIPELINE_TASK not in PIPELINE_REGISTRY.supported_tasks:
        PIPELINE_REGISTRY.register_pipeline(PIPELINE_TASK, pipeline_class=_real_or_lazy(*_PIPELINE),
                                            pt_model=AutoModel, type="multimodal")


def register_with_transformers() -> None:
    """Register PIG with AutoConfig, AutoModel, AutoProcessor and the pipeline registry (the package's __init__
    calls it once; every part checks what is registered, so a second call changes nothing). Each part runs when the
    transformers module it registers with is imported, or at once when it already is."""
    _after_import("transformers.models.auto.configuration_auto", _register_config)
    _after_import(_CONFIG[0], _register_model_classes)
    _after_import("transformers.pipelines", _register_pipeline)
