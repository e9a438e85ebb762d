"""Data-parallel training equals one process on the concatenated batch (2 CPU processes, gloo, torchrun).

The contrastive loss spans the global batch: the model all-gathers features with gradients and DDP averages the
gradients. One optimizer step on 2 processes x 4 videos must therefore give the same loss and the same weights
as one process on the 8 videos (dropout off). A process-local loss would not: it has 4x4 instead of 8x8 logits.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SYNTHETIC_ARGS
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "training" / "train.py"


def _argv(output_dir, data_dir, steps=1):
    return [str(TRAIN), "--output_dir", str(output_dir), "--data_dir", str(data_dir),
            *SYNTHETIC_ARGS,
            "--stage", "2", "--train_batch_size", "8", "--max_train_steps", str(steps), "--warmup_ratio", "0",
            "--disable_dropout", "--no_do_final_eval", "--dataloader_num_workers", "0", "--logging_steps", "1"]


def _free_port() -> int:
    """A TCP port nobody listens on now (torchrun's `--master_port 0` gives every process its own store)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env():
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(*argv):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
            "--master_port", str(_free_port()), *argv]


def _assert_same_weights(a_dir, b_dir, atol=1e-5):
    a, b = load_file(str(a_dir / "model.safetensors")), load_file(str(b_dir / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=atol, msg=name)
    return a


def _run(command, env):
    result = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_two_processes_take_the_same_step_as_one_process_on_the_whole_batch(tmp_path, synthetic_dir):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    single, double = tmp_path / "single", tmp_path / "double"
    _run([sys.executable, *_argv(single, synthetic_dir)], env)
    log = _run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
                *_argv(double, synthetic_dir)], env)
    assert "2 process(es)" in log and "global batch 8 (4 x 2 processes)" in log

    loss_single = json.loads((single / "train_log.jsonl").read_text().splitlines()[0])
    loss_double = json.loads((double / "train_log.jsonl").read_text().splitlines()[0])
    assert loss_double["loss"] == pytest.approx(loss_single["loss"], rel=1e-5)
    assert loss_double["contrastive_loss"] == pytest.approx(loss_single["contrastive_loss"], rel=1e-5)

    a, b = load_file(str(single / "model.safetensors")), load_file(str(double / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=0, atol=1e-5, msg=name)
    # the tolerance is far below the size of the step itself
    from training.args import parse_args
    from training.model import build_model

    initial = build_model(parse_args(_argv(single, synthetic_dir)[1:])).state_dict()
    assert max((a[name] - initial[name]).abs().max().item() for name in a) > 1e-4


@pytest.mark.slow
def test_gradient_caching_on_two_processes_takes_the_steps_of_one_process_on_the_whole_batch(tmp_path, synthetic_dir):
    # 2 steps of a global batch of 8: one process unchunked, against 2 processes x 4 videos in chunks of 2
    env = _env()
    single, chunked = tmp_path / "single", tmp_path / "chunked"
    _run([sys.executable, *_argv(single, synthetic_dir, steps=2)], env)
    log = _run(_torchrun(*_argv(chunked, synthetic_dir, steps=2), "--grad_cache_chunk_size", "2"), env)
    assert "global batch 8 (4 x 2 processes, chunks of 2)" in log
    for line_single, line_chunked in zip((single / "train_log.jsonl").read_text().splitlines(),
                                         (chunked / "train_log.jsonl").read_text().splitlines(), strict=True):
        assert json.loads(line_chunked)["loss"] == pytest.approx(json.loads(line_single)["loss"], rel=1e-5)
    _assert_same_weights(single, chunked)
