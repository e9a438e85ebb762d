"""Video decoding and frame sampling with PyAV (with :mod:`modeling_pig.video_container`, the only code that opens
media containers).

What a caller gets from :func:`read_video_frames` is ``num_frames`` RGB frames, ``uint8 [T, H, W, 3]``, picked as
the PIG authors pick them (``docs/pig-method.md`` §6.2 "Frame sampling"), from a clip of the file, decoded with
as little work as the file allows. The rule for what counts: **a frame is what the decoder outputs for the chosen
stream after the container's edit list**, as ffmpeg shows it; counts and timestamps come from the packets and the
decoder, never from a header's frame count or duration.

* **Stream**: the main video stream, by ffmpeg's rule (highest resolution; cover art and thumbnails skipped).
* **Frame index** ``i`` is the ``i``-th frame in presentation order. A cheap demux pass (no decoding) lists every
  packet with its timestamps and flags. Packets that an MP4/MOV edit list marks as pre-roll (stream-copy cuts,
  phone videos) are decoded but never shown, so they are not frames. When the stream starts mid-GOP or with the
  leading pictures of an open GOP (MPEG-TS/PS segments, HEVC cuts), the decoder drops what it cannot decode:
  those first packets are decoded once to learn which frames come out.
* **Decode only what is needed.** Frames are decoded in order and decoding stops after the last target. When the
  timestamps are trustworthy, the reader seeks to the keyframe before a target when that skips at least
  :data:`SEEK_MIN_SKIPPED_PACKETS` packets, and, for decoders known to honour it, skips non-reference frames that
  are not targets (``skip_frame="NONREF"``; nothing depends on them, so targets are bit-identical to a full
  decode). Any doubt (timestamps out of order, a seek that lands after its target, a frame the index lists that
  does not come out, a damaged target) falls back to a plain sequential decode from the first packet, which
  counts frames as they come out.
* **Damage** that the decoder conceals (a rejected packet, a frame flagged corrupt) is tolerated as ffmpeg
  tolerates it: counted in :attr:`VideoSample.decode_errors` and logged as a warning, never silent.
* **Geometry**: frames whose size differs from the stream's are scaled (bicubic) to it; the display matrix
  (rotation, phone videos) is applied by default as players do (``upright=False`` keeps the stored orientation,
  which is what the authors' decord pipeline gives).
* **Short videos** repeat frames (3 frames asked for 12 give ``[0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2]``); still
  images are 1-frame videos.
* **Clips** ``start``/``end`` (seconds from the first shown frame) select the frames displayed during
  ``[start, end)``. In MPEG-TS/PS, timestamp jumps of more than 10 s (discontinuities, as ffmpeg's
  ``-dts_delta_threshold``) are closed up, so seconds keep counting through them.
* **Errors** raise :class:`VideoDecodeError`, whose message names the file and the cause in words: a missing or
  unreadable file, no video stream, a file cut short before the end its container structure declares, a stream
  none of whose packets decodes, a clip that starts after the end. Bad arguments raise ``ValueError``.

Everything is opened and closed inside each call, so the functions are safe in ``DataLoader`` workers.
The index (what the frames are) is :mod:`modeling_pig.video_index`; opening, stream choice, truncation, damage
counting and frame geometry are :mod:`modeling_pig.video_container`. This module (the public API, sampling and
the two decoding paths, which share one set of invariants) is longer than the ~450 lines the project aims at,
mostly docstrings; splitting the two paths apart would separate code that must agree frame for frame.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import av

from .video_container import (
    DecodeStats,
    FrameGeometry,
    VideoDecodeError,
    choose_video_stream,
    decode_packet,
    describe_error,
    open_container,
    truncation_cause,
)
from .video_index import Timeline, index_stream, resolve_head

__all__ = [
    "VideoDecodeError",
    "VideoSample",
    "sample_frame_indices",
    "read_video",
    "read_video_frames",
    "decode_all_frames",
    "SEEK_MIN_SKIPPED_PACKETS",
    "VIDEO_EXTENSIONS",
    "find_videos",
]

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp", ".3g2",
                    ".mts", ".m2ts", ".ts", ".flv", ".ogv")
"""File name suffixes (lower case) treated as videos wherever files are found by name: `find_videos`
(`pig index`) and the benchmark loaders. Order matters to the loaders: when two files share a stem (video0.mp4
and video0.webm) the earlier extension wins."""

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

_KEEP_NEAR_TARGETS = 2  # the counting pass keeps this many frames before each target, for a count that differs
_TIME_EPS = 1e-6  # seconds; tolerance when comparing clip bounds with frame timestamps
# Decoders whose skip_frame="NONREF" drops exactly the frames nothing refers to (checked against full decodes in
# tests/test_video_corpus.py). Others (AV1 through libdav1d) decode every packet from the keyframe on.
_SKIP_NONREF_DECODERS = frozenset({"h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4", "vp8", "vp9"})


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
        frames: ``uint8 [num_frames, H, W, 3]`` RGB (upright unless ``upright=False`` was asked).
        indices: frame index of each row of ``frames`` within the whole video (presentation order).
        num_video_frames: frames in the video; None when only the part up to the clip's end was read.
        clip_range: ``(first, last)`` frame index of the clip that was sampled (both included).
        timestamps: seconds from the first frame, for each row of ``frames`` (empty when the file has neither
            timestamps nor a frame rate).
        decode_path: ``"timestamp"`` (seeks and skips allowed) or ``"sequential"`` (the counting fallback).
        packets_decoded: packets sent to the decoder, over all passes (skipped non-reference frames included).
        seeks: seeks made.
        decode_errors: damage the decoder concealed in the packets this read decoded (packets it rejected plus
            frames it flagged corrupt), as ffmpeg reports "Error while decoding"; 0 for a clean file.
        orientation: the transform applied to show the frames upright, in ffmpeg's filter names
            (``"transpose=clock"``, ``"hflip,vflip"``, ...); ``""`` when none was applied.
    """

    frames: np.ndarray
    indices: list[int]
    num_video_frames: int | None
    clip_range: tuple[int, int]
    timestamps: list[float] = field(default_factory=list)
    decode_path: str = "sequential"
    packets_decoded: int = 0
    seeks: int = 0
    decode_errors: int = 0
    orientation: str = ""


