"""LSMDC (Large Scale Movie Description Challenge) from the MPII csv files (shared docs/datasets.md §5).

Files under data_dir (registration required; not redistributable): `LSMDC16_annos_training.csv` (train),
`LSMDC16_annos_val.csv` (validation), `LSMDC16_challenge_1000_publictect.csv` (test; the "publictect"
spelling is the real one). Tab-separated, no header, exactly 6 fields per line, no quoting:

    CLIP_ID <tab> START_ALIGNED <tab> END_ALIGNED <tab> START_EXTRACTED <tab> END_EXTRACTED <tab> SENTENCE

One row per clip with its sentence(s) (a clip may have several lines in train/val; the 1,000-clip test has
one each: square protocol). The clip file is already cut, so start/end are None.
Video file: `<CLIP_ID>.avi` (any common extension), usually in per-movie folders: video_dir is searched
recursively.
"""

from __future__ import annotations

import os

from .common import BenchmarkBuilder, BenchmarkConfig, find_annotation_file, group_pairs

SPLIT_FILES = {
    "train": ("LSMDC16_annos_training.csv", "LSMDC16_annos_training_real.csv"),
    "validation": ("LSMDC16_annos_val.csv",),
    "test": ("LSMDC16_challenge_1000_publictect.csv",),
}
NUM_FIELDS = 6


def parse_lsmdc_csv(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(clip_id, sentence) per line of an LSMDC annotation file; a line without exactly 6 tab-separated fields
    is an error naming the file and line. Quotes are kept as written (no csv quoting)."""
    pairs = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != NUM_FIELDS:
                raise ValueError(f"{path}:{line_number}: expected {NUM_FIELDS} tab-separated fields "
                                 f"(clip id, 4 times, sentence), found {len(fields)}")
            clip_id, sentence = fields[0].strip(), fields[-1].strip()
            if not clip_id or not sentence:
                raise ValueError(f"{path}:{line_number}: empty clip id or sentence")
            pairs.append((clip_id, sentence))
    if not pairs:
        raise ValueError(f"{path}: no annotation lines")
    return pairs


class LSMDC(BenchmarkBuilder):
    """LSMDC 2016 movie clips with one sentence each; text-to-video retrieval on the 1,000-clip public test."""

    BENCHMARK_NAME = "lsmdc"
    BUILDER_CONFIGS = [BenchmarkConfig(name="default", split_names=("train", "validation", "test"),
                                       description="train ~101k clips, val ~7.4k, test 1,000 clips (square)")]

    @classmethod
    def split_files(cls, config, split, data_dir):
        return {"annotations": find_annotation_file(data_dir, SPLIT_FILES[split], f"LSMDC {split} annotations")}

    def _rows_for_split(self, split, files):
        return [{"video_id": clip_id, "captions": sentences, "start": None, "end": None}
                for clip_id, sentences in group_pairs(parse_lsmdc_csv(files["annotations"]))]
