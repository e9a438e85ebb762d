"""Training data for `train.py`: epoch-seeded sampling, one random caption per visit, decode-failure skipping.

Randomness here never touches the global RNGs. The sampler yields `(epoch, index)` pairs; the dataset derives
the caption choice and the frame jitter of a visit from `(seed, epoch, index)` alone. A run resumed from a
checkpoint therefore sees exactly the same samples as the uninterrupted run, on any number of processes.

A video (or image) that cannot be decoded does not stop training: the dataset returns a failure record
(`VideoDecodeError` / image decode errors only; any other exception is a bug and propagates), the collator
drops it and reports how many it dropped and which files; `train.py` counts them in the logs and the summary.

`load_split` is the one way a benchmark split is read, by the trainer (`run_split`, `stage1_dataset`) and by the
evaluation script.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import UnidentifiedImageError
from torch.utils.data import Dataset, Sampler

from modeling_pig.processing_pig import open_rgb_image
from modeling_pig.video_io import VideoDecodeError, read_video_frames

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
# Large odd multipliers keep (seed, epoch, index) -> generator seed collision-free for any realistic values.
_EPOCH_MULTIPLIER = 1_000_003
_SEED_MULTIPLIER = 2_147_483_647


def visit_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The private RNG of one visit of item `index` in `epoch` (caption choice, frame jitter)."""
    value = (seed * _SEED_MULTIPLIER + epoch * _EPOCH_MULTIPLIER + index) % (2**63 - 1)
    return torch.Generator().manual_seed(value)


class EpochSampler(Sampler):
    """Yields `(epoch, index)` for every item once per epoch, shuffled by a permutation seeded by (seed, epoch).

    Set `sampler.epoch` before iterating. (No `set_epoch` method on purpose: accelerate's wrappers would call
    it with their own counters; the training loop owns the epoch.)
    """

    def __init__(self, num_items: int, seed: int, shuffle: bool = True):
        if num_items <= 0:
            raise ValueError(f"EpochSampler needs at least one item, got {num_items}")
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_items)
        epoch = self.epoch
        for index in order.tolist():
            yield epoch, index


def _failure(item_id: str, path: Any, error: Exception) -> dict:
    return {"ok": False, "id": item_id, "path": None if path is None else str(path),
            "error": f"{type(error).__name__}: {error}"}


def _pick_caption(captions: Sequence[str] | str, generator: torch.Generator, where: str) -> str:
    if isinstance(captions, str):
        return captions
    if not captions:
        raise ValueError(f"{where}: no caption (expected a non-empty list of strings)")
    return captions[int(torch.randint(len(captions), (1,), generator=generator))]


class VideoCaptionDataset(Dataset):
    """Rows of a `load_benchmark` dataset as training items (index with `(epoch, index)` pairs).

    An item is `{"ok": True, "frames": uint8 [T, H, W, 3], "caption": str, "id": video_id}`: `num_frames`
    frames sampled in train mode (jittered ends) and one caption drawn at random, both from the visit's RNG.
    A row whose `video` is an image file (e.g. the synthetic "images" split) gives a 1-frame video. A file that
    fails to decode gives `{"ok": False, "id", "path", "error"}`.
    """

    def __init__(self, rows, num_frames: int, seed: int, mode: str = "train"):
        missing = {"video_id", "video", "captions"} - set(rows.column_names)
        if missing:
            raise ValueError(f"dataset lacks column(s) {sorted(missing)} (need video_id, video, captions)")
        self.rows = rows
        self.num_frames = num_frames
        self.seed = seed
        self.mode = mode
        columns = set(rows.column_names)
        self._has_times = {"start", "end"} <= columns

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        row = self.rows[index]
        generator = visit_generator(self.seed, epoch, index)
        text = _pick_caption(row["captions"], generator, f"row {index} ({row['video_id']})")
        path = row["video"]
        try:
            if path is None:
                raise VideoDecodeError(f"row {index} ({row['video_id']}) has no video file")
            if Path(path).suffix.lower() in IMAGE_EXTENSIONS:
                frames = np.asarray(open_rgb_image(path))[None]  # [1, H, W, 3]
            else:
                start = row["start"] if self._has_times else None
                end = row["end"] if self._has_times else None
                frames = read_video_frames(path, num_frames=self.num_frames, mode=self.mode, start=start, end=end,
                                           generator=generator)
        except (VideoDecodeError, OSError, UnidentifiedImageError) as error:
            return _failure(row["video_id"], path, error)
        return {"ok": True, "frames": frames, "caption": text, "id": row["video_id"]}


