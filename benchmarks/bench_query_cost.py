"""Query-time cost of PIG against a Two-Tower baseline (CLIP4Clip meanP) and a Single-Tower scorer.

Per query, a Two-Tower model (and PIG) runs the text encoder once and takes one dot product per stored
video; a Single-Tower model (here X-Pool-style attention pooling, ``single_tower.py``) runs a
text-conditioned interaction for every (query, video) pair over the T stored frame features. This script
measures, on one machine in one run and for galleries of N stored videos:

* the bytes stored per video (PIG and meanP: the width of the model's real ``get_video_features`` output;
  Single-Tower: the T frame features; Single-Tower (K/V stored): T keys and T out-projected values),
* the per-query latency = text encoding (the model's ``get_text_features``, 50 tokens) + scoring all N
  videos + top-k, median over repeats (methods interleaved within each round, in an order that rotates
  from round to round, so that background load hits all of them alike; the cheap Two-Tower queries are
  repeated more often than the Single-Tower ones),
* the FLOPs per query (torch FlopCounterMode) and the latency ratios to PIG, of the whole query and of the
  scoring alone (every method here runs the same CLIP text encoder, so the scoring is where they differ).

Galleries are random (fp16 storage, fp32 compute in chunks). Single-Tower rows with N above
``--max-single-tower-n`` are extrapolated linearly from the largest measured N (the scorer is chunked,
so its cost is linear in N) and are marked as such.

    python benchmarks/bench_query_cost.py --threads 1     # the table of docs/performance.md (4-6 min, 2 cores)
    python benchmarks/bench_query_cost.py --quick         # tiny model, small N, 1 repeat (smoke test)
"""

from __future__ import annotations

import argparse
import gc
import sys

import torch
from tqdm.auto import tqdm

from _common import (add_allocator_argument, add_threads_argument, build_model, configure_allocator, count_flops,
                     format_bytes, format_seconds, load_average, machine_description, markdown_table, median,
                     random_pixel_values, random_text_inputs, resolve_threads, timed, write_json)
from single_tower import XPoolScorer

