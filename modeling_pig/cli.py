"""`pig`: index a folder of videos and search it by text.

    pig index VIDEO_DIR --model MODEL --out INDEX [--recursive] [--batch_size 16] [--num_workers 2]
    pig search INDEX "a man plays a guitar" [-k 5]
    pig info INDEX
    pig convert --from pig|fpig|clip-vip|clip4clip CHECKPOINT --out DIR [--clip CLIP] [--config CONFIG.json]

`index` embeds every video once (resumable: rerun the same command after an interruption), skips and
lists unreadable files, and writes the index folder (see `modeling_pig.retrieval.VideoIndex`). The index
records the model path, so `search` embeds the query with the same model's text tower.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import torch

from .convert import add_convert_parser, run_convert
from .retrieval import BACKENDS, DEFAULT_FAISS_THRESHOLD, VideoIndex, find_videos

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
    index.add_argument("--backend", default="auto", choices=BACKENDS,
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


def _load_model(model_path: str, device: str):
    from .modeling_pig import PIGModel
    from .processing_pig import PIGProcessor

    model = PIGModel.from_pretrained(model_path).to(device).eval()
    return model, PIGProcessor.from_pretrained(model_path)


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
    paths = find_videos(args.video_dir, recursive=args.recursive)
    if not paths:
        print(f"error: no video files in {args.video_dir}" + ("" if args.recursive else " (try --recursive)"),
              file=sys.stderr)
        return 2
    model_path = str(Path(args.model).resolve()) if os.path.isdir(args.model) else args.model
    model, processor = _load_model(model_path, args.device)
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
        print("error: -k must be >= 1", file=sys.stderr)
        return 2
    index = VideoIndex.load(args.index)
    model_path = args.model or index.model_path
    if not model_path:
        print("error: the index records no model; pass --model", file=sys.stderr)
        return 2
    index.attach_model(*_load_model(model_path, args.device))  # refuses other weights than the index's
    results = index.search(list(args.query), k=args.k)
    print("\n\n".join(format_results(q, r) for q, r in zip(args.query, results)))
    return 0


def cmd_info(args) -> int:
    index = VideoIndex.load(args.index)
    print(f"{args.index}: {len(index)} videos, {index.dim}-d fp16 vectors, model {index.model_path}")
    print(_recall_line(index))
    _print_failed(index)
    return 0


def main(argv=None) -> int:
    """Entry point of the `pig` console script."""
    args = _build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    commands = {"index": cmd_index, "search": cmd_search, "info": cmd_info, "convert": run_convert}
    return commands[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
