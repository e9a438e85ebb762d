"""`pig serve`: search a video index over HTTP, with a JSON API and a web page (FastAPI + uvicorn).

    pig serve INDEX [--model M] [--host 127.0.0.1] [--port 7860]

Routes (see docs/serve.md):

* `GET /api/search?q=TEXT&k=K` -> `{"query", "query_type": "text", "results": [{"path", "score", "url"}],
  "took_ms"}`, best first; `url` is the preview route of the video.
* `POST /api/search` with a multipart `file` (an image or a video) and optional `k`: query by example, same
  JSON (`query` is the uploaded file's name, `query_type` "image" or "video").
* `GET /healthz`: 200 once the model and the index are loaded (they are loaded before the server listens).
* `GET /` (`/?q=...`): the web page, with the results of `q` rendered by the server, so results can be linked.
* `GET /media/PATH`: the preview of an indexed video, with HTTP range requests (the browser seeks). Only the
  videos of the index are served: PATH is looked up, as a string, among the index's paths relative to their
  common folder, so `..`, absolute paths, encoded variants and files added later all get 404; a file that was
  replaced by a symlink after loading (its real path changed) gets 404 too.

`SearchService` holds the model and the index (loaded once) and is the only code that touches them: the routes
never do. Text embeddings of repeated queries come from an LRU cache. Model calls are serialised by a lock (one
forward pass at a time uses all intra-op threads); the vector search itself runs concurrently.
"""

import collections
import contextlib
import html
import logging
import mimetypes
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Sequence
from urllib.parse import quote, urlencode

import torch
import torch.nn.functional as F

from .retrieval import VIDEO_EXTENSIONS

logger = logging.getLogger("modeling_pig.server")

