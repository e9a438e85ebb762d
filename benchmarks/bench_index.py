"""Index build throughput: videos per second for decoding only, the model only, and the full pipeline.

`pig index` decodes videos in DataLoader workers while the model embeds the previous batch
(`modeling_pig.embedding.encode_videos`). This script measures, on the real sample videos (cycled to
`--videos` files):

* decode only: `processor.load_video` (PyAV decoding of the test-time frames + preprocessing), serially in this
  process (the per-video cost `t_decode`), and through the DataLoader with `--num_workers` workers;
* model only: `get_video_features` on the already decoded pixel values, `--batch_size` videos per call
  (`t_model` per video);
* pipeline: `encode_videos` with `--num_workers` workers and `--batch_size`, decoding and model overlapping.

Each stage is timed `--rounds` times, in an order rotated from round to round so that background load on the
shared machine hits every stage alike; the medians are reported. glibc malloc's thresholds are fixed as in the
other benchmarks (`--default-malloc` keeps them dynamic).

The serial bound is `1 / (t_decode + t_model)` videos/s (no overlap at all); the pipeline should reach at least
0.9x of it on CPU, where decoding and the model share the cores, and approach `1 / max(t_decode, t_model)` where
the model runs on a GPU. Random weights (the cost does not depend on them).

    python benchmarks/bench_index.py                       # B/32 PIG, 12 frames at 224 px, 24 videos, 3 rounds
    python benchmarks/bench_index.py --variant meanP       # the zero-shot CLIP4Clip model
    python benchmarks/bench_index.py --quick               # tiny model, 6 videos (smoke test)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (add_allocator_argument, build_model, configure_allocator, load_average,  # noqa: E402
                     machine_description, markdown_table, resolve_threads, write_json)

from modeling_pig import PIGProcessor, encode_videos  # noqa: E402
from modeling_pig.encoding import video_loader  # noqa: E402
from modeling_pig.video_io import find_videos  # noqa: E402

DEFAULT_VIDEO_DIR = Path(os.environ.get("PIG_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) \
    / "videos"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video_dir", default=str(DEFAULT_VIDEO_DIR), help="folder of sample videos")
    parser.add_argument("--videos", type=int, default=24, help="videos per measurement (the samples, cycled)")
    parser.add_argument("--shape", default="b32", help="model shape (b32, b16, tiny)")
    parser.add_argument("--variant", default="PIG", help="PIG, CLIP-ViP or meanP")
    parser.add_argument("--num_frames", type=int, default=12)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--num_workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each stage (median reported)")
    parser.add_argument("--quick", action="store_true", help="tiny model, 4 frames at 32 px, 6 videos, 1 round")
    add_allocator_argument(parser)
    parser.add_argument("--json", default=None, help="also write the raw numbers here")
    args = parser.parse_args(argv)
    if args.quick:
        args.shape, args.num_frames, args.rounds = "tiny", 4, 1
        args.videos = min(args.videos, 6)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    allocator = configure_allocator(args.default_malloc)
    threads = resolve_threads(args.threads, quick=False)
    samples = find_videos(args.video_dir)
    if not samples:
        raise SystemExit(f"error: no videos in {args.video_dir} (pass --video_dir)")
    paths = [samples[i % len(samples)] for i in range(args.videos)]
    model = build_model(args.shape, args.variant, num_frames=args.num_frames)
    image_size = model.config.clip_config.vision_config.image_size
    processor = PIGProcessor(num_frames=args.num_frames, image_size=image_size)
    print(machine_description())
    print(f"{args.variant} {args.shape}, {args.num_frames} frames at {image_size} px, {len(paths)} videos "
          f"({len(samples)} samples cycled), batch {args.batch_size}, {args.num_workers} decoding workers, "
          f"{threads} torch threads, {args.rounds} rounds (stages rotated); {allocator}; load average before: "
          f"{load_average()}\n", flush=True)
    encode_videos(model, processor, paths[:args.batch_size], batch_size=args.batch_size, show_progress=False)  # warm-up
    decoded = [processor.load_video(path) for path in paths]  # [T, 3, S, S] each, for the model-only stage

    def decode_serial():
        for path in paths:
            processor.load_video(path)

    def decode_workers():
        for _ in video_loader(processor, paths, batch_size=args.batch_size, num_workers=args.num_workers):
            pass

    def model_only():
        with torch.no_grad():
            for start in range(0, len(decoded), args.batch_size):
                model.get_video_features(pixel_values=torch.stack(decoded[start:start + args.batch_size]))

    def pipeline():
        encode_videos(model, processor, paths, batch_size=args.batch_size, num_workers=args.num_workers,
                      show_progress=False)

    stages = {"decode_serial": decode_serial, "decode_workers": decode_workers, "model": model_only,
              "pipeline": pipeline}
    seconds = {name: [] for name in stages}  # wall seconds per video, one value per round
    names = list(stages)
    for round_ in range(args.rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:  # rotate: load hits all alike
            started = time.perf_counter()
            stages[name]()
            seconds[name].append((time.perf_counter() - started) / len(paths))
    t = {name: statistics.median(values) for name, values in seconds.items()}
    serial_bound = 1.0 / (t["decode_serial"] + t["model"])
    overlap_bound = 1.0 / max(t["decode_serial"], t["model"])
    pipeline_rate = 1.0 / t["pipeline"]
    rows = [
        ["decode only, serial (this process)", f"{1 / t['decode_serial']:.2f}", f"{t['decode_serial'] * 1e3:.0f} ms"],
        [f"decode only, {args.num_workers} DataLoader workers", f"{1 / t['decode_workers']:.2f}",
         f"{t['decode_workers'] * 1e3:.0f} ms"],
        [f"model only, batch {args.batch_size}", f"{1 / t['model']:.2f}", f"{t['model'] * 1e3:.0f} ms"],
        ["serial bound 1 / (t_decode + t_model)", f"{serial_bound:.2f}", f"{1e3 / serial_bound:.0f} ms"],
        ["overlap bound 1 / max(t_decode, t_model)", f"{overlap_bound:.2f}", f"{1e3 / overlap_bound:.0f} ms"],
        [f"pipeline (encode_videos, {args.num_workers} workers)", f"{pipeline_rate:.2f}", f"{t['pipeline'] * 1e3:.0f} ms"],
    ]
    print(markdown_table(["Stage (median of rounds)", "Videos/s", "Per video"], rows))
    print(f"\npipeline / serial bound = {pipeline_rate / serial_bound:.2f} (required on CPU: >= 0.90), "
          f"pipeline / overlap bound = {pipeline_rate / overlap_bound:.2f}; load average after: {load_average()}")
    result = {"machine": machine_description(), "args": vars(args), "seconds_per_video": seconds,
              "t_decode_s": t["decode_serial"], "t_model_s": t["model"],
              "decode_workers_videos_per_s": 1 / t["decode_workers"], "pipeline_videos_per_s": pipeline_rate,
              "serial_bound_videos_per_s": serial_bound, "overlap_bound_videos_per_s": overlap_bound,
              "ratio_to_serial_bound": pipeline_rate / serial_bound}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
