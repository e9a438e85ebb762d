"""Building an index folder: deduplication, the build lock and status, one or many processes, resume, updates.

`build_index` (what `VideoIndex.build` and `pig index` run) embeds videos into the folder's embedding store
(`OUT/store`, see `modeling_pig.embedding`), then writes the index. Everything that makes this safe at scale
lives here:

* **Several processes** (`accelerate launch --num_processes N -m modeling_pig.cli index ...`, one or many
  machines): each process embeds every N-th missing video into store shards of its own; the main process
  waits for all, reads the store and writes the index. The result equals a one-process build.
* **Interruptions**: finished vectors are in the store (a SIGTERM or Ctrl-C loses at most the batch in flight);
  `build.json` + `build-videos/` record the build in progress for `pig info`; rerunning resumes.
* **Updates**: a build into an existing index folder embeds only the videos the store lacks (new or changed
  files) and drops the ones no longer listed; the store is then compacted to the current videos.
* **One build at a time**: an exclusive lock on `OUT/.lock`; a second build on the same folder is refused.
* **Duplicates**: paths that resolve to the same file (symlinks, hard links) are indexed once and reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Sequence

import torch

from .embedding import (
    FLUSH_EVERY,
    EmbeddingStore,
    StoreSection,
    atomic_write_text,
    model_fingerprint,
    processor_signature,
    video_signature,
)
from .encoding import encode_videos
from .index import DEFAULT_FAISS_THRESHOLD, INDEX_METADATA_FILE, INDEX_STORE_DIR, quiet_datasets, read_metadata

logger = logging.getLogger(__name__)

__all__ = ["build_index", "index_status", "dedupe_paths", "IndexLockedError"]

BUILD_STATUS_FILE = "build.json"
BUILD_VIDEOS_DIR = "build-videos"
LOCK_FILE = ".lock"


class IndexLockedError(RuntimeError):
    """Another build holds the lock of this index folder."""


def dedupe_paths(paths: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """`(unique paths in order, {duplicate path: the first path of the same file})`.

    Two paths are the same file when they resolve to the same inode (symlinks, hard links, `a/../a`); paths
    that do not exist are compared by their resolved path (they will be reported as failures)."""
    first: dict[tuple, str] = {}
    unique, duplicates = [], {}
    for path in paths:
        try:
            stat = os.stat(path)
            key = ("inode", stat.st_dev, stat.st_ino)
        except OSError:
            key = ("path", os.path.realpath(path))
        if key in first:
            duplicates[path] = first[key]
        else:
            first[key] = path
            unique.append(path)
    return unique, duplicates


def _lock_holder(lock_path: Path) -> str:
    try:
        return lock_path.read_text().strip() or "unknown process"
    except OSError:
        return "unknown process"


@contextlib.contextmanager
def build_lock(out_dir: str | os.PathLike):
    """Hold the exclusive build lock of `out_dir` (released when the block ends or the process dies)."""
    lock_path = Path(out_dir) / LOCK_FILE
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise IndexLockedError(
                f"{out_dir}: another build of this index is running ({_lock_holder(lock_path)}); wait for it to "
                "finish or stop it, then run the command again") from None
        handle.truncate(0)
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


def check_unlocked(out_dir: str | os.PathLike) -> None:
    """Raise `IndexLockedError` now if a build holds the lock of `out_dir` (before loading a model for nothing;
    `build_index` takes the lock itself)."""
    if _lock_is_held(Path(out_dir)):
        raise IndexLockedError(
            f"{out_dir}: another build of this index is running ({_lock_holder(Path(out_dir) / LOCK_FILE)}); "
            "wait for it to finish or stop it, then run the command again")


def _lock_is_held(out_dir: Path) -> bool:
    lock_path = out_dir / LOCK_FILE
    if not lock_path.is_file():
        return False
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _write_build_status(out: Path, signatures: list[str], status: dict) -> None:
    import datasets

    tmp = out / f".{BUILD_VIDEOS_DIR}.{os.getpid()}.tmp"
    with quiet_datasets():
        datasets.Dataset.from_dict({"signature": signatures}).save_to_disk(str(tmp))
    shutil.rmtree(out / BUILD_VIDEOS_DIR, ignore_errors=True)
    os.replace(tmp, out / BUILD_VIDEOS_DIR)
    atomic_write_text(out / BUILD_STATUS_FILE, json.dumps(status, indent=1))


def _clear_build_status(out: Path) -> None:
    (out / BUILD_STATUS_FILE).unlink(missing_ok=True)
    shutil.rmtree(out / BUILD_VIDEOS_DIR, ignore_errors=True)


def _previous_paths(out: Path) -> list[str]:
    if not (out / INDEX_METADATA_FILE).is_file():
        return []
    try:
        from .index import VideoIndex

        return VideoIndex.load(out).paths
    except (ValueError, OSError) as err:  # an older format: it is replaced, nothing to compare
        logger.warning("%s: the previous index cannot be read (%s); it will be replaced", out, err)
        return []


def build_index(cls, model, processor, paths: Sequence[str | os.PathLike], batch_size: int = 16,
                num_workers: int = 0, out_dir: str | os.PathLike | None = None, model_path: str | None = None,
                model_loader: dict | None = None, model_source: str | None = None, backend: str = "auto",
                faiss_threshold: int = DEFAULT_FAISS_THRESHOLD, flush_every: int = FLUSH_EVERY,
                show_progress: bool = True, target_recall: float | None = None, store: EmbeddingStore | None = None,
                state=None, **backend_params):
    """Embed `paths` and return the `VideoIndex` (`cls`); see the module docstring for what is guaranteed.

    Args:
        model, processor: a PIGModel and its PIGProcessor (or any object with the same methods).
        paths: video files; unreadable ones are skipped, logged and listed in `index.failed`; paths of a file
            already listed (symlinks, hard links) are skipped and listed in `index.duplicates`.
        batch_size, num_workers: videos per forward pass; DataLoader decoding workers (per process).
        out_dir: when given, the index is saved there, and its embedding store `out_dir/store` keeps every
            finished vector (written every `flush_every` videos, every minute, and on an interruption): a rerun
            embeds only the videos the store lacks. Once the index is saved, the store keeps this build's videos.
        model_path: recorded so that `search` can load the text tower; default `model.name_or_path`.
        model_loader: how to load it (`modeling_pig.loader.loader_spec`); default a PIG checkpoint.
        model_source: `modeling_pig.loader.model_source_signature(model_path)` when `model` was loaded from those
            files unchanged (lets a loaded index skip re-hashing the weights); None otherwise.
        backend: "auto" (exact up to `faiss_threshold` vectors, IVF above) or a registered backend name;
            `backend_params` (e.g. nlist, nprobe, pq_m, hnsw_m, ef_search) configure it.
        target_recall: with an approximate backend, raise its search effort until recall@10 against exact
            search reaches this (see `VideoIndex.tune`); None keeps the parameters as given.
        store: another embedding store to read and fill (e.g. shared between folders); left as it is afterwards.
        state: an `accelerate.PartialState` when several processes run this together (each with its model on
            its device); only the main process returns the index, the others return None.

    Returns:
        the index, with `build_report` = counts of videos embedded now, reused, dropped, failed, duplicates.
    """
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("no video paths to index")
    unique, duplicates = dedupe_paths(paths)
    if duplicates:
        logger.warning("%d path(s) point to a file listed under another path and are indexed once: %s",
                       len(duplicates), ", ".join(f"{d} -> {k}" for d, k in list(duplicates.items())[:5]))
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    if world > 1 and out_dir is None and store is None:
        raise ValueError("a build over several processes needs out_dir (or a store) to gather the vectors in")
    out = Path(out_dir) if out_dir is not None else None
    fingerprint = model_fingerprint(model)
    settings = processor_signature(processor)
    own_store = store is None and out is not None
    if own_store:
        store = EmbeddingStore(out / INDEX_STORE_DIR, dtype=torch.float16)
    signatures = [video_signature(path) for path in unique]
    with contextlib.ExitStack() as stack:
        if out is not None:
            error = None
            if rank == 0:
                try:
                    stack.enter_context(build_lock(out))
                except IndexLockedError as err:
                    error = str(err)
            if world > 1:  # every process learns whether the main one got the lock
                from accelerate.utils import broadcast_object_list

                error = broadcast_object_list([error])[0]
            if error is not None:
                raise IndexLockedError(error)
        section = store.section(fingerprint, settings) if store is not None else None
        reused = sum(section.has(s) for s in signatures) if section is not None else 0
        if rank == 0 and out is not None:
            _write_build_status(out, signatures, {
                "status": "incomplete", "total": len(unique), "duplicates": len(duplicates),
                "model_path": model_path, "backend": backend, "store": str(section.folder.relative_to(out))
                if own_store else None, "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        encoded = encode_videos(model, processor, unique, batch_size=batch_size, num_workers=num_workers,
                                store=section, flush_every=flush_every, show_progress=show_progress,
                                model_fp=fingerprint, process_index=rank, num_processes=world)
        if world > 1:
            state.wait_for_everyone()  # every process has flushed its shards
            if rank != 0:
                return None
            section.reload()
            encoded = section.collect(signatures)
        if not encoded.positions:
            reasons = "; ".join(list(encoded.failed.values())[:3])
            raise ValueError(f"none of the {len(unique)} videos could be decoded ({reasons})")
        if model_path is None:
            model_path = getattr(model, "name_or_path", None) or None
        if model_path is not None and os.path.isdir(model_path):
            model_path = str(Path(model_path).resolve())
        kept = [unique[p] for p in encoded.positions]
        index = cls(encoded.embeddings, kept, failed={unique[p]: r for p, r in encoded.failed.items()},
                    duplicates=duplicates, model_path=model_path, model_loader=model_loader,
                    model_fingerprint=fingerprint, model_source=model_source, backend=backend,
                    faiss_threshold=faiss_threshold, model=model, processor=processor, processor_settings=settings,
                    **backend_params)
        if target_recall is not None:
            index.tune(target_recall)
        previous = _previous_paths(out) if out is not None else []
        listed = set(unique)
        index.build_report = {
            "total": len(unique), "indexed": len(index), "failed": len(index.failed), "duplicates": len(duplicates),
            "reused": reused, "embedded_now": len(unique) - reused,  # decoded (or found unreadable) by this run
            "dropped": sum(1 for path in previous if path not in listed), "num_processes": world,
        }
        if out is not None:
            index.save(out)
            _clear_build_status(out)
        if own_store:  # keep the vectors of this model and these files only
            section.compact(keep=signatures)
            store.remove_other_sections(keep=section)
        return index


def index_status(folder: str | os.PathLike) -> dict:
    """What `pig info --json` prints: `status` ("complete" or "incomplete"), `running` (a build holds the
    lock now), `embedded`, `total`, `failed`, `duplicates`, `model_path`, `backend`, and for a searchable
    index `num_videos`, `dim`, `backend_params`."""
    import datasets

    out = Path(folder)
    has_index = (out / INDEX_METADATA_FILE).is_file()
    building = (out / BUILD_STATUS_FILE).is_file()
    if not has_index and not building:
        read_metadata(out)  # raises the "not a VideoIndex folder" error
    result = {"running": _lock_is_held(out)}
    if has_index:
        metadata = read_metadata(out)
        result.update(status="complete", embedded=metadata["num_videos"],
                      total=metadata["num_videos"] + metadata["num_failed"], failed=metadata["num_failed"],
                      duplicates=metadata["num_duplicates"], model_path=metadata["model_path"],
                      model_loader=metadata["model_loader"], backend=metadata["backend"],
                      backend_params=metadata["backend_params"], num_videos=metadata["num_videos"],
                      dim=metadata["dim"])
    if building:
        build = json.loads((out / BUILD_STATUS_FILE).read_text())
        signatures = datasets.load_from_disk(str(out / BUILD_VIDEOS_DIR))["signature"]
        items, failed = StoreSection.read_items(out / build["store"]) if build.get("store") else (set(), {})
        result.update(status="incomplete", embedded=sum(1 for s in signatures if s in items),
                      total=build["total"], failed=sum(1 for s in signatures if s in failed),
                      duplicates=build["duplicates"], model_path=build["model_path"], backend=build["backend"],
                      started=build["started"], searchable_previous_index=has_index)
    return result
