"""Video decoding and frame sampling (modeling_pig/video_io.py).

Real camera files come from ../shared/data/videos (fixture `shared_videos`); edge cases are written with PyAV
into a temporary folder. The reference for "the right frames" is a plain PyAV decode of every frame, counted in
output order.
"""

import fractions
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from helpers import encode_silence, write_video

from modeling_pig.video_io import (
    SEEK_MIN_SKIPPED_PACKETS,
    VideoDecodeError,
    decode_all_frames,
    read_video,
    read_video_frames,
    sample_frame_indices,
)

def write_h264_with_bframes(path, num_frames=40, pts_from_dts=False, trailing_empty_packets=0):
    """H.264 with B-frames (a panning noise image), optionally muxed the way OpenCV's writer does it.

    `pts_from_dts`: every packet gets pts = dts, so timestamps no longer give the display order (the decoder
    still reorders). `trailing_empty_packets`: packets holding only an access-unit delimiter are appended; the
    MP4 header lists them as frames, but no frame comes out of them.
    """
    base = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"bf": "3", "b-adapt": "0", "keyint": "100"}
        packets = []
        for i in range(num_frames):
            packets += stream.encode(av.VideoFrame.from_ndarray(np.roll(base, 2 * i, axis=1), format="rgb24"))
        packets += stream.encode()
        shift = packets[0].dts
        for packet in packets:
            if pts_from_dts:
                packet.dts -= shift
                packet.pts = packet.dts
            container.mux(packet)
        last = packets[-1]
        for j in range(trailing_empty_packets):
            empty = av.Packet(bytes([0, 0, 0, 2, 0x09, 0xF0]))  # one length-prefixed NAL: access unit delimiter
            empty.stream, empty.time_base = stream, last.time_base
            empty.dts = last.dts + j + 1  # in the encoder's time base: one frame apart
            empty.pts = empty.dts if pts_from_dts else max(p.pts for p in packets) + j + 1
            container.mux(empty)
    return Path(path)


def reference_frames(path, indices):
    """Decode every frame with plain PyAV; return ({index: rgb frame} for `indices`, total frame count)."""
    wanted, frames, count = set(indices), {}, 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if count in wanted:
                frames[count] = frame.to_ndarray(format="rgb24")
            count += 1
    return frames, count


def assert_frames_match_reference(sample, path):
    reference, count = reference_frames(path, sample.indices)
    assert sample.frames.dtype == np.uint8 and sample.frames.ndim == 4 and sample.frames.shape[-1] == 3
    for row, index in enumerate(sample.indices):
        np.testing.assert_array_equal(sample.frames[row], reference[index], err_msg=f"{path} frame {index}")
    return count


def truncate(src, dst, keep_fraction):
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * keep_fraction)])
    return Path(dst)


# --------------------------------------------------------------------------------------------------------------
# sampling (pure)


def test_test_mode_is_truncated_linspace_over_all_frames():
    assert sample_frame_indices(100, 12) == np.linspace(0, 99, 12).astype(int).tolist()
    assert sample_frame_indices(100, 12) == [0, 9, 18, 27, 36, 45, 54, 63, 72, 81, 90, 99]
    assert sample_frame_indices(472, 12)[-1] == 471


def test_short_video_repeats_frames():
    assert sample_frame_indices(3, 12) == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2]
    assert sample_frame_indices(1, 12) == [0] * 12
    assert sample_frame_indices(1, 12, "train", torch.Generator().manual_seed(0)) == [0] * 12


def test_train_mode_is_seeded_and_jitters_only_the_ends():
    n, k = 250, 12
    interval = int(n / (k - 1))  # 22
    first_values, last_values = set(), set()
    for seed in range(300):
        indices = sample_frame_indices(n, k, "train", torch.Generator().manual_seed(seed))
        assert indices == sample_frame_indices(n, k, "train", torch.Generator().manual_seed(seed))
        assert 0 <= indices[0] <= interval and n - 1 - interval <= indices[-1] <= n - 1
        assert indices == np.linspace(indices[0], indices[-1], k).astype(int).tolist()
        first_values.add(indices[0])
        last_values.add(indices[-1])
    assert first_values == set(range(interval + 1))  # every allowed start is drawn, nothing else
    assert last_values == set(range(n - 1 - interval, n))


