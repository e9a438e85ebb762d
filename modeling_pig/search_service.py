"""Search a video index by text, image or video, with the model and the index loaded once.

`SearchService` is what `pig search` and `pig serve` (and the Space's `app.py`) call; it is the only code of
theirs that touches the index and the model, through `VideoIndex`'s public methods (`search_embeddings`,
`embed_queries`, `paths`) and the model's `get_video_features`.

* Text queries: embedded by the index's saved text encoder when there is one (`query_encoder`: no model needed)
  or by the model; repeated texts come from an LRU cache.
* Example queries: an image (a 1-frame video, as in stage-1 training) or a video file, through the video tower;
  the result is the stored videos closest to it.
* Results: `{"path", "score", "url"}` best first, `url` being the server's preview route of the video.

`load_search_service` loads an index folder and its model with one clear error (`SearchSetupError`) for each
mistake: a missing index folder, a moved model folder, a model that did not build the index (naming both).
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from pathlib import Path
from urllib.parse import quote

import torch
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["SearchService", "QueryError", "SearchSetupError", "load_search_service"]

MAX_QUERY_CHARS = 1000  # a CLIP text tower reads at most 77 tokens: a longer text is a mistake or an attack
MAX_K = 100
DEFAULT_TEXT_CACHE = 1024


class QueryError(ValueError):
    """A bad query (the client's mistake): answered with `status` and this message, never a traceback."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class SearchSetupError(ValueError):
    """The index or the model cannot be used (missing, moved, mismatched): one line for the user."""


def check_text_query(text) -> str:
    if not isinstance(text, str) or not text.strip():
        raise QueryError("q must be a non-empty text")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"q is {len(text)} characters long; at most {MAX_QUERY_CHARS} are accepted", 413)
    return text.strip()


