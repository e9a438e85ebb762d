"""Machinery shared by every benchmark loader: finding annotation files, finding videos, the missing-video
policy, the path safety check, and the `datasets.GeneratorBasedBuilder` base class the benchmarks subclass.

A benchmark module only has to say which files a split needs and how to turn them into rows
(`BenchmarkBuilder._rows_for_split`); everything about videos on disk happens here, once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import datasets

from modeling_pig.video_io import VIDEO_EXTENSIONS  # one list for the library and the loaders

logger = logging.getLogger(__name__)

MISSING_VIDEO_POLICIES = ("error", "drop", "keep")
# How many missing ids an error message lists before it says "...".
MAX_LISTED = 10


class BenchmarkFileError(FileNotFoundError):
    """An annotation file a split needs is not under `data_dir` (the message names it and where it was looked for)."""


class MissingVideosError(FileNotFoundError):
    """Videos referenced by the annotations are not under `video_dir` and `missing_videos="error"`."""


class UnsafeVideoIdError(ValueError):
    """A video id would resolve outside the video folder (absolute path or a `..` component)."""


def base_features(**extra: datasets.features.features.FeatureType) -> datasets.Features:
    """The columns every benchmark has (the agreed row format), plus benchmark-specific `extra` columns.

    video_id: str; video: absolute path or None (annotation-only rows); captions: list of str (every caption of
    the row is a query for that row's video); start / end: seconds of the clip inside the file, None = whole file.
    """
    return datasets.Features({
        "video_id": datasets.Value("string"),
        "video": datasets.Value("string"),
        "captions": datasets.List(datasets.Value("string")),
        "start": datasets.Value("float64"),
        "end": datasets.Value("float64"),
        **extra,
    })


# --------------------------------------------------------------------------------------------------------------
# annotation files

def find_annotation_file(data_dir: str | os.PathLike, names: Sequence[str], what: str, required: bool = True,
                         near: str | os.PathLike | None = None) -> Path | None:
    """Find the first of `names` (canonical file names, in order of preference) under `data_dir`, recursively.

    The folder of `near` (e.g. the caption file a split list belongs with) is tried first, then `data_dir`
    itself, then its sub-folders (sorted, so the answer is deterministic). Raises `BenchmarkFileError` naming
    every accepted name when `required` and nothing matches; returns None otherwise.
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise BenchmarkFileError(f"data_dir {str(root)!r} is not a folder (looking for {what}: {', '.join(names)})")
    folders = ([Path(near).parent] if near is not None else []) + [root]
    for folder in folders:
        for name in names:
            direct = folder / name
            if direct.is_file():
                return direct.resolve()
    for name in names:
        hits = sorted(p for p in root.rglob(name) if p.is_file())
        if hits:
            return hits[0].resolve()
    if required:
        raise BenchmarkFileError(
            f"{what}: none of {list(names)} found under {str(root)!r} (searched recursively)")
    return None


def read_id_list(path: str | os.PathLike) -> list[str]:
    """Read a one-id-per-line text file (collaborative-experts / HGR split lists), skipping blank lines.

    Only the line ending is stripped: DiDeMo names may end with a bare "." and are kept as they are.
    """
    ids = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            item = line.rstrip("\r\n").strip()
            if item:
                ids.append(item)
    if not ids:
        raise ValueError(f"{path}: the id list is empty (expected one video id per line)")
    return ids


def paragraph(sentences: Iterable[str]) -> str:
    """Sentences joined with single spaces, each stripped first (ActivityNet sentences start with spaces),
    the CLIP4Clip paragraph of DiDeMo and ActivityNet Captions."""
    return " ".join(s.strip() for s in sentences if s.strip())


def select_by_list(annotated: dict[str, object], listed: list[str] | None, source: str,
                   alternatives=lambda video_id: ()) -> list[str]:
    """Keys of `annotated` in the order of the protocol's id list (`listed`), or in file order without a list.

    Listed ids that have no annotation are left out with a warning (what CLIP4Clip does, so that a list
    covering videos a user never downloaded still works); `alternatives(id)` gives other spellings to try.
    """
    if listed is None:
        return list(annotated)
    selected, absent = [], []
    for video_id in listed:
        match = next((key for key in (video_id, *alternatives(video_id)) if key in annotated), None)
        if match is None:
            absent.append(video_id)
        else:
            selected.append(match)
    if absent:
        logger.warning("%s: %d listed ids have no annotation and are left out (first: %s)", source, len(absent),
                       ", ".join(absent[:MAX_LISTED]))
    if not selected:
        raise ValueError(f"{source}: none of the {len(listed)} listed ids has an annotation")
    return selected


def rows_with_captions(ids: list[str], captions: dict[str, list[str]], source: str) -> list[dict]:
    """One row per id (whole video) with all its captions, in the order of `ids`; ids without captions are an
    error naming the first ones (the caption file does not belong with the split list)."""
    absent = [video_id for video_id in ids if not captions.get(video_id)]
    if absent:
        raise ValueError(f"{source}: {len(absent)} of {len(ids)} split ids have no caption "
                         f"(first: {', '.join(absent[:MAX_LISTED])})")
    return [{"video_id": video_id, "captions": list(captions[video_id]), "start": None, "end": None}
            for video_id in ids]


def group_pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """Group (video_id, caption) pairs by video in order of first appearance: [(video_id, [captions])].
    Multi-caption sets stay whole and contiguous per video (explicit grouping, never set order)."""
    grouped: dict[str, list[str]] = {}
    for video_id, text in pairs:
        grouped.setdefault(video_id, []).append(text)
    return list(grouped.items())


def files_fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    """A short hash of (path, size, mtime) of files: changes when a file is replaced or edited."""
    digest = hashlib.sha256()
    for path in sorted(str(p) for p in paths):
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------------
# videos

def check_video_id(video_id: str, source: str = "annotations") -> str:
    """Reject a video id that could address a file outside the video folder; return it unchanged otherwise.

    Absolute paths, drive letters and `..` components are refused (`UnsafeVideoIdError`); ids are file names
    or relative paths below the video folder, nothing else.
    """
    if not isinstance(video_id, str) or not video_id.strip():
        raise UnsafeVideoIdError(f"{source}: video id {video_id!r} is empty or not a string")
    parts = video_id.replace("\\", "/").split("/")
    if os.path.isabs(video_id) or video_id.startswith(("/", "\\")) or ":" in parts[0] or ".." in parts:
        raise UnsafeVideoIdError(
            f"{source}: video id {video_id!r} would escape the video folder (absolute path or '..'); "
            "video ids must be file names or relative paths inside video_dir")
    return video_id


def strip_video_extension(name: str) -> str:
    """`"a.mp4"` -> `"a"`, `"a."` -> `"a"` (DiDeMo's bare-dot names), `"a.mov.mp4"` -> `"a.mov"`; other names unchanged."""
    if name.endswith("."):
        return name[:-1]
    stem, dot, ext = name.rpartition(".")
    if dot and stem and ("." + ext.lower()) in VIDEO_EXTENSIONS:
        return stem
    return name


class VideoLookup:
    """Index of the video files under one folder (walked once, recursively), looked up by video id.

    An id matches a file whose name is the id itself, or the id plus a video extension, or (for ids that carry
    their own extension, as DiDeMo's do) the id with its extension replaced or followed by another one.
    `aliases` (e.g. ActivityNet's with/without `v_`) are tried after the id itself.
    """

    def __init__(self, video_dir: str | os.PathLike, extensions: Sequence[str] = VIDEO_EXTENSIONS):
        self.video_dir = Path(video_dir).resolve()
        if not self.video_dir.is_dir():
            raise FileNotFoundError(f"video_dir {str(video_dir)!r} is not a folder")
        self.extensions = tuple(e.lower() for e in extensions)
        self._by_name: dict[str, Path] = {}
        self._by_stem: dict[str, tuple[int, Path]] = {}
        for folder, dirnames, filenames in os.walk(self.video_dir):
            dirnames.sort()
            for filename in sorted(filenames):
                path = Path(folder) / filename
                self._by_name.setdefault(filename, path)
                stem, dot, ext = filename.rpartition(".")
                if dot and ("." + ext.lower()) in self.extensions:
                    rank = self.extensions.index("." + ext.lower())
                    if stem not in self._by_stem or rank < self._by_stem[stem][0]:
                        self._by_stem[stem] = (rank, path)

    def __len__(self) -> int:
        return len(self._by_name)

    def find(self, video_id: str, aliases: Sequence[str] = ()) -> str | None:
        """Absolute path of the file for `video_id` (str), or None when there is none."""
        for key in (video_id, *aliases):
            check_video_id(key)
            if "/" in key or "\\" in key:  # a relative path inside video_dir
                found = self._find_relative(key)
            else:
                found = self._by_name.get(key)
                if found is None and key in self._by_stem:
                    found = self._by_stem[key][1]
                bare = strip_video_extension(key)
                if found is None and bare != key:
                    found = self._by_stem.get(bare, (0, None))[1] or self._by_name.get(bare)
            if found is not None:
                return str(found)
        return None

    def _find_relative(self, relative: str) -> Path | None:
        base = self.video_dir / relative
        for candidate in (base, *(base.with_name(base.name + ext) for ext in self.extensions)):
            normalised = Path(os.path.normpath(candidate))
            if normalised.is_relative_to(self.video_dir) and normalised.is_file():
                return normalised
        return None


def resolve_videos(rows: list[dict], lookup: VideoLookup | None, policy: str, context: str,
                   aliases=lambda video_id: ()) -> list[dict]:
    """Fill each row's `video` with the file found for its `video_id` and apply the missing-video policy.

    A row may carry `relative_path` (a path inside the video folder, used instead of the id for the lookup and
    removed from the row) when the benchmark knows exactly where its files are.

    policy "error": raise `MissingVideosError` listing how many and which (first 10) are missing;
    "drop": remove those rows (logged as a warning); "keep": keep them with `video=None`.
    `lookup=None` (no video folder) counts every video as missing. `context` names the benchmark/config/split
    in messages. Every id is checked with `check_video_id` first, whatever the policy.
    """
    if policy not in MISSING_VIDEO_POLICIES:
        raise ValueError(f"missing_videos={policy!r}; expected one of {MISSING_VIDEO_POLICIES}")
    for row in rows:
        check_video_id(row["video_id"], context)
        if row.get("relative_path") is not None:
            check_video_id(row["relative_path"], context)
    resolved, missing = [], []
    for row in rows:
        row = dict(row)
        key = row.pop("relative_path", None) or row["video_id"]
        path = lookup.find(key, aliases(key)) if lookup is not None else None
        if path is None:
            missing.append(row["video_id"])
            if policy == "drop":
                continue
        resolved.append({**row, "video": path})
    if missing and policy == "error":
        where = str(lookup.video_dir) if lookup is not None else "(no video_dir)"
        listed = ", ".join(missing[:MAX_LISTED]) + (", ..." if len(missing) > MAX_LISTED else "")
        raise MissingVideosError(
            f"{context}: {len(missing)} of {len(rows)} videos not found under {where} "
            f"(matched by id, with any of {', '.join(VIDEO_EXTENSIONS[:8])}, ...): {listed}. "
            "Pass missing_videos='drop' to leave them out or 'keep' for annotation-only rows (video=None).")
    if missing and policy == "drop":
        logger.warning("%s: dropped %d of %d rows whose video is not under %s", context, len(missing), len(rows),
                       lookup.video_dir if lookup is not None else "(no video_dir)")
    return resolved


# --------------------------------------------------------------------------------------------------------------
# the builder base class

@dataclasses.dataclass
class BenchmarkConfig(datasets.BuilderConfig):
    """A benchmark setting (e.g. MSR-VTT "9k") plus where the files are and what to do about missing videos.

    split_names: the splits this setting defines.
    splits: comma-separated splits to prepare (None = all of `split_names`); one split reads only its files.
    source_fingerprint: set by `load_benchmark` from the files' sizes and times so the cache follows the files.
    """
    split_names: tuple[str, ...] = ("train", "test")
    video_dir: str | None = None
    missing_videos: str = "error"
    splits: str | None = None
    source_fingerprint: str | None = None


class BenchmarkBuilder(datasets.GeneratorBasedBuilder):
    """Base class: subclasses declare configs and features and implement `_rows_for_split`.

    Rows are built and their videos resolved in `_split_generators` (errors there reach the caller unwrapped),
    then yielded as they are by `_generate_examples`.
    """

    BUILDER_CONFIG_CLASS = BenchmarkConfig
    BENCHMARK_NAME = "benchmark"

    def _features(self) -> datasets.Features:
        return base_features()

    def _info(self) -> datasets.DatasetInfo:
        return datasets.DatasetInfo(description=self.__doc__, features=self._features())

    @classmethod
    def split_files(cls, config: BenchmarkConfig, split: str, data_dir: Path) -> dict[str, Path]:
        """The annotation files `split` of setting `config` reads, by role (raises `BenchmarkFileError`)."""
        raise NotImplementedError

    @classmethod
    def annotation_files_for(cls, config: BenchmarkConfig, split: str, data_dir: Path) -> list[Path]:
        """The annotation files of one split, as a list (what the cache fingerprint covers)."""
        return [p for p in cls.split_files(config, split, data_dir).values() if p is not None]

    def _rows_for_split(self, split: str, files: dict[str, Path]) -> list[dict]:
        """Rows of `split` with `video_id`, `captions`, `start`, `end` and protocol fields (no `video` yet)."""
        raise NotImplementedError

    def video_aliases(self, video_id: str) -> Sequence[str]:
        """Other names the file of `video_id` may have (default: none)."""
        return ()

    def requested_splits(self) -> tuple[str, ...]:
        splits = tuple(self.config.splits.split(",")) if self.config.splits else self.config.split_names
        unknown = [s for s in splits if s not in self.config.split_names]
        if unknown:
            raise ValueError(f"{self.BENCHMARK_NAME}/{self.config.name}: unknown split(s) {unknown}; "
                             f"this setting has {list(self.config.split_names)}")
        return tuple(splits)

    def _split_generators(self, dl_manager):
        if not self.config.data_dir:
            raise ValueError(f"{self.BENCHMARK_NAME}: data_dir is required (the folder with the annotation files)")
        data_dir = Path(self.config.data_dir)
        video_dir = self.config.video_dir or self.config.data_dir
        lookup = VideoLookup(video_dir) if self.config.missing_videos != "keep" or Path(video_dir).is_dir() else None
        self._resolved = {}
        generators = []
        for split in self.requested_splits():
            rows = self._rows_for_split(split, self.split_files(self.config, split, data_dir))
            context = f"{self.BENCHMARK_NAME}/{self.config.name} split {split!r}"
            self._resolved[split] = resolve_videos(rows, lookup, self.config.missing_videos, context,
                                                   aliases=self.video_aliases)
            generators.append(datasets.SplitGenerator(name=split, gen_kwargs={"split": split}))
        return generators

    def _generate_examples(self, split):
        for index, row in enumerate(self._resolved[split]):
            yield index, row
