"""The FSDP config (training/configs/accelerate/fsdp_4gpu.yaml) on 2 CPU processes (gloo, forked).

accelerate only builds FSDP on GPUs, so the model is wrapped here exactly as `Accelerator.prepare` does it (FSDP1,
the plugin made of the YAML's settings, its wrap policy). Each ViP encoder layer, text layer and
generator layer must become its own FSDP unit; one step must give DDP's loss and weights; the model's sharded
state (torch.distributed.checkpoint, what `save_state` writes with SHARDED_STATE_DICT) must load back exactly. FSDP
refuses scalar parameters: the model is prepared as train.py prepares it (training/sharding.py).
The optimizer's sharded state goes through training/sharding.py (accelerate's FSDP1 load restores no moments into
a fresh optimizer): a run resumed from the model and optimizer checkpoint of step 1 must take step 2 exactly as the
straight run does, and one resumed without the optimizer state must not.
"""

import copy
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import yaml
from helpers import build_model, random_inputs

from training.sharding import (load_sharded_optimizer, restore_scalar_shapes, save_sharded_optimizer,
                               vectorize_scalar_parameters)

CONFIG = Path(__file__).resolve().parents[1] / "training" / "configs" / "accelerate" / "fsdp_4gpu.yaml"
WORLD_SIZE = 2
BATCH = 8  # global; 4 per process


def fsdp_settings() -> dict:
    return yaml.safe_load(CONFIG.read_text())["fsdp_config"]


def _shard(model):
    """`FSDP(model, ...)` with the keyword arguments `Accelerator.prepare` builds from the YAML's settings (CPU, no
    mixed precision; without sync_module_states, which needs a GPU and only copies rank 0's initial weights, the
    same on every process here)."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from torch.distributed.fsdp import FullyShardedDataParallel

    settings = fsdp_settings()
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=settings["fsdp_version"], auto_wrap_policy=settings["fsdp_auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=settings["fsdp_transformer_layer_cls_to_wrap"].split(","),
        sharding_strategy=settings["fsdp_sharding_strategy"], state_dict_type=settings["fsdp_state_dict_type"],
        use_orig_params=settings["fsdp_use_orig_params"], sync_module_states=False,
        backward_prefetch=settings["fsdp_backward_prefetch"], forward_prefetch=settings["fsdp_forward_prefetch"],
        cpu_ram_efficient_loading=False)
    assert vectorize_scalar_parameters(model) == ["clip.logit_scale"]  # what train.py does under FSDP
    plugin.set_auto_wrap_policy(model)
    sharded = FullyShardedDataParallel(
        model, sharding_strategy=plugin.sharding_strategy, auto_wrap_policy=plugin.auto_wrap_policy,
        sync_module_states=plugin.sync_module_states, backward_prefetch=plugin.backward_prefetch,
        forward_prefetch=plugin.forward_prefetch, use_orig_params=plugin.use_orig_params,
        limit_all_gathers=plugin.limit_all_gathers, device_id=torch.device("cpu"))
    return sharded, plugin


def _step(model, optimizer, batch):
    loss = model(**batch, return_loss=True, gather_across_processes=True).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def _full_state(model):
    """The full state dict (every process), in the saved format (scalar logit scale), as train.py saves it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
    return restore_scalar_shapes(full, model.module)


