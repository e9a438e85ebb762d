"""Arguments of `training/train.py`: one dataclass, recipes in YAML, the command line on top (yaml < CLI).

Every field is a command-line flag (`--learning_rate 3e-6`, booleans also as `--flag` / `--no_flag`).
`--config recipe.yaml` sets new defaults from a YAML mapping whose keys must be field names (unknown keys
are an error naming the file and the key); a recipe may start from another one with `base: other.yaml`
(a path relative to the recipe). Flags given on the command line win over the recipe.

The defaults ARE the embedded demo: `accelerate launch training/train.py` with no argument trains a tiny
random PIG on the synthetic benchmark, stage 1 then stage 2, on a CPU in a few minutes.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from transformers import HfArgumentParser

# Recipe keys accepted as another name for a field (the recipes write `clip_model`; `--init_from_clip` is the
# same flag).
KEY_ALIASES = {"init_from_clip": "clip_model"}
BASE_KEY = "base"


@dataclass
class TrainArguments:
    """Everything `training/train.py` reads. Field order = `--help` order."""

    # ----------------------------------------------------------------- run
    config: Optional[str] = field(default=None, metadata={
        "help": "YAML recipe (training/configs/*.yaml); its keys are these flags. Command-line flags win."})
    output_dir: str = field(default="outputs", metadata={
        "help": "Final model (model.safetensors, config.json, processor files, README.md card), metrics.json, "
                "run_summary.json; subfolders stage1/, checkpoints/, best/, logs/."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "Delete old checkpoints in output_dir when starting a fresh (not resumed) run."})
    seed: int = field(default=42, metadata={"help": "Seed of the model init, the data order and frame sampling."})
    stage: Literal["1", "2", "both"] = field(default="both", metadata={
        "help": "1: pre-train the generator with CLIP frozen; 2: train everything on the target benchmark; "
                "both: 1 then 2 in one run (stage 1 writes to output_dir/stage1)."})
    generator_from: Optional[str] = field(default=None, metadata={
        "help": "Stage 2: a stage-1 model folder; only its `generator.*` weights are loaded."})

    # ----------------------------------------------------------------- model
    clip_model: Optional[str] = field(default=None, metadata={
        "aliases": ["--init_from_clip"],
        "help": "CLIP checkpoint (hub id or local folder) for PIGModel.from_clip. None: the tiny random demo "
                "model (see --model_config)."})
    model_config: Optional[str] = field(default=None, metadata={
        "help": "JSON object of PIGConfig keyword arguments (a mapping in YAML). With --clip_model they are "
                "overrides for from_clip; without, they replace the tiny demo config."})
    video_tower: Literal["vip", "meanp"] = field(default="vip", metadata={
        "help": "vip: CLIP-ViP proxy-token tower (PIG, CLIP-ViP baseline); meanp: CLIP4Clip mean pooling."})
    use_pseudo_query: bool = field(default=True, metadata={
        "help": "PIG's pseudo-query generator + interaction; --no_use_pseudo_query is the two-tower baseline."})
    num_frames: int = field(default=4, metadata={"help": "Frames per video (12 in the MSR-VTT recipe)."})
    max_length: int = field(default=16, metadata={"help": "Text tokens incl. bos/eos (50 in the recipes)."})
    its_top_k: Optional[int] = field(default=None, metadata={
        "help": "Informative tokens kept by ITS (None: the config's value; 16 in the paper)."})
    generation_loss_weight: float = field(default=1.0, metadata={"help": "alpha, weight of the generation loss."})
    disable_dropout: bool = field(default=False, metadata={
        "help": "Set every dropout probability to 0 (for exact-reproduction checks)."})

    # ----------------------------------------------------------------- stage-2 data
    dataset: str = field(default="synthetic", metadata={
        "help": "Benchmark for load_benchmark: synthetic, msrvtt, didemo, activitynet, lsmdc, vatex, msvd."})
    data_dir: Optional[str] = field(default=None, metadata={
        "help": "Annotation folder (None for synthetic: generated under output_dir/.cache/synthetic)."})
    dataset_config: Optional[str] = field(default=None, metadata={"help": "Benchmark setting, e.g. msrvtt 9k."})
    video_dir: Optional[str] = field(default=None, metadata={"help": "Video folder (default: data_dir)."})
    train_split: str = "train"
    eval_split: str = field(default="test", metadata={
        "help": "Split for periodic and final evaluation (the paper selects on test; see docs/training.md)."})
    missing_videos: Literal["error", "drop", "keep"] = field(default="error", metadata={
        "help": "Videos named by the annotations but absent on disk: error (before training starts), drop the "
                "rows (logged), or keep them: each visit is then skipped and counted like an undecodable video."})
    max_train_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N train videos."})
    max_eval_samples: Optional[int] = field(default=None, metadata={"help": "Use only the first N eval videos."})
    synthetic_num_train: int = field(default=240, metadata={"help": "Synthetic benchmark: train videos."})
    synthetic_num_test: int = field(default=40, metadata={"help": "Synthetic benchmark: test videos."})
    synthetic_num_images: int = field(default=240, metadata={"help": "Synthetic benchmark: stage-1 images."})
    synthetic_seed: int = field(default=0, metadata={
        "help": "Seed of the synthetic benchmark itself (fixed across training seeds)."})
    dataloader_num_workers: int = field(default=1, metadata={"help": "Decoding worker processes per process."})
    cpu_threads: Optional[int] = field(default=1, metadata={
        "help": "torch intra-op threads per process when training on CPU (None: torch's default). 1 suits the "
                "tiny demo: its operations are too small to gain from more, and extra threads collapse when the "
                "cores are shared (with the decoding worker, or with other jobs)."})

    # ----------------------------------------------------------------- stage-1 data
    stage1_dataset: str = field(default="synthetic", metadata={
        "help": "Image-caption data as 1-frame videos: a benchmark name (one frame per video), 'imagefolder' "
                "(a folder with metadata.jsonl/csv in stage1_data_dir), or any `datasets.load_dataset` path "
                "or Hub id with an image and a text column."})
    stage1_data_dir: Optional[str] = field(default=None, metadata={
        "help": "Folder for stage1_dataset (default: data_dir for a benchmark)."})
    stage1_dataset_config: Optional[str] = None
    stage1_split: str = field(default="images", metadata={
        "help": "Split of stage1_dataset (the synthetic benchmark's 'images' split holds its stage-1 pictures)."})
    stage1_image_column: str = "image"
    stage1_caption_column: str = "text"
    stage1_max_train_samples: Optional[int] = None

    # ----------------------------------------------------------------- optimisation (stage 2, shared)
    learning_rate: float = field(default=3e-4, metadata={
        "help": "Stage-2 peak LR (3e-4 suits the demo's from-scratch model; MSR-VTT recipe from CLIP: 3e-6)."})
    train_batch_size: int = field(default=32, metadata={
        "help": "GLOBAL stage-2 batch (the contrastive loss spans it); per process = this / number of processes."})
    num_train_epochs: float = field(default=30.0, metadata={
        "help": "Stage-2 epochs; one epoch = one visit of every video, one random caption per visit."})
    max_train_steps: Optional[int] = field(default=None, metadata={
        "help": "Stage-2 optimizer steps (overrides num_train_epochs)."})
    weight_decay: float = 0.2
    no_decay_keywords: list[str] = field(default_factory=lambda: ["bias", "logit_scale"], metadata={
        "help": "Parameters whose name contains one of these get no weight decay (LayerNorm weights ARE "
                "decayed, as in the authors' code)."})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_epsilon: float = 1e-6
    lr_scheduler_type: Literal["cosine", "linear", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = field(default=0.1, metadata={
        "help": "Warm-up steps = int(ratio * total steps) (0.1 for the demo's from-scratch model; recipes: 0.01)."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient-norm clip (0: off)."})
    grad_cache_chunk_size: int = field(default=0, metadata={
        "help": "Gradient caching: encode each process's batch in chunks of N videos (two passes, the loss still "
                "spans the whole global batch), so that the activation memory is that of N videos. 0: off. DDP "
                "and one process (not FSDP/DeepSpeed). See docs/training.md."})
    mixed_precision: Optional[Literal["no", "fp16", "bf16"]] = field(default=None, metadata={
        "help": "Autocast for the forward pass (None: accelerate's launch setting)."})

    # ----------------------------------------------------------------- stage-1 optimisation
    stage1_learning_rate: float = field(default=2e-3, metadata={"help": "Stage-1 peak LR (paper: 9e-5)."})
    stage1_train_batch_size: int = field(default=32, metadata={"help": "GLOBAL stage-1 batch."})
    stage1_num_train_epochs: float = 2.0
    stage1_max_train_steps: Optional[int] = None

    # ----------------------------------------------------------------- evaluation, checkpoints, logging
    eval_batch_size: int = 16
    eval_steps: int = field(default=0, metadata={
        "help": "Evaluate every N stage-2 steps and keep the best t2v R@1 model in output_dir/best (0: off)."})
    do_final_eval: bool = field(default=True, metadata={"help": "Evaluate the final model on eval_split."})
    checkpointing_steps: int = field(default=0, metadata={
        "help": "accelerate save_state every N optimizer steps into <stage dir>/checkpoints/step_N (0: off)."})
    checkpoints_total_limit: int = field(default=2, metadata={
        "help": "Keep the newest N checkpoints (the oldest is deleted only after the new one is complete)."})
    resume_from_checkpoint: Optional[str] = field(default=None, metadata={
        "help": "'latest' (newest complete checkpoint of the run in output_dir) or a checkpoint folder."})
    logging_steps: int = field(default=10, metadata={"help": "Log loss / lr every N steps."})
    report_to: str = field(default="none", metadata={
        "help": "Trackers, comma-separated: any that accelerate supports (tensorboard, wandb, mlflow, comet_ml, "
                "aim, clearml, dvclive, swanlab, trackio), 'all' (every one installed) or 'none'. Local ones write "
                "under output_dir/logs."})
    tracker_project_name: str = field(default="pig-hf", metadata={
        "help": "Project (run group) name given to the trackers; tensorboard: the folder under output_dir/logs."})

    # ----------------------------------------------------------------- publishing
    model_name: Optional[str] = field(default=None, metadata={"help": "Name in the model card (default: derived)."})
    push_to_hub: bool = False
    hub_model_id: Optional[str] = field(default=None, metadata={"help": "user/name of the Hub repository."})
    hub_private_repo: bool = False

    def __post_init__(self):
        self.stage = str(self.stage)
        if self.stage not in ("1", "2", "both"):
            raise ValueError(f"stage={self.stage!r}; expected '1', '2' or 'both'")
        positive = ["num_frames", "max_length", "train_batch_size", "stage1_train_batch_size", "eval_batch_size"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}; expected a positive integer")
        for name in ("eval_steps", "checkpointing_steps", "logging_steps", "dataloader_num_workers",
                     "grad_cache_chunk_size"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 0")
        if self.checkpoints_total_limit < 1:
            raise ValueError(f"checkpoints_total_limit={self.checkpoints_total_limit}; expected >= 1")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id (e.g. your-name/pig-msrvtt-b32)")
        if self.model_config is not None:
            parsed = json.loads(self.model_config) if isinstance(self.model_config, str) else self.model_config
            if not isinstance(parsed, dict):
                raise ValueError(
                    f"model_config must be a JSON object of PIGConfig arguments, got {self.model_config!r}")

    @property
    def model_config_dict(self) -> dict:
        """`model_config` parsed (empty dict when unset)."""
        return json.loads(self.model_config) if self.model_config else {}

    @property
    def trackers(self) -> list[str] | None:
        """`report_to` as accelerate's `log_with` (None: no tracker). Raises ValueError for a name accelerate does
        not know, or one whose package is not installed."""
        from accelerate.tracking import get_available_trackers
        from accelerate.utils import LoggerType

        names = [name.strip().lower() for name in str(self.report_to).split(",") if name.strip()]
        if names in ([], ["none"]):
            return None
        known = [t.value for t in LoggerType]
        for name in names:
            if name not in known:
                raise ValueError(f"--report_to {self.report_to!r}: {name!r} is not a tracker accelerate supports; "
                                 f"expected 'none' or comma-separated names from {known}")
        installed = {str(t) for t in get_available_trackers()}
        missing = [name for name in names if name != "all" and name not in installed]
        if missing:
            raise ValueError(f"--report_to {self.report_to!r}: the package of {', '.join(missing)} is not installed "
                             f"here (pip install {' '.join(missing)}); installed trackers: "
                             f"{sorted(installed) or 'none'}")
        return names

    def to_dict(self) -> dict:
        """Plain-JSON view (for run_summary.json and the model card)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------- parsing


