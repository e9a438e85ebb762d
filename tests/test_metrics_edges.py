"""Edge cases of modeling_pig.metrics, written to catch small code changes (a mutation tester's mutants):
recall cut-offs at and beyond the number of candidates, ties exactly at a cut-off, medians of odd and even
counts, caption grouping and chunking, input conversion and every validation message."""

import re

import numpy as np
import pytest

from modeling_pig import metrics as M
from modeling_pig.metrics import RankCounts, compute_retrieval_metrics, metrics_from_ranks, retrieval_rank_counts


def counts(greater, tied, tied_before=None):
    arr = lambda v: None if v is None else np.asarray(v, dtype=np.int64)  # noqa: E731
    return RankCounts(arr(greater), arr(tied), arr(tied_before))


def one_query(greater, tied, policy="expected", median="mean"):
    return metrics_from_ranks(counts([greater], [tied], [0]), "q", tie_policy=policy, median=median)


# ------------------------------------------------------------------------------------------------------
# One query: the R@K cut-offs


@pytest.mark.parametrize("greater, tied, expected", [
    # rank uniform on greater+1 .. greater+tied+1; expected P(rank <= K) for K = 1, 5, 10
    (0, 0, (1, 1, 1)),
    (1, 0, (0, 1, 1)),
    (4, 0, (0, 1, 1)),          # rank 5: inside R@5
    (5, 0, (0, 0, 1)),          # rank 6: just outside
    (9, 0, (0, 0, 1)),          # rank 10
    (10, 0, (0, 0, 0)),         # rank 11
    (0, 1, (1 / 2, 1, 1)),      # ranks 1-2
    (0, 4, (1 / 5, 1, 1)),      # ranks 1-5: R@5 exactly covers the block
    (0, 5, (1 / 6, 5 / 6, 1)),  # ranks 1-6
    (4, 1, (0, 1 / 2, 1)),      # ranks 5-6: the block starts at the cut-off
    (3, 1, (0, 1, 1)),          # ranks 4-5: the block ends at the cut-off
    (5, 4, (0, 0, 1)),          # ranks 6-10
    (5, 5, (0, 0, 5 / 6)),      # ranks 6-11
    (9, 3, (0, 0, 1 / 4)),      # ranks 10-13
    (10, 3, (0, 0, 0)),         # ranks 11-14
    (0, 30, (1 / 31, 5 / 31, 10 / 31)),
])
def test_expected_recall_of_one_query(greater, tied, expected):
    m = one_query(greater, tied)
    for k, p in zip((1, 5, 10), expected):
        assert m[f"q_R@{k}"] == pytest.approx(100 * p, abs=1e-12)
    assert m["q_MnR"] == m["q_MdR"] == greater + 1 + tied / 2
    assert m["q_tied_queries"] == (1 if tied else 0)


@pytest.mark.parametrize("greater, tied", [(0, 0), (0, 3), (4, 1), (3, 1), (9, 2), (5, 5), (10, 0)])
def test_point_policies_of_one_query(greater, tied):
    for policy, rank in (("optimistic", greater + 1), ("pessimistic", greater + tied + 1),
                         ("index_order", greater + 1)):
        m = one_query(greater, tied, policy)
        for k in (1, 5, 10):
            assert m[f"q_R@{k}"] == (100.0 if rank <= k else 0.0)
        assert m["q_MdR"] == m["q_MnR"] == rank


@pytest.mark.parametrize("greater, tied", [(0, 0), (0, 3), (4, 1), (3, 1), (9, 2), (5, 5), (10, 0), (2, 9)])
def test_tie_block_of_one_query_is_the_uniform_block(greater, tied):
    # one query: the pooled list is its block, so the pooled rule equals the expectation except the median
    pooled = np.arange(greater, greater + tied + 1)
    m = one_query(greater, tied, "tie_block")
    for k in (1, 5, 10):
        assert m[f"q_R@{k}"] == pytest.approx(100 * np.mean(pooled < k))
    assert m["q_MdR"] == np.median(pooled) + 1
    assert m["q_MnR"] == pytest.approx(np.mean(pooled) + 1)


def test_index_order_counts_only_the_ties_before():
    c = counts([0, 2, 5], [3, 2, 0], [2, 0, 0])
    m = metrics_from_ranks(c, "q", tie_policy="index_order")
    assert c.ranks("index_order").tolist() == [3, 3, 6]
    assert m["q_R@1"] == 0.0 and m["q_R@5"] == pytest.approx(200 / 3) and m["q_MnR"] == 4.0


