"""Embed a video collection once, store it, search it by text: exact (chunked matmul) or FAISS.

This is the Two-Tower half of PIG in practice: every video becomes one L2-normalised vector
(`model.get_video_features(...).pooler_output`, computed without any text), stored in fp16; a text query
becomes one vector (`get_text_features`) and is scored against the store with a dot product.

* `encode_texts` / `encode_videos`: batched embedding with tqdm progress. `encode_videos` decodes in
  DataLoader workers, skips unreadable files (`VideoDecodeError`) and reports them, and can checkpoint its
  progress to a folder so that an interrupted run continues where it stopped. `training/evaluate.py` and
  `VideoIndex.build` both use it.
* `VideoIndex`: the stored collection. `build`, `search`, `save`/`load` (safetensors + JSON, no pickle),
  exact search for small collections and FAISS (IVF or HNSW over inner product, fp16 codes) for large ones,
  chosen automatically above `DEFAULT_FAISS_THRESHOLD` vectors, with `measure_recall` against exact search.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

__all__ = [
    "VideoIndex",
    "EncodedVideos",
    "encode_texts",
    "encode_videos",
    "exact_search",
    "find_videos",
    "model_fingerprint",
    "processor_signature",
    "DEFAULT_FAISS_THRESHOLD",
]

INDEX_FORMAT_VERSION = 1
INDEX_METADATA_FILE = "index.json"
INDEX_EMBEDDINGS_FILE = "embeddings.safetensors"
INDEX_FAISS_FILE = "faiss.index"
BUILD_CHECKPOINT_DIR = "build_checkpoint"
# Above this many stored vectors `backend="auto"` builds a FAISS index (see docs/performance.md, search).
DEFAULT_FAISS_THRESHOLD = 100_000
BACKENDS = ("auto", "exact", "ivf", "hnsw")
# Stored vectors scored per matmul in exact search: bounds the float32 working set to chunk x D.
EXACT_CHUNK_ROWS = 65_536
# Exact search keeps a float32 copy of the fp16 store when it is at most this big (faster repeated
# queries); larger stores are converted chunk by chunk instead.
EXACT_FLOAT32_CACHE_BYTES = 256 * 2**20
# An embedding checkpoint is also written at least this often (seconds), whatever `checkpoint_every` says.
CHECKPOINT_SECONDS = 60.0
# File name suffixes `find_videos` treats as videos (lower case).
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp", ".ts",
                    ".flv", ".ogv")


# ------------------------------------------------------------------------------------------------------
# Model helpers


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the model's class, config and every parameter/buffer value (changes whenever a weight does).

    Used as a cache key for embeddings and to check that an index is searched with the model that built it.
    Hashing reads all weights once (about a second for a ViT-B/32 model).
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(type(model).__qualname__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        digest.update(config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(model.parameters(), None)
    if param is None:
        return torch.device("cpu"), torch.float32
    return param.device, param.dtype if param.dtype.is_floating_point else torch.float32


@contextlib.contextmanager
def _inference(model: torch.nn.Module):
    """eval() + no_grad for the duration, restoring the model's training flag afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():  # not inference_mode: its tensors refuse later in-place use by callers
            yield
    finally:
        model.train(was_training)


def processor_signature(processor) -> str:
    """The processor settings that change pixel values or tokens (frames, size, resizing, max length)."""
    if hasattr(processor, "to_dict"):
        settings = processor.to_dict()
    else:
        settings = {k: v for k, v in vars(processor).items() if isinstance(v, (int, float, str, bool, type(None)))}
    settings = {k: v for k, v in settings.items() if k not in ("processor_class", "auto_map")}
    for attribute in ("num_frames", "image_size", "max_length", "resize_mode"):
        if hasattr(processor, attribute):
            settings[attribute] = getattr(processor, attribute)
    return json.dumps(settings, sort_keys=True, default=str)


