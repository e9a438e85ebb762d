"""Retrieval metrics: hand-computed cases, ties, multi-caption groups, DSL, validation, evaluate.load."""

import re

import numpy as np
import pytest

from modeling_pig.metrics import (
    METRIC_MODULE_PATH,
    compute_retrieval_metrics,
    load_evaluate_metric,
    retrieval_ranks,
)


def naive_ranks(sim, text_to_video):
    """Loop-by-loop reference of the protocol (t2v: strictly higher videos; v2t: best caption per group)."""
    n_text, n_video = sim.shape
    t2v = np.array([1 + np.sum(sim[i] > sim[i, text_to_video[i]]) for i in range(n_text)])
    group = np.full((n_video, n_video), -np.inf)
    for c in range(n_text):
        group[text_to_video[c]] = np.maximum(group[text_to_video[c]], sim[c])
    v2t = np.array([1 + np.sum(group[:, j] > group[j, j]) for j in range(n_video)])
    return t2v, v2t


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


def test_ties_count_in_the_query_favour():
    sim = np.full((4, 4), 0.5)
    m = compute_retrieval_metrics(sim)
    assert m["t2v_R@1"] == 100.0 and m["v2t_R@1"] == 100.0
    assert m["t2v_MnR"] == 1.0 and m["v2t_MnR"] == 1.0
    sim[0, 3] = 0.6  # one strictly better wrong video -> text 0 and video 3 both rank 2
    t2v, v2t = retrieval_ranks(sim)
    assert t2v.tolist() == [2, 1, 1, 1] and v2t.tolist() == [1, 1, 1, 2]


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


def test_matches_naive_reference_for_any_caption_order_and_chunk_size():
    rng = np.random.default_rng(0)
    for _ in range(10):
        n_video = int(rng.integers(1, 25))
        text_to_video = np.concatenate([np.arange(n_video), rng.integers(0, n_video, 30)])
        rng.shuffle(text_to_video)  # groups need not be contiguous
        sim = rng.integers(0, 4, (len(text_to_video), n_video)).astype(np.float32)  # many ties
        expected = naive_ranks(sim, text_to_video)
        for chunk_elements in (1, 50, 10**7):
            got = retrieval_ranks(sim, text_to_video, chunk_elements=chunk_elements)
            np.testing.assert_array_equal(got[0], expected[0])
            np.testing.assert_array_equal(got[1], expected[1])


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
    got = retrieval_ranks(sim, text_to_video, dsl=True, chunk_elements=7)
    expected = naive_ranks(transformed, text_to_video)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


def test_accepts_torch_tensor():
    torch = pytest.importorskip("torch")
    sim = np.array([[0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    assert compute_retrieval_metrics(torch.from_numpy(sim).half()) == compute_retrieval_metrics(sim)


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


def test_evaluate_load_offline_matches_numpy(monkeypatch, tmp_path):
    evaluate = pytest.importorskip("evaluate")
    monkeypatch.setenv("HF_EVALUATE_OFFLINE", "1")
    rng = np.random.default_rng(2)
    text_to_video = np.repeat(np.arange(5), 2)
    sim = rng.standard_normal((10, 5)).astype(np.float32)
    metric = evaluate.load(METRIC_MODULE_PATH, cache_dir=str(tmp_path))
    for start in range(0, 10, 4):  # rows arrive in batches, as during an evaluation loop
        metric.add_batch(predictions=sim[start:start + 4].tolist(),
                         references=text_to_video[start:start + 4].tolist())
    got = metric.compute(dsl=True)
    assert got == pytest.approx(compute_retrieval_metrics(sim, text_to_video, dsl=True))
    assert load_evaluate_metric(cache_dir=str(tmp_path)).compute(
        predictions=[[0.9, 0.1], [0.2, 0.8]], references=[0, 1])["t2v_R@1"] == 100.0
