"""DiDeMo paragraph-to-video retrieval from the official LocalizingMoments files (shared docs/datasets.md §3).

Files under data_dir: `{train,val,test}_data.json` (official: a JSON list of per-sentence records with
`description`, `video`, `times`, ...) and, when present, the collaborative-experts lists
`{train,val,test}_list.txt` that select the videos of the standard protocol (test: 1,004 of the 1,037 videos).

Setting "paragraph" (CLIP4Clip): one row per video; its caption is every `description` of the video in JSON
order joined with single spaces; the clip is seconds 0-31 of the file (start=0.0, end=31.0).

Video files: the `video` field keeps the original container and sometimes ends with a bare "."
(`…5762149bfc.`); a file named exactly like it, or like it plus an extension (`….mov.mp4`), or with the
extension replaced (`….mp4`) is found.
"""

from __future__ import annotations

import json
import os

import datasets

from .common import (BenchmarkBuilder, BenchmarkConfig, base_features, find_annotation_file, paragraph,
                     read_id_list, select_by_list)

# CLIP4Clip reads seconds 0..31 of every DiDeMo video (annotations cover the first 30 s in 5 s chunks)
CLIP_START, CLIP_END = 0.0, 31.0
SPLIT_PREFIX = {"train": "train", "validation": "val", "test": "test"}


def parse_didemo_json(path: str | os.PathLike) -> dict[str, list[dict]]:
    """{video name: [records in file order]} from an official `*_data.json` (a list of records with
    `video`, `description`, `times`); validates the fields every row needs."""
    with open(path, encoding="utf-8") as handle:
        records = json.load(handle)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of sentence records (official DiDeMo format)")
    by_video: dict[str, list[dict]] = {}
    for index, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("video"), str) \
                or not isinstance(record.get("description"), str):
            raise ValueError(f"{path}: record {index} lacks a string 'video' or 'description': {record!r:.200}")
        if not isinstance(record.get("times", []), list):
            raise ValueError(f"{path}: record {index} has 'times' that is not a list of [start, end] chunk pairs")
        by_video.setdefault(record["video"], []).append(record)
    return by_video


def didemo_paragraph_rows(by_video: dict[str, list[dict]], listed: list[str] | None, source: str) -> list[dict]:
    """One row per (listed) video: the paragraph of its descriptions, the 0-31 s clip, and per sentence the
    annotators' 5-second chunk pairs (`times`)."""
    rows = []
    for video in select_by_list(by_video, listed, source):
        records = by_video[video]
        rows.append({
            "video_id": video,
            "captions": [paragraph(r["description"] for r in records)],
            "start": CLIP_START,
            "end": CLIP_END,
            "sentences": [r["description"].strip() for r in records],
            "times": [[[int(chunk) for chunk in pair] for pair in r.get("times", [])] for r in records],
        })
    return rows


class DiDeMo(BenchmarkBuilder):
    """DiDeMo (Distinct Describable Moments): 10,464 Flickr videos, paragraph-to-video retrieval."""

    BENCHMARK_NAME = "didemo"
    BUILDER_CONFIGS = [BenchmarkConfig(name="paragraph", split_names=("train", "validation", "test"),
                                       description="one paragraph (all descriptions joined) per video, 0-31 s")]

    def _features(self):
        return base_features(
            sentences=datasets.List(datasets.Value("string")),
            # per sentence, per annotator: [start_chunk, end_chunk], chunk k = seconds 5k..5(k+1)
            times=datasets.List(datasets.List(datasets.List(datasets.Value("int32")))),
        )

    @classmethod
    def split_files(cls, config, split, data_dir):
        prefix = SPLIT_PREFIX[split]
        data = find_annotation_file(data_dir, (f"{prefix}_data.json",), f"DiDeMo {split} annotations")
        return {"data": data,
                "list": find_annotation_file(data_dir, (f"{prefix}_list.txt",), "", required=False, near=data)}

    def _rows_for_split(self, split, files):
        listed = read_id_list(files["list"]) if files["list"] is not None else None
        return didemo_paragraph_rows(parse_didemo_json(files["data"]), listed,
                                     source=f"{files['data']} with {files['list'] or 'no id list'}")
