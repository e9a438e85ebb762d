"""Training-step time and peak memory of PIG against its CLIP-ViP baseline (CPU).

Every configuration runs in a fresh Python subprocess (this script with ``--worker``), so that its peak
resident memory (VmHWM = ``ru_maxrss``) belongs to that configuration alone. The compared models take turns:
``--rounds`` rounds per shape, each running one worker per model, in alternating order (CLIP-ViP then PIG, then
PIG then CLIP-ViP, ...), so that background load hits both alike. A worker builds a randomly
initialised model and AdamW, then runs ``--steps`` + 1 full steps (forward with ``return_loss=True``,
backward, optimiser step) on random inputs; the first step allocates the optimiser state, is counted with
FlopCounterMode (forward + backward FLOPs) and is not timed. Reported: median step time over all rounds (wall
time, and CPU time of the worker = core-seconds, which leaves out waiting for a core on a shared machine),
FLOPs per step, peak RSS (the largest over rounds), and that peak minus the RSS after the model was built
(gradients + optimiser state + activations).

    python benchmarks/bench_train_step.py --threads 1 --checkpointing   # docs/performance.md (~10 min)
    python benchmarks/bench_train_step.py             # tiny and B/32 shapes, act. ckpt off
    python benchmarks/bench_train_step.py --quick     # tiny shape, 1 timed step (smoke test)
    python benchmarks/bench_train_step.py --shapes b32 --checkpointing  # B/32 only, without and with act. ckpt

Gradient caching (``--grad-cache BATCH,CHUNK``, training/grad_cache.py): PIG only, at the first of ``--shapes``,
``--grad-cache-frames`` frames per video; three rows: a step at BATCH videos, the same step in chunks of CHUNK
(two passes), and a plain step at CHUNK videos. The peak of the chunked step should be close to the small one's.

    python benchmarks/bench_train_step.py --threads 1 --shapes b32 --grad-cache 32,4 --grad-cache-frames 2  # docs
    python benchmarks/bench_train_step.py --threads 2 --shapes b32 --grad-cache 128,16 --grad-cache-frames 6 \
        --skip-unchunked --steps 1 --rounds 1   # the paper's batch in chunks of 16 vs 16 (docs/performance.md)

(12 frames needs more than 24 GiB of RAM.) The grad-cache table also reports the peak of the bytes malloc has
handed out during the timed steps (`LiveBytesSampler`): on CPU, glibc keeps freed memory in the heap, so the peak
RSS of the two-pass step overstates what it uses.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

from _common import (SHAPES, LiveBytesSampler, add_allocator_argument, add_threads_argument, build_model, clip_config_dict,
                     configure_allocator, count_flops, format_bytes, format_seconds, load_average,
                     machine_description, markdown_table, median, random_pixel_values, random_text_inputs,
                     resolve_threads, rss_bytes, timed_cpu, write_json)

MODELS = ("CLIP-ViP", "PIG")
RESULT_PREFIX = "RESULT "  # the worker's last stdout line: RESULT {json}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shape only, 1 timed step")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per worker (default 3)")
    parser.add_argument("--shapes", default="tiny,b32",
                        help="comma-separated shapes of a full run (tiny, b32, b16; default tiny,b32)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="workers per model and shape, the models taking turns (default 2; 1 with --quick)")
    parser.add_argument("--checkpointing", action="store_true",
                        help="also run the non-tiny shapes with activation checkpointing on")
    add_threads_argument(parser)
    add_allocator_argument(parser)
    parser.add_argument("--grad-cache", default=None, metavar="BATCH,CHUNK",
                        help="gradient-caching table instead: PIG at BATCH videos unchunked, in chunks of CHUNK, "
                             "and at CHUNK videos")
    parser.add_argument("--grad-cache-frames", type=int, default=12, help="frames per video of --grad-cache")
    parser.add_argument("--skip-unchunked", action="store_true",
                        help="--grad-cache without its first row (BATCH videos in one piece): at the paper's batch "
                             "that step does not fit in a workstation's memory, and the comparison that matters is "
                             "chunked BATCH against plain CHUNK")
    parser.add_argument("--json", default=None, help="also write the raw results to this JSON file")
    # worker mode: one configuration in this process
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shape", default="tiny", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="PIG", help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--num-frames", type=int, default=12, help=argparse.SUPPRESS)
    parser.add_argument("--activation-checkpointing", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--chunk-size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.grad_cache is not None:
        try:
            batch, chunk = (int(value) for value in args.grad_cache.split(","))
        except ValueError:
            parser.error(f"--grad-cache {args.grad_cache!r}: expected BATCH,CHUNK (two integers)")
        if not 0 < chunk < batch:
            parser.error(f"--grad-cache {args.grad_cache!r}: expected 0 < CHUNK < BATCH")
        args.grad_cache = (batch, chunk)
    args.steps = args.steps or (1 if args.quick else 3)
    args.rounds = args.rounds or (1 if args.quick else 2)
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be at least 1")
    return args


def configurations(args: argparse.Namespace) -> list[dict]:
    """The (shape, batch, frames, checkpointing) grid; each is run for every model in ``MODELS``."""
    if args.grad_cache is not None:
        batch, chunk = args.grad_cache
        shape = "tiny" if args.quick else args.shapes.split(",")[0]
        common = dict(shape=shape, num_frames=args.grad_cache_frames, activation_checkpointing=False)
        rows = [dict(common, batch_size=batch, chunk_size=0), dict(common, batch_size=batch, chunk_size=chunk),
                dict(common, batch_size=chunk, chunk_size=0)]
        return rows[1:] if args.skip_unchunked else rows
    if args.quick:
        grid = [dict(shape="tiny", batch_size=4, num_frames=4, activation_checkpointing=False)]
    else:
        shapes = args.shapes.split(",")
        unknown = sorted(set(shapes) - set(SHAPES))
        if unknown:
            raise ValueError(f"--shapes: unknown shape(s) {unknown}; expected some of {sorted(SHAPES)}")
        grid = []
        for shape in shapes:
            batch_size = 8 if shape == "tiny" else 2
            grid.append(dict(shape=shape, batch_size=batch_size, num_frames=12, activation_checkpointing=False))
            if args.checkpointing and shape != "tiny":
                grid.append(dict(shape=shape, batch_size=batch_size, num_frames=12, activation_checkpointing=True))
    return grid


# --------------------------------------------------------------------------------------------------
# Worker: one configuration
# --------------------------------------------------------------------------------------------------

def enable_activation_checkpointing(model) -> None:
    """Turn on activation checkpointing through transformers' API (clear error when unsupported)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise RuntimeError(f"{type(model).__name__} does not support activation checkpointing "
                           "(supports_gradient_checkpointing is False)")
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    enable()


