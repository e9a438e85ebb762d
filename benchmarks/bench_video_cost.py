"""Offline (video-side) cost of PIG against its Two-Tower baselines CLIP-ViP and CLIP4Clip meanP.

PIG adds an Informativeness Token Selector, a pseudo-query generator and a pseudo interaction to the CLIP-ViP
video tower; all of it runs once per video when the gallery is built. This script measures, for each shape
(B/32, B/16; random weights, 12 frames, 224 px) and each model:

* FLOPs per video of ``get_video_features`` (torch FlopCounterMode; matmuls, convolutions and attention),
  with PIG's FLOPs split by sub-module,
* seconds per video on this machine, CPU time of the process (core-seconds: what the work costs, steady under
  background load) and wall time (median of ``--repeats`` timed calls after one warm-up call; the models are
  interleaved within each repeat so that background load hits all of them alike),
* the ratios to CLIP-ViP. The requirement checked: PIG costs at most 1.15x CLIP-ViP at B/32 (FLOPs and CPU
  time; the wall-time ratio is printed too, but on a shared machine it carries the other jobs' noise).

    python benchmarks/bench_video_cost.py --threads 1      # B/32 and B/16 (docs/performance.md; ~4 min)
    python benchmarks/bench_video_cost.py --quick          # tiny model, 1 repeat (smoke test)
    python benchmarks/bench_video_cost.py --shapes b32 --profile   # + torch.profiler top operators
"""

from __future__ import annotations

import argparse
import sys

import torch
from tqdm.auto import tqdm

from _common import (add_allocator_argument, add_threads_argument, build_model, configure_allocator, count_flops,
                     count_parameters, format_seconds, load_average, machine_description, markdown_table, median,
                     random_pixel_values, resolve_threads, timed_cpu, write_json)

REQUIRED_MAX_RATIO = 1.15  # PIG / CLIP-ViP at B/32, FLOPs and time
MODELS = ("CLIP-ViP", "PIG", "meanP")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 1 repeat")
    parser.add_argument("--shapes", default=None, help="comma-separated shapes (default b32,b16; tiny with --quick)")
    parser.add_argument("--batch-size", type=int, default=1, help="videos per forward call")
    parser.add_argument("--num-frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per model (default 7; 1 with --quick)")
    parser.add_argument("--profile", action="store_true",
                        help="also print torch.profiler's top operators of one PIG and one CLIP-ViP call per shape")
    parser.add_argument("--seed", type=int, default=0)
    add_threads_argument(parser)
    add_allocator_argument(parser)
    parser.add_argument("--json", default=None, help="also write the raw results to this JSON file")
    args = parser.parse_args(argv)
    args.shapes = (args.shapes or ("tiny" if args.quick else "b32,b16")).split(",")
    args.repeats = args.repeats or (1 if args.quick else 7)
    return args


def flops_by_part(model, total: int, per_module: dict[str, int]) -> dict[str, int]:
    """Split PIG's video-side FLOPs into its generator, its interaction and the rest.

    ``per_module`` is ``count_flops``' breakdown of one ``get_video_features`` call; torch's ModuleTracker keys
    a module called from outside any other module by its class name (e.g. ``"PIGPseudoQueryGenerator"``).
    The rest (ViP tower, ITS, token projections) is ``total`` minus the two parts, because the ViP attention
    runs as functional calls that belong to no module.
    """
    parts = {}
    for attribute, label in (("generator", "pseudo-query generator"), ("interaction", "pseudo interaction")):
        module = getattr(model, attribute, None)
        if module is None:
            raise ValueError(f"the model has no {attribute!r} module: not a PIG model (use_pseudo_query=False?)")
        key = type(module).__name__
        if key not in per_module:
            raise RuntimeError(f"no FLOPs recorded for {key} (model.{attribute}); modules seen: {sorted(per_module)}")
        parts[label] = per_module[key]
    parts["ViP tower + ITS + token projections"] = total - sum(parts.values())
    return parts