def read_video_frames(
    path: str | os.PathLike,
    num_frames: int = 12,
    mode: str = "test",
    start: float | None = None,
    end: float | None = None,
    generator: torch.Generator | None = None,
    *,
    upright: bool = True,
) -> np.ndarray:
    """Decode ``num_frames`` frames of a video file, sampled as the PIG authors do.

    Args:
        path: a video file (mp4, mov, avi, webm, mkv, ts, ...; anything FFmpeg plays, still images included).
        num_frames: frames to return.
        mode: ``"test"`` (evenly spaced, deterministic) or ``"train"`` (jittered ends); see
            :func:`sample_frame_indices`.
        start, end: optional clip bounds in seconds from the first frame; ``None`` means the video's start / end.
        generator: random source for ``mode="train"`` (torch's global RNG when None).
        upright: apply the display matrix (rotation/mirroring metadata of phone videos) as players do; False
            returns frames in their stored orientation, as the authors' decord pipeline does.

    Returns:
        ``uint8 [num_frames, H, W, 3]`` RGB frames.

    Raises:
        VideoDecodeError: the file is missing, unreadable, cut short, has no video stream or no decodable frame,
            or the clip lies outside the video.
        ValueError: invalid arguments.
    """
    return read_video(path, num_frames=num_frames, mode=mode, start=start, end=end, generator=generator,
                      upright=upright).frames


def read_video(
    path: str | os.PathLike,
    num_frames: int = 12,
    mode: str = "test",
    start: float | None = None,
    end: float | None = None,
    generator: torch.Generator | None = None,
    *,
    upright: bool = True,
) -> VideoSample:
    """Like :func:`read_video_frames`, but returns a :class:`VideoSample` (indices, timestamps, counts, errors)."""
    _check_clip_bounds(start, end)
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"num_frames must be an int >= 1, got {num_frames!r}")
    if mode not in ("test", "train"):
        raise ValueError(f"mode must be 'test' or 'train', got {mode!r}")
    path = _check_path(path)
    # The RNG state is kept so that, if the true frame count turns out to differ from the listed one, the
    # indices can be drawn again as if the true count had been known from the start (same draws, one result).
    rng_state = generator.get_state() if generator is not None else torch.get_rng_state()

    stats = DecodeStats()
    with open_container(path) as container:
        stream = choose_video_stream(container, path)
        stream_index = stream.index
        _check_complete(path)
        timeline = index_stream(container, stream, path, end)
        if timeline.head:
            timeline = resolve_head(path, stream_index, timeline, stats)
        geometry = FrameGeometry(stream, upright)
        plan = _SamplingPlan.make(timeline, num_frames, mode, start, end, generator, path)
        if timeline.timestamps_trusted:
            try:
                frames = _decode_by_timestamp(container, stream, timeline, plan.indices, stats, geometry)
                return plan.result(frames, timeline, "timestamp", stats, geometry)
            except _FallBack as reason:
                logger.debug("%s: decoding in order from the first frame (%s)", path, reason)
                stats.clear_errors()  # the counting pass decodes those packets again
        sampling = (num_frames, mode, start, end)
        packets = _rewind(container, stream, timeline)
        if packets is not None:
            return _read_sequentially(path, stream_index, packets, timeline, plan, sampling, generator, rng_state,
                                      stats, geometry)
    # The container could not be brought back to its first packet: open it again.
    with open_container(path) as container:
        packets = container.demux(container.streams[stream_index])
        return _read_sequentially(path, stream_index, packets, timeline, plan, sampling, generator, rng_state,
                                  stats, geometry)


