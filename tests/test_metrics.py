"""Retrieval metrics: hand-computed cases, tie-aware expectations (checked by enumerating tie-breakings),
the named published conventions, multi-caption groups, DSL, validation, evaluate.load."""

import itertools
import re

import numpy as np
import pytest

from modeling_pig.metrics import (
    METRIC_MODULE_PATH,
    RankCounts,
    compute_retrieval_metrics,
    load_evaluate_metric,
    metrics_from_ranks,
    retrieval_rank_counts,
    retrieval_ranks,
)

METRIC_NAMES = ("R@1", "R@5", "R@10", "MdR", "MnR")


# ------------------------------------------------------------------------------------------------------
# Independent references (loops, no code shared with modeling_pig.metrics)


def naive_group_matrix(sim, text_to_video):
    """[n_video groups, n_video]: best caption of each video's caption group against every video."""
    n_video = sim.shape[1]
    group = np.full((n_video, n_video), -np.inf)
    for c in range(sim.shape[0]):
        group[text_to_video[c]] = np.maximum(group[text_to_video[c]], sim[c])
    return group


def naive_queries(sim, text_to_video):
    """(scores of each query's candidates, index of its correct candidate) for t2v and v2t."""
    group = naive_group_matrix(sim, text_to_video)
    t2v = [(sim[i], int(text_to_video[i])) for i in range(sim.shape[0])]
    v2t = [(group[:, j], j) for j in range(sim.shape[1])]
    return t2v, v2t


def naive_counts(scores, correct):
    greater = sum(1 for s in scores if s > scores[correct])
    tied = sum(1 for j, s in enumerate(scores) if s == scores[correct] and j != correct)
    tied_before = sum(1 for j, s in enumerate(scores) if s == scores[correct] and j < correct)
    return greater, tied, tied_before


def tie_breaking_ranks(scores, correct):
    """Rank of the correct candidate in every total order consistent with the scores (all permutations of
    the candidates that sort the scores descending): each is one equally likely random tie-breaking."""
    ranks = []
    for order in itertools.permutations(range(len(scores))):
        ordered = [scores[j] for j in order]
        if all(a >= b for a, b in zip(ordered, ordered[1:])):
            ranks.append(order.index(correct) + 1)
    return ranks


def enumerated_expectation(queries, median=np.median):
    """Expected R@K and MnR over all joint tie-breakings of the queries (each query's orders independent
    and equally likely); MdR = the median of the per-query expected ranks."""
    per_query = [tie_breaking_ranks(scores, correct) for scores, correct in queries]
    # each query's distinct ranks with their probabilities, then every joint outcome with its probability
    distributions = [{r: ranks.count(r) / len(ranks) for r in set(ranks)} for ranks in per_query]
    out = {f"R@{k}": 0.0 for k in (1, 5, 10)}
    out["MnR"] = 0.0
    for joint in itertools.product(*[list(d.items()) for d in distributions]):
        probability = np.prod([p for _, p in joint])
        ranks = [r for r, _ in joint]
        for k in (1, 5, 10):
            out[f"R@{k}"] += probability * 100 * np.mean([r <= k for r in ranks])
        out["MnR"] += probability * np.mean(ranks)
    out["MdR"] = median([np.mean(ranks) for ranks in per_query])
    return out


