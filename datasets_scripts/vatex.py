"""VATEX with the HGR split (shared docs/datasets.md §6): English captions, multi-sentence test protocol.

Files under data_dir:
- split lists `train_list.txt` (25,991), `val_list.txt` (1,500), `test_list.txt` (1,500): one videoID per line
  (HGR split as shipped by TS2-Net / CLIP2Video);
- English captions, any one of: `ref_captions.json` ({videoID: [captions]}, HGR / TS2-Net), `vatex_data.json`
  ({videoID: {"enCap": [...], ...}}, CLIP2Video / Cap4Video), or the official `vatex_training_v1.0.json` +
  `vatex_validation_v1.0.json` (lists of {"videoID", "enCap", "chCap"}), merged.

Setting "hgr": one row per video with all its English captions (10): training uses each as a pair, the test
set keeps all of them (15,000 queries over 1,500 videos). Chinese captions are not used.
Video file: `<videoID>.mp4` (any common extension) under video_dir.
"""

from __future__ import annotations

import json
import os

from .common import (BenchmarkBuilder, BenchmarkConfig, BenchmarkFileError, find_annotation_file, read_id_list,
                     rows_with_captions)

SPLIT_LISTS = {"train": "train_list.txt", "validation": "val_list.txt", "test": "test_list.txt"}
CAPTION_FILES = ("ref_captions.json", "vatex_data.json")
OFFICIAL_FILES = ("vatex_training_v1.0.json", "vatex_validation_v1.0.json")


def parse_vatex_captions(path: str | os.PathLike) -> dict[str, list[str]]:
    """{videoID: [English captions]} from any of the three VATEX caption formats (see the module docstring)."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    captions: dict[str, list[str]] = {}
    if isinstance(data, list):  # official: [{"videoID", "enCap", "chCap"}]
        for index, record in enumerate(data):
            if not isinstance(record, dict) or "videoID" not in record or not isinstance(record.get("enCap"), list):
                raise ValueError(f"{path}: record {index} lacks 'videoID' or an 'enCap' list (official VATEX format)")
            captions[record["videoID"]] = [c.strip() for c in record["enCap"]]
        return captions
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON list (official) or an object keyed by videoID")
    for video_id, value in data.items():
        if isinstance(value, dict):  # vatex_data.json: {"enCap": [...], "chCap": [...]}
            value = value.get("enCap")
        if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
            raise ValueError(f"{path}: entry {video_id!r} is not a list of English captions "
                             "(expected {videoID: [str]} or {videoID: {'enCap': [str]}})")
        captions[video_id] = [c.strip() for c in value]
    return captions


class VATEX(BenchmarkBuilder):
    """VATEX (English captions) with the HGR retrieval split."""

    BENCHMARK_NAME = "vatex"
    BUILDER_CONFIGS = [BenchmarkConfig(name="hgr", split_names=("train", "validation", "test"),
                                       description="HGR split 25,991/1,500/1,500; all 10 English captions per video")]

    @classmethod
    def split_files(cls, config, split, data_dir):
        files = {"list": find_annotation_file(data_dir, (SPLIT_LISTS[split],), f"VATEX {split} list")}
        found = find_annotation_file(data_dir, CAPTION_FILES, "", required=False, near=files["list"])
        if found is not None:
            files["captions"] = found
            return files
        official = [find_annotation_file(data_dir, (name,), "", required=False) for name in OFFICIAL_FILES]
        if all(path is None for path in official):
            raise BenchmarkFileError(f"VATEX {split} needs English captions: one of "
                                     f"{list(CAPTION_FILES + OFFICIAL_FILES)} under {data_dir} (searched recursively)")
        files.update({f"captions_{i}": path for i, path in enumerate(official) if path is not None})
        return files

    def _rows_for_split(self, split, files):
        captions: dict[str, list[str]] = {}
        sources = [path for role, path in sorted(files.items()) if role.startswith("captions")]
        for path in sources:
            captions.update(parse_vatex_captions(path))
        return rows_with_captions(read_id_list(files["list"]), captions,
                                  source=f"{files['list']} + {', '.join(map(str, sources))}")
