"""Cases that the mutation run of docs/testing.md showed to be missing (each names what it pins down).

Expected values are worked out here by hand or with plain numpy, never with the function under test.
"""

import numpy as np
import pytest
import torch

from modeling_pig.metrics import (
    RankCounts,
    compute_retrieval_metrics,
    load_evaluate_metric,
    metrics_from_ranks,
    retrieval_ranks,
)

# ------------------------------------------------------------------------------------------------ metrics: DSL

# Found by search so that both a per-column softmax normaliser and its exact value matter: normalising by one
# total over all columns, or counting rows more than once, ranks some texts differently.
DSL_SIM = np.array([[0.55, 0.37, 0.54], [0.49, 0.54, 0.42], [0.44, 0.58, 0.32], [0.35, 0.59, 0.57]])
DSL_GT = [0, 1, 1, 2]  # the best video of each text after DSL (text 3 ranks video 2 second without it)


def dsl_by_hand(sim):
    """S * softmax(100 S) over the texts (axis 0), as CLIP-ViP applies it."""
    weights = np.exp(100.0 * (sim - sim.max(axis=0)))
    return sim * weights / weights.sum(axis=0)


def optimistic_ranks(scores, gt):
    """1 + number of candidates scoring strictly higher than the correct one, per row."""
    return np.array([1 + int((row > row[g]).sum()) for row, g in zip(scores, gt)])


@pytest.mark.parametrize("chunk_elements", [3, 6, 10 ** 6])  # one text per chunk, two, all
def test_dsl_ranks_equal_ranks_of_the_hand_computed_dual_softmax(chunk_elements):
    t2v, v2t = retrieval_ranks(DSL_SIM, DSL_GT, dsl=True, chunk_elements=chunk_elements, tie_policy="optimistic")
    expected = dsl_by_hand(DSL_SIM)
    assert t2v.tolist() == optimistic_ranks(expected, DSL_GT).tolist()
    # v2t: a video's caption group scores its best caption; rank of the own group among all groups
    groups = np.stack([expected[[i for i, g in enumerate(DSL_GT) if g == v]].max(axis=0) for v in range(3)])
    assert v2t.tolist() == optimistic_ranks(groups.T, range(3)).tolist()
    assert t2v.tolist() == [1, 1, 1, 1] and optimistic_ranks(DSL_SIM, DSL_GT).tolist() == [1, 1, 1, 2]
    # the data can tell: one normaliser for all columns, or rows counted 1, 2, 3, 4 times, rank other videos first
    weights = np.exp(100.0 * (DSL_SIM - DSL_SIM.max(axis=0)))
    one_total = DSL_SIM * weights / weights.sum()
    rows_repeated = DSL_SIM * weights / (weights * np.arange(1, 5)[:, None]).sum(axis=0)
    assert optimistic_ranks(one_total, DSL_GT).tolist() != [1, 1, 1, 1]
    assert optimistic_ranks(rows_repeated, DSL_GT).tolist() != [1, 1, 1, 1]


def test_dsl_names_the_row_of_a_non_finite_score():
    sim = np.zeros((7, 3))
    sim[5, 2] = np.nan
    for chunk_elements in (3, 6, 10 ** 6):
        with pytest.raises(ValueError, match=r"non-finite value \(nan\) at row 5, column 2"):
            retrieval_ranks(sim, [0, 1, 2, 0, 1, 2, 0], dsl=True, chunk_elements=chunk_elements)


# ---------------------------------------------------------------------------------------------- metrics: inputs


def test_float32_ground_truth_of_whole_numbers_is_accepted():
    sim = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
    as_int = compute_retrieval_metrics(sim, [0, 1, 0])
    assert compute_retrieval_metrics(sim, np.array([0.0, 1.0, 0.0], dtype=np.float32)) == as_int
    with pytest.raises(TypeError, match="integer video indices"):
        compute_retrieval_metrics(sim, np.array([0.0, 1.5, 0.0], dtype=np.float32))


# ------------------------------------------------------------------------------------------ metrics: RankCounts


def test_rank_counts_from_definite_ranks_are_int64_with_zero_ties():
    counts = RankCounts.from_ranks([3, 1, 2])
    for name in ("greater", "tied", "tied_before"):
        value = getattr(counts, name)
        assert value.dtype == np.int64 and value.shape == (3,), name
    assert counts.greater.tolist() == [2, 0, 1] and counts.tied.tolist() == counts.tied_before.tolist() == [0, 0, 0]
    for policy in ("expected", "optimistic", "pessimistic", "index_order"):
        assert counts.ranks(policy).tolist() == [3, 1, 2], policy
    assert counts.ranks("optimistic").dtype == np.int64


