"""What FSDP needs from the model: no scalar parameter.

FSDP (FSDP1 and FSDP2 alike, torch 2.13) refuses 0-d parameters, and CLIP's `logit_scale` is one. Under FSDP the
trainer therefore stores every scalar parameter as a 1-element vector for the run (the model's arithmetic is the
same: the scale broadcasts) and writes it back as a scalar wherever a full model leaves the run (`save_pretrained`,
the evaluation copy), so that saved models keep CLIP's format. Checkpoints of the run (`save_state`) keep the
vector, which the resumed run, prepared the same way, expects.

The wrap policy itself is configuration: training/configs/accelerate/fsdp_4gpu.yaml.
"""

from __future__ import annotations

import torch

SCALAR_PARAMETERS_ATTRIBUTE = "pig_scalar_parameters"


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