def encode_texts(model, processor, texts: Sequence[str], batch_size: int = 256, show_progress: bool = True,
                 desc: str = "texts") -> torch.Tensor:
    """Embed texts with the text tower only.

    Args:
        model: has `get_text_features(input_ids, attention_mask).pooler_output`.
        processor: `processor(text=[...], return_tensors="pt")` gives input_ids and attention_mask.
        texts: the queries.
        batch_size: texts per forward pass.

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
    device, _ = _model_device_dtype(model)
    chunks = []
    with _inference(model):
        for start in tqdm(range(0, len(texts), batch_size), desc=f"Embedding {desc}", unit="batch",
                          disable=not show_progress or len(texts) <= batch_size):
            batch = processor(text=texts[start:start + batch_size], return_tensors="pt")
            features = model.get_text_features(input_ids=batch["input_ids"].to(device),
                                               attention_mask=batch["attention_mask"].to(device)).pooler_output
            chunks.append(F.normalize(features.float(), dim=-1).cpu())  # [b, D]
    if not chunks:
        raise ValueError("texts is empty")
    return torch.cat(chunks)  # [n, D]


# ------------------------------------------------------------------------------------------------------
# Video embedding with workers, failure reporting and checkpoints


@dataclasses.dataclass
class EncodedVideos:
    """Result of `encode_videos`.

    Attributes:
        embeddings: `[len(positions), D]` L2-normalised rows, in the storage dtype.
        positions: for each row, the position of its video in the input list (ascending).
        failed: input position -> reason, for every video that could not be decoded.
    """

    embeddings: torch.Tensor
    positions: list[int]
    failed: dict[int, str]


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


class _CheckpointShards:
    """Embeddings written to a folder in shards as they are computed, so that an interrupted run resumes.

    Layout: `manifest.json` (the job key: model weights, processor settings, storage dtype) and
    `shard_00000.safetensors`, ... each holding `embeddings [m, D]` and, in its metadata, the item signature of
    each row (`item_signature`: path, clip, file size and mtime) and the failures of that shard. Work is looked
    up by signature, so a rerun over a list with added videos reuses every video already done, and a file that
    changed on disk is embedded again. Shards are written to a temporary name and renamed: a crash never
    leaves a half-written shard.
    """

    def __init__(self, folder: str | os.PathLike, key: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest_path = self.folder / "manifest.json"
        if manifest_path.exists():
            found = json.loads(manifest_path.read_text()).get("key")
            if found != key:
                raise ValueError(
                    f"{self.folder} holds embeddings of another model or processor setting (job key {found!r}, "
                    f"this job {key!r}). Use another folder, or delete this one to start over.")
        else:
            _atomic_write_text(manifest_path, json.dumps({"key": key, "format": INDEX_FORMAT_VERSION}))
        self.next_shard = len(list(self.folder.glob("shard_*.safetensors")))

    def load(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Everything done so far: signature -> embedding row, and signature -> failure reason."""
        done, failed = {}, {}
        for shard in sorted(self.folder.glob("shard_*.safetensors")):
            with safe_open(str(shard), framework="pt") as handle:
                metadata = handle.metadata()
                embeddings = handle.get_tensor("embeddings")
            items = json.loads(metadata["items"])
            if len(items) != embeddings.shape[0]:
                raise ValueError(f"{shard}: {embeddings.shape[0]} embeddings but {len(items)} item signatures")
            done.update(zip(items, embeddings))
            failed.update(json.loads(metadata["failed"]))
        return done, failed

    def write(self, items: list[str], embeddings: torch.Tensor, failed: dict[str, str]) -> None:
        path = self.folder / f"shard_{self.next_shard:06d}.safetensors"
        tmp = path.with_suffix(".tmp")
        save_file({"embeddings": embeddings.contiguous()}, str(tmp),
                  metadata={"items": json.dumps(items), "failed": json.dumps(failed)})
        os.replace(tmp, path)
        self.next_shard += 1


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def item_signature(path: str | None, start, end) -> str:
    """Identifies one video clip and the state of its file (size, mtime): equal signature, equal embedding."""
    try:
        stat = os.stat(path) if path is not None else None
    except OSError:
        stat = None
    size, mtime = (stat.st_size, stat.st_mtime_ns) if stat else (-1, -1)
    return json.dumps([path, start, end, size, mtime])