def worker(args: argparse.Namespace) -> dict:
    """Run one configuration; return its measurements."""
    resolve_threads(args.threads, quick=False)
    allocator = configure_allocator(args.default_malloc)
    torch.manual_seed(0)
    model = build_model(args.shape, args.model, num_frames=args.num_frames).train()
    if args.activation_checkpointing:
        enable_activation_checkpointing(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.2)
    clip_config = clip_config_dict(args.shape)
    generator = torch.Generator().manual_seed(0)
    batch = dict(random_text_inputs(clip_config, args.batch_size, generator=generator),
                 pixel_values=random_pixel_values(clip_config, args.batch_size, args.num_frames, generator=generator))
    cache = None
    if args.chunk_size:
        from accelerate import Accelerator

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for training/
        from training.grad_cache import GradCache

        cache = GradCache(Accelerator(cpu=True), model, args.chunk_size, gather_across_processes=False)
    rss_after_build, _ = rss_bytes()

    def step():
        output = cache.forward(batch) if cache is not None else model(**batch, return_loss=True)
        if output.loss is None or not torch.isfinite(output.loss):
            raise RuntimeError(f"{args.model} {args.shape}: training loss is {output.loss}")
        cache.backward(output.loss) if cache is not None else output.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(output.loss.detach())

    flops, _ = count_flops(step, depth=1)  # first step: optimiser state is allocated here; not timed
    times, cpu_times = [], []
    with LiveBytesSampler() as live:  # the timed steps: optimiser state already there, as in a training run
        for _ in range(args.steps):
            seconds, cpu_seconds, _ = timed_cpu(step)
            times.append(seconds)
            cpu_times.append(cpu_seconds)
    _, peak = rss_bytes()
    return dict(shape=args.shape, model=args.model, batch_size=args.batch_size, num_frames=args.num_frames,
                activation_checkpointing=args.activation_checkpointing, chunk_size=args.chunk_size, steps=args.steps,
                step_seconds=median(times), all_step_seconds=times, all_cpu_step_seconds=cpu_times,
                train_gflops_per_step=flops / 1e9,
                rss_after_build=rss_after_build, peak_rss=peak, threads=torch.get_num_threads(), allocator=allocator,
                live_before_steps=live.baseline, peak_live=live.peak)


