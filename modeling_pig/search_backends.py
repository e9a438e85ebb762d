"""Search backends of `VideoIndex`: how the top-k stored vectors of a query are found.

A backend is one class, a `SearchBackend` subclass registered with `@register_backend`: it builds itself over
the stored `[N, D]` fp16 vectors, searches, sets its search effort (the speed/recall knob), and saves and loads
its own files. Adding a backend touches only its class. Shipped: `exact` (chunked matmul), `ivf` (FAISS IVF,
fp16 codes) and `hnsw` (FAISS HNSW, fp16 codes).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["SearchBackend", "ExactBackend", "IVFBackend", "HNSWBackend", "SEARCH_BACKENDS", "register_backend",
           "backend_names", "exact_search", "EXACT_CHUNK_ROWS", "EXACT_FLOAT32_CACHE_BYTES"]

# Stored vectors scored per matmul in exact search: bounds the float32 working set to chunk x D.
EXACT_CHUNK_ROWS = 65_536
# Exact search keeps a float32 copy of the fp16 store when it is at most this big (faster repeated
# queries); larger stores are converted chunk by chunk instead.
EXACT_FLOAT32_CACHE_BYTES = 256 * 2**20


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


def _faiss():
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - faiss-cpu is a declared dependency
        raise ImportError("FAISS search needs the faiss-cpu package: pip install faiss-cpu") from err
    return faiss


# ------------------------------------------------------------------------------------------------------
# Backends


SEARCH_BACKENDS: dict[str, type["SearchBackend"]] = {}


def register_backend(cls: type["SearchBackend"]) -> type["SearchBackend"]:
    """Class decorator: make a backend available as `VideoIndex(..., backend=cls.name)` and `pig index --backend`."""
    SEARCH_BACKENDS[cls.name] = cls
    return cls


class SearchBackend:
    """Finds the top-k stored vectors of a query. One subclass per kind of index.

    A subclass sets `name`, the parameters it accepts (`build_params`, with their defaults resolved in
    `__init__` into `self.params`) and, when it has a speed/recall knob, `effort_param` (a key of `params`);
    it implements `__init__(vectors, **params)` (build over the `[N, D]` fp16 vectors), `search`, and, when
    it keeps a structure of its own, `save` / `load` / `nbytes`.
    """

    name: ClassVar[str]
    build_params: ClassVar[tuple[str, ...]] = ()
    effort_param: ClassVar[str | None] = None

    def __init__(self, vectors: torch.Tensor, **params):
        self.vectors = vectors
        self.params: dict = {}

    @classmethod
    def check_params(cls, params: dict) -> None:
        unknown = set(params) - set(cls.build_params)
        if unknown:
            accepted = ", ".join(cls.build_params) or "none"
            raise ValueError(f"unknown parameters {sorted(unknown)} for the {cls.name!r} backend (accepted: {accepted})")

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`queries` `[Q, D]` float32 -> `(scores [Q, k], indices [Q, k])`, best first; index -1 = no result."""
        raise NotImplementedError

    @property
    def effort(self) -> int | None:
        return self.params.get(self.effort_param) if self.effort_param else None

    def set_effort(self, value: int) -> None:
        """Set the search-time knob (more effort: slower, higher recall)."""
        raise ValueError(f"the {self.name!r} backend has no search effort to set")

    def max_effort(self, k: int) -> int | None:
        """The effort beyond which searching costs more without finding more."""
        return None

    def save(self, folder: Path) -> None:
        """Write the backend's own files into the index folder (nothing for a backend without a structure)."""

    @classmethod
    def remove_files(cls, folder: Path) -> None:
        """Remove what this backend's `save` writes (before another backend is saved into `folder`)."""

    @classmethod
    def load(cls, folder: Path, vectors: torch.Tensor, params: dict) -> "SearchBackend":
        return cls(vectors, **params)

    def nbytes(self) -> int:
        """Memory of the backend's own structures (beyond the stored fp16 vectors)."""
        return 0


@register_backend
class ExactBackend(SearchBackend):
    """Scores every stored vector (chunked float32 matmul): exact results, cost linear in N."""

    name = "exact"

    def __init__(self, vectors: torch.Tensor, **params):
        self.check_params(params)
        super().__init__(vectors)
        self._float32 = None

    def _store(self) -> torch.Tensor:
        if self.vectors.numel() * 4 <= EXACT_FLOAT32_CACHE_BYTES:
            if self._float32 is None:
                self._float32 = self.vectors.float()
            return self._float32
        return self.vectors

    def search(self, queries, k):
        return exact_search(self._store(), torch.as_tensor(queries), k)

    def nbytes(self) -> int:
        return 0 if self._float32 is None else self._float32.numel() * 4