__all__ = ["SearchService", "QueryError", "create_app", "serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
MAX_QUERY_CHARS = 1000  # a CLIP text tower reads at most 77 tokens: a longer text is a mistake or an attack
MAX_K = 100
DEFAULT_K = 12
DEFAULT_MAX_UPLOAD_BYTES = 64 * 2**20
DEFAULT_TEXT_CACHE = 1024
WEB_DIR = Path(__file__).resolve().parent / "web"
# An upload's file name suffix is kept (it helps PyAV guess the container) only when it names a video or an
# image format; others are dropped so that the content decides (with `.txt`, FFmpeg renders text as video).
_KEPT_SUFFIXES = frozenset(VIDEO_EXTENSIONS) | {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


class QueryError(ValueError):
    """A bad query (the client's mistake): answered with `status` and this message, never a traceback."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------------------------
# The model and the index, behind one small interface


class SearchService:
    """A loaded VideoIndex and the model that built it, answering text and example queries.

    Args:
        index: a `VideoIndex` (its `paths`, `search_embeddings(queries, k)` and `embed_queries(texts)` are used).
        model, processor: the index's model and processor (for image and video queries).
        video_root: serve and report the videos from this folder instead of where they were indexed (the index's
            paths are taken relative to their common folder): for a moved library or a Space.
        text_cache: how many text query embeddings to keep (0: no cache).
    """

    def __init__(self, index, model, processor, video_root: str | os.PathLike | None = None,
                 text_cache: int = DEFAULT_TEXT_CACHE):
        if len(index) == 0:
            raise ValueError("the index holds no videos")
        self.index, self.model, self.processor = index, model, processor
        self.model_lock = threading.Lock()
        self.text_cache_size = int(text_cache)
        self._cache: collections.OrderedDict[str, torch.Tensor] = collections.OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_hits = self.cache_misses = 0
        paths = [os.path.abspath(p) for p in index.paths]
        root = os.path.commonpath(paths) if len(paths) > 1 else os.path.dirname(paths[0])
        if len(paths) > 1 and root in paths:  # commonpath of one distinct file repeated is the file itself
            root = os.path.dirname(root)
        self.relative_paths = [os.path.relpath(p, root) for p in paths]  # URL keys, in index order
        base = os.path.abspath(video_root) if video_root is not None else root
        self.paths = [os.path.join(base, rel) for rel in self.relative_paths]  # what clients see
        # preview route: key -> (file, its real path now); a later change of the real path is refused
        self._media = {rel: (path, os.path.realpath(path)) for rel, path in zip(self.relative_paths, self.paths)}
        index.search_embeddings(torch.zeros(1, index.dim), k=1)  # builds search caches before any thread

    # -- queries ---------------------------------------------------------------------------------------

    def embed_text(self, text: str) -> torch.Tensor:
        """The L2-normalised embedding `[D]` of a text query, from the LRU cache when it was asked before."""
        text = check_text_query(text)
        with self._cache_lock:
            cached = self._cache.get(text)
            if cached is not None:
                self._cache.move_to_end(text)
                self.cache_hits += 1
                return cached
            self.cache_misses += 1
        with self.model_lock:
            vector = self.index.embed_queries([text])[0]  # [D]
        if self.text_cache_size > 0:
            with self._cache_lock:
                self._cache[text] = vector
                while len(self._cache) > self.text_cache_size:
                    self._cache.popitem(last=False)
        return vector

    def embed_file(self, path: str | os.PathLike, name: str = "upload") -> tuple[torch.Tensor, str]:
        """The embedding `[D]` of an image or a video file (the video tower; an image is a 1-frame video) and
        its kind, "image" or "video". Neither readable: `QueryError` naming `name` (not the temporary path)."""
        from PIL import Image, UnidentifiedImageError

        from .video_io import VideoDecodeError

        try:
            with Image.open(path) as image:
                image.load()
                pixel_values = self.processor.load_image(image.convert("RGB"))[None]  # [1, 1, 3, S, S]
            kind = "image"
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            try:
                pixel_values = self.processor.load_video(os.fspath(path), mode="test")[None]  # [1, T, 3, S, S]
            except VideoDecodeError as err:  # the detail names the temporary file: for the log only
                logger.info("upload %s is not readable: %s", name, err)
                raise QueryError(f"{name}: neither a readable image nor a readable video") from None
            kind = "video"
        param = next(self.model.parameters())
        with self.model_lock, torch.no_grad():
            features = self.model.get_video_features(
                pixel_values=pixel_values.to(device=param.device, dtype=param.dtype)).pooler_output  # [1, D]
        return F.normalize(features.float(), dim=-1)[0].cpu(), kind

    def search_vector(self, vector: torch.Tensor, k: int) -> list[dict]:
        """`[{"path", "score", "url"}]` of the `k` best videos for a query embedding `[D]`, best first."""
        scores, indices = self.index.search_embeddings(vector[None], k=check_k(k))
        return [{"path": self.paths[i], "score": round(float(s), 6), "url": self.media_url(int(i))}
                for s, i in zip(scores[0], indices[0]) if i >= 0]

    def search_text(self, text: str, k: int = DEFAULT_K) -> dict:
        started = time.perf_counter()
        results = self.search_vector(self.embed_text(text), k)
        return {"query": text, "query_type": "text", "results": results,
                "took_ms": round(1000 * (time.perf_counter() - started), 3)}

    def search_file(self, path: str | os.PathLike, name: str, k: int = DEFAULT_K) -> dict:
        started = time.perf_counter()
        check_k(k)
        vector, kind = self.embed_file(path, name)
        return {"query": name, "query_type": kind, "results": self.search_vector(vector, k),
                "took_ms": round(1000 * (time.perf_counter() - started), 3)}

    # -- previews --------------------------------------------------------------------------------------

    def media_url(self, position: int) -> str:
        return "/media/" + quote(self.relative_paths[position].replace(os.sep, "/"))

    def media_file(self, key: str) -> str | None:
        """The file behind `/media/<key>` (key already URL-decoded), or None when it is not an indexed video or
        no longer the file that was indexed (missing, not a regular file, or its real path changed)."""
        entry = self._media.get(key.replace("/", os.sep))
        if entry is None:
            return None
        path, real = entry
        if os.path.realpath(path) != real or not os.path.isfile(real):
            return None
        return real

    def health(self) -> dict:
        return {"status": "ok", "videos": len(self.index), "backend": getattr(self.index, "backend", None),
                "model": getattr(self.index, "model_path", None),
                "text_cache": {"size": len(self._cache), "capacity": self.text_cache_size,
                               "hits": self.cache_hits, "misses": self.cache_misses}}


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


def _parse_k(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_K
    try:
        return check_k(int(value))
    except ValueError:
        raise QueryError(f"k must be an integer from 1 to {MAX_K}, got {value!r}") from None


def load_service(index_dir: str | os.PathLike, model_path: str | None = None, device: str = "cpu",
                 video_root: str | os.PathLike | None = None, text_cache: int = DEFAULT_TEXT_CACHE) -> SearchService:
    """Load an index folder and its model (the recorded one, or `model_path`, which must hold the same
    weights) into a `SearchService`."""
    from .modeling_pig import PIGModel
    from .processing_pig import PIGProcessor
    from .retrieval import VideoIndex

    index = VideoIndex.load(index_dir)
    model_path = model_path or index.model_path
    if not model_path:
        raise ValueError(f"{index_dir}: the index records no model; pass --model")
    model = PIGModel.from_pretrained(model_path).to(device).eval()
    processor = PIGProcessor.from_pretrained(model_path)
    index.attach_model(model, processor)  # refuses weights other than the index's
    return SearchService(index, model, processor, video_root=video_root, text_cache=text_cache)


# ------------------------------------------------------------------------------------------------------
# The web page (rendered here so that /?q=... works without JavaScript; web/app.js handles uploads)


def _read_web(name: str) -> str:
    return (WEB_DIR / name).read_text(encoding="utf-8")


def render_results(results: Sequence[dict]) -> str:
    """The result grid's entries as HTML (web/app.js builds the same markup for uploads)."""
    items = []
    for rank, result in enumerate(results, 1):
        url, path = html.escape(result["url"], quote=True), html.escape(result["path"])
        name = html.escape(os.path.basename(result["path"]))
        items.append(
            f'<li class="result" data-rank="{rank}">'
            f'<video src="{url}" preload="metadata" muted loop playsinline controls></video>'
            f'<div class="meta"><span class="rank">#{rank}</span> <span class="score">{result["score"]:.4f}</span> '
            f'<span class="name">{name}</span></div>'
            f'<div class="path" title="{html.escape(result["path"], quote=True)}">{path}</div></li>')
    return "\n".join(items)


def render_page(service: SearchService, query: str = "", k: int = DEFAULT_K, response: dict | None = None,
                error: str | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES) -> str:
    if response is not None:
        status = (f'{len(response["results"])} results for <q>{html.escape(query)}</q> '
                  f'in {response["took_ms"]:.1f} ms')
    elif error is not None:
        status = f'<span class="error">{html.escape(error)}</span>'
    else:
        status = f"{len(service.index)} videos indexed. Type a description, or drop an image or a video."
    replacements = {
        "{{query}}": html.escape(query, quote=True),
        "{{k}}": str(k),
        "{{max_k}}": str(MAX_K),
        "{{status}}": status,
        "{{results}}": render_results(response["results"]) if response is not None else "",
        "{{videos}}": str(len(service.index)),
        "{{max_upload_bytes}}": str(max_upload_bytes),
    }
    page = _read_web("index.html")
    for placeholder, value in replacements.items():
        page = page.replace(placeholder, value)
    return page


# ------------------------------------------------------------------------------------------------------
# The ASGI app


def create_app(service: SearchService, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               upload_dir: str | os.PathLike | None = None):
    """The FastAPI app over a loaded `SearchService` (see the module docstring for the routes).

    Uploads are written to `upload_dir` (a fresh temporary folder by default) and deleted after the query.
    """
    # (no `from __future__ import annotations` in this module: FastAPI reads the routes' annotations, and
    # these names are local)
    from fastapi import FastAPI, File, Form, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from starlette.exceptions import HTTPException as StarletteHTTPException

    upload_folder = Path(upload_dir) if upload_dir is not None else Path(tempfile.mkdtemp(prefix="pig-serve-uploads-"))
    upload_folder.mkdir(parents=True, exist_ok=True)
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        if upload_dir is None:
            shutil.rmtree(upload_folder, ignore_errors=True)

    app = FastAPI(title="PIG video search", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan,
                  max_body_size=max_upload_bytes)  # 413 (plain text, from Starlette) before any parsing
    app.state.service = service
    app.state.upload_dir = upload_folder
    static = {"app.js": ("application/javascript", _read_web("app.js")),
              "style.css": ("text/css", _read_web("style.css"))}

    @app.exception_handler(QueryError)
    async def _query_error(request: Request, err: QueryError):
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        fields = ", ".join(".".join(str(p) for p in e.get("loc", ())[1:]) or "request" for e in err.errors())
        return JSONResponse({"error": f"bad or missing field(s): {fields}"}, status_code=400)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception):
        logger.exception("error while answering %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal error (details are in the server log)"}, status_code=500)

    @app.get("/healthz")
    def healthz():
        return service.health()

    @app.get("/api/search")
    def search_text(q: str = "", k: str | None = None):
        return service.search_text(q, _parse_k(k))

    @app.post("/api/search")
    def search_upload(file: UploadFile = File(...), k: str | None = Form(None)):
        k = _parse_k(k)
        name = os.path.basename(file.filename or "upload") or "upload"
        suffix = Path(name).suffix.lower() if Path(name).suffix.lower() in _KEPT_SUFFIXES else ""
        handle, path = tempfile.mkstemp(suffix=suffix, dir=upload_folder)
        try:
            with os.fdopen(handle, "wb") as out:
                shutil.copyfileobj(file.file, out, 2**20)
            if os.path.getsize(path) == 0:
                raise QueryError(f"{name}: the uploaded file is empty")
            return service.search_file(path, name, k)
        finally:
            os.unlink(path)
            file.file.close()

    @app.get("/", response_class=HTMLResponse)
    def page(q: str = "", k: str | None = None):
        try:
            k_value = _parse_k(k)
            response = service.search_text(q, k_value) if q.strip() else None
        except QueryError as err:
            return HTMLResponse(render_page(service, q, DEFAULT_K, error=str(err), max_upload_bytes=max_upload_bytes),
                                status_code=err.status)
        return HTMLResponse(render_page(service, q, k_value, response, max_upload_bytes=max_upload_bytes))

    @app.get("/static/{name}")
    def static_file(name: str):
        if name not in static:
            return JSONResponse({"error": "not found"}, status_code=404)
        media_type, text = static[name]
        return Response(text, media_type=media_type, headers={"Cache-Control": "no-cache"})

    @app.get("/media/{key:path}")
    def media(key: str):
        path = service.media_file(key)
        if path is None:
            return JSONResponse({"error": "not found"}, status_code=404)
        media_type = mimetypes.guess_type(path)[0] or "application/octet-stream"
        return FileResponse(path, media_type=media_type)  # answers Range requests with 206

    return app


