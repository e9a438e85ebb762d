"""Search latency, memory and recall of `VideoIndex` at 10k, 100k and 1M stored videos, and the cost of opening one.

    python benchmarks/bench_search.py                                   # 10k, 100k, 1M (long on 2 cores)
    python benchmarks/bench_search.py --sizes 1000000 --intrinsic_dim 32 --threads 2 --json s.json
    python benchmarks/bench_search.py --quick                           # smoke test: 2k and 10k vectors, seconds

Stored vectors are random 512-d unit vectors in fp16 (the index's storage format): uniform on the sphere (the
worst case for approximate search), or with `--intrinsic_dim R` drawn from a random R-dimensional subspace
(structured data, closer to learned embeddings). Queries are stored vectors plus isotropic noise of the same
norm, normalised (cosine ~0.7 to their source): each query has one close match, as a text query has. Recall@10
is measured against exact search on 200 such queries (`VideoIndex.measure_recall`).

Rows, for each size:
* `f32 mat-vec`: the reference cost of one query, a float32 matrix-vector product over the same vectors held
  in float32 (`torch.mv`), timed interleaved with the exact rows' queries so that both see the same load;
* `exact`: `VideoIndex` exact search (fp16 mat-vec + exact rescoring, see `modeling_pig.search_backends`), with its
  latency as a multiple of the mat-vec's in the last column (required: at most 1.2x);
* `ivf`: FAISS IVF, fp16 codes, its defaults (nlist = sqrt(N), nprobe = nlist / 16);
* `ivf tuned`: the same, its nprobe raised by `VideoIndex.tune(T)` (on a query sample of its own), T =
  `--target_recall` (default 0.95);
* `auto`: what `pig index --backend auto --target_recall T` builds above the threshold: IVF-PQ (`--pq_m` bytes
  per video), its 50 x k best candidates rescored exactly from the fp16 vectors, nprobe tuned to T;
* `ivfpq, no refine`: the same lists scanned, ranked by the PQ codes alone (what the codes lose);
* `hnsw`: FAISS HNSW (only up to --hnsw_max vectors: slow to build).

Columns: build time (training + adding + tuning), memory of the search structures per video (fp16 vectors or
FAISS codes; exact search reads the memory-mapped fp16 vectors), latency of one query (median and 95th
percentile of 100 single-query searches, k=10; fewer, at least 10, when they take over 30 s), its median CPU
time (the process's, all threads: what a query costs whatever else loads the shared machine), time per query
when 64 are searched at once, recall@10. For the largest size, a second table gives the index folder's bytes
per video on disk and the time `VideoIndex.load` + the first query take (`--no_open` skips it).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import format_bytes, machine_description, markdown_table, rss_bytes, write_json  # noqa: E402

from modeling_pig.index import VideoIndex  # noqa: E402

DIM = 512
K = 10
SINGLE_QUERIES = 100
MIN_SINGLE_QUERIES = 10
SINGLE_QUERY_BUDGET_S = 30.0  # slow cases stop after this, with at least 10 queries
TARGET_RECALL = 0.95
BATCH_QUERIES = 64
RECALL_QUERIES = 200
REQUIRED_EXACT_RATIO = 1.2


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


def search_bytes(index: VideoIndex) -> int:
    """Memory of what a query reads: the fp16 vectors (exact) or the FAISS index (serialised size)."""
    return index.embeddings.numel() * 2 if index.backend == "exact" else index.search_backend.nbytes()


def single_query_times(search, queries: torch.Tensor, reference=None) -> tuple[dict, dict]:
    """Wall and CPU seconds of `search(query [1, D])` per query (and of `reference(query)`, interleaved, when
    given). CPU time (this process, all threads) is what a query costs whatever else runs on the machine."""
    times = {"wall": [], "cpu": []}
    reference_times = {"wall": [], "cpu": []}

    def timed(fn, into):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        into["wall"].append(time.perf_counter() - wall)
        into["cpu"].append(time.process_time() - cpu)

    search(queries[:1])  # warm-up (page cache, FAISS threads)
    if reference is not None:
        reference(queries[0])
    budget_end = time.perf_counter() + SINGLE_QUERY_BUDGET_S
    for i in range(SINGLE_QUERIES):
        if reference is not None:
            timed(lambda: reference(queries[i]), reference_times)
        started = time.perf_counter()
        timed(lambda: search(queries[i:i + 1]), times)
        if len(times["wall"]) >= MIN_SINGLE_QUERIES and started > budget_end:
            break
    return times, reference_times


def summary(times: dict) -> dict:
    return {"single_median_s": statistics.median(times["wall"]), "single_p95_s": float(np.percentile(times["wall"], 95)),
            "single_cpu_median_s": statistics.median(times["cpu"]), "num_single_queries": len(times["wall"])}


def measure(index: VideoIndex, queries: torch.Tensor, reference=None) -> tuple[dict, dict | None]:
    """Latency of single-query and 64-query searches, recall@10 against exact search (and the reference's)."""
    times, reference_times = single_query_times(lambda q: index.search_embeddings(q, K), queries, reference)
    started = time.perf_counter()
    index.search_embeddings(queries[:BATCH_QUERIES], K)
    batched = (time.perf_counter() - started) / BATCH_QUERIES
    result = {**summary(times), "batched_per_query_s": batched,
              "recall_at_10": index.measure_recall(queries=queries[:RECALL_QUERIES], k=K)}
    return result, (summary(reference_times) if reference is not None else None)


def run_case(store: torch.Tensor, queries: torch.Tensor, name: str, backend: str, params: dict,
             target_recall: float | None = None) -> list[dict]:
    """Build one index and measure it; the exact case also measures the float32 mat-vec reference."""
    gc.collect()
    rss_before, _ = rss_bytes()
    started = time.perf_counter()
    index = VideoIndex(store, [str(i) for i in range(store.shape[0])], backend=backend, faiss_threshold=0,
                       check=False, **params)
    if target_recall is not None:
        # tuned on a query sample of its own (seed 12345), not on the measured queries
        index.tune(target_recall, k=K, num_queries=RECALL_QUERIES, seed=12345)
    build_s = time.perf_counter() - started
    reference = None
    if backend == "exact":
        matrix = store.float()  # the same vectors in float32: [N, D]
        reference = lambda query: torch.mv(matrix, query)  # noqa: E731
    result, reference_result = measure(index, queries, reference)
    rss_after, peak = rss_bytes()
    n = store.shape[0]
    result.update(n=n, case=name, backend=index.backend, params=dict(index.faiss_params), build_s=build_s,
                  structure_bytes=search_bytes(index), rss_delta_bytes=rss_after - rss_before, peak_rss_bytes=peak)
    rows = [result]
    if reference_result is not None:
        result["ratio_to_matvec"] = result["single_median_s"] / reference_result["single_median_s"]
        result["cpu_ratio_to_matvec"] = result["single_cpu_median_s"] / reference_result["single_cpu_median_s"]
        rows.insert(0, {**reference_result, "n": n, "case": "f32 mat-vec", "backend": "reference", "params": {},
                        "build_s": 0.0, "structure_bytes": n * DIM * 4, "batched_per_query_s": float("nan"),
                        "recall_at_10": 1.0})
    del index, reference
    gc.collect()
    return rows


def open_cost(store: torch.Tensor, queries: torch.Tensor, backend: str, params: dict) -> dict:
    """Bytes per video of a saved index folder, and the time of `VideoIndex.load` + one query."""
    index = VideoIndex(store, [f"/videos/{i:07d}.mp4" for i in range(store.shape[0])], backend=backend,
                       faiss_threshold=0, check=False, **params)
    with tempfile.TemporaryDirectory() as folder:
        index.save(folder)
        del index
        disk = sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())
        started = time.perf_counter()
        loaded = VideoIndex.load(folder)
        load_s = time.perf_counter() - started
        loaded.search(queries[:1], k=K)
        first_query_s = time.perf_counter() - started - load_s
        rss, _ = rss_bytes()
    return {"n": store.shape[0], "backend": backend, "params": params, "disk_bytes_per_video": disk / store.shape[0],
            "load_s": load_s, "first_query_s": first_query_s, "rss_after_bytes": rss}


