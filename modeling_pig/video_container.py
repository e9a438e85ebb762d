"""The container side of :mod:`modeling_pig.video_io`: opening a file, choosing its video stream, telling a file
that was cut short from its own structure, saying what went wrong in plain words, and the display orientation.

* **Opening** (:func:`open_container`): anything FFmpeg reads. A file FFmpeg cannot open gets a cause in words
  (empty, cut short, no known format), never a bare ``[Errno 1094995529]``.
* **Stream choice** (:func:`choose_video_stream`): the video stream ffmpeg itself would pick, by its documented
  rule for automatic stream selection ("for video, it is the stream with the highest resolution"; ffmpeg's score
  also adds 5,000,000 for a stream flagged *default*; ties go to the first stream). Attached pictures (cover art)
  and timed thumbnails are not video: they are skipped, as ffmpeg scores them last; still-image streams count
  only when nothing else does.
* **Truncation** (:func:`truncation_cause`): a file is cut short when it ends before its own container structure
  says it does: an MP4/MOV box, the RIFF chunk of an AVI, or the Segment of a Matroska/WebM file that runs past
  the end of the file. Only these headers are read (a few bytes each), never frame-count or duration fields,
  which lie in many valid files. Formats without such sizes (MPEG-TS, MPEG-PS, live-written WebM) cannot be
  told apart from a shorter valid file; a cut there reads as a shorter video whose frames are all real.
* **Orientation** (:func:`frame_orientation`, :func:`apply_orientation`): the display matrix (phone videos) is
  applied as ffmpeg applies it by default (``-autorotate``): 90/270 degrees by a transpose, 180 by flips, and
  the mirror images of those.

* **Frames** (:func:`decode_packet`, :class:`FrameGeometry`): one packet's frames with damage tolerated and
  counted as ffmpeg tolerates it, and RGB arrays of one size and orientation.

Besides ``av.open`` and these two frame helpers, only plain file reads happen here; demuxing and the decoding
strategy are in :mod:`modeling_pig.video_index` and :mod:`modeling_pig.video_io`.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass

import numpy as np

import av

__all__ = [
    "VideoDecodeError",
    "open_container",
    "choose_video_stream",
    "truncation_cause",
    "describe_error",
    "frame_orientation",
    "apply_orientation",
    "DecodeStats",
    "decode_packet",
    "FrameGeometry",
]

READ_TIMEOUT_S = 60.0  # a stalled read (network filesystem) raises instead of hanging forever

# ffmpeg (fftools, automatic stream selection): score = width * height + 5,000,000 if the stream is flagged default
_DEFAULT_STREAM_BONUS = 5_000_000
_NOT_VIDEO = ("attached_pic", "timed_thumbnails", "still_image")  # dispositions of pictures, not of a video
_BMFF_BOX_TYPES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp", b"sidx", b"moof",
                   b"uuid", b"meta", b"pdin", b"jP  "}


class VideoDecodeError(RuntimeError):
    """A video file could not be decoded into the frames asked for.

    Raised for a missing file, a file FFmpeg cannot read, a file with no video stream (or no frame in it), a file
    cut short before the end its container structure declares, a stream none of whose packets decodes, and a clip
    outside the video. The message starts with the file's path and says the cause in plain words.
    """


def describe_error(err: BaseException) -> str:
    """FFmpeg's reason in words ("invalid data found when processing input"), without errno numbers."""
    reason = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return reason[:1].lower() + reason[1:]


def open_container(path: str):
    """``av.open`` for reading; a file FFmpeg cannot open raises :class:`VideoDecodeError` with the cause in words."""
    try:
        return av.open(path, metadata_errors="ignore", timeout=READ_TIMEOUT_S)
    except av.error.FFmpegError as err:
        raise VideoDecodeError(f"{path}: {_why_unreadable(path, err)}") from err


def _why_unreadable(path: str, err: BaseException) -> str:
    size = os.path.getsize(path)
    if size == 0:
        return "the file is empty (0 bytes); not a readable media file"
    cut = truncation_cause(path)
    if cut is not None:
        return f"not a readable media file: {cut}"
    with open(path, "rb") as file:
        head = file.read(12)
    if head[4:8] in _BMFF_BOX_TYPES:
        return ("not a readable media file: it starts as an MP4/MOV file but its index (the 'moov' box) is missing "
                "or damaged; the file was cut short or its recording never finished")
    return f"not a readable media file: FFmpeg recognises no media format in it ({describe_error(err)})"


