"""`pig`: index a folder of videos, search it by text or by example, serve it over HTTP.

    pig index VIDEO_DIR --model MODEL --out INDEX [--recursive] [--batch_size 16] [--num_workers 2]
    accelerate launch --num_processes N -m modeling_pig.cli index VIDEO_DIR --model MODEL --out INDEX
    pig search INDEX "a man plays a guitar" ["a dog runs" ...] [-k 5] [--json]
    pig search INDEX --image photo.jpg --video clip.mp4 --queries_file queries.txt   (- : standard input)
    pig serve INDEX [--model M] [--host 127.0.0.1] [--port 7860]
    pig info INDEX [--json]
    pig convert --from pig|fpig|clip-vip|clip4clip CHECKPOINT --out DIR [--clip CLIP] [--config CONFIG.json]

`index` embeds every video once into the index folder's embedding store (resumable: rerun the same command
after an interruption, SIGTERM and Ctrl-C included; rerun it after adding or deleting videos to update the
index), skips and lists unreadable files, and writes the index folder (see `modeling_pig.index.VideoIndex`).
MODEL is a PIG checkpoint or any CLIP checkpoint (then the zero-shot CLIP4Clip meanP model is built from it).
The index records the model, so `search` embeds the query with the same model's text tower; `index` (and the
first search that loads the model) also saves that text tower on its own in the folder (`query_encoder`), so
that a text search loads neither transformers' models nor the model. `serve` is `modeling_pig.server`.

`main(argv)` runs one command in the calling process and returns its exit status: 0; 2 with one line on stderr
naming what was wrong for a user mistake (missing folder, not an index, unknown model, a build already
running); 128 + the signal number after SIGINT/SIGTERM, once the finished work is saved.
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
from huggingface_hub.errors import StrictDataclassError

from .convert import add_convert_parser, run_convert
from .encoding import sigterm_raises
from .index import DEFAULT_FAISS_THRESHOLD, VideoIndex
from .loader import DTYPES, load_model_and_processor, loader_spec, model_source_signature
from .query_encoder import save_text_encoder
from .search_backends import backend_names
from .search_service import QueryError, SearchSetupError, load_search_service
from .video_io import find_videos

logger = logging.getLogger("modeling_pig.cli")


def _default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _backend_param(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected NAME=INTEGER (e.g. nlist=4096), got {text!r}")
    return name, int(value)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pig", description="Text-to-video search with a PIG model.")
    sub = parser.add_subparsers(dest="command", required=True)

    index = sub.add_parser("index", help="embed the videos of a folder into a searchable index",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    index.add_argument("video_dir", help="folder with the videos")
    index.add_argument("--model", required=True,
                       help="PIG model folder or Hub id, or any CLIP checkpoint (zero-shot CLIP4Clip meanP)")
    index.add_argument("--out", required=True, help="index folder to write (resumes or updates a previous build)")
    index.add_argument("--recursive", action="store_true", help="also index videos in sub-folders")
    index.add_argument("--batch_size", type=int, default=16, help="videos per forward pass")
    index.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                       help="video decoding workers (per process)")
    index.add_argument("--dtype", default="float32", choices=DTYPES, help="model dtype")
    index.add_argument("--num_frames", type=int, default=None,
                       help="frames per video of the zero-shot model built from a CLIP checkpoint (default 12)")
    index.add_argument("--backend", default="auto", choices=backend_names(),
                       help="search backend (auto: exact up to --faiss_threshold videos, above FAISS IVF-PQ whose "
                       "candidates are rescored exactly, tuned to --target_recall)")
    index.add_argument("--param", dest="backend_params", type=_backend_param, action="append", default=[],
                       metavar="NAME=VALUE", help="backend parameter, repeatable (nlist, nprobe, pq_m, hnsw_m, ...)")
    index.add_argument("--faiss_threshold", type=int, default=DEFAULT_FAISS_THRESHOLD)
    index.add_argument("--target_recall", type=float, default=0.95,
                       help="approximate backends: raise the search effort until recall@10 vs exact reaches this")
    index.add_argument("--flush_every", type=int, default=512, help="write finished vectors every N videos")
    index.add_argument("--device", default=None, help="default: cuda when available (each process its own "
                                                      "device under accelerate launch), else cpu")

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

    info = sub.add_parser("info", help="describe an index or a build in progress (size, status, failures, recall)")
    info.add_argument("index")
    info.add_argument("--json", action="store_true", help="print one JSON object (status, embedded, total, ...)")

    add_convert_parser(sub)  # `pig convert`: modeling_pig/convert.py
    return parser


class UserError(Exception):
    """A mistake in the command line or its inputs: reported as one line, exit status 2."""


def _load(model_path: str, device: str, loader: dict | None = None):
    """The model and processor of `model_path`; a folder or id that holds none is a user error."""
    try:
        return load_model_and_processor(model_path, device, loader=loader)
    except (OSError, ValueError) as err:  # transformers: no such folder, not a model folder, unknown Hub id
        raise UserError(f"--model {model_path}: cannot load a model from it ({str(err).splitlines()[0]})") from err
    except StrictDataclassError as err:  # a config.json value PIGConfig refuses: the message names the field
        raise UserError(f"--model {model_path}: invalid config.json ({' '.join(str(err).split())})") from err


def _load_index(folder: str) -> VideoIndex:
    if not os.path.isdir(folder):
        raise UserError(f"{folder}: no such index folder")
    try:
        return VideoIndex.load(folder)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from err


def _print_listed(title: str, items: dict, limit: int = 20) -> None:
    if not items:
        return
    print(f"{len(items)} {title}:")
    for path, detail in list(items.items())[:limit]:
        print(f"  {detail}" if detail.startswith(f"{path}: ") else f"  {path}: {detail}")  # the path once
    if len(items) > limit:
        print(f"  ... and {len(items) - limit} more (`pig info --json` and the index's videos table list them)")


def _recall_line(index: VideoIndex) -> str:
    if index.backend == "exact":
        return "search: exact (recall 1.0)"
    recall = index.measure_recall(num_queries=min(200, len(index)), k=10)
    return f"search: FAISS {index.backend} {index.faiss_params}, recall@10 vs exact = {recall:.3f}"


def _distributed_state(device: str | None):
    """accelerate's process state when launched as several processes (`accelerate launch`, torchrun): one
    process per GPU, or gloo processes on CPU (`accelerate launch --multi_gpu` and torchrun start them there)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def cmd_index(args) -> int:
    if not os.path.isdir(args.video_dir):
        raise UserError(f"{args.video_dir}: not a folder")
    paths = find_videos(args.video_dir, recursive=args.recursive)
    if not paths:
        raise UserError(f"no video files in {args.video_dir}" + ("" if args.recursive else " (try --recursive)"))
    from .indexing import IndexLockedError, check_unlocked

    try:
        check_unlocked(args.out)
    except IndexLockedError as err:
        raise UserError(str(err)) from err
    state = _distributed_state(args.device)
    device = args.device or (str(state.device) if state is not None else _default_device())
    model_path = str(Path(args.model).resolve()) if os.path.isdir(args.model) else args.model
    try:
        loader = loader_spec(model_path, args.dtype, args.num_frames)
    except (OSError, ValueError) as err:
        raise UserError(f"--model {args.model}: cannot load a model from it ({str(err).splitlines()[0]})") from err
    model, processor = _load(model_path, device, loader)
    if loader["kind"] == "clip-meanp":
        logger.info("%s is a CLIP checkpoint: indexing with the zero-shot CLIP4Clip meanP model built from it "
                    "(%d frames per video)", model_path, loader["num_frames"])
    new_folder = not os.path.exists(args.out)
    try:
        index = VideoIndex.build(
            model, processor, paths, batch_size=args.batch_size, num_workers=args.num_workers, out_dir=args.out,
            model_path=model_path, model_loader=loader, model_source=model_source_signature(model_path),
            backend=args.backend, faiss_threshold=args.faiss_threshold, target_recall=args.target_recall,
            flush_every=args.flush_every, state=state, **dict(args.backend_params))
    except IndexLockedError as err:
        raise UserError(str(err)) from err
    except ValueError as err:  # none of the videos could be decoded
        if new_folder and (state is None or state.is_main_process):  # nothing to resume: leave nothing behind
            shutil.rmtree(args.out, ignore_errors=True)
        raise UserError(f"{args.video_dir}: {err}") from err
    if index is None:  # not the main process: it wrote its share into the store
        return 0
    save_text_encoder(model, processor, args.out, index.model_fingerprint)  # cold text searches skip the model
    report = index.build_report
    processes = f", {report['num_processes']} processes" if report["num_processes"] > 1 else ""
    print(f"indexed {len(index)} of {report['total']} videos into {args.out} ({report['embedded_now']} embedded "
          f"now, {report['reused']} from the store, {report['dropped']} dropped since the last build{processes})")
    print(_recall_line(index))
    _print_listed("unreadable video(s) skipped", index.failed)
    _print_listed("duplicate path(s) indexed once", {p: f"same file as {k}" for p, k in index.duplicates.items()})
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
        for text, results in zip(texts, service.search_vectors(service.embed_texts(texts), args.k, urls=False)):
            answers.append({"query": text, "query_type": "text", "results": results})
    for path, kind in examples:
        try:
            vector, found = service.embed_file(path)
        except QueryError as err:
            raise UserError(f"--{kind} {err}") from err
        if found != kind:
            raise UserError(f"--{kind} {path}: this is {'an' if found == 'image' else 'a'} {found}; use --{found}")
        answers.append({"query": path, "query_type": kind,
                        "results": service.search_vectors(vector[None], args.k, urls=False)[0]})
    if args.json:
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
    from .indexing import index_status

    if not os.path.isdir(args.index):
        raise UserError(f"{args.index}: no such index folder")
    try:
        status = index_status(args.index)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(str(err)) from err
    if args.json:
        print(json.dumps(status, indent=1))
        return 0
    if status["status"] == "incomplete":
        state = "running now" if status["running"] else "interrupted"
        print(f"{args.index}: build incomplete ({state}): {status['embedded']} of {status['total']} videos embedded, "
              f"{status['failed']} unreadable; run the same `pig index` command again to resume")
        if not status["searchable_previous_index"]:
            return 0
        print("the previous index stays searchable until the build completes:")
    index = _load_index(args.index)
    print(f"{args.index}: {len(index)} videos, {index.dim}-d fp16 vectors, model {index.model_path} "
          f"({index.model_loader['kind']})")
    print(_recall_line(index))
    _print_listed("unreadable video(s) skipped", index.failed)
    _print_listed("duplicate path(s) indexed once", {p: f"same file as {k}" for p, k in index.duplicates.items()})
    return 0


def main(argv=None) -> int:
    """Entry point of the `pig` console script: run one command, return its exit status (2: user error)."""
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse already printed the usage error
        return int(exit_.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    commands = {"index": cmd_index, "search": cmd_search, "serve": cmd_serve, "info": cmd_info,
                "convert": run_convert}
    try:
        with sigterm_raises():
            return commands[args.command](args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:  # Ctrl-C or SIGTERM: encode_videos has saved the finished batches
        signum = getattr(interrupt, "signum", 2)
        where = f"; finished videos are saved in {args.out}, run the same command again to resume" \
            if args.command == "index" else ""
        print(f"interrupted ({'SIGTERM' if signum == 15 else 'SIGINT'}){where}", file=sys.stderr)
        return 128 + signum


if __name__ == "__main__":
    sys.exit(main())