# ------------------------------------------------------------------------------------------------------
# Several queries: pooling, medians


def test_tie_block_pools_blocks_of_different_sizes():
    # blocks (0-based): [0], [0..3], [2..3], [6], [4..9]: pooled 0,0,1,2,3,2,3,6,4,5,6,7,8,9 (14 entries)
    c = counts([0, 0, 2, 6, 4], [0, 3, 1, 0, 5])
    pooled = np.array([0, 0, 1, 2, 3, 2, 3, 6, 4, 5, 6, 7, 8, 9])
    m = metrics_from_ranks(c, "q", tie_policy="tie_block")
    for k in (1, 5, 10):
        assert m[f"q_R@{k}"] == pytest.approx(100 * np.mean(pooled < k))
    assert m["q_MdR"] == np.median(pooled) + 1 == 4.5
    assert m["q_MnR"] == pytest.approx(np.mean(pooled) + 1)
    assert m["q_tied_queries"] == 3
    odd = counts([0, 0, 2], [0, 3, 1])  # pooled 0, 0, 1, 2, 3, 2, 3 -> median 2
    assert metrics_from_ranks(odd, "q", tie_policy="tie_block")["q_MdR"] == 3.0


@pytest.mark.parametrize("ranks, mean_median, lower_median", [
    ([3], 3, 3),
    ([2, 1], 1.5, 1),
    ([5, 1, 3], 3, 3),
    ([4, 9, 1, 2], 3, 2),
    ([7, 7, 1, 1, 2, 8], 4.5, 2),
])
def test_medians_of_odd_and_even_counts_in_any_order(ranks, mean_median, lower_median):
    assert metrics_from_ranks(np.array(ranks), "q")["q_MdR"] == mean_median
    assert metrics_from_ranks(np.array(ranks), "q", median="lower")["q_MdR"] == lower_median
    assert metrics_from_ranks(np.array(ranks), "q")["q_MnR"] == pytest.approx(np.mean(ranks))


def test_expected_median_is_the_median_of_expected_ranks():
    # expected ranks 1, 2.5, 4, 6.5: median 3.25 (mean), 2.5 (lower)
    c = counts([0, 1, 3, 4], [0, 1, 0, 3])
    assert metrics_from_ranks(c, "q")["q_MdR"] == 3.25
    assert metrics_from_ranks(c, "q", median="lower")["q_MdR"] == 2.5
    assert metrics_from_ranks(c, "q")["q_MnR"] == pytest.approx((1 + 2.5 + 4 + 6.5) / 4)


def test_tied_query_count_ignores_the_size_of_the_ties():
    assert metrics_from_ranks(counts([0, 0, 0, 0], [0, 1, 7, 0]), "q")["q_tied_queries"] == 2
    assert RankCounts.from_ranks([1, 2]).num_tied_queries == 0


# ------------------------------------------------------------------------------------------------------
# Matrices: k beyond the number of candidates, square vs multi-caption, grouping, chunking


@pytest.mark.parametrize("policy", ["expected", "optimistic", "pessimistic", "clip4clip", "pig"])
@pytest.mark.parametrize("n", [1, 2, 4, 5, 6, 9, 10, 11])
def test_recall_beyond_the_candidates_is_full(policy, n):
    rng = np.random.default_rng(n)
    sim = rng.integers(0, 2, (n, n)).astype(float)
    m = compute_retrieval_metrics(sim, tie_policy=policy)
    for prefix in ("t2v", "v2t"):
        for k in (1, 5, 10):
            assert 0.0 <= m[f"{prefix}_R@{k}"] <= 100.0
            if k >= n:
                assert m[f"{prefix}_R@{k}"] == 100.0
        assert 1.0 <= m[f"{prefix}_MdR"] <= n and 1.0 <= m[f"{prefix}_MnR"] <= n