def check_k(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise QueryError(f"k must be an integer from 1 to {MAX_K}, got {k!r}")
    return k


class SearchService:
    """A loaded VideoIndex answering text and example queries.

    Args:
        index: a `VideoIndex`; text queries use its attached model unless `text_encoder` is given.
        model, processor: the index's model and processor, needed for image and video queries (and text queries
            without `text_encoder`); None for a text-only service.
        text_encoder: a `query_encoder.TextEncoder` for text queries (no model needed).
        video_root: report and serve the videos from this folder instead of where they were indexed (paths are
            taken relative to their common folder): for a moved library or a Space.
        text_cache: how many text query embeddings to keep (0: no cache).
    """

    def __init__(self, index, model=None, processor=None, text_encoder=None,
                 video_root: str | os.PathLike | None = None, text_cache: int = DEFAULT_TEXT_CACHE):
        if len(index) == 0:
            raise SearchSetupError("the index holds no videos")
        self.index, self.model, self.processor, self.text_encoder = index, model, processor, text_encoder
        self.model_lock = threading.Lock()  # one forward pass at a time: it already uses every intra-op thread
        self.text_cache_size = int(text_cache)
        self._cache: collections.OrderedDict = collections.OrderedDict()  # text -> embedding [D]
        self._cache_lock = threading.Lock()
        self.cache_hits = self.cache_misses = 0
        self.video_root = video_root
        self._media_lock = threading.Lock()
        self._media = None  # see _media_table: built at the first preview or remapped path (not for a CLI search)
        index.search_embeddings(torch.zeros(1, index.dim), k=1)  # builds lazy search caches before any thread

    def _media_table(self) -> tuple[list[str], list[str], dict]:
        """(preview key of each video, the path clients see of each video, key -> (file, real path at start)).

        The keys are the index's paths relative to their common folder; with `video_root` the files are looked
        up under it. The real paths are recorded once, so that a file later replaced by a symlink (or a folder
        swapped for one) is refused. Built once, under a lock, on first use.
        """
        with self._media_lock:
            if self._media is None:
                paths = [os.path.abspath(p) for p in self.index.paths]
                root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
                keys = [os.path.relpath(p, root) for p in paths]
                base = os.path.abspath(self.video_root) if self.video_root is not None else root
                shown = [os.path.join(base, key) for key in keys]
                self._media = (keys, shown, {key: (path, os.path.realpath(path)) for key, path in zip(keys, shown)})
            return self._media

    # -- embedding queries -----------------------------------------------------------------------------

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Embeddings `[len(texts), D]` of text queries (no cache: for batches)."""
        if self.text_encoder is not None:
            return self.text_encoder(texts)
        with self.model_lock:
            return self.index.embed_queries(texts)

    def embed_text(self, text: str) -> torch.Tensor:
        """The embedding `[D]` of one text query, from the LRU cache when it was asked before."""
        text = check_text_query(text)
        with self._cache_lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                self.cache_hits += 1
                return cached
            self.cache_misses += 1
        vector = self.embed_texts([text])[0]
        if self.text_cache_size > 0:
            with self._cache_lock:
                self._cache[text] = vector
                while len(self._cache) > self.text_cache_size:
                    self._cache.popitem(last=False)
        return vector

    def embed_file(self, path: str | os.PathLike, name: str | None = None) -> tuple[torch.Tensor, str]:
        """The embedding `[D]` of an image or a video file and its kind, "image" or "video". An image is a 1-frame
        video (as in stage-1 training); a video is sampled as the index's videos were. A file that is neither
        raises `QueryError` naming `name` (default: the path)."""
        from PIL import Image, UnidentifiedImageError

        from .video_io import VideoDecodeError

        if self.model is None:
            raise SearchSetupError("this search service has no model: image and video queries need one")
        name = name or os.fspath(path)
        try:
            with Image.open(path) as image:
                image.load()
                pixel_values = self.processor.load_image(image.convert("RGB"))[None]  # [1, 1, 3, S, S]
            kind = "image"
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            try:
                pixel_values = self.processor.load_video(os.fspath(path), mode="test")[None]  # [1, T, 3, S, S]
            except VideoDecodeError as err:
                logger.info("%s is not readable: %s", name, err)  # the detail may name a temporary file
                raise QueryError(f"{name}: neither a readable image nor a readable video") from None
            kind = "video"
        param = next(self.model.parameters())
        with self.model_lock, torch.no_grad():
            features = self.model.get_video_features(
                pixel_values=pixel_values.to(device=param.device, dtype=param.dtype)).pooler_output  # [1, D]
        return F.normalize(features.float(), dim=-1)[0].cpu(), kind

    # -- searching -------------------------------------------------------------------------------------

    def search_vectors(self, vectors: torch.Tensor, k: int, urls: bool = True) -> list[list[dict]]:
        """For each query embedding of `[Q, D]`, `[{"path", "score", "url"}]` of the `k` best videos (without
        `url`, and with the paths as indexed, when `urls` is False: then no path but the results' is read)."""
        scores, indices = self.index.search_embeddings(vectors, k=k)
        if not urls:
            return [[{"path": self.index.path_at(int(i)), "score": round(float(s), 6)}
                     for s, i in zip(row_scores, row_indices) if i >= 0]
                    for row_scores, row_indices in zip(scores, indices)]
        keys, shown, _ = self._media_table()
        return [[{"path": shown[i], "score": round(float(s), 6), "url": "/media/" + quote(keys[i].replace(os.sep, "/"))}
                 for s, i in zip(row_scores, row_indices) if i >= 0]
                for row_scores, row_indices in zip(scores, indices)]

    def search_text(self, text: str, k: int) -> dict:
        """`{"query", "query_type": "text", "results", "took_ms"}` for one text query."""
        started = time.perf_counter()
        check_k(k)
        results = self.search_vectors(self.embed_text(text)[None], k)[0]
        return {"query": text, "query_type": "text", "results": results,
                "took_ms": round(1000 * (time.perf_counter() - started), 3)}

    def search_file(self, path: str | os.PathLike, k: int, name: str | None = None) -> dict:
        """Same as `search_text` for an image or video file (`query` is `name`, `query_type` its kind)."""
        started = time.perf_counter()
        check_k(k)
        vector, kind = self.embed_file(path, name)
        return {"query": name or os.fspath(path), "query_type": kind, "results": self.search_vectors(vector[None], k)[0],
                "took_ms": round(1000 * (time.perf_counter() - started), 3)}

    # -- previews --------------------------------------------------------------------------------------

    def media_file(self, key: str) -> str | None:
        """The file behind `/media/<key>` (key already URL-decoded), or None when it is not an indexed video or
        no longer the file that was indexed (missing, not a regular file, or its real path changed)."""
        entry = self._media_table()[2].get(key.replace("/", os.sep))
        if entry is None:
            return None
        path, real = entry
        if os.path.realpath(path) != real or not os.path.isfile(real):
            return None
        return real

    def health(self) -> dict:
        return {"status": "ok", "videos": len(self.index), "backend": self.index.backend,
                "model": self.index.model_path, "query_by_example": self.model is not None,
                "text_cache": {"size": len(self._cache), "capacity": self.text_cache_size,
                               "hits": self.cache_hits, "misses": self.cache_misses}}


# ------------------------------------------------------------------------------------------------------
# Loading


def _looks_like_a_path(model_path: str) -> bool:
    """A folder, not a Hub id ("org/name")."""
    return os.path.isabs(model_path) or model_path.startswith((".", "~")) or model_path.count("/") > 1


def load_search_service(index_dir: str | os.PathLike, model_path: str | None = None, device: str = "cpu",
                        video_root: str | os.PathLike | None = None, text_cache: int = DEFAULT_TEXT_CACHE,
                        need_model: bool = True) -> SearchService:
    """Load an index folder and what its queries need.

    Args:
        index_dir: a folder written by `pig index` / `VideoIndex.save`.
        model_path: the model to use instead of the one the index records (it must hold the same weights).
        need_model: False for text queries only: then the index's saved text encoder is used when it has one
            (no model is loaded); True (image/video queries, the server) always loads the model.
        device: where the model runs (in the dtype the index recorded).
        video_root, text_cache: see `SearchService`.

    Raises:
        SearchSetupError: one line naming what is wrong (missing index, moved or unloadable model folder, weights
            that did not build the index).
    """
    from .embedding import model_fingerprint
    from .index import VideoIndex
    from .loader import load_model_and_processor, model_source_signature
    from .query_encoder import load_text_encoder, save_text_encoder

    folder = Path(index_dir)
    if not folder.is_dir():
        raise SearchSetupError(f"{index_dir}: no such index folder")
    try:
        index = VideoIndex.load(folder)
    except (OSError, ValueError) as err:
        raise SearchSetupError(str(err).splitlines()[0]) from err
    if not need_model and model_path is None:
        encoder = load_text_encoder(folder, index.model_fingerprint)
        if encoder is not None:
            return SearchService(index, text_encoder=encoder, video_root=video_root, text_cache=text_cache)
    recorded = index.model_path
    model_path = model_path or recorded
    if not model_path:
        raise SearchSetupError(f"{index_dir}: the index records no model; pass --model")
    where = "--model" if model_path != recorded else f"the model recorded in {folder / 'index.json'}"
    if _looks_like_a_path(model_path) and not os.path.isdir(os.path.expanduser(model_path)):
        hint = " (moved or deleted? pass --model with its new place)" if model_path == recorded else ""
        raise SearchSetupError(f"{model_path}: no such model folder ({where}){hint}")
    model_path = os.path.expanduser(model_path)
    # the recorded model loads as it was recorded (PIG, or zero-shot meanP from CLIP); another one as it is
    loader = index.model_loader if model_path == recorded else None
    try:
        model, processor = load_model_and_processor(model_path, device, index.model_loader.get("dtype"), loader)
    except (OSError, ValueError) as err:  # transformers: not a model folder, unknown Hub id, no network
        raise SearchSetupError(f"{model_path} ({where}): cannot load a model from it "
                               f"({str(err).strip().splitlines()[0]})") from err
    # the weights are hashed only when the model's files are not the ones recorded at build time
    same_files = index.model_source is not None and model_source_signature(model_path) == index.model_source
    if index.model_fingerprint is not None and not same_files:
        fingerprint = model_fingerprint(model)
        if fingerprint != index.model_fingerprint:
            raise SearchSetupError(
                f"the model {model_path} (weights {fingerprint[:12]}) did not build the index {index_dir}, which "
                f"was built with {recorded} (weights {index.model_fingerprint[:12]}): its embeddings would not "
                "match. Pass the index's model, or rebuild the index with this one.")
    index.attach_model(model, processor, check=False)  # checked above
    if index.model_fingerprint is not None and load_text_encoder(folder, index.model_fingerprint) is None:
        save_text_encoder(model, processor, folder, index.model_fingerprint)  # next text searches skip the model
    return SearchService(index, model, processor, video_root=video_root, text_cache=text_cache)
