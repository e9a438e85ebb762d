"""Serve a video index as a Hugging Face Space (or anywhere): `python app.py`.

The same app as `pig serve` (modeling_pig/server.py), configured by environment variables, as a Space is:

    PIG_INDEX   the index folder (default: ./index)
    PIG_MODEL   the model folder or Hub id (default: the one the index records; it must hold the same weights)
    PIG_VIDEOS  the folder holding the indexed videos when they are no longer where they were indexed, e.g. the
                Space's own copy (default: where they were indexed); paths are taken relative to the videos'
                common folder
    PIG_HOST    address to listen on (default: 0.0.0.0 on a Space, where SPACE_ID is set, else 127.0.0.1)
    PORT        port (default: 7860, the port a Space exposes)
    PIG_MAX_UPLOAD_MB  largest upload for query by example (default: 64)

docs/serve.md shows the layout of a Space repository that uses it.
"""

import os
import sys

from modeling_pig.search_service import SearchSetupError, load_search_service
from modeling_pig.server import DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_PORT, bind, create_app, serve


def settings(environ=os.environ) -> dict:
    """The app's settings from the environment (see the module docstring)."""
    on_space = bool(environ.get("SPACE_ID"))
    return {
        "index": environ.get("PIG_INDEX", "index"),
        "model": environ.get("PIG_MODEL") or None,
        "videos": environ.get("PIG_VIDEOS") or None,
        "host": environ.get("PIG_HOST") or ("0.0.0.0" if on_space else "127.0.0.1"),
        "port": int(environ.get("PORT", DEFAULT_PORT)),
        "max_upload_bytes": int(float(environ.get("PIG_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_BYTES / 2**20)) * 2**20),
        "device": "cuda" if _cuda() else "cpu",
    }


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def load(config: dict):
    """The search service of `config` (raises SearchSetupError with one line naming the problem)."""
    if config["videos"] is not None and not os.path.isdir(config["videos"]):
        raise SearchSetupError(f"PIG_VIDEOS {config['videos']}: no such folder")
    return load_search_service(config["index"], config["model"], config["device"], video_root=config["videos"])


def asgi_app(environ=os.environ):
    """The ASGI app itself (for `uvicorn app:...` users and tests)."""
    config = settings(environ)
    return create_app(load(config), max_upload_bytes=config["max_upload_bytes"])


def main() -> int:
    config = settings()
    try:
        sock = bind(config["host"], config["port"])
    except OSError as err:
        print(f"error: cannot listen on {config['host']}:{config['port']}: {err.strerror or err}", file=sys.stderr)
        return 2
    try:
        service = load(config)
    except SearchSetupError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    serve(service, sock, config["max_upload_bytes"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
