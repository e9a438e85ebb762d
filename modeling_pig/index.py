"""`VideoIndex`: a searchable collection of video embeddings, over small search-backend objects.

This is the Two-Tower half of PIG in practice: every video becomes one L2-normalised vector
(`model.get_video_features(...).pooler_output`, computed without any text), stored in fp16; a text query
becomes one vector (`get_text_features`) and is scored against the store with a dot product.

How the top-k vectors are found is a backend's business (`modeling_pig.search_backends`: exact, IVF, HNSW,
each one class that builds, searches, sets its search effort, saves and loads); `VideoIndex` never asks which
one it holds. Vectors come from `modeling_pig.embedding` (`encode_videos` into an `EmbeddingStore`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .embedding import (
    FLUSH_EVERY,
    EmbeddingStore,
    atomic_write_text,
    encode_texts,
    encode_videos,
    model_fingerprint,
    processor_signature,
    video_signature,
)
from .search_backends import (
    SEARCH_BACKENDS,
    ExactBackend,
    SearchBackend,
    backend_names,
    exact_search,
)

logger = logging.getLogger(__name__)

__all__ = ["VideoIndex", "DEFAULT_FAISS_THRESHOLD", "exact_search"]

INDEX_FORMAT_VERSION = 1
INDEX_METADATA_FILE = "index.json"
INDEX_EMBEDDINGS_FILE = "embeddings.safetensors"
# The embedding store of an index folder: every vector ever computed for it, keyed by file signature.
INDEX_STORE_DIR = "store"
# Above this many stored vectors `backend="auto"` builds a FAISS index (see docs/performance.md, search).
DEFAULT_FAISS_THRESHOLD = 100_000


# ------------------------------------------------------------------------------------------------------
# The index


class VideoIndex:
    """A searchable collection of video embeddings (one fp16, L2-normalised vector per video).

    Build it with `VideoIndex.build(model, processor, paths)`, query it with `search(["a man plays a guitar"])`,
    keep it with `save(dir)` / `VideoIndex.load(dir)`. `backend="auto"` scores every vector exactly up to
    `faiss_threshold` vectors and builds a FAISS IVF index above; approximate backends report their recall
    against exact search with `measure_recall`, and `tune` raises their search effort to a target recall.

    Attributes:
        paths: the video of each stored vector.
        embeddings: `[N, D]` float16 tensor.
        failed: path -> reason for the videos that could not be decoded at build time.
        model_path: where the model came from (a folder or Hub id), used by `search` to embed text.
        model_fingerprint: hash of the weights that produced the embeddings.
        backend: the name of the backend in use; `search_backend` is the backend object.
    """

    def __init__(self, embeddings: torch.Tensor, paths: Sequence[str], failed: dict[str, str] | None = None,
                 model_path: str | None = None, model_fingerprint: str | None = None,
                 backend: str = "auto", faiss_threshold: int = DEFAULT_FAISS_THRESHOLD, model=None,
                 processor=None, processor_settings: str | None = None, **backend_params):
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
        self.processor_settings = processor_settings
        self._model, self._processor = model, processor
        self._exact = ExactBackend(self.embeddings)
        self.search_backend: SearchBackend = self._exact
        self.set_backend(backend, **backend_params)

    def __len__(self) -> int:
        return len(self.paths)

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
    def build(cls, model, processor, paths: Sequence[str | os.PathLike], batch_size: int = 16,
              num_workers: int = 0, out_dir: str | os.PathLike | None = None, model_path: str | None = None,
              backend: str = "auto", faiss_threshold: int = DEFAULT_FAISS_THRESHOLD,
              flush_every: int = FLUSH_EVERY, show_progress: bool = True, target_recall: float | None = None,
              store: EmbeddingStore | None = None, **backend_params) -> "VideoIndex":
        """Embed `paths` and return the index.

        Args:
            model, processor: a PIGModel and its PIGProcessor (or any object with the same methods).
            paths: video files; unreadable ones are skipped, logged and listed in `index.failed`.
            batch_size, num_workers: videos per forward pass; DataLoader decoding workers.
            out_dir: when given, the index is saved there, and its embedding store `out_dir/store` keeps every
                finished vector (written every `flush_every` videos, every minute, and on an interruption): a
                rerun into the same folder embeds only the videos the store lacks (new, changed, or not reached
                before the interruption). Once the index is saved, the store keeps only this build's videos.
            model_path: recorded in the index so that `search` can load the text tower later; defaults to
                `model.name_or_path` when the model has one.
            backend: "auto" (exact up to `faiss_threshold` vectors, IVF above) or a registered backend name;
                `backend_params` (e.g. nlist, nprobe, hnsw_m, ef_search, ef_construction) configure it.
            target_recall: with an approximate backend, raise its search effort until recall@10 against exact
                search reaches this (see `tune`); None keeps the parameters as given.
            store: another embedding store to read and fill (e.g. shared between index folders); it is then
                left as it is after the build.
        """
        paths = [os.fspath(p) for p in paths]
        if not paths:
            raise ValueError("no video paths to index")
        if len(set(paths)) != len(paths):
            raise ValueError("the same video path appears more than once in paths")
        fingerprint = model_fingerprint(model)
        settings = processor_signature(processor)
        own_store = store is None and out_dir is not None
        if own_store:
            store = EmbeddingStore(Path(out_dir) / INDEX_STORE_DIR, dtype=torch.float16)
        section = store.section(fingerprint, settings) if store is not None else None
        encoded = encode_videos(model, processor, paths, batch_size=batch_size, num_workers=num_workers,
                                store=section, flush_every=flush_every, show_progress=show_progress)
        if not encoded.positions:
            reasons = "; ".join(list(encoded.failed.values())[:3])
            raise ValueError(f"none of the {len(paths)} videos could be decoded ({reasons})")
        if model_path is None:
            model_path = getattr(model, "name_or_path", None) or None
        if model_path is not None and os.path.isdir(model_path):
            model_path = str(Path(model_path).resolve())
        index = cls(encoded.embeddings, [paths[p] for p in encoded.positions],
                    failed={paths[p]: reason for p, reason in encoded.failed.items()}, model_path=model_path,
                    model_fingerprint=fingerprint, backend=backend, faiss_threshold=faiss_threshold, model=model,
                    processor=processor, processor_settings=settings, **backend_params)
        if target_recall is not None:
            index.tune(target_recall)
        if out_dir is not None:
            index.save(out_dir)
        if own_store:  # keep the vectors of this model and these files only
            section.compact(keep=[video_signature(path) for path in paths])
            store.remove_other_sections(keep=section)
        return index

    # -- backends --------------------------------------------------------------------------------------

    def set_backend(self, backend: str = "auto", **params) -> None:
        """Choose how to search: "auto" (exact when `len(self) <= faiss_threshold`, else "ivf") or a registered
        backend name (see `SEARCH_BACKENDS`), built over the stored vectors with `params`."""
        if backend not in backend_names():
            raise ValueError(f"backend must be one of {backend_names()}, got {backend!r}")
        if backend == "auto":
            SEARCH_BACKENDS["ivf"].check_params(params)  # IVF parameters, used when the index grows past the threshold
            backend = "exact" if len(self) <= self.faiss_threshold else "ivf"
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
        """Double the backend's search effort (IVF `nprobe`, HNSW `ef_search`) until recall@k against exact
        search reaches `target_recall` on the queries of `measure_recall`, or the effort is maximal (IVF: every
        list scanned, which is exhaustive). Returns the recall reached; exact search returns 1.0.
        """
        if not 0.0 < target_recall <= 1.0:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall}")
        backend = self.search_backend
        if backend is self._exact:
            return 1.0
        queries = self._sample_queries(num_queries, seed) if queries is None else torch.as_tensor(queries).float()
        _, exact = self.search_embeddings(queries, k, exact=True)
        while True:
            recall = self._recall_against(queries, exact)
            effort, limit = backend.effort, backend.max_effort(k)
            if effort is None or recall >= target_recall or effort >= limit:
                break
            backend.set_effort(min(2 * effort, limit))
        logger.info("%s backend tuned to %s: recall@%d = %.3f (target %.3f)", self.backend, backend.params, k,
                    recall, target_recall)
        return recall

    def _text_model(self):
        if self._model is None or self._processor is None:
            if not self.model_path:
                raise ValueError("this index records no model_path: pass model= and processor= to VideoIndex.load "
                                 "(or search with query embeddings)")
            from .loader import load_model_and_processor

            model, processor = load_model_and_processor(self.model_path)
            self.attach_model(self._model or model, self._processor or processor)
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
        """Write `embeddings.safetensors`, `index.json` (paths, failures, model, backend) and the backend's files."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / (INDEX_EMBEDDINGS_FILE + ".tmp")
        save_file({"embeddings": self.embeddings}, str(tmp), metadata={"format": str(INDEX_FORMAT_VERSION)})
        os.replace(tmp, out / INDEX_EMBEDDINGS_FILE)
        for backend in SEARCH_BACKENDS.values():  # files of a backend saved here before
            backend.remove_files(out)
        self.search_backend.save(out)
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
        }
        atomic_write_text(out / INDEX_METADATA_FILE, json.dumps(metadata, indent=1))

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
        if metadata["backend"] not in SEARCH_BACKENDS:
            raise ValueError(f"{meta_path}: unknown backend {metadata['backend']!r} (known: {list(SEARCH_BACKENDS)})")
        index = cls(embeddings, metadata["paths"], failed=metadata["failed"], model_path=metadata["model_path"],
                    model_fingerprint=metadata["model_fingerprint"], backend="exact",
                    faiss_threshold=metadata["faiss_threshold"], processor_settings=metadata.get("processor_settings"))
        if metadata["backend"] != "exact":
            index.search_backend = SEARCH_BACKENDS[metadata["backend"]].load(folder, index.embeddings,
                                                                             metadata["faiss_params"])
        if model is not None or processor is not None:
            if model is None or processor is None:
                raise ValueError("pass both model and processor, or neither")
            index.attach_model(model, processor)
        return index
