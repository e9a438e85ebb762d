"""Video decoding and frame sampling with PyAV: the only module that opens media containers.

What a caller gets from :func:`read_video_frames` is ``num_frames`` RGB frames, ``uint8 [T, H, W, 3]``, picked as
the PIG authors pick them (``docs/pig-method.md`` §6.2 "Frame sampling"), from a clip of the file, decoded with
as little work as the file allows:

* **Frame index** ``i`` means the ``i``-th frame in presentation order, counting the frames the decoder can
  actually produce. The count never comes from the container header (``stream.frames`` is 0 for many
  containers and wrong for some files): a cheap demux pass (no decoding) lists every packet and its timestamp.
* **Decode only what is needed.** Frames are decoded in order and decoding stops after the last target. When the
  timestamps are trustworthy, two more savings apply: the reader seeks to the keyframe before a target when that
  skips more than :data:`SEEK_MIN_SKIPPED_PACKETS` packets (that is, when keyframes are dense enough for a seek
  to pay), and non-reference frames that are not targets are skipped by the decoder (``skip_frame="NONREF"``;
  nothing else depends on them, so the targets are bit-identical to a full decode). Any doubt (timestamps out of
  order, a seek that lands after its target, a target that never comes out of the decoder) falls back to a plain
  sequential decode from the first frame, which counts frames as they come out.
* **Short videos** (fewer frames than asked) repeat frames: the sampling formula then yields repeated indices,
  e.g. 3 frames asked for 12 give ``[0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2]``.
* **Still images** (jpg, png, ... opened as a video) are 1-frame videos: the frame is repeated ``num_frames`` times.
* **Clips** ``start``/``end`` (seconds from the first frame) select the frames displayed during ``[start, end)``:
  frame ``i`` is on screen from its timestamp until the next frame's.
* **Errors**: a missing file, a file with no video stream, a corrupt or truncated file, and a decode that yields
  fewer frames than the container lists (beyond :data:`MAX_UNDECODABLE_FRAMES` trailing frames that some
  writers leave undecodable) raise :class:`VideoDecodeError`, whose message names the file and the cause.
  A clip that starts after the end of the video raises it too. Bad arguments raise ``ValueError``.
* Display rotation metadata (phone videos) is not applied, as in the authors' decord pipeline.

Everything is opened and closed inside each call, so the functions are safe in ``DataLoader`` workers.
"""

from __future__ import annotations

import bisect
import itertools
import math
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

import av

__all__ = [
    "VideoDecodeError",
    "VideoSample",
    "sample_frame_indices",
    "read_video",
    "read_video_frames",
    "decode_all_frames",
    "MAX_UNDECODABLE_FRAMES",
    "SEEK_MIN_SKIPPED_PACKETS",
    "VIDEO_EXTENSIONS",
    "find_videos",
]

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp", ".3g2",
                    ".mts", ".m2ts", ".ts", ".flv", ".ogv")
"""File name suffixes (lower case) treated as videos wherever files are found by name: `find_videos`
(`pig index`) and the benchmark loaders. Order matters to the loaders: when two files share a stem (video0.mp4
and video0.webm) the earlier extension wins."""

MAX_UNDECODABLE_FRAMES = 2
"""How many listed frames may fail to come out of the decoder before the file counts as corrupt.

Files written by some tools (e.g. OpenCV's writer) list a last packet that decodes to nothing; the frame count is
then the number of frames that did decode. More missing frames than this is a truncated or corrupt file."""

SEEK_MIN_SKIPPED_PACKETS = 4
"""Seek to the keyframe before the next target only when that skips at least this many packets.

Reading forward decodes every reference frame on the way; a seek costs a demuxer reposition and a decoder flush
(the keyframe it lands on is decoded either way). On the real sample videos (MP4/H.264, keyframes every 30-72
frames), 4 sends the decoder no more packets than 12 on any file and fewer on two (cup.mp4: 171 instead of 192 of
217; bikes.mp4: 228 instead of 237 of 250); the time differences between thresholds 2, 4, 8 and 12 were
within the noise of the shared 2-core build machine, while never seeking sent 10-27 % more packets on three
files and took the most CPU time on them. Measured with ``benchmarks/bench_decode.py --seek_thresholds``; see
docs/performance.md. 4 rather than 2 leaves a margin for containers whose seek is a search through the file
(MPEG-TS, Matroska without cues)."""

