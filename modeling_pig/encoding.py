"""Text and video encoding with the model's two towers, into an `EmbeddingStore` (`modeling_pig.embedding`).

`encode_videos` decodes videos in DataLoader workers (`video_loader`), embeds them with
`get_video_features`, skips and reports unreadable files, and puts every finished batch in the store: at
most the batch in flight is lost when the run stops (an exception, Ctrl-C, or SIGTERM inside
`sigterm_raises()`), and the videos the store already holds are not embedded again. `encode_texts` does the
same for texts with `get_text_features`. Both also run without a store (nothing is written).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .embedding import (
    FLUSH_EVERY,
    FLUSH_SECONDS,
    EmbeddingStore,
    EncodedVideos,
    StoreSection,
    model_fingerprint,
    processor_signature,
    text_signature,
    video_signature,
)

logger = logging.getLogger(__name__)

__all__ = ["encode_texts", "encode_videos", "video_loader", "inference", "sigterm_raises", "TerminationRequested",
           "EncodedVideos"]


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype if param.dtype.is_floating_point else torch.float32


@contextlib.contextmanager
def inference(model: torch.nn.Module):
    """eval() + no_grad for the duration, restoring the model's training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # not inference_mode: its tensors refuse later in-place use by callers
            yield
    finally:
        model.train(was_training)


def _open_section(store: EmbeddingStore | StoreSection | None, model, processor, model_fp: str | None):
    if store is None or isinstance(store, StoreSection):
        return store
    return store.section(model_fp or model_fingerprint(model), processor_signature(processor))


