"""Search latency, memory and recall of `VideoIndex` at 10k, 100k and 1M stored videos.

    python benchmarks/bench_search.py            # 10k, 100k, 1M (about 15 min on 2 cores)
    python benchmarks/bench_search.py --quick    # smoke test: 2k and 10k vectors, seconds
    python benchmarks/bench_search.py --sizes 10000 100000 --json search.json

Stored vectors are random 512-d unit vectors in fp16 (the index's storage format): uniform on the sphere (the
worst case for approximate search), or with `--intrinsic_dim R` drawn from a random R-dimensional subspace
(structured data, closer to learned embeddings). Queries are stored vectors
plus isotropic noise of the same norm, normalised (cosine ~0.7 to their source): each query has one close
match, as a text query has, and its other nine neighbours are as ambiguous as random data makes them, which is
harder for an approximate index than real, clustered embeddings. Recall@10 is measured against exact search on
200 such queries (`VideoIndex.measure_recall`).

Backends: exact; FAISS IVF with its default `nprobe = nlist / 16`; IVF tuned (`VideoIndex.tune`) to recall@10
>= 0.9 on a separate query sample; HNSW with its defaults (only up to --hnsw_max vectors: slow to build).

For each size and backend the table gives: build time (FAISS training + adding + tuning), the memory
of the search structures (fp16 store, plus the float32 working copy that exact search keeps for stores up to
256 MiB, plus the serialised FAISS index), the process's resident memory after building, the latency of one
query (median and 95th percentile of 100 single-query searches, k=10; fewer, at least 10, when they take
over 30 s) and the time per query when 64 queries
are searched together.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_bytes, machine_description, markdown_table, rss_bytes, write_json  # noqa: E402

from modeling_pig.index import VideoIndex  # noqa: E402
from modeling_pig.search_backends import EXACT_FLOAT32_CACHE_BYTES  # noqa: E402

DIM = 512
K = 10
SINGLE_QUERIES = 100
MIN_SINGLE_QUERIES = 10
SINGLE_QUERY_BUDGET_S = 30.0  # slow cases (exact search at 1M) stop after this, with at least 10 queries
TARGET_RECALL = 0.9
BATCH_QUERIES = 64
RECALL_QUERIES = 200


def random_store(n: int, dim: int, seed: int, intrinsic_dim: int | None = None) -> torch.Tensor:
    """`[n, dim]` random unit vectors in fp16, generated in chunks (no float32 copy of the whole store).

    `intrinsic_dim=None`: uniform on the sphere. Otherwise Gaussian in a random `intrinsic_dim`-dimensional
    subspace, then normalised: data with low intrinsic dimension, as learned embeddings have.
    """
    generator = torch.Generator().manual_seed(seed)
    basis = None
    if intrinsic_dim is not None:
        basis = torch.linalg.qr(torch.randn(dim, intrinsic_dim, generator=generator)).Q.T  # [r, dim], orthonormal
    store = torch.empty(n, dim, dtype=torch.float16)
    for start in range(0, n, 65_536):
        rows = min(65_536, n - start)
        if basis is None:
            block = torch.randn(rows, dim, generator=generator)
        else:
            block = torch.randn(rows, basis.shape[0], generator=generator) @ basis  # [rows, dim]
        store[start:start + rows] = F.normalize(block, dim=-1).half()
    return store


def noisy_queries(store: torch.Tensor, num: int, seed: int) -> torch.Tensor:
    """Stored vectors plus equal-norm Gaussian noise, normalised: `[num, dim]` float32."""
    generator = torch.Generator().manual_seed(seed)
    base = store[torch.randint(0, store.shape[0], (num,), generator=generator)].float()
    noise = F.normalize(torch.randn(base.shape, generator=generator), dim=-1)
    return F.normalize(base + noise, dim=-1)


def faiss_bytes(index: VideoIndex) -> int:
    """Bytes of the FAISS index (serialised); 0 for exact search."""
    return 0 if index.backend == "exact" else index.search_backend.nbytes()


def measure(index: VideoIndex, queries: torch.Tensor) -> dict:
    """Latency of single-query and 64-query searches, and recall@10 against exact search."""
    singles = []
    index.search_embeddings(queries[:1], K)  # warm-up (float32 cache, FAISS threads)
    budget_end = time.perf_counter() + SINGLE_QUERY_BUDGET_S
    for i in range(SINGLE_QUERIES):
        started = time.perf_counter()
        index.search_embeddings(queries[i:i + 1], K)
        singles.append(time.perf_counter() - started)
        if len(singles) >= MIN_SINGLE_QUERIES and started > budget_end:
            break
    started = time.perf_counter()
    index.search_embeddings(queries[:BATCH_QUERIES], K)
    batched = (time.perf_counter() - started) / BATCH_QUERIES
    recall = index.measure_recall(queries=queries[:RECALL_QUERIES], k=K)
    return {
        "single_median_s": statistics.median(singles),
        "single_p95_s": float(np.percentile(singles, 95)),
        "batched_per_query_s": batched,
        "recall_at_10": recall,
        "num_single_queries": len(singles),
    }


def run_case(store: torch.Tensor, queries: torch.Tensor, backend: str, params: dict) -> dict:
    gc.collect()
    rss_before, _ = rss_bytes()
    params = dict(params)
    target_recall = params.pop("target_recall", None)
    started = time.perf_counter()
    index = VideoIndex(store, [str(i) for i in range(store.shape[0])], backend=backend, **params)
    if target_recall is not None:
        # tuned on a query sample of its own (seed 12345), not on the measured queries
        index.tune(target_recall, k=K, num_queries=RECALL_QUERIES, seed=12345)
    build_s = time.perf_counter() - started
    store_bytes = index.embeddings.numel() * 2
    float32_copy = index.embeddings.numel() * 4 if (backend == "exact" and store_bytes * 2 <= EXACT_FLOAT32_CACHE_BYTES) \
        else 0
    result = measure(index, queries)
    rss_after, peak = rss_bytes()
    result.update(
        n=store.shape[0], backend=backend, params=dict(index.faiss_params), build_s=build_s,
        structure_bytes=store_bytes + float32_copy + faiss_bytes(index), rss_delta_bytes=rss_after - rss_before,
        peak_rss_bytes=peak)
    del index
    gc.collect()
    return result


def cases_for(n: int, hnsw_max: int) -> list[tuple[str, dict]]:
    nlist = max(1, round(n ** 0.5))
    cases = [("exact", {})]
    if n >= 1000:
        cases += [("ivf", {"nlist": nlist}), ("ivf", {"nlist": nlist, "target_recall": TARGET_RECALL})]
    if n <= hnsw_max:
        cases += [("hnsw", {})]
    return cases


def format_row(r: dict) -> list:
    params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
    return [f"{r['n']:,}", r["backend"], params, f"{r['build_s']:.1f} s", format_bytes(r["structure_bytes"]),
            format_bytes(r["rss_delta_bytes"]), f"{r['single_median_s'] * 1e3:.2f} ms",
            f"{r['single_p95_s'] * 1e3:.2f} ms", f"{r['batched_per_query_s'] * 1e3:.2f} ms",
            f"{r['recall_at_10']:.3f}"]


HEADERS = ["Stored videos", "Backend", "Parameters", "Build", "Search structures", "RSS growth",
           "1 query (median)", "1 query (p95)", "Per query, 64 at once", "Recall@10 vs exact"]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="smoke test: sizes 2,000 and 10,000")
    parser.add_argument("--hnsw_max", type=int, default=100_000,
                        help="largest size at which HNSW is built (its build is the slow part)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--intrinsic_dim", type=int, default=None,
                        help="stored vectors lie in a random subspace of this dimension (default: uniform)")
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    sizes = [2_000, 10_000] if args.quick else args.sizes
    print(machine_description())
    data = "uniform" if args.intrinsic_dim is None else f"intrinsic dimension {args.intrinsic_dim}"
    print(f"data: {data}; k={K}, dim={DIM}, fp16 store; latency over {SINGLE_QUERIES} single queries, recall over "
          f"{RECALL_QUERIES} queries\n", flush=True)
    results = []
    for n in sizes:
        store = random_store(n, DIM, args.seed, args.intrinsic_dim)
        queries = noisy_queries(store, max(SINGLE_QUERIES, BATCH_QUERIES, RECALL_QUERIES), args.seed + 1)
        for backend, params in cases_for(n, args.hnsw_max):
            result = run_case(store, queries, backend, params)
            results.append(result)
            print(markdown_table(HEADERS, [format_row(result)]).splitlines()[-1], flush=True)
        del store
    print()
    print(markdown_table(HEADERS, [format_row(r) for r in results]))
    write_json(args.json, {"machine": machine_description(), "data": data, "results": results})
    return results


if __name__ == "__main__":
    main()
