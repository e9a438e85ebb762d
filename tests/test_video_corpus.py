"""Every video that ffmpeg plays decodes, as ffmpeg shows it; broken files are refused in plain words (issue 12).

The corpus (tests/video_corpus.py) is written at test time with PyAV, each file once per session. For every
valid file, the reference is :func:`decode_all_frames` (every frame the decoder outputs, in order), which must
agree with the count of ``ffprobe -count_frames`` and with the frames of the ``ffmpeg`` command line where those
tools are installed (.ci/run installs them when it can), and with what the file's construction fixes; the
sampled frames (test and train mode, clips) must equal the reference at their indices. Every case runs under a
time limit.
"""

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from video_corpus import BROKEN, CUT_FIRST_FRAME, CUT_FRAMES, FPS, VALID, Corpus, encode, pattern

from modeling_pig.video_container import apply_orientation, choose_video_stream, frame_orientation
from modeling_pig.video_io import VideoDecodeError, decode_all_frames, read_video, sample_frame_indices

FFPROBE, FFMPEG = shutil.which("ffprobe"), shutil.which("ffmpeg")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
pytestmark = pytest.mark.timeout(60)  # per case (file generation included); the broken ones get 30 s


def bench_decode():
    """benchmarks/bench_decode.py as a module (it writes the long synthetic videos)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    import bench_decode

    return bench_decode


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return Corpus(tmp_path_factory.mktemp("video_corpus"))


_REFERENCES = {}


def reference(path):
    """decode_all_frames, once per file and session."""
    if path not in _REFERENCES:
        _REFERENCES[path] = decode_all_frames(path)
    return _REFERENCES[path]


def chosen_stream_index(path):
    with av.open(str(path)) as container:
        return choose_video_stream(container, str(path)).index


def decoded_seconds(path):
    """Seconds of every frame the decoder outputs (plain PyAV), from the first one."""
    times = []
    with av.open(str(path)) as container:
        stream = container.streams[chosen_stream_index(path)]
        for packet in container.demux(stream):
            try:
                times += [float(frame.pts * stream.time_base) for frame in packet.decode()]
            except av.error.InvalidDataError:
                pass  # a damaged packet: no frame, as ffmpeg
    return [t - times[0] for t in times]


def assert_sample_equals_reference(sample, frames, context=""):
    assert sample.frames.dtype == np.uint8 and sample.frames.shape[1:] == frames.shape[1:], context
    for row, index in enumerate(sample.indices):
        np.testing.assert_array_equal(sample.frames[row], frames[index], err_msg=f"{context} frame {index}")


# --------------------------------------------------------------------------------------------------------------
# every valid file


@pytest.mark.parametrize("name", sorted(VALID))
def test_the_full_decode_shows_what_the_file_was_made_of(corpus, name):
    case = VALID[name]
    frames = reference(corpus.path(name))
    if case.frames is not None:
        assert len(frames) == case.frames
    assert frames.shape[1:] == (*case.shape, 3)


@pytest.mark.skipif(not (FFPROBE and FFMPEG), reason="ffprobe/ffmpeg are not installed (.ci/run installs them)")
@pytest.mark.parametrize("name", sorted(VALID))
def test_the_full_decode_agrees_with_ffprobe_and_ffmpeg(corpus, name):
    case, path = VALID[name], corpus.path(name)
    frames = reference(path)
    out = subprocess.run([FFPROBE, "-v", "error", "-count_frames", "-select_streams", str(chosen_stream_index(path)),
                          "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    counted = next(line for line in out.splitlines() if line.strip(", "))  # MPEG-TS repeats it per program
    assert int(counted.strip(", ")) == len(frames), f"ffprobe -count_frames says {out.strip()}"
    # ffmpeg's own stream choice, autorotation and scaling (its FFmpeg version may differ from PyAV's)
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24",
                          "-fps_mode", "passthrough", "-"], capture_output=True, check=True).stdout
    shown = np.frombuffer(raw, np.uint8).reshape(-1, *frames.shape[1:])
    assert len(shown) == len(frames), f"ffmpeg shows {len(shown)} frames"
    compared = slice(0, case.damaged_from)  # how damage is concealed changes between FFmpeg versions
    difference = np.abs(shown[compared].astype(int) - frames[compared].astype(int)).mean(axis=(1, 2, 3))
    assert difference.max() < 3, f"frame {difference.argmax()} differs from ffmpeg's by {difference.max():.1f}"


@pytest.mark.parametrize("name", sorted(VALID))
def test_sampled_frames_equal_the_full_decode(corpus, name):
    path = corpus.path(name)
    frames = reference(path)
    count = len(frames)
    for num_frames, mode, seed in ((12, "test", 0), (12, "train", 1), (5, "train", 2), (3, "train", 3)):
        sample = read_video(path, num_frames, mode=mode, generator=torch.Generator().manual_seed(seed))
        assert sample.num_video_frames == count, (mode, seed)
        assert sample.indices == sample_frame_indices(count, num_frames, mode, torch.Generator().manual_seed(seed))
        assert_sample_equals_reference(sample, frames, f"{name} {mode} seed {seed}")
    if count > 1 and not VALID[name].discontinuous:
        # a clip over the middle third: the frames on screen from `start` until `end`, by the decoder's timestamps
        seconds = decoded_seconds(path)
        start, end = seconds[-1] / 3, 2 * seconds[-1] / 3 + 1e-3
        clip = read_video(path, 4, start=start, end=end)
        first = max(i for i, t in enumerate(seconds) if t <= start + 1e-6)
        last = max(i for i, t in enumerate(seconds) if t < end - 1e-6)
        assert clip.clip_range == (first, last)
        assert clip.indices == [first + i for i in sample_frame_indices(last - first + 1, 4)]
        assert_sample_equals_reference(clip, frames, f"{name} clip")


# --------------------------------------------------------------------------------------------------------------
# every broken file


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_files_are_refused_naming_the_file_and_the_cause(corpus, name):
    path, cause = corpus.path(name), BROKEN[name][1]
    for read in (lambda: read_video(path, 12), lambda: decode_all_frames(path)):
        with pytest.raises(VideoDecodeError) as info:
            read()
        message = str(info.value)
        assert message.startswith(f"{path}: ") and cause in message, message
        assert "Errno" not in message and "avcodec" not in message, message


# --------------------------------------------------------------------------------------------------------------
# what each kind of file is about


@pytest.mark.parametrize("name", ["cut_h264_bframes.mp4", "cut_h264_no_bframes.mov", "cut_hevc_open_gop.mp4"])
def test_a_stream_copy_cut_starts_at_the_cut_and_clips_count_from_there(corpus, name):
    path = corpus.path(name)
    sample = read_video(path, CUT_FRAMES)
    assert sample.num_video_frames == CUT_FRAMES and sample.timestamps[0] == 0.0
    np.testing.assert_allclose(np.diff(sample.timestamps), 1 / FPS, atol=1e-6)
    red = sample.frames[:, 20:, 20:, 0].mean(axis=(1, 2))  # away from the bright top-left block
    expected_red = [(CUT_FIRST_FRAME + i) * 37 % 256 for i in range(CUT_FRAMES)]
    assert np.abs(red - expected_red).max() < 12  # the very source frames, none of the hidden pre-roll
    clip = read_video(path, 2, start=0.4, end=0.8)  # 10 frames after the first shown one
    assert clip.clip_range == (10, 19)
    assert abs(clip.frames[0, 20:, 20:, 0].mean() - (CUT_FIRST_FRAME + 10) * 37 % 256) < 12


@pytest.mark.parametrize("name", ["ts_discontinuity.ts", "ts_pts_wrap.ts", "ts_large_offset.ts"])
def test_ts_timestamps_count_seconds_through_offsets_wraps_and_discontinuities(corpus, name):
    sample = read_video(corpus.path(name), 40)  # 40 frames: every one
    assert sample.indices == list(range(40))
    np.testing.assert_allclose(sample.timestamps, np.arange(40) / FPS, atol=1e-6)
    clip = read_video(corpus.path(name), 2, start=0.8, end=1.0)  # across the splice of ts_discontinuity.ts
    assert clip.clip_range == (20, 24)


def test_a_resolution_switch_is_scaled_to_the_first_size(corpus):
    sample = read_video(corpus.path("resolution_switch.ts"), 40)
    assert sample.frames.shape == (40, 48, 64, 3)
    red = sample.frames[:, 20:, 20:, 0].mean(axis=(1, 2))
    assert np.abs(red - [i * 37 % 256 for i in range(40)]).max() < 12  # frames 20..39 are the 96x64 ones, scaled


def test_variable_frame_rate_gaps_keep_their_time(corpus):
    sample = read_video(corpus.path("vfr_gaps.mp4"), 30)
    gaps = np.round(np.diff(sample.timestamps) * FPS).astype(int)
    assert gaps.tolist() == [1] * 9 + [51] + [1] * 9 + [51] + [1] * 9
    clip = read_video(corpus.path("vfr_gaps.mp4"), 3, start=1.0, end=4.0)  # frame 9 is on screen until 2.4 s
    assert clip.clip_range == (9, 19)


@pytest.mark.parametrize("name", ["cover_art_first.mp4", "thumbnail_stream_first.mkv"])
def test_cover_art_and_thumbnails_are_not_the_video(corpus, name):
    path = corpus.path(name)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "mjpeg"  # the picture comes first
    frames = reference(path)
    first = 100 if name.endswith(".mkv") else 0  # _two_streams draws the second stream from pattern(100) on
    red = frames[:, 20:, 20:, 0].mean(axis=(1, 2))
    assert np.abs(red - [(first + i) * 37 % 256 for i in range(30)]).max() < 12


def test_of_two_video_streams_the_larger_is_the_video(corpus):
    frames = reference(corpus.path("two_video_streams.mkv"))
    assert frames.shape == (20, 64, 96, 3)
    assert abs(frames[5, 20:, 20:, 0].mean() - 105 * 37 % 256) < 12  # the second stream's frame 5


@pytest.mark.parametrize("name, turn", [("rotated_portrait.mp4", -1), ("rotated_180.mov", 2)])
def test_rotation_metadata_is_applied_unless_stored_orientation_is_asked(corpus, name, turn):
    path = corpus.path(name)
    upright, stored = read_video(path, 6), read_video(path, 6, upright=False)
    assert stored.frames.shape == (6, 48, 64, 3) and stored.orientation == ""
    assert upright.orientation == VALID[name].orientation
    np.testing.assert_array_equal(upright.frames, np.rot90(stored.frames, turn, axes=(1, 2)))
    np.testing.assert_array_equal(decode_all_frames(path, upright=False)[stored.indices], stored.frames)
    # the bright block (top-left as recorded) is where the display matrix puts it
    corner = {-1: (slice(0, 12), slice(-12, None)), 2: (slice(-12, None), slice(-16, None))}[turn]
    assert upright.frames[0][corner].mean() > 200


@pytest.mark.parametrize("rotation, hflip, vflip, expected", [
    (90, False, False, "transpose=cclock"), (-90, False, False, "transpose=clock"), (180, False, False, "hflip,vflip"),
    (0, True, False, "hflip"), (0, False, True, "vflip"), (0, False, False, ""),
])
def test_frame_orientation_reads_the_display_matrix_as_ffmpeg_does(tmp_path, rotation, hflip, vflip, expected):
    path = tmp_path / "turned.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        if rotation or hflip or vflip:
            stream.set_display_rotation(rotation, hflip=hflip, vflip=vflip)
        for packet in [*stream.encode(av.VideoFrame.from_ndarray(pattern(0), format="rgb24")), *stream.encode()]:
            container.mux(packet)
    with av.open(str(path)) as container:
        assert frame_orientation(next(container.decode(video=0))) == expected


def test_apply_orientation_steps_are_the_ffmpeg_filters():
    image = np.arange(6).reshape(2, 3, 1)  # [[0 1 2], [3 4 5]]
    cases = {
        "transpose=clock": [[3, 0], [4, 1], [5, 2]],  # turned 90 degrees clockwise
        "transpose=cclock": [[2, 5], [1, 4], [0, 3]],
        "transpose=cclock_flip": [[0, 3], [1, 4], [2, 5]],  # the plain transpose
        "transpose=clock_flip": [[5, 2], [4, 1], [3, 0]],
        "hflip": [[2, 1, 0], [5, 4, 3]],
        "vflip": [[3, 4, 5], [0, 1, 2]],
        "hflip,vflip": [[5, 4, 3], [2, 1, 0]],
        "": [[0, 1, 2], [3, 4, 5]],
    }
    for orientation, expected in cases.items():
        assert apply_orientation(image, orientation)[..., 0].tolist() == expected, orientation


@pytest.mark.parametrize("name", ["full_range_h264.mp4", "yuv420p10_hevc.mkv", "prores.mov"])
def test_full_range_and_high_bit_depth_keep_their_colours(corpus, name):
    frames = reference(corpus.path(name))
    for i in (0, 7):
        error = np.abs(frames[i].astype(int) - pattern(i).astype(int))
        assert error.mean() < 6 and np.median(error) < 4, (name, i, error.mean())


def test_av1_train_mode_and_clips_are_not_shifted(corpus):
    path = corpus.path("av1.mp4")
    frames = reference(path)
    for seed in range(8):
        for num_frames, start, end in ((12, None, None), (4, 0.5, 1.7)):
            sample = read_video(path, num_frames, "train", start, end, torch.Generator().manual_seed(seed))
            assert sample.decode_path == "timestamp"
            assert_sample_equals_reference(sample, frames, f"seed {seed}")


def test_concealed_damage_is_counted_and_logged(corpus, caplog):
    path = corpus.path("damaged_payload.mp4")
    with caplog.at_level(logging.WARNING, logger="modeling_pig.video_io"):
        sample = read_video(path, 40)  # every frame: the damaged one included
    assert sample.num_video_frames == 40 and sample.decode_errors == 1
    assert str(path) in caplog.text and "1 decode error" in caplog.text
    clean = read_video(path, 4, start=0.0, end=0.5)  # frames 0-12, before the damage at frame 25
    assert clean.decode_errors == 0


def test_a_rejected_packet_is_one_frame_fewer_counted_and_logged(corpus, caplog):
    path = corpus.path("damaged_nal_length.mp4")
    with caplog.at_level(logging.WARNING, logger="modeling_pig.video_io"):
        sample = read_video(path, 12)
    assert sample.num_video_frames == 39 and sample.decode_errors == 1 and "rejected" in caplog.text
    assert_sample_equals_reference(sample, reference(path))


def test_a_30_minute_video_is_sampled_without_decoding_it_whole(tmp_path):
    # 30 minutes at 5 frames/s (a smaller file to write than 25 frames/s; the same seeks), keyframes every 2 s
    path = bench_decode().make_long_video(tmp_path / "long.mp4", minutes=30, fps=5, gop=10, size=(64, 48))
    total = 30 * 60 * 5
    gop = [pattern(i) for i in range(10)]
    for mode, seed in (("test", 0), ("train", 1)):
        sample = read_video(path, 12, mode, generator=torch.Generator().manual_seed(seed))
        assert sample.num_video_frames == total and sample.decode_path == "timestamp"
        assert sample.packets_decoded <= 12 * 10 and sample.seeks >= 11  # one GOP at most per target
        for row, index in enumerate(sample.indices):
            assert np.abs(sample.frames[row].astype(int) - gop[index % 10]).mean() < 6, index
    clip = read_video(path, 4, start=900.0, end=960.0)
    assert clip.packets_decoded <= 4 * 10 and clip.timestamps[0] >= 900.0 - 0.2


def test_decode_all_frames_keeps_the_stored_orientation_on_request(tmp_path):
    path = encode(tmp_path / "turned.mp4", "mpeg4", 3, rotation=90)
    assert decode_all_frames(path).shape == (3, 64, 48, 3)
    assert decode_all_frames(path, upright=False).shape == (3, 48, 64, 3)


def test_bench_decode_compares_with_a_baseline_and_a_long_video(tmp_path, capsys):
    baseline = tmp_path / "baseline_video_io.py"  # any module with read_video; here ours, so the frames agree
    baseline.write_text("from modeling_pig.video_io import read_video  # noqa: F401\n")
    encode(tmp_path / "clip.mp4", "libx264", 30)
    bench_decode().main(["--videos", str(tmp_path), "--repeats", "1", "--baseline", str(baseline),
                         "--long_minutes", "0.5"])
    out = capsys.readouterr().out
    assert f"ours against {baseline}" in out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| clip.mp4 |")
            or line.startswith("| synthetic_0.5min.mp4 |")}
    assert rows["clip.mp4"].rstrip().endswith("| yes |")
    long_row = [cell.strip() for cell in rows["synthetic_0.5min.mp4"].split("|")]
    assert long_row[2] == "750" and long_row[-2] == "yes"  # 30 s at 25 frames/s; the same frames both ways
    path, packets, seeks = long_row[6].split(", ")
    assert path == "timestamp" and int(packets) <= 12 * 50 and int(seeks) >= 11  # a GOP per target at most
