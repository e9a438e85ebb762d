"""The wording of a trained model's card: what the run did (stages, data, steps), its recipe table and its
limitations, from the run's arguments and summary. `model_cards.card` renders it.

The arguments come as a mapping of `training/args.py`'s fields (`TrainArguments.to_dict()`), so that this package
does not import the training scripts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model_cards.card import build_model_card, save_model_card
from modeling_pig.model_card import variant_name  # noqa: F401  (the library's name for a config; re-exported)


def training_datasets(args: Mapping[str, Any], summary: Mapping[str, Any]) -> list[str]:
    """The card's `datasets`: the stage-2 benchmark and, when stage 1 ran, its image-caption data."""
    names = [args["dataset"]] if "2" in summary.get("stages", {}) else []
    stage1 = args["stage1_dataset"]
    if "1" in summary.get("stages", {}) and stage1 != "imagefolder" and stage1 not in names:
        names.append(stage1)
    return names


def training_description(args: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    """One paragraph: which stages ran on which data for how many steps."""
    stages = summary.get("stages", {})
    lines = []
    if "1" in stages:
        lines.append(f"Stage 1 pre-trained the pseudo-query generator with CLIP frozen on `{args['stage1_dataset']}` "
                     f"(split `{args['stage1_split']}`, images as 1-frame videos) for {stages['1']['steps']} steps; "
                     "only the generator's weights were carried into stage 2.")
    elif args.get("generator_from"):
        lines.append(f"Stage 2 started from the stage-1 generator in `{args['generator_from']}`.")
    if "2" in stages:
        s2 = stages["2"]
        lines.append(f"Stage 2 trained every parameter on `{args['dataset']}` (split `{args['train_split']}`) for "
                     f"{s2['steps']} steps ({s2['epochs']:.2f} epochs over the videos, one random caption per "
                     f"visit) with loss = symmetric InfoNCE (summed) + alpha * generation loss.")
        if s2.get("failed_videos"):
            lines.append(f"{s2['failed_videos']} training visits were skipped because the video failed to decode.")
    return " ".join(lines)


def training_recipe(args: Mapping[str, Any], config, summary: Mapping[str, Any]) -> dict[str, Any]:
    """Hyperparameter name -> value, the card's recipe table (None values left out)."""
    stages = summary.get("stages", {})
    recipe = {
        "stage-2 learning rate": args["learning_rate"], "global batch": args["train_batch_size"],
        "stage-2 steps": stages.get("2", {}).get("steps"), "frames": config.num_frames,
        "text length": args["max_length"], "optimizer": f"AdamW ({args['adam_beta1']}, {args['adam_beta2']}), "
        f"eps {args['adam_epsilon']}, weight decay {args['weight_decay']} (not on "
        f"{', '.join(args['no_decay_keywords'])})",
        "schedule": f"{args['lr_scheduler_type']}, warm-up {args['warmup_ratio']:g} of the steps",
        "grad-norm clip": args["max_grad_norm"], "alpha (generation loss weight)": config.generation_loss_weight,
        "mixed precision": args["mixed_precision"] or "launch default", "seed": args["seed"],
    }
    if "1" in stages:
        recipe.update({"stage-1 learning rate": args["stage1_learning_rate"],
                       "stage-1 global batch": args["stage1_train_batch_size"], "stage-1 steps": stages["1"]["steps"]})
    return {k: v for k, v in recipe.items() if v is not None}


def write_training_card(folder: str | os.PathLike, model, args: Mapping[str, Any], metrics: Mapping[str, float],
                        summary: Mapping[str, Any], note: str | None = None) -> Path:
    """Write `folder/README.md`, the card of `model` trained by the run `args` / `summary`, with `metrics`
    (the evaluation on `args["eval_split"]`); `note` goes under the results table."""
    config = model.config
    variant = variant_name(config)
    dataset = args["dataset"]
    name = args.get("model_name") or (args["hub_model_id"].split("/")[-1] if args.get("hub_model_id") else
                                      f"{variant.split()[0].lower()}-{dataset}")
    limitations = []
    if not args.get("clip_model"):
        limitations.append("This is the embedded demo: a tiny, randomly initialised model trained for minutes on a "
                           "synthetic benchmark of coloured shapes. It shows that the pipeline works; it is useless "
                           "on real videos.")
    vision = config.clip_config.vision_config
    card = build_model_card(
        metrics, model_name=name, dataset_type=dataset, dataset_name=dataset, dataset_split=args["eval_split"],
        dataset_config=args.get("dataset_config"), base_model=args.get("clip_model"),
        model_info={"variant": variant, "num_frames": config.num_frames, "image_size": vision.image_size,
                    "max_length": args["max_length"], "projection_dim": config.clip_config.projection_dim,
                    "num_parameters": sum(p.numel() for p in model.parameters())},
        training=training_recipe(args, config, summary), training_description=training_description(args, summary),
        summary=f"{variant} for text-to-video retrieval, trained on {dataset}.", repo_id=args.get("hub_model_id"),
        num_queries=metrics.get("num_texts"), results_note=note, limitations=limitations,
        datasets=training_datasets(args, summary))
    return save_model_card(card, folder)
