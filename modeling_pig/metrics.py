"""Text-video retrieval metrics in plain numpy, exact under tied scores.

`compute_retrieval_metrics(sim, text_to_video)` takes a `[n_text, n_video]` similarity matrix and the
ground-truth video of each text, and returns R@1/5/10 (percent), median rank (MdR) and mean rank (MnR)
for text-to-video (t2v) and video-to-text (v2t), and how many queries had a tie (`t2v_tied_queries`,
`v2t_tied_queries`: queries whose correct candidate shares its exact score with another candidate).

Candidates and ranks (the CLIP4Clip protocol):

* t2v: every text is a query; the candidates are the videos.
* v2t: every video owns a caption group (all texts whose ground truth it is). The score of group g
  against video j is the best caption of g; a video query ranks the groups. With one caption per video
  this is plain column ranking of the square matrix.
* DSL (dual softmax, off by default): `S * softmax(100 * S, axis=0)` as CLIP-ViP applies it (the
  softmax runs over the texts for each video), reported separately with keys prefixed `dsl_`.

Ties (`tie_policy`). For one query let `greater` candidates score strictly higher than the correct one
and `tied` *other* candidates score exactly the same. Breaking ties uniformly at random puts the correct
candidate at a rank uniform on `greater + 1 .. greater + 1 + tied`. The default, "expected", reports the
expected value of each metric under that random tie-breaking (McSherry & Najork, "Computing information
retrieval performance measures efficiently in the presence of tied scores", ECIR 2008):

* R@K = 100 x mean over queries of P(rank <= K) = clip(K - greater, 0, tied + 1) / (tied + 1);
* MnR = mean over queries of the expected rank `greater + 1 + tied / 2` (exactly the expected mean rank);
* MdR = the median over queries of that expected rank. (It is not the expectation of the median, which has
  no simple closed form.) A constant N x N matrix, what a collapsed model produces, gives chance level in both
  directions: R@K = 100 min(K, N) / N, MnR = MdR = (N + 1) / 2; without ties the values are the plain ones.

Median of an even number of queries: multi-caption t2v (more texts than videos) takes the lower middle
value, as CLIP4Clip's `torch.median` does there; every other case the mean of the two middle values, as
CLIP4Clip's `np.median`.

The other policies, for comparison with published numbers:

* "optimistic": rank = greater + 1 (ties in the query's favour; a constant matrix scores R@1 = 100).
* "pessimistic": rank = greater + tied + 1.
* "clip4clip": CLIP4Clip's code (ArrowLuo/CLIP4Clip `metrics.py`). Square sets and v2t use
  `compute_metrics`: the rank list holds every position of a query's tie block (a query tied with t others
  contributes t + 1 entries) and R@K, median and mean run over that pooled list. Multi-caption t2v uses a
  double argsort; torch's sort leaves the order of ties unspecified, so here ties go by video index (the
  lower index first), then the lower median.
* "pig": the authors' release (lbx73737373/PIG `src/utils/metrics.py`): the tie-block pooling of
  `compute_metrics` / `compute_metrics_multi` in both directions, for single- and multi-caption sets alike
  (np.median). Its multi-caption v2t, which the release does not have, is CLIP4Clip's.
Without ties all five agree, except the multi-caption t2v median of "pig" (np.median, not the lower one).

The matrix is processed in row chunks so that a 60k x 3k float32 matrix (MSR-VTT full, 720 MB) needs
only one `[n_video, n_video]` group-max matrix and one chunk of `chunk_elements` values on top of it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

RECALL_KS = (1, 5, 10)
DSL_TEMPERATURE = 100.0
# Rows per chunk are chosen so that a chunk holds about this many float64 values (64 MB).
DEFAULT_CHUNK_ELEMENTS = 8_000_000
# compute_retrieval_metrics(tie_policy=...): see the module docstring.
TIE_POLICIES = ("expected", "optimistic", "pessimistic", "clip4clip", "pig")
DEFAULT_TIE_POLICY = "expected"
# metrics_from_ranks(tie_policy=...): one direction's rule; "tie_block" pools every position of a tie block
# (CLIP4Clip's compute_metrics), "index_order" breaks ties by candidate index (lower first).
RANK_POLICIES = ("expected", "optimistic", "pessimistic", "tie_block", "index_order")
MEDIANS = ("mean", "lower")

# The `evaluate` wrapper of this module: `evaluate.load(METRIC_MODULE_PATH)` works offline.
METRIC_MODULE_PATH = str(Path(__file__).resolve().parent / "metric" / "pig_retrieval.py")

__all__ = ["compute_retrieval_metrics", "retrieval_rank_counts", "retrieval_ranks", "metrics_from_ranks",
           "RankCounts", "load_evaluate_metric", "METRIC_MODULE_PATH", "RECALL_KS", "TIE_POLICIES",
           "DEFAULT_TIE_POLICY"]


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


@dataclasses.dataclass(frozen=True, eq=False)
class RankCounts:
    """Where the correct candidate of each query stands (one entry per query, int64).

    `greater[i]`: candidates scoring strictly higher; `tied[i]`: *other* candidates scoring exactly the
    same; `tied_before[i]`: how many of those have a lower candidate index (None unless it was asked for).
    Under uniformly random tie-breaking the rank of query i is uniform on `greater[i] + 1 .. greater[i] +
    tied[i] + 1`.
    """

    greater: np.ndarray
    tied: np.ndarray
    tied_before: np.ndarray | None = None

    @classmethod
    def from_ranks(cls, ranks) -> "RankCounts":
        """Counts of definite (tie-free) 1-based ranks."""
        ranks = np.asarray(ranks)
        if ranks.ndim != 1 or ranks.size == 0:
            raise ValueError(f"ranks must be a non-empty 1-D array, got shape {ranks.shape}")
        if not np.all(np.isfinite(ranks)) or np.any(ranks < 1) or np.any(ranks != np.round(ranks)):
            raise ValueError(f"ranks must be definite 1-based ranks (whole numbers >= 1), got "
                             f"{ranks[:5].tolist()}...; for tied scores pass the RankCounts of "
                             f"retrieval_rank_counts")
        greater = ranks.astype(np.int64) - 1
        zeros = np.zeros_like(greater)
        return cls(greater, zeros, zeros)

    @property
    def num_tied_queries(self) -> int:
        """Queries whose correct candidate shares its score with at least one other candidate."""
        return int(np.count_nonzero(self.tied))

    def ranks(self, tie_policy: str = DEFAULT_TIE_POLICY) -> np.ndarray:
        """Per-query ranks: expected (float64), optimistic, pessimistic or index_order (int64)."""
        if tie_policy == "expected":
            return self.greater + 1 + self.tied / 2
        if tie_policy == "optimistic":
            return self.greater + 1
        if tie_policy == "pessimistic":
            return self.greater + self.tied + 1
        if tie_policy == "index_order":
            if self.tied_before is None:
                raise ValueError("index_order ranks need tied_before counts: pass tied_before=True to "
                                 "retrieval_rank_counts")
            return self.greater + self.tied_before + 1
        raise ValueError(f"tie_policy {tie_policy!r} has no per-query rank; choose one of 'expected', "
                         f"'optimistic', 'pessimistic', 'index_order'")


def _check_choice(name: str, value, choices: Sequence[str]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def retrieval_rank_counts(sim, text_to_video: Sequence[int] | None = None, dsl: bool = False,
                          chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, tied_before: bool = False
                          ) -> tuple[RankCounts, RankCounts]:
    """Greater and tied counts of every text query (t2v) and every video query (v2t).

    Args:
        sim: `[n_text, n_video]` similarity scores (numpy array or CPU tensor).
        text_to_video: ground-truth video index of each text; None means a square matrix with the
            ground truth on the diagonal.
        dsl: apply the dual softmax `S * softmax(100 * S, axis=0)` before ranking.
        chunk_elements: about how many values one row chunk holds (memory knob).
        tied_before: also count the tied candidates with a lower index (for the "index_order" rule).

    Returns:
        `(t2v [n_text], v2t [n_video])` as `RankCounts`; ties are exact equality of scores.
    """
    sim = _as_similarity_matrix(sim)
    n_text, n_video = sim.shape
    gt = _as_ground_truth(text_to_video, n_text, n_video)
    rows_per_chunk = _rows_per_chunk(n_video, chunk_elements)
    transform = _dsl_transform(sim, rows_per_chunk) if dsl else None
    columns = np.arange(n_video)

    # Visit texts grouped by their video so that each chunk covers whole caption groups and the group
    # max is a reduceat over contiguous rows.
    order = np.argsort(gt, kind="stable")
    group_starts = np.searchsorted(gt[order], np.arange(n_video + 1))  # [n_video + 1], last = n_text
    group_max = None  # [n_group = n_video, n_video]: best caption of group g against video j
    t2v = {key: np.zeros(n_text, dtype=np.int64) for key in ("greater", "tied", "tied_before")}
    g0 = 0
    while g0 < n_video:
        g1 = int(np.searchsorted(group_starts, group_starts[g0] + rows_per_chunk, side="right")) - 1
        g1 = min(max(g1, g0 + 1), n_video)
        rows = order[group_starts[g0]:group_starts[g1]]
        block = sim[rows]  # [rows, n_video]
        _check_finite(block, rows)
        if transform is not None:
            block = transform(block)
        gt_scores = block[np.arange(len(rows)), gt[rows]][:, None]  # [rows, 1]
        t2v["greater"][rows] = (block > gt_scores).sum(axis=1)
        equal = block == gt_scores
        t2v["tied"][rows] = equal.sum(axis=1) - 1  # the correct video itself is not a tie
        if tied_before:
            t2v["tied_before"][rows] = (equal & (columns[None, :] < gt[rows][:, None])).sum(axis=1)
        chunk_max = np.maximum.reduceat(block, group_starts[g0:g1] - group_starts[g0], axis=0)
        if group_max is None:
            group_max = np.empty((n_video, n_video), dtype=block.dtype)
        group_max[g0:g1] = chunk_max  # [g1 - g0, n_video]
        g0 = g1

    own = group_max[columns, columns][None, :]  # [1, n_video]: own group's score per video
    v2t = {key: np.zeros(n_video, dtype=np.int64) for key in ("greater", "tied", "tied_before")}
    for start in range(0, n_video, rows_per_chunk):
        groups = group_max[start:start + rows_per_chunk]  # [chunk groups, n_video]
        v2t["greater"] += (groups > own).sum(axis=0)
        equal = groups == own
        v2t["tied"] += equal.sum(axis=0)
        if tied_before:
            v2t["tied_before"] += (equal & (np.arange(start, start + len(groups))[:, None] < columns)).sum(axis=0)
    v2t["tied"] -= 1  # the video's own group
    if not tied_before:
        t2v["tied_before"] = v2t["tied_before"] = None
    return RankCounts(**t2v), RankCounts(**v2t)


def retrieval_ranks(sim, text_to_video: Sequence[int] | None = None, dsl: bool = False,
                    chunk_elements: int = DEFAULT_CHUNK_ELEMENTS, tie_policy: str = DEFAULT_TIE_POLICY
                    ) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of every text query (t2v) and every video query (v2t).

    `tie_policy`: "expected" (float64 expected ranks under random tie-breaking), "optimistic",
    "pessimistic" or "index_order" (int64). For R@K and MdR use `compute_retrieval_metrics`: the expected
    R@K is not the share of expected ranks <= K.
    """
    _check_choice("tie_policy", tie_policy, ("expected", "optimistic", "pessimistic", "index_order"))
    t2v, v2t = retrieval_rank_counts(sim, text_to_video, dsl=dsl, chunk_elements=chunk_elements,
                                     tied_before=tie_policy == "index_order")
    return t2v.ranks(tie_policy), v2t.ranks(tie_policy)