def lower_median(values):
    return sorted(values)[(len(values) - 1) // 2]


def tie_block_reference(queries):
    """CLIP4Clip's compute_metrics, restated: every position (0-based, in the descending sort of the row)
    that holds the correct candidate's score joins one pooled list."""
    pooled = []
    for scores, correct in queries:
        ordered = sorted(scores, reverse=True)
        pooled += [p for p, s in enumerate(ordered) if s == scores[correct]]
    pooled = np.array(pooled)
    out = {f"R@{k}": 100 * np.mean(pooled < k) for k in (1, 5, 10)}
    out["MdR"] = np.median(pooled) + 1
    out["MnR"] = np.mean(pooled) + 1
    return out


def index_order_reference(queries, median=lower_median):
    """Ranks from a stable descending sort (ties: lower candidate index first)."""
    ranks = []
    for scores, correct in queries:
        order = sorted(range(len(scores)), key=lambda j: -scores[j])  # sorted() is stable
        ranks.append(order.index(correct) + 1)
    ranks = np.array(ranks)
    out = {f"R@{k}": 100 * np.mean(ranks <= k) for k in (1, 5, 10)}
    out["MdR"] = median(list(ranks))
    out["MnR"] = np.mean(ranks)
    return out


def assert_direction(metrics, prefix, expected):
    for name, value in expected.items():
        assert metrics[f"{prefix}_{name}"] == pytest.approx(value, abs=1e-9), (prefix, name)


def matrix_with_counts(rows):
    """A square matrix whose text i has its own video beaten by `greater` and tied with `tied` others."""
    n = max(g + t + 1 for g, t in rows)
    sim = np.zeros((len(rows), n))
    for i, (greater, tied) in enumerate(rows):
        others = [j for j in range(n) if j != i]
        sim[i, i] = 0.5
        sim[i, others[:greater]] = 1.0
        sim[i, others[greater:greater + tied]] = 0.5
    return sim


# ------------------------------------------------------------------------------------------------------
# Tie-free values (unchanged from the optimistic protocol)


def test_square_matrix_hand_computed():
    sim = np.array([[0.9, 0.1, 0.3],
                    [0.8, 0.5, 0.2],   # own video 0.5, video 0 scores 0.8 -> rank 2
                    [0.1, 0.7, 0.6]])  # own video 0.6, video 1 scores 0.7 -> rank 2
    m = compute_retrieval_metrics(sim)
    assert m["t2v_R@1"] == pytest.approx(100 / 3)
    assert m["t2v_R@5"] == 100.0 and m["t2v_R@10"] == 100.0
    assert m["t2v_MdR"] == 2.0 and m["t2v_MnR"] == pytest.approx(5 / 3)
    # columns: video 1 is beaten by text 2 (0.7 > 0.5); videos 0 and 2 are first
    assert m["v2t_R@1"] == pytest.approx(200 / 3)
    assert m["v2t_MdR"] == 1.0 and m["v2t_MnR"] == pytest.approx(4 / 3)
    assert m["num_texts"] == 3 and m["num_videos"] == 3
    assert m["t2v_tied_queries"] == 0 and m["v2t_tied_queries"] == 0
    assert not any(key.startswith("dsl_") for key in m)


def test_recall_at_k_boundaries():
    # Text i's own video is beaten by exactly ranks[i] - 1 videos.
    ranks = [1, 5, 6, 10, 11, 12, 2, 3, 4, 7, 8, 9]
    n = len(ranks)
    sim = -np.ones((n, n))
    for i, rank in enumerate(ranks):
        sim[i, i] = 0.0
        others = [j for j in range(n) if j != i][: rank - 1]
        sim[i, others] = 1.0
    t2v, _ = retrieval_ranks(sim)
    assert t2v.tolist() == ranks
    m = compute_retrieval_metrics(sim)
    assert m["t2v_R@1"] == pytest.approx(100 * 1 / 12)
    assert m["t2v_R@5"] == pytest.approx(100 * 5 / 12)
    assert m["t2v_R@10"] == pytest.approx(100 * 10 / 12)
    assert m["t2v_MdR"] == 6.5 and m["t2v_MnR"] == 6.5


@pytest.mark.parametrize("policy", ["expected", "optimistic", "pessimistic", "clip4clip", "pig"])
def test_tie_free_square_matrix_gives_the_old_values_under_every_policy(policy):
    rng = np.random.default_rng(3)
    sim = rng.standard_normal((14, 14))  # continuous scores: no ties
    t2v_q, v2t_q = naive_queries(sim, np.arange(14))
    m = compute_retrieval_metrics(sim, tie_policy=policy, dsl=True)
    for prefix, queries in (("t2v", t2v_q), ("v2t", v2t_q)):
        ranks = np.array([1 + naive_counts(s, c)[0] for s, c in queries])
        old = {f"R@{k}": 100 * np.mean(ranks <= k) for k in (1, 5, 10)}
        old.update(MdR=np.median(ranks), MnR=np.mean(ranks))
        for name, value in old.items():
            assert m[f"{prefix}_{name}"] == value  # exactly, not approximately
        assert m[f"{prefix}_tied_queries"] == 0 and m[f"dsl_{prefix}_tied_queries"] == 0


@pytest.mark.parametrize("policy", ["expected", "optimistic", "pessimistic", "clip4clip", "pig"])
def test_tie_free_multi_caption_gives_the_old_values_except_the_t2v_median(policy):
    rng = np.random.default_rng(4)
    text_to_video = rng.permutation(np.concatenate([np.arange(6), rng.integers(0, 6, 8)]))  # 14 texts
    sim = rng.standard_normal((14, 6))
    t2v_q, v2t_q = naive_queries(sim, text_to_video)
    m = compute_retrieval_metrics(sim, text_to_video, tie_policy=policy)
    for prefix, queries in (("t2v", t2v_q), ("v2t", v2t_q)):
        ranks = np.array([1 + naive_counts(s, c)[0] for s, c in queries])
        for k in (1, 5, 10):
            assert m[f"{prefix}_R@{k}"] == 100 * np.mean(ranks <= k)
        assert m[f"{prefix}_MnR"] == np.mean(ranks)
        # CLIP4Clip: torch.median (lower middle) for multi-caption t2v; the authors' code: np.median
        lower = prefix == "t2v" and policy != "pig"
        assert m[f"{prefix}_MdR"] == (lower_median(list(ranks)) if lower else np.median(ranks))


def test_multi_caption_t2v_median_is_the_lower_middle_value():
    # 4 captions of 2 videos with t2v ranks 1, 1, 2, 2: np.median 1.5, torch.median 1
    sim = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.6], [0.1, 0.0]])
    text_to_video = [0, 0, 1, 1]
    assert retrieval_ranks(sim, text_to_video)[0].tolist() == [1, 1, 2, 2]
    assert compute_retrieval_metrics(sim, text_to_video)["t2v_MdR"] == 1.0
    assert compute_retrieval_metrics(sim, text_to_video, tie_policy="pig")["t2v_MdR"] == 1.5
    # a square set with the same ranks keeps np.median
    square = np.array([[0.9, 0.1, 0.0, 0.0], [0.0, 0.9, 0.0, 0.0], [0.0, 0.9, 0.5, 0.0], [0.0, 0.0, 0.9, 0.5]])
    assert compute_retrieval_metrics(square)["t2v_MdR"] == 1.5