def embedding_job_key(model_fp: str, processor, storage_dtype: torch.dtype) -> str:
    """Key of the settings an embedding depends on besides the video: model weights, processor, dtype."""
    text = f"{model_fp}\n{processor_signature(processor)}\n{storage_dtype}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def encode_videos(model, processor, videos: Sequence[str | os.PathLike | None], batch_size: int = 16,
                  starts: Sequence[float | None] | None = None, ends: Sequence[float | None] | None = None,
                  num_workers: int = 0, checkpoint_dir: str | os.PathLike | None = None,
                  checkpoint_every: int = 512, storage_dtype: torch.dtype = torch.float32,
                  show_progress: bool = True, desc: str = "videos", model_fp: str | None = None,
                  known: tuple[dict[str, torch.Tensor], dict[str, str]] | None = None) -> EncodedVideos:
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
        checkpoint_dir: write progress there every `checkpoint_every` videos or `CHECKPOINT_SECONDS`, and when
            the run stops on an exception. Videos the folder already holds
            (same path, clip, file size and mtime) are not embedded again; a folder written with other model
            weights or processor settings is an error.
        storage_dtype: dtype of the returned (and checkpointed) embeddings.
        model_fp: the model fingerprint when the caller already has it (saves hashing the weights again).
        known: embeddings and failures already computed with this model and processor, keyed by item signature
            (`item_signature`), e.g. from a previous index; those videos are not embedded again.

    Returns:
        `EncodedVideos` (embeddings `[n_ok, D]`, their input positions, failures). Failures are also logged.
    """
    videos = [os.fspath(v) if v is not None else None for v in videos]
    n = len(videos)
    starts = list(starts) if starts is not None else [None] * n
    ends = list(ends) if ends is not None else [None] * n
    if len(starts) != n or len(ends) != n:
        raise ValueError(f"starts/ends must have one entry per video ({n}), got {len(starts)} and {len(ends)}")
    if batch_size < 1 or checkpoint_every < 1:
        raise ValueError(f"batch_size and checkpoint_every must be >= 1, got {batch_size} and {checkpoint_every}")

    signatures = [item_signature(v, s, e) for v, s, e in zip(videos, starts, ends)]
    store, done, failed = None, {}, {}  # done/failed: keyed by item signature
    if checkpoint_dir is not None:
        model_fp = model_fp or model_fingerprint(model)
        store = _CheckpointShards(checkpoint_dir, embedding_job_key(model_fp, processor, storage_dtype))
        done, failed = store.load()
    if known is not None:
        done, failed = {**known[0], **done}, {**known[1], **failed}
    todo = [p for p in range(n) if signatures[p] not in done and signatures[p] not in failed]
    if len(todo) < n:
        logger.info("%d of %d videos already embedded (checkpoint or previous index): skipped", n - len(todo), n)

    device, dtype = _model_device_dtype(model)
    loader = torch.utils.data.DataLoader(
        _VideoClips(processor, videos, starts, ends, todo), batch_size=batch_size, num_workers=num_workers,
        collate_fn=_collate_clips, shuffle=False)
    pending_items, pending_rows, pending_failed = [], [], {}

    def flush():
        if store is not None and (pending_items or pending_failed):
            rows = torch.cat(pending_rows) if pending_rows else torch.empty(0, 0, dtype=storage_dtype)
            store.write(list(pending_items), rows, dict(pending_failed))
        pending_items.clear(), pending_rows.clear(), pending_failed.clear()

    progress = tqdm(total=n, initial=n - len(todo), desc=f"Embedding {desc}", unit="video",
                    disable=not show_progress)
    last_flush = time.monotonic()
    # `finally`: an interrupted run (exception, Ctrl-C) still writes the batches it finished
    with _inference(model), progress:
        try:
            for positions, pixel_values, batch_failed in loader:
                for position, reason in batch_failed.items():
                    logger.warning("Skipping unreadable video %s: %s", videos[position], reason)
                    failed[signatures[position]] = pending_failed[signatures[position]] = reason
                if pixel_values is not None:
                    features = model.get_video_features(
                        pixel_values=pixel_values.to(device=device, dtype=dtype)).pooler_output  # [b, D]
                    rows = F.normalize(features.float(), dim=-1).to(storage_dtype).cpu()
                    for position, row in zip(positions, rows):
                        done[signatures[position]] = row
                    pending_items.extend(signatures[p] for p in positions)
                    pending_rows.append(rows)
                progress.update(len(positions) + len(batch_failed))
                if (len(pending_items) + len(pending_failed) >= checkpoint_every
                        or time.monotonic() - last_flush >= CHECKPOINT_SECONDS):
                    flush()
                    last_flush = time.monotonic()
        finally:
            flush()

    ok = [p for p in range(n) if signatures[p] in done]
    failures = {p: failed[signatures[p]] for p in range(n) if signatures[p] in failed}
    if failures:
        logger.warning("%d of %d videos could not be decoded and were skipped", len(failures), n)
    if ok:
        embeddings = torch.stack([done[signatures[p]] for p in ok])  # [n_ok, D]
    else:
        embeddings = torch.empty(0, 0, dtype=storage_dtype)
    return EncodedVideos(embeddings=embeddings, positions=ok, failed=failures)


# ------------------------------------------------------------------------------------------------------
# Search


def exact_search(embeddings: torch.Tensor, queries: torch.Tensor, k: int,
                 chunk_rows: int = EXACT_CHUNK_ROWS) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products of each query against every stored vector, chunk by chunk.

    Args:
        embeddings: `[N, D]` stored vectors (any float dtype; scored in float32).
        queries: `[Q, D]` query vectors.
        k: results per query (capped at N).
        chunk_rows: stored vectors per matmul; memory is `O(Q * chunk_rows + chunk_rows * D)`, never `N x N`.

    Returns:
        `(scores [Q, k] float32, indices [Q, k] int64)`, best first; equal scores keep the lower index first.
    """
    n = embeddings.shape[0]
    k = min(k, n)
    queries = queries.float()
    best_scores = torch.empty(queries.shape[0], 0)
    best_indices = torch.empty(queries.shape[0], 0, dtype=torch.int64)
    for start in range(0, n, chunk_rows):
        block = embeddings[start:start + chunk_rows].float()  # [c, D]
        scores = queries @ block.T  # [Q, c]
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1, sorted=False)
        merged_scores = torch.cat([best_scores, top.values], dim=1)  # [Q, <= 2k]
        merged_indices = torch.cat([best_indices, top.indices + start], dim=1)
        # sort by score, then by index, so ties come out in a stable order
        order = np.lexsort((merged_indices.numpy(), -merged_scores.numpy()), axis=1)[:, :k]
        best_scores = torch.from_numpy(np.take_along_axis(merged_scores.numpy(), order, axis=1))
        best_indices = torch.from_numpy(np.take_along_axis(merged_indices.numpy(), order, axis=1))
    return best_scores.numpy(), best_indices.numpy()


