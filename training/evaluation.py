"""Evaluation during training: retrieval metrics of the model being trained (the same on every process), the
periodic evaluation that keeps the best model in output_dir/best, and saving a model folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, broadcast_object_list

from modeling_pig import PIGModel, PIGProcessor
from training.args import TrainArguments
from training.checkpointing import TrainState
from training.eval_retrieval import evaluate_retrieval

logger = get_logger(__name__)


def inference_model(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module | None:
    """A full model usable on the main process (None elsewhere). Call on every process.

    DDP / one process: the unwrapped model itself. FSDP and DeepSpeed ZeRO-3 shard the parameters, so a full
    copy is rebuilt on the main process from the gathered state dict (a collective on every process).
    """
    unwrapped = accelerator.unwrap_model(model)
    sharded = accelerator.distributed_type == DistributedType.FSDP or (
        accelerator.distributed_type == DistributedType.DEEPSPEED
        and accelerator.state.deepspeed_plugin.zero_stage == 3)
    if not sharded:
        return unwrapped if accelerator.is_main_process else None
    state_dict = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return None
    copy = PIGModel(unwrapped.config)
    copy.load_state_dict(state_dict)
    return copy.to(accelerator.device)


def evaluate(accelerator: Accelerator, model: torch.nn.Module, processor: PIGProcessor, rows,
             args: TrainArguments, show_progress: bool = False) -> dict:
    """Retrieval metrics of the current model on `rows` (computed on the main process, sent to every process)."""
    accelerator.wait_for_everyone()
    full = inference_model(accelerator, model)
    metrics = None
    if accelerator.is_main_process:
        was_training = full.training
        full.eval()
        with torch.no_grad(), accelerator.autocast():
            metrics = evaluate_retrieval(full, processor, rows, batch_size=args.eval_batch_size,
                                         num_workers=args.dataloader_num_workers, show_progress=show_progress)
        full.train(was_training)
        metrics = {k: float(v) if isinstance(v, (int, float)) else v for k, v in metrics.items()}
    metrics = broadcast_object_list([metrics])[0]
    accelerator.wait_for_everyone()
    return metrics


def save_model(accelerator: Accelerator, model: torch.nn.Module, processor: PIGProcessor, folder: Path) -> None:
    """save_pretrained of the (full) model and the processor into `folder` (collective; main process writes)."""
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(model).save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
        processor.save_pretrained(folder)
    accelerator.wait_for_everyone()


def evaluate_and_keep_best(accelerator: Accelerator, args: TrainArguments, model, processor, eval_rows,
                           state: TrainState) -> dict:
    """Periodic evaluation: log it, and save the model to output_dir/best when t2v R@1 improves."""
    metrics = evaluate(accelerator, model, processor, eval_rows, args)
    score = metrics["t2v_R@1"]
    improved = state.best_metric is None or score > state.best_metric
    logger.info(f"stage 2 step {state.step}: t2v R@1 {score:.2f} (best so far "
                f"{max(score, state.best_metric or score):.2f}{', new best' if improved else ''})")
    accelerator.log({f"eval/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}, step=state.step)
    state.history.append({"step": state.step, **metrics})
    if improved:
        state.best_metric, state.best_step = score, state.step
        best_dir = Path(args.output_dir) / "best"
        save_model(accelerator, model, processor, best_dir)
        if accelerator.is_main_process:
            (best_dir / "metrics.json").write_text(json.dumps({"step": state.step, **metrics}, indent=1))
    return metrics
