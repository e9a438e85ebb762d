"""MSR-VTT from the CLIP4Clip-family files (docs/datasets-usage.md; formats in shared docs/datasets.md §2).

Settings (configs):
    9k    train: the 9,000 ids of `MSRVTT_train.9k.csv`, all 20 captions each (from `MSRVTT_data.json`);
          test: 1k-A, the 1,000 (video, sentence) rows of `MSRVTT_JSFUSION_test.csv` (one caption per video).
    7k    train: the 7,010 ids of `MSRVTT_train.7k.csv` (official train+val); test: 1k-A.
    full  official split: train 6,513 / validation 497 / test 2,990 videos (`MSRVTT_{train,val,test}.full.csv`
          or the collaborative-experts `*_list_full.txt`), all 20 captions per video (multi-sentence protocol).

The test split of 9k/7k reads only the JSFUSION csv. Every other split needs the captions file
(`MSRVTT_data.json`, Frozen-in-Time's `MSR_VTT.json`, or the official `train_val_videodatainfo.json` +
`test_videodatainfo.json`). Videos: `<video_id>.mp4` (or any common extension) under video_dir.
"""

from __future__ import annotations

import csv
import json
import os
from collections import defaultdict
from pathlib import Path

from .common import (BenchmarkBuilder, BenchmarkConfig, BenchmarkFileError, find_annotation_file, group_pairs,
                     read_id_list, rows_with_captions)

CAPTION_FILES = ("MSRVTT_data.json", "MSR_VTT.json")
OFFICIAL_CAPTION_FILES = ("train_val_videodatainfo.json", "test_videodatainfo.json")
JSFUSION_TEST = ("MSRVTT_JSFUSION_test.csv",)
ID_LISTS = {
    ("9k", "train"): ("MSRVTT_train.9k.csv", "train_list_jsfusion.txt"),
    ("7k", "train"): ("MSRVTT_train.7k.csv",),
    ("full", "train"): ("MSRVTT_train.full.csv", "train_list_full.txt"),
    ("full", "validation"): ("MSRVTT_val.full.csv", "val_list_full.txt"),
    ("full", "test"): ("MSRVTT_test.full.csv", "test_list_full.txt"),
}


def parse_id_file(path: str | os.PathLike) -> list[str]:
    """Video ids from a split file: a csv with a `video_id` column (`MSRVTT_train.9k.csv`) or a one-id-per-line
    txt list (`train_list_full.txt`). Order is kept; duplicates are an error."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "video_id" not in reader.fieldnames:
                raise ValueError(f"{path}: expected a csv with a 'video_id' column, got columns {reader.fieldnames}")
            ids = [row["video_id"].strip() for row in reader if row["video_id"].strip()]
    else:
        ids = read_id_list(path)
    duplicated = len(ids) - len(set(ids))
    if duplicated:
        raise ValueError(f"{path}: {duplicated} duplicated video ids; expected each video once")
    if not ids:
        raise ValueError(f"{path}: no video ids")
    return ids


def parse_jsfusion_csv(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(video_id, sentence) rows of `MSRVTT_JSFUSION_test.csv` (columns key, vid_key, video_id, sentence)."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"video_id", "sentence"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected key,vid_key,video_id,sentence")
        pairs = []
        for line_number, row in enumerate(reader, 2):
            if not row["video_id"] or row["sentence"] is None:
                raise ValueError(f"{path}:{line_number}: empty video_id or sentence")
            pairs.append((row["video_id"].strip(), row["sentence"].strip()))
    if not pairs:
        raise ValueError(f"{path}: no rows")
    return pairs


def parse_msrvtt_captions(paths: list[str | os.PathLike]) -> dict[str, list[str]]:
    """{video_id: [captions in file order]} from `MSRVTT_data.json`-style files (object with a `sentences` list
    of {video_id, caption, ...}; the official videodatainfo files have the same shape, so several can be merged).
    """
    captions: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
        if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
            raise ValueError(f"{path}: expected a JSON object with a 'sentences' list (MSRVTT_data.json format)")
        for index, sentence in enumerate(data["sentences"]):
            if not isinstance(sentence, dict) or "video_id" not in sentence or "caption" not in sentence:
                raise ValueError(f"{path}: sentences[{index}] lacks 'video_id' or 'caption': {sentence!r}")
            captions[sentence["video_id"]].append(sentence["caption"].strip())
    return dict(captions)


class MSRVTT(BenchmarkBuilder):
    """MSR-VTT text-to-video retrieval (10,000 YouTube clips, 20 captions each)."""

    BENCHMARK_NAME = "msrvtt"
    BUILDER_CONFIGS = [
        BenchmarkConfig(name="9k", split_names=("train", "test"),
                        description="train 9,000 videos x 20 captions; test 1k-A (1,000 videos, one caption each)"),
        BenchmarkConfig(name="7k", split_names=("train", "test"),
                        description="train 7,010 videos (official train+val) x 20 captions; test 1k-A"),
        BenchmarkConfig(name="full", split_names=("train", "validation", "test"),
                        description="official split 6,513/497/2,990 videos, all 20 captions (multi-sentence)"),
    ]
    DEFAULT_CONFIG_NAME = "9k"

    @classmethod
    def split_files(cls, config, split, data_dir):
        if config.name in ("9k", "7k") and split == "test":
            return {"test_csv": find_annotation_file(data_dir, JSFUSION_TEST, "MSR-VTT 1k-A test")}
        files = {"ids": find_annotation_file(data_dir, ID_LISTS[(config.name, split)],
                                             f"MSR-VTT {config.name} {split} id list")}
        caption_file = find_annotation_file(data_dir, CAPTION_FILES, "MSR-VTT captions", required=False)
        if caption_file is not None:
            files["captions"] = caption_file
        else:
            official = [find_annotation_file(data_dir, (name,), "", required=False) for name in OFFICIAL_CAPTION_FILES]
            if None in official:
                raise BenchmarkFileError(
                    f"MSR-VTT {config.name} {split} needs the captions: one of {list(CAPTION_FILES)} or both "
                    f"{list(OFFICIAL_CAPTION_FILES)} under {data_dir} (searched recursively)")
            files.update({f"captions_{i}": path for i, path in enumerate(official)})
        return files

    def _rows_for_split(self, split, files):
        if "test_csv" in files:
            return [{"video_id": video_id, "captions": texts, "start": None, "end": None}
                    for video_id, texts in group_pairs(parse_jsfusion_csv(files["test_csv"]))]
        caption_paths = [path for role, path in sorted(files.items()) if role.startswith("captions")]
        return rows_with_captions(parse_id_file(files["ids"]), parse_msrvtt_captions(caption_paths),
                                  source=f"{files['ids']} + {', '.join(map(str, caption_paths))}")
