"""The minimal model card (README.md) that `PIGModel.save_pretrained` writes into a folder that has none.

Training writes a fuller card (results, recipe: `model_cards/`) over it; a card already in the folder is never
replaced. The Hub metadata (library, pipeline tag, tags) is the same as the fuller card's. Imports only the standard
library: this file is copied next to saved checkpoints with `modeling_pig.py`.
"""

from __future__ import annotations

import os
from pathlib import Path

LIBRARY_NAME = "transformers"
# The Hub has no text-to-video *retrieval* pipeline (`text-to-video` means generation there); PIG embeds videos and
# texts into one space, which the Hub lists as feature extraction.
PIPELINE_TAG = "feature-extraction"
TAGS = ("video", "text-to-video-retrieval", "pig", "clip")

_CARD = """---
library_name: {library}
pipeline_tag: {pipeline_tag}
license: apache-2.0
language: en
tags:
{tags}
---

# {variant} text-to-video retrieval model

A {variant} model ({num_frames} frames, {image_size} px, {projection_dim}-d embeddings) of the PIG-HF package
(PIG: Hybrid-Tower text-to-video retrieval, ICCV 2025), saved by `save_pretrained`. This card records no training
or evaluation.

## Loading

With the package installed (`pip install pig-hf`), importing it registers PIG with transformers:

```python
import modeling_pig  # noqa: F401
from transformers import AutoModel, AutoProcessor, pipeline

model = AutoModel.from_pretrained("{model_id}")
processor = AutoProcessor.from_pretrained("{model_id}")
retriever = pipeline("video-text-retrieval", model="{model_id}")
retriever(text="a man plays a guitar", videos=["a.mp4", "b.mp4"])  # videos ranked for the text
```

Without the package, from the code files saved next to the weights:

```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{model_id}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{model_id}", trust_remote_code=True)
```
"""


def variant_name(config) -> str:
    """The model's name in the paper's terms, from its `PIGConfig`."""
    if config.use_pseudo_query:
        return "PIG"
    return "CLIP-ViP baseline" if config.video_tower == "vip" else "CLIP4Clip meanP baseline"


def minimal_model_card(config, model_id: str = "path/to/this/folder") -> str:
    """README.md text: Hub metadata, what the model is (from `config`), and how to load it."""
    return _CARD.format(
        library=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        tags="\n".join(f"- {tag}" for tag in TAGS),
        variant=variant_name(config),
        num_frames=config.num_frames,
        image_size=config.clip_config.vision_config.image_size,
        projection_dim=config.clip_config.projection_dim,
        model_id=model_id,
    )


def write_minimal_model_card(folder: str | os.PathLike, config, model_id: str | None = None) -> Path | None:
    """Write `folder/README.md` unless the folder already has one; the path written, or None."""
    path = Path(folder) / "README.md"
    if path.exists():
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(minimal_model_card(config, model_id or "path/to/this/folder"), encoding="utf-8")
    return path
