"""What `pig serve` adds to a search, and what a cold `pig search` costs.

    python benchmarks/bench_serve.py --model outputs       # the model folder `make demo` writes
    python benchmarks/bench_serve.py                        # a tiny random model (real CLIP tokenizer)
    python benchmarks/bench_serve.py --quick                # smoke test: few queries, one cold run

The index holds `--videos` random unit vectors (fp16, as `pig index` stores them) under made-up paths, recorded
with the model's fingerprint: serving and searching cost the same whatever the vectors are.

1. Round trip. For each of `--queries` distinct text queries, alternately: the library in this process,
   `VideoIndex.search([q], k)` (embeds the text with the model, then searches), and the same query over HTTP,
   `GET /api/search?q=...&k=...` on a `pig serve` subprocess, first time asked (a cache miss: the server embeds it
   too), through one keep-alive connection. Medians, and the HTTP overhead = HTTP median - library median (the
   issue's bound: 5 ms). Then the same queries again over HTTP: text-embedding cache hits (counted by /healthz).
2. Concurrency: 8 client threads, each with its own connection, each sending `--concurrent_queries` queries
   (half already asked, half new, in its own order); every answer is compared with the library's (same paths,
   scores within 1e-4), errors and wrong answers are counted.
3. Cold `pig search INDEX "query"` as its own process against `python -c "import torch, transformers"`,
   `--cold_runs` of each, in rotating order: with the index's saved text encoder (the normal case after the first
   search), and without it (the model is loaded; the file is deleted before each of these runs). Wall time and CPU
   time (user + system of the child); ratios of medians to the import.

The server and this client share the machine; note its load (printed) when reading the numbers. The server and
the cold commands run with this process's torch thread count (`--threads`, passed as OMP_NUM_THREADS).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_threads_argument, machine_description, markdown_table, resolve_threads, write_json  # noqa: E402,E501

from modeling_pig.embedding import model_fingerprint  # noqa: E402
from modeling_pig.index import VideoIndex  # noqa: E402
from modeling_pig.loader import load_model_and_processor  # noqa: E402
from modeling_pig.query_encoder import TEXT_ENCODER_FILE  # noqa: E402

K = 10
CLIENTS = 8
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
SUBJECTS = ["a man", "a woman", "a child", "a dog", "a cat", "two people", "a chef", "a cyclist", "a band",
            "a crowd", "an old car", "a bird"]
ACTIONS = ["runs", "plays a guitar", "cooks pasta", "talks on the phone", "dances", "swims", "rides a bike",
           "reads a book", "laughs", "jumps"]
PLACES = ["in a kitchen", "on a beach", "in the rain", "at night", "in a park", "on a stage", "in a car",
          "on a street", "in the snow", "indoors"]


def distinct_queries(n: int, seed: int) -> list[str]:
    combos = [f"{s} {a} {p}" for s in SUBJECTS for a in ACTIONS for p in PLACES]
    random.Random(seed).shuffle(combos)
    if n > len(combos):
        raise ValueError(f"at most {len(combos)} distinct queries")
    return combos[:n]


def tiny_model_folder(folder: Path) -> Path:
    """A tiny random PIG model with the real CLIP tokenizer, saved to `folder`."""
    from _common import clip_config_dict

    from modeling_pig import PIGConfig, PIGModel, PIGProcessor

    torch.manual_seed(0)
    clip = clip_config_dict("tiny")
    clip["text_config"].update(vocab_size=49408, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    PIGModel(PIGConfig(clip_config=clip, num_frames=4, its_top_k=4)).save_pretrained(folder)
    PIGProcessor(num_frames=4, image_size=32).save_pretrained(folder)
    return folder


def build_index(model_dir: Path, out: Path, num_videos: int, seed: int):
    """A saved index of random vectors for the model of `model_dir`; returns (index with model, model)."""
    model, processor = load_model_and_processor(str(model_dir))
    dim = model.config.clip_config.projection_dim
    vectors = F.normalize(torch.randn(num_videos, dim, generator=torch.Generator().manual_seed(seed)), dim=-1)
    paths = [f"/library/videos/clip_{i:06d}.mp4" for i in range(num_videos)]
    index = VideoIndex(vectors, paths, model_path=str(model_dir.resolve()), model_fingerprint=model_fingerprint(model),
                       backend="exact")
    index.save(out)
    loaded = VideoIndex.load(out)
    loaded.attach_model(model, processor)
    return loaded


def start_server(index_dir: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "modeling_pig.cli", "serve", str(index_dir), "--port", "0",
                                "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               env=ENV)
    line = process.stdout.readline()
    if not line.startswith("serving"):
        process.kill()
        raise RuntimeError(f"pig serve did not start: {line!r}")
    return process, line.split(" on ", 1)[1].strip().rstrip("/")


def same_answer(got: list[dict], expected: list[tuple[str, float]]) -> bool:
    return ([r["path"] for r in got] == [p for p, _ in expected]
            and all(abs(r["score"] - s) <= 1e-4 for r, (_, s) in zip(got, expected)))


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far, all its threads (Linux /proc, clock-tick resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def round_trip(index, url: str, queries: list[str], server_pid: int) -> dict:
    """Wall time (medians) and CPU time (means: client thread + server process) of the library and of HTTP."""
    import httpx

    wall = {"library": [], "miss": [], "hit": []}
    cpu = {"library": [], "miss_client": [], "hit_client": []}
    wrong = 0
    with httpx.Client(base_url=url, timeout=60) as client:
        client.get("/healthz").raise_for_status()
        before = client.get("/healthz").json()["text_cache"]

        def timed(kind: str, call):
            started, started_cpu = time.perf_counter(), time.thread_time()
            result = call()
            cpu["library" if kind == "library" else f"{kind}_client"].append(1000 * (time.thread_time() - started_cpu))
            wall[kind].append(1000 * (time.perf_counter() - started))
            return result

        def http(query: str):
            reply = client.get("/api/search", params={"q": query, "k": K})
            reply.raise_for_status()
            return reply.json()["results"]

        server_cpu = process_cpu_seconds(server_pid)
        for position, query in enumerate(queries):
            library = lambda: index.search([query], k=K)[0]  # noqa: E731
            if position % 2:  # alternate which one goes first
                expected, got = timed("library", library), timed("miss", lambda: http(query))
            else:
                got, expected = timed("miss", lambda: http(query)), timed("library", library)
            wrong += not same_answer(got, expected)
        server_miss = (process_cpu_seconds(server_pid) - server_cpu) / len(queries) * 1000
        server_cpu = process_cpu_seconds(server_pid)
        for query in queries:
            timed("hit", lambda: http(query))
        server_hit = (process_cpu_seconds(server_pid) - server_cpu) / len(queries) * 1000
        after = client.get("/healthz").json()["text_cache"]
    library_cpu = statistics.mean(cpu["library"])
    miss_cpu = statistics.mean(cpu["miss_client"]) + server_miss
    return {"queries": len(queries),
            "library_median_ms": statistics.median(wall["library"]), "library_cpu_ms": library_cpu,
            "http_miss_median_ms": statistics.median(wall["miss"]), "http_miss_cpu_ms": miss_cpu,
            "http_hit_median_ms": statistics.median(wall["hit"]),
            "http_hit_cpu_ms": statistics.mean(cpu["hit_client"]) + server_hit,
            "overhead_ms": statistics.median(wall["miss"]) - statistics.median(wall["library"]),
            "overhead_cpu_ms": miss_cpu - library_cpu,
            "cache_hits": after["hits"] - before["hits"], "cache_misses": after["misses"] - before["misses"],
            "wrong_answers": wrong}


def concurrency(index, url: str, asked: list[str], new: list[str], per_client: int) -> dict:
    import httpx

    half = per_client // 2
    expected = {q: r for q, r in zip(asked + new, index.search(asked + new, k=K))}
    counts = {"requests": 0, "errors": 0, "wrong": 0}
    lock = threading.Lock()

    def client_run(seed: int):
        rng = random.Random(seed)
        mine = rng.sample(asked, half) + rng.sample(new, per_client - half)
        rng.shuffle(mine)
        with httpx.Client(base_url=url, timeout=120) as client:
            for query in mine:
                try:
                    reply = client.get("/api/search", params={"q": query, "k": K})
                    ok, right = reply.status_code == 200, reply.status_code == 200 and same_answer(
                        reply.json()["results"], expected[query])
                except httpx.HTTPError:
                    ok = right = False
                with lock:
                    counts["requests"] += 1
                    counts["errors"] += not ok
                    counts["wrong"] += ok and not right

    threads = [threading.Thread(target=client_run, args=(seed,)) for seed in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"clients": CLIENTS, **counts, "wall_s": wall, "requests_per_s": counts["requests"] / wall}


def timed_child(command: list[str]) -> tuple[float, float]:
    """(wall seconds, child CPU seconds) of one run of `command`, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cold_search(index_dir: Path, runs: int) -> list[dict]:
    pig = [sys.executable, "-m", "modeling_pig.cli", "search", str(index_dir), "a man plays a guitar", "-k", str(K)]
    cases = {"python -c 'import torch, transformers'": (lambda: None,
                                                        [sys.executable, "-c", "import torch, transformers"]),
             "pig search (index's text encoder)": (lambda: None, pig),
             "pig search (model loaded)": (lambda: (index_dir / TEXT_ENCODER_FILE).unlink(missing_ok=True), pig)}
    subprocess.run(pig, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # warm disk
    times = {name: [] for name in cases}
    names = list(cases)
    for run in range(runs):
        for name in names[run % len(names):] + names[:run % len(names)]:  # rotate the order
            prepare, command = cases[name]
            prepare()
            times[name].append(timed_child(command))
            if name == "pig search (model loaded)":
                subprocess.run(pig, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base_wall = statistics.median(w for w, _ in times[names[0]])
    base_cpu = statistics.median(c for _, c in times[names[0]])
    rows = []
    for name in names:
        wall = statistics.median(w for w, _ in times[name])
        cpu = statistics.median(c for _, c in times[name])
        rows.append({"command": name, "runs": runs, "wall_median_s": wall, "cpu_median_s": cpu,
                     "wall_ratio": wall / base_wall, "cpu_ratio": cpu / base_cpu})
    return rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: a tiny random model)")
    parser.add_argument("--videos", type=int, default=10_000, help="vectors in the index")
    parser.add_argument("--queries", type=int, default=200, help="distinct queries of the round-trip test")
    parser.add_argument("--concurrent_queries", type=int, default=40, help="queries per concurrent client")
    parser.add_argument("--cold_runs", type=int, default=7, help="runs of each cold command (0: skip that part)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smoke test: 1,000 vectors, 20 queries, 1 cold run")
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.videos, args.queries, args.concurrent_queries = 1000, 20, 6
        args.cold_runs = min(args.cold_runs, 1)
    threads = resolve_threads(args.threads, args.quick)
    ENV["OMP_NUM_THREADS"] = str(threads)  # the server and the cold commands get the library's thread count
    print(machine_description(), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_serve_") as tmp:
        tmp = Path(tmp)
        model_dir = Path(args.model) if args.model else tiny_model_folder(tmp / "model")
        index = build_index(model_dir, tmp / "index", args.videos, args.seed)
        queries = distinct_queries(args.queries + CLIENTS * args.concurrent_queries, args.seed)
        asked, new = queries[:args.queries], queries[args.queries:]
        print(f"model {model_dir}, {args.videos} videos (exact search), k={K}\n", flush=True)
        process, url = start_server(tmp / "index")
        try:
            trip = round_trip(index, url, asked, process.pid)
            crowd = concurrency(index, url, asked, new, args.concurrent_queries)
        finally:
            process.terminate()
            process.wait(timeout=60)
        cold = []
        if args.cold_runs > 0:
            cold_dir = tmp / "cold_index"
            shutil.copytree(tmp / "index", cold_dir)
            cold = cold_search(cold_dir, args.cold_runs)
    print(f"{trip['queries']} queries; wall: median; CPU: mean per query, client thread + server process")
    print(markdown_table(
        ["path", "wall", "CPU", "HTTP overhead (wall)", "HTTP overhead (CPU)"],
        [["library `VideoIndex.search` (embeds the text)", f"{trip['library_median_ms']:.2f} ms",
          f"{trip['library_cpu_ms']:.2f} ms", "", ""],
         ["HTTP `GET /api/search`, cache miss (embeds the text)", f"{trip['http_miss_median_ms']:.2f} ms",
          f"{trip['http_miss_cpu_ms']:.2f} ms", f"{trip['overhead_ms']:+.2f} ms", f"{trip['overhead_cpu_ms']:+.2f} ms"],
         ["HTTP `GET /api/search`, cache hit", f"{trip['http_hit_median_ms']:.2f} ms",
          f"{trip['http_hit_cpu_ms']:.2f} ms", "", ""]]))
    print(f"cache hits / misses counted by the server: {trip['cache_hits']} / {trip['cache_misses']}; "
          f"answers different from the library's: {trip['wrong_answers']}")
    print()
    print(markdown_table(["clients", "requests", "errors", "wrong answers", "wall", "requests/s"],
                         [[crowd["clients"], crowd["requests"], crowd["errors"], crowd["wrong"],
                           f"{crowd['wall_s']:.2f} s", f"{crowd['requests_per_s']:.1f}"]]))
    if cold:
        print()
        print(markdown_table(["command", "runs", "wall (median)", "CPU (median)", "wall / import", "CPU / import"],
                             [[row["command"], row["runs"], f"{row['wall_median_s']:.2f} s",
                               f"{row['cpu_median_s']:.2f} s", f"{row['wall_ratio']:.2f}", f"{row['cpu_ratio']:.2f}"]
                              for row in cold]))
    results = {"machine": machine_description(), "model": str(model_dir), "videos": args.videos, "threads": threads,
               "round_trip": trip, "concurrency": crowd, "cold_search": cold}
    write_json(args.json, results)
    return results


if __name__ == "__main__":
    main()
