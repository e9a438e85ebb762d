"""Evaluation during training: retrieval metrics of the model being trained (every process embeds its share, all
get the same metrics), the periodic evaluation that keeps the best model in output_dir/best, and saving a model
folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, broadcast_object_list, gather_object

from modeling_pig import PIGModel, PIGProcessor
from training.args import TrainArguments
from training.checkpointing import TrainState
from training.eval_retrieval import embed_split, merge_split_embeddings, score_split
from training.sharding import restore_scalar_shapes

logger = get_logger(__name__)


def inference_model(accelerator: Accelerator, model: torch.nn.Module) -> torch.nn.Module:
    """A full model on every process (call on every process: a collective under sharding).

    DDP, DeepSpeed ZeRO-1/2, one process: the unwrapped model itself. FSDP: a copy built from the full state dict,
    which every process gathers. DeepSpeed ZeRO-3: a copy built from the state dict consolidated on the main
    process and broadcast to the others.
    """
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.distributed_type == DistributedType.FSDP:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state_dict = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    elif (accelerator.distributed_type == DistributedType.DEEPSPEED
          and accelerator.state.deepspeed_plugin.zero_stage == 3):
        state_dict = broadcast_object_list([accelerator.get_state_dict(model)])[0]
    else:
        return unwrapped
    copy = PIGModel(unwrapped.config)
    copy.load_state_dict(restore_scalar_shapes(state_dict, unwrapped))
    return copy.to(accelerator.device)


def evaluate(accelerator: Accelerator, model: torch.nn.Module, processor: PIGProcessor, rows,
             args: TrainArguments, show_progress: bool = False) -> dict:
    """Retrieval metrics of the current model on `rows`, the same on every process (call on every process).

    Every process embeds a contiguous share of the rows (videos, and the captions of its decodable videos); the
    embeddings are gathered in process order and scored on every process, so the metrics equal those of one
    process embedding everything (tests/test_train_distributed.py).
    """
    accelerator.wait_for_everyone()
    full = inference_model(accelerator, model)
    sizes = _share_sizes(len(rows), accelerator.num_processes)
    start = sum(sizes[:accelerator.process_index])
    share = rows.select(range(start, start + sizes[accelerator.process_index]))
    was_training = full.training
    full.eval()
    with torch.no_grad(), accelerator.autocast():
        embedded = embed_split(full, processor, share, batch_size=args.eval_batch_size,
                               num_workers=args.dataloader_num_workers,
                               show_progress=show_progress and accelerator.is_main_process)
    full.train(was_training)
    if accelerator.num_processes > 1:
        embedded = merge_split_embeddings(gather_object([embedded]), sizes)
    metrics = score_split(rows, embedded).metrics
    accelerator.wait_for_everyone()
    return {k: float(v) if isinstance(v, (int, float)) else v for k, v in metrics.items()}


def _share_sizes(num_rows: int, num_processes: int) -> list[int]:
    """Rows per process: consecutive shares as equal as possible, the first ones one row larger."""
    base, extra = divmod(num_rows, num_processes)
    return [base + (1 if p < extra else 0) for p in range(num_processes)]


def save_model(accelerator: Accelerator, model: torch.nn.Module, processor: PIGProcessor, folder: Path) -> None:
    """save_pretrained of the (full) model and the processor into `folder` (collective; main process writes)."""
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(folder, state_dict=restore_scalar_shapes(state_dict, unwrapped),
                                  safe_serialization=True)
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