FP16_BYTES = 2
METHODS = ("PIG", "meanP", "Single-Tower", "Single-Tower (K/V stored)")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, N in {256, 1024}, 1 repeat")
    parser.add_argument("--shape", default=None, help="text/vision shape: b32 (default) or tiny (--quick)")
    parser.add_argument("--sizes", default=None, help="comma-separated gallery sizes (default 1k,10k,100k,1M)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="queries timed per Single-Tower method and N (default 5)")
    parser.add_argument("--two-tower-repeats", type=int, default=None,
                        help="queries timed per Two-Tower method (PIG, meanP) and N (default 25)")
    parser.add_argument("--max-single-tower-n", type=int, default=None,
                        help="largest N measured for Single-Tower; larger N are extrapolated (default 100000)")
    parser.add_argument("--num-frames", type=int, default=12, help="frame features per video (Single-Tower)")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--chunk", type=int, default=4096, help="Two-Tower scoring chunk (videos)")
    parser.add_argument("--single-tower-chunk", type=int, default=512, help="Single-Tower scoring chunk (videos)")
    parser.add_argument("--seed", type=int, default=0)
    add_threads_argument(parser)
    add_allocator_argument(parser)
    parser.add_argument("--json", default=None, help="also write the raw results to this JSON file")
    args = parser.parse_args(argv)
    quick = args.quick
    args.shape = args.shape or ("tiny" if quick else "b32")
    args.sizes = [int(s) for s in (args.sizes or ("256,1024" if quick else "1000,10000,100000,1000000")).split(",")]
    args.repeats = args.repeats or (1 if quick else 5)
    args.two_tower_repeats = args.two_tower_repeats or (1 if quick else 25)
    if args.repeats < 1 or args.two_tower_repeats < 1:
        parser.error("--repeats and --two-tower-repeats must be at least 1")
    args.max_single_tower_n = args.max_single_tower_n or (256 if quick else 100_000)
    if args.max_single_tower_n < min(args.sizes):
        parser.error("--max-single-tower-n must be at least the smallest size: something must be measured")
    return args


# --------------------------------------------------------------------------------------------------
# Galleries and scorers
# --------------------------------------------------------------------------------------------------

def random_fp16(shape: tuple[int, ...], generator: torch.Generator, normalise: bool, chunk: int = 8192) -> torch.Tensor:
    """A random fp16 tensor of ``shape`` (first dim = videos), filled in chunks to bound fp32 memory."""
    out = torch.empty(shape, dtype=torch.float16)
    for start in range(0, shape[0], chunk):
        block = torch.randn((min(chunk, shape[0] - start), *shape[1:]), generator=generator)
        if normalise:
            block = torch.nn.functional.normalize(block, dim=-1)
        out[start:start + block.shape[0]] = block
    return out


def two_tower_search(text_embed: torch.Tensor, gallery: torch.Tensor, top_k: int, chunk: int):
    """Cosine top-k of one query over a Two-Tower gallery.

    ``text_embed`` [1, D] unnormalised fp32, ``gallery`` [N, D] fp16 L2-normalised -> (scores [k], indices [k]).
    Chunks are converted into one fp32 buffer that stays in cache (faster than converting everything).
    """
    query = torch.nn.functional.normalize(text_embed, dim=-1).T       # [D, 1]
    num_videos = gallery.shape[0]
    scores = torch.empty(num_videos, 1)                                # [N, 1]
    buffer = torch.empty(min(chunk, num_videos), gallery.shape[1])     # [chunk, D] fp32
    for start in range(0, num_videos, chunk):
        rows = min(chunk, num_videos - start)
        buffer[:rows].copy_(gallery[start:start + rows])
        torch.mm(buffer[:rows], query, out=scores[start:start + rows])
    return scores[:, 0].topk(top_k)


def single_tower_search(scorer: XPoolScorer, text_embed: torch.Tensor, stored: tuple[torch.Tensor, ...],
                        top_k: int, chunk: int):
    """Top-k of one query over a Single-Tower gallery, scoring every (query, video) pair.

    ``stored`` is ``(frames,)`` with frames [N, T, D] fp16 (faithful X-Pool) or ``(keys, values)``, each
    [N, T, D] fp16 (keys/values precomputed offline). Returns (scores [k], indices [k]).
    """
    num_videos = stored[0].shape[0]
    scores = torch.empty(1, num_videos)                                # [Q=1, N]
    buffers = [torch.empty(min(chunk, num_videos), *tensor.shape[1:]) for tensor in stored]  # [chunk, T, D] fp32
    for start in range(0, num_videos, chunk):
        rows = min(chunk, num_videos - start)
        blocks = [buffer[:rows].copy_(tensor[start:start + rows]) for buffer, tensor in zip(buffers, stored)]
        if len(blocks) == 1:
            scores[:, start:start + rows] = scorer.score(text_embed, blocks[0])
        else:
            scores[:, start:start + rows] = scorer.score_from_keys_values(text_embed, *blocks)
    return scores[0].topk(top_k)


def build_gallery(method: str, num_videos: int, dim: int, num_frames: int, scorer: XPoolScorer,
                  generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """The stored gallery of ``method`` for ``num_videos`` random videos (fp16 tensors)."""
    if method in ("PIG", "meanP"):
        return (random_fp16((num_videos, dim), generator, normalise=True),)
    frames = random_fp16((num_videos, num_frames, dim), generator, normalise=False)
    if method == "Single-Tower":
        return (frames,)
    keys = torch.empty_like(frames)
    values = torch.empty_like(frames)
    for start in range(0, num_videos, 4096):  # offline precomputation, not timed
        key_block, value_block = scorer.precompute_keys_values(frames[start:start + 4096].float())
        keys[start:start + 4096], values[start:start + 4096] = key_block, value_block
    return keys, values


# --------------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------------

def stored_vector_width(model, clip_config: dict, num_frames: int) -> int:
    """Width of the vector a model stores per video: its real ``get_video_features`` output on one video."""
    pixel_values = random_pixel_values(clip_config, batch=1, num_frames=num_frames)
    embedding = model.get_video_features(pixel_values=pixel_values).pooler_output
    if embedding.dim() != 2 or embedding.shape[0] != 1:
        raise RuntimeError(f"get_video_features returned shape {tuple(embedding.shape)}, expected [1, D]")
    return int(embedding.shape[1])


def run(args: argparse.Namespace) -> dict:
    """Measure every method at every N; return the raw results (rows + metadata)."""
    resolve_threads(args.threads, args.quick)
    allocator = configure_allocator(args.default_malloc)
    machine = machine_description()  # before the work: the load average says how busy the machine was
    generator = torch.Generator().manual_seed(args.seed)
    models = {"PIG": build_model(args.shape, "PIG", num_frames=args.num_frames, seed=args.seed),
              "meanP": build_model(args.shape, "meanP", num_frames=args.num_frames, seed=args.seed)}
    clip_config = models["PIG"].config.clip_config.to_dict()
    with torch.inference_mode():
        widths = {name: stored_vector_width(model, clip_config, args.num_frames) for name, model in models.items()}
    dim = widths["PIG"]
    scorer = XPoolScorer(dim).eval()
    text_model = {"PIG": models["PIG"], "meanP": models["meanP"],
                  # Single-Tower methods use a CLIP text encoder of the same shape (PIG's).
                  "Single-Tower": models["PIG"], "Single-Tower (K/V stored)": models["PIG"]}
    stored_bytes = {"PIG": widths["PIG"] * FP16_BYTES, "meanP": widths["meanP"] * FP16_BYTES,
                    "Single-Tower": args.num_frames * dim * FP16_BYTES,
                    "Single-Tower (K/V stored)": 2 * args.num_frames * dim * FP16_BYTES}

    def encode(method: str, texts: dict) -> torch.Tensor:
        return text_model[method].get_text_features(**texts).pooler_output  # [1, D]

    def search(method: str, text_embed: torch.Tensor, gallery: tuple[torch.Tensor, ...]):
        if method in ("PIG", "meanP"):
            return two_tower_search(text_embed, gallery[0], args.top_k, args.chunk)
        return single_tower_search(scorer, text_embed, gallery, args.top_k, args.single_tower_chunk)

    rows, flops = [], {}
    measured_single_n = [n for n in args.sizes if n <= args.max_single_tower_n]
    progress = tqdm(total=len(args.sizes) * len(METHODS), desc="query cost", file=sys.stderr)
    with torch.inference_mode():
        for num_videos in args.sizes:
            methods = [m for m in METHODS if m in ("PIG", "meanP") or num_videos in measured_single_n]
            galleries = {m: build_gallery(m, num_videos, dim, args.num_frames, scorer, generator) for m in methods}
            times = {m: {"text": [], "search": []} for m in methods}
            repeats = {m: args.two_tower_repeats if m in ("PIG", "meanP") else args.repeats for m in methods}
            for round_index in range(max(repeats.values()) + 1):  # round 0 is a warm-up and is discarded
                texts = random_text_inputs(clip_config, num_texts=1, generator=generator)
                shift = round_index % len(methods)
                for method in methods[shift:] + methods[:shift]:  # who goes first rotates
                    if round_index > repeats[method]:
                        continue
                    text_seconds, text_embed = timed(lambda: encode(method, texts))
                    search_seconds, (_, indices) = timed(lambda: search(method, text_embed, galleries[method]))
                    if indices.shape != (min(args.top_k, num_videos),):
                        raise RuntimeError(f"{method}: top-k returned {tuple(indices.shape)} at N={num_videos}")
                    times[method]["text"].append(text_seconds)
                    times[method]["search"].append(search_seconds)
            for method in methods:
                if num_videos == args.sizes[0]:  # FLOPs are linear in N: count once at the smallest N
                    texts = random_text_inputs(clip_config, num_texts=1, generator=generator)
                    text_flops, _ = count_flops(lambda: encode(method, texts))
                    embed = encode(method, texts)
                    search_flops, _ = count_flops(lambda: search(method, embed, galleries[method]))
                    flops[method] = {"text": text_flops, "search_per_video": search_flops / num_videos}
                text_s, search_s = median(times[method]["text"][1:]), median(times[method]["search"][1:])
                rows.append(dict(n=num_videos, method=method, extrapolated=False, text_s=text_s,
                                 search_s=search_s, total_s=text_s + search_s))
                progress.update()
            del galleries
            gc.collect()
            for method in METHODS:
                if method in methods:
                    continue
                # Not measured at this N: extrapolate the scoring time linearly from the largest measured N.
                base = next(r for r in reversed(rows) if r["method"] == method and not r["extrapolated"])
                search_s = base["search_s"] * num_videos / base["n"]
                rows.append(dict(n=num_videos, method=method, extrapolated=True, text_s=base["text_s"],
                                 search_s=search_s, total_s=base["text_s"] + search_s))
                progress.update()
    progress.close()
    for row in rows:
        pig = next(r for r in rows if r["n"] == row["n"] and r["method"] == "PIG")
        row["ratio_to_pig"] = row["total_s"] / pig["total_s"]
        row["search_ratio_to_pig"] = row["search_s"] / pig["search_s"]
        row["stored_bytes_per_video"] = stored_bytes[row["method"]]
        row["gallery_bytes"] = stored_bytes[row["method"]] * row["n"]
        row["gflops_per_query"] = (flops[row["method"]]["text"]
                                   + flops[row["method"]]["search_per_video"] * row["n"]) / 1e9
    return dict(machine=machine, allocator=allocator, load_at_end=load_average(), shape=args.shape,
                repeats=args.repeats, two_tower_repeats=args.two_tower_repeats, top_k=args.top_k,
                num_frames=args.num_frames, dim=dim, rows=rows, command=" ".join(sys.argv))


def render(results: dict) -> str:
    """The markdown report: machine, then one table over all N and methods."""
    table_rows = []
    for row in results["rows"]:
        mark = " (extrap.)" if row["extrapolated"] else ""
        table_rows.append([f"{row['n']:,}", row["method"], format_bytes(row["stored_bytes_per_video"]),
                           format_bytes(row["gallery_bytes"]), f"{row['gflops_per_query']:.2f}",
                           format_seconds(row["text_s"]), format_seconds(row["search_s"]) + mark,
                           format_seconds(row["total_s"]) + mark, f"{row['ratio_to_pig']:.2f}x",
                           f"{row['search_ratio_to_pig']:.1f}x"])
    headers = ["N videos", "method", "stored / video", "gallery", "GFLOPs / query", "text encoder",
               f"scoring + top-{results['top_k']}", "per-query total", "total / PIG",
               "scoring / PIG"]
    lines = [f"Machine: {results['machine']}, at end {results['load_at_end']:.2f}; {results['allocator']}",
             f"Shape: {results['shape']} text encoder ({results['dim']}-d embeddings), "
             f"{results['num_frames']} frame features per video for Single-Tower; median of "
             f"{results['two_tower_repeats']} (PIG, meanP) or {results['repeats']} (Single-Tower) queries per cell "
             "(after one warm-up query).", "",
             markdown_table(headers, table_rows)]
    if any(row["extrapolated"] for row in results["rows"]):
        lines += ["", "(extrap.): not measured; scoring time extrapolated linearly in N from the largest "
                      "measured N of that method (its gallery would not fit this machine's memory or budget)."]
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    results = run(args)
    print(render(results))
    write_json(args.json, results)


if __name__ == "__main__":
    main()
