"""`pig`: index a folder of videos, search it by text or by example, serve it over HTTP.

    pig index VIDEO_DIR --model MODEL --out INDEX [--recursive] [--batch_size 16] [--num_workers 2]
    pig search INDEX "a man plays a guitar" ["a dog runs" ...] [-k 5] [--json]
    pig search INDEX --image photo.jpg --video clip.mp4 --queries_file queries.txt   (- : standard input)
    pig serve INDEX [--model M] [--host 127.0.0.1] [--port 7860]
    pig info INDEX

`index` embeds every video once (resumable: rerun the same command after an interruption), skips and
lists unreadable files, and writes the index folder (see `modeling_pig.index.VideoIndex`). The index
records the model path, so `search` embeds the query with the same model's text tower; after the first search
(or `index`) the folder also holds that text tower on its own (`query_encoder`), so that a text search loads
neither transformers nor the model. `serve` is `modeling_pig.server`.

`main(argv)` runs one command in the calling process and returns its exit status: 0, or 2 with one line on
stderr naming what was wrong for a user mistake (missing folder, not an index, unknown model).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

import torch

from .index import DEFAULT_FAISS_THRESHOLD, VideoIndex
from .search_backends import backend_names
from .loader import load_model_and_processor
from .query_encoder import save_text_encoder
from .search_service import QueryError, SearchSetupError, load_search_service
from .video_io import find_videos

logger = logging.getLogger("modeling_pig.cli")


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pig", description="Text-to-video search with a PIG model.")
    sub = parser.add_subparsers(dest="command", required=True)

    index = sub.add_parser("index", help="embed the videos of a folder into a searchable index",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    index.add_argument("video_dir", help="folder with the videos")
    index.add_argument("--model", required=True, help="PIG model folder or Hub id")
    index.add_argument("--out", required=True, help="index folder to write (resumes an interrupted build)")
    index.add_argument("--recursive", action="store_true", help="also index videos in sub-folders")
    index.add_argument("--batch_size", type=int, default=16, help="videos per forward pass")
    index.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                       help="video decoding workers")
    index.add_argument("--backend", default="auto", choices=backend_names(),
                       help="search backend (auto: exact up to --faiss_threshold videos, FAISS IVF above)")
    index.add_argument("--faiss_threshold", type=int, default=DEFAULT_FAISS_THRESHOLD)
    index.add_argument("--target_recall", type=float, default=0.95,
                       help="FAISS only: raise the search effort until recall@10 vs exact search reaches this")
    index.add_argument("--device", default=_default_device())

    search = sub.add_parser("search", help="search an index by text, or by an example image or video",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    search.add_argument("index", help="index folder written by `pig index`")
    search.add_argument("query", nargs="*", help="text queries")
    search.add_argument("--queries_file", default=None, metavar="FILE",
                        help="also the text queries of this file, one per line ('-': standard input)")
    search.add_argument("--image", action="append", default=[], metavar="PATH",
                        help="find the videos closest to this image (repeatable)")
    search.add_argument("--video", action="append", default=[], metavar="PATH",
                        help="find the videos closest to this video (repeatable)")
    search.add_argument("-k", type=int, default=5, help="results per query")
    search.add_argument("--json", action="store_true",
                        help='print JSON: [{"query", "query_type", "results": [{"path", "score"}]}]')
    search.add_argument("--model", default=None, help="override the model path recorded in the index "
                                                      "(must hold the same weights)")
    search.add_argument("--device", default=_default_device())

    from .server import add_serve_arguments

    serve = sub.add_parser("serve", help="search an index from a browser or over HTTP (JSON API)",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_serve_arguments(serve)
    serve.add_argument("--device", default=_default_device())

    info = sub.add_parser("info", help="describe an index (size, backend, unreadable videos, FAISS recall)")
    info.add_argument("index")
    return parser


class UserError(Exception):
    """A mistake in the command line or its inputs: reported as one line, exit status 2."""


def _load(model_path: str, device: str):
    """The model and processor of `model_path`; a folder or id that holds none is a user error."""
    try:
        return load_model_and_processor(model_path, device)
    except (OSError, ValueError) as err:  # transformers: no such folder, not a model folder, unknown Hub id
        raise UserError(f"--model {model_path}: cannot load a model from it ({str(err).splitlines()[0]})") from err


def _load_index(folder: str) -> VideoIndex:
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: no such index folder")
    try:
        return VideoIndex.load(folder)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from err


def _print_failed(index: VideoIndex, limit: int = 20) -> None:
    if not index.failed:
        return
    print(f"{len(index.failed)} unreadable video(s) skipped:")
    for path, reason in list(index.failed.items())[:limit]:
        print(f"  {reason}" if reason.startswith(f"{path}: ") else f"  {path}: {reason}")  # the path once
    if len(index.failed) > limit:
        print(f"  ... and {len(index.failed) - limit} more (see index.json, key 'failed')")


def _recall_line(index: VideoIndex) -> str:
    if index.backend == "exact":
        return "search: exact (recall 1.0)"
    recall = index.measure_recall(num_queries=min(200, len(index)), k=10)
    return f"search: FAISS {index.backend} {index.faiss_params}, recall@10 vs exact = {recall:.3f}"


def cmd_index(args) -> int:
    if not os.path.isdir(args.video_dir):
        raise UserError(f"{args.video_dir}: not a folder")
    paths = find_videos(args.video_dir, recursive=args.recursive)
    if not paths:
        raise UserError(f"no video files in {args.video_dir}" + ("" if args.recursive else " (try --recursive)"))
    model_path = str(Path(args.model).resolve()) if os.path.isdir(args.model) else args.model
    model, processor = _load(model_path, args.device)
    new_folder = not os.path.exists(args.out)
    try:
        index = VideoIndex.build(model, processor, paths, batch_size=args.batch_size, num_workers=args.num_workers,
                                 out_dir=args.out, model_path=model_path, backend=args.backend,
                                 faiss_threshold=args.faiss_threshold, target_recall=args.target_recall)
    except ValueError as err:  # e.g. none of the videos could be decoded
        if new_folder:  # leave nothing behind: there is no index to resume
            shutil.rmtree(args.out, ignore_errors=True)
        raise UserError(f"{args.video_dir}: {err}") from err
    save_text_encoder(model, processor, args.out, index.model_fingerprint)  # fast cold text searches
    print(f"indexed {len(index)} of {len(paths)} videos into {args.out}")
    print(_recall_line(index))
    _print_failed(index)
    return 0


def format_results(query: str, results: list[tuple[str, float]]) -> str:
    """A ranked plain-text table of one query's results."""
    lines = [f"query: {query}", f"{'rank':>4}  {'score':>7}  video"]
    lines += [f"{rank:>4}  {score:>7.4f}  {path}" for rank, (path, score) in enumerate(results, 1)]
    return "\n".join(lines)


