"""The index of a video stream: one demux pass, no decoding, and the frames the decoder will show.

Used by :mod:`modeling_pig.video_io`. A frame is what the decoder outputs for the chosen stream after the
container's edit list:

* packets an MP4/MOV edit list marks as pre-roll (``is_discard``: stream-copy cuts, phone videos) are decoded but
  never shown, so they are no frames; empty packets (dropped AVI frames) are no frames either;
* at the start of a stream cut mid-GOP (MPEG-TS/PS segments) or at an open GOP whose references were cut away
  (HEVC RASL pictures), the decoder drops what it cannot decode, and decoders differ in what that is: those
  packets (:func:`uncertain_head`) are decoded once (:func:`resolve_head`) to learn which frames come out;
* frames are in presentation order within a run of increasing decode timestamps; a decode timestamp that goes
  backwards (a splice) starts a new run, shown after the previous one;
* seconds count from the first shown frame; jumps backwards, and in MPEG-TS/PS jumps forward over
  :data:`DISCONTINUITY_S` (ffmpeg's ``-dts_delta_threshold``), are closed up to one frame duration.

No count or duration field of a header is used.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import av

from .video_container import DecodeStats, VideoDecodeError, decode_packet, describe_error, open_container

DISCONTINUITY_S = 10.0  # ffmpeg's -dts_delta_threshold: a larger jump in MPEG-TS/PS is a discontinuity


class Entry(NamedTuple):
    """One non-empty video packet, in decode order."""

    pts: int | None
    dts: int | None
    key: bool
    discard: bool  # pre-roll an edit list hides: decoded, never shown


@dataclass
class Timeline:
    """The frames of the stream (up to where indexing stopped), from one demux pass without decoding.

    ``pts`` (when usable) are in presentation order, so frame ``i`` has timestamp ``pts[i]``. ``keyframe_pts``
    and ``decode_position`` (packet number in decode order, per pts) drive seeking. Without usable timestamps
    (``pts is None``), times come from the frame rate and only the sequential decode is used. ``head`` lists the
    packets (decode positions) at the start whose frames the decoder may drop; :func:`resolve_head` settles them.
    """

    num_frames: int
    pts: list[int] | None
    seconds: list[float]
    keyframe_pts: list[int]
    keyframe_dts: dict[int, int | None]
    decode_position: dict[int, int]
    timestamps_trusted: bool
    reached_end: bool
    time_base: object = None
    discontinuous: bool = False  # MPEG-TS/PS: forward jumps over 10 s are closed up in `seconds`
    entries: list[Entry] = field(repr=False, default_factory=list)
    head: list[int] = field(default_factory=list)

    def observed(self, seen: list, complete: bool) -> "Timeline | None":
        """The timeline corrected by the pts of the frames a decode from the first packet gave (``seen``, all of
        them when ``complete``, else the first ones); None when they are what the index listed."""
        if self.timestamps_trusted and None not in seen and all(a < b for a, b in zip(seen, seen[1:])):
            pts = seen if complete else seen + [p for p in self.pts if p > seen[-1]]
            if pts == self.pts:
                return None
            seconds = presentation_seconds(pts, self.time_base, self.discontinuous)
        elif complete and len(seen) != self.num_frames:  # no usable timestamps: only the count is known
            pts, seconds = None, self.seconds[: len(seen)]
            if seconds and len(seen) > len(seconds):  # more frames than packets: extend at the mean duration
                step = (seconds[-1] - seconds[0]) / (len(seconds) - 1) if len(seconds) > 1 else 0.0
                seconds += [seconds[-1] + step * (k + 1) for k in range(len(seen) - len(seconds))]
        else:
            return None
        return dataclasses.replace(self, num_frames=len(pts or seen), pts=pts, seconds=seconds,
                                   timestamps_trusted=False)


def index_stream(container, stream, path: str, end: float | None) -> Timeline:
    """Demux (no decoding) the video packets, up to the clip's end when one is given."""
    time_base = stream.time_base
    discontinuous = has_discontinuities(container)
    entries: list[Entry] = []
    first_key_pts = first_shown_pts = end_pts = None
    clip_end_pending = end is not None and not discontinuous and bool(time_base)
    reached_end = True
    try:
        for packet in container.demux(stream):
            if not packet.size:
                continue  # the flush packet PyAV appends, or an empty AVI chunk (a dropped frame: nothing to show)
            entry = Entry(packet.pts, packet.dts, packet.is_keyframe, packet.is_discard)
            if end_pts is not None and entry.dts is not None and entry.dts > end_pts and len(entries) > 1:
                # decode timestamps only grow and pts >= dts: no later packet can be shown before `end`
                reached_end = False
                break
            entries.append(entry)
            if first_key_pts is None and entry.key:
                first_key_pts = entry.pts
            if first_shown_pts is None and not entry.discard:
                first_shown_pts = entry.pts
            if clip_end_pending and first_key_pts is not None and first_shown_pts is not None:
                # no frame before the first keyframe or the first shown packet can start the clip later than these
                end_pts = max(first_key_pts, first_shown_pts) + math.ceil(end / time_base) + 1
                clip_end_pending = False
    except av.error.FFmpegError as err:
        raise VideoDecodeError(
            f"{path}: reading the video stream failed after {len(entries)} packets ({describe_error(err)}); "
            "the file is corrupt"
        ) from err
    if not any(not e.discard for e in entries):
        raise VideoDecodeError(f"{path}: the video stream holds no frames")
    return build_timeline(entries, stream, discontinuous, reached_end, head=uncertain_head(entries))