def cases_for(n: int, hnsw_max: int, pq_m: int, pq_bits: int, target_recall: float
              ) -> list[tuple[str, str, dict, float | None]]:
    cases = [("exact", "exact", {}, None)]
    if n >= 1000:
        pq = {"pq_m": pq_m, "pq_bits": pq_bits}
        cases += [("ivf", "ivf", {}, None), ("ivf tuned", "ivf", {}, target_recall),
                  ("auto", "ivfpq", pq, target_recall), ("ivfpq, no refine", "ivfpq", {**pq, "refine": 1}, None)]
    if n <= hnsw_max:
        cases += [("hnsw", "hnsw", {}, None)]
    return cases


def format_row(r: dict) -> list:
    params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "-"
    batched = "-" if r["batched_per_query_s"] != r["batched_per_query_s"] else f"{r['batched_per_query_s'] * 1e3:.2f} ms"
    ratio = (f"{r['ratio_to_matvec']:.2f}x / {r['cpu_ratio_to_matvec']:.2f}x" if "ratio_to_matvec" in r
             else ("1.00x" if r["case"] == "f32 mat-vec" else "-"))
    return [f"{r['n']:,}", r["case"], params, f"{r['build_s']:.1f} s", format_bytes(r["structure_bytes"] / r["n"]),
            f"{r['single_median_s'] * 1e3:.2f} ms", f"{r['single_p95_s'] * 1e3:.2f} ms",
            f"{r['single_cpu_median_s'] * 1e3:.2f} ms", batched, f"{r['recall_at_10']:.3f}", ratio]