def _text_queries(args) -> list[str]:
    texts = list(args.query)
    for position, text in enumerate(texts, 1):
        if not text.strip():
            raise UserError(f"text query {position} is empty")
    if args.queries_file is not None:
        if args.queries_file == "-":
            lines = sys.stdin.read().splitlines()
        else:
            try:
                lines = Path(args.queries_file).read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as err:
                raise UserError(f"--queries_file {args.queries_file}: cannot read it ({err})") from err
        texts += [line.strip() for line in lines if line.strip()]  # blank lines separate nothing
    return texts


def cmd_search(args) -> int:
    if args.k < 1:
        raise UserError("-k must be >= 1")
    texts = _text_queries(args)
    examples = [(path, "image") for path in args.image] + [(path, "video") for path in args.video]
    for path, kind in examples:
        if not os.path.isfile(path):
            raise UserError(f"--{kind} {path}: no such file")
    if not texts and not examples:
        raise UserError("no query: give text queries, --queries_file, --image or --video")
    try:  # text only: the index's own text encoder when it has one (no model, no transformers import)
        service = load_search_service(args.index, args.model, args.device, need_model=bool(examples))
    except SearchSetupError as err:
        raise UserError(str(err)) from err
    answers = []
    if texts:
        for text, results in zip(texts, service.search_vectors(service.embed_texts(texts), args.k)):
            answers.append({"query": text, "query_type": "text", "results": results})
    for path, kind in examples:
        try:
            vector, found = service.embed_file(path)
        except QueryError as err:
            raise UserError(f"--{kind} {err}") from err
        if found != kind:
            raise UserError(f"--{kind} {path}: this is {'an' if found == 'image' else 'a'} {found}; use --{found}")
        answers.append({"query": path, "query_type": kind, "results": service.search_vectors(vector[None], args.k)[0]})
    if args.json:
        for answer in answers:
            answer["results"] = [{"path": r["path"], "score": r["score"]} for r in answer["results"]]
        print(json.dumps(answers, indent=2, ensure_ascii=False))
    else:
        print("\n\n".join(format_results(a["query"], [(r["path"], r["score"]) for r in a["results"]])
                           for a in answers))
    return 0


def cmd_serve(args) -> int:
    from .server import run_serve

    try:
        return run_serve(args)
    except SearchSetupError as err:
        raise UserError(str(err)) from err


def cmd_info(args) -> int:
    index = _load_index(args.index)
    print(f"{args.index}: {len(index)} videos, {index.dim}-d fp16 vectors, model {index.model_path}")
    print(_recall_line(index))
    _print_failed(index)
    return 0


def main(argv=None) -> int:
    """Entry point of the `pig` console script: run one command, return its exit status (2: user error)."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse already printed the usage error
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    commands = {"index": cmd_index, "search": cmd_search, "serve": cmd_serve, "info": cmd_info}
    try:
        return commands[args.command](args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
