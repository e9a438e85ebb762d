"""Train PIG with accelerate: stage 1 (generator pre-training, CLIP frozen) and stage 2 (everything, target data).

    accelerate launch training/train.py                                   # the embedded demo (CPU, minutes)
    accelerate launch training/train.py --config training/configs/msrvtt_9k_pig_b32.yaml --data_dir ...
    accelerate launch --multi_gpu --num_processes 4 training/train.py --config ...

With no argument: the synthetic benchmark is generated (once) under outputs/.cache/synthetic, a tiny random PIG
with the real CLIP tokenizer is trained (stage 1 on the benchmark's still images, stage 2 on its videos),
evaluated on its test split, and written to outputs/ with its processor, model card and metrics.
docs/training.md is the user guide; every flag is in training/args.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `python training/train.py` / `accelerate launch training/train.py` put this folder first on sys.path, where
# training/evaluate.py would shadow the `evaluate` package for every library imported below.
_HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0] or ".").resolve() == _HERE:
    sys.path.pop(0)

import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import asdict, dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402
from accelerate import Accelerator  # noqa: E402
from accelerate.logging import get_logger  # noqa: E402
from accelerate.utils import DistributedType, broadcast_object_list, set_seed  # noqa: E402
from huggingface_hub import HfApi  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402
from transformers import get_scheduler  # noqa: E402

from model_cards.card import build_model_card, results_table, save_model_card  # noqa: E402
from modeling_pig import PIGConfig, PIGModel, PIGProcessor  # noqa: E402
from training.args import TrainArguments, parse_args  # noqa: E402
from training.data import EpochSampler, ImageCaptionDataset, TrainCollator, VideoCaptionDataset  # noqa: E402

logger = get_logger(__name__)

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
STATE_FILE = "train_state.json"
STAGE_SUMMARY = "stage_summary.json"
CHECKPOINT_PREFIX = "step_"
# What a model folder pushed to the Hub leaves out.
HUB_IGNORE_PATTERNS = ["checkpoints/**", "stage1/**", "best/**", "logs/**", ".cache/**"]


class NonFiniteLossError(FloatingPointError):
    """The loss (or the gradient norm) became NaN or infinite; training stopped without saving."""


@dataclass
class TrainState:
    """Where a stage stands; saved next to every checkpoint (written last: its presence = checkpoint complete)."""

    stage: str
    step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    failed_videos: int = 0
    skipped_batches: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    history: list = field(default_factory=list)


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


# --------------------------------------------------------------------------------------------------- model


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


def variant_name(config: PIGConfig) -> str:
    if config.use_pseudo_query:
        return "PIG"
    return "CLIP-ViP baseline" if config.video_tower == "vip" else "CLIP4Clip meanP baseline"


# --------------------------------------------------------------------------------------------------- data


def prepare_synthetic(args: TrainArguments, accelerator: Accelerator, folder: str | None) -> Path:
    """Generate the synthetic benchmark once into `folder` (default output_dir/.cache/synthetic); the main
    process goes first, the others then find it complete."""
    from datasets_scripts.synthetic import generate_synthetic

    folder = Path(folder) if folder else Path(args.output_dir) / ".cache" / "synthetic"
    with accelerator.main_process_first():
        return generate_synthetic(folder, seed=args.synthetic_seed, num_train=args.synthetic_num_train,
                                  num_test=args.synthetic_num_test, num_images=args.synthetic_num_images,
                                  progress=accelerator.is_local_main_process)


def _select(rows, limit: int | None):
    return rows.select(range(min(limit, len(rows)))) if limit is not None else rows


def load_benchmark_split(args: TrainArguments, accelerator: Accelerator, name: str, data_dir: str | None,
                         config: str | None, split: str, limit: int | None = None):
    """One split of a benchmark (the synthetic one is generated first when needed)."""
    from datasets_scripts import load_benchmark

    if name == "synthetic":
        data_dir = str(prepare_synthetic(args, accelerator, data_dir))
    if data_dir is None:
        raise ValueError(f"dataset {name!r} needs --data_dir (the folder with its annotation files)")
    with accelerator.main_process_first():
        rows = load_benchmark(name, data_dir=data_dir, config=config, split=split, video_dir=args.video_dir,
                              missing_videos=args.missing_videos)
    if len(rows) == 0:
        raise ValueError(f"{name} split {split!r} under {data_dir} has no rows")
    return _select(rows, limit)


def stage1_dataset(args: TrainArguments, accelerator: Accelerator):
    """Stage-1 image-caption data as 1-frame training items (see --stage1_dataset)."""
    from datasets_scripts import BENCHMARKS

    name = args.stage1_dataset
    if name.lower().replace("-", "").replace("_", "") in BENCHMARKS:
        data_dir = args.stage1_data_dir or (args.data_dir if name == args.dataset else None)
        rows = load_benchmark_split(args, accelerator, name, data_dir, args.stage1_dataset_config, args.stage1_split,
                                    args.stage1_max_train_samples)
        return VideoCaptionDataset(rows, num_frames=1, seed=args.seed)
    import datasets

    with accelerator.main_process_first():
        if name == "imagefolder":
            if not args.stage1_data_dir:
                raise ValueError("--stage1_dataset imagefolder needs --stage1_data_dir (images + metadata.jsonl)")
            rows = datasets.load_dataset("imagefolder", data_dir=args.stage1_data_dir, split=args.stage1_split)
        else:
            rows = datasets.load_dataset(name, args.stage1_dataset_config, data_dir=args.stage1_data_dir,
                                         split=args.stage1_split)
    rows = _select(rows, args.stage1_max_train_samples)
    return ImageCaptionDataset(rows, args.stage1_image_column, args.stage1_caption_column, seed=args.seed)


# --------------------------------------------------------------------------------------------------- optimisation


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


def set_trainable(model: torch.nn.Module, prefixes: tuple[str, ...] | None) -> int:
    """Freeze every parameter whose name does not start with one of `prefixes` (None: train all); return #trainable."""
    count = 0
    for name, parameter in model.named_parameters():
        parameter.requires_grad = prefixes is None or name.startswith(prefixes)
        count += parameter.numel() if parameter.requires_grad else 0
    if count == 0:
        raise ValueError(f"no trainable parameter starts with {prefixes}")
    return count