def page_url(host: str, port: int, query: str | None = None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?{urlencode({'q': query})}" if query else "")


def serve(service: SearchService, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, log_level: str = "warning") -> None:
    """Bind `host:port` (port 0: any free port), print the address, and serve until SIGINT/SIGTERM."""
    import socket

    import uvicorn

    app = create_app(service, max_upload_bytes=max_upload_bytes)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)  # from now on a client waits in the backlog instead of being refused
    port = sock.getsockname()[1]
    print(f"serving {len(service.index)} videos on {page_url(host, port)}", flush=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


# ------------------------------------------------------------------------------------------------------
# Command line (`pig serve`; also `python -m modeling_pig.server`)


def add_serve_arguments(parser) -> None:
    """The arguments of `pig serve` on an argparse (sub)parser."""
    parser.add_argument("index", help="index folder written by `pig index`")
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the one the index "
                                                      "records; must hold the same weights)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (0.0.0.0: every interface; "
                                                             "anyone who reaches it can search and watch)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any free port)")
    parser.add_argument("--video_root", default=None, help="serve the videos from this folder (the library "
                                                           "moved since indexing)")
    parser.add_argument("--max_upload_mb", type=float, default=DEFAULT_MAX_UPLOAD_BYTES / 2**20,
                        help="largest accepted upload (query by example)")
    parser.add_argument("--text_cache", type=int, default=DEFAULT_TEXT_CACHE,
                        help="text query embeddings kept in memory (0: none)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def cmd_serve(args) -> int:
    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be from 0 to 65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.text_cache < 0:
        return _fail("--max_upload_mb must be > 0 and --text_cache >= 0")
    if not os.path.isdir(args.index):
        return _fail(f"{args.index}: no such index folder")
    if args.video_root is not None and not os.path.isdir(args.video_root):
        return _fail(f"--video_root {args.video_root}: no such folder")
    try:
        service = load_service(args.index, args.model, args.device, args.video_root, args.text_cache)
    except (OSError, ValueError) as err:
        logger.debug("loading failed", exc_info=True)
        return _fail(str(err).splitlines()[0])
    try:
        serve(service, args.host, args.port, int(args.max_upload_mb * 2**20))
    except OSError as err:  # address in use, not an address of this machine, ...
        return _fail(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}")
    return 0


def _fail(message: str) -> int:
    import sys

    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="pig serve", description="Search a video index over HTTP.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_serve_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return cmd_serve(args)


if __name__ == "__main__":
    raise SystemExit(main())