class FaissBackend(SearchBackend):
    """A FAISS index over the stored vectors, kept in `faiss.index` next to them."""

    file_name: ClassVar[str] = "faiss.index"

    def __init__(self, vectors: torch.Tensor, index=None, **params):
        super().__init__(vectors)
        self.check_params(params)
        self.params = self.resolve_params(len(vectors), params)
        if index is None:
            started = time.perf_counter()
            index = self.create(vectors, self.params)
            for start in range(0, len(vectors), EXACT_CHUNK_ROWS):  # add in chunks: no float32 copy of it all
                index.add(vectors[start:start + EXACT_CHUNK_ROWS].float().numpy())
            logger.info("Built FAISS %s index over %d vectors in %.1f s (%s)", self.name, len(vectors),
                        time.perf_counter() - started, self.params)
        self.index = index
        if self.effort_param:
            self.set_effort(self.params[self.effort_param])

    def resolve_params(self, n: int, params: dict) -> dict:
        raise NotImplementedError

    def create(self, vectors: torch.Tensor, params: dict):
        """A trained, empty FAISS index for `vectors`."""
        raise NotImplementedError

    def search(self, queries, k):
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def save(self, folder: Path) -> None:
        path = folder / self.file_name
        tmp = folder / f".{self.file_name}.{os.getpid()}.tmp"
        _faiss().write_index(self.index, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def remove_files(cls, folder: Path) -> None:
        (folder / cls.file_name).unlink(missing_ok=True)

    @classmethod
    def load(cls, folder: Path, vectors: torch.Tensor, params: dict) -> "FaissBackend":
        path = folder / cls.file_name
        if not path.is_file():
            raise FileNotFoundError(f"{folder}: backend {cls.name!r} but no {cls.file_name}")
        index = _faiss().read_index(str(path))
        if index.ntotal != len(vectors):
            raise ValueError(f"{path}: {index.ntotal} vectors, the index lists {len(vectors)}")
        return cls(vectors, index=index, **params)

    def nbytes(self) -> int:
        return int(_faiss().serialize_index(self.index).nbytes)


@register_backend
class IVFBackend(FaissBackend):
    """FAISS `IndexIVFScalarQuantizer` with fp16 codes on inner product: k-means into `nlist` lists (default
    about sqrt(N)); a query scans its `nprobe` closest lists (default nlist / 16). nprobe = nlist is exhaustive."""

    name = "ivf"
    build_params = ("nlist", "nprobe")
    effort_param = "nprobe"

    def resolve_params(self, n, params):
        nlist = int(params.get("nlist") or max(1, min(round(math.sqrt(n)), n // 39 or 1)))
        return {"nlist": nlist, "nprobe": int(params.get("nprobe") or max(1, nlist // 16))}

    def create(self, vectors, params):
        faiss = _faiss()
        n, d = vectors.shape
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, params["nlist"], faiss.ScalarQuantizer.QT_fp16,
                                              faiss.METRIC_INNER_PRODUCT)
        # k-means on a sample: 64 points per list is plenty and keeps training time bounded at 1M vectors
        sample = torch.randperm(n, generator=torch.Generator().manual_seed(0))[: params["nlist"] * 64].sort().values
        index.train(vectors[sample].float().numpy())
        return index

    def set_effort(self, value):
        self.index.nprobe = self.params["nprobe"] = int(value)

    def max_effort(self, k):
        return self.params["nlist"]


@register_backend
class HNSWBackend(FaissBackend):
    """FAISS `IndexHNSWSQ` (fp16 codes, inner product): `hnsw_m` links per node (32), `ef_construction` (80),
    search effort `ef_search` (64)."""

    name = "hnsw"
    build_params = ("hnsw_m", "ef_construction", "ef_search")
    effort_param = "ef_search"

    def resolve_params(self, n, params):
        return {"hnsw_m": int(params.get("hnsw_m") or 32), "ef_construction": int(params.get("ef_construction") or 80),
                "ef_search": int(params.get("ef_search") or 64)}

    def create(self, vectors, params):
        faiss = _faiss()
        index = faiss.IndexHNSWSQ(vectors.shape[1], faiss.ScalarQuantizer.QT_fp16, params["hnsw_m"],
                                  faiss.METRIC_INNER_PRODUCT)
        index.train(vectors[: min(len(vectors), 1000)].float().numpy())  # fp16 codes need no statistics
        index.hnsw.efConstruction = params["ef_construction"]
        return index

    def set_effort(self, value):
        self.index.hnsw.efSearch = self.params["ef_search"] = int(value)

    def max_effort(self, k):
        return max(len(self.vectors), k)


def backend_names() -> tuple[str, ...]:
    """What `backend=` accepts: "auto" and every registered backend."""
    return ("auto", *SEARCH_BACKENDS)