def test_single_video_and_single_text():
    m = compute_retrieval_metrics(np.array([[0.3]]))
    assert m == {"t2v_R@1": 100.0, "t2v_R@5": 100.0, "t2v_R@10": 100.0, "t2v_MdR": 1.0, "t2v_MnR": 1.0,
                 "t2v_tied_queries": 0, "v2t_R@1": 100.0, "v2t_R@5": 100.0, "v2t_R@10": 100.0, "v2t_MdR": 1.0,
                 "v2t_MnR": 1.0, "v2t_tied_queries": 0, "num_texts": 1, "num_videos": 1}
    m = compute_retrieval_metrics(np.array([[0.3], [0.1], [0.3]]), [0, 0, 0])  # one video, three captions
    assert m["t2v_R@1"] == 100.0 and m["v2t_R@1"] == 100.0 and m["num_texts"] == 3 and m["num_videos"] == 1
    assert m["t2v_tied_queries"] == 0 and m["v2t_tied_queries"] == 0


def test_a_permuted_square_ground_truth_is_single_caption():
    # one text per video in shuffled order, t2v ranks 1, 2, 1, 2: np.median 1.5 (the lower middle would be 1)
    sim = np.array([[0.0, 0.9, 0.0, 0.0],   # own video 1: rank 1
                    [0.8, 0.0, 0.0, 0.7],   # own video 3: rank 2
                    [0.0, 0.0, 0.9, 0.0],   # own video 2: rank 1
                    [0.4, 0.5, 0.0, 0.0]])  # own video 0: rank 2
    text_to_video = [1, 3, 2, 0]
    assert M.retrieval_ranks(sim, text_to_video)[0].tolist() == [1, 2, 1, 2]
    for policy in ("expected", "clip4clip"):
        m = compute_retrieval_metrics(sim, text_to_video, tie_policy=policy)
        assert m["t2v_MdR"] == 1.5 and m["t2v_MnR"] == 1.5 and m["t2v_R@1"] == 50.0


def test_multi_caption_v2t_ties_between_caption_groups():
    # video 0's best caption (0.6) ties with video 1's best caption against video 0
    sim = np.array([[0.6, 0.1],
                    [0.2, 0.2],
                    [0.6, 0.9],
                    [0.0, 0.3]])
    text_to_video = [0, 0, 1, 1]
    t2v, v2t = retrieval_rank_counts(sim, text_to_video, tied_before=True)
    assert t2v.greater.tolist() == [0, 0, 0, 0] and t2v.tied.tolist() == [0, 1, 0, 0]
    assert t2v.tied_before.tolist() == [0, 0, 0, 0]
    assert v2t.greater.tolist() == [0, 0] and v2t.tied.tolist() == [1, 0] and v2t.tied_before.tolist() == [0, 0]
    m = compute_retrieval_metrics(sim, text_to_video)
    assert m["v2t_R@1"] == 75.0 and m["v2t_MnR"] == 1.25 and m["v2t_tied_queries"] == 1
    assert m["t2v_R@1"] == 87.5 and m["t2v_tied_queries"] == 1
    # the same tie seen from the other group: tied_before counts the lower group index
    _, v2t = retrieval_rank_counts(sim[:, ::-1], [1, 1, 0, 0], tied_before=True)
    assert v2t.tied.tolist() == [0, 1] and v2t.tied_before.tolist() == [0, 1]


@pytest.mark.parametrize("chunk_elements", [0, 1, 3, 4, 5, 8, 12, 10**9])
def test_chunking_never_changes_the_counts(chunk_elements):
    rng = np.random.default_rng(11)
    text_to_video = np.array([2, 0, 1, 1, 3, 0, 2, 2, 3, 1, 0, 2])
    sim = rng.integers(0, 3, (12, 4)).astype(np.float32)
    ref_t2v, ref_v2t = retrieval_rank_counts(sim, text_to_video, chunk_elements=10**9, tied_before=True)
    got_t2v, got_v2t = retrieval_rank_counts(sim, text_to_video, chunk_elements=chunk_elements, tied_before=True)
    for got, ref in ((got_t2v, ref_t2v), (got_v2t, ref_v2t)):
        for field in ("greater", "tied", "tied_before"):
            np.testing.assert_array_equal(getattr(got, field), getattr(ref, field))
    assert (compute_retrieval_metrics(sim, text_to_video, chunk_elements=chunk_elements, dsl=True)
            == compute_retrieval_metrics(sim, text_to_video, dsl=True))


def test_counts_are_int64_per_query_and_tied_before_only_on_request():
    t2v, v2t = retrieval_rank_counts(np.ones((3, 2)), [0, 1, 1])
    assert t2v.greater.dtype == t2v.tied.dtype == np.int64 and t2v.greater.shape == (3,)
    assert v2t.greater.shape == (2,) and t2v.tied_before is None and v2t.tied_before is None
    assert t2v.tied.tolist() == [1, 1, 1] and v2t.tied.tolist() == [1, 1]