class ImageCaptionDataset(Dataset):
    """An image+text `datasets.Dataset` (imagefolder with metadata, a Hub dataset, ...) as 1-frame videos.

    The image column is read undecoded and opened here, so that a corrupt image is a failure record instead of
    an exception. A list-valued caption column gives one random caption per visit.
    """

    def __init__(self, rows, image_column: str, caption_column: str, seed: int):
        for column in (image_column, caption_column):
            if column not in rows.column_names:
                raise ValueError(f"image-caption dataset has no column {column!r} (columns: {rows.column_names}); "
                                 "set --stage1_image_column / --stage1_caption_column")
        import datasets  # local: only this class needs the feature types

        feature = rows.features[image_column]
        if isinstance(feature, datasets.Image) and feature.decode:
            rows = rows.cast_column(image_column, datasets.Image(decode=False))
        self.rows = rows
        self.image_column = image_column
        self.caption_column = caption_column
        self.seed = seed

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, index = key
        row = self.rows[index]
        generator = visit_generator(self.seed, epoch, index)
        text = _pick_caption(row[self.caption_column], generator, f"row {index}")
        source = row[self.image_column]
        item_id = f"row {index}"
        try:
            frames = np.asarray(open_rgb_image(source))[None]  # [1, H, W, 3]
        except (OSError, UnidentifiedImageError, ValueError) as error:
            where = source.get("path") if isinstance(source, dict) else source
            return _failure(item_id, where, error)
        return {"ok": True, "frames": frames, "caption": text, "id": item_id}


class TrainCollator:
    """Drops failed items and turns the rest into model inputs with the processor.

    Returns a dict with `input_ids` [n, L], `attention_mask` [n, L], `pixel_values` [n, T, 3, S, S] (absent when
    every item failed), `num_failed` (int) and `failed` (list of "path: error" strings; the item id when the row
    has no file).
    """

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, items: list[dict]) -> dict:
        good = [item for item in items if item["ok"]]
        failed = [f"{item['path'] or item['id']}: {item['error']}" for item in items if not item["ok"]]
        batch: dict[str, Any] = {"num_failed": len(failed), "failed": failed}
        if good:
            features = self.processor(text=[item["caption"] for item in good], return_tensors="pt")
            # The frames were sampled when decoded (per-visit generator; images are 1-frame videos): preprocess
            # them as they are. processor(videos=frames) would sample them again, as it samples a file.
            pixel_values = torch.stack([self.processor.preprocess_frames(item["frames"]) for item in good])
            batch.update(input_ids=features["input_ids"], attention_mask=features["attention_mask"],
                         pixel_values=pixel_values)
        return batch


# ------------------------------------------------------------------------------------------------- benchmarks


