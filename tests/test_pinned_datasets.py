"""MSR-VTT 7k: the train split reads MSRVTT_train.7k.csv, not the 9k list (issue 18).

The fixture `tests/fixtures/datasets/msrvtt/MSRVTT_train.7k.csv` is an excerpt of the real file (its lines 1, 2,
3, 1113 and 2224: video0, video1000, video1, video2, in that order); the 9k fixture lists video0, video1, video2.
"""

import csv
import json
import shutil

import pytest

from conftest import FIXTURES
from datasets_scripts import load_benchmark

FIX = FIXTURES / "datasets" / "msrvtt"


def load(data_dir, cache, **kwargs):
    return load_benchmark("msrvtt", data_dir, missing_videos="keep", cache_dir=cache, **kwargs)


def test_msrvtt_7k_train_is_the_7k_csv_with_all_captions(tmp_path):
    train = load(FIX, tmp_path, config="7k", split="train")
    assert train["video_id"] == ["video0", "video1000", "video1", "video2"]
    assert train[1]["captions"] == ["a boy rides a bicycle", "a child cycles down a street"]
    assert train[0]["captions"] == ["a man plays a guitar", "someone is playing guitar on stage",
                                    "a musician performs a song"]
    nine = load(FIX, tmp_path, config="9k", split="train")
    assert nine["video_id"] == ["video0", "video1", "video2"]  # the other list, for contrast


def test_msrvtt_7k_test_is_1ka(tmp_path):
    test = load(FIX, tmp_path, config="7k", split="test")
    assert [(r["video_id"], r["captions"]) for r in test] == [
        ("video9770", ["a person is connecting something to system"]),
        ("video7020", ["a woman creating a fondant baby and flower"])]


def test_msrvtt_7k_train_on_the_real_csv_has_its_7010_videos_in_order(shared_data, tmp_path):
    real = shared_data / "annotations" / "msrvtt"
    with open(real / "MSRVTT_train.7k.csv", newline="") as handle:
        seven = [row["video_id"] for row in csv.DictReader(handle)]
    with open(real / "MSRVTT_train.9k.csv", newline="") as handle:
        nine = [row["video_id"] for row in csv.DictReader(handle)]
    data_dir = tmp_path / "msrvtt"
    data_dir.mkdir()
    for name in ("MSRVTT_train.7k.csv", "MSRVTT_train.9k.csv"):
        shutil.copy(real / name, data_dir / name)
    # MSRVTT_data.json is not available here: one made-up caption per video of either list
    ids = sorted(set(seven) | set(nine), key=lambda v: int(v[5:]))
    (data_dir / "MSRVTT_data.json").write_text(json.dumps(
        {"videos": [], "sentences": [{"video_id": v, "caption": f"caption of {v}"} for v in ids]}))
    train = load(data_dir, tmp_path / "cache", config="7k", split="train")
    assert len(train) == 7010
    assert train["video_id"] == seven
    assert seven[:2] == ["video0", "video1000"] and set(seven) == {f"video{i}" for i in range(7010)}
    assert train[7009]["captions"] == [f"caption of {seven[7009]}"]


@pytest.mark.parametrize("config", ["7k", "9k"])
def test_msrvtt_train_without_its_id_list_names_the_missing_file(tmp_path, config):
    (tmp_path / "MSRVTT_data.json").write_text((FIX / "MSRVTT_data.json").read_text())
    other = {"7k": "9k", "9k": "7k"}[config]
    shutil.copy(FIX / f"MSRVTT_train.{other}.csv", tmp_path / f"MSRVTT_train.{other}.csv")
    with pytest.raises(FileNotFoundError, match=f"MSRVTT_train.{config}.csv"):
        load(tmp_path, tmp_path / "cache", config=config, split="train")
