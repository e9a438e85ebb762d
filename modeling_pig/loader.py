"""Load a model and its processor for inference: the one loader the CLI, the index and the evaluation share.

Two kinds of checkpoint load:

* a PIG checkpoint (`PIGModel.save_pretrained` folder or Hub id): `PIGModel` + `PIGProcessor` as saved;
* any CLIP checkpoint (`CLIPModel.save_pretrained` folder or Hub id such as `openai/clip-vit-base-patch32`):
  the zero-shot CLIP4Clip meanP model built from it on the fly (`PIGModel.from_clip(..., video_tower="meanp",
  use_pseudo_query=False)`: mean of the normalised CLIP frame embeddings), with a processor at CLIP's image
  size. No training needed: a working text-to-video search on day one.

`loader_spec` says which, in a small dict that an index records so that `search` rebuilds the same model.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

__all__ = ["load_model_and_processor", "loader_spec", "model_source_signature", "DTYPES", "ZERO_SHOT_NUM_FRAMES"]

DTYPES = ("float32", "bfloat16", "float16")
# Frames per video of the zero-shot meanP model (CLIP4Clip's setting for MSR-VTT).
ZERO_SHOT_NUM_FRAMES = 12


def _checkpoint_model_type(model_path: str) -> str:
    from transformers import PreTrainedConfig

    config, _ = PreTrainedConfig.get_config_dict(model_path)
    return config.get("model_type", "")


def loader_spec(model_path: str, dtype: str = "float32", num_frames: int | None = None) -> dict:
    """How to load `model_path`: `{"kind": "pig", "dtype": ...}` or, for a CLIP checkpoint,
    `{"kind": "clip-meanp", "dtype": ..., "num_frames": T}` (T: `num_frames` or `ZERO_SHOT_NUM_FRAMES`).

    Raises OSError (no such folder, unknown or unreachable Hub id) or ValueError (neither PIG nor CLIP)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    model_type = _checkpoint_model_type(model_path)
    if model_type == "pig":
        return {"kind": "pig", "dtype": dtype}
    if model_type == "clip":
        return {"kind": "clip-meanp", "dtype": dtype, "num_frames": int(num_frames or ZERO_SHOT_NUM_FRAMES)}
    raise ValueError(f"{model_path}: a {model_type or 'unknown'!r} checkpoint; expected a PIG model or a CLIP "
                     "model (config.json model_type 'pig' or 'clip')")


TOKENIZER_FILES = ("tokenizer.json", "vocab.json")


def _zero_shot_processor(model_path: str, num_frames: int, image_size: int):
    """The checkpoint's own tokenizer when it ships one (CLIP's on the Hub do), CLIP's (shipped with this
    package) otherwise: a `CLIPModel.save_pretrained` folder holds weights and config only."""
    from transformers import AutoTokenizer

    from .processing_pig import PIGProcessor

    folder = _checkpoint_folder(model_path)
    has_tokenizer = folder is not None and any((folder / name).is_file() for name in TOKENIZER_FILES)
    tokenizer = AutoTokenizer.from_pretrained(str(folder)) if has_tokenizer else None
    return PIGProcessor(tokenizer=tokenizer, num_frames=num_frames, image_size=image_size)


def _checkpoint_folder(model_path: str) -> Path | None:
    """The local folder of a checkpoint: itself, or its Hub cache snapshot (None when not found)."""
    folder = Path(model_path)
    if folder.is_dir():
        return folder
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_path, local_files_only=True))
    except (ValueError, OSError):  # not a repo id, or not in the cache (and offline)
        return None


def load_model_and_processor(model_path: str, device: str | torch.device = "cpu",
                             dtype: str | torch.dtype | None = None, loader: dict | None = None):
    """The model + processor of `model_path` (a folder or Hub id), on `device`, in eval mode.

    Args:
        model_path: a PIG checkpoint, or a CLIP checkpoint (then the zero-shot meanP model, see module docstring).
        device: where the model runs.
        dtype: "float32", "bfloat16" or "float16" (or the torch dtype); default: the loader's, else float32.
        loader: a `loader_spec` (e.g. recorded by an index); by default it is read from the checkpoint.
    """
    from .modeling_pig import PIGModel
    from .processing_pig import PIGProcessor

    if isinstance(dtype, torch.dtype):
        dtype = str(dtype).removeprefix("torch.")
    loader = dict(loader or loader_spec(model_path, dtype or "float32"))
    dtype = dtype or loader.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    torch_dtype = getattr(torch, dtype)
    if loader["kind"] == "pig":
        model = PIGModel.from_pretrained(model_path, dtype=torch_dtype)
        processor = PIGProcessor.from_pretrained(model_path)
    elif loader["kind"] == "clip-meanp":
        model = PIGModel.from_clip(model_path, dtype=torch_dtype, video_tower="meanp", use_pseudo_query=False,
                                   num_frames=loader["num_frames"])
        processor = _zero_shot_processor(model_path, loader["num_frames"],
                                         model.config.clip_config.vision_config.image_size)
    else:
        raise ValueError(f"unknown model loader kind {loader['kind']!r} (known: 'pig', 'clip-meanp')")
    return model.to(device).eval(), processor


def model_source_signature(model_path: str) -> str | None:
    """A cheap signature of the files behind `model_path` (name, size, mtime of each file of the folder, or of
    the Hub cache snapshot), or None when they cannot be found. Equal signatures mean the same weights, which
    lets a loaded index skip re-hashing them (`model_fingerprint` reads every weight)."""
    folder = _checkpoint_folder(model_path)
    if folder is None:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for path in sorted(folder.iterdir()):
        if path.is_file():
            stat = os.stat(path)  # follows the Hub cache's symlinks to the blobs
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