def test_train_mode_without_generator_follows_torch_manual_seed():
    torch.manual_seed(3)
    first = sample_frame_indices(500, 12, "train")
    torch.manual_seed(3)
    assert sample_frame_indices(500, 12, "train") == first


def test_train_mode_ends_never_cross_for_few_frames():
    for seed in range(50):
        for n in (1, 2, 3, 4):
            indices = sample_frame_indices(n, 2, "train", torch.Generator().manual_seed(seed))
            assert 0 <= indices[0] <= indices[-1] <= n - 1


@pytest.mark.parametrize("args", [(0, 12), (10, 0), (10, 12, "val"), (10.0, 12), (True, 12)])
def test_sampling_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        sample_frame_indices(*args)


# --------------------------------------------------------------------------------------------------------------
# real camera files


def test_real_videos_give_the_frames_a_full_decode_gives(shared_videos):
    for path in shared_videos:
        sample = read_video(path, 12)
        train = read_video(path, 12, mode="train", generator=torch.Generator().manual_seed(7))
        reference, count = reference_frames(path, sample.indices + train.indices)  # one full decode per file
        for got in (sample, train):
            assert got.frames.shape[0] == 12 and got.frames.dtype == np.uint8 and got.frames.shape[-1] == 3
            for row, index in enumerate(got.indices):
                np.testing.assert_array_equal(got.frames[row], reference[index], err_msg=f"{path} frame {index}")
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert sample.frames.shape == (12, stream.height, stream.width, 3)
        assert sample.frames.min() < 64 and sample.frames.max() > 192  # real pictures, not a blank or a clipped range
        # the count is the decoder's (box.mp4, written by OpenCV, lists 456 frames and decodes 455)
        assert sample.num_video_frames == count
        assert sample.indices == sample_frame_indices(count, 12)
        assert train.indices == sample_frame_indices(count, 12, "train", torch.Generator().manual_seed(7))
        assert train.indices != sample.indices  # the jitter moved at least one end
        np.testing.assert_array_equal(read_video_frames(path, 12), sample.frames)  # test mode is deterministic


def test_real_video_clip_selects_the_frames_shown_between_start_and_end(shared_videos):
    path = max(shared_videos, key=lambda p: p.stat().st_size)
    with av.open(str(path)) as container:
        times = sorted(float(p.pts * p.time_base) for p in container.demux(video=0) if p.size)
    times = [t - times[0] for t in times]
    start, end = 2.0, 5.5
    first = max(i for i, t in enumerate(times) if t <= start)
    last = max(i for i, t in enumerate(times) if t < end)
    sample = read_video(path, 8, start=start, end=end)
    assert sample.clip_range == (first, last)
    assert sample.indices == [first + i for i in sample_frame_indices(last - first + 1, 8)]
    assert all(start - 0.1 <= t < end for t in sample.timestamps)
    assert_frames_match_reference(sample, path)


# --------------------------------------------------------------------------------------------------------------
# generated files: containers, codecs, sizes, frame rates