def _read_sequentially(path, stream_index, packets, timeline, plan, sampling, generator, rng_state, stats,
                       geometry) -> VideoSample:
    """The counting fallback: decode ``packets`` (which start at the stream's first packet), counting frames.

    When the clip runs to the end of the video, decoding goes on to the end of the stream to count the frames
    that really come out. If the frames that came out differ from the index's (a count that differs, or a frame
    the decoder dropped on the way), the timeline is corrected from them and the indices are drawn again, with the
    same random draws (frames near each target are kept, so that this rarely needs a second pass).
    """
    num_frames, mode, start, end = sampling
    to_end = timeline.reached_end and plan.clip_range[1] == timeline.num_frames - 1
    kept, spare, seen = _decode_by_count(path, packets, plan.indices, _KEEP_NEAR_TARGETS, to_end, stats, geometry)
    if not seen:
        raise VideoDecodeError(f"{path}: no frame of the video stream decodes ({_why_nothing(stats)})")
    corrected = timeline.observed(seen, complete=to_end or len(seen) <= max(plan.indices))
    if corrected is not None:
        logger.debug("%s: the index lists %d frames, the decoder gives %d", path, timeline.num_frames, len(seen))
        timeline = corrected
        _restore_rng(generator, rng_state)
        plan = _SamplingPlan.make(timeline, num_frames, mode, start, end, generator, path)
        kept.update((i, spare[i]()) for i in set(plan.indices) - kept.keys() if i in spare)
        if not set(plan.indices) <= kept.keys():
            stats.clear_errors()
            with open_container(path) as container:
                packets = container.demux(container.streams[stream_index])
                kept, _, seen = _decode_by_count(path, packets, plan.indices, 0, False, stats, geometry)
            if len(seen) <= max(plan.indices):
                raise VideoDecodeError(f"{path}: the number of decodable frames changed between two decodes")
    return plan.result(kept, timeline, "sequential", stats, geometry)


def decode_all_frames(path: str | os.PathLike, *, upright: bool = True) -> np.ndarray:
    """Decode every frame of a video, in order: ``uint8 [N, H, W, 3]``, as ffmpeg shows them.

    The simple, slow reference (memory grows with the video's length; it counts frames as ffprobe's
    ``-count_frames`` does): :func:`read_video_frames` is what to use for sampling, and returns the very frames
    this gives at its indices. Same stream choice, damage handling, geometry and errors.
    """
    path = _check_path(path)
    stats = DecodeStats()
    with open_container(path) as container:
        stream = choose_video_stream(container, path)
        _check_complete(path)
        geometry = FrameGeometry(stream, upright)
        frames = []
        try:
            for packet in container.demux(stream):
                stats.packets += bool(packet.size)
                frames.extend(geometry.rgb(frame) for frame in decode_packet(packet, stats))
        except av.error.FFmpegError as err:
            raise VideoDecodeError(
                f"{path}: reading the video stream failed after {stats.packets} packets ({describe_error(err)}); "
                "the file is corrupt"
            ) from err
    if not frames:
        if not stats.packets:
            raise VideoDecodeError(f"{path}: the video stream holds no frames")
        raise VideoDecodeError(f"{path}: no frame of the video stream decodes ({_why_nothing(stats)})")
    _log_errors(path, stats)
    return np.stack(frames)


