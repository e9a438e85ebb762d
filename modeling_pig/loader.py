"""Load a model and its processor for inference: the one loader the CLI, the index and the evaluation share."""

from __future__ import annotations

import torch

__all__ = ["load_model_and_processor", "DTYPES"]

DTYPES = ("float32", "bfloat16", "float16")


def load_model_and_processor(model_path: str, device: str | torch.device = "cpu",
                             dtype: str | torch.dtype = "float32"):
    """`PIGModel` + `PIGProcessor` from a folder or Hub id, on `device` in `dtype`, in eval mode.

    Args:
        model_path: a `save_pretrained` folder of a PIG model, or its Hub id.
        device: where the model runs.
        dtype: "float32", "bfloat16" or "float16" (or the torch dtype).
    """
    from .modeling_pig import PIGModel
    from .processing_pig import PIGProcessor

    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        dtype = getattr(torch, dtype)
    model = PIGModel.from_pretrained(model_path, dtype=dtype).to(device).eval()
    processor = PIGProcessor.from_pretrained(model_path)
    return model, processor
