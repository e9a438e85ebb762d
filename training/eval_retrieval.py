"""Text-video retrieval evaluation of a PIG model (or its baselines) on a benchmark split.

Two-tower, as the method requires (docs/pig-method.md §7): text embeddings and video embeddings are
computed separately, in batches, then scored with one matrix product and ranked with
`modeling_pig.metrics.compute_retrieval_metrics` (CLIP4Clip protocol; DSL optional, reported apart).

* Every caption of a row is a query whose ground truth is that row's video: this covers the square
  protocol (one caption or one paragraph per video) and the multi-caption one (MSR-VTT full, VATEX, MSVD).
* Unreadable videos are skipped, never silently: they are logged, counted in the metrics
  (`num_skipped_videos`, `num_skipped_captions`: their captions leave the query set) and listed in the JSON.
* Embeddings are cached on disk (`cache_dir`): it is an `modeling_pig.embedding.EmbeddingStore`, keyed by
  the model's weights and the processor settings, holding one vector per video file (path, clip, size,
  mtime) and per text; videos are written as they are computed, so an interrupted run keeps its progress and
  a rerun reuses it.

Library use (the trainer, training/evaluation.py): `evaluate_retrieval(model, processor, dataset)`. Command line
(`python -m training.eval_retrieval` works too):

    python training/eval_retrieval.py --model DIR --benchmark msrvtt --data_dir DATA --config 9k --split test \\
        --output results.json

writes/updates `results.json` (one entry per model x benchmark x config x split) and `results.md` (the table).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from modeling_pig.embedding import EmbeddingStore, model_fingerprint, processor_signature
from modeling_pig.encoding import encode_texts, encode_videos
from modeling_pig.loader import load_model_and_processor
from modeling_pig.metrics import RECALL_KS, compute_retrieval_metrics
from training.data import load_split

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pig-hf" / "eval"


# ------------------------------------------------------------------------------------------------------
# Evaluation


@dataclasses.dataclass
class RetrievalEvaluation:
    """Everything an evaluation run found.

    metrics: `compute_retrieval_metrics` output plus `num_skipped_videos`, `num_skipped_captions`.
    protocol: "square" (one text per video) or "multi-caption" (every caption of a video is a query).
    skipped: one dict per unreadable video: video_id, video, reason, num_captions.
    """

    metrics: dict
    protocol: str
    skipped: list[dict]


def _column(dataset, name: str) -> list:
    if name in dataset.column_names:
        return list(dataset[name])
    raise KeyError(f"the evaluation dataset has no {name!r} column (columns: {dataset.column_names}); "
                   "expected load_benchmark rows: video_id, video, captions, start, end")


@dataclasses.dataclass
class SplitEmbeddings:
    """The embeddings of a split's rows (or of a contiguous share of them, see `merge_split_embeddings`).

    videos: `[len(kept), D]` float32, one per decodable video; kept: the row of each (ascending);
    failed: row -> reason, for every video that could not be decoded; texts: `[n_texts, D]` float32, every
    caption of the kept rows in row order (empty `[0, 0]` when nothing was kept).
    """

    videos: torch.Tensor
    kept: list[int]
    failed: dict[int, str]
    texts: torch.Tensor


def _split_columns(dataset) -> tuple[list, list, list, list | None, list | None]:
    """(videos, captions, video_ids, starts, ends) of `load_benchmark` rows, every row with a caption."""
    videos = _column(dataset, "video")
    captions = _column(dataset, "captions")
    names = dataset.column_names
    video_ids = _column(dataset, "video_id") if "video_id" in names else [str(i) for i in range(len(videos))]
    starts = _column(dataset, "start") if "start" in names else None
    ends = _column(dataset, "end") if "end" in names else None
    for row, (video_id, row_captions) in enumerate(zip(video_ids, captions)):
        if not row_captions or any(not isinstance(c, str) or not c.strip() for c in row_captions):
            raise ValueError(f"row {row} (video_id {video_id!r}) has no caption or an empty one: {row_captions!r}; "
                             "every video needs at least one non-empty caption")
    return videos, captions, video_ids, starts, ends


def embed_split(model, processor, dataset, batch_size: int = 16, cache_dir=None, num_workers: int = 0,
                text_batch_size: int = 256, show_progress: bool = True) -> SplitEmbeddings:
    """Embed every video of `dataset` (skipping undecodable ones) and every caption of the decodable ones.

    The arguments are those of `evaluate_retrieval_detailed`. An empty `dataset` (a process's share of a small
    split) gives empty embeddings.
    """
    videos, captions, _, starts, ends = _split_columns(dataset)
    if not videos:
        return SplitEmbeddings(videos=torch.empty(0, 0), kept=[], failed={}, texts=torch.empty(0, 0))
    section = None
    if cache_dir is not None:
        section = EmbeddingStore(cache_dir).section(model_fingerprint(model), processor_signature(processor))
    encoded = encode_videos(model, processor, videos, batch_size=batch_size, starts=starts, ends=ends,
                            num_workers=num_workers, store=section, show_progress=show_progress)
    texts = [caption for row in encoded.positions for caption in captions[row]]
    text_embeddings = torch.empty(0, 0)
    if texts:
        text_embeddings = encode_texts(model, processor, texts, batch_size=text_batch_size, store=section,
                                       show_progress=show_progress)
    return SplitEmbeddings(videos=encoded.embeddings.float(), kept=list(encoded.positions),
                           failed=dict(encoded.failed), texts=text_embeddings.float())


def merge_split_embeddings(shares: Sequence[SplitEmbeddings], sizes: Sequence[int]) -> SplitEmbeddings:
    """The `SplitEmbeddings` of a whole split from those of its consecutive shares of `sizes` rows each."""
    kept, failed, videos, texts = [], {}, [], []
    offset = 0
    for share, size in zip(shares, sizes, strict=True):
        kept += [offset + row for row in share.kept]
        failed.update({offset + row: reason for row, reason in share.failed.items()})
        if share.kept:
            videos.append(share.videos)
            texts.append(share.texts)
        offset += size
    if not videos:
        return SplitEmbeddings(videos=torch.empty(0, 0), kept=[], failed=failed, texts=torch.empty(0, 0))
    return SplitEmbeddings(videos=torch.cat(videos), kept=kept, failed=failed, texts=torch.cat(texts))


def score_split(dataset, embeddings: SplitEmbeddings, dsl: bool = False) -> RetrievalEvaluation:
    """Metrics of a split from its embeddings: every caption of a kept row is a query for that row's video."""
    videos, captions, video_ids, _, _ = _split_columns(dataset)
    if not videos:
        raise ValueError("the evaluation dataset is empty")
    skipped = [{"video_id": video_ids[p], "video": videos[p], "reason": reason, "num_captions": len(captions[p])}
               for p, reason in sorted(embeddings.failed.items())]
    if not embeddings.kept:
        raise ValueError(f"none of the {len(videos)} videos could be decoded (first: {skipped[0]['reason']})")
    if skipped:
        logger.warning("Evaluation skips %d unreadable videos and their %d captions: %s", len(skipped),
                       sum(s["num_captions"] for s in skipped), ", ".join(s["video_id"] for s in skipped[:10]))
    text_to_video = [column for column, row in enumerate(embeddings.kept) for _ in captions[row]]
    sim = (embeddings.texts @ embeddings.videos.T).numpy()  # [n_text, n_video]
    metrics = compute_retrieval_metrics(sim, np.asarray(text_to_video), dsl=dsl)
    metrics["num_skipped_videos"] = len(skipped)
    metrics["num_skipped_captions"] = sum(s["num_captions"] for s in skipped)
    protocol = "square" if all(len(c) == 1 for c in captions) else "multi-caption"
    return RetrievalEvaluation(metrics=metrics, protocol=protocol, skipped=skipped)


