"""Decoding speed of 12-frame sampling: modeling_pig.video_io against transformers' load_video and full decoding.

For every video in a folder (default: ../shared/data/videos) it times, per video:

* ``ours``: ``modeling_pig.video_io.read_video(path, 12)`` (test-mode sampling, RGB frames out);
* ``load_video``: ``transformers.video_utils.load_video(path, backend="pyav", sample_indices_fn=...)`` asked for
  the very same 12 indices (``linspace(0, n-1, 12)`` over the frame count it reads from the container);
* ``full (RGB)``: decoding every frame and converting each to RGB (decode everything, then index);
* ``full (decode only)``: decoding every frame without the RGB conversion, the floor of any full-decode approach.

Each time is the median of ``--repeats`` rounds in which the methods take turns (so that a change in machine
load hits them alike); ``frames/s`` is 12 sampled frames divided by the wall time. Speed-ups are given for wall
time and, in brackets, for CPU time, which a shared machine disturbs much less. The last columns say how ours
decoded the file (timestamp path with seeks and skipped non-reference frames, or the sequential counting
fallback) and how many frames load_video returned (it returns fewer than 12 silently when the container lists
more frames than decode). Prints a markdown table, and the machine's load average before and after.

``--seek_thresholds 2 4 8 12 never`` adds a second table: ours under each value of
``modeling_pig.video_io.SEEK_MIN_SKIPPED_PACKETS`` (set on the module for the run; ``never`` seeks only once, to
the first keyframe), interleaved the same way, with the packets each sends to the decoder.

``--baseline FILE`` adds a table of ours against another version of ``video_io.py`` (a single file without
relative imports, e.g. ``git show 1ffb09d:modeling_pig/video_io.py > /tmp/video_io_before.py``, the version
before issue 12), both ``read_video(path, 12)``, interleaved, with whether they return the same frames: the
regression check. ``--long_minutes M`` adds to that table a synthetic M-minute 320x180 H.264 video (one closed
GOP of 50 frames repeated; keyframes every 2 s), to show that 12 frames of a long video cost a few GOPs, not the
whole file (its full decode is not timed).

    python benchmarks/bench_decode.py [--videos DIR] [--repeats 9] [--quick] [--seek_thresholds 2 4 8 12 never]
                                      [--baseline FILE] [--long_minutes 30]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from tqdm import tqdm

from modeling_pig import video_io
from modeling_pig.video_io import decode_all_frames, read_video, sample_frame_indices

NUM_FRAMES = 12
DEFAULT_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".webm", ".mkv"}


def _time_interleaved(methods: dict, repeats: int) -> tuple[dict, dict, dict]:
    """Median wall time and median CPU time (s) of each method over ``repeats`` rounds, and its last result.

    One untimed warm-up call each (file cache, lazy imports), then the methods take turns inside every round,
    so that a change in machine load hits them alike; the order rotates from round to round, so that no method
    always runs first or last. CPU time (this process, all threads) is what the work costs; on a shared machine
    it varies less than wall time, which also counts waiting for a core.
    """
    results = {name: function() for name, function in methods.items()}
    wall = {name: [] for name in methods}
    cpu = {name: [] for name in methods}
    order = list(methods.items())
    for round_number in range(repeats):
        shift = round_number % len(order)
        for name, function in order[shift:] + order[:shift]:
            wall_start, cpu_start = time.perf_counter(), time.process_time()
            results[name] = function()
            wall[name].append(time.perf_counter() - wall_start)
            cpu[name].append(time.process_time() - cpu_start)
    return ({name: statistics.median(values) for name, values in wall.items()},
            {name: statistics.median(values) for name, values in cpu.items()}, results)


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
        wall, cpu, results = _time_interleaved({
            "ours": lambda: read_video(path, NUM_FRAMES),
            "load_video": lambda: _load_video_same_indices(path),
            "full_rgb": lambda: decode_all_frames(path),
            "full_decode": lambda: _decode_only(path),
        }, repeats)
        sample, load_frames, count = results["ours"], results["load_video"], results["full_decode"]
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            size = f"{stream.width}x{stream.height}"
            seconds = float(container.duration / av.time_base) if container.duration else float("nan")
        rows.append(dict(
            file=path.name, size=size, seconds=seconds, frames=count,
            **{f"{name}_s": value for name, value in wall.items()},
            **{f"{name}_cpu_s": value for name, value in cpu.items()},
            path=sample.decode_path, packets=sample.packets_decoded, seeks=sample.seeks,
            load_video_frames=len(load_frames),
        ))
    return rows


def markdown(rows: list[dict]) -> str:
    """The table: wall ms (sampled frames per second) per method, then speed-ups of ours as wall (CPU) ratios."""
    methods = ("ours", "load_video", "full_rgb", "full_decode")

    def timing(r, name):
        return f"{r[name + '_s'] * 1e3:.0f} ({NUM_FRAMES / r[name + '_s']:.0f})"

    def speedup(r, name):
        return f"{r[name + '_s'] / r['ours_s']:.2f}x ({r[name + '_cpu_s'] / r['ours_cpu_s']:.2f}x)"

    lines = [
        "| video | size | s | frames | ours ms (fr/s) | load_video ms (fr/s) | full RGB ms (fr/s) | full decode-only ms "
        "(fr/s) | vs load_video, wall (CPU) | vs full RGB, wall (CPU) | vs decode-only, wall (CPU) "
        "| ours: path, packets, seeks | load_video frames |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['file']} | {r['size']} | {r['seconds']:.1f} | {r['frames']} | "
            + " | ".join(timing(r, name) for name in methods) + " | "
            + " | ".join(speedup(r, name) for name in methods[1:])
            + f" | {r['path']}, {r['packets']}, {r['seeks']} | {r['load_video_frames']} |"
        )
    return "\n".join(lines)


NEVER = sys.maxsize  # a seek threshold no gap reaches: only the first positioning seek happens


def _threshold(text: str) -> int:
    if text == "never":
        return NEVER
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"a seek threshold must be >= 1 or 'never', got {text!r}")
    return value


def seek_threshold_sweep(videos: list[Path], thresholds: list[int], repeats: int) -> str:
    """Time ``read_video(path, 12)`` under each seek threshold, interleaved; a markdown table (one row per video)."""
    def under(threshold, path):
        def run():
            saved = video_io.SEEK_MIN_SKIPPED_PACKETS
            video_io.SEEK_MIN_SKIPPED_PACKETS = threshold
            try:
                return read_video(path, NUM_FRAMES)
            finally:
                video_io.SEEK_MIN_SKIPPED_PACKETS = saved
        return run

    names = ["never" if t == NEVER else str(t) for t in thresholds]
    lines = ["| video | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for path in tqdm(videos, desc="seek thresholds", file=sys.stderr):
        wall, cpu, results = _time_interleaved({name: under(t, path) for name, t in zip(names, thresholds)}, repeats)
        cells = [f"{wall[n] * 1e3:.0f} / {cpu[n] * 1e3:.0f} ({results[n].packets_decoded}, {results[n].seeks})"
                 for n in names]
        lines.append(f"| {path.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def make_long_video(path, minutes: float = 30.0, fps: int = 25, gop: int = 50, size=(320, 180)) -> Path:
    """A ``minutes``-long H.264 MP4 made of one closed GOP of ``gop`` frames, repeated (writing it takes seconds,
    not the encoding of every frame). Frame ``i`` shows the same picture as frame ``i % gop``: a colour of its
    own (red = 37 i mod 256), a green bar growing from the left edge, a blue ramp and a bright top-left block."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=2:open-gop=0"}
        packets = []
        for i in range(gop):
            image = np.zeros((height, width, 3), np.uint8)
            image[..., 0] = (i * 37) % 256
            image[:, : (i * 3) % width + 1, 1] = 220
            image[..., 2] = (np.arange(width)[None, :] * 4) % 256
            image[: max(height // 4, 1), : max(width // 4, 1)] = 250
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            packets += stream.encode(frame)
        packets += stream.encode()
        for copy in range(int(round(minutes * 60 * fps / gop))):
            for packet in packets:
                clone = av.Packet(bytes(packet))
                clone.pts, clone.dts = packet.pts + copy * gop, packet.dts + copy * gop
                clone.time_base, clone.stream, clone.is_keyframe = packet.time_base, stream, packet.is_keyframe
                container.mux(clone)
    return Path(path)


def load_baseline(path: Path):
    """Import another ``video_io.py`` (one file, no relative imports) under the name ``baseline_video_io``."""
    spec = importlib.util.spec_from_file_location("baseline_video_io", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def baseline_comparison(videos: list[Path], baseline, repeats: int) -> str:
    """Ours against ``baseline.read_video``, interleaved: a markdown table (one row per video)."""
    lines = ["| video | frames | ours wall / CPU ms | baseline wall / CPU ms | ours / baseline, wall (CPU) "
             "| ours: path, packets, seeks | baseline: path, packets, seeks | same frames |",
             "|---|---|---|---|---|---|---|---|"]
    for path in tqdm(videos, desc="baseline", file=sys.stderr):
        methods = {"ours": lambda: read_video(path, NUM_FRAMES)}
        if baseline is not None:
            methods["baseline"] = lambda: baseline.read_video(path, NUM_FRAMES)
        wall, cpu, results = _time_interleaved(methods, repeats)
        ours = results["ours"]

        def cells(name):
            if name not in results:
                return "-", "-"
            r = results[name]
            return f"{wall[name] * 1e3:.0f} / {cpu[name] * 1e3:.0f}", f"{r.decode_path}, {r.packets_decoded}, {r.seeks}"

        ratio = (f"{wall['ours'] / wall['baseline']:.2f}x ({cpu['ours'] / cpu['baseline']:.2f}x)"
                 if "baseline" in results else "-")
        same = ("yes" if np.array_equal(ours.frames, results["baseline"].frames) else "no") if "baseline" in results \
            else "-"
        (ours_time, ours_how), (base_time, base_how) = cells("ours"), cells("baseline")
        lines.append(f"| {path.name} | {ours.num_video_frames} | {ours_time} | {base_time} | {ratio} | {ours_how} "
                     f"| {base_how} | {same} |")
    return "\n".join(lines)


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, Python "
            f"{platform.python_version()}, PyAV {av.__version__} (FFmpeg libavcodec "
            f"{'.'.join(map(str, av.library_versions['libavcodec']))}), torch {torch.__version__}")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS, help="folder of videos")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds per video (medians)")
    parser.add_argument("--quick", action="store_true", help="smoke test: the smallest video, one repeat")
    parser.add_argument("--seek_thresholds", nargs="+", type=_threshold, default=None,
                        help="also time ours under these SEEK_MIN_SKIPPED_PACKETS values (ints or 'never')")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="also time ours against this other video_io.py (one file, no relative imports)")
    parser.add_argument("--long_minutes", type=float, default=None,
                        help="add a synthetic video this many minutes long to the baseline table")
    args = parser.parse_args(argv)
    videos = sorted(p for p in args.videos.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise SystemExit(f"no videos in {args.videos}")
    repeats = args.repeats
    if args.quick:
        videos, repeats = [min(videos, key=lambda p: p.stat().st_size)], 1
    load_before = os.getloadavg()
    rows = benchmark(videos, repeats)
    sweep = seek_threshold_sweep(videos, args.seek_thresholds, repeats) if args.seek_thresholds else None
    comparison = None
    if args.baseline is not None or args.long_minutes:
        with tempfile.TemporaryDirectory() as folder:
            extra = []
            if args.long_minutes:
                extra = [make_long_video(Path(folder) / f"synthetic_{args.long_minutes:g}min.mp4", args.long_minutes)]
            baseline = load_baseline(args.baseline) if args.baseline is not None else None
            comparison = baseline_comparison(videos + extra, baseline, repeats)
    load_after = os.getloadavg()
    print(f"Machine: {machine()}; median of {repeats} run(s); {NUM_FRAMES} frames, test-mode sampling; "
          f"load average (1/5/15 min) {_load(load_before)} before, {_load(load_after)} after.\n")
    print(markdown(rows))
    if sweep is not None:
        print("\nours by SEEK_MIN_SKIPPED_PACKETS: median wall / CPU ms (packets sent to the decoder, seeks)\n")
        print(sweep)
    if comparison is not None:
        print(f"\nours against {args.baseline or 'no baseline'}: median wall / CPU ms\n")
        print(comparison)
    return rows


def _load(averages) -> str:
    return "/".join(f"{value:.1f}" for value in averages)


if __name__ == "__main__":
    main()