def profile_call(fn, label: str, rows: int = 12) -> str:
    """torch.profiler table of the ``rows`` most expensive operators (self CPU time) of one call of ``fn``."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        fn()
    table = profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)
    return f"torch.profiler, one call, {label}:\n{table}"


def run(args: argparse.Namespace) -> dict:
    """Measure every model at every shape; return the raw results (rows + metadata)."""
    resolve_threads(args.threads, args.quick)
    allocator = configure_allocator(args.default_malloc)
    machine = machine_description()  # before the work: the load average says how busy the machine was
    generator = torch.Generator().manual_seed(args.seed)
    rows, breakdowns, profiles = [], {}, []
    for shape in args.shapes:
        models = {name: build_model(shape, name, num_frames=args.num_frames, seed=args.seed) for name in MODELS}
        clip_config = models["PIG"].config.clip_config.to_dict()
        pixel_values = random_pixel_values(clip_config, args.batch_size, args.num_frames, generator=generator)
        flops, times, cpu_times = {}, {name: [] for name in MODELS}, {name: [] for name in MODELS}
        with torch.inference_mode():
            for name, model in models.items():  # the FLOP-counting call doubles as the warm-up call
                flops[name], per_module = count_flops(lambda: model.get_video_features(pixel_values=pixel_values),
                                                      depth=1)
                if name == "PIG":
                    breakdowns[shape] = flops_by_part(model, flops[name], per_module)
            for _ in tqdm(range(args.repeats), desc=f"video cost {shape}", file=sys.stderr):
                for name, model in models.items():
                    seconds, cpu_seconds, _ = timed_cpu(lambda: model.get_video_features(pixel_values=pixel_values))
                    times[name].append(seconds)
                    cpu_times[name].append(cpu_seconds)
            if args.profile:
                for name in ("PIG", "CLIP-ViP"):
                    profiles.append(profile_call(lambda: models[name].get_video_features(pixel_values=pixel_values),
                                                 f"{name} {shape}, batch {args.batch_size}"))
        for name in MODELS:
            rows.append(dict(shape=shape, model=name, params=count_parameters(models[name]),
                             gflops_per_video=flops[name] / args.batch_size / 1e9,
                             seconds_per_video=median(times[name]) / args.batch_size,
                             cpu_seconds_per_video=median(cpu_times[name]) / args.batch_size,
                             all_seconds=[t / args.batch_size for t in times[name]],
                             all_cpu_seconds=[t / args.batch_size for t in cpu_times[name]]))
        del models
    for row in rows:
        base = next(r for r in rows if r["shape"] == row["shape"] and r["model"] == "CLIP-ViP")
        row["flops_ratio_to_vip"] = row["gflops_per_video"] / base["gflops_per_video"]
        row["time_ratio_to_vip"] = row["seconds_per_video"] / base["seconds_per_video"]
        row["cpu_time_ratio_to_vip"] = row["cpu_seconds_per_video"] / base["cpu_seconds_per_video"]
    return dict(machine=machine, allocator=allocator, load_at_end=load_average(), batch_size=args.batch_size,
                num_frames=args.num_frames, repeats=args.repeats, rows=rows, pig_flops_breakdown=breakdowns, profiles=profiles,
                command=" ".join(sys.argv))


def verdict(results: dict, shape: str = "b32") -> str | None:
    """The 1.15x requirement at ``shape`` in words, or None when ``shape`` was not measured."""
    pig = next((r for r in results["rows"] if r["shape"] == shape and r["model"] == "PIG"), None)
    if pig is None:
        return None
    holds = pig["flops_ratio_to_vip"] <= REQUIRED_MAX_RATIO and pig["cpu_time_ratio_to_vip"] <= REQUIRED_MAX_RATIO
    return (f"Requirement PIG <= {REQUIRED_MAX_RATIO}x CLIP-ViP at {shape}: FLOPs {pig['flops_ratio_to_vip']:.3f}x, "
            f"CPU time {pig['cpu_time_ratio_to_vip']:.3f}x (wall time {pig['time_ratio_to_vip']:.3f}x) -> "
            f"{'HOLDS' if holds else 'DOES NOT HOLD'}")


def render(results: dict) -> str:
    """The markdown report: machine, the cost table, PIG's FLOP breakdown, the verdict."""
    table = [[row["shape"], row["model"], f"{row['params'] / 1e6:.1f} M", f"{row['gflops_per_video']:.2f}",
              f"{row['flops_ratio_to_vip']:.3f}x", format_seconds(row["cpu_seconds_per_video"]),
              f"{row['cpu_time_ratio_to_vip']:.3f}x", format_seconds(row["seconds_per_video"]),
              f"{row['time_ratio_to_vip']:.3f}x"] for row in results["rows"]]
    lines = [f"Machine: {results['machine']}, at end {results['load_at_end']:.2f}; {results['allocator']}",
             f"{results['num_frames']} frames per video, batch {results['batch_size']}, median of "
             f"{results['repeats']} timed calls after one warm-up call; CPU time = this process's core-seconds.", "",
             markdown_table(["shape", "video tower", "params", "GFLOPs / video", "FLOPs / CLIP-ViP",
                             "CPU time / video", "CPU / CLIP-ViP", "wall time / video", "wall / CLIP-ViP"],
                            table)]
    for shape, parts in results["pig_flops_breakdown"].items():
        total = sum(parts.values())
        lines += ["", f"PIG video-side FLOPs by module ({shape}, per video):", "",
                  markdown_table(["module", "GFLOPs / video", "share"],
                                 [[name, f"{flops / results['batch_size'] / 1e9:.3f}", f"{100 * flops / total:.2f}%"]
                                  for name, flops in sorted(parts.items(), key=lambda item: -item[1])])]
    statement = verdict(results)
    if statement:
        lines += ["", statement]
    if results["profiles"]:
        lines += [""] + results["profiles"]
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    results = run(args)
    print(render(results))
    write_json(args.json, results)


if __name__ == "__main__":
    main()