def has_discontinuities(container) -> bool:
    """Formats whose timestamps may jump (MPEG-TS, MPEG-PS): ffmpeg's AVFMT_TS_DISCONT."""
    return bool(container.format.flags & av.format.Flags.ts_discont.value)


def uncertain_head(entries: list[Entry]) -> list[int]:
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


def build_timeline(entries, stream, discontinuous: bool, reached_end: bool, head=(), drop=(), head_pts=()):
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
        seconds = presentation_seconds(ordered, time_base, discontinuous)
        if len(set(ordered)) == len(ordered):
            pts = ordered
            # A stream whose codec reorders frames (B-frames) but whose packets all carry pts == dts (OpenCV's
            # writer does this) has timestamps that do not give the display order: only counting decoded frames
            # is right then. Such files are told apart here; anything subtler is caught while decoding.
            copied = False
            if getattr(stream.codec_context, "has_b_frames", 0):  # the codec reorders frames
                shown_entries = [e for i, e in enumerate(entries) if not e.discard and i not in dropped]
                copied = all(e.pts == e.dts for e in shown_entries) and all(
                    a.pts < b.pts for a, b in zip(shown_entries, shown_entries[1:]))
            trusted = sum(1 for s in segments if s) == 1 and not copied and num_frames > 1
    else:
        rate = stream.average_rate or stream.guessed_rate
        seconds = [i / float(rate) for i in range(num_frames)] if rate else []
    return Timeline(
        num_frames=num_frames,
        pts=pts,
        seconds=seconds,
        keyframe_pts=sorted(e.pts for e in keyed),
        keyframe_dts={e.pts: e.dts for e in keyed},
        decode_position={e.pts: i for i, e in enumerate(entries) if e.pts is not None},
        timestamps_trusted=trusted,
        reached_end=reached_end,
        time_base=time_base,
        discontinuous=discontinuous,
        entries=entries,
        head=list(head),
    )


def presentation_seconds(ordered_pts: list[int], time_base, discontinuous: bool) -> list[float]:
    """Seconds from the first frame. Backward jumps (and, in MPEG-TS/PS, forward jumps over 10 s) are closed up
    to one typical frame duration, as ffmpeg does with timestamp discontinuities."""
    if not ordered_pts:
        return []
    # integer arithmetic then one true division: exactly float(Fraction), at a fraction of its cost
    num, den = (time_base.numerator, time_base.denominator) if time_base else (0, 1)
    steps = sorted(b - a for a, b in zip(ordered_pts, ordered_pts[1:]) if b > a)
    typical_step = steps[len(steps) // 2] if steps else 0
    jump = DISCONTINUITY_S * den / num if num else math.inf
    seconds = [0.0]
    base_pts, base_seconds = ordered_pts[0], 0.0
    for previous, pts in zip(ordered_pts, ordered_pts[1:]):
        if pts < previous or (discontinuous and pts - previous > jump):
            base_pts, base_seconds = pts, seconds[-1] + typical_step * num / den
        seconds.append(base_seconds + (pts - base_pts) * num / den)
    return seconds


def resolve_head(path: str, stream_index: int, timeline: Timeline, stats: DecodeStats) -> Timeline:
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
            for frame in decode_packet(packet, stats):
                if frame.pts is not None and frame.pts >= key_pts:
                    done = True
                    break
                seen.append(frame.pts)
            if done:
                break
        rebuilt = build_timeline(entries, stream, has_discontinuities(container), timeline.reached_end,
                                  drop=timeline.head, head_pts=seen)
    stats.clear_errors()  # what the decoder drops at a cut start is not damage (ffmpeg drops it too)
    if rebuilt.num_frames == 0:
        raise VideoDecodeError(f"{path}: no frame of the video stream decodes")
    return rebuilt