# ------------------------------------------------------------------------------------------------------
# Ties: chance level for a collapsed model, enumerated expectations


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 12])
def test_constant_square_matrix_gives_chance_in_both_directions(n):
    m = compute_retrieval_metrics(np.full((n, n), 0.3, dtype=np.float32), dsl=True)
    for prefix in ("t2v", "v2t", "dsl_t2v", "dsl_v2t"):
        for k in (1, 5, 10):
            assert m[f"{prefix}_R@{k}"] == pytest.approx(100 * min(k, n) / n)
        assert m[f"{prefix}_MnR"] == pytest.approx((n + 1) / 2)
        assert m[f"{prefix}_MdR"] == pytest.approx((n + 1) / 2)
        assert m[f"{prefix}_tied_queries"] == (n if n > 1 else 0)


@pytest.mark.parametrize("n_video, captions", [(3, 2), (5, 3), (12, 2)])
def test_constant_multi_caption_matrix_gives_chance_in_both_directions(n_video, captions):
    text_to_video = np.random.default_rng(n_video).permutation(np.repeat(np.arange(n_video), captions))
    sim = np.zeros((n_video * captions, n_video))
    m = compute_retrieval_metrics(sim, text_to_video, dsl=True)
    for prefix in ("t2v", "v2t", "dsl_t2v", "dsl_v2t"):
        assert m[f"{prefix}_R@1"] == pytest.approx(100 / n_video)
        assert m[f"{prefix}_R@5"] == pytest.approx(100 * min(5, n_video) / n_video)
        assert m[f"{prefix}_R@10"] == pytest.approx(100 * min(10, n_video) / n_video)
        assert m[f"{prefix}_MnR"] == pytest.approx((n_video + 1) / 2)
        assert m[f"{prefix}_MdR"] == pytest.approx((n_video + 1) / 2)
    assert m["t2v_tied_queries"] == n_video * captions and m["v2t_tied_queries"] == n_video


