"""What FSDP needs from the model: no scalar parameter.

FSDP (FSDP1 and FSDP2 alike, torch 2.13) refuses 0-d parameters, and CLIP's `logit_scale` is one. Under FSDP the
trainer therefore stores every scalar parameter as a 1-element vector for the run (the model's arithmetic is the
same: the scale broadcasts) and writes it back as a scalar wherever a full model leaves the run (`save_pretrained`,
the evaluation copy), so that saved models keep CLIP's format. Checkpoints of the run (`save_state`) keep the
vector, which the resumed run, prepared the same way, expects.

The optimizer's sharded state is saved and loaded here too (`save_sharded_optimizer`, `load_sharded_optimizer`,
called by the trainer's checkpointing under FSDP), not by accelerate: accelerate's FSDP1 `load_state` reads the
optimizer into `optimizer.state_dict()` of the optimizer it is given, which for a resumed run is fresh and holds
no moments, so nothing is loaded and Adam silently restarts. torch.distributed.checkpoint's
`get_optimizer_state_dict` initialises the moments first. A second problem: a small parameter (the logit scale,
the temporal embedding) can lie wholly on one process; the others then have no entry for it and the strict loader
mistakes the checkpoint for an old-format one ("Missing key in checkpoint state_dict: optimizer.param_groups").
So each process loads the entries it has, after checking that every one of them is in the checkpoint and that
together the processes cover all of it. `tests/test_train_fsdp.py` resumes a 2-process run from such a
checkpoint and gets the straight run's next loss and weights exactly.

The wrap policy itself is configuration: training/configs/accelerate/fsdp_4gpu.yaml.
"""

from __future__ import annotations

from pathlib import Path

import torch

SCALAR_PARAMETERS_ATTRIBUTE = "pig_scalar_parameters"
OPTIMIZER_DIRECTORY = "pig_sharded_optimizer"  # inside a checkpoint folder, next to accelerate's files


def vectorize_scalar_parameters(model: torch.nn.Module) -> list[str]:
    """Replace every 0-d parameter of `model` by a 1-element one (same value, same requires_grad), in place; return
    their names, also kept on the model for `restore_scalar_shapes`. Call before the optimizer is built."""
    names = []
    for name, parameter in list(model.named_parameters()):
        if parameter.dim() == 0:
            owner_name, _, attribute = name.rpartition(".")
            owner = model.get_submodule(owner_name) if owner_name else model
            setattr(owner, attribute, torch.nn.Parameter(parameter.detach().reshape(1).clone(),
                                                         requires_grad=parameter.requires_grad))
            names.append(name)
    setattr(model, SCALAR_PARAMETERS_ATTRIBUTE, names)
    return names


def restore_scalar_shapes(state_dict: dict, model: torch.nn.Module) -> dict:
    """`state_dict` (of `model`, unwrapped) with the parameters `vectorize_scalar_parameters` changed back to 0-d."""
    names = getattr(model, SCALAR_PARAMETERS_ATTRIBUTE, ())
    return {k: (v.reshape(()) if k in names and v.numel() == 1 else v) for k, v in state_dict.items()}



def save_sharded_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: str | Path) -> None:
    """Write the optimizer state of an FSDP-wrapped `model` with torch.distributed.checkpoint (each process its
    shards) into `directory`. A collective: call it on every process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    dcp.save({"optimizer": get_optimizer_state_dict(model, optimizer)}, checkpoint_id=str(directory))


def load_sharded_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, directory: str | Path) -> None:
    """Load what `save_sharded_optimizer` wrote into `optimizer` (fresh or not) of the FSDP-wrapped `model`, prepared
    as the saving run's was. A collective. Raises ValueError naming the entries when the checkpoint does not match
    this model and optimizer (another model, another process count's layout is fine)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint._nested_dict import flatten_state_dict
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict, set_optimizer_state_dict

    directory = Path(directory)
    if not (directory / ".metadata").is_file():
        raise FileNotFoundError(f"{directory}: no sharded optimizer state (no .metadata); was the checkpoint "
                                "written by a run without FSDP?")
    state = {"optimizer": get_optimizer_state_dict(model, optimizer)}  # moments initialised for a fresh optimizer
    local = set(flatten_state_dict(state)[0])
    saved = set(FileSystemReader(str(directory)).read_metadata().state_dict_metadata)
    unknown = sorted(local - saved)
    if unknown:
        raise ValueError(f"{directory}: the optimizer state has no entry {unknown[0]!r} ({len(unknown)} missing); "
                         "it was saved for another model or optimizer")
    everyone = [local]
    if dist.is_initialized():
        everyone = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, local)
    uncovered = sorted(saved - set().union(*everyone))
    if uncovered:
        raise ValueError(f"{directory}: no process has the optimizer entry {uncovered[0]!r} ({len(uncovered)} in "
                         "all); it was saved for another model or optimizer")
    # partial: a process skips the entries of parameters that lie wholly on another process (checked above)
    dcp.load(state, checkpoint_id=str(directory), planner=DefaultLoadPlanner(allow_partial_load=True))
    set_optimizer_state_dict(model, optimizer, state["optimizer"])
