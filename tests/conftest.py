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


# The one tiny model of the tests: 32 px frames, patch 8 -> P = 16 patches, L = 17 tokens per frame, M = 4 globals.
NUM_FRAMES = 3
TOP_K = 5
IMAGE_SIZE = 32
# CLIP's real vocabulary and special ids, for models fed by PIGProcessor's real CLIP tokenizer.
REAL_VOCABULARY = dict(vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)


def tiny_clip_config_dict(real_vocabulary: bool = False, **overrides) -> dict:
    """The tiny random CLIP config (a dict) every test model is built from; `overrides` merge into it.

    bos/eos/pad ids lie inside the tiny 99-token vocabulary (transformers 5 pools the EOS position by id);
    `real_vocabulary=True` uses CLIP's 49,408 tokens instead (models fed by the real tokenizer).
    """
    text = dict(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, max_position_embeddings=77, bos_token_id=97,
                eos_token_id=98, pad_token_id=98)
    if real_vocabulary:
        text.update(REAL_VOCABULARY)
    vision = dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                  image_size=IMAGE_SIZE, patch_size=8)
    cfg = dict(text_config=text, vision_config=vision, projection_dim=24)
    for key, value in overrides.items():
        if key in ("text_config", "vision_config"):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def tiny_pig_config(real_vocabulary: bool = False, **overrides):
    """The tiny `PIGConfig` of the tests (NUM_FRAMES frames, TOP_K ITS tokens); `overrides` are PIGConfig fields."""
    from modeling_pig import PIGConfig

    kwargs = dict(clip_config=tiny_clip_config_dict(real_vocabulary), num_frames=NUM_FRAMES, its_top_k=TOP_K)
    kwargs.update(overrides)
    return PIGConfig(**kwargs)


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    """`make test` runs two xdist workers on a 2-core machine: one torch thread each avoids oversubscription,
    which makes the tiny models of the tests many times slower. Subprocesses get OMP_NUM_THREADS=1 too. Every
    test starts on one thread and the count is restored after it (a benchmark smoke test may change it)."""
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


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


@pytest.fixture(scope="session")
def synthetic_dir(synthetic_benchmark):
    """The name the training tests use for `synthetic_benchmark`."""
    return synthetic_benchmark


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """`helpers.tiny_pig()` saved to a folder (model + processor); read-only, shared by the CLI and index tests."""
    from helpers import tiny_pig

    folder = tmp_path_factory.mktemp("tiny_pig")
    model, processor = tiny_pig()
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