# ---------------------------------------------------------------------------------------------------------------
# Checks


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


def _check_complete(path: str) -> None:
    """A file that ends before its own container structure says it does is cut short: refused."""
    cause = truncation_cause(path)
    if cause is not None:
        raise VideoDecodeError(f"{path}: {cause}")


# ---------------------------------------------------------------------------------------------------------------
# Sampling plan


@dataclass
class _SamplingPlan:
    """Which frames to return: the clip range and the sampled indices (global, presentation order)."""

    indices: list[int]
    clip_range: tuple[int, int]
    path: str

    @classmethod
    def make(cls, timeline: Timeline, num_frames, mode, start, end, generator, path) -> "_SamplingPlan":
        first, last = _clip_range(timeline, start, end, path)
        local = sample_frame_indices(last - first + 1, num_frames, mode, generator)
        return cls([first + i for i in local], (first, last), path)

    def result(self, frames: dict, timeline: Timeline, decode_path: str, stats: DecodeStats,
               geometry: FrameGeometry) -> VideoSample:
        rows = [frames[i] for i in self.indices]  # repeated indices share one decoded frame
        _log_errors(self.path, stats)
        return VideoSample(
            frames=np.stack(rows),  # [T, H, W, 3]; every frame has the geometry's size
            indices=list(self.indices),
            num_video_frames=timeline.num_frames if timeline.reached_end else None,
            clip_range=self.clip_range,
            timestamps=[timeline.seconds[i] for i in self.indices] if timeline.seconds else [],
            decode_path=decode_path,
            packets_decoded=stats.packets,
            seeks=stats.seeks,
            decode_errors=stats.errors,
            orientation=geometry.orientation or "",
        )


def _clip_range(timeline: Timeline, start, end, path) -> tuple[int, int]:
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


# ---------------------------------------------------------------------------------------------------------------
# Decoding


class _FallBack(Exception):
    """The timestamp-driven decode cannot be trusted for this file; decode again sequentially."""


def _why_nothing(stats: DecodeStats) -> str:
    return stats.first_error or "the decoder output no frame"


def _log_errors(path: str, stats: DecodeStats) -> None:
    if stats.errors:
        logger.warning("%s: %d decode error(s) concealed while decoding the frames returned, as ffmpeg would show "
                       "them (first: %s)", path, stats.errors, stats.first_error)


def _decode_by_timestamp(container, stream, timeline: Timeline, indices: list[int], stats: DecodeStats,
                         geometry: FrameGeometry) -> dict:
    """Decode the target frames, identified by their timestamps; seek and skip where that saves work.

    Returns index -> RGB array for every distinct index. Raises _FallBack when the stream does not behave
    (out-of-order timestamps, a seek that lands past its target, a listed frame that does not come out, a damaged
    target, a decoder error).
    """
    rank_of_pts = {p: i for i, p in enumerate(timeline.pts)}
    remaining = sorted(set(indices))  # target ranks still to decode, ascending
    remaining_pts = {timeline.pts[i] for i in remaining}
    codec = stream.codec_context
    may_skip = codec.name in _SKIP_NONREF_DECODERS
    frames: dict[int, np.ndarray] = {}
    packets = None
    position = 0  # decode position (packet number) of the next packet to come
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
            if packets is None or (keyframe_position > seeked_position
                                   and keyframe_position - position >= SEEK_MIN_SKIPPED_PACKETS):
                packets, position = _seek(container, stream, timeline, keyframe, timeline.keyframe_dts.get(keyframe),
                                          keyframe_position)
                stats.seeks += 1
                # frames shown before the keyframe (leading pictures of an open GOP) are not decodable from here
                last_rank, seek_rank = -1, bisect.bisect_left(timeline.pts, keyframe)
                seeked_position = keyframe_position
            packet = next(packets, None)
            if packet is None:
                raise _FallBack("the stream ended before every target frame was decoded")
            if packet.size:
                position += 1
                stats.packets += 1
                if may_skip:  # non-reference frames that are not targets are skipped: no other frame needs them
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
                if rank > remaining[0]:
                    raise _FallBack("the decoder did not output a frame the index lists")
                last_rank = rank
                if frame.pts in remaining_pts:
                    if frame.is_corrupt:
                        raise _FallBack("the decoder flagged a target frame as corrupt")
                    frames[rank] = geometry.rgb(frame)
                    remaining_pts.discard(frame.pts)
                    remaining.remove(rank)
                    if not remaining:
                        break
                elif frame.is_corrupt:
                    stats.error("a frame the decoder flagged as corrupt (damage concealed)")
    except av.error.FFmpegError as err:
        raise _FallBack(describe_error(err)) from err
    finally:
        if skip_mode != "DEFAULT":
            codec.skip_frame = "DEFAULT"
    return frames


