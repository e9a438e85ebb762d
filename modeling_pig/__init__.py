"""PIG: Hybrid-Tower text-to-video retrieval (ICCV 2025), Hugging Face-native.

Public names are resolved lazily so that importing one part (say, the metrics) does not pay for
the others (the model pulls in transformers and torch).
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
    "compute_retrieval_metrics": "metrics",
    "VideoIndex": "retrieval",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        module = import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modeling_pig' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
