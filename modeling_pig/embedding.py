"""One embedding store: (model fingerprint, processor settings, item signature) -> vector, on disk.

Every vector this package computes for later use goes through `EmbeddingStore`: the resumable build of a
`VideoIndex`, the reuse of old vectors when an index is rebuilt, and the embedding cache of a benchmark
evaluation are all "open the store in folder X":

    store = EmbeddingStore("my_cache")                       # any folder; created when missing
    encoded = encode_videos(model, processor, paths, store=store)   # embeds only what the store lacks
    texts = encode_texts(model, processor, captions, store=store)   # (encoders: modeling_pig.encoding)

A store folder holds one section per *key* (model weights fingerprint, processor settings, storage dtype):
vectors of another model or another frame count never mix. Inside a section, each vector is found by the
*signature* of its item: a video's path, clip bounds, file size and mtime (a file that changed is embedded
again), or a text itself. Failures (videos that do not decode) are stored too, so they are not retried.

Layout on disk:

    FOLDER/<key>/manifest.json                  model fingerprint, processor settings, dtype, format
    FOLDER/<key>/shard-<time>-<pid>-<n>.safetensors   "embeddings" [m, D]; metadata: item signatures, failures

Shards are written to a temporary name, flushed to disk and renamed, so a crash never leaves a half-written
shard, and every writer (one per process in a distributed build) writes shards of its own name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Iterable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

logger = logging.getLogger(__name__)

__all__ = [
    "EmbeddingStore",
    "StoreSection",
    "EncodedVideos",
    "model_fingerprint",
    "processor_signature",
    "video_signature",
    "text_signature",
]

STORE_FORMAT_VERSION = 1
# Finished vectors are written to the store at least every this many items and this many seconds.
FLUSH_EVERY = 512
FLUSH_SECONDS = 60.0


# ------------------------------------------------------------------------------------------------------
# Keys and signatures


def model_fingerprint(model: torch.nn.Module) -> str:
    """A hash of the model's class, config and every parameter/buffer value (changes whenever a weight does).

    The model half of a store key, and the check that an index is searched with the model that built it.
    Hashing reads all weights once (about a second for a ViT-B/32 model).
    """
    digest = hashlib.blake2b(digest_size=16)
    digest.update(type(model).__qualname__.encode())
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_json_string"):
        # where the model was loaded from and by which transformers version say nothing about its outputs
        settings = _without_keys(json.loads(config.to_json_string(use_diff=False)), ("_name_or_path",
                                                                                      "transformers_version"))
        digest.update(json.dumps(settings, sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _without_keys(value, keys: tuple[str, ...]):
    if isinstance(value, dict):
        return {k: _without_keys(v, keys) for k, v in value.items() if k not in keys}
    return value


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


def video_signature(path: str | None, start=None, end=None) -> str:
    """Identifies one video clip and the state of its file (size, mtime): equal signature, equal embedding."""
    try:
        stat = os.stat(path) if path is not None else None
    except OSError:
        stat = None
    size, mtime = (stat.st_size, stat.st_mtime_ns) if stat else (-1, -1)
    return json.dumps([path, start, end, size, mtime])


def text_signature(text: str) -> str:
    """The signature of a text item (the text itself, tagged so that it never equals a video's)."""
    return json.dumps(["text", text])


def _new_writer_name() -> str:
    """Unique across processes and machines writing to one store; sorts by creation time."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def _atomic_write(path: Path, write) -> None:
    """`write(tmp_path)`, flush it to disk, then rename over `path`: readers see the old or the new file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    with open(tmp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # make the rename itself durable (not possible on every filesystem)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    _atomic_write(Path(path), lambda tmp: tmp.write_text(text))


# ------------------------------------------------------------------------------------------------------
# The store


class StoreSection:
    """The vectors of one key (model, processor settings, dtype) in a store folder: signature -> vector.

    Reads every shard at construction (a `signature -> (shard, row)` table; the shards' tensors stay as they
    are), buffers new vectors with `add` / `add_failed`, and writes them as one new shard on `flush`.
    """

    def __init__(self, folder: Path, manifest: dict, writer: str | None = None):
        self.folder = folder
        self.manifest = manifest
        self.dtype = getattr(torch, manifest["dtype"].removeprefix("torch."))
        self._writer = writer or _new_writer_name()
        self._written = 0
        self._shards: list[torch.Tensor] = []
        self._rows: dict[str, tuple[int, int]] = {}
        self.failed: dict[str, str] = {}
        self._pending_items: list[str] = []
        self._pending_rows: list[torch.Tensor] = []
        self._pending_failed: dict[str, str] = {}
        self.reload()

    def shard_files(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.safetensors"))

    def reload(self) -> None:
        """Read every shard on disk again (e.g. after other processes wrote theirs)."""
        self._shards, self._rows, self.failed = [], {}, {}
        for shard in self.shard_files():
            with safe_open(str(shard), framework="pt") as handle:
                metadata = handle.metadata()
                embeddings = handle.get_tensor("embeddings")
            items = json.loads(metadata["items"])
            if len(items) != embeddings.shape[0]:
                raise ValueError(f"{shard}: {embeddings.shape[0]} embeddings but {len(items)} item signatures")
            number = len(self._shards)
            self._shards.append(embeddings)
            self._rows.update((item, (number, row)) for row, item in enumerate(items))
            self.failed.update(json.loads(metadata["failed"]))
        for item in self._rows:  # an item that later decoded is no longer a failure
            self.failed.pop(item, None)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, signature: str) -> bool:
        """Whether `signature` has a vector (buffered ones included)."""
        return signature in self._rows

    def has(self, signature: str) -> bool:
        """Whether `signature` has a vector or a recorded failure (i.e. needs no work)."""
        return signature in self._rows or signature in self.failed

    def get(self, signatures: Sequence[str]) -> torch.Tensor:
        """The vectors of `signatures`, `[len(signatures), D]` in the store's dtype (KeyError if one is absent)."""
        if not signatures:
            return torch.empty(0, 0, dtype=self.dtype)
        located = torch.tensor([self._rows[signature] for signature in signatures], dtype=torch.int64)  # [n, 2]
        out = torch.empty(len(signatures), self._shards[int(located[0, 0])].shape[1], dtype=self.dtype)
        for shard in located[:, 0].unique().tolist():  # one gather per shard, not one per row
            where = (located[:, 0] == shard).nonzero().squeeze(1)
            out[where] = self._shards[shard].index_select(0, located[where, 1])
        return out

    def signatures(self) -> list[str]:
        return list(self._rows)

    def collect(self, signatures: Sequence[str]) -> "EncodedVideos":
        """What the section holds for `signatures` (in order): vectors, their positions, and failures."""
        ok = [p for p, s in enumerate(signatures) if s in self._rows]
        failures = {p: self.failed[s] for p, s in enumerate(signatures) if s in self.failed and s not in self._rows}
        return EncodedVideos(embeddings=self.get([signatures[p] for p in ok]), positions=ok, failed=failures)

    @staticmethod
    def read_items(folder: str | os.PathLike) -> tuple[set[str], dict[str, str]]:
        """The signatures with a vector and the failures recorded in a section folder, from the shards'
        metadata only (no vector is read): what `pig info` counts."""
        items, failed = set(), {}
        for shard in sorted(Path(folder).glob("shard-*.safetensors")):
            with safe_open(str(shard), framework="pt") as handle:
                metadata = handle.metadata()
            items.update(json.loads(metadata["items"]))
            failed.update(json.loads(metadata["failed"]))
        return items, {item: reason for item, reason in failed.items() if item not in items}

    def add(self, signatures: Sequence[str], vectors: torch.Tensor) -> None:
        """Buffer new vectors `[len(signatures), D]` (readable at once, on disk at the next `flush`)."""
        vectors = vectors.detach().to("cpu", self.dtype).contiguous()
        if vectors.shape[0] != len(signatures):
            raise ValueError(f"{vectors.shape[0]} vectors for {len(signatures)} signatures")
        self._pending_items.extend(signatures)
        self._pending_rows.append(vectors)
        # visible to `get` at once: the pending rows form a provisional shard
        self._shards.append(vectors)
        number = len(self._shards) - 1
        self._rows.update((item, (number, row)) for row, item in enumerate(signatures))
        for item in signatures:
            self.failed.pop(item, None)

    def add_failed(self, signature: str, reason: str) -> None:
        self.failed[signature] = self._pending_failed[signature] = reason

    @property
    def num_pending(self) -> int:
        return len(self._pending_items) + len(self._pending_failed)

    def flush(self) -> None:
        """Write the buffered vectors and failures as one new shard (crash-safe); no-op when nothing is buffered."""
        if not self.num_pending:
            return
        rows = torch.cat(self._pending_rows) if self._pending_rows else torch.empty(0, 0, dtype=self.dtype)
        path = self.folder / f"shard-{self._writer}-{self._written:06d}.safetensors"
        metadata = {"items": json.dumps(self._pending_items), "failed": json.dumps(self._pending_failed)}
        _atomic_write(path, lambda tmp: save_file({"embeddings": rows}, str(tmp), metadata=metadata))
        self._written += 1
        self._pending_items, self._pending_rows, self._pending_failed = [], [], {}

    def compact(self, keep: Iterable[str] | None = None) -> None:
        """Rewrite the section as one shard holding the signatures in `keep` (default: all of them).

        Call it when no other process writes to this section (`VideoIndex.build` does it once the index is
        saved): items not kept (files deleted or changed since) are dropped.
        """
        self.flush()
        keep_set = set(self._rows) if keep is None else set(keep)
        items = [item for item in self._rows if item in keep_set]
        failed = {item: reason for item, reason in self.failed.items() if item in keep_set}
        old = self.shard_files()
        self._pending_items, self._pending_rows = list(items), ([self.get(items)] if items else [])
        self._pending_failed = failed
        self._writer = _new_writer_name()
        self._written = 0
        if self.num_pending:
            self.flush()
        for shard in old:
            shard.unlink()
        self.reload()


class EmbeddingStore:
    """A folder of embeddings, one `StoreSection` per (model fingerprint, processor settings, dtype).

    Args:
        folder: created when missing.
        dtype: the dtype vectors are stored (and returned) in: float32 for evaluation caches, float16 for an
            index's store. Part of the key: a float16 and a float32 store in one folder are separate sections.
    """

    def __init__(self, folder: str | os.PathLike, dtype: torch.dtype = torch.float32):
        self.folder = Path(folder)
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"EmbeddingStore({str(self.folder)!r}, dtype={self.dtype})"

    def key(self, model_fp: str, processor_settings: str) -> str:
        text = f"{model_fp}\n{processor_settings}\n{self.dtype}"
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()

    def section(self, model_fp: str, processor_settings: str, writer: str | None = None) -> StoreSection:
        """The section of this key (created when missing). `writer` names this writer's shards (default: time
        and process id, unique per opening)."""
        key = self.key(model_fp, processor_settings)
        folder = self.folder / key
        folder.mkdir(parents=True, exist_ok=True)
        manifest_path = folder / "manifest.json"
        manifest = {"format": STORE_FORMAT_VERSION, "model_fingerprint": model_fp,
                    "processor_settings": processor_settings, "dtype": str(self.dtype)}
        if manifest_path.is_file():
            found = json.loads(manifest_path.read_text())
            if found != manifest:
                raise ValueError(f"{manifest_path}: manifest {found} does not match its key {key} ({manifest}); "
                                 "the store folder was modified by hand: delete this section to start over")
        else:
            atomic_write_text(manifest_path, json.dumps(manifest))
        return StoreSection(folder, manifest, writer)

    def keys(self) -> list[str]:
        return sorted(p.parent.name for p in self.folder.glob("*/manifest.json"))

    def remove_other_sections(self, keep: StoreSection) -> None:
        """Delete every section but `keep` (an index's store keeps the vectors of its current model only)."""
        for key in self.keys():
            folder = self.folder / key
            if folder != keep.folder:
                for path in folder.iterdir():
                    path.unlink()
                folder.rmdir()


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