def build_parser() -> HfArgumentParser:
    """The argparse parser of `TrainArguments` (HfArgumentParser: one flag per field)."""
    return HfArgumentParser(TrainArguments, description="Train PIG (stage 1 and/or 2) with accelerate.")


def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(TrainArguments)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainArguments)}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check a YAML value against a field's type annotation; return it in the field's type.

    Integers are accepted for floats, and strings for floats (YAML 1.1 reads `3e-6` as a string).
    Raises ValueError naming `where` (file and key) and the expected type.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if origin is Literal:
        as_text = str(value) if isinstance(value, (int, str)) and not isinstance(value, bool) else value
        if as_text not in args:
            raise ValueError(f"{where}: {value!r} is not one of {list(args)}")
        return as_text
    if origin is list:
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true/false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, dict):  # model_config: a mapping in YAML, a JSON string on the command line
            return json.dumps(value)
        if isinstance(value, (list, bool)) or value is None:
            raise ValueError(f"{where}: expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"{where}: unsupported field type {annotation!r}")


def load_recipe(path: str | Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML recipe (following `base:` chains) into {field name: typed value}.

    Raises FileNotFoundError for a missing file and ValueError for a key that is not a flag (with the closest
    names), a wrongly typed value, or a `base:` cycle.
    """
    path = Path(path).resolve()
    if path in _seen:
        raise ValueError(f"{path}: `base:` cycle through {[str(p) for p in _seen]}")
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a recipe must be a YAML mapping of flag names to values, got {type(raw).__name__}")
    values: dict[str, Any] = {}
    if BASE_KEY in raw:
        values.update(load_recipe(path.parent / str(raw.pop(BASE_KEY)), _seen + (path,)))
    types_by_name = _field_types()
    for key, value in raw.items():
        name = KEY_ALIASES.get(key, key)
        if name not in types_by_name or name == "config":
            close = difflib.get_close_matches(str(key), list(types_by_name), n=3)
            hint = f"; did you mean {close}?" if close else ""
            raise ValueError(f"{path}: unknown key {key!r} (not a train.py flag){hint}")
        values[name] = _coerce(value, types_by_name[name], f"{path}: key {key!r}")
    return values


def parse_args(argv: list[str] | None = None) -> TrainArguments:
    """Parse `argv` (default: sys.argv[1:]): defaults < `--config` recipe < command-line flags."""
    parser = build_parser()
    pre, _ = parser.parse_known_args(argv)
    if pre.config:
        parser.set_defaults(**load_recipe(pre.config))
    (args,) = parser.parse_args_into_dataclasses(args=argv, look_for_args_file=False)
    return args