def stage_loss(output, stage: str, config: PIGConfig) -> torch.Tensor:
    """Stage 1: alpha * generation loss (the generator alone learns). Stage 2: the model's loss (InfoNCE +
    alpha * generation loss)."""
    if stage == "1":
        if output.generation_loss is None:
            raise ValueError("stage 1 needs the generation loss; this model has no generator (use_pseudo_query=False)")
        return config.generation_loss_weight * output.generation_loss
    return output.loss


# --------------------------------------------------------------------------------------------------- checkpoints


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints (with their state file) under `directory/checkpoints`, oldest first."""
    root = directory / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if path.name.startswith(CHECKPOINT_PREFIX) and (path / STATE_FILE).is_file():
            suffix = path.name[len(CHECKPOINT_PREFIX):]
            if suffix.isdigit():
                found.append((int(suffix), path))
    return [path for _, path in sorted(found)]


def read_state(checkpoint: Path) -> TrainState:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a complete checkpoint (no {STATE_FILE})")
    return TrainState(**json.loads(path.read_text()))


def save_checkpoint(accelerator: Accelerator, state: TrainState, directory: Path, limit: int) -> Path:
    """accelerate `save_state` into checkpoints/step_N, then the state file (last), then prune to `limit`."""
    path = directory / "checkpoints" / f"{CHECKPOINT_PREFIX}{state.step}"
    if accelerator.is_main_process and path.exists():
        shutil.rmtree(path)  # an incomplete leftover of an interrupted save (complete ones are never re-saved)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(path))
    if accelerator.is_main_process:
        (path / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
        complete = list_checkpoints(directory)
        for old in complete[:-limit]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return path


def resolve_resume(args: TrainArguments, plan: StagePlan) -> Path | None:
    """The checkpoint this stage resumes from (None: start fresh)."""
    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "latest":
        found = list_checkpoints(plan.directory)
        return found[-1] if found else None
    path = Path(args.resume_from_checkpoint)
    state = read_state(path)
    return path if state.stage == plan.stage else None


def stage_completed(directory: Path) -> bool:
    path = directory / STAGE_SUMMARY
    return path.is_file() and json.loads(path.read_text()).get("completed", False)


# --------------------------------------------------------------------------------------------------- evaluation


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
    from training.evaluate import evaluate_retrieval

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


# --------------------------------------------------------------------------------------------------- saving


def save_model(accelerator: Accelerator, model: torch.nn.Module, processor: PIGProcessor, folder: Path) -> None:
    """save_pretrained of the (full) model and the processor into `folder` (collective; main process writes)."""
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        accelerator.unwrap_model(model).save_pretrained(folder, state_dict=state_dict, safe_serialization=True)
        processor.save_pretrained(folder)
    accelerator.wait_for_everyone()


def write_card(args: TrainArguments, folder: Path, model: PIGModel, metrics: dict, summary: dict,
               note: str | None = None) -> Path:
    """Fill the model card of `folder` from this run (main process only)."""
    config = model.config
    variant = variant_name(config)
    dataset = args.dataset
    name = args.model_name or (args.hub_model_id.split("/")[-1] if args.hub_model_id else
                               f"{variant.split()[0].lower()}-{dataset}")
    stages = summary.get("stages", {})
    lines = []
    if "1" in stages:
        s1 = stages["1"]
        lines.append(f"Stage 1 pre-trained the pseudo-query generator with CLIP frozen on `{args.stage1_dataset}` "
                     f"(split `{args.stage1_split}`, images as 1-frame videos) for {s1['steps']} steps; only the "
                     f"generator's weights were carried into stage 2.")
    elif args.generator_from:
        lines.append(f"Stage 2 started from the stage-1 generator in `{args.generator_from}`.")
    if "2" in stages:
        s2 = stages["2"]
        lines.append(f"Stage 2 trained every parameter on `{dataset}` (split `{args.train_split}`) for "
                     f"{s2['steps']} steps ({s2['epochs']:.2f} epochs over the videos, one random caption per "
                     f"visit) with loss = symmetric InfoNCE (summed) + alpha * generation loss.")
        if s2.get("failed_videos"):
            lines.append(f"{s2['failed_videos']} training visits were skipped because the video failed to decode.")
    training = {
        "stage-2 learning rate": args.learning_rate, "global batch": args.train_batch_size,
        "stage-2 steps": stages.get("2", {}).get("steps"), "frames": config.num_frames,
        "text length": args.max_length, "optimizer": f"AdamW ({args.adam_beta1}, {args.adam_beta2}), "
        f"eps {args.adam_epsilon}, weight decay {args.weight_decay} (not on {', '.join(args.no_decay_keywords)})",
        "schedule": f"{args.lr_scheduler_type}, warm-up {args.warmup_ratio:g} of the steps",
        "grad-norm clip": args.max_grad_norm, "alpha (generation loss weight)": config.generation_loss_weight,
        "mixed precision": args.mixed_precision or "launch default", "seed": args.seed,
    }
    if "1" in stages:
        training.update({"stage-1 learning rate": args.stage1_learning_rate,
                         "stage-1 global batch": args.stage1_train_batch_size, "stage-1 steps": stages["1"]["steps"]})
    limitations = []
    if not args.clip_model:
        limitations.append("This is the embedded demo: a tiny, randomly initialised model trained for minutes on a "
                           "synthetic benchmark of coloured shapes. It shows that the pipeline works; it is useless "
                           "on real videos.")
    vision = config.clip_config.vision_config
    card = build_model_card(
        metrics, model_name=name, dataset_type=dataset, dataset_name=dataset, dataset_split=args.eval_split,
        dataset_config=args.dataset_config, base_model=args.clip_model,
        model_info={"variant": variant, "num_frames": config.num_frames, "image_size": vision.image_size,
                    "max_length": args.max_length, "projection_dim": config.clip_config.projection_dim,
                    "num_parameters": sum(p.numel() for p in model.parameters())},
        training={k: v for k, v in training.items() if v is not None},
        training_description=" ".join(lines), summary=f"{variant} for text-to-video retrieval, trained on {dataset}.",
        repo_id=args.hub_model_id, num_queries=metrics.get("num_texts"), results_note=note,
        limitations=limitations)
    return save_model_card(card, folder)


def push_folder(folder: Path, repo_id: str, private: bool, message: str) -> str:
    """Upload a model folder (model, processor, card, metrics; not checkpoints/stage1/best/logs) to the Hub."""
    api = HfApi()
    api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder), commit_message=message,
                             ignore_patterns=HUB_IGNORE_PATTERNS)
    return str(getattr(info, "commit_url", info))


# --------------------------------------------------------------------------------------------------- the loop


def _log_jsonl(path: Path, record: dict) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")


def _distributed_counts(accelerator: Accelerator, batch: dict) -> tuple[int, int, int]:
    """(failed items summed over processes, smallest per-process batch, largest per-process batch)."""
    local = batch["input_ids"].shape[0] if "input_ids" in batch else 0
    values = torch.tensor([[batch["num_failed"], local]], device=accelerator.device)
    gathered = accelerator.gather(values)  # [num_processes, 2]
    return int(gathered[:, 0].sum()), int(gathered[:, 1].min()), int(gathered[:, 1].max())


def _truncate(batch: dict, size: int) -> dict:
    return {k: (v[:size] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


def _all_finite(accelerator: Accelerator, value: torch.Tensor) -> bool:
    flag = torch.tensor([0.0 if torch.isfinite(value).all() else 1.0], device=accelerator.device)
    return float(accelerator.reduce(flag, reduction="sum")) == 0.0


def train_stage(accelerator: Accelerator, args: TrainArguments, plan: StagePlan, model: PIGModel,
                processor: PIGProcessor, train_data, eval_rows=None, step_callback: Callable | None = None) -> dict:
    """Run one stage to its last step; returns the stage summary. Raises NonFiniteLossError on NaN/inf.

    step_callback(state) is called after every optimizer step (and after its checkpoint/evaluation), on every
    process; tests use it to interrupt a run.
    """
    started = time.time()
    stage = plan.stage
    plan.directory.mkdir(parents=True, exist_ok=True)
    num_processes = accelerator.num_processes
    if plan.global_batch % num_processes:
        raise ValueError(f"stage {stage}: global batch {plan.global_batch} is not divisible by the "
                         f"{num_processes} processes")
    per_process = plan.global_batch // num_processes

    trainable = set_trainable(model, plan.trainable_prefixes)
    sampler = EpochSampler(len(train_data), seed=args.seed)
    loader = DataLoader(train_data, batch_size=per_process, sampler=sampler, collate_fn=TrainCollator(processor),
                        num_workers=args.dataloader_num_workers, drop_last=False,
                        generator=torch.Generator().manual_seed(args.seed))
    optimizer = make_optimizer(model, args, plan.learning_rate)
    batches_per_epoch = math.ceil(math.ceil(len(train_data) / per_process) / num_processes)
    max_steps = plan.max_steps or math.ceil(plan.num_epochs * batches_per_epoch)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=int(args.warmup_ratio * max_steps),
                              num_training_steps=max_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    config = unwrapped.config

    state = TrainState(stage=stage)
    resume = resolve_resume(args, plan)
    if resume is not None:
        accelerator.load_state(str(resume))
        state = read_state(resume)
        logger.info(f"stage {stage}: resumed from {resume} at step {state.step} (epoch {state.epoch}, "
                    f"batch {state.batches_in_epoch})")
    elif (plan.directory / "checkpoints").is_dir() and any((plan.directory / "checkpoints").iterdir()):
        if not args.overwrite_output_dir:
            raise FileExistsError(f"{plan.directory / 'checkpoints'} holds checkpoints of an earlier run; pass "
                                  "--resume_from_checkpoint latest to continue it or --overwrite_output_dir to "
                                  "start over")
        if accelerator.is_main_process:
            shutil.rmtree(plan.directory / "checkpoints")
    log_path = plan.directory / "train_log.jsonl"
    if accelerator.is_main_process and resume is None and log_path.exists():
        log_path.unlink()

    what = ("pre-training the pseudo-query generator (CLIP frozen)" if stage == "1"
            else f"training {variant_name(config)} (all parameters)")
    logger.info(f"===== Stage {stage}: {what} =====\n"
                f"  {len(train_data)} training items, global batch {plan.global_batch} ({per_process} x "
                f"{num_processes} processes), {max_steps} steps ({max_steps / batches_per_epoch:.2f} epochs), "
                f"lr {plan.learning_rate:g}, {trainable:,} trainable parameters", main_process_only=True)

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
            failed, smallest, largest = _distributed_counts(accelerator, batch)
            state.failed_videos += failed
            if smallest == 0:
                # Some process has nothing left: every process skips the step together (DDP needs all of them).
                state.skipped_batches += 1
                logger.warning(f"stage {stage}: skipped a batch (a whole per-process batch failed to decode); "
                               f"{state.skipped_batches} batches skipped so far")
                continue
            if largest != smallest:
                batch = _truncate(batch, smallest)  # the global contrastive batch needs equal shares

            output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                           pixel_values=batch["pixel_values"], return_loss=True)
            loss = stage_loss(output, stage, config)
            if not _all_finite(accelerator, loss.detach()):
                raise NonFiniteLossError(
                    f"stage {stage}: the loss is {loss.item()} at step {state.step + 1} (epoch {state.epoch}); "
                    f"training stopped and nothing was saved. Last good checkpoint: "
                    f"{last_checkpoint or 'none (checkpointing is off or no checkpoint was due yet)'}. "
                    "Lower the learning rate or check the data.")
            accelerator.backward(loss)
            grad_norm = None
            if args.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                # (None under DeepSpeed, which clips itself; inf is routine under fp16, where the scaler skips)
                if grad_norm is not None and not fp16 and not _all_finite(accelerator, torch.as_tensor(grad_norm)):
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
                    _log_jsonl(log_path, record)

            if stage == "2" and args.eval_steps and state.step % args.eval_steps == 0 and state.step < max_steps:
                evaluate_and_keep_best(accelerator, args, model, processor, eval_rows, state)
            if args.checkpointing_steps and state.step % args.checkpointing_steps == 0:
                last_checkpoint = save_checkpoint(accelerator, state, plan.directory, args.checkpoints_total_limit)
            if step_callback is not None:
                step_callback(state)
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


# --------------------------------------------------------------------------------------------------- the run


def stage_plans(args: TrainArguments) -> list[StagePlan]:
    out = Path(args.output_dir)
    stage1 = StagePlan("1", out / "stage1" if args.stage == "both" else out, args.stage1_learning_rate,
                       args.stage1_train_batch_size, args.stage1_num_train_epochs, args.stage1_max_train_steps,
                       ("generator.",))
    stage2 = StagePlan("2", out, args.learning_rate, args.train_batch_size, args.num_train_epochs,
                       args.max_train_steps, None)
    return {"1": [stage1], "2": [stage2], "both": [stage1, stage2]}[args.stage]


def _tracker_config(args: TrainArguments) -> dict:
    return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in args.to_dict().items()}


def run(args: TrainArguments, step_callback: Callable | None = None) -> dict:
    """Everything `train.py` does for parsed `args`; returns the run summary (also written to run_summary.json)."""
    started = time.time()
    # `torchrun --nproc_per_node N` on a machine without GPUs: accelerate only forms a CPU process group (gloo)
    # when told to use the CPU; otherwise each process would train alone on duplicated data.
    cpu_only_launch = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    accelerator = Accelerator(cpu=cpu_only_launch, mixed_precision=args.mixed_precision,
                              step_scheduler_with_optimizer=False,
                              log_with="tensorboard" if args.report_to == "tensorboard" else None,
                              project_dir=args.output_dir)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger("training").setLevel(logging.INFO)
    for noisy in ("httpx", "huggingface_hub", "datasets", "filelock", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if accelerator.device.type == "cpu" and args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if args.report_to == "tensorboard":
        accelerator.init_trackers("logs", config=_tracker_config(args))
    logger.info(f"PIG training: stage {args.stage}, {accelerator.num_processes} process(es) on "
                f"{accelerator.device}, mixed precision {accelerator.mixed_precision}, output {out.resolve()}")

    plans = stage_plans(args)
    summary: dict[str, Any] = {"args": args.to_dict(), "stages": {}, "num_processes": accelerator.num_processes}
    resume_stage = None
    if args.resume_from_checkpoint and args.resume_from_checkpoint != "latest":
        resume_stage = read_state(Path(args.resume_from_checkpoint)).stage
    generator_from = args.generator_from
    model = processor = None
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
            model = build_model(args)
            if plan.stage == "2" and generator_from and resume_stage != "2":
                loaded = load_generator_weights(model, generator_from)
                logger.info(f"stage 2: loaded {loaded} generator tensors from {generator_from}")
            processor = build_processor(args, model.config)
            if plan.stage == "1":
                train_data = stage1_dataset(args, accelerator)
                stage_processor = build_processor(args, model.config, num_frames=1)
                eval_rows = None
            else:
                train_data = VideoCaptionDataset(
                    load_benchmark_split(args, accelerator, args.dataset, args.data_dir, args.dataset_config,
                                         args.train_split, args.max_train_samples),
                    num_frames=model.config.num_frames, seed=args.seed)
                stage_processor = processor
                needs_eval = args.eval_steps or args.do_final_eval
                eval_rows = load_benchmark_split(args, accelerator, args.dataset, args.data_dir, args.dataset_config,
                                                 args.eval_split, args.max_eval_samples) if needs_eval else None
            result = train_stage(accelerator, args, plan, model, stage_processor, train_data, eval_rows,
                                 step_callback)
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
        url = push_folder(out, args.hub_model_id, args.hub_private_repo,
                          f"PIG {args.dataset}: stage {args.stage}, {steps} steps")
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
        table = results_table(metrics)
        accelerator.print(f"\n===== Results: {variant_name(accelerator.unwrap_model(model).config)} on "
                          f"{args.dataset} {args.eval_split} ({num_videos} videos, chance R@1 = {chance:.1f}%), "
                          f"step {state.step} =====\n{table}\n")
        full_summary = {**summary, "stages": {**summary["stages"], "2": stage_summary}}
        note = None
        if state.best_step is not None:
            note = (f"Periodic evaluation every {args.eval_steps} steps; the best t2v R@1 "
                    f"({state.best_metric:.1f}) was at step {state.best_step} (saved in `best/`). The table is the "
                    f"final step ({state.step}).")
        write_card(args, out, accelerator.unwrap_model(model), metrics, full_summary, note)
        best_dir = out / "best"
        if state.best_step is not None and (best_dir / "metrics.json").is_file():
            best_metrics = json.loads((best_dir / "metrics.json").read_text())
            write_card(args, best_dir, accelerator.unwrap_model(model),
                       {k: v for k, v in best_metrics.items() if k != "step"}, full_summary,
                       f"Best periodic evaluation, at step {state.best_step} of {state.step}.")
    accelerator.wait_for_everyone()
    return extra


def main(argv: list[str] | None = None, step_callback: Callable | None = None) -> dict:
    """Command-line entry point: parse `argv` (default sys.argv[1:]) and run."""
    return run(parse_args(argv), step_callback=step_callback)


if __name__ == "__main__":
    main()
