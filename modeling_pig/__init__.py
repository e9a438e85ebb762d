"""PIG: Hybrid-Tower text-to-video retrieval (ICCV 2025), Hugging Face-native.

Importing the package registers PIG with transformers, as a model library must: afterwards ``AutoConfig``,
``AutoModel`` and ``AutoProcessor`` load a saved PIG folder without ``trust_remote_code``, and
``pipeline("video-text-retrieval", model=folder)`` works. That import pulls in torch and transformers (both are
imported by transformers' config machinery anyway). The other public names (index, embedding store, metrics,
video decoding, loader) are resolved lazily, when first reached.
"""

from importlib import import_module

__version__ = "0.1.0"

from .configuration_pig import PIGConfig
from .modeling_pig import PIGModel, PIGOutput, PIGPreTrainedModel
from .pipeline_pig import PIGRetrievalPipeline
from .processing_pig import PIGProcessor, PIGVideoProcessor

_EAGER = ["PIGConfig", "PIGModel", "PIGOutput", "PIGPreTrainedModel", "PIGProcessor", "PIGRetrievalPipeline",
          "PIGVideoProcessor"]
_LAZY = {
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

__all__ = sorted(_EAGER + list(_LAZY))


def __getattr__(name):
    if name in _LAZY:
        module = import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'modeling_pig' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