def test_dsl_is_stable_for_large_scores():
    # softmax(100 * S) overflows unless the column max is subtracted first
    rng = np.random.default_rng(12)
    sim = rng.uniform(5, 20, (6, 6))
    z = 100 * (sim - sim.max(axis=0))
    transformed = sim * np.exp(z) / np.exp(z).sum(axis=0)
    m = compute_retrieval_metrics(sim, dsl=True)
    plain = compute_retrieval_metrics(transformed)
    for key in ("t2v_R@1", "t2v_MnR", "v2t_R@1", "v2t_MnR", "t2v_tied_queries"):
        assert m[f"dsl_{key}"] == pytest.approx(plain[key])


def test_fp16_scores_tie_where_fp32_would_not():
    sim = np.array([[1.0, 1.0001], [0.0, 1.0]], dtype=np.float32)  # text 0: 1.0 < 1.0001 in fp32
    assert compute_retrieval_metrics(sim)["t2v_tied_queries"] == 0
    m = compute_retrieval_metrics(sim.astype(np.float16))  # both round to 1.0
    assert m["t2v_tied_queries"] == 1 and m["t2v_R@1"] == 75.0


def test_integer_and_bool_matrices_are_scores():
    m = compute_retrieval_metrics(np.array([[3, 1], [2, 2]]))
    assert m["t2v_R@1"] == 75.0 and m["t2v_tied_queries"] == 1
    assert compute_retrieval_metrics(np.eye(3, dtype=bool))["t2v_R@1"] == 100.0


def test_torch_bfloat16_and_gradient_tensors():
    torch = pytest.importorskip("torch")
    sim = torch.tensor([[0.9, 0.1], [0.5, 0.5]], requires_grad=True)
    expected = compute_retrieval_metrics(np.array([[0.9, 0.1], [0.5, 0.5]]))
    assert compute_retrieval_metrics(sim) == expected
    assert compute_retrieval_metrics(sim.detach().bfloat16()) == expected


# ------------------------------------------------------------------------------------------------------
# Validation: every message


@pytest.mark.parametrize("sim, text_to_video, error, message", [
    (np.zeros((0, 3)), None, ValueError, "at least one text and one video, got shape (0, 3)"),
    (np.zeros((2, 0)), [0, 0], ValueError, "at least one text and one video"),
    (np.zeros(3), None, ValueError, "2-D [n_text, n_video] matrix, got shape (3,)"),
    (np.array([["a", "b"], ["c", "d"]]), None, TypeError, "sim must hold real numbers"),
    (np.zeros((2, 2), dtype=complex), None, TypeError, "sim must hold real numbers"),
    (np.array([[0.0, np.inf], [0.0, 0.0]]), None, ValueError, "non-finite value (inf) at row 0, column 1"),
    (np.zeros((2, 3)), None, ValueError, "needs a square sim; got shape (2, 3)"),
    (np.zeros((3, 2)), [[0, 1, 1]], ValueError, "one video index per text (3 texts), got shape (1, 3)"),
    (np.zeros((3, 2)), [0, 1], ValueError, "one video index per text (3 texts), got shape (2,)"),
    (np.zeros((2, 2)), [0, -1], ValueError, "text_to_video[1] = -1 is not a video index in [0, 2) (1 texts"),
    (np.zeros((3, 2)), [5, 1, 7], ValueError, "text_to_video[0] = 5 is not a video index in [0, 2) (2 texts"),
    (np.zeros((2, 2)), [0.0, np.nan], TypeError, "integer video indices"),
    (np.zeros((2, 2)), ["0", "1"], TypeError, "integer video indices, got dtype <U1"),
    (np.zeros((4, 4)), [0, 0, 2, 2], ValueError, "2 of 4 videos have no caption in text_to_video (first: video 1)"),
])
def test_validation_messages(sim, text_to_video, error, message):
    with pytest.raises(error, match=re.escape(message)):
        compute_retrieval_metrics(sim, text_to_video)