def _median(values: np.ndarray, median: str) -> float:
    if median == "lower":  # torch.median: the lower of the two middle values
        return float(np.partition(values, (values.size - 1) // 2)[(values.size - 1) // 2])
    return float(np.median(values))


def _tie_block_metrics(counts: RankCounts, prefix: str) -> dict[str, float]:
    """CLIP4Clip's `compute_metrics`: a query tied with t others adds all t + 1 positions of its block to
    one pooled list of ranks, computed here from the block bounds without building the list."""
    start, width = counts.greater, counts.tied + 1  # 0-based block start, block size
    total = int(width.sum())
    out = {f"{prefix}_R@{k}": float(100.0 * (np.clip(k - start, 0, width).sum() / total)) for k in RECALL_KS}
    # cdf[x] = pooled positions <= x (0-based), from the coverage of each position by the blocks
    size = int((start + width).max())
    coverage = np.cumsum(np.bincount(start, minlength=size + 1) - np.bincount(start + width, minlength=size + 1))
    cdf = np.cumsum(coverage[:size])
    lower = np.searchsorted(cdf, (total - 1) // 2 + 1)  # the ((total - 1) // 2)-th smallest position
    upper = np.searchsorted(cdf, total // 2 + 1)
    out[f"{prefix}_MdR"] = float((lower + upper) / 2 + 1)
    out[f"{prefix}_MnR"] = float((width * (start + 1 + counts.tied / 2)).sum() / total)
    return out


def metrics_from_ranks(ranks, prefix: str, tie_policy: str = DEFAULT_TIE_POLICY,
                       median: str = "mean") -> dict[str, float]:
    """R@K (percent), MdR, MnR and the tied-query count of one direction.

    Args:
        ranks: `RankCounts`, or a 1-D array of definite 1-based ranks (no ties).
        prefix: key prefix, e.g. "t2v": keys `{prefix}_R@1`, ..., `{prefix}_MnR`, `{prefix}_tied_queries`.
        tie_policy: one of `RANK_POLICIES` (see the module docstring).
        median: "mean" (np.median) or "lower" (torch.median) for an even number of ranks.
    """
    _check_choice("tie_policy", tie_policy, RANK_POLICIES)
    _check_choice("median", median, MEDIANS)
    counts = ranks if isinstance(ranks, RankCounts) else RankCounts.from_ranks(ranks)
    if counts.greater.size == 0:
        raise ValueError("ranks must hold at least one query")
    if tie_policy == "tie_block":
        out = _tie_block_metrics(counts, prefix)
    else:
        per_query = counts.ranks(tie_policy)
        if tie_policy == "expected":  # P(rank <= k) for a rank uniform on greater + 1 .. greater + tied + 1
            width = counts.tied + 1
            hits = {k: np.clip(k - counts.greater, 0, width) / width for k in RECALL_KS}
        else:
            hits = {k: per_query <= k for k in RECALL_KS}
        out = {f"{prefix}_R@{k}": float(100.0 * np.mean(hit)) for k, hit in hits.items()}
        out[f"{prefix}_MdR"] = _median(per_query, median)
        out[f"{prefix}_MnR"] = float(np.mean(per_query))
    out[f"{prefix}_tied_queries"] = counts.num_tied_queries
    return out


def _direction_rules(tie_policy: str, multi_caption: bool) -> dict[str, tuple[str, str]]:
    """(rank policy, median) per direction for a named convention."""
    if tie_policy == "clip4clip":
        t2v = ("index_order", "lower") if multi_caption else ("tie_block", "mean")
        return {"t2v": t2v, "v2t": ("tie_block", "mean")}
    if tie_policy == "pig":
        return {"t2v": ("tie_block", "mean"), "v2t": ("tie_block", "mean")}
    return {"t2v": (tie_policy, "lower" if multi_caption else "mean"), "v2t": (tie_policy, "mean")}


def compute_retrieval_metrics(sim, text_to_video: Sequence[int] | None = None, dsl: bool = False,
                              chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                              tie_policy: str = DEFAULT_TIE_POLICY) -> dict[str, float]:
    """Text-to-video and video-to-text retrieval metrics of a similarity matrix.

    Args:
        sim: `[n_text, n_video]` scores, `sim[i, j]` = similarity of text i and video j.
        text_to_video: ground-truth video index of each text (multi-caption sets: several texts
            share a video). None: square matrix with the ground truth on the diagonal.
        dsl: also report the dual-softmax variant, under keys prefixed `dsl_`.
        chunk_elements: about how many values one row chunk holds (memory knob).
        tie_policy: "expected" (default: expected values under random tie-breaking), "optimistic",
            "pessimistic", "clip4clip" or "pig" (the published codes); see the module docstring.

    Returns:
        dict with `t2v_R@1, t2v_R@5, t2v_R@10, t2v_MdR, t2v_MnR, t2v_tied_queries, v2t_R@1, ...,
        v2t_tied_queries` (R@K in percent), `num_texts`, `num_videos`, and the same metric keys prefixed
        `dsl_` when `dsl=True`.

    Raises:
        ValueError: wrong shape, non-finite scores, out-of-range indices, a video with no text, or an
            unknown tie_policy.
    """
    _check_choice("tie_policy", tie_policy, TIE_POLICIES)
    metrics: dict[str, float] = {}
    shape = np.shape(sim)
    rules = _direction_rules(tie_policy, multi_caption=len(shape) == 2 and shape[0] > shape[1])
    need_index = any(rule == "index_order" for rule, _ in rules.values())
    variants = (("", False), ("dsl_", True)) if dsl else (("", False),)
    for prefix, use_dsl in variants:
        t2v, v2t = retrieval_rank_counts(sim, text_to_video, dsl=use_dsl, chunk_elements=chunk_elements,
                                         tied_before=need_index)
        for direction, counts in (("t2v", t2v), ("v2t", v2t)):
            rule, median = rules[direction]
            metrics.update(metrics_from_ranks(counts, f"{prefix}{direction}", tie_policy=rule, median=median))
    metrics["num_texts"] = int(t2v.greater.shape[0])
    metrics["num_videos"] = int(v2t.greater.shape[0])
    return metrics


def load_evaluate_metric(**kwargs):
    """`evaluate.load` of the bundled metric module (offline; kwargs go to `evaluate.load`)."""
    import evaluate

    return evaluate.load(METRIC_MODULE_PATH, **kwargs)
