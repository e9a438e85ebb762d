"""The loss over a torch.distributed world equals the single-process loss on the concatenated batch.

Two gloo processes (forked, so nothing is re-imported and the test takes seconds; file rendezvous, so no ports)
each hold half of the batch. Features are all-gathered with gradients inside `PIGModel.forward`
(`gather_features`, asked for with `gather_across_processes=True`); after averaging the gradients over ranks (what DDP does), they must equal the gradients of
one process that sees the whole batch.
"""

from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import build_model, random_inputs

WORLD_SIZE = 2
BATCH = 4


def _model_and_batch():
    return build_model(seed=0, interaction_dropout=0.0), random_inputs(n_text=BATCH, n_video=BATCH, seed=5)


def _worker(rank, init_file, result_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        model, batch = _model_and_batch()
        local = {name: tensor.chunk(WORLD_SIZE)[rank] for name, tensor in batch.items()}
        out = model(**local, return_loss=True, gather_across_processes=True)
        out.loss.backward()
        grads = {}
        for name, param in model.named_parameters():
            grad = param.grad.clone() if param.grad is not None else torch.zeros_like(param)
            dist.all_reduce(grad)  # DDP: average of the per-rank gradients
            grads[name] = grad / WORLD_SIZE
        torch.save(
            {"loss": out.loss.detach(), "contrastive": out.contrastive_loss.detach(),
             "generation": out.generation_loss.detach(), "grads": grads},
            f"{result_dir}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_gathered_loss_and_gradients_equal_the_single_process_global_batch(tmp_path):
    mp.start_processes(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD_SIZE, join=True,
                       start_method="fork")

    model, batch = _model_and_batch()
    out = model(**batch, return_loss=True)
    out.loss.backward()
    for rank in range(WORLD_SIZE):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(result["loss"], out.loss.detach())
        torch.testing.assert_close(result["contrastive"], out.contrastive_loss.detach())
        torch.testing.assert_close(result["generation"], out.generation_loss.detach())
        for name, param in model.named_parameters():
            expected = param.grad if param.grad is not None else torch.zeros_like(param)
            error = (result["grads"][name] - expected).norm()
            assert error <= 1e-5 * expected.norm() + 1e-5, (name, error.item(), expected.norm().item())
    # the comparison is not vacuous: a half batch gives another loss
    half = {name: tensor[: BATCH // 2] for name, tensor in batch.items()}
    assert not torch.allclose(model(**half, return_loss=True).loss, out.loss)


def _lonely_worker(rank, init_file, result_dir):
    # a short collective timeout: a forward that all-gathers on rank 0 alone fails after 20 s instead of hanging
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE,
                            timeout=timedelta(seconds=20))
    try:
        if rank == 0:  # evaluation, a notebook under torchrun: only one rank runs the model
            model, batch = _model_and_batch()
            out = model(**batch, return_loss=True)
            torch.save({"loss": out.loss.detach()}, f"{result_dir}/lonely.pt")
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_a_forward_with_loss_on_one_rank_only_does_not_wait_for_the_others(tmp_path):
    mp.start_processes(_lonely_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD_SIZE,
                       join=True, start_method="fork")
    model, batch = _model_and_batch()
    # no gather by default: the loss is the one of this call's batch, as on a single process
    torch.testing.assert_close(torch.load(tmp_path / "lonely.pt")["loss"], model(**batch, return_loss=True).loss)
