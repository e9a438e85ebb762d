"""Train PIG with accelerate: stage 1 (generator pre-training, CLIP frozen) and stage 2 (everything, target data).

    accelerate launch training/train.py                                   # the embedded demo (CPU, minutes)
    accelerate launch training/train.py --config training/configs/msrvtt_9k_pig_b32.yaml --data_dir ...
    accelerate launch --multi_gpu --num_processes 4 training/train.py --config ...

With no argument: the synthetic benchmark is generated (once) under outputs/.cache/synthetic, a tiny random PIG
with the real CLIP tokenizer is trained (stage 1 on the benchmark's still images, stage 2 on its videos),
evaluated on its test split, and written to outputs/ with its processor, model card and metrics.
docs/training.md is the user guide; every flag is in training/args.py.

The script has the shape of accelerate's complete examples: arguments, data, model, `accelerator.prepare`, the
loop, evaluation, saving. The parts live next to it: `data` (datasets, sampler, collator, benchmark splits),
`model` (the model a run starts from), `optimization` (trainable parameters, AdamW, schedule, loss),
`checkpointing` (step_N folders, pruning, resuming), `evaluation` (metrics during training, best model) and
`eval_retrieval` (the benchmark evaluation, also a command of its own); the model card's wording and the Hub
upload are in `model_cards/`.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, ProjectConfiguration
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from model_cards.card import results_table
from model_cards.hub import MODEL_FOLDER_IGNORE_PATTERNS, push_folder
from model_cards.training_card import variant_name, write_training_card
from modeling_pig import PIGProcessor
from training.args import TrainArguments, parse_args
from training.checkpointing import (
    STAGE_SUMMARY,
    TrainState,
    clear_stale_checkpoints,
    list_checkpoints,
    read_state,
    resolve_resume,
    save_checkpoint,
    stage_completed,
)
from training.data import (
    EpochSampler,
    TrainCollator,
    VideoCaptionDataset,
    batch_sizes_across_processes,
    run_split,
    stage1_dataset,
    truncate_batch,
)
from training.evaluation import evaluate, evaluate_and_keep_best, save_model
from training.grad_cache import GradCache
from training.sharding import OPTIMIZER_DIRECTORY, load_sharded_optimizer, vectorize_scalar_parameters
from training.model import build_model, build_processor, load_generator_weights
from training.optimization import (
    NonFiniteLossError,
    all_finite,
    make_optimizer,
    make_scheduler,
    set_trainable,
    stage_loss,
)

logger = get_logger(__name__)


@dataclass
class StagePlan:
    """What differs between the two stages."""

    stage: str                       # "1" or "2"
    directory: Path                  # model, checkpoints/, train_log.jsonl of this stage
    learning_rate: float
    global_batch: int
    num_epochs: float
    max_steps: int | None
    trainable_prefixes: tuple[str, ...] | None   # None: every parameter


def stage_plans(args: TrainArguments) -> list[StagePlan]:
    out = Path(args.output_dir)
    stage1 = StagePlan("1", out / "stage1" if args.stage == "both" else out, args.stage1_learning_rate,
                       args.stage1_train_batch_size, args.stage1_num_train_epochs, args.stage1_max_train_steps,
                       ("generator.",))
    stage2 = StagePlan("2", out, args.learning_rate, args.train_batch_size, args.num_train_epochs,
                       args.max_train_steps, None)
    return {"1": [stage1], "2": [stage2], "both": [stage1, stage2]}[args.stage]


def make_accelerator(args: TrainArguments) -> Accelerator:
    """The run's Accelerator, with its trackers (`--report_to`) started and the logging set up."""
    # `torchrun --nproc_per_node N` on a machine without GPUs: accelerate only forms a CPU process group (gloo)
    # when told to use the CPU; otherwise each process would train alone on duplicated data.
    cpu_only_launch = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    out = Path(args.output_dir)
    accelerator = Accelerator(cpu=cpu_only_launch, mixed_precision=args.mixed_precision,
                              step_scheduler_with_optimizer=False, log_with=args.trackers,
                              project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("training").setLevel(logging.INFO)
    for noisy in ("httpx", "huggingface_hub", "datasets", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if accelerator.device.type == "cpu" and args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    out.mkdir(parents=True, exist_ok=True)
    if args.trackers:
        config = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in args.to_dict().items()}
        accelerator.init_trackers(args.tracker_project_name, config=config)
    logger.info(f"PIG training: stage {args.stage}, {accelerator.num_processes} process(es) on "
                f"{accelerator.device}, mixed precision {accelerator.mixed_precision}, output {out.resolve()}")
    return accelerator


# --------------------------------------------------------------------------------------------------- the loop


def train_stage(accelerator: Accelerator, args: TrainArguments, plan: StagePlan, model, processor: PIGProcessor,
                train_data, eval_rows=None) -> dict:
    """Run one stage to its last step; returns the stage summary. Raises NonFiniteLossError on NaN/inf."""
    started = time.time()
    stage = plan.stage
    plan.directory.mkdir(parents=True, exist_ok=True)
    num_processes = accelerator.num_processes
    if plan.global_batch % num_processes:
        raise ValueError(f"stage {stage}: global batch {plan.global_batch} is not divisible by the "
                         f"{num_processes} processes")
    per_process = plan.global_batch // num_processes

    if accelerator.distributed_type == DistributedType.FSDP:
        vectorize_scalar_parameters(model)  # FSDP refuses 0-d parameters (CLIP's logit_scale); see sharding.py
    trainable = set_trainable(model, plan.trainable_prefixes)
    sampler = EpochSampler(len(train_data), seed=args.seed)
    loader = DataLoader(train_data, batch_size=per_process, sampler=sampler, collate_fn=TrainCollator(processor),
                        num_workers=args.dataloader_num_workers, drop_last=False,
                        generator=torch.Generator().manual_seed(args.seed))
    optimizer = make_optimizer(model, args, plan.learning_rate)
    batches_per_epoch = math.ceil(math.ceil(len(train_data) / per_process) / num_processes)
    max_steps = plan.max_steps or math.ceil(plan.num_epochs * batches_per_epoch)
    scheduler = make_scheduler(optimizer, args, max_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    config = unwrapped.config
    # every process runs each forward together: the loss spans the global batch
    gather = num_processes > 1
    grad_cache = None
    if args.grad_cache_chunk_size:
        if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise ValueError(f"--grad_cache_chunk_size works with DDP or one process, not with "
                             f"{accelerator.distributed_type.value}: its second pass needs the whole logit scale "
                             "outside the wrapped forward")
        grad_cache = GradCache(accelerator, model, args.grad_cache_chunk_size, gather)

    sharded_optimizer = None
    if accelerator.distributed_type == DistributedType.FSDP:
        sharded_optimizer = (model, optimizer.optimizer)  # the wrapped model, the torch optimizer
    state = TrainState(stage=stage)
    resume = resolve_resume(args.resume_from_checkpoint, stage, plan.directory)
    if resume is not None:
        accelerator.load_state(str(resume))
        if sharded_optimizer is not None:  # accelerate's FSDP1 load leaves a fresh optimizer empty (sharding.py)
            load_sharded_optimizer(*sharded_optimizer, resume / OPTIMIZER_DIRECTORY)
        state = read_state(resume)
        logger.info(f"stage {stage}: resumed from {resume} at step {state.step} (epoch {state.epoch}, "
                    f"batch {state.batches_in_epoch})")
    else:
        clear_stale_checkpoints(accelerator, plan.directory, args.overwrite_output_dir)
    log_path = plan.directory / "train_log.jsonl"
    if accelerator.is_main_process and resume is None and log_path.exists():
        log_path.unlink()

    chunks = f", chunks of {args.grad_cache_chunk_size}" if grad_cache else ""
    what = ("pre-training the pseudo-query generator (CLIP frozen)" if stage == "1"
            else f"training {variant_name(config)} (all parameters)")
    logger.info(f"===== Stage {stage}: {what} =====\n"
                f"  {len(train_data)} training items, global batch {plan.global_batch} ({per_process} x "
                f"{num_processes} processes{chunks}), {max_steps} steps "
                f"({max_steps / batches_per_epoch:.2f} epochs), lr {plan.learning_rate:g}, {trainable:,} trainable "
                "parameters", main_process_only=True)

    last_checkpoint = list_checkpoints(plan.directory)[-1] if resume is not None else None
    fp16 = accelerator.mixed_precision == "fp16"
    progress = tqdm(total=max_steps, initial=state.step, desc=f"stage {stage}", unit="step",
                    disable=not accelerator.is_main_process, dynamic_ncols=True)
    model.train()
    running_loss, running_count = 0.0, 0
    while state.step < max_steps:
        sampler.epoch = state.epoch
        epoch_loader = accelerator.skip_first_batches(loader, state.batches_in_epoch) if state.batches_in_epoch \
            else loader
        for batch in epoch_loader:
            state.batches_in_epoch += 1
            for failure in batch["failed"]:
                logger.warning(f"stage {stage}: skipped an unreadable item (missing or undecodable): {failure}",
                               main_process_only=False)
            failed, smallest, largest = batch_sizes_across_processes(accelerator, batch)
            state.failed_videos += failed
            if smallest == 0:
                # Some process has nothing left: every process skips the step together (DDP needs all of them).
                state.skipped_batches += 1
                logger.warning(f"stage {stage}: skipped a batch (a whole per-process batch failed to decode); "
                               f"{state.skipped_batches} batches skipped so far")
                continue
            if largest != smallest:
                batch = truncate_batch(batch, smallest)  # the global contrastive batch needs equal shares

            if grad_cache is not None:
                output = grad_cache.forward(batch)  # first pass in chunks, no graph; the loss of the whole batch
            else:
                output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                               pixel_values=batch["pixel_values"], return_loss=True, gather_across_processes=gather)
            loss = stage_loss(output, stage, config)
            if not all_finite(accelerator, loss.detach()):
                raise NonFiniteLossError(
                    f"stage {stage}: the loss is {loss.item()} at step {state.step + 1} (epoch {state.epoch}); "
                    f"training stopped and nothing was saved. Last good checkpoint: "
                    f"{last_checkpoint or 'none (checkpointing is off or no checkpoint was due yet)'}. "
                    "Lower the learning rate or check the data.")
            if grad_cache is not None:
                grad_cache.backward(loss)  # second pass: each chunk again, with the cached embedding gradients
            else:
                accelerator.backward(loss)
            grad_norm = None
            if args.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                # (None under DeepSpeed, which clips itself; inf is routine under fp16, where the scaler skips)
                if grad_norm is not None and not fp16 and not all_finite(accelerator, torch.as_tensor(grad_norm)):
                    raise NonFiniteLossError(
                        f"stage {stage}: the gradient norm is {float(grad_norm)} at step {state.step + 1}; training "
                        f"stopped and nothing was saved. Last good checkpoint: {last_checkpoint or 'none'}.")
            learning_rate = scheduler.get_last_lr()[0]  # the rate this step uses
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            unwrapped.clamp_logit_scale_()
            state.step += 1
            progress.update(1)

            loss_value = float(accelerator.reduce(loss.detach(), reduction="mean"))
            running_loss += loss_value
            running_count += 1
            if state.step % max(args.logging_steps, 1) == 0 or state.step == max_steps or state.step == 1:
                record = {"stage": stage, "step": state.step, "epoch": state.epoch, "loss": loss_value,
                          "loss_avg": running_loss / running_count, "lr": learning_rate,
                          "logit_scale": float(unwrapped.clip.logit_scale.detach().exp()),
                          "failed_videos": state.failed_videos, "skipped_batches": state.skipped_batches}
                for name in ("contrastive_loss", "generation_loss"):
                    value = getattr(output, name, None)
                    if value is not None:
                        record[name] = float(accelerator.reduce(value.detach(), reduction="mean"))
                if grad_norm is not None:
                    record["grad_norm"] = float(grad_norm)
                running_loss, running_count = 0.0, 0
                progress.set_postfix(loss=f"{record['loss_avg']:.3f}", lr=f"{record['lr']:.2e}")
                accelerator.log({f"stage{stage}/{k}": v for k, v in record.items() if k not in ("stage", "step")},
                                step=state.step)
                if accelerator.is_main_process:
                    with open(log_path, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(record) + "\n")

            if stage == "2" and args.eval_steps and state.step % args.eval_steps == 0 and state.step < max_steps:
                evaluate_and_keep_best(accelerator, args, model, processor, eval_rows, state)
            if args.checkpointing_steps and state.step % args.checkpointing_steps == 0:
                last_checkpoint = save_checkpoint(accelerator, state, plan.directory, args.checkpoints_total_limit,
                                                  sharded_optimizer)
            if state.step >= max_steps:
                break
        else:
            state.epoch += 1
            state.batches_in_epoch = 0
    progress.close()
    epochs_done = state.epoch + state.batches_in_epoch / batches_per_epoch
    if state.failed_videos or state.skipped_batches:
        logger.warning(f"stage {stage}: {state.failed_videos} unreadable (missing or undecodable) items skipped, "
                       f"{state.skipped_batches} whole batches skipped")
    return {"state": state, "model": model, "steps": state.step, "epochs": epochs_done,
            "failed_videos": state.failed_videos, "skipped_batches": state.skipped_batches,
            "wall_seconds": time.time() - started, "max_steps": max_steps}


# --------------------------------------------------------------------------------------------------- the run


def run(args: TrainArguments) -> dict:
    """Everything `train.py` does for parsed `args`; returns the run summary (also written to run_summary.json)."""
    started = time.time()
    accelerator = make_accelerator(args)
    out = Path(args.output_dir)
    plans = stage_plans(args)
    summary: dict[str, Any] = {"args": args.to_dict(), "stages": {}, "num_processes": accelerator.num_processes}
    resume_stage = None
    if args.resume_from_checkpoint and args.resume_from_checkpoint != "latest":
        resume_stage = read_state(Path(args.resume_from_checkpoint)).stage
    generator_from = args.generator_from
    try:
        for plan in plans:
            resuming_latest_after_stage1 = (args.resume_from_checkpoint == "latest"
                                            and stage_completed(plan.directory))
            if plan.stage == "1" and args.stage == "both" and (resume_stage == "2" or resuming_latest_after_stage1):
                logger.info(f"stage 1 already complete in {plan.directory}; going on with stage 2")
                summary["stages"]["1"] = json.loads((plan.directory / STAGE_SUMMARY).read_text()) \
                    if (plan.directory / STAGE_SUMMARY).is_file() else {"skipped": True}
                generator_from = str(plan.directory)
                continue
            # model
            model = build_model(args)
            if plan.stage == "2" and generator_from and resume_stage != "2":
                loaded = load_generator_weights(model, generator_from)
                logger.info(f"stage 2: loaded {loaded} generator tensors from {generator_from}")
            processor = build_processor(args, model.config)
            # data
            eval_rows = None
            if plan.stage == "1":
                train_data = stage1_dataset(args, accelerator)
                stage_processor = build_processor(args, model.config, num_frames=1)
            else:
                train_rows = run_split(args, accelerator, args.dataset, args.data_dir, args.dataset_config,
                                       args.train_split, args.max_train_samples)
                train_data = VideoCaptionDataset(train_rows, num_frames=model.config.num_frames, seed=args.seed)
                stage_processor = processor
                if args.eval_steps or args.do_final_eval:
                    eval_rows = run_split(args, accelerator, args.dataset, args.data_dir, args.dataset_config,
                                          args.eval_split, args.max_eval_samples)
            # the loop, then saving
            result = train_stage(accelerator, args, plan, model, stage_processor, train_data, eval_rows)
            model, state = result.pop("model"), result.pop("state")
            save_model(accelerator, model, processor, plan.directory)
            stage_summary = {**result, "completed": True, "directory": str(plan.directory)}
            if plan.stage == "2":
                stage_summary.update(finish_stage2(accelerator, args, model, processor, eval_rows, state, summary,
                                                   stage_summary))
            summary["stages"][plan.stage] = stage_summary
            if accelerator.is_main_process:
                (plan.directory / STAGE_SUMMARY).write_text(json.dumps(stage_summary, indent=1))
            generator_from = str(plan.directory)
            if plan is not plans[-1]:
                accelerator.free_memory()
                model = None
    except NonFiniteLossError as error:
        logger.error(str(error))
        summary["error"] = str(error)
        raise
    finally:
        summary["wall_seconds"] = time.time() - started
        summary["failed_videos"] = sum(s.get("failed_videos", 0) for s in summary["stages"].values())
        summary["skipped_batches"] = sum(s.get("skipped_batches", 0) for s in summary["stages"].values())
        if accelerator.is_main_process:
            (out / "run_summary.json").write_text(json.dumps(summary, indent=1, default=str))
        accelerator.end_training()

    if args.push_to_hub and accelerator.is_main_process:
        steps = summary["stages"].get("2", {}).get("steps")
        url = push_folder(out, args.hub_model_id, private=args.hub_private_repo,
                          commit_message=f"PIG {args.dataset}: stage {args.stage}, {steps} steps",
                          ignore_patterns=MODEL_FOLDER_IGNORE_PATTERNS)
        logger.info(f"pushed {out} to the Hub: {url}")
        summary["hub_commit"] = url
    logger.info(f"done in {summary['wall_seconds']:.0f} s; model in {out.resolve()}")
    return summary


def finish_stage2(accelerator: Accelerator, args: TrainArguments, model, processor, eval_rows, state: TrainState,
                  summary: dict, stage_summary: dict) -> dict:
    """Final evaluation, metrics.json, the results table, and the model card of output_dir (and best/)."""
    out = Path(args.output_dir)
    extra: dict[str, Any] = {"history": state.history}
    if not args.do_final_eval:
        return extra
    metrics = evaluate(accelerator, model, processor, eval_rows, args, show_progress=True)
    extra["final_metrics"] = metrics
    if state.best_metric is not None:
        extra["best"] = {"step": state.best_step, "t2v_R@1": state.best_metric}
    num_videos = len(eval_rows)
    chance = 100.0 / num_videos
    if accelerator.is_main_process:
        record = {"final": {"step": state.step, **metrics}, "best": extra.get("best"), "history": state.history,
                  "num_eval_videos": num_videos, "chance_R@1": chance}
        (out / "metrics.json").write_text(json.dumps(record, indent=1))
        unwrapped = accelerator.unwrap_model(model)
        accelerator.print(f"\n===== Results: {variant_name(unwrapped.config)} on {args.dataset} {args.eval_split} "
                          f"({num_videos} videos, chance R@1 = {chance:.1f}%), step {state.step} =====\n"
                          f"{results_table(metrics)}\n")
        full_summary = {**summary, "stages": {**summary["stages"], "2": stage_summary}}
        note = None
        if state.best_step is not None:
            note = (f"Periodic evaluation every {args.eval_steps} steps; the best t2v R@1 "
                    f"({state.best_metric:.1f}) was at step {state.best_step} (saved in `best/`). The table is the "
                    f"final step ({state.step}).")
        write_training_card(out, unwrapped, args.to_dict(), metrics, full_summary, note)
        best_dir = out / "best"
        if state.best_step is not None and (best_dir / "metrics.json").is_file():
            best_metrics = json.loads((best_dir / "metrics.json").read_text())
            write_training_card(best_dir, unwrapped, args.to_dict(),
                                {k: v for k, v in best_metrics.items() if k != "step"}, full_summary,
                                f"Best periodic evaluation, at step {state.best_step} of {state.step}.")
    accelerator.wait_for_everyone()
    return extra


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point: parse `argv` (default sys.argv[1:]) and run."""
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
