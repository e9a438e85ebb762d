"""PIG: Hybrid-Tower text-to-video retrieval (ICCV 2025), Hugging Face-native.

Public names are resolved lazily so that importing one part (say, the metrics) does not pay for
the others (the model pulls in transformers and torch).

Reaching any of `PIGConfig`, `PIGModel` or `PIGProcessor` (``from modeling_pig import PIGModel``) imports all
three modules, which registers the Auto classes together: afterwards ``AutoConfig``, ``AutoModel`` and
``AutoProcessor`` load a saved PIG folder without ``trust_remote_code``.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "PIGConfig": "configuration_pig",
    "PIGModel": "modeling_pig",
    "PIGPreTrainedModel": "modeling_pig",
    "PIGOutput": "modeling_pig",
    "PIGProcessor": "processing_pig",
    "VideoDecodeError": "video_io",
    "read_video_frames": "video_io",
    "sample_frame_indices": "video_io",
    "find_videos": "video_io",
    "VIDEO_EXTENSIONS": "video_io",
    "compute_retrieval_metrics": "metrics",
    "VideoIndex": "index",
    "exact_search": "index",
    "EmbeddingStore": "embedding",
    "encode_texts": "encoding",
    "encode_videos": "encoding",
    "model_fingerprint": "embedding",
    "load_model_and_processor": "loader",
}

__all__ = sorted(_LAZY)

# Modules that register themselves with AutoConfig / AutoModel / AutoProcessor when imported.
_AUTO_MODULES = ("configuration_pig", "modeling_pig", "processing_pig")


def __getattr__(name):
    if name in _LAZY:
        if _LAZY[name] in _AUTO_MODULES:
            for module_name in _AUTO_MODULES:
                import_module(f".{module_name}", __name__)
        module = import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modeling_pig' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
