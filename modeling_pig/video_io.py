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
This module is longer than the ~450 lines the project aims at: the three decoding paths (timestamp, counting,
head) share one index and one set of invariants, and splitting them would spread those over several files.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import logging
import math
import os
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

import av

from .video_container import (
    VideoDecodeError,
    apply_orientation,
    choose_video_stream,
    describe_error,
    frame_orientation,
    open_container,
    truncation_cause,
)

__all__ = [
    "VideoDecodeError",
    "VideoSample",
    "sample_frame_indices",
    "read_video",
    "read_video_frames",
    "decode_all_frames",
    "SEEK_MIN_SKIPPED_PACKETS",
]

logger = logging.getLogger(__name__)

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
_DISCONTINUITY_S = 10.0  # ffmpeg's -dts_delta_threshold: a larger jump in MPEG-TS/PS is a discontinuity
# Decoders whose skip_frame="NONREF" drops exactly the frames nothing refers to (checked against full decodes in
# tests/test_video_corpus.py). Others (AV1 through libdav1d) decode every packet from the keyframe on.
_SKIP_NONREF_DECODERS = frozenset({"h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4", "vp8", "vp9"})


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

    stats = _DecodeStats()
    with open_container(path) as container:
        stream = choose_video_stream(container, path)
        stream_index = stream.index
        _check_complete(path)
        timeline = _index_stream(container, stream, path, end)
        if timeline.head:
            timeline = _resolve_head(path, stream_index, timeline, stats)
        geometry = _Geometry(stream, upright)
        plan = _SamplingPlan.make(timeline, num_frames, mode, start, end, generator, path)
        if timeline.timestamps_trusted:
            try:
                frames = _decode_by_timestamp(container, stream, timeline, plan.indices, stats, geometry)
                return plan.result(frames, timeline, "timestamp", stats, geometry)
            except _FallBack as reason:
                logger.debug("%s: decoding in order from the first frame (%s)", path, reason)
                stats.clear_errors()  # the counting pass decodes those packets again
    # The counting pass gets a fresh container and decoder: a decoder flushed by a seek does not conceal damage
    # exactly as a fresh one does, and the reference is a fresh decode from the first packet.
    with open_container(path) as container:
        packets = container.demux(container.streams[stream_index])
        return _read_sequentially(path, stream_index, packets, timeline, plan, (num_frames, mode, start, end),
                                  generator, rng_state, stats, geometry)


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
    kept, seen = _decode_by_count(path, packets, plan.indices, _KEEP_NEAR_TARGETS, to_end, stats, geometry)
    if not seen:
        raise VideoDecodeError(f"{path}: no frame of the video stream decodes ({_why_nothing(stats)})")
    corrected = timeline.observed(seen, complete=to_end or len(seen) <= max(plan.indices))
    if corrected is not None:
        logger.debug("%s: the index lists %d frames, the decoder gives %d", path, timeline.num_frames, len(seen))
        timeline = corrected
        _restore_rng(generator, rng_state)
        plan = _SamplingPlan.make(timeline, num_frames, mode, start, end, generator, path)
        if not set(plan.indices) <= kept.keys():
            stats.clear_errors()
            with open_container(path) as container:
                packets = container.demux(container.streams[stream_index])
                kept, seen = _decode_by_count(path, packets, plan.indices, 0, False, stats, geometry)
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
    stats = _DecodeStats()
    with open_container(path) as container:
        stream = choose_video_stream(container, path)
        _check_complete(path)
        geometry = _Geometry(stream, upright)
        frames = []
        try:
            for packet in container.demux(stream):
                stats.packets += bool(packet.size)
                frames.extend(geometry.rgb(frame) for frame in _decode_packet(packet, stats))
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
# Indexing: one demux pass, no decoding


class _Entry(NamedTuple):
    """One non-empty video packet, in decode order."""

    pts: int | None
    dts: int | None
    key: bool
    discard: bool  # pre-roll an edit list hides: decoded, never shown