def evaluate_retrieval_detailed(model, processor, dataset, batch_size: int = 16, cache_dir=None, dsl: bool = False,
                                num_workers: int = 0, text_batch_size: int = 256, show_progress: bool = True
                                ) -> RetrievalEvaluation:
    """Evaluate text-to-video and video-to-text retrieval on a `load_benchmark` split (see module docstring).

    Args:
        model: PIGModel (or anything with `get_text_features` / `get_video_features`), on its device.
        processor: PIGProcessor (its `num_frames` and settings define the sampling).
        dataset: rows with `video` (path or None), `captions` (list of str), optional `video_id`, `start`, `end`.
        batch_size: videos per forward pass; `text_batch_size`: texts per forward pass.
        cache_dir: embedding store folder (None: no cache); see `modeling_pig.embedding.EmbeddingStore`.
        dsl: also report dual-softmax metrics (keys prefixed `dsl_`).
        num_workers: DataLoader workers decoding videos.

    Returns:
        `RetrievalEvaluation` (metrics, protocol, skipped videos). `embed_split` + `score_split` are the two halves
        (training/evaluation.py runs the first on every process's share of the rows).
    """
    if len(dataset) == 0:
        raise ValueError("the evaluation dataset is empty")
    embeddings = embed_split(model, processor, dataset, batch_size=batch_size, cache_dir=cache_dir,
                             num_workers=num_workers, text_batch_size=text_batch_size, show_progress=show_progress)
    return score_split(dataset, embeddings, dsl=dsl)