def test_a_collapsed_model_no_longer_beats_a_good_one():
    good = np.eye(8) + (0.01 * np.arange(64).reshape(8, 8)) % 0.05  # right video first, no two scores equal
    collapsed = np.ones((8, 8))
    assert compute_retrieval_metrics(collapsed)["t2v_R@1"] < compute_retrieval_metrics(good)["t2v_R@1"]
    assert compute_retrieval_metrics(collapsed, tie_policy="optimistic")["t2v_R@1"] == 100.0


PARTIAL_TIES = [
    np.array([[1, 1, 0],
              [0, 1, 1],
              [1, 0, 0]], dtype=float),
    np.array([[2, 2, 2, 1],
              [2, 1, 2, 1],
              [0, 0, 1, 1],
              [1, 0, 0, 1]], dtype=float),
    np.array([[0.5, 0.5, 0.5, 0.5, 0.5],
              [0.9, 0.5, 0.5, 0.1, 0.5],
              [0.1, 0.2, 0.3, 0.3, 0.3],
              [0.4, 0.4, 0.4, 0.4, 0.0],
              [0.7, 0.7, 0.6, 0.6, 0.6]], dtype=np.float32),
]


@pytest.mark.parametrize("sim", PARTIAL_TIES)
def test_partial_ties_match_the_enumerated_expectation_square(sim):
    t2v_q, v2t_q = naive_queries(sim, np.arange(sim.shape[0]))
    m = compute_retrieval_metrics(sim)
    assert_direction(m, "t2v", enumerated_expectation(t2v_q))
    assert_direction(m, "v2t", enumerated_expectation(v2t_q))
    assert m["t2v_tied_queries"] == sum(naive_counts(s, c)[1] > 0 for s, c in t2v_q)
    assert m["v2t_tied_queries"] == sum(naive_counts(s, c)[1] > 0 for s, c in v2t_q)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_partial_ties_match_the_enumerated_expectation_multi_caption(seed):
    rng = np.random.default_rng(seed)
    text_to_video = rng.permutation([0, 0, 1, 1, 1, 2, 3])
    sim = rng.integers(0, 3, (7, 4)).astype(float)
    t2v_q, v2t_q = naive_queries(sim, text_to_video)
    m = compute_retrieval_metrics(sim, text_to_video)
    assert_direction(m, "t2v", enumerated_expectation(t2v_q, median=lower_median))
    assert_direction(m, "v2t", enumerated_expectation(v2t_q))


def test_ties_straddling_every_recall_cutoff():
    # (greater, tied) per text: blocks over ranks 1-3, 4-7, 9-12, 10-12, then ranks 5, 10, 11 and 1 (x 5)
    rows = [(0, 2), (3, 3), (8, 3), (9, 2), (4, 0), (9, 0), (10, 0)] + [(0, 0)] * 5
    sim = matrix_with_counts(rows)
    counts, _ = retrieval_rank_counts(sim)
    assert counts.greater.tolist() == [g for g, _ in rows] and counts.tied.tolist() == [t for _, t in rows]
    m = compute_retrieval_metrics(sim)
    assert m["t2v_R@1"] == pytest.approx(100 * (1 / 3 + 5) / 12)
    assert m["t2v_R@5"] == pytest.approx(100 * (1 + 2 / 4 + 1 + 5) / 12)
    assert m["t2v_R@10"] == pytest.approx(100 * (1 + 1 + 2 / 4 + 1 / 3 + 1 + 1 + 0 + 5) / 12)
    expected_ranks = [2, 5.5, 10.5, 11, 5, 10, 11] + [1] * 5
    assert m["t2v_MnR"] == pytest.approx(np.mean(expected_ranks))
    assert m["t2v_MdR"] == pytest.approx(np.median(expected_ranks)) and m["t2v_MdR"] == 3.5
    assert m["t2v_tied_queries"] == 4
    assert retrieval_ranks(sim)[0].tolist() == expected_ranks
    optimistic = [1, 4, 9, 10, 5, 10, 11] + [1] * 5
    assert retrieval_ranks(sim, tie_policy="optimistic")[0].tolist() == optimistic
    assert retrieval_ranks(sim, tie_policy="pessimistic")[0].tolist() == [3, 7, 12, 12, 5, 10, 11] + [1] * 5


