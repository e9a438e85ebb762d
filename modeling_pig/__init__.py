"""PIG: Hybrid-Tower text-to-video retrieval (ICCV 2025), Hugging Face-native.

Importing the package registers PIG with transformers, as a model library must: afterwards ``AutoConfig``,
``AutoModel`` and ``AutoProcessor`` load a saved PIG folder without ``trust_remote_code``, and
``pipeline("video-text-retrieval", model=folder)`` works. The registration does not import transformers' modelling,
processing or pipeline code (see `auto_registration`): the model classes and every other public name are resolved
lazily, when first reached, so a ``pig`` command pays only for what it uses.
"""

from importlib import import_module

__version__ = "0.1.0"

from .auto_registration import register_with_transformers

register_with_transformers()

_LAZY = {
    "PIGConfig": "configuration_pig",
    "PIGModel": "modeling_pig",
    "PIGOutput": "modeling_pig",
    "PIGPreTrainedModel": "modeling_pig",
    "PIGProcessor": "processing_pig",
    "PIGVideoProcessor": "processing_pig",
    "PIGRetrievalPipeline": "pipeline_pig",
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
    "convert_checkpoint": "convert",
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