def choose_video_stream(container, path: str):
    """The stream ffmpeg would decode as "the video": highest resolution, default flag first, pictures skipped.

    Cover art and timed thumbnails are never the video: a file with only those (an audio file with artwork) has
    no video. Still-image streams (an image opened as a video) are used only when nothing moves.
    """
    videos = list(container.streams.video)
    if not videos:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoDecodeError(f"{path}: the file has no video stream (streams: {', '.join(kinds)})")
    candidates = [s for s in videos if not any(_has_disposition(s, name) for name in _NOT_VIDEO)]
    candidates = candidates or [s for s in videos if _has_disposition(s, "still_image")]
    if not candidates:
        raise VideoDecodeError(
            f"{path}: the file has no video stream, only a still picture (cover art or thumbnail) attached to it"
        )

    def score(stream):
        area = (stream.codec_context.width or 0) * (stream.codec_context.height or 0)
        return area + _DEFAULT_STREAM_BONUS * _has_disposition(stream, "default"), -stream.index

    return max(candidates, key=score)


def _has_disposition(stream, name: str) -> bool:
    flag = getattr(av.stream.Disposition, name, None)
    return flag is not None and bool(int(stream.disposition) & int(flag))


# ---------------------------------------------------------------------------------------------------------------
# Truncation, from the container's own structure


def truncation_cause(path: str) -> str | None:
    """Why the file counts as cut short (in words), or None when its structure is complete or has no sizes to check.

    MP4/MOV (ISO base media): every top-level box must fit in the file. AVI: every top-level RIFF chunk must.
    Matroska/WebM: the Segment must (unless its size was left "unknown", as live writers do).
    """
    size = os.path.getsize(path)
    with open(path, "rb") as file:
        head = file.read(12)
        if head[:4] == b"RIFF" and head[8:12] in (b"AVI ", b"AVIX"):
            return _riff_truncation(file, size)
        if head[:4] == b"\x1a\x45\xdf\xa3":
            return _ebml_truncation(file, size)
        if head[4:8] in _BMFF_BOX_TYPES:
            return _bmff_truncation(file, size)
    return None


def _cut_message(size: int, what: str, end: int) -> str:
    return (f"the file is truncated: it ends at byte {size:,} but its {what} runs to byte {end:,} "
            "(a download, copy or recording that was cut short)")


def _bmff_truncation(file, size: int) -> str | None:
    offset = 0
    while offset + 8 <= size:
        file.seek(offset)
        header = file.read(16)
        box_size, kind = struct.unpack(">I4s", header[:8])
        if box_size == 1:  # a 64-bit size follows the type
            if len(header) < 16:
                return _cut_message(size, f"'{kind.decode('latin-1')}' box header", offset + 16)
            box_size = struct.unpack(">Q", header[8:16])[0]
        elif box_size == 0:  # "runs to the end of the file"
            return None
        if box_size < 8 or not all(32 <= c < 127 for c in kind):
            return None  # not box structure any more (padding or junk after the last box): nothing to check
        if offset + box_size > size:
            return _cut_message(size, f"'{kind.decode('latin-1')}' box", offset + box_size)
        offset += box_size
    return None


def _riff_truncation(file, size: int) -> str | None:
    offset = 0
    while offset + 12 <= size:
        file.seek(offset)
        kind, chunk_size = struct.unpack("<4sI", file.read(8))
        if kind != b"RIFF":
            return None  # data after the last RIFF chunk is not AVI structure
        if chunk_size in (0, 0xFFFFFFFF):
            return None  # the writer stopped before patching the size in: nothing declared
        end = offset + 8 + chunk_size
        if end > size:
            return _cut_message(size, "AVI 'RIFF' chunk", end)
        offset = end + (chunk_size & 1)
    return None


def _read_vint(file, keep_marker: bool) -> tuple[int, int, bool] | None:
    """One EBML variable-length integer: (value, length in bytes, all value bits set); None at end of file."""
    first = file.read(1)
    if not first:
        return None
    length = 9 - first[0].bit_length()
    if length > 8:
        return None
    rest = file.read(length - 1)
    if len(rest) < length - 1:
        return None
    value = first[0] if keep_marker else first[0] & (0xFF >> length)
    for byte in rest:
        value = (value << 8) | byte
    all_ones = value == (1 << (7 * length)) - 1
    return value, length, all_ones