_READ_TIMEOUT_S = 60.0  # a stalled read (network filesystem) raises instead of hanging forever
_TIME_EPS = 1e-6  # seconds; tolerance when comparing clip bounds with frame timestamps
_TRUNCATION_TOLERANCE_S = 0.25  # frames may end this much before a declared stream duration


def find_videos(folder: str | os.PathLike, recursive: bool = False,
                extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[str]:
    """Absolute paths of the video files in `folder` (by extension, case-insensitive), sorted. Symbolic links
    keep their own names (two links to one file are two paths; `VideoIndex.build` indexes the file once)."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{folder}: not a folder")
    extensions = tuple(e.lower() for e in extensions)
    pattern = root.rglob("*") if recursive else root.glob("*")
    return sorted(os.path.abspath(p) for p in pattern if p.is_file() and p.suffix.lower() in extensions)


class VideoDecodeError(RuntimeError):
    """A video file could not be decoded into the frames asked for.

    Raised for a missing file, a file with no video stream, a corrupt or truncated file, a decode that yields
    fewer frames than the container lists, and a clip outside the video. The message names the file and the cause.
    """


def sample_frame_indices(
    num_video_frames: int,
    num_frames: int,
    mode: str = "test",
    generator: torch.Generator | None = None,
) -> list[int]:
    """Frame indices to decode, as the PIG authors sample them (pig-method.md §6.2).

    * ``mode="test"``: ``linspace(0, n-1, num_frames)`` truncated to int.
    * ``mode="train"``: evenly spaced with randomly jittered ends: ``iv = int(n / (num_frames-1))``,
      ``start ~ U{0..iv}``, ``end ~ U{n-1-iv .. n-1}`` (drawn in that order from ``generator``, or from torch's
      global RNG when it is None), then ``linspace(start, end, num_frames)`` truncated to int. ``iv`` is capped at
      ``(n-1)//2`` so that the ends never cross; that cap only matters for ``num_frames <= 3`` on tiny videos.
      With ``num_frames == 1`` the one index is drawn uniformly from all frames.

    A video shorter than ``num_frames`` gets repeated indices (the formula does this by itself).

    Args:
        num_video_frames: frames in the video (or clip), ``n >= 1``.
        num_frames: frames to sample, ``>= 1``.
        mode: ``"test"`` (deterministic) or ``"train"`` (jittered).
        generator: the random source for train mode.

    Returns:
        ``num_frames`` non-decreasing indices in ``[0, n-1]``.
    """
    if isinstance(num_video_frames, bool) or not isinstance(num_video_frames, (int, np.integer)) or num_video_frames < 1:
        raise ValueError(f"num_video_frames must be an int >= 1, got {num_video_frames!r}")
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if mode not in ("test", "train"):
        raise ValueError(f"mode must be 'test' or 'train', got {mode!r}")
    last = int(num_video_frames) - 1
    if mode == "test":
        first_index, last_index = 0, last
    elif num_frames == 1:
        return [_randint(0, last, generator)]
    else:
        interval = min(int(num_video_frames / (num_frames - 1)), last // 2)
        first_index = _randint(0, interval, generator)
        last_index = _randint(last - interval, last, generator)
    # numpy's linspace, as in the authors' code, so that truncation gives the very same integers
    return np.linspace(first_index, last_index, int(num_frames)).astype(int).tolist()


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """One integer uniformly from ``{low..high}`` (both ends included)."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


@dataclass
class VideoSample:
    """Frames sampled from a video, with where they came from.

    Attributes:
        frames: ``uint8 [num_frames, H, W, 3]`` RGB.
        indices: frame index of each row of ``frames`` within the whole video (presentation order).
        num_video_frames: decodable frames in the video; None when only the part up to the clip's end was read.
        clip_range: ``(first, last)`` frame index of the clip that was sampled (both included).
        timestamps: seconds from the first frame, for each row of ``frames`` (empty when the file has neither
            timestamps nor a frame rate).
        decode_path: ``"timestamp"`` (seeks and skips allowed) or ``"sequential"`` (the counting fallback).
        packets_decoded: packets sent to the decoder, over all passes (skipped non-reference frames included).
        seeks: seeks made.
    """

    frames: np.ndarray
    indices: list[int]
    num_video_frames: int | None
    clip_range: tuple[int, int]
    timestamps: list[float] = field(default_factory=list)
    decode_path: str = "sequential"
    packets_decoded: int = 0
    seeks: int = 0


def read_video_frames(
    path: str | os.PathLike,
    num_frames: int = 12,
    mode: str = "test",
    start: float | None = None,
    end: float | None = None,
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Decode ``num_frames`` frames of a video file, sampled as the PIG authors do.

    Args:
        path: a video file (mp4, mov, avi, webm, mkv, ...; anything FFmpeg reads, still images included).
        num_frames: frames to return.
        mode: ``"test"`` (evenly spaced, deterministic) or ``"train"`` (jittered ends); see
            :func:`sample_frame_indices`.
        start, end: optional clip bounds in seconds from the first frame; ``None`` means the video's start / end.
        generator: random source for ``mode="train"`` (torch's global RNG when None).

    Returns:
        ``uint8 [num_frames, H, W, 3]`` RGB frames.

    Raises:
        VideoDecodeError: the file is missing, has no video stream, is corrupt or truncated, or the clip lies
            outside the video.
        ValueError: invalid arguments.
    """
    return read_video(path, num_frames=num_frames, mode=mode, start=start, end=end, generator=generator).frames


def read_video(
    path: str | os.PathLike,
    num_frames: int = 12,
    mode: str = "test",
    start: float | None = None,
    end: float | None = None,
    generator: torch.Generator | None = None,
) -> VideoSample:
    """Like :func:`read_video_frames`, but also returns the indices, timestamps and frame count (a :class:`VideoSample`)."""
    _check_clip_bounds(start, end)
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if mode not in ("test", "train"):
        raise ValueError(f"mode must be 'test' or 'train', got {mode!r}")
    path = _check_path(path)
    # The RNG state is kept so that, if the true frame count turns out smaller than the listed one, the
    # indices can be drawn again as if the true count had been known from the start (same draws, one result).
    rng_state = generator.get_state() if generator is not None else torch.get_rng_state()

    stats = _DecodeStats()
    with _open(path) as container:
        stream = _video_stream(container, path)
        timeline = _index_stream(container, stream, path, end)
        plan = _SamplingPlan.make(timeline, num_frames, mode, start, end, generator, path)
        if timeline.timestamps_trusted:
            try:
                frames = _decode_by_timestamp(container, stream, timeline, plan.indices, stats)
                return plan.result(frames, timeline, "timestamp", stats)
            except _FallBack:
                pass  # decode again below, counting frames: the slower path that needs no timestamps
        sampling = (num_frames, mode, start, end)
        packets = _rewind(container, stream, timeline)
        if packets is not None:
            return _read_sequentially(path, packets, timeline, plan, sampling, generator, rng_state, stats)
    # The container could not be brought back to its first packet: open it again.
    with _open(path) as container:
        packets = container.demux(_video_stream(container, path))
        return _read_sequentially(path, packets, timeline, plan, sampling, generator, rng_state, stats)


def _read_sequentially(path, packets, timeline, plan, sampling, generator, rng_state, stats) -> VideoSample:
    """The counting fallback: decode ``packets`` (which start at the stream's first packet), counting frames.

    When the clip runs to the end of the video, decoding goes on to the end of the stream to count the frames
    that really decode; if that is fewer than the container lists (by at most MAX_UNDECODABLE_FRAMES), the
    indices are drawn again, with the same random draws, for the true count. Frames up to
    MAX_UNDECODABLE_FRAMES before each target are kept, so that this rarely needs a second pass.
    """
    num_frames, mode, start, end = sampling
    to_end = timeline.reached_end and plan.clip_range[1] == timeline.num_frames - 1
    kept, decoded_count = _decode_by_count(packets, plan.indices, path, MAX_UNDECODABLE_FRAMES, to_end, stats)
    if decoded_count < timeline.num_frames and (to_end or decoded_count <= max(plan.indices)):
        missing = timeline.num_frames - decoded_count
        if decoded_count == 0 or missing > MAX_UNDECODABLE_FRAMES:
            raise VideoDecodeError(
                f"{path}: the container lists {timeline.num_frames} video frames but only {decoded_count} "
                "could be decoded; the file is truncated or corrupt"
            )
        timeline = timeline.truncated(decoded_count)
        _restore_rng(generator, rng_state)
        plan = _SamplingPlan.make(timeline, num_frames, mode, start, end, generator, path)
        if not set(plan.indices) <= kept.keys():
            with _open(path) as container:
                packets = container.demux(_video_stream(container, path))
                kept, decoded_count = _decode_by_count(packets, plan.indices, path, 0, False, stats)
            if decoded_count <= max(plan.indices):
                raise VideoDecodeError(f"{path}: the number of decodable frames changed between two decodes")
    corrupt = sorted(i for i in set(plan.indices) if kept[i].is_corrupt)
    if corrupt:
        raise VideoDecodeError(f"{path}: the decoder flagged frame(s) {corrupt} as corrupt; the file is damaged")
    frames = {i: kept[i].to_ndarray(format="rgb24") for i in set(plan.indices)}
    return plan.result(frames, timeline, "sequential", stats)


def decode_all_frames(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame of a video, in order: ``uint8 [N, H, W, 3]``.

    The simple, slow reference (memory grows with the video's length); :func:`read_video_frames` is what to use
    for sampling. Raises :class:`VideoDecodeError` like it.
    """
    path = _check_path(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        frames = []
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    frames.append(frame.to_ndarray(format="rgb24"))
        except av.error.FFmpegError as err:
            raise VideoDecodeError(f"{path}: decoding failed after {len(frames)} frames ({_describe(err)})") from err
    if not frames:
        raise VideoDecodeError(f"{path}: the video stream contains no decodable frame")
    return _stack(frames, path)


# ---------------------------------------------------------------------------------------------------------------
# Opening and indexing


def _check_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"a video path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise VideoDecodeError(f"{path}: file not found")
    if not os.path.isfile(path):
        raise VideoDecodeError(f"{path}: not a regular file")
    return path


def _check_clip_bounds(start, end) -> None:
    for name, value in (("start", start), ("end", end)):
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number of seconds or None, got {value!r}")
    if start is not None and start < 0:
        raise ValueError(f"start must be >= 0 seconds, got {start}")
    if start is not None and end is not None and end <= start:
        raise ValueError(f"end ({end}) must be greater than start ({start})")


def _describe(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}"


def _open(path: str):
    try:
        return av.open(path, metadata_errors="ignore", timeout=_READ_TIMEOUT_S)
    except av.error.FFmpegError as err:
        raise VideoDecodeError(f"{path}: not a readable media file ({_describe(err)})") from err


def _video_stream(container, path: str):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoDecodeError(f"{path}: the file has no video stream (streams: {', '.join(kinds)})")
    return container.streams.video[0]


@dataclass
class _Timeline:
    """Every frame of the stream (up to where indexing stopped), from one demux pass without decoding.

    ``pts`` are sorted (presentation order), so frame ``i`` has timestamp ``pts[i]``. ``keyframe_pts`` and
    ``decode_position`` (packet number in decode order, per pts) drive seeking. Without usable timestamps
    (``pts is None``), times come from the frame rate and only the sequential decode is used.
    """

    num_frames: int
    pts: list[int] | None
    seconds: list[float]
    keyframe_pts: list[int]
    keyframe_dts: dict[int, int | None]
    decode_position: dict[int, int]
    timestamps_trusted: bool
    reached_end: bool
    first_packet: tuple[int | None, int | None] = (None, None)  # (pts, dts) of the first packet in decode order

    def truncated(self, num_frames: int) -> "_Timeline":
        """The same timeline with only its first ``num_frames`` frames (the ones that decode)."""
        return _Timeline(
            num_frames=num_frames,
            pts=None if self.pts is None else self.pts[:num_frames],
            seconds=self.seconds[:num_frames],
            keyframe_pts=self.keyframe_pts,
            keyframe_dts=self.keyframe_dts,
            decode_position=self.decode_position,
            timestamps_trusted=False,
            reached_end=self.reached_end,
            first_packet=self.first_packet,
        )


def _index_stream(container, stream, path: str, end: float | None) -> _Timeline:
    """Demux (no decoding) the video packets, up to the clip's end when one is given; check none is missing."""
    time_base = stream.time_base
    entries = []  # (pts, dts, is_keyframe) in decode order, non-empty packets only
    listed = 0  # packets the demuxer gave, empty ones included (old AVI files mark dropped frames so)
    end_pts = None
    reached_end = True
    try:
        for packet in container.demux(stream):
            if packet.size == 0 and packet.pts is None and packet.dts is None:
                continue  # the empty packet PyAV appends at the end to flush the decoder
            listed += 1
            if packet.size == 0:
                continue
            if end_pts is None and end is not None and entries and entries[0][0] is not None and time_base:
                end_pts = entries[0][0] + math.ceil(end / time_base) + 1
            if end_pts is not None and packet.dts is not None and packet.dts > end_pts and len(entries) > 1:
                # decode timestamps only grow and pts >= dts: no later packet can be shown before `end`
                reached_end = False
                break
            entries.append((packet.pts, packet.dts, bool(packet.is_keyframe)))
    except av.error.FFmpegError as err:
        raise VideoDecodeError(
            f"{path}: reading the video stream failed after {len(entries)} packets ({_describe(err)}); "
            "the file is truncated or corrupt"
        ) from err
    if reached_end and stream.frames and stream.frames - listed > MAX_UNDECODABLE_FRAMES:
        raise VideoDecodeError(
            f"{path}: the container header lists {stream.frames} video frames but only {listed} could be read; "
            "the file is truncated"
        )
    if not entries:
        raise VideoDecodeError(f"{path}: the video stream contains no frame")

    all_pts = [e[0] for e in entries]
    if all(p is not None for p in all_pts) and len(set(all_pts)) == len(all_pts):
        pts_sorted = sorted(all_pts)
        seconds = [float((p - pts_sorted[0]) * time_base) for p in pts_sorted]
        # A stream whose codec reorders frames (B-frames) but whose packets all carry pts == dts (OpenCV's
        # writer does this) has timestamps that do not give the display order: only counting decoded frames
        # is right then. Such files are told apart here; anything subtler is caught while decoding.
        reorders = bool(getattr(stream.codec_context, "has_b_frames", 0))
        pts_copied_from_dts = all(e[0] == e[1] for e in entries) and all(a < b for a, b in zip(all_pts, all_pts[1:]))
        timeline = _Timeline(
            num_frames=len(entries),
            pts=pts_sorted,
            seconds=seconds,
            keyframe_pts=sorted(e[0] for e in entries if e[2]),
            keyframe_dts={e[0]: e[1] for e in entries if e[2]},
            decode_position={e[0]: i for i, e in enumerate(entries)},
            timestamps_trusted=not (reorders and pts_copied_from_dts) and len(entries) > 1,
            reached_end=reached_end,
            first_packet=entries[0][:2],
        )
    else:
        rate = stream.average_rate or stream.guessed_rate
        seconds = [i / float(rate) for i in range(len(entries))] if rate else []
        timeline = _Timeline(len(entries), None, seconds, [], {}, {}, False, reached_end)
    if reached_end and not stream.frames:
        _check_duration(stream, timeline, path)
    return timeline


def _check_duration(stream, timeline: _Timeline, path: str) -> None:
    """For containers that list no frame count (Matroska/WebM, MPEG-TS, ...), compare the stream's declared
    duration with the time its frames cover: a file cut short keeps its header and loses its last frames."""
    declared = None
    if stream.duration and stream.time_base:
        declared = float(stream.duration * stream.time_base)
    else:
        declared = _parse_duration_tag(stream.metadata.get("DURATION") or stream.metadata.get("duration"))
    seconds = timeline.seconds
    if declared is None or len(seconds) < 2:
        return
    frame_duration = (seconds[-1] - seconds[0]) / (len(seconds) - 1)
    covered = seconds[-1] + frame_duration
    if declared - covered > max(_TRUNCATION_TOLERANCE_S, 3 * frame_duration):
        raise VideoDecodeError(
            f"{path}: the video stream declares {declared:.3f} s but its frames end at {covered:.3f} s; "
            "the file is truncated"
        )


def _parse_duration_tag(value) -> float | None:
    """Matroska's per-track ``DURATION`` tag, ``HH:MM:SS.nnnnnnnnn``; None when absent or unreadable."""
    if not value:
        return None
    try:
        hours, minutes, secs = str(value).strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(secs)
    except ValueError:
        return None


@dataclass
class _SamplingPlan:
    """Which frames to return: the clip range and the sampled indices (global, presentation order)."""

    indices: list[int]
    clip_range: tuple[int, int]
    path: str

    @classmethod
    def make(cls, timeline: _Timeline, num_frames, mode, start, end, generator, path) -> "_SamplingPlan":
        first, last = _clip_range(timeline, start, end, path)
        local = sample_frame_indices(last - first + 1, num_frames, mode, generator)
        return cls([first + i for i in local], (first, last), path)

    def result(self, frames: dict, timeline: _Timeline, decode_path: str, stats: "_DecodeStats") -> VideoSample:
        rows = [frames[i] for i in self.indices]  # repeated indices share one decoded frame
        return VideoSample(
            frames=_stack(rows, self.path),
            indices=list(self.indices),
            num_video_frames=timeline.num_frames if timeline.reached_end else None,
            clip_range=self.clip_range,
            timestamps=[timeline.seconds[i] for i in self.indices] if timeline.seconds else [],
            decode_path=decode_path,
            packets_decoded=stats.packets,
            seeks=stats.seeks,
        )


def _clip_range(timeline: _Timeline, start, end, path) -> tuple[int, int]:
    """First and last frame shown during ``[start, end)`` seconds; the whole video when both are None."""
    last = timeline.num_frames - 1
    if start is None and end is None:
        return 0, last
    seconds = timeline.seconds
    if not seconds:
        raise VideoDecodeError(f"{path}: cannot cut a clip: the video has neither timestamps nor a frame rate")
    first_index = 0
    if start is not None:
        # the frame on screen at `start` is the last one whose timestamp is <= start
        first_index = max(bisect.bisect_right(seconds, start + _TIME_EPS) - 1, 0)
        if timeline.reached_end and first_index == last:
            frame_duration = seconds[-1] - seconds[-2] if len(seconds) > 1 else 0.0
            if start >= seconds[-1] + frame_duration - _TIME_EPS and start > 0:
                raise VideoDecodeError(
                    f"{path}: the clip starts at {start:.3f} s but the video ends at "
                    f"{seconds[-1] + frame_duration:.3f} s"
                )
    last_index = last
    if end is not None:
        last_index = max(bisect.bisect_left(seconds, end - _TIME_EPS) - 1, first_index)
    return first_index, last_index


def _restore_rng(generator, state) -> None:
    if generator is not None:
        generator.set_state(state)
    else:
        torch.set_rng_state(state)


def _stack(frames: list[np.ndarray], path: str) -> np.ndarray:
    shapes = {f.shape for f in frames}
    if len(shapes) > 1:
        raise VideoDecodeError(f"{path}: the frame size changes inside the video ({sorted(shapes)})")
    return np.stack(frames)  # [T, H, W, 3]


# ---------------------------------------------------------------------------------------------------------------
# Decoding


class _FallBack(Exception):
    """The timestamp-driven decode cannot be trusted for this file; decode again sequentially."""


@dataclass
class _DecodeStats:
    packets: int = 0  # packets sent to the decoder
    seeks: int = 0


def _decode_by_timestamp(container, stream, timeline: _Timeline, indices: list[int], stats: _DecodeStats) -> dict:
    """Decode the target frames, identified by their timestamps; seek and skip where that saves work.

    Returns index -> RGB array for every distinct index. Raises _FallBack when the stream does not behave
    (out-of-order timestamps, a seek that lands past its target, a target that never comes out, a decoder error).
    """
    rank_of_pts = {p: i for i, p in enumerate(timeline.pts)}
    remaining = sorted(set(indices))  # target ranks still to decode, ascending
    remaining_pts = {timeline.pts[i] for i in remaining}
    codec = stream.codec_context
    frames: dict[int, np.ndarray] = {}
    packets = None
    position = None  # decode position (packet number) after the last packet sent; None right after a seek
    seeked_position = -1  # decode position of the keyframe the last seek aimed at
    last_rank = seek_rank = -1
    skip_mode = "DEFAULT"
    try:
        while remaining:
            keyframe = _keyframe_before(timeline, timeline.pts[remaining[0]])
            keyframe_position = timeline.decode_position[keyframe]
            # Seeks only ever aim at a later keyframe than the last one: a demuxer may land a whole GOP early
            # (seen on VFR MP4 files with B-frames), and aiming at the same keyframe again lands there again, forever.
            # So every keyframe is sought at most once and the loop ends.
            if packets is None or (position is not None and keyframe_position > seeked_position
                                   and keyframe_position - position >= SEEK_MIN_SKIPPED_PACKETS):
                packets = _seek(container, stream, timeline, keyframe, timeline.keyframe_dts.get(keyframe),
                                keyframe_position)
                stats.seeks += 1
                position, last_rank, seek_rank = None, -1, rank_of_pts[keyframe]
                seeked_position = keyframe_position
            packet = next(packets, None)
            if packet is None:
                raise _FallBack("the stream ended before every target frame was decoded")
            if packet.size:
                packet_position = timeline.decode_position.get(packet.pts)
                if packet_position is None:
                    raise _FallBack("a packet has a timestamp the index did not list")
                position = packet_position + 1
                stats.packets += 1
                # Non-reference frames that are not targets are skipped: no other frame depends on them.
                mode = "DEFAULT" if packet.pts in remaining_pts else "NONREF"
                if mode != skip_mode:
                    codec.skip_frame = mode
                    skip_mode = mode
            for frame in packet.decode():
                rank = rank_of_pts.get(frame.pts)
                if rank is None:
                    raise _FallBack("the decoder produced a frame with an unknown timestamp")
                if rank < seek_rank:
                    continue  # a leading frame of an open GOP, shown before the keyframe we seeked to
                if rank <= last_rank:
                    raise _FallBack("the decoder produced frames out of timestamp order")
                last_rank = rank
                if frame.pts in remaining_pts:
                    if frame.is_corrupt:
                        raise _FallBack("the decoder flagged a target frame as corrupt")
                    frames[rank] = frame.to_ndarray(format="rgb24")
                    remaining_pts.discard(frame.pts)
                    remaining.remove(rank)
    except av.error.FFmpegError as err:
        raise _FallBack(_describe(err)) from err
    finally:
        if skip_mode != "DEFAULT":
            codec.skip_frame = "DEFAULT"
    return frames


def _seek(container, stream, timeline: _Timeline, pts: int, dts: int | None, max_position: int):
    """Seek so that demuxing resumes at or before decode position ``max_position`` (the packet with ``pts``/``dts``).

    Returns the packet iterator. Demuxers seek by pts (Matroska) or by dts (MP4, MPEG-TS; MPEG-TS also ignores
    keyframes), so the pts is tried first and the dts second; the first packet tells whether the landing is
    early enough. Raises _FallBack when neither is.
    """
    for target in dict.fromkeys((pts, dts)):
        if target is None:
            continue
        container.seek(target, stream=stream, backward=True)
        packets = container.demux(stream)
        first = next(packets, None)
        landing = timeline.decode_position.get(first.pts) if first is not None and first.size else None
        if landing is not None and landing <= max_position:
            return itertools.chain([first], packets)
    raise _FallBack(f"no seek lands at or before packet {max_position}")


def _rewind(container, stream, timeline: _Timeline):
    """The container's packets from the stream's very first packet on, or None when seeking cannot get there."""
    if timeline.pts is None:
        return None
    try:
        return _seek(container, stream, timeline, *timeline.first_packet, max_position=0)
    except (_FallBack, av.error.FFmpegError):
        return None


def _keyframe_before(timeline: _Timeline, pts: int) -> int:
    """The pts of the last keyframe shown at or before ``pts`` (the first keyframe if none is)."""
    position = bisect.bisect_right(timeline.keyframe_pts, pts) - 1
    if position < 0:
        raise _FallBack("no keyframe before the target frame")
    return timeline.keyframe_pts[position]


def _decode_by_count(packets, indices, path: str, keep_before: int, to_end: bool, stats: _DecodeStats):
    """Decode ``packets`` (from the stream's first packet on), counting frames as they come out.

    Keeps (as PyAV frames, not yet converted to RGB) every frame whose index lies within ``keep_before`` frames
    before a target, the targets included. Stops after the last target, or at the end of the stream when
    ``to_end``. Returns ``(kept, count)``: ``count`` is the number of frames decoded, which is the number of
    frames in the stream when it ended first.
    """
    keep = {i - back for i in indices for back in range(keep_before + 1) if i - back >= 0}
    last_target = max(indices)
    kept = {}
    count = 0
    try:
        for packet in packets:
            stats.packets += bool(packet.size)
            for frame in packet.decode():
                if count in keep:
                    kept[count] = frame
                count += 1
                if count > last_target and not to_end:
                    return kept, count
    except av.error.FFmpegError as err:
        raise VideoDecodeError(
            f"{path}: decoding failed after {count} frames ({_describe(err)}); the file is corrupt or truncated"
        ) from err
    return kept, count
