"""Search backends of `VideoIndex`: how the top-k stored vectors of a query are found.

A backend is one class, a `SearchBackend` subclass registered with `@register_backend`: it builds itself over
the stored `[N, D]` fp16 vectors, searches, sets its search effort (the speed/recall knob), and saves and loads
its own file. Adding a backend touches only its class. Shipped:

* `exact`: scores every stored vector. One query costs one fp16 matrix-vector product over the (memory-mapped)
  store plus an exact float32 rescoring of the few candidates near the k-th score, less than a float32
  matrix-vector product over the same vectors (see `exact_search`); query batches use chunked float32 matmuls.
* `ivf`: FAISS IVF with fp16 codes (`IndexIVFScalarQuantizer`), `nlist` k-means lists, `nprobe` scanned.
* `ivfpq`: FAISS IVF with product-quantised codes (`IndexIVFPQ`): `pq_m` bytes per video instead of 2 x D in
  memory, the candidates rescored exactly from the memory-mapped fp16 vectors (`refine`); for collections whose
  fp16 vectors do not fit in memory, and the fastest route to a high recall at a million videos.
* `hnsw`: FAISS HNSW graph over fp16 codes (`IndexHNSWSQ`).
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

__all__ = ["SearchBackend", "ExactBackend", "IVFBackend", "IVFPQBackend", "HNSWBackend", "SEARCH_BACKENDS",
           "register_backend", "backend_names", "exact_search", "EXACT_CHUNK_ROWS"]

# Stored vectors scored per matmul when several queries are searched exactly: bounds the float32 working set.
EXACT_CHUNK_ROWS = 65_536
# Up to this many queries are searched one by one with the fp16 matrix-vector product (memory-bound: each
# query reads the store once); more are scored together with chunked float32 matmuls (compute-bound).
EXACT_MATVEC_MAX_QUERIES = 4
# Bound on |fp16 score - exact float32 score| / (|q| * max |v|) in the matrix-vector pass: the fp16 rounding of
# the query (2^-11 relative per element) and of the output (2^-11) plus float32 accumulation over D <= 4096 terms
# (D * 2^-24), with a factor 2 of margin.
_FP16_SCORE_ERROR = 2 * (2 ** -11 + 2 ** -11 + 4096 * 2 ** -24)


def _exact_chunked(embeddings: torch.Tensor, queries: torch.Tensor, k: int, chunk_rows: int):
    best_scores = torch.empty(queries.shape[0], 0)
    best_indices = torch.empty(queries.shape[0], 0, dtype=torch.int64)
    for start in range(0, embeddings.shape[0], chunk_rows):
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


def _exact_one_query(embeddings: torch.Tensor, query: torch.Tensor, k: int, max_norm: float):
    """Two passes: fp16 scores of every vector (one matrix-vector product), then exact float32 scores of the
    candidates that can be in the top k given the fp16 error bound."""
    norm = float(query.norm())
    if norm == 0.0:
        candidates = torch.arange(embeddings.shape[0])
    else:
        approx = torch.mv(embeddings, (query / norm).half()).float()  # [N], scores of the unit query
        kth = torch.topk(approx, k, sorted=True).values[-1]
        margin = 2 * _FP16_SCORE_ERROR * max_norm  # both the k-th score and a candidate's may be off by it
        candidates = (approx >= kth - margin).nonzero().squeeze(1)  # [C], C >= k
    exact = embeddings[candidates].float() @ query  # [C]
    order = np.lexsort((candidates.numpy(), -exact.numpy()))[:k]
    return exact.numpy()[order], candidates.numpy()[order]


def exact_search(embeddings: torch.Tensor, queries: torch.Tensor, k: int, chunk_rows: int = EXACT_CHUNK_ROWS,
                 max_norm: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k inner products of each query against every stored vector, scored in float32.

    Args:
        embeddings: `[N, D]` stored vectors (any float dtype; a memory-mapped fp16 store is fine).
        queries: `[Q, D]` query vectors.
        k: results per query (capped at N).
        chunk_rows: stored vectors per matmul when several queries are scored together; memory is
            `O(Q * chunk_rows + chunk_rows * D)`, never `N x N`.
        max_norm: the largest norm of a stored vector, when known (fp16 stores, few queries); computed otherwise.

    Returns:
        `(scores [Q, k] float32, indices [Q, k] int64)`, best first; equal scores keep the lower index first.
        Scores and order are those of float32 dot products: the fp16 pass of a single query only chooses which
        vectors to rescore, with a proven error bound, so it never changes the result.
    """
    n = embeddings.shape[0]
    k = min(k, n)
    queries = queries.float()
    if embeddings.dtype != torch.float16 or queries.shape[0] > EXACT_MATVEC_MAX_QUERIES:
        return _exact_chunked(embeddings, queries, k, chunk_rows)
    if max_norm is None:
        max_norm = float(max(embeddings[s:s + chunk_rows].float().norm(dim=1).max() for s in range(0, n, chunk_rows)))
    results = [_exact_one_query(embeddings, query, k, max_norm) for query in queries]
    return np.stack([s for s, _ in results]).astype(np.float32), np.stack([i for _, i in results]).astype(np.int64)


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


