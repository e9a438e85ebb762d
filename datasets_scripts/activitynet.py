"""ActivityNet Captions paragraph-to-video retrieval (shared docs/datasets.md §4).

Files under data_dir: the official caption JSONs, objects keyed by video id (`"v_<youtube id>"`) with
`duration`, `timestamps` and `sentences`: `train.json` (or PDVC's `train_modified.json`), `val_1.json` (the
test set of the protocol) and `val_2.json`. When present, the id lists select the videos: CLIP4Clip's
`train_ids.json` / `val_ids.json` (JSON lists) or the collaborative-experts `train_list.txt` /
`val_1_list.txt` / `val_2_list.txt`.

Setting "paragraph" (CLIP4Clip): one row per video, caption = its sentences stripped of their leading spaces
and joined with single spaces; the clip is the whole video (start/end None; `duration` is given).
Video files may be named with or without the `v_` prefix (`v_abc.mp4` or `abc.mp4`): both are found.
"""

from __future__ import annotations

import json
import os

import datasets

from .common import (BenchmarkBuilder, BenchmarkConfig, base_features, find_annotation_file, paragraph,
                     read_id_list, select_by_list)

SPLIT_FILES = {
    # split: (caption files in order of preference, id lists in order of preference)
    "train": (("train.json", "train_modified.json"), ("train_ids.json", "train_list.txt")),
    "test": (("val_1.json",), ("val_ids.json", "val_1_list.txt")),
    "val_2": (("val_2.json",), ("val_2_list.txt",)),
}


def other_spelling(video_id: str) -> tuple[str, ...]:
    """The same ActivityNet video with / without the `v_` prefix."""
    return (video_id[2:],) if video_id.startswith("v_") else (f"v_{video_id}",)


def parse_activitynet_json(path: str | os.PathLike) -> dict[str, dict]:
    """{video_id: {"duration", "timestamps", "sentences"}} from an official caption JSON, checked field by field
    (`timestamps` and `sentences` must have the same length)."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object keyed by video id (ActivityNet Captions format)")
    for video_id, entry in data.items():
        if not isinstance(entry, dict) or not {"duration", "timestamps", "sentences"} <= set(entry):
            raise ValueError(f"{path}: entry {video_id!r} lacks 'duration', 'timestamps' or 'sentences'")
        if len(entry["timestamps"]) != len(entry["sentences"]):
            raise ValueError(f"{path}: entry {video_id!r} has {len(entry['timestamps'])} timestamps but "
                             f"{len(entry['sentences'])} sentences")
    return data


def read_ids(path: str | os.PathLike) -> list[str]:
    """Ids from a CLIP4Clip `*_ids.json` (JSON list) or a collaborative-experts `*_list.txt`."""
    if str(path).endswith(".json"):
        with open(path, encoding="utf-8") as handle:
            ids = json.load(handle)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError(f"{path}: expected a JSON list of video id strings")
        return ids
    return read_id_list(path)


def activitynet_paragraph_rows(annotations: dict[str, dict], listed: list[str] | None, source: str) -> list[dict]:
    """One row per (listed) video: the paragraph, the whole video, duration, timestamps and sentences."""
    rows = []
    for video_id in select_by_list(annotations, listed, source, alternatives=other_spelling):
        entry = annotations[video_id]
        rows.append({
            "video_id": video_id,
            "captions": [paragraph(entry["sentences"])],
            "start": None,
            "end": None,
            "duration": float(entry["duration"]),
            "timestamps": [[float(t) for t in pair] for pair in entry["timestamps"]],
            "sentences": [s.strip() for s in entry["sentences"]],
        })
    return rows


class ActivityNetCaptions(BenchmarkBuilder):
    """ActivityNet Captions: YouTube videos with dense captions; paragraph-to-video retrieval on val_1."""

    BENCHMARK_NAME = "activitynet"
    BUILDER_CONFIGS = [BenchmarkConfig(name="paragraph", split_names=("train", "test", "val_2"),
                                       description="one paragraph per video; test = val_1 (4,917 videos)")]

    def _features(self):
        return base_features(
            duration=datasets.Value("float64"),
            timestamps=datasets.List(datasets.List(datasets.Value("float64"))),  # per sentence [start, end] s
            sentences=datasets.List(datasets.Value("string")),
        )

    @classmethod
    def split_files(cls, config, split, data_dir):
        caption_names, list_names = SPLIT_FILES[split]
        captions = find_annotation_file(data_dir, caption_names, f"ActivityNet Captions {split} annotations")
        return {"captions": captions,
                "list": find_annotation_file(data_dir, list_names, "", required=False, near=captions)}

    def video_aliases(self, video_id):
        return other_spelling(video_id)

    def _rows_for_split(self, split, files):
        listed = read_ids(files["list"]) if files["list"] is not None else None
        return activitynet_paragraph_rows(parse_activitynet_json(files["captions"]), listed,
                                          source=f"{files['captions']} with {files['list'] or 'no id list'}")
