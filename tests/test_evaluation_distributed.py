"""Evaluation during training on 2 processes (gloo, forked): each process embeds its share of the split, and both
get the metrics of one process embedding everything, unreadable videos included."""

import json
import os
import shutil
import socket

import datasets
import pytest
import torch
import torch.multiprocessing as mp
from helpers import tiny_pig

from training.args import parse_args
from training.eval_retrieval import evaluate_retrieval
import training.evaluation as evaluation
from training.evaluation import evaluate

WORLD_SIZE = 2


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    """5 test videos of the synthetic benchmark (shares of 3 and 2 rows); the 4th is corrupt."""
    from datasets_scripts.loading import load_benchmark
    from datasets_scripts.synthetic import generate_synthetic

    folder = tmp_path_factory.mktemp("synthetic")
    data = generate_synthetic(folder / "data", seed=0, num_train=1, num_test=5, num_images=0, progress=False)
    test = load_benchmark("synthetic", data, split="test", cache_dir=folder / "hf").to_dict()
    broken = folder / "broken.mp4"
    shutil.copy(test["video"][3], broken)
    broken.write_bytes(broken.read_bytes()[:100])
    test["video"][3] = str(broken)
    return datasets.Dataset.from_dict(test)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank, port, rows, result_dir):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD_SIZE))
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    accelerator = Accelerator(cpu=True)
    assert accelerator.num_processes == WORLD_SIZE
    model, processor = tiny_pig()
    args = parse_args(["--eval_batch_size", "2", "--dataloader_num_workers", "0"])
    embedded = []  # the rows this process embedded
    real_embed_split = evaluation.embed_split
    evaluation.embed_split = lambda model, processor, share, **kw: (
        embedded.extend(share["video_id"]) or real_embed_split(model, processor, share, **kw))
    metrics = evaluate(accelerator, model, processor, rows, args)
    with open(f"{result_dir}/rank{rank}.json", "w") as handle:
        json.dump({"metrics": metrics, "embedded": embedded}, handle)
    accelerator.wait_for_everyone()
    torch.distributed.destroy_process_group()


def test_two_processes_get_the_metrics_of_one(tmp_path, rows):
    mp.start_processes(_worker, args=(_free_port(), rows, str(tmp_path)), nprocs=WORLD_SIZE, join=True,
                       start_method="fork")
    model, processor = tiny_pig()
    expected = evaluate_retrieval(model, processor, rows, batch_size=2, show_progress=False)
    assert expected["num_skipped_videos"] == 1 and expected["num_videos"] == 4  # the broken one is in share 2
    results = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(WORLD_SIZE)]
    assert [r["embedded"] for r in results] == [rows["video_id"][:3], rows["video_id"][3:]]
    for rank, result in enumerate(results):
        assert result["metrics"] == pytest.approx(expected), rank