def test_non_finite_value_is_located_in_the_original_rows_whatever_the_chunking():
    sim = np.zeros((6, 3))
    sim[4, 2] = np.nan
    text_to_video = [2, 1, 0, 1, 0, 2]  # row 4 is visited second (video 0's group) when sorted by video
    for chunk_elements in (1, 3, 10**6):
        with pytest.raises(ValueError, match=re.escape("(nan) at row 4, column 2")):
            compute_retrieval_metrics(sim, text_to_video, chunk_elements=chunk_elements)
        with pytest.raises(ValueError, match=re.escape("(nan) at row 4, column 2")):
            compute_retrieval_metrics(sim, text_to_video, chunk_elements=chunk_elements, dsl=True)


def test_whole_float_and_bool_indices_are_accepted():
    sim = np.array([[0.9, 0.1], [0.2, 0.8]])
    assert compute_retrieval_metrics(sim, [0.0, 1.0]) == compute_retrieval_metrics(sim)
    assert compute_retrieval_metrics(sim, np.array([False, True])) == compute_retrieval_metrics(sim)


def test_rank_validation_messages():
    for bad in ([], [[1, 2]]):
        with pytest.raises(ValueError, match="non-empty 1-D array"):
            RankCounts.from_ranks(bad)
    for bad in ([0, 1], [1, 2.5], [1, np.inf], [-3]):
        with pytest.raises(ValueError, match=re.escape("definite 1-based ranks (whole numbers >= 1)")):
            metrics_from_ranks(np.array(bad), "q")
    with pytest.raises(ValueError, match="at least one query"):
        metrics_from_ranks(counts([], []), "q")
    with pytest.raises(ValueError, match="has no per-query rank"):
        counts([0], [0]).ranks("tie_block")
    with pytest.raises(ValueError, match=re.escape("tie_policy must be one of 'expected', 'optimistic', "
                                                   "'pessimistic', 'tie_block', 'index_order'; got 'pig'")):
        metrics_from_ranks(np.array([1]), "q", tie_policy="pig")
    with pytest.raises(ValueError, match=re.escape("'clip4clip', 'pig'; got 'Expected'")):
        compute_retrieval_metrics(np.eye(2), tie_policy="Expected")


def test_definite_ranks_given_as_whole_floats():
    m = metrics_from_ranks(np.array([1.0, 3.0]), "q")
    assert m["q_R@1"] == 50.0 and m["q_MnR"] == 2.0 and m["q_MdR"] == 2.0


def test_public_names():
    assert M.TIE_POLICIES == ("expected", "optimistic", "pessimistic", "clip4clip", "pig")
    assert M.DEFAULT_TIE_POLICY == "expected" and M.RECALL_KS == (1, 5, 10)
    assert set(M.__all__) <= set(dir(M))
    assert M.METRIC_MODULE_PATH.endswith("metric/pig_retrieval.py")


def test_evaluate_module_rejects_ragged_rows(tmp_path, monkeypatch):
    pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    metric = M.load_evaluate_metric(cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="same number of videos"):
        metric.compute(predictions=[[0.1, 0.2], [0.3]], references=[0, 1])


# ------------------------------------------------------------------------------------------------------
# Memory behaviour: how the rows are chunked (results never depend on it; memory and speed do)


def test_rows_per_chunk():
    assert M._rows_per_chunk(10, 0) == 1 and M._rows_per_chunk(10, 9) == 1
    assert M._rows_per_chunk(10, 25) == 2 and M._rows_per_chunk(10, 100) == 10
    assert M._rows_per_chunk(0, 7) == 7


@pytest.mark.parametrize("chunk_elements, blocks", [(10**6, [12]), (24, [6, 6]), (36, [9, 3]), (4, [3, 3, 3, 3])])
def test_chunks_hold_whole_caption_groups(monkeypatch, chunk_elements, blocks):
    # 4 videos with 3 captions each, 4 scores per row: a chunk of chunk_elements // 4 rows takes as many whole
    # caption groups as fit, and at least one
    seen = []
    original = M._check_finite
    monkeypatch.setattr(M, "_check_finite", lambda block, rows: (seen.append(len(rows)), original(block, rows)))
    text_to_video = np.repeat(np.arange(4), 3)
    retrieval_rank_counts(np.zeros((12, 4)), text_to_video, chunk_elements=chunk_elements)
    assert seen == blocks


def test_fp16_is_widened_once_before_ranking():
    assert M._as_similarity_matrix(np.zeros((2, 2), dtype=np.float16)).dtype == np.float32
    assert M._as_similarity_matrix(np.zeros((2, 2), dtype=np.float32)).dtype == np.float32
    assert M._as_similarity_matrix(np.zeros((2, 2), dtype=np.int8)).dtype == np.float64