def test_tied_query_counts_per_direction_and_dsl():
    sim = np.array([[0.9, 0.9, 0.1],   # text 0 tied with video 1
                    [0.2, 0.8, 0.1],
                    [0.3, 0.2, 0.7]])
    m = compute_retrieval_metrics(sim, dsl=True)
    assert m["t2v_tied_queries"] == 1
    assert m["v2t_tied_queries"] == 0  # column 0: 0.9 alone at the top
    assert m["t2v_R@1"] == pytest.approx(100 * (0.5 + 1 + 1) / 3)
    assert "dsl_t2v_tied_queries" in m and "dsl_v2t_tied_queries" in m


# ------------------------------------------------------------------------------------------------------
# Named published conventions


def test_optimistic_and_pessimistic_bound_the_expected_value():
    rng = np.random.default_rng(5)
    sim = rng.integers(0, 3, (9, 9)).astype(float)
    opt = compute_retrieval_metrics(sim, tie_policy="optimistic")
    exp = compute_retrieval_metrics(sim)
    pes = compute_retrieval_metrics(sim, tie_policy="pessimistic")
    for prefix in ("t2v", "v2t"):
        for k in (1, 5, 10):
            assert opt[f"{prefix}_R@{k}"] >= exp[f"{prefix}_R@{k}"] >= pes[f"{prefix}_R@{k}"]
        assert opt[f"{prefix}_MnR"] < exp[f"{prefix}_MnR"] < pes[f"{prefix}_MnR"]
        assert exp[f"{prefix}_MnR"] == pytest.approx((opt[f"{prefix}_MnR"] + pes[f"{prefix}_MnR"]) / 2)


def test_optimistic_policy_is_the_old_behaviour_under_ties():
    sim = np.full((4, 4), 0.5)
    m = compute_retrieval_metrics(sim, tie_policy="optimistic")
    assert m["t2v_R@1"] == 100.0 and m["v2t_R@1"] == 100.0
    assert m["t2v_MnR"] == 1.0 and m["v2t_MnR"] == 1.0 and m["t2v_MdR"] == 1.0
    assert m["t2v_tied_queries"] == 4  # the count does not depend on the policy
    sim[0, 3] = 0.6  # one strictly better wrong video -> text 0 and video 3 both rank 2
    t2v, v2t = retrieval_ranks(sim, tie_policy="optimistic")
    assert t2v.tolist() == [2, 1, 1, 1] and v2t.tolist() == [1, 1, 1, 2]
    m = compute_retrieval_metrics(sim, tie_policy="pessimistic")
    assert m["t2v_R@1"] == 0.0 and m["t2v_MnR"] == 4.0