def _worker(rank, init_file, checkpoint_dir):
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        model = build_model(seed=0, interaction_dropout=0.0).train()
        batch = random_inputs(n_text=BATCH, n_video=BATCH, seed=5)
        local = [{k: v.chunk(WORLD_SIZE)[rank] for k, v in batch.items()} for batch in
                 (batch, random_inputs(n_text=BATCH, n_video=BATCH, seed=6))]

        ddp = DistributedDataParallel(copy.deepcopy(model))
        ddp_optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-3)
        ddp_loss = _step(ddp, ddp_optimizer, local[0])

        sharded, _ = _shard(copy.deepcopy(model))
        units = {name.replace("_fsdp_wrapped_module.", "") for name, module in sharded.named_modules()
                 if isinstance(module, FullyShardedDataParallel)}
        inner = sharded.module
        expected_units = ({"", "clip.vision_model.encoder.layers.0", "clip.vision_model.encoder.layers.1",
                           "clip.text_model.encoder.layers.0", "clip.text_model.encoder.layers.1",
                           "generator.encoder.layers.0", "generator.encoder.layers.1"})
        assert units == expected_units, sorted(units ^ expected_units)
        assert type(inner.clip.vision_model.encoder.layers[0].module).__name__ == "PIGViPEncoderLayer"
        for unit in (module for module in sharded.modules() if isinstance(module, FullyShardedDataParallel)):
            flat = unit._flat_param  # this process holds half of each unit's parameters
            assert flat.numel() * WORLD_SIZE >= flat._unpadded_unsharded_size.numel() > flat.numel()

        optimizer = torch.optim.AdamW(sharded.parameters(), lr=1e-3)
        loss = _step(sharded, optimizer, local[0])
        torch.testing.assert_close(loss, ddp_loss, rtol=1e-5, atol=1e-6)
        full = _full_state(sharded)
        initial = model.state_dict()
        moved = max((ddp.module.state_dict()[name] - initial[name]).abs().max().item() for name in initial)
        assert moved > 1e-4  # the step is far larger than the tolerance
        for name, tensor in ddp.module.state_dict().items():
            torch.testing.assert_close(full[name], tensor, rtol=0, atol=1e-5, msg=name)

        # sharded checkpoint round trip of the model (torch.distributed.checkpoint: each process writes and reads
        # its own shards, as accelerate's save_state/load_state do with SHARDED_STATE_DICT)
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        dcp.save({"model": get_model_state_dict(sharded)}, checkpoint_id=checkpoint_dir)
        restored, _ = _shard(build_model(seed=1, interaction_dropout=0.0).train())
        assert not torch.equal(_full_state(restored)["vip.proxy_tokens"], full["vip.proxy_tokens"])
        state = {"model": get_model_state_dict(restored)}
        dcp.load(state, checkpoint_id=checkpoint_dir)
        set_model_state_dict(restored, state["model"])
        for name, tensor in _full_state(restored).items():
            assert torch.equal(tensor, full[name]), name

        # resume: model + optimizer state saved after step 1 -> step 2 equals the straight run's step 2
        save_sharded_optimizer(sharded, optimizer, f"{checkpoint_dir}_optimizer")
        straight_loss = _step(sharded, optimizer, local[1])
        straight = _full_state(sharded)
        resumed_losses = {}
        for with_optimizer in (True, False):
            resumed, _ = _shard(build_model(seed=1, interaction_dropout=0.0).train())
            resumed_optimizer = torch.optim.AdamW(resumed.parameters(), lr=1e-3)  # fresh: no moments yet
            state = {"model": get_model_state_dict(resumed)}
            dcp.load(state, checkpoint_id=checkpoint_dir)
            set_model_state_dict(resumed, state["model"])
            if with_optimizer:
                load_sharded_optimizer(resumed, resumed_optimizer, f"{checkpoint_dir}_optimizer")
            resumed_losses[with_optimizer] = _step(resumed, resumed_optimizer, local[1])
            after = _full_state(resumed)
            if with_optimizer:
                for name, tensor in straight.items():
                    assert torch.equal(after[name], tensor), name
            else:  # Adam restarted: the step differs (what accelerate's load silently did)
                assert max((after[name] - tensor).abs().max().item() for name, tensor in straight.items()) > 1e-4
        assert torch.equal(resumed_losses[True], straight_loss) and torch.equal(resumed_losses[False], straight_loss)

        # a checkpoint of another model is refused with the entry it lacks
        other, _ = _shard(build_model(seed=1, use_frame_cls=False, use_pseudo_query=False).train())
        assert not any("generator" in name for name, _ in other.named_parameters())  # the CLIP-ViP layout
        other_optimizer = torch.optim.AdamW(other.parameters(), lr=1e-3)
        with pytest.raises(ValueError, match="optimizer.state.generator.*saved for another model or optimizer"):
            load_sharded_optimizer(other, other_optimizer, f"{checkpoint_dir}_optimizer")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp_shards_every_layer_matches_ddp_and_round_trips_a_sharded_checkpoint(tmp_path):
    """Units, one step against DDP, model state round trip, and a resume with the optimizer's sharded state."""
    settings = fsdp_settings()
    assert settings["fsdp_version"] == 1 and settings["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
    mp.start_processes(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path / "checkpoint")),
                       nprocs=WORLD_SIZE, join=True, start_method="fork")
