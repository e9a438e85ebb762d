"""Checkpoints of a training stage: `<stage dir>/checkpoints/step_N`, a completion marker, pruning, resuming.

A checkpoint is accelerate's `save_state` (model, optimizer, scheduler, gradient scaler, every RNG state) plus
`train_state.json` (step, position in the epoch, skip counters, best metric, evaluation history), written last:
a folder without it is an interrupted save and is ignored. The newest `limit` complete checkpoints are kept, and
an old one is deleted only after the new one is complete.

accelerate's `ProjectConfiguration(automatic_checkpoint_naming=True, total_limit=N)` is not used: it numbers
checkpoints by save count rather than by optimizer step, and it prunes before the new save, so a crash during a
save could leave fewer complete checkpoints than asked for.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import Accelerator

from training.sharding import OPTIMIZER_DIRECTORY, save_sharded_optimizer

STATE_FILE = "train_state.json"
STAGE_SUMMARY = "stage_summary.json"
CHECKPOINT_PREFIX = "step_"


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


def list_checkpoints(directory: Path) -> list[Path]:
    """Complete checkpoints (with their state file) under `directory/checkpoints`, oldest first."""
    root = Path(directory) / "checkpoints"
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
    """The `TrainState` of a complete checkpoint (FileNotFoundError when the folder is not one)."""
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a complete checkpoint (no {STATE_FILE})")
    return TrainState(**json.loads(path.read_text()))


def save_checkpoint(accelerator: Accelerator, state: TrainState, directory: Path, limit: int,
                    sharded_optimizer: tuple | None = None) -> Path:
    """accelerate `save_state` into checkpoints/step_N, then the state file (last), then prune to `limit`.

    `sharded_optimizer`: (FSDP-wrapped model, torch optimizer) under FSDP, whose optimizer state is also written by
    `training.sharding.save_sharded_optimizer` (accelerate's FSDP1 load cannot restore it; see sharding.py).
    A collective: call it on every process.
    """
    path = Path(directory) / "checkpoints" / f"{CHECKPOINT_PREFIX}{state.step}"
    if accelerator.is_main_process and path.exists():
        shutil.rmtree(path)  # an incomplete leftover of an interrupted save (complete ones are never re-saved)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(path))
    if sharded_optimizer is not None:
        save_sharded_optimizer(*sharded_optimizer, path / OPTIMIZER_DIRECTORY)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (path / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
        for old in list_checkpoints(directory)[:-limit]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return path


def resolve_resume(resume_from_checkpoint: str | None, stage: str, directory: Path) -> Path | None:
    """The checkpoint the stage `stage` (kept in `directory`) resumes from; None: start fresh.

    "latest" is the newest complete checkpoint of `directory`; a folder is used when it belongs to this stage.
    """
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint == "latest":
        found = list_checkpoints(directory)
        return found[-1] if found else None
    path = Path(resume_from_checkpoint)
    return path if read_state(path).stage == stage else None


def clear_stale_checkpoints(accelerator: Accelerator, directory: Path, overwrite: bool) -> None:
    """A fresh (not resumed) stage refuses old checkpoints in `directory`, or deletes them with `overwrite`."""
    root = Path(directory) / "checkpoints"
    if not (root.is_dir() and any(root.iterdir())):
        return
    if not overwrite:
        raise FileExistsError(f"{root} holds checkpoints of an earlier run; pass --resume_from_checkpoint latest "
                              "to continue it or --overwrite_output_dir to start over")
    if accelerator.is_main_process:
        shutil.rmtree(root)


def stage_completed(directory: Path) -> bool:
    """Whether `directory` holds the summary of a stage that ran to its end."""
    path = Path(directory) / STAGE_SUMMARY
    return path.is_file() and json.loads(path.read_text()).get("completed", False)
