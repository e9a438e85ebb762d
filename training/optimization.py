"""What a training step optimises: the trainable parameters of a stage, AdamW and its schedule, the stage's loss,
and the stop on a non-finite loss or gradient norm."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from transformers import get_scheduler

from modeling_pig import PIGConfig
from training.args import TrainArguments


class NonFiniteLossError(FloatingPointError):
    """The loss (or the gradient norm) became NaN or infinite; training stopped without saving."""


def set_trainable(model: torch.nn.Module, prefixes: tuple[str, ...] | None) -> int:
    """Freeze every parameter whose name does not start with one of `prefixes` (None: train all); return #trainable."""
    count = 0
    for name, parameter in model.named_parameters():
        parameter.requires_grad = prefixes is None or name.startswith(prefixes)
        count += parameter.numel() if parameter.requires_grad else 0
    if count == 0:
        raise ValueError(f"no trainable parameter starts with {prefixes}")
    return count


def make_optimizer(model: torch.nn.Module, args: TrainArguments, learning_rate: float) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; names containing a `no_decay_keywords` entry get no weight decay."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if any(key in name for key in args.no_decay_keywords) else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": args.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=learning_rate,
                             betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)


def make_scheduler(optimizer: torch.optim.Optimizer, args: TrainArguments, max_steps: int):
    """`--lr_scheduler_type` over `max_steps` optimizer steps, warm-up `int(warmup_ratio * max_steps)`."""
    return get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=int(args.warmup_ratio * max_steps),
                         num_training_steps=max_steps)


def stage_loss(output, stage: str, config: PIGConfig) -> torch.Tensor:
    """Stage 1: alpha * generation loss (the generator alone learns). Stage 2: the model's loss (InfoNCE +
    alpha * generation loss)."""
    if stage == "1":
        if output.generation_loss is None:
            raise ValueError("stage 1 needs the generation loss; this model has no generator (use_pseudo_query=False)")
        return config.generation_loss_weight * output.generation_loss
    return output.loss


def all_finite(accelerator: Accelerator, value: torch.Tensor) -> bool:
    """Whether `value` is finite on every process (a collective: every process gets the same answer)."""
    flag = torch.tensor([0.0 if torch.isfinite(value).all() else 1.0], device=accelerator.device)
    return float(accelerator.reduce(flag, reduction="sum")) == 0.0