def find_videos(folder: str | os.PathLike, recursive: bool = False,
                extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[str]:
    """Absolute paths of the video files in `folder` (by extension, case-insensitive), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    extensions = tuple(e.lower() for e in extensions)
    pattern = root.rglob("*") if recursive else root.glob("*")
    return sorted(str(p.resolve()) for p in pattern if p.is_file() and p.suffix.lower() in extensions)


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a declared dependency
        raise ImportError("FAISS search needs the faiss-cpu package: pip install faiss-cpu") from err
    return faiss


class VideoIndex:
    """A searchable collection of video embeddings (one fp16, L2-normalised vector per video).

    Build it with `VideoIndex.build(model, processor, paths)`, query it with `search(["a man plays a guitar"])`,
    keep it with `save(dir)` / `VideoIndex.load(dir)`. Exact search scores every vector (chunked matmul);
    above `faiss_threshold` vectors `backend="auto"` uses a FAISS index instead (IVF, or HNSW on request, both
    on inner product over fp16 codes, i.e. the stored vectors themselves), whose recall against exact search
    `measure_recall` reports.

    Attributes:
        paths: the video of each stored vector.
        embeddings: `[N, D]` float16 tensor.
        failed: path -> reason for the videos that could not be decoded at build time.
        model_path: where the model came from (a folder or Hub id), used by `search` to embed text.
        model_fingerprint: hash of the weights that produced the embeddings.
        backend: "exact", "ivf" or "hnsw" (the one in use).
    """

    def __init__(self, embeddings: torch.Tensor, paths: Sequence[str], failed: dict[str, str] | None = None,
                 model_path: str | None = None, model_fingerprint: str | None = None,
                 backend: str = "auto", faiss_threshold: int = DEFAULT_FAISS_THRESHOLD, model=None,
                 processor=None, signatures: dict[str, list | dict] | None = None,
                 processor_settings: str | None = None, **faiss_params):
        embeddings = torch.as_tensor(embeddings)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be [N, D], got shape {tuple(embeddings.shape)}")
        if embeddings.shape[0] != len(paths):
            raise ValueError(f"{embeddings.shape[0]} embeddings but {len(paths)} paths")
        if not torch.isfinite(embeddings).all():
            raise ValueError("embeddings contain NaN or inf")
        self.embeddings = embeddings.to(torch.float16).contiguous()
        self.paths = [str(p) for p in paths]
        self.failed = dict(failed or {})
        self.model_path = model_path
        self.model_fingerprint = model_fingerprint
        self.faiss_threshold = faiss_threshold
        # item signatures (path, clip, size, mtime) of the stored and failed videos and the processor settings:
        # what lets a later build into the same folder reuse these embeddings
        self.signatures = signatures or {"stored": [], "failed": {}}
        self.processor_settings = processor_settings
        self._model, self._processor = model, processor
        self._float32_cache = None
        self._faiss_index = None
        self.faiss_params: dict = {}
        self.backend = "exact"
        self.set_backend(backend, **faiss_params)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def __repr__(self) -> str:
        return (f"VideoIndex({len(self)} videos, dim={self.dim if len(self) else '?'}, backend={self.backend!r}, "
                f"failed={len(self.failed)}, model_path={self.model_path!r})")

    # -- building --------------------------------------------------------------------------------------

    @classmethod
    def build(cls, model, processor, paths: Sequence[str | os.PathLike], batch_size: int = 16,
              num_workers: int = 0, out_dir: str | os.PathLike | None = None, model_path: str | None = None,
              backend: str = "auto", faiss_threshold: int = DEFAULT_FAISS_THRESHOLD,
              checkpoint_every: int = 512, show_progress: bool = True, target_recall: float | None = None,
              **faiss_params) -> "VideoIndex":
        """Embed `paths` and return the index.

        Args:
            model, processor: a PIGModel and its PIGProcessor (or any object with the same methods).
            paths: video files; unreadable ones are skipped, logged and listed in `index.failed`.
            batch_size, num_workers: videos per forward pass; DataLoader decoding workers.
            out_dir: when given, progress is checkpointed to `out_dir/build_checkpoint` every
                `checkpoint_every` videos (a rerun with the same model and paths continues from there), and
                the finished index is saved to `out_dir` (the checkpoint is then removed).
            model_path: recorded in the index so that `search` can load the text tower later; defaults to
                `model.name_or_path` when the model has one.
            backend: "auto" (exact up to `faiss_threshold` vectors, IVF above), "exact", "ivf" or "hnsw";
                `faiss_params` (nlist, nprobe, hnsw_m, ef_search, ef_construction) tune FAISS.
            target_recall: with a FAISS backend, raise its search effort until recall@10 against exact search
                reaches this (see `tune`); None keeps the parameters as given.
        """
        paths = [os.fspath(p) for p in paths]
        if not paths:
            raise ValueError("no video paths to index")
        if len(set(paths)) != len(paths):
            raise ValueError("the same video path appears more than once in paths")
        fingerprint = model_fingerprint(model)
        settings = processor_signature(processor)
        checkpoint = Path(out_dir) / BUILD_CHECKPOINT_DIR if out_dir is not None else None
        known = cls._reusable(out_dir, fingerprint, settings) if out_dir is not None else None
        encoded = encode_videos(model, processor, paths, batch_size=batch_size, num_workers=num_workers,
                                checkpoint_dir=checkpoint, checkpoint_every=checkpoint_every,
                                storage_dtype=torch.float16, show_progress=show_progress, model_fp=fingerprint,
                                known=known)
        if not encoded.positions:
            reasons = "; ".join(list(encoded.failed.values())[:3])
            raise ValueError(f"none of the {len(paths)} videos could be decoded ({reasons})")
        if model_path is None:
            model_path = getattr(model, "name_or_path", None) or None
        if model_path is not None and os.path.isdir(model_path):
            model_path = str(Path(model_path).resolve())
        signatures = {"stored": [item_signature(paths[p], None, None) for p in encoded.positions],
                      "failed": {item_signature(paths[p], None, None): r for p, r in encoded.failed.items()}}
        index = cls(encoded.embeddings, [paths[p] for p in encoded.positions],
                    failed={paths[p]: reason for p, reason in encoded.failed.items()}, model_path=model_path,
                    model_fingerprint=fingerprint, backend=backend, faiss_threshold=faiss_threshold, model=model,
                    processor=processor, signatures=signatures, processor_settings=settings, **faiss_params)
        if target_recall is not None and index.backend != "exact":
            index.tune(target_recall)
        if out_dir is not None:
            index.save(out_dir)
            for shard in checkpoint.glob("*"):
                shard.unlink()
            checkpoint.rmdir()
        return index

    @classmethod
    def _reusable(cls, out_dir, fingerprint: str, settings: str):
        """Embeddings of an index already in `out_dir` built with the same weights and processor settings."""
        if not (Path(out_dir) / INDEX_METADATA_FILE).is_file():
            return None
        previous = cls.load(out_dir)
        if previous.model_fingerprint != fingerprint or previous.processor_settings != settings:
            logger.warning("%s holds an index built with other weights or processor settings: it will be replaced",
                           out_dir)
            return None
        stored = previous.signatures["stored"]
        if len(stored) != len(previous):
            return None
        return dict(zip(stored, previous.embeddings)), dict(previous.signatures["failed"])

    # -- backends --------------------------------------------------------------------------------------

    def set_backend(self, backend: str = "auto", **faiss_params) -> None:
        """Choose exact search or build a FAISS index over the stored vectors.

        Args:
            backend: "auto" (exact when `len(self) <= faiss_threshold`, else "ivf"), "exact", "ivf" or "hnsw".
            faiss_params: IVF: `nlist` (default about sqrt(N)), `nprobe` (default nlist / 16, at least 1);
                HNSW: `hnsw_m` (32), `ef_construction` (80), `ef_search` (64).
        """
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        unknown = set(faiss_params) - {"nlist", "nprobe", "hnsw_m", "ef_search", "ef_construction"}
        if unknown:
            raise ValueError(f"unknown FAISS parameters {sorted(unknown)}")
        if backend == "auto":
            backend = "exact" if len(self) <= self.faiss_threshold else "ivf"
        self._faiss_index = None
        self.faiss_params = {}
        self.backend = backend
        if backend == "exact":
            return
        faiss = _faiss()
        n, d = len(self), self.dim
        started = time.perf_counter()
        if backend == "ivf":
            nlist = int(faiss_params.get("nlist") or max(1, min(round(math.sqrt(n)), n // 39 or 1)))
            nprobe = int(faiss_params.get("nprobe") or max(1, nlist // 16))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFScalarQuantizer(quantizer, d, nlist, faiss.ScalarQuantizer.QT_fp16,
                                                  faiss.METRIC_INNER_PRODUCT)
            # k-means on a sample: 64 points per list is plenty and keeps training time bounded at 1M vectors
            sample = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: nlist * 64].sort().values
            index.train(self.embeddings[sample].float().numpy())
            index.nprobe = nprobe
            self.faiss_params = {"nlist": nlist, "nprobe": nprobe}
        else:
            hnsw_m = int(faiss_params.get("hnsw_m") or 32)
            index = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_fp16, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.train(self.embeddings[: min(n, 1000)].float().numpy())  # fp16 codes need no statistics
            index.hnsw.efConstruction = int(faiss_params.get("ef_construction") or 80)
            index.hnsw.efSearch = int(faiss_params.get("ef_search") or 64)
            self.faiss_params = {"hnsw_m": hnsw_m, "ef_construction": index.hnsw.efConstruction,
                                 "ef_search": index.hnsw.efSearch}
        for start in range(0, n, EXACT_CHUNK_ROWS):  # add in chunks: no float32 copy of the whole store
            index.add(self.embeddings[start:start + EXACT_CHUNK_ROWS].float().numpy())
        self._faiss_index = index
        logger.info("Built FAISS %s index over %d vectors in %.1f s (%s)", backend, n,
                    time.perf_counter() - started, self.faiss_params)

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the FAISS speed/recall knob without rebuilding (IVF `nprobe`, HNSW `ef_search`)."""
        if self.backend == "ivf" and nprobe is not None:
            self._faiss_index.nprobe = int(nprobe)
            self.faiss_params["nprobe"] = int(nprobe)
        elif self.backend == "hnsw" and ef_search is not None:
            self._faiss_index.hnsw.efSearch = int(ef_search)
            self.faiss_params["ef_search"] = int(ef_search)
        elif nprobe is not None or ef_search is not None:
            raise ValueError(f"the {self.backend!r} backend has no nprobe/ef_search to set")

    # -- searching -------------------------------------------------------------------------------------

    def _exact_store(self) -> torch.Tensor:
        if self.embeddings.numel() * 4 <= EXACT_FLOAT32_CACHE_BYTES:
            if self._float32_cache is None:
                self._float32_cache = self.embeddings.float()
            return self._float32_cache
        return self.embeddings

    def search_embeddings(self, queries: torch.Tensor | np.ndarray, k: int = 10, exact: bool | None = None
                          ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k stored vectors for each query vector.

        Args:
            queries: `[Q, D]` query embeddings (normalised or not; the score is the inner product).
            k: results per query (capped at the collection size).
            exact: force exact search (True) or the index's backend (None/False).

        Returns:
            `(scores [Q, k] float32, indices [Q, k] int64)`, best first.
        """
        queries = torch.as_tensor(queries).float()
        if queries.ndim == 1:
            queries = queries[None]
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}], got shape {tuple(queries.shape)}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(k, len(self))
        if exact or self.backend == "exact":
            return exact_search(self._exact_store(), queries, k)
        scores, indices = self._faiss_index.search(np.ascontiguousarray(queries.numpy()), k)
        return scores, indices

    def embed_queries(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Text embeddings `[len(texts), D]` from the model that built the index (loaded from `model_path`)."""
        model, processor = self._text_model()
        return encode_texts(model, processor, texts, batch_size=batch_size, show_progress=len(texts) > batch_size)

    def search(self, queries: str | Sequence[str] | torch.Tensor, k: int = 10) -> list[list[tuple[str, float]]]:
        """Search by text (or by query embeddings `[Q, D]`).

        Returns:
            one list per query of `(path, score)` pairs, best first (score = cosine similarity).
        """
        if isinstance(queries, str):
            queries = [queries]
        if not isinstance(queries, (torch.Tensor, np.ndarray)):
            queries = self.embed_queries(list(queries))
        scores, indices = self.search_embeddings(queries, k)
        return [[(self.paths[i], float(s)) for s, i in zip(row_s, row_i) if i >= 0]
                for row_s, row_i in zip(scores, indices)]

    def _sample_queries(self, num_queries: int, seed: int = 0, noise: float = 1.0) -> torch.Tensor:
        """Stored vectors plus isotropic noise (`noise` x their norm), normalised: `[num_queries, D]`."""
        generator = torch.Generator().manual_seed(seed)
        picks = torch.randint(0, len(self), (num_queries,), generator=generator)
        base = self.embeddings[picks].float()  # [Q, D]
        jitter = F.normalize(torch.randn(base.shape, generator=generator), dim=-1)
        return F.normalize(base + noise * base.norm(dim=-1, keepdim=True) * jitter, dim=-1)

    def measure_recall(self, num_queries: int = 200, k: int = 10, queries: torch.Tensor | None = None,
                       seed: int = 0, noise: float = 1.0) -> float:
        """Recall@k of the current backend against exact search (1.0 for the exact backend).

        Args:
            num_queries: how many queries to draw when `queries` is not given.
            queries: `[Q, D]` query embeddings to use (e.g. real text queries); preferred when available.
            seed: for the drawn queries.
            noise: drawn queries are stored vectors plus isotropic Gaussian noise of this norm relative to the
                vector (1.0: cosine about 0.7 to their source), then normalised: queries that have a close
                match, as a text query has, but are not copies of stored vectors.

        Returns:
            mean over queries of |approximate top-k ∩ exact top-k| / k.
        """
        if self.backend == "exact":
            return 1.0
        if queries is None:
            queries = self._sample_queries(num_queries, seed, noise)
        queries = torch.as_tensor(queries).float()
        _, exact = self.search_embeddings(queries, k, exact=True)
        return self._recall_against(queries, exact)

    def _recall_against(self, queries: torch.Tensor, exact_indices: np.ndarray) -> float:
        """Mean |approximate top-k ∩ exact top-k| / k, with k = exact_indices.shape[1]."""
        k = exact_indices.shape[1]
        _, approx = self.search_embeddings(queries, k)
        hits = [len(set(a.tolist()) & set(e.tolist())) for a, e in zip(approx, exact_indices)]
        return float(np.mean(hits) / k)

    def tune(self, target_recall: float = 0.95, k: int = 10, num_queries: int = 200,
             queries: torch.Tensor | None = None, seed: int = 0) -> float:
        """Raise the FAISS search effort (IVF `nprobe`, HNSW `ef_search`), doubling it, until recall@k against
        exact search reaches `target_recall` on the queries of `measure_recall`, or the effort is maximal (IVF:
        every list scanned, which is exhaustive). Returns the recall reached; exact search returns 1.0.
        """
        if not 0.0 < target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
        if self.backend == "exact":
            return 1.0
        queries = self._sample_queries(num_queries, seed) if queries is None else torch.as_tensor(queries).float()
        _, exact = self.search_embeddings(queries, k, exact=True)
        while True:
            recall = self._recall_against(queries, exact)
            if self.backend == "ivf":
                current, limit = self.faiss_params["nprobe"], self.faiss_params["nlist"]
                if recall >= target_recall or current >= limit:
                    break
                self.set_search_params(nprobe=min(2 * current, limit))
            else:
                current, limit = self.faiss_params["ef_search"], max(len(self), k)
                if recall >= target_recall or current >= limit:
                    break
                self.set_search_params(ef_search=min(2 * current, limit))
        logger.info("FAISS %s tuned to %s: recall@%d = %.3f (target %.3f)", self.backend, self.faiss_params, k,
                    recall, target_recall)
        return recall

    def _text_model(self):
        if self._model is None or self._processor is None:
            if not self.model_path:
                raise ValueError("this index records no model_path: pass model= and processor= to VideoIndex.load "
                                 "(or search with query embeddings)")
            from .modeling_pig import PIGModel
            from .processing_pig import PIGProcessor

            model = PIGModel.from_pretrained(self.model_path) if self._model is None else self._model
            processor = PIGProcessor.from_pretrained(self.model_path) if self._processor is None else self._processor
            self.attach_model(model, processor)
        return self._model, self._processor

    def attach_model(self, model, processor, check: bool = True) -> None:
        """Use `model`/`processor` to embed text queries; with `check`, its weights must be the index's."""
        if check and self.model_fingerprint is not None:
            found = model_fingerprint(model)
            if found != self.model_fingerprint:
                raise ValueError(
                    f"the model (from {self.model_path!r}) is not the one that built this index (weights "
                    f"fingerprint {found} != {self.model_fingerprint}); its text embeddings would not match the "
                    "stored video embeddings. Rebuild the index or pass the original model.")
        self._model, self._processor = model, processor

    # -- persistence -----------------------------------------------------------------------------------

    def save(self, out_dir: str | os.PathLike) -> None:
        """Write `embeddings.safetensors`, `index.json` (paths, failures, model, backend) and `faiss.index`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / (INDEX_EMBEDDINGS_FILE + ".tmp")
        save_file({"embeddings": self.embeddings}, str(tmp), metadata={"format": str(INDEX_FORMAT_VERSION)})
        os.replace(tmp, out / INDEX_EMBEDDINGS_FILE)
        faiss_file = out / INDEX_FAISS_FILE
        if self._faiss_index is not None:
            _faiss().write_index(self._faiss_index, str(faiss_file) + ".tmp")
            os.replace(str(faiss_file) + ".tmp", faiss_file)
        elif faiss_file.exists():
            faiss_file.unlink()
        metadata = {
            "format": INDEX_FORMAT_VERSION,
            "num_videos": len(self),
            "dim": self.dim,
            "model_path": self.model_path,
            "model_fingerprint": self.model_fingerprint,
            "backend": self.backend,
            "faiss_params": self.faiss_params,
            "faiss_threshold": self.faiss_threshold,
            "paths": self.paths,
            "failed": self.failed,
            "processor_settings": self.processor_settings,
            "signatures": self.signatures,
        }
        _atomic_write_text(out / INDEX_METADATA_FILE, json.dumps(metadata, indent=1))

    @classmethod
    def load(cls, index_dir: str | os.PathLike, model=None, processor=None) -> "VideoIndex":
        """Read an index written by `save`. `model`/`processor` (optional) embed text queries; by default
        they are loaded from the recorded `model_path` at the first text search."""
        folder = Path(index_dir)
        meta_path = folder / INDEX_METADATA_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{folder}: no {INDEX_METADATA_FILE}; not a VideoIndex folder")
        metadata = json.loads(meta_path.read_text())
        if metadata.get("format") != INDEX_FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format {metadata.get('format')!r}, expected {INDEX_FORMAT_VERSION}")
        embeddings = load_file(str(folder / INDEX_EMBEDDINGS_FILE))["embeddings"]
        if embeddings.shape != (metadata["num_videos"], metadata["dim"]):
            raise ValueError(f"{folder / INDEX_EMBEDDINGS_FILE}: shape {tuple(embeddings.shape)} does not match "
                             f"{INDEX_METADATA_FILE} ({metadata['num_videos']}, {metadata['dim']})")
        index = cls(embeddings, metadata["paths"], failed=metadata["failed"], model_path=metadata["model_path"],
                    model_fingerprint=metadata["model_fingerprint"], backend="exact",
                    faiss_threshold=metadata["faiss_threshold"], signatures=metadata.get("signatures"),
                    processor_settings=metadata.get("processor_settings"))
        if metadata["backend"] != "exact":
            faiss_file = folder / INDEX_FAISS_FILE
            if not faiss_file.is_file():
                raise FileNotFoundError(f"{folder}: backend {metadata['backend']!r} but no {INDEX_FAISS_FILE}")
            index._faiss_index = _faiss().read_index(str(faiss_file))
            if index._faiss_index.ntotal != len(index):
                raise ValueError(f"{faiss_file}: {index._faiss_index.ntotal} vectors, index.json lists {len(index)}")
            index.backend = metadata["backend"]
            index.faiss_params = dict(metadata["faiss_params"])
            index.set_search_params(nprobe=index.faiss_params.get("nprobe"),
                                    ef_search=index.faiss_params.get("ef_search"))
        if model is not None or processor is not None:
            if model is None or processor is None:
                raise ValueError("pass both model and processor, or neither")
            index.attach_model(model, processor)
        return index