@pytest.mark.parametrize("policy", ["clip4clip", "pig"])
def test_square_conventions_pool_every_position_of_a_tie_block(policy):
    # text 0 alone at rank 1; text 1 tied with 3 others at the top: the pooled list is [0, 0, 1, 2, 3]
    sim = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    m = compute_retrieval_metrics(sim, tie_policy=policy)
    assert m["t2v_R@1"] == pytest.approx(100 * 4 / 7)  # pooled [0, 0, 1, 2, 3, 0, 0]
    assert m["t2v_MdR"] == 1.0 and m["t2v_MnR"] == pytest.approx(1 + 6 / 7)
    assert compute_retrieval_metrics(sim)["t2v_R@1"] == pytest.approx(100 * (3 + 1 / 4) / 4)
    # a constant matrix: the pooled list is every position once per query -> chance
    m = compute_retrieval_metrics(np.ones((6, 6)), tie_policy=policy)
    assert m["t2v_R@1"] == pytest.approx(100 / 6) and m["v2t_MnR"] == pytest.approx(3.5)
    assert m["t2v_MdR"] == 3.5


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("policy", ["clip4clip", "pig"])
def test_conventions_match_their_reference_under_ties(seed, policy):
    rng = np.random.default_rng(seed)
    n_video = int(rng.integers(2, 13))
    multi = seed % 2 == 1
    text_to_video = (rng.permutation(np.concatenate([np.arange(n_video), rng.integers(0, n_video, 9)]))
                     if multi else np.arange(n_video))
    sim = rng.integers(0, 3, (len(text_to_video), n_video)).astype(np.float32)
    t2v_q, v2t_q = naive_queries(sim, text_to_video)
    m = compute_retrieval_metrics(sim, text_to_video, tie_policy=policy)
    if multi and policy == "clip4clip":
        assert_direction(m, "t2v", index_order_reference(t2v_q))
    else:
        assert_direction(m, "t2v", tie_block_reference(t2v_q))
    assert_direction(m, "v2t", tie_block_reference(v2t_q))


def test_clip4clip_multi_caption_t2v_matches_a_double_argsort():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    n_video, captions = 10, 3
    sim = rng.standard_normal((n_video * captions, n_video)).astype(np.float32)
    text_to_video = np.repeat(np.arange(n_video), captions)
    # CLIP4Clip's layout: [n_video, captions, n_video], rank = position of the own video in a descending argsort
    stacked = torch.from_numpy(sim).reshape(n_video, captions, n_video).permute(1, 0, 2)
    position = torch.argsort(torch.argsort(stacked, dim=-1, descending=True), dim=-1)
    ranks = torch.diagonal(position, dim1=1, dim2=2).flatten() + 1
    m = compute_retrieval_metrics(sim, text_to_video, tie_policy="clip4clip")
    assert m["t2v_R@1"] == pytest.approx(float((ranks <= 1).float().mean() * 100))
    assert m["t2v_R@5"] == pytest.approx(float((ranks <= 5).float().mean() * 100))
    assert m["t2v_MdR"] == float(torch.median(ranks))
    assert m["t2v_MnR"] == pytest.approx(float(ranks.float().mean()))


def test_index_order_breaks_ties_by_candidate_index():
    sim = np.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.0, 1.0]])
    text_to_video = [0, 1, 2, 2]
    t2v, v2t = retrieval_ranks(sim, text_to_video, tie_policy="index_order")
    assert t2v.tolist() == [1, 2, 3, 1]
    assert v2t.tolist() == [1, 2, 3]  # group maxima are all 1.0
    m = compute_retrieval_metrics(sim, text_to_video, tie_policy="clip4clip")
    assert m["t2v_R@1"] == 50.0 and m["t2v_MdR"] == 1.0 and m["t2v_MnR"] == 1.75


# ------------------------------------------------------------------------------------------------------
# Counting machinery


def test_multi_caption_groups_use_best_caption_for_v2t():
    # texts 0, 1 describe video 0; text 2 describes video 1
    sim = np.array([[0.2, 0.6],   # t2v rank 2
                    [0.9, 0.4],   # t2v rank 1
                    [0.7, 0.3]])  # t2v rank 2
    t2v, v2t = retrieval_ranks(sim, [0, 0, 1])
    assert t2v.tolist() == [2, 1, 2]
    # video 0: own group best 0.9 > group 1's 0.7 -> 1. Video 1: own 0.3 < group 0's best 0.6 -> 2
    # (ranking among individual captions would give 3: 0.6 and 0.4 both beat 0.3)
    assert v2t.tolist() == [1, 2]
    m = compute_retrieval_metrics(sim, [0, 0, 1])
    assert m["t2v_R@1"] == pytest.approx(100 / 3) and m["v2t_R@1"] == 50.0
    assert m["num_texts"] == 3 and m["num_videos"] == 2