def backend_names() -> tuple[str, ...]:
    """What `backend=` accepts: "auto" and every registered backend."""
    return ("auto", *SEARCH_BACKENDS)


class SearchBackend:
    """Finds the top-k stored vectors of a query. One subclass per kind of index.

    A subclass sets `name`, the parameters it accepts (`build_params`, resolved with their defaults into
    `self.params`) and, when it has a speed/recall knob, `effort_param` (a key of `params`); it implements
    `__init__(vectors, **params)` (build over the `[N, D]` fp16 vectors) and `search`, and, when it keeps a
    structure of its own, `file_suffix`, `save` / `load` and `nbytes`.
    """

    name: ClassVar[str]
    build_params: ClassVar[tuple[str, ...]] = ()
    effort_param: ClassVar[str | None] = None
    file_suffix: ClassVar[str | None] = None  # the backend's own file next to the vectors (None: it has none)

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

    def save(self, path: Path) -> None:
        """Write the backend's own file at `path` (which ends in `file_suffix`)."""

    @classmethod
    def load(cls, path: Path | None, vectors: torch.Tensor, params: dict) -> "SearchBackend":
        return cls(vectors, **params)

    def nbytes(self) -> int:
        """Memory of the backend's own structures (beyond the stored fp16 vectors)."""
        return 0


@register_backend
class ExactBackend(SearchBackend):
    """Scores every stored vector: exact results, cost linear in N (see `exact_search`)."""

    name = "exact"

    def __init__(self, vectors: torch.Tensor, max_norm: float | None = None, **params):
        self.check_params(params)
        super().__init__(vectors)
        self._max_norm = max_norm

    @property
    def max_norm(self) -> float:
        """The largest norm of a stored vector (computed once, by reading every vector, when not given)."""
        if self._max_norm is None:
            self._max_norm = max((float(self.vectors[s:s + EXACT_CHUNK_ROWS].float().norm(dim=1).max())
                                  for s in range(0, len(self.vectors), EXACT_CHUNK_ROWS)), default=0.0)
        return self._max_norm

    def search(self, queries, k):
        return exact_search(self.vectors, torch.as_tensor(queries), k, max_norm=self.max_norm)


class FaissBackend(SearchBackend):
    """A FAISS index over the stored vectors, kept in its own file next to them."""

    file_suffix = ".faiss"

    def __init__(self, vectors: torch.Tensor, index=None, **params):
        super().__init__(vectors)
        self.check_params(params)
        self.params = self.resolve_params(len(vectors), vectors.shape[1], params)
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

    def resolve_params(self, n: int, dim: int, params: dict) -> dict:
        raise NotImplementedError

    def create(self, vectors: torch.Tensor, params: dict):
        """A trained, empty FAISS index for `vectors`."""
        raise NotImplementedError

    def search(self, queries, k):
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    def save(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        _faiss().write_index(self.index, str(tmp))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path | None, vectors: torch.Tensor, params: dict) -> "FaissBackend":
        if path is None or not path.is_file():
            raise FileNotFoundError(f"backend {cls.name!r}: its file {path} is missing")
        index = _faiss().read_index(str(path))
        if index.ntotal != len(vectors):
            raise ValueError(f"{path}: {index.ntotal} vectors, the index lists {len(vectors)}")
        return cls(vectors, index=index, **params)

    def nbytes(self) -> int:
        return int(_faiss().serialize_index(self.index).nbytes)


def _train_sample(vectors: torch.Tensor, size: int) -> np.ndarray:
    """A fixed random sample of `size` vectors (sorted, so a memory-mapped store is read in order), float32."""
    n = len(vectors)
    picks = torch.randperm(n, generator=torch.Generator().manual_seed(0))[:size].sort().values
    return vectors[picks].float().numpy()