def load_split(name: str, data_dir: str | os.PathLike | None, split: str, *, config: str | None = None,
               video_dir: str | os.PathLike | None = None, missing_videos: str = "error",
               cache_dir: str | os.PathLike | None = None, limit: int | None = None,
               synthetic: dict | None = None, main_process_first: Callable[[], Any] | None = None):
    """One split of a benchmark as `load_benchmark` rows (video_id, video, captions, start, end, ...).

    name "synthetic": the benchmark is generated into `data_dir` first. With `synthetic` (keyword arguments of
    `generate_synthetic`) it is generated with exactly those parameters (an existing one with others is
    replaced); without, a benchmark already in `data_dir` is used as it is and an absent one is generated with
    the defaults. `limit`: only the first N rows. `main_process_first`: a context-manager factory
    (`accelerator.main_process_first`) under which generation and preparation happen, so that one process does
    them and the others then find them complete. Raises ValueError without `data_dir` (other than for
    "synthetic") or when the split has no rows.
    """
    from datasets_scripts import load_benchmark
    from datasets_scripts.synthetic import generate_synthetic, read_manifest

    first = main_process_first or contextlib.nullcontext
    if data_dir is None:
        raise ValueError(f"dataset {name!r} needs --data_dir (the folder with its annotation files)")
    if name == "synthetic":
        with first():
            if synthetic is not None:
                data_dir = str(generate_synthetic(data_dir, **synthetic))
            elif read_manifest(data_dir) is None:
                generate_synthetic(data_dir)
    with first():
        rows = load_benchmark(name, data_dir=data_dir, config=config, split=split, video_dir=video_dir,
                              missing_videos=missing_videos, cache_dir=cache_dir)
    if len(rows) == 0:
        raise ValueError(f"{name} split {split!r} under {data_dir} has no rows")
    return rows.select(range(min(limit, len(rows)))) if limit is not None else rows


def run_split(args, accelerator, name: str, data_dir: str | None, config: str | None, split: str,
              limit: int | None = None):
    """`load_split` with a training run's settings: the synthetic benchmark goes to (or is read from)
    `--data_dir` or output_dir/.cache/synthetic, generated with the run's `--synthetic_*` parameters."""
    synthetic = None
    if name == "synthetic":
        data_dir = data_dir or str(Path(args.output_dir) / ".cache" / "synthetic")
        synthetic = {"seed": args.synthetic_seed, "num_train": args.synthetic_num_train,
                     "num_test": args.synthetic_num_test, "num_images": args.synthetic_num_images,
                     "progress": accelerator.is_local_main_process}
    return load_split(name, data_dir, split, config=config, video_dir=args.video_dir,
                      missing_videos=args.missing_videos, limit=limit, synthetic=synthetic,
                      main_process_first=accelerator.main_process_first)


def stage1_dataset(args, accelerator):
    """Stage-1 image-caption data as 1-frame training items (see --stage1_dataset)."""
    from datasets_scripts import BENCHMARKS

    name = args.stage1_dataset
    if name.lower().replace("-", "").replace("_", "") in BENCHMARKS:
        data_dir = args.stage1_data_dir or (args.data_dir if name == args.dataset else None)
        rows = run_split(args, accelerator, name, data_dir, args.stage1_dataset_config, args.stage1_split,
                         args.stage1_max_train_samples)
        return VideoCaptionDataset(rows, num_frames=1, seed=args.seed)
    import datasets

    with accelerator.main_process_first():
        if name == "imagefolder":
            if not args.stage1_data_dir:
                raise ValueError("--stage1_dataset imagefolder needs --stage1_data_dir (images + metadata.jsonl)")
            rows = datasets.load_dataset("imagefolder", data_dir=args.stage1_data_dir, split=args.stage1_split)
        else:
            rows = datasets.load_dataset(name, args.stage1_dataset_config, data_dir=args.stage1_data_dir,
                                         split=args.stage1_split)
    if args.stage1_max_train_samples is not None:
        rows = rows.select(range(min(args.stage1_max_train_samples, len(rows))))
    return ImageCaptionDataset(rows, args.stage1_image_column, args.stage1_caption_column, seed=args.seed)


# ------------------------------------------------------------------------------------------------- batches


def batch_sizes_across_processes(accelerator, batch: dict) -> tuple[int, int, int]:
    """(failed items summed over processes, smallest per-process batch, largest per-process batch): a collective."""
    local = batch["input_ids"].shape[0] if "input_ids" in batch else 0
    values = torch.tensor([[batch["num_failed"], local]], device=accelerator.device)
    gathered = accelerator.gather(values)  # [num_processes, 2]
    return int(gathered[:, 0].sum()), int(gathered[:, 1].min()), int(gathered[:, 1].max())


def truncate_batch(batch: dict, size: int) -> dict:
    """The first `size` items of a collated batch (the global contrastive batch needs equal shares)."""
    return {k: (v[:size] if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