FORMATS = {
    "h264.mp4": dict(codec="libx264"),
    "h264_audio.mov": dict(codec="libx264", audio=True),
    "vp9.webm": dict(codec="libvpx-vp9"),
    "hevc.mkv": dict(codec="libx265"),
    "mpeg4_bframes.avi": dict(codec="mpeg4", codec_options={"bf": "2"}),
    "mpeg2.ts": dict(codec="mpeg2video", container_format="mpegts"),
    "odd_size.mp4": dict(codec="mpeg4", size=(65, 37)),
    "vfr.mp4": dict(codec="libx264", fps=None, frame_pts_ms=[sum(40 if j % 3 else 100 for j in range(i)) for i in range(60)]),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video_io")
    videos = {}
    for name, spec in FORMATS.items():
        videos[name] = write_video(folder / name, num_frames=60, gop=10, **spec)
    return videos


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_containers_and_codecs_give_the_frames_a_full_decode_gives(generated, name):
    path = generated[name]
    for mode, seed in (("test", 0), ("train", 1)):
        sample = read_video(path, 12, mode=mode, generator=torch.Generator().manual_seed(seed))
        count = assert_frames_match_reference(sample, path)
        assert count == 60 and sample.num_video_frames == 60
    assert sample.decode_path == "timestamp"


def test_frame_count_is_right_when_the_container_does_not_list_it(generated):
    for name in ("vp9.webm", "hevc.mkv", "mpeg2.ts"):
        with av.open(str(generated[name])) as container:
            assert container.streams.video[0].frames == 0
        assert read_video(generated[name], 4).num_video_frames == 60


def test_variable_frame_rate_indexes_frames_and_clips_by_timestamp(generated):
    path = generated["vfr.mp4"]
    pts_ms = FORMATS["vfr.mp4"]["frame_pts_ms"]
    sample = read_video(path, 12)
    assert sample.indices == sample_frame_indices(60, 12)
    np.testing.assert_allclose(sample.timestamps, [pts_ms[i] / 1000 for i in sample.indices], atol=1e-3)
    clip = read_video(path, 4, start=1.0, end=2.0)
    first = max(i for i, t in enumerate(pts_ms) if t <= 1000)
    last = max(i for i, t in enumerate(pts_ms) if t < 2000)
    assert clip.clip_range == (first, last)
    assert_frames_match_reference(clip, path)


@pytest.mark.parametrize("pts_from_dts", [False, True])
def test_frames_the_container_lists_but_cannot_decode_are_not_counted(tmp_path, pts_from_dts):
    # The header lists 41 frames, 40 decode. (box.mp4 in the shared set has the other variant: 456 packets
    # demux, 455 decode; the real-video test checks it.)
    path = write_h264_with_bframes(tmp_path / "listed.mp4", 40, pts_from_dts=pts_from_dts, trailing_empty_packets=1)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 41
    for mode, seed in (("test", 0), ("train", 3)):
        sample = read_video(path, 12, mode=mode, generator=torch.Generator().manual_seed(seed))
        count = assert_frames_match_reference(sample, path)
        assert count == 40 and sample.num_video_frames == 40
        assert sample.indices == sample_frame_indices(40, 12, mode, torch.Generator().manual_seed(seed))


def test_timestamps_copied_from_decode_order_fall_back_to_counting(tmp_path):
    path = write_h264_with_bframes(tmp_path / "opencv_like.mp4", 40, pts_from_dts=True)
    sample = read_video(path, 12)
    assert sample.decode_path == "sequential"
    assert_frames_match_reference(sample, path)
    normal = write_h264_with_bframes(tmp_path / "normal.mp4", 40)
    sample = read_video(normal, 12)
    assert sample.decode_path == "timestamp"
    assert_frames_match_reference(sample, normal)


def test_listed_frames_that_never_decode_are_not_frames(tmp_path):
    # issue 12: the header lists 35 frames, 30 decode, nothing is damaged: ffmpeg plays a 30-frame video, and so
    # do we (this used to be refused as "header lists 35 video frames but only 30 could be read")
    path = write_h264_with_bframes(tmp_path / "many.mp4", 30, trailing_empty_packets=5)
    sample = read_video(path, 12)
    assert sample.num_video_frames == 30 and sample.decode_errors == 0
    assert assert_frames_match_reference(sample, path) == 30


def test_dense_keyframes_are_seeked_to_and_sparse_ones_are_not(tmp_path):
    dense = write_video(tmp_path / "dense.mp4", num_frames=150, gop=5)
    sample = read_video(dense, 4)
    assert sample.seeks >= 3 and sample.packets_decoded < 60
    assert_frames_match_reference(sample, dense)
    sparse = write_video(tmp_path / "sparse.mp4", num_frames=150, gop=300)
    sample = read_video(sparse, 4)
    assert sample.seeks == 1  # the one positioning seek at the first keyframe
    assert_frames_match_reference(sample, sparse)
    assert SEEK_MIN_SKIPPED_PACKETS > 1


@pytest.mark.timeout(60)
def test_a_seek_that_lands_a_gop_early_is_not_repeated_forever(tmp_path):
    # In this VFR MP4 (B-frames, ms timestamps) a seek to the keyframe at frame 87 lands at the keyframe at 58,
    # 29 packets early; aiming at frame 87 again from there used to land at 58 again, forever.
    pts_ms = [sum(40 if j % 3 else 100 for j in range(i)) for i in range(120)]
    path = write_video(tmp_path / "vfr_gop30.mp4", num_frames=120, gop=30, fps=None, frame_pts_ms=pts_ms)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        keyframe = packets[87]
        assert keyframe.is_keyframe
        container.seek(keyframe.pts, stream=stream, backward=True)
        landing = next(container.demux(stream))
        assert [p.pts for p in packets].index(landing.pts) == 58  # the demuxer behaviour this test is about
    sample = read_video(path, 4, start=5.5)  # every target lies after frame 87
    assert sample.indices[0] > 87 and sample.decode_path == "timestamp"
    assert sample.seeks <= 5  # each keyframe is aimed at once at most
    assert_frames_match_reference(sample, path)


def test_decoding_stops_after_the_last_target(tmp_path):
    path = write_video(tmp_path / "long.mp4", num_frames=150, gop=300)
    sample = read_video(path, 4, start=0.0, end=1.0)  # frames 0..24 of 150
    assert sample.indices[-1] == 24 and sample.packets_decoded < 40
    assert sample.num_video_frames is None  # only indexed up to the clip's end


def test_one_frame_and_three_frame_videos_repeat_frames(tmp_path):
    one = write_video(tmp_path / "one.mp4", num_frames=1)
    sample = read_video(one, 12)
    assert sample.indices == [0] * 12 and sample.frames.shape == (12, 48, 64, 3)
    assert_frames_match_reference(sample, one)
    three = write_video(tmp_path / "three.mp4", num_frames=3)
    sample = read_video(three, 12, mode="train", generator=torch.Generator().manual_seed(0))
    assert sample.indices == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2]
    assert_frames_match_reference(sample, three)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_a_still_image_is_a_one_frame_video(tmp_path, suffix):
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / f"still{suffix}")
    frames = read_video_frames(tmp_path / f"still{suffix}", 5)
    assert frames.shape == (5, 30, 40, 3)
    assert all(np.array_equal(frames[0], f) for f in frames)
    if suffix == ".png":  # lossless: the very pixels
        np.testing.assert_array_equal(frames[0], pixels)