def test_invalid_ranks_show_the_first_five():
    with pytest.raises(ValueError, match=r"got \[0, 0, 0, 0, 0\]\.\.\.; for tied scores pass the RankCounts of "
                                         r"retrieval_rank_counts"):
        RankCounts.from_ranks([0, 0, 0, 0, 0, 0, 0])


def test_index_order_without_tied_before_counts_says_how_to_get_them():
    counts = RankCounts(np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match=r"^index_order ranks need tied_before counts: pass tied_before=True to "
                                         r"retrieval_rank_counts$"):
        counts.ranks("index_order")


def test_empty_rank_counts_are_refused():
    empty = np.zeros(0, dtype=np.int64)
    with pytest.raises(ValueError, match="^ranks must hold at least one query$"):
        metrics_from_ranks(RankCounts(empty, empty), "t2v")


@pytest.mark.parametrize("ranks, lower", [
    ([7, 6, 5, 4, 3, 2, 1], 4),            # odd: the middle one
    ([4, 1, 3, 2], 2),                     # even: the lower of 2 and 3 (torch.median), not 2.5
    ([9, 8, 7, 6, 5, 4, 3, 2, 1, 10], 5),
    ([1, 4, 3, 2, 8, 7, 6, 5], 4),
    # 65 ranks with repeats, in an order where partitioning around a neighbouring position leaves a wrong value
    # in the middle slot (numpy's introselect): the median must come from partitioning at the middle itself
    ([5, 12, 5, 4, 26, 29, 30, 24, 5, 30, 1, 9, 9, 24, 5, 31, 7, 28, 19, 9, 14, 4, 14, 23, 7, 31, 22, 12, 10, 25,
      13, 31, 15, 23, 29, 31, 8, 14, 23, 14, 10, 20, 29, 15, 13, 25, 17, 10, 29, 20, 22, 27, 4, 28, 5, 1, 32, 9, 1,
      23, 10, 14, 31, 19, 1], 15),
])
def test_lower_median_is_the_lower_middle_rank(ranks, lower):
    got = metrics_from_ranks(np.array(ranks), "t2v", tie_policy="optimistic", median="lower")
    assert got["t2v_MdR"] == lower == sorted(ranks)[(len(ranks) - 1) // 2]
    assert metrics_from_ranks(np.array(ranks), "t2v", tie_policy="optimistic")["t2v_MdR"] == np.median(ranks)


def test_evaluate_metric_passes_its_arguments_to_evaluate_load():
    pytest.importorskip("evaluate")
    metric = load_evaluate_metric(experiment_id="mutation-check")
    assert metric.experiment_id == "mutation-check"


def test_half_precision_tensors_are_ranked_like_their_float32_values():
    sim = torch.tensor([[0.5, 0.25], [0.125, 0.75]])
    expected = compute_retrieval_metrics(sim.numpy())
    for dtype in (torch.float16, torch.bfloat16):
        assert compute_retrieval_metrics(sim.to(dtype)) == expected, dtype


# ----------------------------------------------------------------------------------------- frame sampling


@pytest.mark.parametrize("case, expected", [
    # few frames: iv = min(int(n / (k - 1)), (n - 1) // 2) is capped by (n - 1) // 2 (start first, then end)
    ((4, 2, 0), [0, 3]),      # iv = min(4, 1) = 1: start ~ U{0, 1} -> 0, end ~ U{2, 3} -> 3
    ((4, 2, 3), [0, 2]),
    ((7, 2, 0), [0, 6]),      # iv = min(7, 3) = 3
    ((7, 2, 5), [3, 5]),      # start 3 is only possible with the cap at 3 (not 2)
    ((5, 3, 1), [1, 2, 4]),   # iv = min(2, 2) = 2
])
def test_train_mode_with_few_frames_caps_the_jitter_at_half_the_video(case, expected):
    from modeling_pig.video_io import sample_frame_indices

    n, k, seed = case
    assert sample_frame_indices(n, k, "train", torch.Generator().manual_seed(seed)) == expected
    interval = (n - 1) // 2
    g = torch.Generator().manual_seed(seed)
    start = int(torch.randint(0, interval + 1, (1,), generator=g))
    end = int(torch.randint(n - 1 - interval, n, (1,), generator=g))
    assert [int(start + i * (end - start) / (k - 1)) for i in range(k)] == expected


def test_sampling_arguments_are_checked_with_their_name_and_value():
    from modeling_pig.video_io import sample_frame_indices

    assert sample_frame_indices(1, 3) == [0, 0, 0]  # one frame is a video
    assert sample_frame_indices(np.int64(5), np.int64(1)) == [0]
    for bad in (0, -3, True, 10.0, "10"):
        with pytest.raises((ValueError, TypeError), match=f"^num_video_frames must be an int >= 1, got {bad!r}$"):
            sample_frame_indices(bad, 4)
    for bad in (0, False, 2.0):
        with pytest.raises(ValueError, match=f"^num_frames must be an int >= 1, got {bad!r}$"):
            sample_frame_indices(10, bad)
    with pytest.raises(ValueError, match="^mode must be 'test' or 'train', got 'val'$"):
        sample_frame_indices(10, 4, "val")


# --------------------------------------------------------------------------------- token selection and loss


def test_informative_tokens_default_to_the_max_over_heads():
    from modeling_pig.modeling_pig import select_informative_tokens

    # 1 video, 2 heads, M = 1 global, 2 frames of 1 + 2 tokens: positions 1 and 4 are frame-CLS
    attention = torch.tensor([[[0.9, 0.8, 0.1, 0.2, 0.7, 0.3, 0.0],
                               [0.0, 0.0, 0.6, 0.1, 0.0, 0.2, 0.5]]])
    # max over heads: [0.9, 0.8, 0.6, 0.2, 0.7, 0.3, 0.5] -> patches 2, 3, 5, 6 -> best two: 2 (0.6), 6 (0.5)
    assert select_informative_tokens(attention, 1, 2, 2).tolist() == [[2, 6]]
    # mean over heads: patches 2: 0.35, 3: 0.15, 5: 0.25, 6: 0.25 -> 2, then 5 and 6 tied
    assert select_informative_tokens(attention, 1, 2, 1, head_reduction="mean").tolist() == [[2]]
    with pytest.raises(ValueError, match="^its_head_reduction must be 'max' or 'mean', got 'sum'$"):
        select_informative_tokens(attention, 1, 2, 2, head_reduction="sum")


def test_logit_scale_is_exp_of_the_parameter_clamped_to_zero_and_the_maximum():
    from conftest import tiny_pig_config

    from modeling_pig import PIGModel

    model = PIGModel(tiny_pig_config())
    maximum = model.config.logit_scale_max
    for value, expected in ((0.5, 0.5), (-1.0, 0.0), (maximum + 1.0, maximum), (2.0, 2.0)):
        with torch.no_grad():
            model.clip.logit_scale.fill_(value)
        assert model.get_logit_scale().item() == pytest.approx(float(np.exp(expected)), rel=1e-6), value


def test_loss_from_embeddings_gathers_all_three_only_when_asked(monkeypatch):
    import modeling_pig.modeling_pig as modeling
    from conftest import tiny_pig_config

    from modeling_pig import PIGModel

    model = PIGModel(tiny_pig_config())
    g = torch.Generator().manual_seed(0)
    text, video, pseudo = (torch.nn.functional.normalize(torch.randn(3, 24, generator=g), dim=-1) for _ in range(3))
    scale = torch.tensor(20.0)
    calls = []

    def doubling_gather(*features):  # as if a second process held the same rows
        calls.append(features)
        return tuple(torch.cat([f, f]) for f in features)

    monkeypatch.setattr(modeling, "gather_features", doubling_gather)
    local = model.loss_from_embeddings(text, video, pseudo, scale)
    assert calls == []  # not asked: no gather
    gathered = model.loss_from_embeddings(text, video, pseudo, scale, gather_across_processes=True)
    assert len(calls) == 1 and all(a is b for a, b in zip(calls[0], (text, video, pseudo))) and len(calls[0]) == 3
    # the loss of the doubled batch, by hand: InfoNCE over 6 x 6 logits, reconstruction over 6 rows
    t, v, p = torch.cat([text, text]), torch.cat([video, video]), torch.cat([pseudo, pseudo])
    logits = scale * t @ v.T
    labels = torch.arange(6)
    infonce = torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)
    recon = (2 - 2 * (p * t).sum(-1)).mean()
    torch.testing.assert_close(gathered[1], infonce)
    torch.testing.assert_close(gathered[2], recon)
    torch.testing.assert_close(gathered[0], infonce + model.config.generation_loss_weight * recon)
    assert not torch.allclose(local[1], gathered[1])
