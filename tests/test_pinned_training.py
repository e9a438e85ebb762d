"""`--stage both --resume_from_checkpoint <explicit path>` with a checkpoint of either stage (issue 18).

A stage-1 checkpoint resumes stage 1 and then starts stage 2 fresh (from the stage-1 generator); a stage-2
checkpoint skips the finished stage 1 and resumes stage 2. Either way the final weights equal those of a run
that was never interrupted.
"""

import pytest
import torch
from safetensors.torch import load_file

from helpers import Interrupted, interrupt_after_checkpoint, tiny_argv
from helpers import run_train as run_main

COMMON = ["--stage", "both", "--stage1_max_train_steps", "2", "--max_train_steps", "2", "--checkpointing_steps", "1",
          "--no_do_final_eval"]


def run_train(output_dir, data_dir, *extra):
    return run_main(tiny_argv(output_dir, data_dir, *COMMON, *extra))


def run_until_checkpoint(output_dir, data_dir, stage, step):
    """A run that stops (raises Interrupted) right after saving the checkpoint of `stage` at `step`."""
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Interrupted):
        interrupt_after_checkpoint(patch, stage, step)
        run_train(output_dir, data_dir)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, synthetic_benchmark):
    out = tmp_path_factory.mktemp("straight") / "out"
    run_train(out, synthetic_benchmark)
    return load_file(str(out / "model.safetensors"))


def assert_same_weights(expected, folder):
    got = load_file(str(folder / "model.safetensors"))
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_explicit_stage1_checkpoint_resumes_stage1_then_trains_stage2_fresh(tmp_path, synthetic_benchmark, straight):
    out = tmp_path / "out"
    run_until_checkpoint(out, synthetic_benchmark, "1", 1)
    checkpoint = out / "stage1" / "checkpoints" / "step_1"
    assert checkpoint.is_dir() and not (out / "stage1" / "model.safetensors").exists()
    summary = run_train(out, synthetic_benchmark, "--resume_from_checkpoint", str(checkpoint))
    assert summary["stages"]["1"]["steps"] == 2 and summary["stages"]["2"]["steps"] == 2
    assert_same_weights(straight, out)


def test_explicit_stage2_checkpoint_skips_stage1_and_resumes_stage2(tmp_path, synthetic_benchmark, straight):
    out = tmp_path / "out"
    run_until_checkpoint(out, synthetic_benchmark, "2", 1)
    stage1_model = (out / "stage1" / "model.safetensors").stat().st_mtime_ns
    checkpoint = out / "checkpoints" / "step_1"
    assert checkpoint.is_dir()
    summary = run_train(out, synthetic_benchmark, "--resume_from_checkpoint", str(checkpoint))
    assert (out / "stage1" / "model.safetensors").stat().st_mtime_ns == stage1_model  # stage 1 not redone
    assert summary["stages"]["2"]["steps"] == 2
    assert_same_weights(straight, out)
