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

`search_service.SearchService` holds the model and the index (loaded once) and is the only code that touches
them: the routes never do. Text embeddings of repeated queries come from its LRU cache; model calls are serialised
by a lock, the vector search itself runs concurrently (FastAPI runs these routes in its thread pool). Queries
(1000 characters) and uploads (`--max_upload_mb`, 64 by default) are bounded, uploads are written to a private
temporary folder and deleted after the query, and errors are JSON `{"error": ...}` without a traceback.
"""

import contextlib
import html
import logging
import mimetypes
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence
from urllib.parse import urlencode

from .search_service import (
    DEFAULT_TEXT_CACHE,
    MAX_K,
    QueryError,
    SearchService,
    SearchSetupError,
    check_k,
    load_search_service,
)
from .video_io import VIDEO_EXTENSIONS

logger = logging.getLogger(__name__)

__all__ = ["create_app", "bind", "serve", "add_serve_arguments", "run_serve"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860
DEFAULT_K = 12
DEFAULT_MAX_UPLOAD_BYTES = 64 * 2**20
WEB_DIR = Path(__file__).resolve().parent / "web"
# Previews open this far into the video (a media fragment, `#t=`), so that the still shown before playing is rarely
# a black first frame; app.js uses the same value.
PREVIEW_START_S = 0.5
# An upload's file name suffix is kept (it helps PyAV guess the container) only when it names a video or an
# image format; others are dropped so that the content decides (with `.txt`, FFmpeg renders text as video).
_KEPT_SUFFIXES = frozenset(VIDEO_EXTENSIONS) | {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def _parse_k(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_K
    try:
        return check_k(int(value))
    except ValueError:
        raise QueryError(f"k must be an integer from 1 to {MAX_K}, got {value!r}") from None


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
            f'<video src="{url}#t={PREVIEW_START_S}" preload="metadata" muted loop playsinline controls></video>'
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
            return service.search_file(path, k, name)
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


def bind(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT):
    """A listening TCP socket on `host:port` (port 0: any free port). Raises OSError (address in use, ...)."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio disables Nagle's algorithm (TCP_NODELAY) only on sockets whose proto says TCP;
    # without it a response written in two parts (headers, body) waits ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart need not wait for TIME_WAIT
        sock.bind((host, port))
        sock.listen(2048)  # from now on a client waits in the backlog instead of being refused
    except OSError:
        sock.close()
        raise
    return sock


def serve(service: SearchService, sock, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
          log_level: str = "warning") -> None:
    """Serve `service` on the listening socket `sock` (from `bind`) until SIGINT/SIGTERM; prints the address
    once requests are accepted (they wait in the backlog until uvicorn has started)."""
    import uvicorn

    app = create_app(service, max_upload_bytes=max_upload_bytes)
    host, port = sock.getsockname()[:2]
    print(f"serving {len(service.index)} videos on {page_url(host, port)}", flush=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])


# ------------------------------------------------------------------------------------------------------
# `pig serve` (the command line lives in cli.py; these are its arguments and its body)


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


def run_serve(args) -> int:
    """`pig serve`: check the arguments, load, serve until SIGINT/SIGTERM. Raises `SearchSetupError`."""
    if not 0 <= args.port <= 65535:
        raise SearchSetupError(f"--port must be from 0 to 65535, got {args.port}")
    if args.max_upload_mb <= 0 or args.text_cache < 0:
        raise SearchSetupError("--max_upload_mb must be > 0 and --text_cache >= 0")
    if not os.path.isdir(args.index):
        raise SearchSetupError(f"{args.index}: no such index folder")
    if args.video_root is not None and not os.path.isdir(args.video_root):
        raise SearchSetupError(f"--video_root {args.video_root}: no such folder")
    try:  # the port first: a busy one is reported at once, not after loading the model
        sock = bind(args.host, args.port)
    except OSError as err:  # address in use, not an address of this machine, ...
        raise SearchSetupError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from err
    try:
        service = load_search_service(args.index, args.model, args.device, args.video_root, args.text_cache)
        serve(service, sock, int(args.max_upload_mb * 2**20))
    finally:
        sock.close()
    return 0