def evaluate_retrieval(model, processor, dataset, batch_size: int = 16, cache_dir=None, dsl: bool = False,
                       num_workers: int = 0, text_batch_size: int = 256, show_progress: bool = True) -> dict:
    """Retrieval metrics of `model` on `dataset` (a `load_benchmark` split): `t2v_R@1`, ..., `v2t_MnR`,
    `num_texts`, `num_videos`, `num_skipped_videos`, `num_skipped_captions` (and `dsl_*` with `dsl=True`).

    See `evaluate_retrieval_detailed` for the arguments and for the list of skipped videos.
    """
    return evaluate_retrieval_detailed(model, processor, dataset, batch_size=batch_size, cache_dir=cache_dir,
                                       dsl=dsl, num_workers=num_workers, text_batch_size=text_batch_size,
                                       show_progress=show_progress).metrics


# ------------------------------------------------------------------------------------------------------
# Results table


def _format_metric(value: float) -> str:
    return f"{value:.1f}"


def results_file_table(entries: Sequence[dict]) -> str:
    """Markdown table of evaluation entries (dicts with model, benchmark, config, split, protocol, metrics)."""
    recall_cols = [f"R@{k}" for k in RECALL_KS]
    header = (["Model", "Benchmark", "Split", "Protocol", "Texts", "Videos"]
              + [f"t2v {c}" for c in recall_cols + ["MdR", "MnR"]]
              + [f"v2t {c}" for c in recall_cols + ["MdR", "MnR"]] + ["Skipped videos"])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in entries:
        metrics = entry["metrics"]
        variants = [("", "")] + ([("dsl_", " + DSL")] if "dsl_t2v_R@1" in metrics else [])
        for prefix, suffix in variants:
            cells = [str(entry["model"]), f"{entry['benchmark']}" + (f" ({entry['config']})" if entry.get("config")
                                                                      else ""),
                     entry["split"], entry["protocol"] + suffix, str(metrics["num_texts"]), str(metrics["num_videos"])]
            for direction in ("t2v", "v2t"):
                cells += [_format_metric(metrics[f"{prefix}{direction}_{c}"]) for c in recall_cols + ["MdR", "MnR"]]
            cells.append(str(metrics["num_skipped_videos"]))
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def update_results_file(output: Path, entry: dict) -> list[dict]:
    """Add `entry` to the JSON results file (replacing one for the same model/benchmark/config/split)."""
    entries = []
    if output.is_file():
        entries = json.loads(output.read_text()).get("results", [])
    same = ("model", "benchmark", "config", "split")
    entries = [e for e in entries if tuple(e.get(k) for k in same) != tuple(entry.get(k) for k in same)]
    entries.append(entry)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"results": entries}, indent=1) + "\n")
    return entries


