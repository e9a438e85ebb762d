"""`pig`: index a folder of videos and search it by text.

    pig index VIDEO_DIR --model MODEL --out INDEX [--recursive] [--batch_size 16] [--num_workers 2]
    pig search INDEX "a man plays a guitar" [-k 5]
    pig info INDEX
    pig convert --from pig|fpig|clip-vip|clip4clip CHECKPOINT --out DIR [--clip CLIP] [--config CONFIG.json]

`index` embeds every video once (resumable: rerun the same command after an interruption), skips and
lists unreadable files, and writes the index folder (see `modeling_pig.index.VideoIndex`). The index
records the model path, so `search` embeds the query with the same model's text tower.

`main(argv)` runs one command in the calling process and returns its exit status: 0, or 2 with one line on
stderr naming what was wrong for a user mistake (missing folder, not an index, unknown model).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from .convert import add_convert_parser, run_convert
from .index import DEFAULT_FAISS_THRESHOLD, VideoIndex
from .search_backends import backend_names
from .loader import load_model_and_processor
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

    search = sub.add_parser("search", help="search an index by text",
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    search.add_argument("index", help="index folder written by `pig index`")
    search.add_argument("query", nargs="+", help="one or more text queries")
    search.add_argument("-k", type=int, default=5, help="results per query")
    search.add_argument("--model", default=None, help="override the model path recorded in the index "
                                                      "(must hold the same weights)")
    search.add_argument("--device", default=_default_device())

    info = sub.add_parser("info", help="describe an index (size, backend, unreadable videos, FAISS recall)")
    info.add_argument("index")

    add_convert_parser(sub)  # `pig convert`: modeling_pig/convert.py
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
    try:
        return VideoIndex.load(folder)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from err


def _print_failed(index: VideoIndex, limit: int = 20) -> None:
    if not index.failed:
        return
    print(f"{len(index.failed)} unreadable video(s) skipped:")
    for path, reason in list(index.failed.items())[:limit]:
        print(f"  {path}: {reason}")
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
    index = VideoIndex.build(model, processor, paths, batch_size=args.batch_size, num_workers=args.num_workers,
                             out_dir=args.out, model_path=model_path, backend=args.backend,
                             faiss_threshold=args.faiss_threshold, target_recall=args.target_recall)
    print(f"indexed {len(index)} of {len(paths)} videos into {args.out}")
    print(_recall_line(index))
    _print_failed(index)
    return 0


def format_results(query: str, results: list[tuple[str, float]]) -> str:
    """A ranked plain-text table of one query's results."""
    lines = [f"query: {query}", f"{'rank':>4}  {'score':>7}  video"]
    lines += [f"{rank:>4}  {score:>7.4f}  {path}" for rank, (path, score) in enumerate(results, 1)]
    return "\n".join(lines)


def cmd_search(args) -> int:
    if args.k < 1:
        raise UserError("-k must be >= 1")
    index = _load_index(args.index)
    model_path = args.model or index.model_path
    if not model_path:
        raise UserError(f"{args.index}: the index records no model; pass --model")
    try:
        index.attach_model(*_load(model_path, args.device))  # refuses other weights than the index's
    except ValueError as err:
        raise UserError(str(err)) from err
    results = index.search(list(args.query), k=args.k)
    print("\n\n".join(format_results(q, r) for q, r in zip(args.query, results)))
    return 0


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
    commands = {"index": cmd_index, "search": cmd_search, "info": cmd_info, "convert": run_convert}
    try:
        return commands[args.command](args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