HEADERS = ["Stored videos", "Backend", "Parameters", "Build", "Search memory / video", "1 query (median)",
           "1 query (p95)", "1 query, CPU time", "Per query, 64 at once", "Recall@10 vs exact",
           "vs f32 mat-vec (wall / CPU)"]
OPEN_HEADERS = ["Stored videos", "Backend", "Disk / video", "VideoIndex.load", "First query", "RSS after"]


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--quick", action="store_true", help="smoke test: sizes 2,000 and 10,000")
    parser.add_argument("--hnsw_max", type=int, default=100_000,
                        help="largest size at which HNSW is built (its build is the slow part)")
    parser.add_argument("--pq_m", type=int, default=64, help="IVF-PQ sub-quantizers (code bytes per video at 8 bits)")
    parser.add_argument("--pq_bits", type=int, default=8, help="IVF-PQ bits per sub-quantizer")
    parser.add_argument("--target_recall", type=float, default=TARGET_RECALL, help="for the auto row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--intrinsic_dim", type=int, default=None,
                        help="stored vectors lie in a random subspace of this dimension (default: uniform)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch and FAISS threads (default: torch's default for both)")
    parser.add_argument("--no_open", action="store_true", help="skip the saved-index table")
    parser.add_argument("--cases", nargs="+", default=None, metavar="CASE",
                        help="only these rows (exact, ivf, 'ivf tuned', auto, 'ivfpq, no refine', hnsw)")
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    sizes = [2_000, 10_000] if args.quick else args.sizes
    if args.threads:
        torch.set_num_threads(args.threads)
    import faiss

    faiss.omp_set_num_threads(torch.get_num_threads())  # FAISS's OpenMP pool, same size as torch's
    print(machine_description())
    data = "uniform" if args.intrinsic_dim is None else f"intrinsic dimension {args.intrinsic_dim}"
    print(f"data: {data}; k={K}, dim={DIM}, fp16 store; latency over {SINGLE_QUERIES} single queries, recall over "
          f"{RECALL_QUERIES} queries; {torch.get_num_threads()} threads\n", flush=True)
    results, opened = [], []
    for n in sizes:
        store = random_store(n, DIM, args.seed, args.intrinsic_dim)
        queries = noisy_queries(store, max(SINGLE_QUERIES, BATCH_QUERIES, RECALL_QUERIES), args.seed + 1)
        tuned_nprobe = None
        for name, backend, params, target in cases_for(n, args.hnsw_max, args.pq_m, args.pq_bits, args.target_recall):
            if args.cases is not None and name not in args.cases:
                continue
            if name == "ivfpq, no refine" and tuned_nprobe is not None:
                params = {**params, "nprobe": tuned_nprobe}  # the lists auto scans, ranked by the codes alone
            for row in run_case(store, queries, name, backend, params, target):
                results.append(row)
                if name == "auto":
                    tuned_nprobe = row["params"].get("nprobe")
                print(markdown_table(HEADERS, [format_row(row)]).splitlines()[-1], flush=True)
        if n == max(sizes) and not args.no_open:
            auto = next((r for r in results if r["n"] == n and r["case"] == "auto"), None)
            opened.append(open_cost(store, queries, "exact", {}))
            if auto is not None:
                opened.append(open_cost(store, queries, "ivfpq", auto["params"]))
        del store
    print()
    print(markdown_table(HEADERS, [format_row(r) for r in results]))
    if opened:
        print()
        print(markdown_table(OPEN_HEADERS, [[f"{o['n']:,}", o["backend"], format_bytes(o["disk_bytes_per_video"]),
                                             f"{o['load_s'] * 1e3:.0f} ms", f"{o['first_query_s'] * 1e3:.0f} ms",
                                             format_bytes(o["rss_after_bytes"])] for o in opened]))
    exact = [r for r in results if r["case"] == "exact"]
    if exact:
        worst = max(r["ratio_to_matvec"] for r in exact)
        worst_cpu = max(r["cpu_ratio_to_matvec"] for r in exact)
        print(f"\nexact single query / f32 mat-vec: at most {worst:.2f}x wall, {worst_cpu:.2f}x CPU time "
              f"(required <= {REQUIRED_EXACT_RATIO}x)")
    write_json(args.json, {"machine": machine_description(), "data": data, "results": results, "open": opened})
    return results


if __name__ == "__main__":
    main()
