"""A corpus of small videos that ffmpeg plays, and of broken files it refuses, written at test time with PyAV.

Every file is made by PyAV's own encoders and muxers (libx264, libx265, libvpx, libsvtav1, mpeg2video, mpeg4,
mjpeg, prores_ks, wmv2, h263, gif, ffv1), so no tool beyond the test dependencies is needed. The constructions
mirror how such files arise in the wild:

* stream-copy cuts (``ffmpeg -ss T -i in -c copy out``) are made the way ffmpeg makes them: the packets from the
  last keyframe before ``T`` on, with timestamps shifted by ``T``, so that the pre-roll has negative timestamps
  and the MP4/MOV muxer writes an edit list hiding it;
* MPEG-TS/PS recordings that start mid-GOP are byte cuts at a transport/pack boundary;
* timestamp discontinuities and resolution switches are concatenated TS segments, as a broadcast splice;
* a lying AVI header has its frame-count fields overwritten, dropped AVI frames are timestamp gaps (the muxer
  writes empty chunks for them), cover art is an attached-picture stream moved first in the MP4 index.

``VALID`` maps a file name to a :class:`Case` (how to make it, and what ffmpeg shows when the construction fixes
it); ``BROKEN`` maps a file name to its maker and the words the error must contain. :class:`Corpus` writes each
file once, on first use. Frames follow :func:`pattern`: each frame has its own colour and an asymmetric layout,
so that a wrong frame, a flip or a rotation cannot go unnoticed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

import av

FPS = 25
SIZE = (64, 48)  # width, height
CUT_AT = 1.3  # seconds: where the stream-copy cuts start
CUT_SOURCE_FRAMES = 60
CUT_FIRST_FRAME = int(np.ceil(CUT_AT * FPS - 1e-9))  # a cut shows the source frames from this one on (33)
CUT_FRAMES = CUT_SOURCE_FRAMES - CUT_FIRST_FRAME
X264_GOP = {"x264-params": "keyint=20:min-keyint=20:scenecut=0:bframes=2"}
X264_NO_B = {"x264-params": "keyint=20:min-keyint=20:scenecut=0:bframes=0"}
X265_OPEN_GOP = {"x265-params": "log-level=error:keyint=20:min-keyint=20:scenecut=0:open-gop=1:bframes=3"}
VPX_FAST = {"deadline": "realtime", "cpu-used": "8", "auto-alt-ref": "0"}


def pattern(index: int, width: int = SIZE[0], height: int = SIZE[1]) -> np.ndarray:
    """Frame ``index`` of every synthetic video: ``uint8 [height, width, 3]`` RGB.

    A colour of its own (red channel), a green bar whose width grows with ``index`` from the left edge, a blue
    ramp across, and a bright block in the top-left quarter: no two frames alike, no flip or rotation invisible.
    """
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = (index * 37) % 256
    image[:, : (index * 3) % width + 1, 1] = 220
    image[..., 2] = (np.arange(width)[None, :] * 4) % 256
    image[: max(height // 4, 1), : max(width // 4, 1)] = 250
    return image


def encode(path, codec: str, num_frames: int = 20, size=SIZE, pix_fmt: str = "yuv420p", options=None,
           container_format=None, container_options=None, frame_pts=None, rotation=None, first_frame: int = 0):
    """Encode ``num_frames`` :func:`pattern` frames with one PyAV encoder into ``path``.

    ``frame_pts`` gives per-frame timestamps in units of 1/FPS s (gaps make variable frame rate). ``rotation``
    (degrees counter-clockwise) writes a display matrix. ``first_frame`` offsets the pattern.
    """
    width, height = size
    with av.open(str(path), "w", format=container_format, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.time_base = Fraction(1, FPS)
        stream.options = dict(options or {})
        if rotation is not None:
            stream.set_display_rotation(rotation)
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(pattern(first_frame + i, width, height), format="rgb24")
            frame.pts = i if frame_pts is None else frame_pts[i]
            frame.time_base = Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def add_audio_stream(container, codec: str = "aac"):
    return container.add_stream(codec, rate=16000)


def encode_silence(container, audio, blocks: int = 8):
    """Mux ``blocks`` blocks of silence through the audio stream ``audio`` of an open output container."""
    sample_format, dtype = ("fltp", np.float32) if audio.codec_context.name == "aac" else ("s16", np.int16)
    for j in range(blocks):
        block = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype), format=sample_format, layout="mono")
        block.sample_rate, block.pts = 16000, j * 1024
        for packet in audio.encode(block):
            container.mux(packet)
    for packet in audio.encode():
        container.mux(packet)


def stream_copy_cut(source, path, at: float, container_format=None):
    """What ``ffmpeg -ss AT -i SOURCE -c copy PATH`` writes: packets from the last keyframe at or before ``at``,
    timestamps shifted by ``at`` (the pre-roll gets negative ones; MP4/MOV hide it with an edit list)."""
    with av.open(str(source)) as src, av.open(str(path), "w", format=container_format) as out:
        in_stream = src.streams.video[0]
        out_stream = out.add_stream_from_template(in_stream)
        packets = [p for p in src.demux(in_stream) if p.size]
        cut = round(at / in_stream.time_base)
        start = max(i for i, p in enumerate(packets) if p.is_keyframe and p.pts <= cut)
        for packet in packets[start:]:
            packet.pts -= cut
            packet.dts -= cut
            packet.stream = out_stream
            out.mux(packet)
    return Path(path)


def cut_bytes(source, path, fraction: float, unit: int):
    """The file from ``fraction`` of its length on, cut at a multiple of ``unit`` bytes (188: a TS packet)."""
    data = Path(source).read_bytes()
    start = int(len(data) * fraction) // unit * unit
    Path(path).write_bytes(data[start:])
    return Path(path)


def _src(path) -> Path:
    """Where the uncut original of ``path`` goes (same folder, same extension)."""
    return path.with_name(f"{path.stem}.source{path.suffix}")


def truncate(source, path, keep: float):
    data = Path(source).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return Path(path)


def _top_level_boxes(data: bytes, start: int, end: int):
    offset = start
    while offset + 8 <= end:
        size, kind = struct.unpack(">I4s", data[offset: offset + 8])
        size = end - offset if size == 0 else size
        yield offset, size, kind
        offset += size


def move_cover_art_first(path):
    """Rewrite an MP4 so that its 'udta' (holding the cover art) precedes the tracks: the cover becomes stream 0,
    as in files tagged by iTunes-style taggers. Only the order inside 'moov' changes; no offset moves."""
    data = Path(path).read_bytes()
    moov_at, moov_size, _ = next(b for b in _top_level_boxes(data, 0, len(data)) if b[2] == b"moov")
    children = list(_top_level_boxes(data, moov_at + 8, moov_at + moov_size))
    children.sort(key=lambda child: child[2] != b"udta")
    body = b"".join(data[offset: offset + size] for offset, size, _ in children)
    Path(path).write_bytes(data[: moov_at + 8] + body + data[moov_at + moov_size:])
    return Path(path)


def patch_avi_frame_counts(path, frames: int):
    """Overwrite the frame counts of an AVI header (avih dwTotalFrames, strh dwLength, OpenDML dmlh): the
    structure (chunks, index) stays true, only the counting fields lie."""
    data = bytearray(Path(path).read_bytes())
    for tag, offset in ((b"avih", 8 + 16), (b"strh", 8 + 32), (b"dmlh", 8)):
        at = data.find(tag)
        if at >= 0:
            data[at + offset: at + offset + 4] = struct.pack("<I", frames)
    Path(path).write_bytes(bytes(data))
    return Path(path)


# ---------------------------------------------------------------------------------------------------------------
# The makers: each writes one file into a folder and returns its path


def _source(folder: Path, name: str, codec: str, **kwargs) -> Path:
    path = folder / "sources" / name
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        encode(path, codec, **kwargs)
    return path


def _h264_source(folder, bframes=True):
    return _source(folder, f"h264_{'b' if bframes else 'nob'}.mp4", "libx264", num_frames=CUT_SOURCE_FRAMES,
                   options=X264_GOP if bframes else X264_NO_B)


def _hevc_source(folder):
    return _source(folder, "hevc_open_gop.mp4", "libx265", num_frames=CUT_SOURCE_FRAMES, options=X265_OPEN_GOP)


def _ts(path, num_frames, offset_s=None, size=SIZE, codec="libx264", first_frame=0, options=X264_GOP):
    container_options = {"output_ts_offset": f"{offset_s:.6f}"} if offset_s is not None else None
    return encode(path, codec, num_frames, size=size, options=options, container_format="mpegts",
                  container_options=container_options, first_frame=first_frame)


def _concatenate(path, parts):
    Path(path).write_bytes(b"".join(Path(p).read_bytes() for p in parts))
    for part in parts:
        Path(part).unlink()
    return Path(path)


def make_ts_discontinuity(path):
    """Two TS segments spliced: the second's clock restarts 40 s earlier than the first's (a backward jump)."""
    first = _ts(path.with_suffix(".a.ts"), 20, offset_s=100.0)
    second = _ts(path.with_suffix(".b.ts"), 20, offset_s=60.0, first_frame=20)
    return _concatenate(path, [first, second])


def make_resolution_switch(path):
    """A TS whose H.264 stream switches from 64x48 to 96x64 at frame 20, timestamps continuous (no B-frames, so
    that the muxer's decode delay does not make the segments overlap)."""
    first = _ts(path.with_suffix(".a.ts"), 20, options=X264_NO_B)
    second = _ts(path.with_suffix(".b.ts"), 20, offset_s=20 / FPS, size=(96, 64), first_frame=20, options=X264_NO_B)
    return _concatenate(path, [first, second])


def make_avi_dropped_frames(path):
    """Frames at 25 fps with every fourth one missing: the AVI muxer writes an empty chunk for each gap."""
    kept = [i for i in range(40) if i % 4 != 3]
    return encode(path, "mpeg4", len(kept), frame_pts=kept)


def make_vfr_gaps(path):
    """Variable frame rate with two 2-second gaps (a paused recording)."""
    pts = [i + (50 if i >= 10 else 0) + (50 if i >= 20 else 0) for i in range(30)]
    return encode(path, "libx264", 30, frame_pts=pts, options=X264_GOP)


def make_cover_first(path):
    """An MP4 whose first video stream is its cover art (an attached JPEG picture), the video second."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = *SIZE, "yuv420p"
        video.options = X264_GOP
        cover = container.add_stream("mjpeg")
        cover.width, cover.height, cover.pix_fmt, cover.time_base = 32, 24, "yuvj420p", Fraction(1, FPS)
        cover.disposition = av.stream.Disposition.attached_pic
        picture = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 200, np.uint8), format="rgb24")
        picture = picture.reformat(format="yuvj420p")
        picture.pts = 0
        for packet in [*cover.encode(picture), *cover.encode()]:
            container.mux(packet)
        for i in range(30):
            for packet in video.encode(av.VideoFrame.from_ndarray(pattern(i), format="rgb24")):
                container.mux(packet)
        for packet in video.encode():
            container.mux(packet)
    return move_cover_art_first(path)


def _two_streams(path, first_size, first_frames, second_size, second_frames, first_codec="libx264"):
    with av.open(str(path), "w") as container:
        streams = []
        for codec, (width, height), count in ((first_codec, first_size, first_frames),
                                              ("libx264", second_size, second_frames)):
            stream = container.add_stream(codec, rate=FPS)
            stream.width, stream.height = width, height
            stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
            streams.append((stream, width, height, count))
        for i in range(max(first_frames, second_frames)):
            for j, (stream, width, height, count) in enumerate(streams):
                if i < count:
                    frame = av.VideoFrame.from_ndarray(pattern(i + 100 * j, width, height), format="rgb24")
                    for packet in stream.encode(frame.reformat(format=stream.pix_fmt)):
                        container.mux(packet)
        for stream, *_ in streams:
            for packet in stream.encode():
                container.mux(packet)
    return Path(path)


def make_damaged_packet(path, how: str):
    """H.264 (no B-frames, keyframes every 20 frames) with the bytes of packet 25 (a P-frame) damaged in the file.

    ``how="payload"`` flips bytes inside the slice data (the decoder conceals: the frame comes out flagged
    corrupt); ``how="length"`` breaks the NAL length field (the decoder rejects the packet: one frame fewer).
    """
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (SIZE[1], SIZE[0], 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = *SIZE, "yuv420p"
        stream.options = X264_NO_B
        for i in range(40):  # panning noise: large packets, so that the damage lands inside picture data
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.roll(base, 2 * i, axis=1), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        packet = [p for p in container.demux(video=0) if p.size][25]
        position, size = packet.pos, packet.size
    data = bytearray(Path(path).read_bytes())
    if how == "payload":
        middle = position + size // 2
        data[middle: middle + 40] = bytes(b ^ 0x5A for b in data[middle: middle + 40])
    else:
        data[position: position + 4] = b"\x7f\xff\xff\xff"
    Path(path).write_bytes(bytes(data))
    return Path(path)


def make_no_video_frames(path):
    """A Matroska file with a video track that holds no frame, and an audio track."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=FPS)
        video.width, video.height, video.pix_fmt = *SIZE, "yuv420p"
        encode_silence(container, add_audio_stream(container))
        for packet in video.encode():
            container.mux(packet)
    return Path(path)


def make_audio_only(path, cover: bool = False):
    """An M4A of silence; with ``cover``, an attached cover picture too (an audio file with artwork)."""
    with av.open(str(path), "w", format="mp4") as container:
        audio = add_audio_stream(container)
        if cover:
            picture_stream = container.add_stream("mjpeg")
            picture_stream.width, picture_stream.height, picture_stream.pix_fmt = 32, 24, "yuvj420p"
            picture_stream.time_base = Fraction(1, FPS)
            picture_stream.disposition = av.stream.Disposition.attached_pic
            picture = av.VideoFrame.from_ndarray(np.full((24, 32, 3), 90, np.uint8), format="rgb24")
            picture = picture.reformat(format="yuvj420p")
            picture.pts = 0
            for packet in [*picture_stream.encode(picture), *picture_stream.encode()]:
                container.mux(packet)
        encode_silence(container, audio)
    return Path(path)


@dataclass(frozen=True)
class Case:
    """A valid file: how to make it, and what ffmpeg shows when the construction fixes it."""

    make: Callable[[Path], Path]
    frames: int | None = None  # frames ffmpeg shows (None: only the decoder can tell, e.g. a mid-GOP start)
    shape: tuple[int, int] | None = SIZE[::-1]  # (height, width) of the frames returned (upright)
    orientation: str = ""  # the display transform ffmpeg applies
    discontinuous: bool = False  # timestamps jump: clip times are not plain pts differences
    damaged_from: int | None = None  # first frame with concealed damage (concealment differs between versions)


def _in(folder_maker):
    """Adapt ``maker(folder)`` makers to the ``make(path)`` signature (the path's folder holds sources)."""
    return lambda path: folder_maker(path.parent, path)


VALID: dict[str, Case] = {
    # stream-copy cuts: edit lists hide the pre-roll (B-frames or not, HEVC open GOP); in MKV the RASL pictures
    # the cut orphaned stay and the decoder drops them
    "cut_h264_bframes.mp4": Case(_in(lambda d, p: stream_copy_cut(_h264_source(d), p, CUT_AT)), CUT_FRAMES),
    "cut_h264_no_bframes.mov": Case(_in(lambda d, p: stream_copy_cut(_h264_source(d, False), p, CUT_AT)),
                                    CUT_FRAMES),
    "cut_hevc_open_gop.mp4": Case(_in(lambda d, p: stream_copy_cut(_hevc_source(d), p, CUT_AT)), CUT_FRAMES),
    "cut_hevc_open_gop.mkv": Case(_in(lambda d, p: stream_copy_cut(_hevc_source(d), p, CUT_AT))),
    # AVI: header counts that lie; dropped frames as empty chunks
    "avi_lying_header.avi": Case(lambda p: patch_avi_frame_counts(encode(p, "mpeg4", 30), 444), 30),
    "avi_dropped_frames.avi": Case(make_avi_dropped_frames, 30),
    # MPEG-TS / PS: a recording that starts mid-GOP, big offsets, a wrap of the 33-bit clock, a splice
    "ts_mid_gop.ts": Case(lambda p: cut_bytes(_ts(_src(p), 60), p, 0.4, 188)),
    "ps_mid_gop_mpeg2.mpg": Case(lambda p: cut_bytes(
        encode(_src(p), "mpeg2video", 60, container_format="mpeg", options={"bf": "2", "g": "12"}),
        p, 0.4, 2048)),
    "ts_large_offset.ts": Case(lambda p: _ts(p, 40, offset_s=36000.0), 40),
    "ts_pts_wrap.ts": Case(lambda p: _ts(p, 40, offset_s=2 ** 33 / 90000 - 0.8), 40),
    "ts_discontinuity.ts": Case(make_ts_discontinuity, 40, discontinuous=True),
    "resolution_switch.ts": Case(make_resolution_switch, 40),
    "vfr_gaps.mp4": Case(make_vfr_gaps, 30),
    # stream choice
    "cover_art_first.mp4": Case(make_cover_first, 30),
    "thumbnail_stream_first.mkv": Case(lambda p: _two_streams(p, (16, 12), 1, SIZE, 30, first_codec="mjpeg"), 30),
    "two_video_streams.mkv": Case(lambda p: _two_streams(p, SIZE, 30, (96, 64), 20), 20, shape=(64, 96)),
    # orientation: a portrait phone video (stored landscape, shown turned 90 degrees clockwise) and upside down
    "rotated_portrait.mp4": Case(lambda p: encode(p, "libx264", 20, rotation=-90, options=X264_GOP), 20,
                                 shape=SIZE, orientation="transpose=clock"),
    "rotated_180.mov": Case(lambda p: encode(p, "libx264", 20, rotation=180, options=X264_GOP), 20,
                            orientation="hflip,vflip"),
    # pixel formats and sizes
    "yuv420p10_hevc.mkv": Case(lambda p: encode(p, "libx265", 20, pix_fmt="yuv420p10le",
                                                options={"x265-params": "log-level=error"}), 20),
    "full_range_h264.mp4": Case(lambda p: encode(p, "libx264", 20, pix_fmt="yuvj420p", options=X264_GOP), 20),
    "odd_size_33x17.mkv": Case(lambda p: encode(p, "libx264", 20, size=(33, 17), pix_fmt="yuv444p"), 20,
                               shape=(17, 33)),
    "one_pixel_1x1.mkv": Case(lambda p: encode(p, "ffv1", 5, size=(1, 1), pix_fmt="yuv444p"), 5, shape=(1, 1)),
    # codecs and containers
    "vp8_alpha.webm": Case(lambda p: encode(p, "libvpx", 20, pix_fmt="yuva420p", options=VPX_FAST), 20),
    "vp9_alpha.webm": Case(lambda p: encode(p, "libvpx-vp9", 20, pix_fmt="yuva420p", options=VPX_FAST), 20),
    "av1.mp4": Case(lambda p: encode(p, "libsvtav1", 60, size=(64, 64),
                                     options={"preset": "12", "svtav1-params": "keyint=20"}), 60, shape=(64, 64)),
    "mpeg2.mpg": Case(lambda p: encode(p, "mpeg2video", 20, container_format="mpeg", options={"bf": "2"}), 20),
    "mjpeg.avi": Case(lambda p: encode(p, "mjpeg", 20, pix_fmt="yuvj420p"), 20),
    "wmv2.wmv": Case(lambda p: encode(p, "wmv2", 20, container_format="asf"), 20),
    "h263.3gp": Case(lambda p: encode(p, "h263", 20, size=(128, 96)), 20, shape=(96, 128)),
    "prores.mov": Case(lambda p: encode(p, "prores_ks", 10, pix_fmt="yuv422p10le"), 10),
    "animated.gif": Case(lambda p: encode(p, "gif", 10, pix_fmt="rgb8"), 10),
    "single_frame.mp4": Case(lambda p: encode(p, "libx264", 1), 1),
    # damage ffmpeg conceals and plays through
    "damaged_payload.mp4": Case(lambda p: make_damaged_packet(p, "payload"), 40, damaged_from=25),
    "damaged_nal_length.mp4": Case(lambda p: make_damaged_packet(p, "length"), 39, damaged_from=25),
}


def _garbage(path):
    Path(path).write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return Path(path)


def _empty(path):
    Path(path).write_bytes(b"")
    return Path(path)


BROKEN: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated_moov_at_end.mp4": (
        lambda p: truncate(encode(_src(p), "libx264", 60, options=X264_GOP), p, 0.6), "truncated"),
    "truncated_moov_at_front.mp4": (
        lambda p: truncate(encode(_src(p), "libx264", 60, options=X264_GOP,
                                  container_options={"movflags": "faststart"}), p, 0.6), "truncated"),
    "truncated.mkv": (lambda p: truncate(encode(_src(p), "libx264", 60, options=X264_GOP), p, 0.6),
                      "truncated"),
    "garbage.mp4": (_garbage, "not a readable media file"),
    "empty.mp4": (_empty, "the file is empty"),
    "no_video_frames.mkv": (make_no_video_frames, "the video stream holds no frames"),
    "audio_only.m4a": (make_audio_only, "no video stream"),
    "cover_art_only.m4a": (lambda p: make_audio_only(p, cover=True), "only a still picture"),
}


class Corpus:
    """The corpus files in ``folder``, each written on first use (once per test session)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, name: str) -> Path:
        path = self.folder / name
        if not path.exists():
            make = VALID[name].make if name in VALID else BROKEN[name][0]
            made = make(path)
            assert made == path and path.exists(), f"the maker of {name} wrote {made}"
        return path