def default_nlist(n: int) -> int:
    """IVF lists for n vectors: about sqrt(n) (1,000 at 1M: assigning every vector to its list costs n x nlist x D,
    the bulk of the build), with at least 39 training points per list."""
    return max(1, min(round(math.sqrt(n)), n // 39 or 1))


class _IVFBase(FaissBackend):
    effort_param = "nprobe"
    # k-means on a sample: this many points per list is plenty and bounds the training time at 1M vectors
    train_points_per_list: ClassVar[int] = 64

    def set_effort(self, value):
        self.index.nprobe = self.params["nprobe"] = int(value)

    def max_effort(self, k):
        return self.params["nlist"]

    def _quantizer_and_sample(self, vectors, params):
        faiss = _faiss()
        return faiss.IndexFlatIP(vectors.shape[1]), _train_sample(vectors, params["nlist"] * self.train_points_per_list)


@register_backend
class IVFBackend(_IVFBase):
    """FAISS `IndexIVFScalarQuantizer` with fp16 codes on inner product: k-means into `nlist` lists (default
    `default_nlist`); a query scans its `nprobe` closest lists (default nlist / 16). nprobe = nlist is exhaustive."""

    name = "ivf"
    build_params = ("nlist", "nprobe")

    def resolve_params(self, n, dim, params):
        nlist = int(params.get("nlist") or default_nlist(n))
        return {"nlist": nlist, "nprobe": int(params.get("nprobe") or max(1, nlist // 16))}

    def create(self, vectors, params):
        faiss = _faiss()
        quantizer, sample = self._quantizer_and_sample(vectors, params)
        index = faiss.IndexIVFScalarQuantizer(quantizer, vectors.shape[1], params["nlist"],
                                              faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
        index.train(sample)
        return index


@register_backend
class IVFPQBackend(_IVFBase):
    """FAISS `IndexIVFPQ` on inner product: `pq_m` sub-quantizers of `pq_bits` bits (a `pq_m`-byte code per video
    at 8 bits, default D / 8 = 64 bytes at 512-d instead of 1 KiB of fp16), `nlist` lists, `nprobe` scanned.

    With `refine` = r > 1 (default 50), the codes only pick `r * k` candidates, which are then rescored exactly
    with the stored fp16 vectors (memory-mapped: only those rows are read): recall close to that of the lists
    scanned, at the cost of PQ codes, with no second copy of the vectors in FAISS. `refine=1` ranks by the codes.
    """

    name = "ivfpq"
    build_params = ("nlist", "nprobe", "pq_m", "pq_bits", "refine")

    def resolve_params(self, n, dim, params):
        nlist = int(params.get("nlist") or default_nlist(n))
        pq_m = int(params.get("pq_m") or max(1, dim // 8))
        if dim % pq_m:
            raise ValueError(f"pq_m must divide the vector dimension {dim}, got {pq_m}")
        refine = int(params.get("refine") or 50)
        if refine < 1:
            raise ValueError(f"refine must be >= 1, got {refine}")
        return {"nlist": nlist, "nprobe": int(params.get("nprobe") or max(1, nlist // 16)), "pq_m": pq_m,
                "pq_bits": int(params.get("pq_bits") or 8), "refine": refine}

    def create(self, vectors, params):
        faiss = _faiss()
        quantizer, sample = self._quantizer_and_sample(vectors, params)
        index = faiss.IndexIVFPQ(quantizer, vectors.shape[1], params["nlist"], params["pq_m"], params["pq_bits"],
                                 faiss.METRIC_INNER_PRODUCT)
        if len(sample) < 2 ** params["pq_bits"] * 39:  # PQ codebooks need points too, not only the lists
            sample = _train_sample(vectors, min(len(vectors), 2 ** params["pq_bits"] * 39))
        index.train(sample)
        return index

    def search(self, queries, k):
        refine = self.params["refine"]
        if refine <= 1:
            return super().search(queries, k)
        _, candidates = super().search(queries, min(k * refine, len(self.vectors)))  # [Q, r*k], -1 = none
        scores_out = np.full((len(queries), k), -np.inf, dtype=np.float32)
        indices_out = np.full((len(queries), k), -1, dtype=np.int64)
        for row, (query, found) in enumerate(zip(torch.as_tensor(queries), candidates)):
            found = np.sort(found[found >= 0])
            exact = (self.vectors[torch.from_numpy(found)].float() @ query).numpy()  # [C], float32 scores
            order = np.lexsort((found, -exact))[:k]
            scores_out[row, :len(order)], indices_out[row, :len(order)] = exact[order], found[order]
        return scores_out, indices_out

    def bytes_per_vector(self) -> int:
        """Code bytes of one stored video (plus its 8-byte id in the inverted list)."""
        return int(self.index.code_size) + 8


@register_backend
class HNSWBackend(FaissBackend):
    """FAISS `IndexHNSWSQ` (fp16 codes, inner product): `hnsw_m` links per node (32), `ef_construction` (80),
    search effort `ef_search` (64)."""

    name = "hnsw"
    build_params = ("hnsw_m", "ef_construction", "ef_search")
    effort_param = "ef_search"

    def resolve_params(self, n, dim, params):
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
