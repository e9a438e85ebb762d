"""Decoding speed of 12-frame sampling: modeling_pig.video_io against transformers' load_video and full decoding.

For every video in a folder (default: ../shared/data/videos) it times, per video:

* ``ours``: ``modeling_pig.video_io.read_video(path, 12)`` (test-mode sampling, RGB frames out);
* ``load_video``: ``transformers.video_utils.load_video(path, backend="pyav", sample_indices_fn=...)`` asked for
  the very same 12 indices (``linspace(0, n-1, 12)`` over the frame count it reads from the container);
* ``full (RGB)``: decoding every frame and converting each to RGB (decode everything, then index);
* ``full (decode only)``: decoding every frame without the RGB conversion, the floor of any full-decode approach.

Each time is the median of ``--repeats`` runs; ``frames/s`` is 12 sampled frames divided by that time. The last
columns say how ours decoded the file (timestamp path with seeks and skipped non-reference frames, or the
sequential counting fallback) and how many frames load_video returned (it returns fewer than 12 silently when the
container lists more frames than decode). Prints a markdown table.

    python benchmarks/bench_decode.py [--videos DIR] [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch
from tqdm import tqdm

from modeling_pig.video_io import decode_all_frames, read_video, sample_frame_indices

NUM_FRAMES = 12
DEFAULT_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".webm", ".mkv"}


def _time(function, repeats: int) -> tuple[float, object]:
    """Median wall time in seconds over ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _decode_only(path: Path) -> int:
    """Decode every frame, no RGB conversion; returns the frame count."""
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _load_video_same_indices(path: Path):
    from transformers.video_utils import load_video

    def same_indices(metadata, **kwargs):
        return np.asarray(sample_frame_indices(int(metadata.total_num_frames), NUM_FRAMES))

    frames, _ = load_video(str(path), backend="pyav", sample_indices_fn=same_indices)
    return frames


def benchmark(videos: list[Path], repeats: int) -> list[dict]:
    """Time every method on every video; one row (dict) per video."""
    rows = []
    for path in tqdm(videos, desc="videos", file=sys.stderr):
        ours_s, sample = _time(lambda: read_video(path, NUM_FRAMES), repeats)
        load_s, load_frames = _time(lambda: _load_video_same_indices(path), repeats)
        full_s, _ = _time(lambda: decode_all_frames(path), repeats)
        decode_s, count = _time(lambda: _decode_only(path), repeats)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            size = f"{stream.width}x{stream.height}"
            seconds = float(container.duration / av.time_base) if container.duration else float("nan")
        rows.append(dict(
            file=path.name, size=size, seconds=seconds, frames=count, ours_s=ours_s, load_video_s=load_s,
            full_rgb_s=full_s, full_decode_s=decode_s, path=sample.decode_path, packets=sample.packets_decoded,
            seeks=sample.seeks, load_video_frames=len(load_frames),
        ))
    return rows


def markdown(rows: list[dict]) -> str:
    """The table (times in ms, throughput in sampled frames per second, speed-ups as ratios)."""
    def rate(seconds):
        return f"{NUM_FRAMES / seconds:.0f}"

    lines = [
        "| video | size | s | frames | ours ms (fr/s) | load_video ms (fr/s) | full RGB ms (fr/s) | full decode-only ms "
        "(fr/s) | vs load_video | vs full RGB | vs decode-only | ours: path, packets, seeks | load_video frames |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['file']} | {r['size']} | {r['seconds']:.1f} | {r['frames']} "
            f"| {r['ours_s'] * 1e3:.0f} ({rate(r['ours_s'])}) | {r['load_video_s'] * 1e3:.0f} ({rate(r['load_video_s'])}) "
            f"| {r['full_rgb_s'] * 1e3:.0f} ({rate(r['full_rgb_s'])}) | {r['full_decode_s'] * 1e3:.0f} ({rate(r['full_decode_s'])}) "
            f"| {r['load_video_s'] / r['ours_s']:.2f}x | {r['full_rgb_s'] / r['ours_s']:.2f}x "
            f"| {r['full_decode_s'] / r['ours_s']:.2f}x | {r['path']}, {r['packets']}, {r['seeks']} "
            f"| {r['load_video_frames']} |"
        )
    return "\n".join(lines)


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, Python "
            f"{platform.python_version()}, PyAV {av.__version__} (FFmpeg libavcodec "
            f"{'.'.join(map(str, av.library_versions['libavcodec']))}), torch {torch.__version__}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder of videos")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per method and video (median)")
    parser.add_argument("--quick", action="store_true", help="smoke test: the smallest video, one repeat")
    args = parser.parse_args(argv)
    videos = sorted(p for p in args.videos.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise SystemExit(f"no videos in {args.videos}")
    repeats = args.repeats
    if args.quick:
        videos, repeats = [min(videos, key=lambda p: p.stat().st_size)], 1
    rows = benchmark(videos, repeats)
    print(f"Machine: {machine()}; median of {repeats} run(s); {NUM_FRAMES} frames, test-mode sampling.\n")
    print(markdown(rows))
    return rows


if __name__ == "__main__":
    main()