def _ebml_truncation(file, size: int) -> str | None:
    file.seek(0)
    offset = 0
    for expected in (0x1A45DFA3, 0x18538067):  # the EBML header, then the Segment
        element = _read_vint(file, keep_marker=True)
        length = _read_vint(file, keep_marker=False)
        if element is None or length is None or element[0] != expected:
            return None
        data_start = offset + element[1] + length[1]
        if expected == 0x1A45DFA3:
            offset = data_start + length[0]
            file.seek(offset)
            continue
        if length[2]:
            return None  # "unknown size": a live-written file declares no end
        if data_start + length[0] > size:
            return _cut_message(size, "Matroska Segment", data_start + length[0])
    return None


# ---------------------------------------------------------------------------------------------------------------
# Orientation: the display matrix, applied as ffmpeg's -autorotate does


def frame_orientation(frame) -> str:
    """The transform ffmpeg applies by default to show ``frame`` upright, as its filter names.

    ``""`` (none), ``"transpose=clock"``, ``"transpose=cclock"``, ``"transpose=cclock_flip"``,
    ``"transpose=clock_flip"``, ``"hflip"``, ``"vflip"``, ``"hflip,vflip"``. A rotation by an angle that is not a
    multiple of 90 degrees (which ffmpeg renders with its ``rotate`` filter) is not applied: ``""``.
    """
    side = frame.side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
    if side is None:
        return ""
    matrix = np.frombuffer(bytes(side), dtype="<i4")
    if matrix.size != 9:
        return ""
    scale_x, scale_y = math.hypot(matrix[0], matrix[3]), math.hypot(matrix[1], matrix[4])
    if scale_x == 0 or scale_y == 0:
        return ""
    # ffmpeg: theta = -round(av_display_rotation_get(matrix)), brought into [0, 360)
    rotation = -math.degrees(math.atan2(matrix[1] / scale_y, matrix[0] / scale_x))
    theta = -round(rotation)
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return "transpose=cclock_flip" if matrix[3] > 0 else "transpose=clock"
    if abs(theta - 180) < 1:
        return ",".join(name for name, negative in (("hflip", matrix[0] < 0), ("vflip", matrix[4] < 0)) if negative)
    if abs(theta - 270) < 1:
        return "transpose=clock_flip" if matrix[3] < 0 else "transpose=cclock"
    if abs(theta) < 1 or abs(theta - 360) < 1:
        return "vflip" if matrix[4] < 0 else ""
    return ""


def apply_orientation(image: np.ndarray, orientation: str) -> np.ndarray:
    """Apply :func:`frame_orientation`'s transform to an ``[H, W, C]`` image (a view; no pixel is resampled)."""
    for step in filter(None, orientation.split(",")):
        if step == "hflip":
            image = image[:, ::-1]
        elif step == "vflip":
            image = image[::-1]
        elif step == "transpose=clock":
            image = np.rot90(image, -1)
        elif step == "transpose=cclock":
            image = np.rot90(image, 1)
        elif step == "transpose=cclock_flip":
            image = image.transpose(1, 0, 2)
        elif step == "transpose=clock_flip":
            image = image[::-1, ::-1].transpose(1, 0, 2)
        else:
            raise ValueError(f"unknown orientation step {step!r}")
    return image


# ---------------------------------------------------------------------------------------------------------------
# Frames: damage tolerated and counted; one size and one orientation


@dataclass
class DecodeStats:
    """What decoding cost and met: packets sent, seeks made, damage concealed (first cause kept)."""

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


def decode_packet(packet, stats: DecodeStats) -> list:
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


class FrameGeometry:
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
        """``uint8 [H, W, 3]`` RGB of one decoded frame, at the geometry's size and orientation."""
        if not self.width or not self.height:
            self.width, self.height = frame.width, frame.height
        # threads=1: PyAV's default (0, automatic) gives every frame's swscale context a pool of slice threads.
        # A frame that is freed in a forked DataLoader worker (garbage inherited from the parent) then joins
        # threads that do not exist in the child and the worker hangs forever; one thread also costs nothing
        # at our frame sizes.
        if frame.width != self.width or frame.height != self.height:
            image = frame.to_ndarray(format="rgb24", width=self.width, height=self.height, interpolation="BICUBIC",
                                     threads=1)
        else:
            image = frame.to_ndarray(format="rgb24", threads=1)
        if self.orientation is None:
            self.orientation = frame_orientation(frame)
        return apply_orientation(image, self.orientation) if self.orientation else image