# ------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", required=True, help="PIG model folder or Hub id (from_pretrained)")
    parser.add_argument("--benchmark", required=True,
                        help="msrvtt, didemo, activitynet, lsmdc, vatex, msvd or synthetic")
    parser.add_argument("--data_dir", required=True, help="annotation folder (synthetic: its cache folder, "
                                                          "generated there when empty)")
    parser.add_argument("--config", default=None, help="benchmark setting, e.g. msrvtt 9k / 7k / full")
    parser.add_argument("--split", default="test")
    parser.add_argument("--video_dir", default=None, help="video folder (default: data_dir)")
    parser.add_argument("--missing_videos", default="error", choices=("error", "drop", "keep"),
                        help="videos absent from video_dir: fail, drop their rows, or keep them and report "
                             "them as skipped")
    parser.add_argument("--output", default="results.json", help="JSON results file (updated, not overwritten); "
                                                                 "the markdown table goes next to it (.md)")
    parser.add_argument("--batch_size", type=int, default=16, help="videos per forward pass")
    parser.add_argument("--text_batch_size", type=int, default=256)
    parser.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1),
                        help="video decoding workers")
    parser.add_argument("--cache_dir", default=str(DEFAULT_CACHE_DIR), help="embedding cache")
    parser.add_argument("--no_cache", action="store_true", help="do not read or write the embedding cache")
    parser.add_argument("--datasets_cache_dir", default=None,
                        help="where `datasets` prepares the split (default: the HF datasets cache)")
    parser.add_argument("--dsl", action="store_true", help="also report dual-softmax (DSL) metrics")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16", "bfloat16"))
    parser.add_argument("--num_frames", type=int, default=None,
                        help="override the processor's frames per video (e.g. 32 for DiDeMo)")
    parser.add_argument("--max_length", type=int, default=None,
                        help="override the processor's text length in tokens (e.g. 64 for paragraphs)")
    return parser.parse_args(argv)




def main(argv=None) -> dict:
    """Run the evaluation described by the command line; returns the results entry written."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dataset = load_split(args.benchmark, args.data_dir, args.split, config=args.config, video_dir=args.video_dir,
                         missing_videos=args.missing_videos, cache_dir=args.datasets_cache_dir)
    model, processor = load_model_and_processor(args.model, args.device, args.dtype)
    for name in ("num_frames", "max_length"):
        if getattr(args, name) is not None:
            if getattr(args, name) < (2 if name == "max_length" else 1):
                raise ValueError(f"--{name} must be a positive number of {name.split('_')[1]}s")
            setattr(processor, name, getattr(args, name))
    result = evaluate_retrieval_detailed(
        model, processor, dataset, batch_size=args.batch_size, cache_dir=None if args.no_cache else args.cache_dir,
        dsl=args.dsl, num_workers=args.num_workers, text_batch_size=args.text_batch_size)
    model_name = str(Path(args.model).resolve()) if os.path.isdir(args.model) else args.model
    entry = {
        "model": model_name,
        "benchmark": args.benchmark,
        "config": args.config,
        "split": args.split,
        "protocol": result.protocol,
        "num_frames": getattr(processor, "num_frames", None),
        "processor": json.loads(processor_signature(processor)),
        "metrics": result.metrics,
        "skipped_videos": result.skipped,
    }
    output = Path(args.output)
    entries = update_results_file(output, entry)
    table = results_file_table(entries)
    output.with_suffix(".md").write_text(table)
    print(table)
    if result.skipped:
        print(f"WARNING: {len(result.skipped)} unreadable videos were skipped (their "
              f"{result.metrics['num_skipped_captions']} captions left the query set); see {output}",
              file=sys.stderr)
    return entry


if __name__ == "__main__":
    main()