@dataclass
class _Timeline:
    """The frames of the stream (up to where indexing stopped), from one demux pass without decoding.

    ``pts`` (when usable) are in presentation order, so frame ``i`` has timestamp ``pts[i]``. ``keyframe_pts``
    and ``decode_position`` (packet number in decode order, per pts) drive seeking. Without usable timestamps
    (``pts is None``), times come from the frame rate and only the sequential decode is used. ``head`` lists the
    packets (decode positions) at the start whose frames the decoder may drop; :func:`_resolve_head` settles them.
    """

    num_frames: int
    pts: list[int] | None
    seconds: list[float]
    keyframe_pts: list[int]
    keyframe_dts: dict[int, int | None]
    decode_position: dict[int, int]
    timestamps_trusted: bool
    reached_end: bool
    first_packet: tuple[int | None, int | None]  # (pts, dts) of the first packet in decode order
    time_base: object = None
    discontinuous: bool = False  # MPEG-TS/PS: forward jumps over 10 s are closed up in `seconds`
    entries: list[_Entry] = field(repr=False, default_factory=list)
    head: list[int] = field(default_factory=list)

    def observed(self, seen: list, complete: bool) -> "_Timeline | None":
        """The timeline corrected by the pts of the frames a decode from the first packet gave (``seen``, all of
        them when ``complete``, else the first ones); None when they are what the index listed."""
        if self.timestamps_trusted and None not in seen and all(a < b for a, b in zip(seen, seen[1:])):
            pts = seen if complete else seen + [p for p in self.pts if p > seen[-1]]
            if pts == self.pts:
                return None
            seconds = _seconds(pts, self.time_base, self.discontinuous)
        elif complete and len(seen) != self.num_frames:  # no usable timestamps: only the count is known
            pts, seconds = None, self.seconds[: len(seen)]
            if seconds and len(seen) > len(seconds):  # more frames than packets: extend at the mean duration
                step = (seconds[-1] - seconds[0]) / (len(seconds) - 1) if len(seconds) > 1 else 0.0
                seconds += [seconds[-1] + step * (k + 1) for k in range(len(seen) - len(seconds))]
        else:
            return None
        return dataclasses.replace(self, num_frames=len(pts or seen), pts=pts, seconds=seconds,
                                   timestamps_trusted=False)


def _index_stream(container, stream, path: str, end: float | None) -> _Timeline:
    """Demux (no decoding) the video packets, up to the clip's end when one is given."""
    time_base = stream.time_base
    discontinuous = _has_discontinuities(container)
    entries: list[_Entry] = []
    first_key_pts = first_shown_pts = end_pts = None
    reached_end = True
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue  # the flush packet PyAV appends, or an empty AVI chunk (a dropped frame: nothing to show)
            pts, dts = packet.pts, packet.dts
            if (end is not None and end_pts is None and not discontinuous and time_base
                    and first_key_pts is not None and first_shown_pts is not None):
                # no frame before the first keyframe or the first shown packet can start the clip later than these
                end_pts = max(first_key_pts, first_shown_pts) + math.ceil(end / time_base) + 1
            if end_pts is not None and dts is not None and dts > end_pts and len(entries) > 1:
                # decode timestamps only grow and pts >= dts: no later packet can be shown before `end`
                reached_end = False
                break
            entry = _Entry(pts, dts, bool(packet.is_keyframe), bool(packet.is_discard))
            entries.append(entry)
            if entry.key and first_key_pts is None:
                first_key_pts = pts
            if not entry.discard and first_shown_pts is None:
                first_shown_pts = pts
    except av.error.FFmpegError as err:
        raise VideoDecodeError(
            f"{path}: reading the video stream failed after {len(entries)} packets ({describe_error(err)}); "
            "the file is corrupt"
        ) from err
    if not any(not e.discard for e in entries):
        raise VideoDecodeError(f"{path}: the video stream holds no frames")
    return _build_timeline(entries, stream, discontinuous, reached_end, head=_uncertain_head(entries))


def _has_discontinuities(container) -> bool:
    """Formats whose timestamps may jump (MPEG-TS, MPEG-PS): ffmpeg's AVFMT_TS_DISCONT."""
    return bool(container.format.flags & av.format.Flags.ts_discont.value)


def _uncertain_head(entries: list[_Entry]) -> list[int]:
    """Decode positions of shown packets at the start whose frame the decoder may drop.

    Those decoded before the first keyframe (a stream that starts mid-GOP), and the leading pictures of that
    keyframe (after it in decode order, before it in display order, or without a timestamp: an open GOP whose
    references were cut away). A stream that starts with a closed GOP has none.
    """
    first_key = next((i for i, e in enumerate(entries) if e.key), None)
    if first_key is None or entries[first_key].pts is None:
        return []
    key_pts = entries[first_key].pts
    head = [i for i in range(first_key) if not entries[i].discard]
    for i in range(first_key + 1, len(entries)):
        entry = entries[i]
        if entry.discard:
            continue
        if entry.pts is not None and entry.pts > key_pts:
            break
        head.append(i)
    return head