def encode_texts(model, processor, texts: Sequence[str], batch_size: int = 256, show_progress: bool = True,
                 desc: str = "texts", store: EmbeddingStore | StoreSection | None = None,
                 model_fp: str | None = None) -> torch.Tensor:
    """Embed texts with the text tower only.

    Args:
        model: has `get_text_features(input_ids, attention_mask).pooler_output`.
        processor: `processor(text=[...], return_tensors="pt")` gives input_ids and attention_mask.
        texts: the queries.
        batch_size: texts per forward pass.
        store: texts it holds (for this model and processor) are not embedded again; new ones are added.
        model_fp: the model fingerprint when the caller has it (saves hashing the weights for the store key).

    Returns:
        float32 CPU tensor `[len(texts), D]`, L2-normalised rows.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not a single string")
    texts = list(texts)
    bad = [i for i, text in enumerate(texts) if not isinstance(text, str) or not text.strip()]
    if bad:
        raise ValueError(f"texts[{bad[0]}] = {texts[bad[0]]!r} is not a non-empty string ({len(bad)} such texts)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not texts:
        raise ValueError("texts is empty")
    section = _open_section(store, model, processor, model_fp)
    signatures = [text_signature(text) for text in texts]
    # texts in their given order (duplicates included): a run without a store batches exactly the same way
    todo = [i for i, s in enumerate(signatures) if section is None or s not in section]
    device, _ = _model_device_dtype(model)
    chunks = []
    with inference(model):
        for start in tqdm(range(0, len(todo), batch_size), desc=f"Embedding {desc}", unit="batch",
                          disable=not show_progress or len(todo) <= batch_size):
            batch = processor(text=[texts[i] for i in todo[start:start + batch_size]], return_tensors="pt")
            features = model.get_text_features(input_ids=batch["input_ids"].to(device),
                                               attention_mask=batch["attention_mask"].to(device)).pooler_output
            chunks.append(F.normalize(features.float(), dim=-1).cpu())  # [b, D]
    computed = torch.cat(chunks) if chunks else None
    if section is None:
        return computed  # [n, D]
    if computed is not None:
        section.add([signatures[i] for i in todo], computed)
        section.flush()
    return section.get(signatures).float()  # [n, D]


class _VideoClips(torch.utils.data.Dataset):
    """Decodes and preprocesses one video per item (in a DataLoader worker); decode errors are returned."""

    def __init__(self, processor, videos, starts, ends, positions):
        self.processor = processor
        self.videos, self.starts, self.ends, self.positions = videos, starts, ends, positions
        if not callable(getattr(processor, "load_video", None)):
            raise TypeError(f"{type(processor).__name__} has no load_video(path, mode, start, end) method; "
                            "pass a PIGProcessor")

    def __len__(self):
        return len(self.positions)

    def __getitem__(self, item):
        from .video_io import VideoDecodeError  # PyAV is only needed when decoding

        position = self.positions[item]
        path = self.videos[position]
        if path is None:
            return position, None, "no video file (the dataset row has video=None)"
        try:
            # the processor's own decoding + preprocessing: num_frames test-time frames of [start, end)
            pixel_values = self.processor.load_video(path, mode="test", start=self.starts[position],
                                                     end=self.ends[position])  # [T, 3, S, S]
        except VideoDecodeError as err:
            return position, None, str(err)
        return position, pixel_values, None


def _collate_clips(items):
    decoded = [(position, pixels) for position, pixels, _ in items if pixels is not None]
    failed = {position: reason for position, pixels, reason in items if pixels is None}
    pixel_values = torch.stack([pixels for _, pixels in decoded]) if decoded else None  # [b, T, 3, S, S]
    return [position for position, _ in decoded], pixel_values, failed


def video_loader(processor, videos: Sequence[str | None], batch_size: int = 16, num_workers: int = 0,
                 starts: Sequence | None = None, ends: Sequence | None = None, positions: Sequence[int] | None = None):
    """The DataLoader `encode_videos` reads: batches of `(positions, pixel_values [b, T, 3, S, S] or None,
    {position: failure reason})`, decoded and preprocessed by `processor.load_video` in `num_workers` workers,
    for the videos at `positions` (default: all) in order."""
    n = len(videos)
    positions = list(range(n)) if positions is None else list(positions)
    clips = _VideoClips(processor, videos, starts or [None] * n, ends or [None] * n, positions)
    return torch.utils.data.DataLoader(clips, batch_size=batch_size, num_workers=num_workers,
                                       collate_fn=_collate_clips, shuffle=False)


def encode_videos(model, processor, videos: Sequence[str | os.PathLike | None], batch_size: int = 16,
                  starts: Sequence[float | None] | None = None, ends: Sequence[float | None] | None = None,
                  num_workers: int = 0, store: EmbeddingStore | StoreSection | None = None,
                  flush_every: int = FLUSH_EVERY, show_progress: bool = True, desc: str = "videos",
                  model_fp: str | None = None, process_index: int = 0, num_processes: int = 1) -> EncodedVideos:
    """Embed videos with the video tower only, skipping (and reporting) the ones that cannot be decoded.

    Each video is decoded and preprocessed by `processor.load_video(path, mode="test", start, end)` (the
    processor's `num_frames` evenly spaced frames) inside DataLoader workers (`num_workers`).

    Args:
        model: has `get_video_features(pixel_values).pooler_output`.
        processor: a PIGProcessor (or anything with `load_video(path, mode, start, end) -> [T, 3, S, S]`).
        videos: video paths (None counts as a missing file).
        batch_size: videos per forward pass.
        starts, ends: optional clip bounds in seconds, one per video (None = whole file).
        num_workers: DataLoader decoding workers (0 = decode in this process).
        store: where finished vectors go, every `flush_every` videos or `FLUSH_SECONDS`, and when the run
            stops on an exception or Ctrl-C (at most the batch in flight is lost). Videos it already holds for
            this model and processor (same path, clip, file size and mtime), or knows to be unreadable, are not
            embedded again. Without a store, nothing is written.
        model_fp: the model fingerprint when the caller already has it (saves hashing the weights again).
        process_index, num_processes: with several processes (each with its own model copy, e.g. under
            `accelerate launch`), this one embeds the videos at positions `process_index`, `process_index +
            num_processes`, ... that the store lacks, into shards of its own. The share is fixed by position, not
            by what the store holds: a process that opens the store after another has flushed part of its
            share computes the same shares (shares computed from the remaining work would differ between the
            processes and leave some videos to none of them). The result then covers what this process sees; once every process is done,
            `section.reload()` + `section.collect(signatures)` gives the whole (`VideoIndex.build` does this).

    Returns:
        `EncodedVideos` (embeddings `[n_ok, D]` in the store's dtype, float32 without a store; their input
        positions; failures). Failures are also logged.
    """
    videos = [os.fspath(v) if v is not None else None for v in videos]
    n = len(videos)
    starts = list(starts) if starts is not None else [None] * n
    ends = list(ends) if ends is not None else [None] * n
    if len(starts) != n or len(ends) != n:
        raise ValueError(f"starts/ends must have one entry per video ({n}), got {len(starts)} and {len(ends)}")
    if batch_size < 1 or flush_every < 1:
        raise ValueError(f"batch_size and flush_every must be >= 1, got {batch_size} and {flush_every}")

    signatures = [video_signature(v, s, e) for v, s, e in zip(videos, starts, ends)]
    section = _open_section(store, model, processor, model_fp)
    done: dict[str, torch.Tensor] = {}  # without a store: signature -> row
    failed: dict[str, str] = {}
    if not 0 <= process_index < num_processes:
        raise ValueError(f"process_index must be in [0, {num_processes}), got {process_index}")
    if num_processes > 1 and section is None:
        raise ValueError("several processes need a store to put their vectors in")
    share = range(process_index, n, num_processes)  # by position only: the same on every process (docstring)
    todo = [p for p in share if section is None or not section.has(signatures[p])]
    if len(todo) < len(share):
        logger.info("%d of %d videos already in the embedding store %s: skipped", len(share) - len(todo),
                    len(share), section.folder)
    n_seen = len(share)

    device, dtype = _model_device_dtype(model)
    loader = video_loader(processor, videos, batch_size, num_workers, starts, ends, todo)
    progress = tqdm(total=n_seen, initial=n_seen - len(todo), desc=f"Embedding {desc}", unit="video",
                    disable=not show_progress)
    last_flush = time.monotonic()
    # `finally`: an interrupted run (exception, Ctrl-C, SIGTERM turned into an exception) keeps what it finished
    with inference(model), progress:
        try:
            for positions, pixel_values, batch_failed in loader:
                for position, reason in batch_failed.items():
                    logger.warning("Skipping an unreadable video: %s", reason)  # the reason names the file
                    failed[signatures[position]] = reason
                    if section is not None:
                        section.add_failed(signatures[position], reason)
                if pixel_values is not None:
                    features = model.get_video_features(
                        pixel_values=pixel_values.to(device=device, dtype=dtype)).pooler_output  # [b, D]
                    rows = F.normalize(features.float(), dim=-1).cpu()
                    if section is None:
                        done.update((signatures[p], row) for p, row in zip(positions, rows))
                    else:
                        section.add([signatures[p] for p in positions], rows)
                progress.update(len(positions) + len(batch_failed))
                if section is not None and (section.num_pending >= flush_every
                                            or time.monotonic() - last_flush >= FLUSH_SECONDS):
                    section.flush()
                    last_flush = time.monotonic()
        finally:
            if section is not None:
                section.flush()

    if section is not None:
        encoded = section.collect(signatures)
    else:
        ok = [p for p in range(n) if signatures[p] in done]
        encoded = EncodedVideos(embeddings=torch.stack([done[signatures[p]] for p in ok]) if ok else torch.empty(0, 0),
                                positions=ok, failed={p: failed[signatures[p]] for p in range(n) if signatures[p] in failed})
    if encoded.failed:
        logger.warning("%d of %d videos could not be decoded and were skipped", len(encoded.failed), n)
    return encoded


class TerminationRequested(KeyboardInterrupt):
    """SIGTERM (what schedulers send before killing a job), raised where the program is, like Ctrl-C's
    KeyboardInterrupt, so that the same `finally` blocks save the finished work."""

    def __init__(self, signum: int):
        super().__init__(f"received {signal.Signals(signum).name}")
        self.signum = signum


@contextlib.contextmanager
def sigterm_raises():
    """Within the block, SIGTERM raises `TerminationRequested` in the main thread (SIGINT already raises
    KeyboardInterrupt): `encode_videos` then writes every finished batch before the program exits."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise TerminationRequested(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
