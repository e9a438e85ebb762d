"""`VideoIndex`: a searchable collection of video embeddings, and its folder on disk.

This is the Two-Tower half of PIG in practice: every video becomes one L2-normalised vector
(`model.get_video_features(...).pooler_output`, computed without any text), stored in fp16; a text query
becomes one vector (`get_text_features`) and is scored against the store with a dot product.

How the top-k vectors are found is a backend's business (`modeling_pig.search_backends`: exact, IVF, IVF-PQ,
HNSW, each one class that builds, searches, sets its search effort, saves and loads); `VideoIndex` never asks
which one it holds. Building an index folder (embedding store, resume, several processes) is
`modeling_pig.indexing`.

An index folder (format 2) is written generation by generation, so that a reader (a running `pig serve`) sees
the old index or the new one, never a mix:

    index.json                     small: format, generation, counts, model, backend and its parameters
    vectors-<gen>.npy              float16 [N, D], memory-mapped on load (nothing is read until searched)
    videos-<gen>/                  `datasets` Arrow table: path, status (indexed/failed/duplicate), detail
    search-<gen>.faiss             the backend's own file (FAISS backends only)
    store/                         the embedding store the index was built from (`modeling_pig.embedding`)

(A little over 450 lines: one class, whose search, recall tuning and on-disk format belong together.)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .embedding import atomic_write_text, model_fingerprint
from .encoding import encode_texts
from .search_backends import SEARCH_BACKENDS, ExactBackend, SearchBackend, backend_names, exact_search

logger = logging.getLogger(__name__)

__all__ = ["VideoIndex", "DEFAULT_FAISS_THRESHOLD", "exact_search", "INDEX_STORE_DIR"]

INDEX_FORMAT_VERSION = 2
INDEX_METADATA_FILE = "index.json"
# The embedding store of an index folder: every vector computed for it, keyed by file signature.
INDEX_STORE_DIR = "store"
# Above this many stored vectors `backend="auto"` builds a FAISS IVF index (docs/performance.md, search).
DEFAULT_FAISS_THRESHOLD = 100_000
# "auto" uses IVF-PQ from this many vectors (256 centroids per sub-quantizer x 39 training points), IVF below.
AUTO_PQ_MIN_VECTORS = 256 * 39
_GENERATION_PREFIXES = ("vectors-", "videos-", "search-")
_FORMAT_1 = ("embeddings.safetensors", "faiss.index", "build_checkpoint")  # replaced when a format-2 index is saved


class VideoIndex:
    """A searchable collection of video embeddings (one fp16, L2-normalised vector per video).

    Build it with `VideoIndex.build(model, processor, paths)`, query it with `search(["a man plays a guitar"])`,
    keep it with `save(dir)` / `VideoIndex.load(dir)`. `backend="auto"` scores every vector exactly up to
    `faiss_threshold` vectors and builds a FAISS IVF index above; approximate backends report their recall
    against exact search with `measure_recall`, and `tune` raises their search effort to a target recall.

    Attributes:
        paths: the video of each stored vector (`path_at(i)` reads one without materialising the list).
        embeddings: `[N, D]` float16 tensor (memory-mapped when loaded).
        failed: path -> reason for the videos that could not be decoded at build time.
        duplicates: path -> the path of the same file that was indexed instead (symlinks, hard links).
        model_path: where the model came from (a folder or Hub id), used by `search` to embed text.
        model_loader: how to load it (`{"kind": "pig"}`, or `{"kind": "clip-meanp", "num_frames": T}` for the
            zero-shot model built from a CLIP checkpoint); see `modeling_pig.loader`.
        model_fingerprint: hash of the weights that produced the embeddings.
        backend: the name of the backend in use; `search_backend` is the backend object.
    """

    def __init__(self, embeddings: torch.Tensor | np.ndarray, paths: Sequence[str],
                 failed: dict[str, str] | None = None, model_path: str | None = None,
                 model_fingerprint: str | None = None, backend: str = "auto",
                 faiss_threshold: int = DEFAULT_FAISS_THRESHOLD, model=None, processor=None,
                 processor_settings: str | None = None, duplicates: dict[str, str] | None = None,
                 model_loader: dict | None = None, model_source: str | None = None, check: bool = True,
                 max_vector_norm: float | None = None, **backend_params):
        if isinstance(embeddings, np.ndarray):
            embeddings = torch.from_numpy(embeddings)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be [N, D], got shape {tuple(embeddings.shape)}")
        if embeddings.shape[0] != len(paths):
            raise ValueError(f"{embeddings.shape[0]} embeddings but {len(paths)} paths")
        if check and not torch.isfinite(embeddings).all():
            raise ValueError("embeddings contain NaN or inf")
        self.embeddings = embeddings.to(torch.float16).contiguous()
        self._paths = paths if isinstance(paths, _PathColumn) else [str(p) for p in paths]
        self.failed = dict(failed or {})
        self.duplicates = dict(duplicates or {})
        self.model_path = model_path
        self.model_loader = dict(model_loader or {"kind": "pig"})
        self.model_fingerprint = model_fingerprint
        self.model_source = model_source
        self.faiss_threshold = faiss_threshold
        self.processor_settings = processor_settings
        self._model, self._processor = model, processor
        self._exact = ExactBackend(self.embeddings, max_norm=max_vector_norm)
        self.search_backend: SearchBackend = self._exact
        self.set_backend(backend, **backend_params)

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def paths(self) -> list[str]:
        if isinstance(self._paths, _PathColumn):
            self._paths = self._paths.to_list()
        return self._paths

    def path_at(self, row: int) -> str:
        return self._paths[row]

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @property
    def backend(self) -> str:
        return self.search_backend.name

    @property
    def faiss_params(self) -> dict:
        """The backend's parameters (empty for exact search)."""
        return dict(self.search_backend.params)

    def __repr__(self) -> str:
        return (f"VideoIndex({len(self)} videos, dim={self.dim if len(self) else '?'}, backend={self.backend!r}, "
                f"failed={len(self.failed)}, model_path={self.model_path!r})")

    # -- building --------------------------------------------------------------------------------------

    @classmethod
    def build(cls, model, processor, paths: Sequence[str | os.PathLike], **kwargs) -> "VideoIndex | None":
        """Embed `paths` and return the index: see `modeling_pig.indexing.build_index` for the arguments
        (batching, the resumable store of `out_dir`, backends, several processes)."""
        from .indexing import build_index

        return build_index(cls, model, processor, paths, **kwargs)

    @classmethod
    def from_dataset(cls, dataset, path_column: str = "path", embedding_column: str = "embedding",
                     **kwargs) -> "VideoIndex":
        """An index over a `datasets.Dataset` with one path and one embedding (a list of D floats) per row, e.g.
        the output of `to_dataset` or of a Spark/Ray job; `kwargs` go to `VideoIndex(...)` (backend, model_path)."""
        for column in (path_column, embedding_column):
            if column not in dataset.column_names:
                raise KeyError(f"the dataset has no {column!r} column (columns: {dataset.column_names})")
        table = dataset.with_format("arrow")[:]  # honours a select/shuffle of the dataset
        column = table[embedding_column].combine_chunks()
        if hasattr(column.type, "list_size"):  # fixed-size lists: one flat buffer, no Python objects
            vectors = column.flatten().to_numpy(zero_copy_only=False).reshape(len(dataset), column.type.list_size)
        else:
            vectors = np.asarray(dataset.with_format("numpy")[embedding_column], dtype=np.float32)
        if vectors.ndim != 2:
            raise ValueError(f"column {embedding_column!r} must hold equal-length vectors, got shape {vectors.shape}")
        return cls(torch.from_numpy(vectors.astype(np.float16)), table[path_column].to_pylist(), **kwargs)

    def to_dataset(self):
        """A `datasets.Dataset` with columns `path` (string) and `embedding` (D float32 values) in row order."""
        import datasets
        import pyarrow as pa

        flat = pa.array(self.embeddings.float().reshape(-1).numpy())
        table = pa.table({"path": pa.array(self.paths, pa.string()),
                          "embedding": pa.FixedSizeListArray.from_arrays(flat, self.dim)})
        return datasets.Dataset(table)

    # -- backends --------------------------------------------------------------------------------------

    def set_backend(self, backend: str = "auto", **params) -> None:
        """Choose how to search: "auto" or a registered backend name (see `SEARCH_BACKENDS`), built over the
        stored vectors with `params`.

        "auto": exact when `len(self) <= faiss_threshold`; above, IVF-PQ with exact rescoring of its candidates
        (the fastest to a high recall at 1M videos, with 72 bytes per video in memory: docs/performance.md), or
        IVF with fp16 codes when there are too few vectors to train 8-bit PQ codebooks (`AUTO_PQ_MIN_VECTORS`).
        Follow it with `tune(target_recall)` to set the search effort."""
        if backend not in backend_names():
            raise ValueError(f"backend must be one of {backend_names()}, got {backend!r}")
        if backend == "auto":
            backend = "exact" if len(self) <= self.faiss_threshold else "ivfpq" if len(self) >= AUTO_PQ_MIN_VECTORS \
                else "ivf"
            if backend == "exact":
                params = {}
        SEARCH_BACKENDS[backend].check_params(params)
        self.search_backend = self._exact if backend == "exact" else SEARCH_BACKENDS[backend](self.embeddings, **params)

    def set_search_params(self, nprobe: int | None = None, ef_search: int | None = None) -> None:
        """Change the backend's search effort without rebuilding (IVF `nprobe`, HNSW `ef_search`)."""
        given = {name: value for name, value in (("nprobe", nprobe), ("ef_search", ef_search)) if value is not None}
        for name, value in given.items():
            if name != self.search_backend.effort_param:
                raise ValueError(f"the {self.backend!r} backend has no {name} to set")
            self.search_backend.set_effort(value)

    # -- searching -------------------------------------------------------------------------------------

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
        backend = self._exact if exact else self.search_backend
        return backend.search(queries.numpy(), k)

    def embed_queries(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """Text embeddings `[len(texts), D]` from the model that built the index (loaded from `model_path` at
        the first call; its weights are checked against the index's without re-hashing them when the model
        files are the ones recorded at build time)."""
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
        return [[(self.path_at(int(i)), float(s)) for s, i in zip(row_s, row_i) if i >= 0]
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
        if self.search_backend is self._exact:
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
        """Set the backend's search effort (IVF `nprobe`, HNSW `ef_search`) to about the smallest that reaches
        recall@k `target_recall` against exact search on the queries of `measure_recall`: doubled from its current
        value until the target is met (or the effort is maximal: IVF then scans every list, which is exhaustive),
        then bisected back down to within 1/8 of the smallest such effort. Returns the recall reached at the
        effort kept; exact search returns 1.0.
        """
        if not 0.0 < target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
        backend = self.search_backend
        if backend is self._exact or backend.effort is None:
            return 1.0 if backend is self._exact else self.measure_recall(num_queries, k, queries, seed)
        queries = self._sample_queries(num_queries, seed) if queries is None else torch.as_tensor(queries).float()
        _, exact = self.search_embeddings(queries, k, exact=True)

        def recall_at(effort: int) -> float:
            backend.set_effort(effort)
            return self._recall_against(queries, exact)

        limit = backend.max_effort(k)
        failing, effort = None, backend.effort  # the largest effort known to miss the target, the current one
        recall = recall_at(effort)
        while recall < target_recall and effort < limit:
            failing, effort = effort, min(2 * effort, limit)
            recall = recall_at(effort)
        if recall >= target_recall and failing is not None:  # bisect (failing, effort]
            while effort - failing > max(1, failing // 8):
                middle = (failing + effort) // 2
                middle_recall = recall_at(middle)
                if middle_recall >= target_recall:
                    effort, recall = middle, middle_recall
                else:
                    failing = middle
            backend.set_effort(effort)
        logger.info("%s backend tuned to %s: recall@%d = %.3f (target %.3f)", self.backend, backend.params, k,
                    recall, target_recall)
        return recall

    def _text_model(self):
        if self._model is None or self._processor is None:
            self.load_text_model()
        return self._model, self._processor

    def load_text_model(self, device: str | torch.device = "cpu") -> None:
        """Load the model recorded in the index (`model_path`, `model_loader`) on `device` to embed text queries.
        Its weights are checked against the index's fingerprint, without re-hashing them when the model files
        are the ones recorded at build time (`model_source`)."""
        if not self.model_path:
            raise ValueError("this index records no model_path: pass model= and processor= to VideoIndex.load "
                             "(or search with query embeddings)")
        from .loader import load_model_and_processor, model_source_signature

        model, processor = load_model_and_processor(self.model_path, device, loader=self.model_loader)
        same_files = self.model_source is not None and model_source_signature(self.model_path) == self.model_source
        self.attach_model(model, processor, check=not same_files)

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

    def metadata(self) -> dict:
        """What `index.json` records besides file names (also what `pig info --json` reports)."""
        return {
            "format": INDEX_FORMAT_VERSION,
            "status": "complete",
            "num_videos": len(self),
            "dim": self.dim,
            "num_failed": len(self.failed),
            "num_duplicates": len(self.duplicates),
            "model_path": self.model_path,
            "model_loader": self.model_loader,
            "model_fingerprint": self.model_fingerprint,
            "model_source": self.model_source,
            "processor_settings": self.processor_settings,
            "backend": self.backend,
            "backend_params": self.faiss_params,
            "faiss_threshold": self.faiss_threshold,
            "max_vector_norm": self._exact.max_norm,  # saves exact search a pass over every vector after loading
        }

    def save(self, out_dir: str | os.PathLike) -> None:
        """Write a new generation of the index files, switch `index.json` to it, delete the previous one."""
        import datasets

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        previous = json.loads((out / INDEX_METADATA_FILE).read_text()) if (out / INDEX_METADATA_FILE).is_file() else {}
        generation = f"g{int(previous['generation'][1:]) + 1 if 'generation' in previous else 1:06d}"
        files = {"vectors": f"vectors-{generation}.npy", "videos": f"videos-{generation}"}
        with open(out / files["vectors"], "wb") as handle:
            np.save(handle, self.embeddings.numpy())
            handle.flush()
            os.fsync(handle.fileno())
        failed, duplicates = list(self.failed.items()), list(self.duplicates.items())
        table = datasets.Dataset.from_dict({
            "path": self.paths + [p for p, _ in failed] + [p for p, _ in duplicates],
            "status": ["indexed"] * len(self) + ["failed"] * len(failed) + ["duplicate"] * len(duplicates),
            "detail": [""] * len(self) + [r for _, r in failed] + [f"same file as {p}" for _, p in duplicates],
        })
        with quiet_datasets():
            table.save_to_disk(str(out / files["videos"]))
        if self.search_backend.file_suffix:
            files["search"] = f"search-{generation}{self.search_backend.file_suffix}"
            self.search_backend.save(out / files["search"])
        atomic_write_text(out / INDEX_METADATA_FILE,
                          json.dumps({**self.metadata(), "generation": generation, "files": files}, indent=1))
        for path in out.iterdir():  # the previous generation's files; a reader that has them open keeps them
            if (path.name.startswith(_GENERATION_PREFIXES) and generation not in path.name) or path.name in _FORMAT_1:
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    @classmethod
    def load(cls, index_dir: str | os.PathLike, model=None, processor=None) -> "VideoIndex":
        """Open an index written by `save`: vectors memory-mapped, paths read on demand from the Arrow table.
        `model`/`processor` (optional) embed text queries; by default they are loaded from the recorded
        `model_path` at the first text search."""
        import datasets

        folder = Path(index_dir)
        metadata = read_metadata(folder)
        files = metadata["files"]
        vectors = np.load(folder / files["vectors"], mmap_mode="c")  # copy-on-write map: nothing read yet
        if vectors.shape != (metadata["num_videos"], metadata["dim"]) or vectors.dtype != np.float16:
            raise ValueError(f"{folder / files['vectors']}: {vectors.dtype} {vectors.shape} does not match "
                             f"{INDEX_METADATA_FILE} (float16, {metadata['num_videos']}, {metadata['dim']})")
        table = datasets.load_from_disk(str(folder / files["videos"])).data  # memory-mapped Arrow
        n = metadata["num_videos"]
        rest = table.slice(n).to_pydict()
        failed = {p: d for p, s, d in zip(rest["path"], rest["status"], rest["detail"]) if s == "failed"}
        duplicates = {p: d.removeprefix("same file as ") for p, s, d in zip(rest["path"], rest["status"],
                                                                             rest["detail"]) if s == "duplicate"}
        if metadata["backend"] not in SEARCH_BACKENDS:
            raise ValueError(f"{folder / INDEX_METADATA_FILE}: unknown backend {metadata['backend']!r} "
                             f"(known: {list(SEARCH_BACKENDS)})")
        index = cls(vectors, _PathColumn(table.column("path").slice(0, n)), failed=failed, duplicates=duplicates,
                    model_path=metadata["model_path"], model_loader=metadata["model_loader"],
                    model_fingerprint=metadata["model_fingerprint"], model_source=metadata["model_source"],
                    backend="exact", faiss_threshold=metadata["faiss_threshold"],
                    max_vector_norm=metadata["max_vector_norm"],
                    processor_settings=metadata["processor_settings"], check=False)
        if metadata["backend"] != "exact":
            search_file = folder / files["search"] if "search" in files else None
            index.search_backend = SEARCH_BACKENDS[metadata["backend"]].load(search_file, index.embeddings,
                                                                             metadata["backend_params"])
        if model is not None or processor is not None:
            if model is None or processor is None:
                raise ValueError("pass both model and processor, or neither")
            index.attach_model(model, processor)
        return index


@contextlib.contextmanager
def quiet_datasets():
    """No `datasets` progress bar for the index's small tables (restored afterwards)."""
    from datasets.utils import logging as datasets_logging

    was_enabled = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            datasets_logging.enable_progress_bar()


class _PathColumn:
    """The `path` column of a loaded index, read row by row from the memory-mapped Arrow table."""

    def __init__(self, column):
        self.column = column

    def __len__(self) -> int:
        return len(self.column)

    def __getitem__(self, row: int) -> str:
        return self.column[row].as_py()

    def to_list(self) -> list[str]:
        return self.column.to_pylist()


def read_metadata(folder: str | os.PathLike) -> dict:
    """The `index.json` of an index folder (FileNotFoundError / ValueError naming the folder otherwise)."""
    path = Path(folder) / INDEX_METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: no {INDEX_METADATA_FILE}; not a VideoIndex folder (an interrupted "
                                "`pig index` is resumed by running it again; `pig info` shows its progress)")
    metadata = json.loads(path.read_text())
    if metadata.get("format") != INDEX_FORMAT_VERSION:
        raise ValueError(f"{path}: index format {metadata.get('format')!r}, this version reads "
                         f"{INDEX_FORMAT_VERSION}; build the index again with `pig index`")
    return metadata