def test_counts_match_naive_reference_for_any_caption_order_and_chunk_size():
    rng = np.random.default_rng(0)
    for _ in range(10):
        n_video = int(rng.integers(1, 25))
        text_to_video = np.concatenate([np.arange(n_video), rng.integers(0, n_video, 30)])
        rng.shuffle(text_to_video)  # groups need not be contiguous
        sim = rng.integers(0, 4, (len(text_to_video), n_video)).astype(np.float32)  # many ties
        t2v_q, v2t_q = naive_queries(sim, text_to_video)
        for chunk_elements in (1, 50, 10**7):
            got = retrieval_rank_counts(sim, text_to_video, chunk_elements=chunk_elements, tied_before=True)
            for counts, queries in zip(got, (t2v_q, v2t_q)):
                expected = np.array([naive_counts(s, c) for s, c in queries]).reshape(-1, 3)
                np.testing.assert_array_equal(counts.greater, expected[:, 0])
                np.testing.assert_array_equal(counts.tied, expected[:, 1])
                np.testing.assert_array_equal(counts.tied_before, expected[:, 2])
            assert got[0].tied_before is not None
        assert retrieval_rank_counts(sim, text_to_video)[1].tied_before is None


def test_metrics_from_definite_ranks_keep_the_old_meaning():
    ranks = np.array([1, 2, 2, 7, 11])
    m = metrics_from_ranks(ranks, "x")
    assert m == {"x_R@1": 20.0, "x_R@5": 60.0, "x_R@10": 80.0, "x_MdR": 2.0, "x_MnR": 4.6, "x_tied_queries": 0}
    assert metrics_from_ranks(ranks[:4], "x")["x_MdR"] == 2.0
    assert metrics_from_ranks(ranks[1:], "x")["x_MdR"] == 4.5
    assert metrics_from_ranks(ranks[1:], "x", median="lower")["x_MdR"] == 2.0
    counts = RankCounts(np.array([0, 1]), np.array([1, 0]))
    assert metrics_from_ranks(counts, "y")["y_R@1"] == 25.0
    assert metrics_from_ranks(counts, "y", tie_policy="optimistic")["y_R@1"] == 50.0
    with pytest.raises(ValueError, match="RankCounts"):
        metrics_from_ranks(np.array([1.5, 2.0]), "x")
    with pytest.raises(ValueError, match="tied_before"):
        metrics_from_ranks(counts, "y", tie_policy="index_order")


# ------------------------------------------------------------------------------------------------------
# DSL


def test_dsl_hand_computed_hub_video():
    # video 0 is a "hub": it outscores the right video for texts 1 and 2. The dual softmax over texts
    # divides that hub's scores among the three texts and fixes both.
    sim = np.array([[0.90, 0.5, 0.2],
                    [0.80, 0.7, 0.1],
                    [0.85, 0.3, 0.6]])
    m = compute_retrieval_metrics(sim, dsl=True)
    assert m["t2v_R@1"] == pytest.approx(100 / 3)
    assert m["dsl_t2v_R@1"] == 100.0 and m["dsl_v2t_R@1"] == 100.0
    assert m["dsl_t2v_MnR"] == 1.0


def test_dsl_equals_ranking_the_transformed_matrix():
    rng = np.random.default_rng(1)
    text_to_video = np.repeat(np.arange(6), 3)
    sim = rng.standard_normal((18, 6)) * 0.05
    weights = np.exp(100 * (sim - sim.max(axis=0)))
    transformed = sim * (weights / weights.sum(axis=0))  # S * softmax(100 S, axis=0)
    got = retrieval_ranks(sim, text_to_video, dsl=True, chunk_elements=7, tie_policy="optimistic")
    t2v_q, v2t_q = naive_queries(transformed, text_to_video)
    np.testing.assert_array_equal(got[0], [1 + naive_counts(s, c)[0] for s, c in t2v_q])
    np.testing.assert_array_equal(got[1], [1 + naive_counts(s, c)[0] for s, c in v2t_q])
    m = compute_retrieval_metrics(sim, text_to_video, dsl=True, chunk_elements=7)
    plain = compute_retrieval_metrics(transformed, text_to_video)
    for key, value in plain.items():
        if key.startswith(("t2v", "v2t")):
            assert m[f"dsl_{key}"] == pytest.approx(value)


