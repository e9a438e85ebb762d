"""`load_benchmark`: one call from the files a researcher downloaded to a `datasets.Dataset`.

Each benchmark is a `datasets.GeneratorBasedBuilder` (see `common.BenchmarkBuilder`) run with
`download_and_prepare()` + `as_dataset()`; this module picks the builder, points it at the files and a cache
folder, and makes the cache follow the files (their sizes and times, the names of the video files, the code).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
from pathlib import Path

import datasets

from .common import MISSING_VIDEO_POLICIES, BenchmarkBuilder, files_fingerprint

# name -> (module, builder class); imported on first use.
BENCHMARKS = {
    "synthetic": ("datasets_scripts.synthetic", "SyntheticBenchmark"),
    "msrvtt": ("datasets_scripts.msrvtt", "MSRVTT"),
    "didemo": ("datasets_scripts.didemo", "DiDeMo"),
    "activitynet": ("datasets_scripts.activitynet", "ActivityNetCaptions"),
    "lsmdc": ("datasets_scripts.lsmdc", "LSMDC"),
    "vatex": ("datasets_scripts.vatex", "VATEX"),
    "msvd": ("datasets_scripts.msvd", "MSVD"),
}


def get_builder_class(name: str) -> type[BenchmarkBuilder]:
    """The builder class of benchmark `name` (one of `BENCHMARKS`)."""
    key = name.lower().replace("-", "").replace("_", "")
    if key not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; available: {sorted(BENCHMARKS)}")
    module_name, class_name = BENCHMARKS[key]
    return getattr(importlib.import_module(module_name), class_name)


def _config_by_name(builder_cls: type[BenchmarkBuilder], config: str | None):
    configs = {c.name: c for c in builder_cls.BUILDER_CONFIGS}
    name = config or builder_cls.DEFAULT_CONFIG_NAME or next(iter(configs))
    if name not in configs:
        raise ValueError(f"{builder_cls.BENCHMARK_NAME}: unknown config {name!r}; available: {sorted(configs)}")
    return configs[name]


def _code_hash(builder_cls: type) -> str:
    """Hash of the builder's module and the shared machinery, so that a code change invalidates the cache."""
    digest = hashlib.sha256()
    for module in (inspect.getmodule(builder_cls), importlib.import_module("datasets_scripts.common")):
        digest.update(Path(inspect.getfile(module)).read_bytes())
    return digest.hexdigest()[:16]


def _video_names_fingerprint(video_dir: Path) -> str:
    """Hash of the relative file names under `video_dir` (rows depend on which files exist, not on their bytes)."""
    digest = hashlib.sha256()
    if video_dir.is_dir():
        for folder, dirnames, filenames in os.walk(video_dir):
            dirnames.sort()
            relative = os.path.relpath(folder, video_dir)
            for filename in sorted(filenames):
                digest.update(f"{relative}/{filename}\n".encode())
    return digest.hexdigest()[:16]


def make_builder(name: str, data_dir: str | os.PathLike, config: str | None = None, splits=None,
                 video_dir: str | os.PathLike | None = None, missing_videos: str = "error",
                 cache_dir: str | os.PathLike | None = None) -> BenchmarkBuilder:
    """A configured builder for benchmark `name` (not prepared yet); `splits=None` means every split."""
    if missing_videos not in MISSING_VIDEO_POLICIES:
        raise ValueError(f"missing_videos={missing_videos!r}; expected one of {MISSING_VIDEO_POLICIES}")
    builder_cls = get_builder_class(name)
    config_obj = _config_by_name(builder_cls, config)
    data_dir = Path(data_dir).resolve()
    video_dir = Path(video_dir).resolve() if video_dir is not None else data_dir
    splits = tuple(splits) if splits is not None else tuple(config_obj.split_names)
    unknown = [s for s in splits if s not in config_obj.split_names]
    if unknown:
        raise ValueError(f"{builder_cls.BENCHMARK_NAME}/{config_obj.name}: unknown split(s) {unknown}; "
                         f"this setting has {list(config_obj.split_names)}")
    annotation_files = sorted({p for s in splits for p in builder_cls.annotation_files_for(config_obj, s, data_dir)})
    fingerprint = files_fingerprint(annotation_files) + _video_names_fingerprint(video_dir)
    return builder_cls(
        cache_dir=str(cache_dir) if cache_dir is not None else None,
        config_name=config_obj.name,
        hash=_code_hash(builder_cls),
        data_dir=str(data_dir),
        video_dir=str(video_dir),
        missing_videos=missing_videos,
        splits=",".join(splits),
        source_fingerprint=fingerprint,
    )


def load_benchmark(name: str, data_dir: str | os.PathLike, config: str | None = None, split: str = "test",
                   video_dir: str | os.PathLike | None = None, missing_videos: str = "error",
                   cache_dir: str | os.PathLike | None = None) -> datasets.Dataset:
    """Load one split of a text-to-video retrieval benchmark as a `datasets.Dataset`.

    name: "msrvtt", "didemo", "activitynet", "lsmdc", "vatex", "msvd" or "synthetic".
    data_dir: folder holding the annotation files under their canonical names (searched recursively).
    config: the standard setting (e.g. msrvtt "9k" / "7k" / "full"; None = the benchmark's default).
    video_dir: folder with the videos, found by id with any common extension (default: data_dir).
    missing_videos: "error" (raise, listing them), "drop" (leave those rows out, logged) or "keep"
        (rows with video=None, for annotation-only use).
    cache_dir: where `datasets` writes the prepared Arrow files (default: the HF datasets cache).

    Rows: video_id (str), video (absolute path or None), captions (list of str), start / end (seconds or None),
    plus the fields the benchmark's protocol needs (see docs/datasets-usage.md).
    """
    builder = make_builder(name, data_dir, config=config, splits=(split,), video_dir=video_dir,
                           missing_videos=missing_videos, cache_dir=cache_dir)
    builder.download_and_prepare()
    return builder.as_dataset(split=split)