def _seek(container, stream, timeline: Timeline, pts: int, dts: int | None, max_position: int):
    """Seek so that demuxing resumes at or before decode position ``max_position`` (the packet with ``pts``/``dts``).

    Returns the packet iterator and the decode position of its first packet. Demuxers seek by pts (Matroska) or
    by dts (MP4, MPEG-TS; MPEG-TS also ignores keyframes), so the pts is tried first and the dts second; the first
    packet tells whether the landing is early enough. Raises _FallBack when neither is.
    """
    for target in dict.fromkeys((pts, dts)):
        if target is None:
            continue
        container.seek(target, stream=stream, backward=True)
        packets = container.demux(stream)
        first = next(packets, None)
        landing = timeline.decode_position.get(first.pts) if first is not None and first.size else None
        if landing is not None and landing <= max_position:
            return itertools.chain([first], packets), landing
    raise _FallBack(f"no seek lands at or before packet {max_position}")


def _rewind(container, stream, timeline: Timeline):
    """The container's packets from the stream's very first packet on (the decoder flushed by the seek), or None
    when seeking cannot get there; cheaper than opening the file again, which probes the streams anew."""
    first = timeline.entries[0]
    if first.pts is None:
        return None
    try:
        packets, _ = _seek(container, stream, timeline, first.pts, first.dts, max_position=0)
        return packets
    except (_FallBack, av.error.FFmpegError):
        return None


def _keyframe_before(timeline: Timeline, pts: int) -> int:
    """The pts of the last keyframe shown at or before ``pts`` (the first keyframe if none is)."""
    position = bisect.bisect_right(timeline.keyframe_pts, pts) - 1
    if position < 0:
        raise _FallBack("no keyframe before the target frame")
    return timeline.keyframe_pts[position]


def _decode_by_count(path: str, packets, indices, keep_before: int, to_end: bool, stats: DecodeStats,
                     geometry: FrameGeometry):
    """Decode ``packets`` (from the stream's first packet on), counting frames as they come out.

    Stops after the last target, or at the end of the stream when ``to_end``. Returns ``(kept, spare, seen)``:
    ``kept`` maps each target index to its RGB array; ``spare`` maps the ``keep_before`` frames before each target
    to a callable giving theirs (needed only if the count turns out to differ from the index); ``seen`` holds the
    pts of every frame decoded, so its length is the number of frames in the stream when it ended first. Damage is
    tolerated and counted (:func:`decode_packet`); an error of the demuxer is not (the file is corrupt there).

    Targets are converted as they come out. A frame the decoder has output may still change while it conceals
    damage (seen with H.264: frames at and after a damaged one, kept unconverted, later differed from a decode
    that converts each at once), so once damage has been met every kept frame is converted at once too; on a
    clean stream the spare frames wait, as they are rarely needed.
    """
    targets = set(indices)
    spares = {i - back for i in targets for back in range(1, keep_before + 1) if i - back >= 0} - targets
    last_target = max(indices)
    kept, waiting, seen = {}, {}, []
    try:
        for packet in packets:
            stats.packets += bool(packet.size)
            for frame in decode_packet(packet, stats):
                index = len(seen)
                if index in targets or (index in spares and stats.errors):
                    kept[index] = geometry.rgb(frame)
                elif index in spares:
                    waiting[index] = frame
                if stats.errors and waiting:
                    kept.update((i, geometry.rgb(f)) for i, f in waiting.items())
                    waiting.clear()
                seen.append(frame.pts)
                if len(seen) > last_target and not to_end:
                    return kept, _spare(waiting, geometry), seen
    except av.error.FFmpegError as err:
        raise VideoDecodeError(
            f"{path}: reading the video stream failed after {len(seen)} frames ({describe_error(err)}); "
            "the file is corrupt"
        ) from err
    return kept, _spare(waiting, geometry), seen


def _spare(waiting: dict, geometry: FrameGeometry) -> dict:
    return {index: (lambda frame=frame: geometry.rgb(frame)) for index, frame in waiting.items()}
