"""Shared fixtures. Everything here is offline.

../shared/data (or $PIG_SHARED_DATA) is optional: tests that need it skip when it is missing, except with
PIG_REQUIRE_SHARED_DATA=1 (set by .ci/run), where a missing folder fails them instead, so CI cannot go green by
skipping.
"""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PIG_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def shared_data_missing(reason: str):
    """Skip (default) or fail (PIG_REQUIRE_SHARED_DATA=1) a test whose shared data is missing."""
    if os.environ.get("PIG_REQUIRE_SHARED_DATA", "").strip() not in ("", "0"):
        pytest.fail(f"{reason}; PIG_REQUIRE_SHARED_DATA=1 makes this an error (unset it to skip)", pytrace=False)
    pytest.skip(reason)


def tiny_clip_config_dict(**overrides):
    """A tiny random CLIP config (dict) that the model tests share.

    bos/eos/pad ids lie inside the tiny vocabulary (transformers 5 pools the EOS position by id).
    image 32 px / patch 8 -> 16 patches per frame.
    """
    text = dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=97,
                eos_token_id=98, pad_token_id=98)
    vision = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  image_size=32, patch_size=8)
    cfg = dict(text_config=text, vision_config=vision, projection_dim=24)
    for key, value in overrides.items():
        if key in ("text_config", "vision_config"):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture(autouse=True, scope="session")
def one_intra_op_thread():
    """`make test` runs two xdist workers on a 2-core machine: one torch thread each avoids oversubscription,
    which makes the tiny models of the tests many times slower. Subprocesses get OMP_NUM_THREADS=1 too."""
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield


@pytest.fixture
def tiny_clip_config():
    return tiny_clip_config_dict()


@pytest.fixture(scope="session")
def shared_data():
    if not SHARED_DATA.is_dir():
        shared_data_missing(f"shared data folder not present at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def shared_videos(shared_data):
    folder = shared_data / "videos"
    videos = sorted(p for p in folder.glob("*") if p.suffix.lower() in {".mp4", ".mov", ".avi", ".webm", ".mkv"})
    if not videos:
        shared_data_missing(f"no real videos in {folder}")
    return videos


SYNTHETIC_PARAMS = dict(seed=0, num_train=8, num_test=4, num_images=8)
SYNTHETIC_ARGS = ["--synthetic_num_train", "8", "--synthetic_num_test", "4", "--synthetic_num_images", "8"]


@pytest.fixture(scope="session")
def synthetic_benchmark(tmp_path_factory):
    """The tiny synthetic benchmark the training tests share, generated once per session (per xdist worker).

    train.py given `--data_dir` of it and `SYNTHETIC_ARGS` reuses it as it is. Tests must not modify it: copy it
    (`shutil.copytree`) to break files.
    """
    from datasets_scripts.synthetic import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "data", progress=False, **SYNTHETIC_PARAMS)