# --------------------------------------------------------------------------------------------------------------
# broken input: one exception type, naming the file and the cause


def _audio_only(path):
    with av.open(str(path), "w") as container:
        encode_silence(container, container.add_stream("aac", rate=16000))
    return path


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return path


BROKEN = {
    "missing": (lambda d: d / "nope.mp4", "not found"),
    "directory": (lambda d: d, "not a regular file"),
    "empty": (lambda d: (d / "empty.mp4").write_bytes(b"") or d / "empty.mp4", "not a readable media file"),
    "random_bytes": (lambda d: _random_bytes(d / "random.mp4"), "not a readable media file"),
    "audio_only": (lambda d: _audio_only(d / "audio.m4a"), "no video stream"),
    "truncated_mp4_faststart": (
        lambda d: truncate(_corrupt_free_faststart(d), d / "cut.mp4", 0.6), "truncated"),
    "truncated_webm": (
        lambda d: truncate(write_video(d / "full.webm", 100, codec="libvpx-vp9"), d / "cut.webm", 0.5), "truncated"),
    "truncated_avi": (
        lambda d: truncate(write_video(d / "full.avi", 100, codec="mpeg4"), d / "cut.avi", 0.5), "truncated"),
}


def _corrupt_free_faststart(folder):
    return write_video(folder / "full.mp4", 100, codec="mpeg4", container_options={"movflags": "faststart"})


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_files_raise_video_decode_error_naming_file_and_cause(tmp_path, case):
    make, cause = BROKEN[case]
    path = make(tmp_path)
    with pytest.raises(VideoDecodeError) as info:
        read_video_frames(path, 12)
    message = str(info.value)
    assert str(path) in message and cause in message, message