def run_worker_subprocess(config: dict, model: str, steps: int, threads: int, default_malloc: bool) -> dict:
    """Run one configuration of ``model`` in a fresh interpreter and parse its RESULT line."""
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--steps", str(steps),
               "--threads", str(threads), "--shape", config["shape"], "--model", model,
               "--batch-size", str(config["batch_size"]), "--num-frames", str(config["num_frames"])]
    if config["activation_checkpointing"]:
        command.append("--activation-checkpointing")
    if config.get("chunk_size"):
        command += ["--chunk-size", str(config["chunk_size"])]
    if default_malloc:
        command.append("--default-malloc")
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"worker {model} {config} failed with exit code {completed.returncode}:\n"
                           f"{completed.stderr[-4000:]}")
    lines = [line for line in completed.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if len(lines) != 1:
        raise RuntimeError(f"worker {model} {config} printed {len(lines)} RESULT lines; stdout:\n"
                           f"{completed.stdout[-4000:]}")
    return json.loads(lines[0][len(RESULT_PREFIX):])


def merge_rounds(results: list[dict]) -> dict:
    """One row from the workers of one (configuration, model): median step over all timed steps, largest peak."""
    steps = [seconds for result in results for seconds in result["all_step_seconds"]]
    cpu_steps = [seconds for result in results for seconds in result["all_cpu_step_seconds"]]
    peak = max(results, key=lambda result: result["peak_rss"])
    return dict(results[0], rounds=len(results), all_step_seconds=steps, step_seconds=median(steps),
                all_cpu_step_seconds=cpu_steps, cpu_step_seconds=median(cpu_steps),
                peak_rss=peak["peak_rss"], rss_after_build=peak["rss_after_build"],
                all_peak_rss=[result["peak_rss"] for result in results],
                peak_live=max((r["peak_live"] for r in results if r.get("peak_live") is not None), default=None))


def add_ratios(rows: list[dict]) -> None:
    """Add every ratio to the CLIP-ViP row of the same configuration, in place."""
    for row in rows:
        base = next(r for r in rows if r["model"] == "CLIP-ViP" and r["shape"] == row["shape"]
                    and r["activation_checkpointing"] == row["activation_checkpointing"])
        row["time_ratio_to_vip"] = row["step_seconds"] / base["step_seconds"]
        row["cpu_time_ratio_to_vip"] = row["cpu_step_seconds"] / base["cpu_step_seconds"]
        row["flops_ratio_to_vip"] = row["train_gflops_per_step"] / base["train_gflops_per_step"]
        row["peak_ratio_to_vip"] = row["peak_rss"] / base["peak_rss"]


def run_grad_cache(args: argparse.Namespace) -> dict:
    """The three gradient-caching configurations of PIG, each in its own subprocess, ``--rounds`` times."""
    threads = resolve_threads(args.threads, args.quick)
    machine = machine_description()
    rows = []
    for config in configurations(args):
        results = [run_worker_subprocess(config, "PIG", args.steps, threads, args.default_malloc)
                   for _ in range(args.rounds)]
        rows.append(merge_rounds(results))
    return dict(machine=machine, load_at_end=load_average(), steps=args.steps, rounds=args.rounds, rows=rows,
                command=" ".join(sys.argv), grad_cache=True)


def _live(row: dict) -> str:
    return "n/a" if row.get("peak_live") is None else format_bytes(row["peak_live"])


def _live_ratio(row: dict, small: dict) -> str:
    if row.get("peak_live") is None or small.get("peak_live") is None:
        return "n/a"
    return f"{row['peak_live'] / small['peak_live']:.2f}x"


def render_grad_cache(results: dict) -> str:
    """One row per configuration: batch, chunks, FLOPs, time, peak RSS and peak minus the RSS after the build."""
    small = results["rows"][-1]
    table = [[row["shape"], f"{row['batch_size']} x {row['num_frames']}",
              str(row["chunk_size"]) if row["chunk_size"] else "-", f"{row['train_gflops_per_step']:.1f}",
              format_seconds(row["cpu_step_seconds"]), format_bytes(row["peak_rss"]),
              format_bytes(row["peak_rss"] - row["rss_after_build"]),
              f"{(row['peak_rss'] - row['rss_after_build']) / (small['peak_rss'] - small['rss_after_build']):.2f}x",
              _live(row), _live_ratio(row, small)]
             for row in results["rows"]]
    headers = ["shape", "videos x frames", "chunk", "GFLOPs / step", "CPU time / step", "peak RSS",
               "peak - RSS after build", "(peak - build) / small batch", "peak live (malloc)",
               "live / small batch"]
    return "\n".join([f"Machine: {results['machine']}, at end {results['load_at_end']:.2f}",
                      f"PIG, AdamW, fp32; {results['rounds']} round(s), {results['steps']} timed step(s) after one "
                      "untimed step, one fresh subprocess per row; peak = largest over rounds. Peak live = the "
                      "most bytes malloc had handed out during the timed steps (glibc mallinfo2, sampled every 5 "
                      "ms: model, gradients, AdamW state, activations; not freed-but-kept heap, which peak RSS "
                      "counts).",
                      "", markdown_table(headers, table)])


def run(args: argparse.Namespace) -> dict:
    """Run every configuration and model in its own subprocess, models taking turns; return the raw results."""
    threads = resolve_threads(args.threads, args.quick)
    machine = machine_description()  # before the work: the load average says how busy the machine was
    from tqdm.auto import tqdm

    grid = configurations(args)
    progress = tqdm(total=len(grid) * args.rounds * len(MODELS), desc="train step", file=sys.stderr)
    rows = []
    for config in grid:
        per_model: dict[str, list[dict]] = {model: [] for model in MODELS}
        for round_index in range(args.rounds):
            order = MODELS if round_index % 2 == 0 else MODELS[::-1]  # alternate who goes first
            for model in order:
                per_model[model].append(run_worker_subprocess(config, model, args.steps, threads, args.default_malloc))
                progress.update()
        rows += [merge_rounds(per_model[model]) for model in MODELS]
    progress.close()
    add_ratios(rows)
    return dict(machine=machine, load_at_end=load_average(), steps=args.steps, rounds=args.rounds, rows=rows,
                command=" ".join(sys.argv))


def render(results: dict) -> str:
    """The markdown report: machine, then one row per configuration."""
    table = [[row["shape"], f"{row['batch_size']} x {row['num_frames']}",
              "on" if row["activation_checkpointing"] else "off", row["model"],
              f"{row['train_gflops_per_step']:.1f}", f"{row['flops_ratio_to_vip']:.3f}x",
              format_seconds(row["cpu_step_seconds"]), f"{row['cpu_time_ratio_to_vip']:.2f}x",
              format_seconds(row["step_seconds"]), f"{row['time_ratio_to_vip']:.2f}x",
              format_bytes(row["peak_rss"]), format_bytes(row["peak_rss"] - row["rss_after_build"]),
              f"{row['peak_ratio_to_vip']:.2f}x"]
             for row in results["rows"]]
    headers = ["shape", "videos x frames", "act. ckpt", "model", "GFLOPs / step (fwd+bwd)", "FLOPs / CLIP-ViP",
               "CPU time / step", "CPU / CLIP-ViP", "wall time / step", "wall / CLIP-ViP", "peak RSS",
               "peak - RSS after build", "peak / CLIP-ViP"]
    return "\n".join([f"Machine: {results['machine']}, at end {results['load_at_end']:.2f}; "
                      f"{results['rows'][0]['allocator']} (in the workers)",
                      f"AdamW, fp32; {results['rounds']} round(s) per shape, one fresh subprocess per model and "
                      f"round, the models taking turns; each subprocess times {results['steps']} steps after "
                      "one untimed step; times = medians over all timed steps (CPU time = the worker's "
                      "core-seconds), peak = largest over rounds.",
                      "", markdown_table(headers, table)])


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(RESULT_PREFIX + json.dumps(worker(args)))
        return
    if args.grad_cache is not None:
        results = run_grad_cache(args)
        print(render_grad_cache(results))
    else:
        results = run(args)
        print(render(results))
    write_json(args.json, results)


if __name__ == "__main__":
    main()
