"""MSVD (Microsoft Video Description) in the common CLIP4Clip layout, multi-sentence protocol.

Files under data_dir:
- `train_list.txt` (1,200 ids), `val_list.txt` (100), `test_list.txt` (670): one video id per line
  (e.g. `-4wsuPCjDBc_5_15`);
- `raw-captions.pkl`: a pickle of {video_id: [caption, ...]} where each caption is a list of word tokens
  (`["a", "man", "is", "playing", "a", "guitar"]`), about 40 captions per video.

One row per video with all its captions (tokens joined with single spaces); the test set keeps every caption
(multi-sentence protocol, ~27k queries over 670 videos). Video file: `<video_id>.avi` (any common extension).

The pickle is read with an unpickler that refuses every class or function reference, so only plain
dict / list / str data can be loaded (a pickle is otherwise able to run code).
"""

from __future__ import annotations

import os
import pickle

from .common import BenchmarkBuilder, BenchmarkConfig, find_annotation_file, read_id_list, rows_with_captions

SPLIT_LISTS = {"train": "train_list.txt", "validation": "val_list.txt", "test": "test_list.txt"}
CAPTION_FILE = "raw-captions.pkl"


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles builtin containers and strings only; any global (class, function) is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only plain dict/list/str data is expected")


def parse_msvd_captions(path: str | os.PathLike) -> dict[str, list[str]]:
    """{video_id: [captions]} from `raw-captions.pkl` ({video_id: [[tokens], ...]}); tokens are joined with
    spaces (a caption already given as a string is kept)."""
    with open(path, "rb") as handle:
        try:
            data = _PlainDataUnpickler(handle).load()
        except pickle.UnpicklingError as error:
            raise ValueError(f"{path}: not a plain-data pickle of {{video_id: [[tokens]]}} ({error})") from error
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict {{video_id: [[tokens], ...]}}, got {type(data).__name__}")
    captions = {}
    for video_id, entries in data.items():
        if not isinstance(entries, list):
            raise ValueError(f"{path}: captions of {video_id!r} are not a list")
        texts = []
        for entry in entries:
            if isinstance(entry, str):
                texts.append(entry.strip())
            elif isinstance(entry, list) and all(isinstance(token, str) for token in entry):
                texts.append(" ".join(entry).strip())
            else:
                raise ValueError(f"{path}: a caption of {video_id!r} is neither a token list nor a string: "
                                 f"{entry!r:.100}")
        captions[str(video_id)] = texts
    return captions


class MSVD(BenchmarkBuilder):
    """MSVD: 1,970 YouTube clips with ~40 English captions each (CLIP4Clip split 1,200/100/670)."""

    BENCHMARK_NAME = "msvd"
    BUILDER_CONFIGS = [BenchmarkConfig(name="default", split_names=("train", "validation", "test"),
                                       description="all captions per video; test 670 videos (multi-sentence)")]

    @classmethod
    def split_files(cls, config, split, data_dir):
        captions = find_annotation_file(data_dir, (CAPTION_FILE,), "MSVD captions")
        return {"captions": captions,
                "list": find_annotation_file(data_dir, (SPLIT_LISTS[split],), f"MSVD {split} list", near=captions)}

    def _rows_for_split(self, split, files):
        return rows_with_captions(read_id_list(files["list"]), parse_msvd_captions(files["captions"]),
                                  source=f"{files['list']} + {files['captions']}")
