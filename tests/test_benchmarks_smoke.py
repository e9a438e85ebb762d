"""Smoke tests of the Hybrid-Tower cost benchmarks: each script runs end to end in --quick mode (tiny model,
small galleries, one repeat), and its output says what the full run is meant to show."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_benchmark(script: str, tmp_path: Path, *extra: str) -> tuple[str, dict]:
    """Run ``benchmarks/<script> --quick --json ...``; return (stdout, parsed JSON)."""
    out = tmp_path / f"{Path(script).stem}.json"
    completed = subprocess.run([sys.executable, str(BENCHMARKS / script), "--quick", "--json", str(out), *extra],
                               capture_output=True, text=True, cwd=BENCHMARKS.parent,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert completed.returncode == 0, f"{script} failed:\n{completed.stderr[-3000:]}"
    return completed.stdout, json.loads(out.read_text())


def test_query_cost_pig_stores_what_meanp_stores_and_single_tower_grows_with_n(tmp_path):
    stdout, results = run_benchmark("bench_query_cost.py", tmp_path)
    rows = {(row["n"], row["method"]): row for row in results["rows"]}
    methods = ("PIG", "meanP", "Single-Tower", "Single-Tower (K/V stored)")
    assert set(rows) == {(n, m) for n in (256, 1024) for m in methods}
    dim, frames = results["dim"], results["num_frames"]
    assert dim == 24 and frames == 12  # the tiny model's projection_dim; 12 frame features
    for n in (256, 1024):
        assert rows[n, "PIG"]["stored_bytes_per_video"] == rows[n, "meanP"]["stored_bytes_per_video"] == 2 * dim
        assert rows[n, "Single-Tower"]["stored_bytes_per_video"] == 2 * frames * dim
        assert rows[n, "PIG"]["ratio_to_pig"] == 1.0
        assert all(rows[n, m]["total_s"] > 0 and rows[n, m]["gflops_per_query"] > 0 for m in methods)
        # every Single-Tower pair costs more than a dot product: more FLOPs per query at the same N
        assert rows[n, "Single-Tower"]["gflops_per_query"] > rows[n, "PIG"]["gflops_per_query"]
    # --quick measures Single-Tower at N=256 only and extrapolates N=1024 linearly from it
    assert not rows[256, "Single-Tower"]["extrapolated"] and rows[1024, "Single-Tower"]["extrapolated"]
    assert rows[1024, "Single-Tower"]["search_s"] == pytest.approx(4 * rows[256, "Single-Tower"]["search_s"])
    assert not rows[1024, "PIG"]["extrapolated"]
    assert "| 1,024 | Single-Tower |" in stdout and "(extrap.)" in stdout and "Machine:" in stdout


def test_video_cost_counts_flops_and_ratios_to_clip_vip(tmp_path):
    stdout, results = run_benchmark("bench_video_cost.py", tmp_path)
    rows = {row["model"]: row for row in results["rows"]}
    assert set(rows) == {"PIG", "CLIP-ViP", "meanP"} and {row["shape"] for row in results["rows"]} == {"tiny"}
    assert rows["CLIP-ViP"]["flops_ratio_to_vip"] == 1.0
    # PIG = CLIP-ViP tower + generator + interaction: strictly more work, and the ratio is what was counted
    assert rows["PIG"]["gflops_per_video"] > rows["CLIP-ViP"]["gflops_per_video"] > 0
    assert rows["PIG"]["flops_ratio_to_vip"] == pytest.approx(
        rows["PIG"]["gflops_per_video"] / rows["CLIP-ViP"]["gflops_per_video"])
    assert all(row["seconds_per_video"] > 0 for row in results["rows"])
    breakdown = results["pig_flops_breakdown"]["tiny"]
    assert any("generator" in part for part in breakdown), breakdown
    assert sum(breakdown.values()) == pytest.approx(rows["PIG"]["gflops_per_video"] * 1e9, rel=1e-6)
    assert "| tiny | PIG |" in stdout and "GFLOPs / video" in stdout


def test_train_step_reports_time_flops_and_peak_memory_per_model(tmp_path):
    stdout, results = run_benchmark("bench_train_step.py", tmp_path)
    rows = {row["model"]: row for row in results["rows"]}
    assert set(rows) == {"PIG", "CLIP-ViP"}
    for row in rows.values():
        assert row["step_seconds"] > 0 and row["peak_rss"] >= row["rss_after_build"] > 0
    assert rows["PIG"]["train_gflops_per_step"] > rows["CLIP-ViP"]["train_gflops_per_step"] > 0
    assert "| tiny | 4 x 4 | off | PIG |" in stdout


def test_single_tower_scorer_scores_each_pair_independently():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from single_tower import XPoolScorer
    finally:
        sys.path.remove(str(BENCHMARKS))
    torch.manual_seed(0)
    scorer = XPoolScorer(16).eval().requires_grad_(False)
    texts, frames = torch.randn(3, 16), torch.randn(5, 4, 16)
    scores = scorer.score(texts, frames)
    assert scores.shape == (3, 5) and scores.abs().max() <= 1 + 1e-6
    for q in range(3):
        for v in range(5):
            alone = scorer.score(texts[q:q + 1], frames[v:v + 1])  # [1, 1]
            assert float(scores[q, v]) == pytest.approx(float(alone[0, 0]), abs=1e-5)
    keys, values = scorer.precompute_keys_values(frames)
    assert torch.allclose(scorer.score_from_keys_values(texts, keys, values), scores)
    # the text conditions the pooling (Single-Tower): one video pooled for two texts gives two different vectors
    pooled = scorer.pool_from_keys_values(texts, keys, values)  # [videos, texts, dim]
    assert not torch.allclose(pooled[:, 0], pooled[:, 1], atol=1e-3)