# ------------------------------------------------------------------------------------------------------
# Inputs


def test_accepts_torch_tensor():
    torch = pytest.importorskip("torch")
    sim = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    assert compute_retrieval_metrics(torch.from_numpy(sim).half()) == compute_retrieval_metrics(sim)
    multi = np.array([[0.9, 0.1], [0.8, 0.2], [0.2, 0.8]], dtype=np.float32)
    assert (compute_retrieval_metrics(torch.from_numpy(multi), [0, 0, 1], tie_policy="clip4clip")
            == compute_retrieval_metrics(multi, [0, 0, 1], tie_policy="clip4clip"))


@pytest.mark.parametrize("sim, text_to_video, message", [
    (np.zeros((3, 2)), None, "square"),
    (np.zeros((2, 2, 2)), None, "2-D"),
    (np.array([[0.1, np.nan], [0.2, 0.3]]), None, "non-finite value (nan) at row 0, column 1"),
    (np.zeros((3, 2)), [0, 1], "one video index per text"),
    (np.zeros((3, 2)), [0, 1, 2], "text_to_video[2] = 2"),
    (np.zeros((3, 3)), [0, 0, 1], "have no caption"),
    (np.zeros((2, 2)), [0.5, 1], "integer video indices"),
])
def test_invalid_inputs_raise_clear_errors(sim, text_to_video, message):
    with pytest.raises((ValueError, TypeError), match=re.escape(message)):
        compute_retrieval_metrics(sim, text_to_video)


def test_unknown_policy_names_the_choices():
    with pytest.raises(ValueError, match=re.escape("tie_policy must be one of 'expected', 'optimistic'")):
        compute_retrieval_metrics(np.eye(2), tie_policy="random")
    with pytest.raises(ValueError, match="tie_policy must be one of"):
        retrieval_ranks(np.eye(2), tie_policy="clip4clip")
    with pytest.raises(ValueError, match="median must be one of"):
        metrics_from_ranks(np.array([1]), "x", median="upper")


# ------------------------------------------------------------------------------------------------------
# evaluate module


def test_evaluate_load_offline_matches_numpy(monkeypatch, tmp_path):
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    rng = np.random.default_rng(2)
    text_to_video = np.repeat(np.arange(5), 2)
    sim = rng.integers(0, 3, (10, 5)).astype(np.float32)  # ties
    metric = evaluate.load(METRIC_MODULE_PATH, cache_dir=str(tmp_path))
    for start in range(0, 10, 4):  # rows arrive in batches, as during an evaluation loop
        metric.add_batch(predictions=sim[start:start + 4].tolist(),
                         references=text_to_video[start:start + 4].tolist())
    got = metric.compute(dsl=True)
    assert got == pytest.approx(compute_retrieval_metrics(sim, text_to_video, dsl=True))
    assert got["t2v_tied_queries"] > 0
    loaded = load_evaluate_metric(cache_dir=str(tmp_path))
    assert loaded.compute(predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 1])["t2v_R@1"] == 100.0
    constant = loaded.compute(predictions=[[0.5] * 4] * 4, references=[0, 1, 2, 3])
    assert constant["t2v_R@1"] == 25.0 and constant["v2t_MnR"] == 2.5 and constant["t2v_MdR"] == 2.5
    optimistic = loaded.compute(predictions=[[0.5] * 4] * 4, references=[0, 1, 2, 3], tie_policy="optimistic")
    assert optimistic["t2v_R@1"] == 100.0
    for policy in ("pessimistic", "clip4clip", "pig"):
        got = loaded.compute(predictions=sim.tolist(), references=text_to_video.tolist(), tie_policy=policy)
        assert got == pytest.approx(compute_retrieval_metrics(sim, text_to_video, tie_policy=policy))