def _build_timeline(entries, stream, discontinuous: bool, reached_end: bool, head=(), drop=(), head_pts=()):
    """The frames the index predicts: shown packets (minus ``drop``) plus ``head_pts`` seen coming out of the decoder.

    A decode timestamp that goes backwards starts a new segment (a discontinuity); frames are in presentation
    order within each segment, segments in decode order.
    """
    time_base = stream.time_base
    dropped = set(drop)
    segments: list[list[int | None]] = [list(head_pts)]
    last_dts = None
    for position, entry in enumerate(entries):
        if entry.dts is not None:
            if last_dts is not None and entry.dts < last_dts:
                segments.append([])
            last_dts = entry.dts
        if not entry.discard and position not in dropped:
            segments[-1].append(entry.pts)
    shown = [p for segment in segments for p in segment]
    num_frames = len(shown)
    keyed = [e for e in entries if e.key and e.pts is not None]
    trusted, pts = False, None
    if all(p is not None for p in shown):
        ordered = [p for segment in segments for p in sorted(segment)]
        seconds = _seconds(ordered, time_base, discontinuous)
        if len(set(ordered)) == len(ordered):
            pts = ordered
            # A stream whose codec reorders frames (B-frames) but whose packets all carry pts == dts (OpenCV's
            # writer does this) has timestamps that do not give the display order: only counting decoded frames
            # is right then. Such files are told apart here; anything subtler is caught while decoding.
            reorders = bool(getattr(stream.codec_context, "has_b_frames", 0))
            shown_entries = [e for i, e in enumerate(entries) if not e.discard and i not in dropped]
            copied = all(e.pts == e.dts for e in shown_entries) and all(
                a.pts < b.pts for a, b in zip(shown_entries, shown_entries[1:]))
            trusted = sum(1 for s in segments if s) == 1 and not (reorders and copied) and num_frames > 1
    else:
        rate = stream.average_rate or stream.guessed_rate
        seconds = [i / float(rate) for i in range(num_frames)] if rate else []
    return _Timeline(
        num_frames=num_frames,
        pts=pts,
        seconds=seconds,
        keyframe_pts=sorted(e.pts for e in keyed),
        keyframe_dts={e.pts: e.dts for e in keyed},
        decode_position={e.pts: i for i, e in enumerate(entries) if e.pts is not None},
        timestamps_trusted=trusted,
        reached_end=reached_end,
        first_packet=(entries[0].pts, entries[0].dts),
        time_base=time_base,
        discontinuous=discontinuous,
        entries=entries,
        head=list(head),
    )


