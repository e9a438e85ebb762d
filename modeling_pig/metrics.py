"""Text-video retrieval metrics in plain numpy (CLIP4Clip protocol).

`compute_retrieval_metrics(sim, text_to_video)` takes a `[n_text, n_video]` similarity matrix and the
ground-truth video of each text, and returns R@1/5/10 (percent), median rank (MdR) and mean rank (MnR)
for text-to-video (t2v) and video-to-text (v2t):

* t2v: the rank of text i is 1 + the number of videos that score strictly higher than its own video,
  so a tie counts in the query's favour (the reference `np.where(sorted - diag == 0)` trick of
  CLIP4Clip double-counts ties instead; see docs/datasets.md §1.4).
* v2t: every video owns a caption group (all texts whose ground truth it is). The score of group g
  against video j is the best caption of g; the rank of video j is 1 + the number of *other* groups
  that score strictly higher against j than j's own group. With one caption per video this is plain
  column ranking of the square matrix.
* DSL (dual softmax, off by default): `S * softmax(100 * S, axis=0)` as CLIP-ViP applies it (the
  softmax runs over the texts for each video), reported separately with keys prefixed `dsl_`.

The matrix is processed in row chunks so that a 60k x 3k float32 matrix (MSR-VTT full, 720 MB) needs
only one `[n_video, n_video]` group-max matrix and one chunk of `chunk_elements` values on top of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

RECALL_KS = (1, 5, 10)
DSL_TEMPERATURE = 100.0
# Rows per chunk are chosen so that a chunk holds about this many float64 values (64 MB).
DEFAULT_CHUNK_ELEMENTS = 8_000_000

# The `evaluate` wrapper of this module: `evaluate.load(METRIC_MODULE_PATH)` works offline.
METRIC_MODULE_PATH = str(Path(__file__).resolve().parent / "metric" / "pig_retrieval.py")

__all__ = ["compute_retrieval_metrics", "retrieval_ranks", "metrics_from_ranks", "load_evaluate_metric",
           "METRIC_MODULE_PATH", "RECALL_KS"]


def _as_similarity_matrix(sim) -> np.ndarray:
    if hasattr(sim, "detach"):  # a torch tensor: move to CPU numpy without importing torch here
        sim = sim.detach().cpu()
        if str(sim.dtype) in ("torch.float16", "torch.bfloat16"):
            sim = sim.float()
        sim = sim.numpy()
    sim = np.asarray(sim)
    if sim.ndim != 2:
        raise ValueError(f"sim must be a 2-D [n_text, n_video] matrix, got shape {sim.shape}")
    if sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"sim must have at least one text and one video, got shape {sim.shape}")
    if not np.issubdtype(sim.dtype, np.floating):
        if np.issubdtype(sim.dtype, np.integer) or sim.dtype == bool:
            sim = sim.astype(np.float64)
        else:
            raise TypeError(f"sim must hold real numbers, got dtype {sim.dtype}")
    if sim.dtype == np.float16:
        sim = sim.astype(np.float32)
    return sim


def _as_ground_truth(text_to_video, n_text: int, n_video: int) -> np.ndarray:
    if text_to_video is None:
        if n_text != n_video:
            raise ValueError(
                f"text_to_video=None means one text per video with the ground truth on the diagonal, "
                f"which needs a square sim; got shape ({n_text}, {n_video}). Pass text_to_video "
                f"(the ground-truth video index of each text) for multi-caption sets.")
        return np.arange(n_video)
    gt = np.asarray(text_to_video)
    if gt.ndim != 1 or gt.shape[0] != n_text:
        raise ValueError(f"text_to_video must be a 1-D list with one video index per text "
                         f"({n_text} texts), got shape {gt.shape}")
    if not (np.issubdtype(gt.dtype, np.integer) or gt.dtype == bool):
        if np.issubdtype(gt.dtype, np.floating) and np.all(np.isfinite(gt)) and np.all(gt == np.round(gt)):
            gt = gt.astype(np.int64)
        else:
            raise TypeError(f"text_to_video must hold integer video indices, got dtype {gt.dtype}")
    gt = gt.astype(np.int64)
    bad = np.flatnonzero((gt < 0) | (gt >= n_video))
    if bad.size:
        raise ValueError(f"text_to_video[{bad[0]}] = {gt[bad[0]]} is not a video index in [0, {n_video}) "
                         f"({bad.size} texts out of range)")
    captions_per_video = np.bincount(gt, minlength=n_video)
    orphans = np.flatnonzero(captions_per_video == 0)
    if orphans.size:
        raise ValueError(
            f"{orphans.size} of {n_video} videos have no caption in text_to_video (first: video "
            f"{orphans[0]}); every video needs at least one text for video-to-text retrieval. Drop those "
            f"columns from sim first.")
    return gt


def _check_finite(block: np.ndarray, rows: np.ndarray) -> None:
    """Raise if `block` (the rows `rows` of sim) holds NaN or inf."""
    finite = np.isfinite(block)
    if not finite.all():
        i, j = np.argwhere(~finite)[0]
        raise ValueError(f"sim contains a non-finite value ({block[i, j]}) at row {rows[i]}, "
                         f"column {j}; similarity scores must be finite numbers")


def _rows_per_chunk(n_video: int, chunk_elements: int) -> int:
    return max(1, chunk_elements // max(n_video, 1))


def _dsl_transform(sim: np.ndarray, rows_per_chunk: int) -> Callable[[np.ndarray], np.ndarray]:
    """Column statistics of softmax(100 * S, axis=0), computed chunk by chunk; returns the row transform."""
    n_text, n_video = sim.shape
    col_max = np.full(n_video, -np.inf)
    for start in range(0, n_text, rows_per_chunk):
        block = sim[start:start + rows_per_chunk]
        _check_finite(block, np.arange(start, start + block.shape[0]))
        np.maximum(col_max, block.max(axis=0), out=col_max)
    col_sum = np.zeros(n_video)
    for start in range(0, n_text, rows_per_chunk):
        block = sim[start:start + rows_per_chunk].astype(np.float64)
        col_sum += np.exp(DSL_TEMPERATURE * (block - col_max)).sum(axis=0)

    def transform(block: np.ndarray) -> np.ndarray:
        block = block.astype(np.float64)
        return block * (np.exp(DSL_TEMPERATURE * (block - col_max)) / col_sum)

    return transform


def retrieval_ranks(sim, text_to_video: Sequence[int] | None = None, dsl: bool = False,
                    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of every text query (t2v) and every video query (v2t).

    Args:
        sim: `[n_text, n_video]` similarity scores (numpy array or CPU tensor).
        text_to_video: ground-truth video index of each text; None means a square matrix with the
            ground truth on the diagonal.
        dsl: apply the dual softmax `S * softmax(100 * S, axis=0)` before ranking.
        chunk_elements: about how many values one row chunk holds (memory knob).

    Returns:
        `(t2v_ranks [n_text], v2t_ranks [n_video])`, int64, ties counted in the query's favour.
    """
    sim = _as_similarity_matrix(sim)
    n_text, n_video = sim.shape
    gt = _as_ground_truth(text_to_video, n_text, n_video)
    rows_per_chunk = _rows_per_chunk(n_video, chunk_elements)
    transform = _dsl_transform(sim, rows_per_chunk) if dsl else None

    # Visit texts grouped by their video so that each chunk covers whole caption groups and the group
    # max is a reduceat over contiguous rows.
    order = np.argsort(gt, kind="stable")
    group_starts = np.searchsorted(gt[order], np.arange(n_video + 1))  # [n_video + 1], last = n_text
    group_max = None  # [n_group = n_video, n_video]: best caption of group g against video j
    t2v_ranks = np.empty(n_text, dtype=np.int64)
    g0 = 0
    while g0 < n_video:
        g1 = int(np.searchsorted(group_starts, group_starts[g0] + rows_per_chunk, side="right")) - 1
        g1 = min(max(g1, g0 + 1), n_video)
        rows = order[group_starts[g0]:group_starts[g1]]
        block = sim[rows]  # [rows, n_video]
        _check_finite(block, rows)
        if transform is not None:
            block = transform(block)
        gt_scores = block[np.arange(len(rows)), gt[rows]]  # [rows]
        t2v_ranks[rows] = 1 + (block > gt_scores[:, None]).sum(axis=1)
        chunk_max = np.maximum.reduceat(block, group_starts[g0:g1] - group_starts[g0], axis=0)
        if group_max is None:
            group_max = np.empty((n_video, n_video), dtype=block.dtype)
        group_max[g0:g1] = chunk_max  # [g1 - g0, n_video]
        g0 = g1

    own = group_max[np.arange(n_video), np.arange(n_video)]  # [n_video]: own group's score per video
    v2t_ranks = np.ones(n_video, dtype=np.int64)
    group_chunk = _rows_per_chunk(n_video, chunk_elements)
    for start in range(0, n_video, group_chunk):
        v2t_ranks += (group_max[start:start + group_chunk] > own[None, :]).sum(axis=0)
    return t2v_ranks, v2t_ranks