def test_truncated_mpeg_ts_is_detected_or_reads_as_a_shorter_video(tmp_path):
    # MPEG-TS lists neither frames nor a duration: a cut file is a valid shorter stream; its frames must be real.
    path = truncate(write_video(tmp_path / "full.ts", 100, codec="mpeg2video", container_format="mpegts"),
                    tmp_path / "cut.ts", 0.5)
    try:
        sample = read_video(path, 12)
    except VideoDecodeError as err:
        assert str(path) in str(err)
    else:
        assert sample.num_video_frames < 100
        assert_frames_match_reference(sample, path)


def test_clip_outside_the_video_and_bad_bounds(generated):
    path = generated["h264.mp4"]  # 60 frames at 25 fps = 2.4 s
    with pytest.raises(VideoDecodeError, match="ends at"):
        read_video_frames(path, 4, start=10.0)
    with pytest.raises(ValueError):
        read_video_frames(path, 4, start=2.0, end=1.0)
    with pytest.raises(ValueError):
        read_video_frames(path, 4, start=-1.0)
    with pytest.raises(ValueError):
        read_video_frames(path, 4, mode="val")
    tail = read_video(path, 4, start=2.37)  # the last frame is shown from 2.36 s to 2.40 s
    assert tail.indices == [59] * 4


def test_decode_all_frames_is_the_full_reference(generated):
    path = generated["mpeg4_bframes.avi"]
    frames = decode_all_frames(path)
    reference, count = reference_frames(path, range(60))
    assert frames.shape[0] == count == 60
    np.testing.assert_array_equal(frames[17], reference[17])


def test_decode_benchmark_script_runs_and_reports_every_method(tmp_path, capsys):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_decode.py"
    spec = importlib.util.spec_from_file_location("bench_decode", script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    write_video(tmp_path / "clip.mp4", num_frames=120, gop=5)
    rows = bench.main(["--videos", str(tmp_path), "--repeats", "1", "--seek_thresholds", "4", "never"])
    (row,) = rows
    assert (row["file"], row["frames"], row["path"], row["load_video_frames"]) == ("clip.mp4", 120, "timestamp", 12)
    assert row["seeks"] > 1 and row["packets"] < 120  # keyframes every 5 frames: ours seeks past some of them
    assert all(row[f"{method}{kind}"] > 0 for method in ("ours", "load_video", "full_rgb", "full_decode")
               for kind in ("_s", "_cpu_s"))
    out = capsys.readouterr().out
    assert "| clip.mp4 | 64x48 |" in out and "| video | 4 | never |" in out
    sweep_row = next(line for line in out.splitlines()[::-1] if line.startswith("| clip.mp4 |"))
    threshold_4, never = (cell.strip() for cell in sweep_row.strip("|").split("|")[1:])
    assert threshold_4.endswith(f"({row['packets']}, {row['seeks']})")  # same decode as the default run
    assert never.endswith("(120, 1)")  # no seek but the first: every packet goes to the decoder
    assert SEEK_MIN_SKIPPED_PACKETS == bench.video_io.SEEK_MIN_SKIPPED_PACKETS  # the sweep restores the setting
