"""Fill `model_cards/template.md` from a training run: description, recipe, results table, `model-index`.

The card's YAML header carries the results as `model-index` evaluation results (huggingface_hub
`ModelCardData` + `EvalResult`), so that the Hub shows them; the body repeats them as a table.
Rendering is offline (`ModelCard.from_template`); `card.validate()` would need the network and is not called.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

# The Hub metadata (library, pipeline tag, tags) is the library's: the minimal card of `save_pretrained` has it too.
from modeling_pig.model_card import LIBRARY_NAME, PIPELINE_TAG, TAGS

TEMPLATE_PATH = Path(__file__).with_name("template.md")
TASK_TYPE = "text-to-video-retrieval"
TASK_NAME = "Text-to-Video Retrieval"
# (metric key suffix, column title, higher is better)
METRIC_COLUMNS = (("R@1", "R@1", True), ("R@5", "R@5", True), ("R@10", "R@10", True),
                  ("MdR", "MdR", False), ("MnR", "MnR", False))
DIRECTIONS = (("t2v", "text → video"), ("v2t", "video → text"))
DEFAULT_LIMITATIONS = (
    "Inherits the biases of CLIP and of its training captions (web alt-text, English only).",
    "The video embedding sees the frames only (no audio, no speech).",
    "Following the paper's protocol, checkpoint selection (best/) is done on the evaluation split; the "
    "final-step result is reported as well.",
)


def results_table(metrics: Mapping[str, float]) -> str:
    """A markdown table (rows t2v / v2t; columns R@1, R@5, R@10, MdR, MnR) from `compute_retrieval_metrics` keys.

    Directions absent from `metrics` are left out; a missing column of a present direction raises KeyError.
    """
    header = "| direction | " + " | ".join(title for _, title, _ in METRIC_COLUMNS) + " |"
    lines = [header, "| --- |" + " ---: |" * len(METRIC_COLUMNS)]
    for prefix, label in DIRECTIONS:
        if f"{prefix}_R@1" not in metrics:
            continue
        cells = []
        for suffix, _, _ in METRIC_COLUMNS:
            key = f"{prefix}_{suffix}"
            if key not in metrics:
                raise KeyError(f"metrics lack {key!r} (have {sorted(metrics)})")
            cells.append(f"{float(metrics[key]):.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if len(lines) == 2:
        raise KeyError(f"metrics hold neither t2v_R@1 nor v2t_R@1 (have {sorted(metrics)})")
    return "\n".join(lines)


def eval_results(metrics: Mapping[str, float], dataset_type: str, dataset_name: str,
                 dataset_split: str | None = None, dataset_config: str | None = None) -> list[EvalResult]:
    """One `EvalResult` per direction and metric present in `metrics` (for the card's `model-index`)."""
    results = []
    for prefix, label in DIRECTIONS:
        for suffix, _, _ in METRIC_COLUMNS:
            key = f"{prefix}_{suffix}"
            if key in metrics:
                results.append(EvalResult(
                    task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=dataset_type,
                    dataset_name=dataset_name, dataset_split=dataset_split, dataset_config=dataset_config,
                    metric_type=key.lower(), metric_name=f"{label} {suffix}", metric_value=round(float(metrics[key]), 2)))
    return results


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def build_model_card(
    metrics: Mapping[str, float],
    *,
    model_name: str,
    dataset_type: str,
    dataset_name: str,
    dataset_split: str,
    model_info: Mapping[str, Any],
    training: Mapping[str, Any],
    training_description: str,
    summary: str,
    repo_id: str | None = None,
    dataset_config: str | None = None,
    base_model: str | None = None,
    num_queries: int | None = None,
    results_note: str | None = None,
    limitations: Sequence[str] = (),
    tags: Sequence[str] = (),
    datasets: Sequence[str] = (),
) -> ModelCard:
    """Render the model card of one trained model.

    metrics: the evaluation dict (`t2v_R@1`, ..., `v2t_MnR`). model_info: variant, num_frames, image_size,
    max_length, projection_dim, num_parameters. training: hyperparameter name -> value, shown as a table.
    repo_id: the Hub id used in the usage snippet (default: "path/to/this/folder").
    limitations: extra items, listed before the default ones. datasets: the training data (Hub ids or
    benchmark names), the card's `datasets` field.
    """
    required = ("variant", "num_frames", "image_size", "max_length", "projection_dim", "num_parameters")
    missing = [k for k in required if k not in model_info]
    if missing:
        raise KeyError(f"model_info lacks {missing}")
    card_data = ModelCardData(
        model_name=model_name,
        base_model=base_model,
        library_name=LIBRARY_NAME,
        pipeline_tag=PIPELINE_TAG,
        datasets=list(datasets) or None,
        license="apache-2.0",
        language="en",
        tags=[*TAGS, *tags],
        eval_results=eval_results(metrics, dataset_type, dataset_name, dataset_split, dataset_config) or None,
    )
    queries = f"{num_queries} text queries" if num_queries is not None else "all captions are queries"
    return ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATE_PATH),
        model_name=model_name,
        summary=summary,
        variant=model_info["variant"],
        base_model_text=base_model or "random initialisation",
        num_frames=model_info["num_frames"],
        image_size=model_info["image_size"],
        max_length=model_info["max_length"],
        projection_dim=model_info["projection_dim"],
        num_parameters=f"{int(model_info['num_parameters']):,}",
        repo_id=repo_id or "path/to/this/folder",
        training_description=training_description,
        training_rows=[(k, _format_value(v)) for k, v in training.items()],
        dataset_name=dataset_name,
        dataset_split=dataset_split,
        num_queries_text=queries,
        results_table=results_table(metrics),
        results_note=results_note,
        limitations=[*limitations, *DEFAULT_LIMITATIONS],
    )


def save_model_card(card: ModelCard, folder: str | os.PathLike) -> Path:
    """Write `card` as `folder/README.md` (the Hub's model card file) and return the path."""
    path = Path(folder) / "README.md"
    card.save(path)
    return path
