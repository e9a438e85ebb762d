"""`pipeline("video-text-retrieval", model=...)`: embed videos or texts, or rank videos for a text, with a PIG model.

Registered with transformers' `PIPELINE_REGISTRY` when the package is imported::

    import modeling_pig  # registers the task
    from transformers import pipeline

    retriever = pipeline("video-text-retrieval", model="path/to/pig")
    retriever(videos=["a.mp4", "b.mp4"])                  # [{"video": "a.mp4", "embedding": [...]}, ...]
    retriever(videos=frames)                              # decoded uint8 [T, H, W, 3]: {"video": 0, ...}
    retriever(text="a man plays a guitar")                # {"text": ..., "embedding": [...]}
    retriever(text="a man plays a guitar", videos=["a.mp4", "b.mp4"], top_k=1)  # [{"video": ..., "score": ...}]

Embeddings are L2-normalised (`model.get_text_features` / `get_video_features`, then normalised), so a score is
the cosine similarity of the text and the video, as in `PIGOutput.logits_per_text / logit_scale`.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from transformers import AutoModel, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .auto_registration import is_stand_in

__all__ = ["PIGRetrievalPipeline", "TASK"]

TASK = "video-text-retrieval"


class PIGRetrievalPipeline(Pipeline):
    """Text-to-video retrieval with a PIG model and its `PIGProcessor` (loaded by `pipeline(TASK, model=...)`).

    Call with `videos=` (a path / decoded frames, or a list) to embed videos, `text=` (a caption or a list) to embed
    texts, or both to rank the videos for one caption. Keyword arguments: `top_k` (ranking: keep the best k),
    `return_tensors` (embeddings as torch tensors instead of lists).
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __call__(self, inputs=None, *, videos=None, text=None, **kwargs):
        if inputs is not None:
            raise TypeError(f"{type(self).__name__} takes videos=... and/or text=... (keywords), got a positional input")
        if videos is None and text is None:
            raise ValueError("give videos=..., text=..., or both (to rank the videos for the text)")
        if videos is not None and text is not None:
            return self.rank(text, videos, **kwargs)
        if videos is not None:
            items = [{"video": video, "index": i} for i, video in enumerate(_as_list(videos))]
            single = _is_single_video(videos)
        else:
            items = [{"text": caption, "index": i} for i, caption in enumerate(_as_list(text))]
            single = isinstance(text, str)
        outputs = super().__call__(items, **kwargs)
        return outputs[0] if single else outputs

    def rank(self, text: str, videos, top_k: int | None = None) -> list[dict]:
        """The videos sorted by cosine similarity to `text` (best first): `[{"video", "score"}]`, `top_k` of them."""
        if not isinstance(text, str):
            raise ValueError(f"ranking needs one caption (a string), got {type(text).__name__}")
        videos = _as_list(videos)
        query = super().__call__([{"text": text, "index": 0}], return_tensors=True)[0]["embedding"]  # [D]
        items = [{"video": video, "index": i} for i, video in enumerate(videos)]
        embeddings = torch.stack([out["embedding"] for out in super().__call__(items, return_tensors=True)])
        scores = (embeddings @ query).tolist()  # cosine similarities
        order = sorted(range(len(videos)), key=lambda i: -scores[i])[:top_k]
        return [{"video": _name(videos[i], i), "score": scores[i]} for i in order]

    def _sanitize_parameters(self, top_k=None, return_tensors=None, **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments: {sorted(kwargs)}")
        postprocess = {"return_tensors": bool(return_tensors)}
        return {}, {}, postprocess

    def preprocess(self, item: dict) -> dict:
        if "text" in item:
            name, inputs = item["text"], self.processor(text=item["text"], return_tensors="pt")
        else:
            name, inputs = _name(item["video"], item["index"]), self.processor(videos=item["video"], return_tensors="pt")
        return {"kind": "text" if "text" in item else "video", "item": name, **inputs}

    def _forward(self, model_inputs: dict) -> dict:
        kind, item = model_inputs.pop("kind"), model_inputs.pop("item")
        if kind == "text":
            features = self.model.get_text_features(**model_inputs)
        else:
            features = self.model.get_video_features(pixel_values=model_inputs["pixel_values"].to(self.model.dtype))
        return {"kind": kind, "item": item, "embedding": F.normalize(features.pooler_output.float(), dim=-1)[0]}

    def postprocess(self, model_outputs: dict, return_tensors: bool = False) -> dict:
        embedding = model_outputs["embedding"].cpu()
        key = "text" if model_outputs["kind"] == "text" else "video"
        return {key: model_outputs["item"], "embedding": embedding if return_tensors else embedding.tolist()}


def _is_single_video(videos) -> bool:
    return not isinstance(videos, (list, tuple))


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _name(video, index: int):
    """How an output names its video: the path as a string, or the position of decoded frames in the input."""
    return str(video) if isinstance(video, (str, os.PathLike)) else index


# `import modeling_pig` may have registered a stand-in for this class (auto_registration): the real one replaces it
# (dropped first so that transformers does not warn about overwriting a task).
if is_stand_in(PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl")):
    del PIPELINE_REGISTRY.supported_tasks[TASK]
PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=PIGRetrievalPipeline, pt_model=AutoModel, type="multimodal")