def _seconds(ordered_pts: list[int], time_base, discontinuous: bool) -> list[float]:
    """Seconds from the first frame. Backward jumps (and, in MPEG-TS/PS, forward jumps over 10 s) are closed up
    to one typical frame duration, as ffmpeg does with timestamp discontinuities."""
    if not ordered_pts:
        return []
    # integer arithmetic then one true division: exactly float(Fraction), at a fraction of its cost
    num, den = (time_base.numerator, time_base.denominator) if time_base else (0, 1)
    steps = sorted(b - a for a, b in zip(ordered_pts, ordered_pts[1:]) if b > a)
    typical_step = steps[len(steps) // 2] if steps else 0
    jump = _DISCONTINUITY_S * den / num if num else math.inf
    seconds = [0.0]
    base_pts, base_seconds = ordered_pts[0], 0.0
    for previous, pts in zip(ordered_pts, ordered_pts[1:]):
        if pts < previous or (discontinuous and pts - previous > jump):
            base_pts, base_seconds = pts, seconds[-1] + typical_step * num / den
        seconds.append(base_seconds + (pts - base_pts) * num / den)
    return seconds


def _resolve_head(path: str, stream_index: int, timeline: _Timeline, stats: "_DecodeStats") -> _Timeline:
    """Decode the stream's first packets until the first keyframe's frame comes out; rebuild the timeline with the
    head frames the decoder really output (the rest of the head was dropped by it)."""
    entries = timeline.entries
    key_pts = next(e.pts for e in entries if e.key)
    seen = []
    with open_container(path) as container:
        stream = container.streams[stream_index]
        done = False
        for packet in container.demux(stream):
            stats.packets += bool(packet.size)
            for frame in _decode_packet(packet, stats):
                if frame.pts is not None and frame.pts >= key_pts:
                    done = True
                    break
                seen.append(frame.pts)
            if done:
                break
        rebuilt = _build_timeline(entries, stream, _has_discontinuities(container), timeline.reached_end,
                                  drop=timeline.head, head_pts=seen)
    stats.clear_errors()  # what the decoder drops at a cut start is not damage (ffmpeg drops it too)
    if rebuilt.num_frames == 0:
        raise VideoDecodeError(f"{path}: no frame of the video stream decodes")
    return rebuilt


# ---------------------------------------------------------------------------------------------------------------
# Sampling plan


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

    def result(self, frames: dict, timeline: _Timeline, decode_path: str, stats: "_DecodeStats",
               geometry: "_Geometry") -> VideoSample:
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


# ---------------------------------------------------------------------------------------------------------------
# Decoding


class _FallBack(Exception):
    """The timestamp-driven decode cannot be trusted for this file; decode again sequentially."""


@dataclass
class _DecodeStats:
    packets: int = 0  # packets sent to the decoder
    seeks: int = 0
    errors: int = 0  # rejected packets + frames flagged corrupt, in the pass whose frames are returned
    first_error: str | None = None

    def error(self, what: str) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = what

    def clear_errors(self) -> None:
        self.errors, self.first_error = 0, None


def _decode_packet(packet, stats: _DecodeStats) -> list:
    """The frames one packet gives, tolerating damage as ffmpeg does: a packet the decoder rejects gives no frame
    and decoding goes on; both that and a frame the decoder flags as corrupt (concealed damage) are counted."""
    try:
        frames = packet.decode()
    except av.error.FFmpegError as err:
        stats.error(f"a packet the decoder rejected: {describe_error(err)}")
        return []
    for frame in frames:
        if frame.is_corrupt:
            stats.error("a frame the decoder flagged as corrupt (damage concealed)")
    return frames


def _why_nothing(stats: _DecodeStats) -> str:
    return stats.first_error or "the decoder output no frame"


def _log_errors(path: str, stats: _DecodeStats) -> None:
    if stats.errors:
        logger.warning("%s: %d decode error(s) concealed while decoding the frames returned, as ffmpeg would show "
                       "them (first: %s)", path, stats.errors, stats.first_error)


class _Geometry:
    """Turns decoded frames into RGB arrays of one size and orientation.

    The size is the stream's (FFmpeg's codec parameters, from its first frames; else the first frame converted):
    frames of another size (a resolution switch) are scaled to it, bicubic, as ffmpeg scales them for its
    output. With ``upright``, the display matrix of the first frame converted gives the orientation.
    """

    def __init__(self, stream, upright: bool):
        self.width = stream.codec_context.width or 0
        self.height = stream.codec_context.height or 0
        self.upright = upright
        self.orientation: str | None = None if upright else ""

    def rgb(self, frame) -> np.ndarray:
        if not self.width or not self.height:
            self.width, self.height = frame.width, frame.height
        if frame.width != self.width or frame.height != self.height:
            image = frame.to_ndarray(format="rgb24", width=self.width, height=self.height, interpolation="BICUBIC")
        else:
            image = frame.to_ndarray(format="rgb24")
        if self.orientation is None:
            self.orientation = frame_orientation(frame)
        return apply_orientation(image, self.orientation) if self.orientation else image


def _decode_by_timestamp(container, stream, timeline: _Timeline, indices: list[int], stats: _DecodeStats,
                         geometry: _Geometry) -> dict:
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


def _seek(container, stream, timeline: _Timeline, pts: int, dts: int | None, max_position: int):
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


def _keyframe_before(timeline: _Timeline, pts: int) -> int:
    """The pts of the last keyframe shown at or before ``pts`` (the first keyframe if none is)."""
    position = bisect.bisect_right(timeline.keyframe_pts, pts) - 1
    if position < 0:
        raise _FallBack("no keyframe before the target frame")
    return timeline.keyframe_pts[position]


def _decode_by_count(path: str, packets, indices, keep_before: int, to_end: bool, stats: _DecodeStats,
                     geometry: _Geometry):
    """Decode ``packets`` (from the stream's first packet on), counting frames as they come out.

    Keeps (as RGB arrays) every frame whose index lies within ``keep_before`` frames before a target, the targets
    included. They are converted as they come out: a decoder may still write into a frame's buffer after output
    (H.264 error concealment does), so a PyAV frame kept for later is not what was shown. Stops after the last target, or at the end of the stream when
    ``to_end``. Returns ``(kept, seen)``: ``seen`` holds the pts of every frame decoded, so its length is the
    number of frames in the stream when it ended first. Damage is tolerated and counted (:func:`_decode_packet`); an error
    of the demuxer is not (the file is corrupt there).
    """
    keep = {i - back for i in indices for back in range(keep_before + 1) if i - back >= 0}
    last_target = max(indices)
    kept = {}
    seen = []
    try:
        for packet in packets:
            stats.packets += bool(packet.size)
            for frame in _decode_packet(packet, stats):
                if len(seen) in keep:
                    kept[len(seen)] = geometry.rgb(frame)
                seen.append(frame.pts)
                if len(seen) > last_target and not to_end:
                    return kept, seen
    except av.error.FFmpegError as err:
        raise VideoDecodeError(
            f"{path}: reading the video stream failed after {len(seen)} frames ({describe_error(err)}); "
            "the file is corrupt"
        ) from err
    return kept, seen
