"""The model and processor a training run starts from: `from_clip` for real runs, the tiny demo model otherwise,
and the stage-1 generator carried into stage 2."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file

from modeling_pig import PIGConfig, PIGModel, PIGProcessor
from training.args import TrainArguments

# The tiny random model of the demo: real CLIP text shapes where the tokenizer needs them (vocabulary 49,408,
# bos 49406, eos/pad 49407, 77 positions), everything else small enough for two CPU cores.
DEMO_CLIP_CONFIG = {
    "text_config": {"vocab_size": 49408, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                    "num_attention_heads": 4, "max_position_embeddings": 77, "bos_token_id": 49406,
                    "eos_token_id": 49407, "pad_token_id": 49407},
    "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                      "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
    "projection_dim": 64,
}
# CLIP's own from-scratch temperature, ln(1/0.07): the paper's 4.60 (a scale of 100) suits fine-tuning a trained
# CLIP; a random model starting at 100 collapses to near-constant embeddings within the demo's budget (measured:
# chance-level retrieval after 24 and after 80 steps, against R@10 ~ 85% at 2.66).
DEMO_MODEL_CONFIG = {"clip_config": DEMO_CLIP_CONFIG, "its_top_k": 4, "logit_scale_init_value": 2.6592}


def model_config_kwargs(args: TrainArguments) -> dict[str, Any]:
    """PIGConfig keyword arguments from the flags (model_config JSON first, explicit flags on top)."""
    kwargs = dict(args.model_config_dict)
    kwargs.update(num_frames=args.num_frames, video_tower=args.video_tower, use_pseudo_query=args.use_pseudo_query,
                  generation_loss_weight=args.generation_loss_weight)
    if args.its_top_k is not None:
        kwargs["its_top_k"] = args.its_top_k
    return kwargs


def build_model(args: TrainArguments) -> PIGModel:
    """A fresh PIG: `from_clip(args.clip_model)` for real runs, else the tiny random demo config.

    The seed is set first, so that stage 1 and stage 2 of a random-init run start from the same CLIP weights.
    """
    set_seed(args.seed)
    kwargs = model_config_kwargs(args)
    if args.clip_model:
        model = PIGModel.from_clip(args.clip_model, **kwargs)
    else:
        kwargs = {**DEMO_MODEL_CONFIG, **kwargs}
        model = PIGModel(PIGConfig(**kwargs))
    if args.disable_dropout:
        disable_dropout(model)
    return model


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability in `model` to 0 (nn.Dropout modules and CLIP's functional attention dropout)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        elif isinstance(getattr(module, "dropout", None), float):
            module.dropout = 0.0
    if hasattr(model.config, "interaction_dropout"):
        model.config.interaction_dropout = 0.0


def build_processor(args: TrainArguments, config: PIGConfig, num_frames: int | None = None) -> PIGProcessor:
    """The processor matched to the model: frames, frame size from the vision config, text length from the flags."""
    return PIGProcessor(num_frames=num_frames or config.num_frames,
                        image_size=config.clip_config.vision_config.image_size, max_length=args.max_length)


def load_generator_weights(model: PIGModel, folder: str | os.PathLike) -> int:
    """Copy the `generator.*` weights of a stage-1 model folder into `model`; return how many tensors were loaded.

    Raises FileNotFoundError (no model.safetensors) or ValueError (the folder lacks some of the model's generator
    tensors, or their shapes differ).
    """
    path = Path(folder) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"--generator_from {folder}: no model.safetensors (expected a stage-1 model folder)")
    saved = {k: v for k, v in load_file(str(path)).items() if k.startswith("generator.")}
    expected = {k: v for k, v in model.state_dict().items() if k.startswith("generator.")}
    if not expected:
        raise ValueError("this model has no generator (use_pseudo_query=False): --generator_from does not apply")
    missing = sorted(set(expected) - set(saved))
    if missing:
        raise ValueError(f"{path}: lacks {len(missing)} generator tensor(s), e.g. {missing[:5]}")
    wrong = [k for k in expected if tuple(saved[k].shape) != tuple(expected[k].shape)]
    if wrong:
        raise ValueError(f"{path}: generator tensor shapes differ from this model's, e.g. {wrong[0]}: "
                         f"{tuple(saved[wrong[0]].shape)} vs {tuple(expected[wrong[0]].shape)}")
    model.load_state_dict({k: saved[k] for k in expected}, strict=False)
    return len(expected)