def metrics_from_ranks(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    """R@K (percent), MdR and MnR from 1-based ranks; keys `{prefix}_R@1`, ..., `{prefix}_MnR`."""
    ranks = np.asarray(ranks)
    if ranks.ndim != 1 or ranks.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {ranks.shape}")
    out = {f"{prefix}_R@{k}": float(100.0 * np.mean(ranks <= k)) for k in RECALL_KS}
    out[f"{prefix}_MdR"] = float(np.median(ranks))
    out[f"{prefix}_MnR"] = float(np.mean(ranks))
    return out


def compute_retrieval_metrics(sim, text_to_video: Sequence[int] | None = None, dsl: bool = False,
                              chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> dict[str, float]:
    """Text-to-video and video-to-text retrieval metrics of a similarity matrix.

    Args:
        sim: `[n_text, n_video]` scores, `sim[i, j]` = similarity of text i and video j.
        text_to_video: ground-truth video index of each text (multi-caption sets: several texts
            share a video). None: square matrix with the ground truth on the diagonal.
        dsl: also report the dual-softmax variant, under keys prefixed `dsl_`.
        chunk_elements: about how many values one row chunk holds (memory knob).

    Returns:
        dict with `t2v_R@1, t2v_R@5, t2v_R@10, t2v_MdR, t2v_MnR, v2t_R@1, ..., v2t_MnR` (R@K in
        percent), `num_texts`, `num_videos`, and the same metric keys prefixed `dsl_` when `dsl=True`.

    Raises:
        ValueError: wrong shape, non-finite scores, out-of-range indices, or a video with no text.
    """
    metrics: dict[str, float] = {}
    variants = (("", False), ("dsl_", True)) if dsl else (("", False),)
    for prefix, use_dsl in variants:
        t2v, v2t = retrieval_ranks(sim, text_to_video, dsl=use_dsl, chunk_elements=chunk_elements)
        metrics.update(metrics_from_ranks(t2v, f"{prefix}t2v"))
        metrics.update(metrics_from_ranks(v2t, f"{prefix}v2t"))
    metrics["num_texts"] = int(t2v.shape[0])
    metrics["num_videos"] = int(v2t.shape[0])
    return metrics


def load_evaluate_metric(**kwargs):
    """`evaluate.load` of the bundled metric module (offline; kwargs go to `evaluate.load`)."""
    import evaluate

    return evaluate.load(METRIC_MODULE_PATH, **kwargs)
