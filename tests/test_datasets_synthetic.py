"""The embedded synthetic benchmark: files, determinism, caching, captions, loading through `datasets`."""

import json
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from datasets_scripts import load_benchmark
from datasets_scripts import synthetic
from datasets_scripts.synthetic import generate_synthetic

TINY = dict(num_train=6, num_test=8, num_images=3, num_frames_per_video=8, resolution=32, fps=4, progress=False)


def decode(path):
    """All frames of a video as one uint8 array [T, H, W, 3], plus the stream."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return np.stack(frames), stream.codec_context.name, stream.codec_context.pix_fmt


def decode_planes(path):
    """All frames as the decoder outputs them (yuv420p planes, no pixel-format conversion): uint8 [T, H*3/2, W]."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray() for f in container.decode(video=0)])


def annotations(root, split):
    with open(Path(root) / "annotations" / f"{split}.jsonl") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def tiny_benchmark(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "bench", seed=0, **TINY)


def test_generates_h264_yuv420p_videos_of_the_requested_size(tiny_benchmark):
    for split, count in (("train", 6), ("test", 8)):
        videos = sorted((tiny_benchmark / "videos" / split).glob("*.mp4"))
        assert len(videos) == count
    frames, codec, pix_fmt = decode(videos[0])
    assert (codec, pix_fmt) == ("h264", "yuv420p")
    assert frames.shape == (8, 32, 32, 3)
    assert frames.std() > 5  # something is drawn, not a blank frame


def test_same_seed_gives_identical_captions_and_decoded_pixels(tiny_benchmark, tmp_path):
    again = generate_synthetic(tmp_path / "again", seed=0, **TINY)
    for split in ("train", "test", "images"):
        assert annotations(again, split) == annotations(tiny_benchmark, split)
    videos = sorted(p.relative_to(tiny_benchmark) for p in tiny_benchmark.glob("videos/*/*.mp4"))
    assert len(videos) == 14
    for name in videos:  # identical files, hence identical pixels for every decoder
        assert (again / name).read_bytes() == (tiny_benchmark / name).read_bytes(), name
    for name in ("videos/test/synthetic-test-00000.mp4", "videos/train/synthetic-train-00005.mp4"):
        assert np.array_equal(decode_planes(again / name), decode_planes(tiny_benchmark / name))
        assert decode(again / name)[0].tobytes() == decode(tiny_benchmark / name)[0].tobytes()
    image = "images/synthetic-image-00000.png"
    assert np.array_equal(np.asarray(Image.open(again / image)), np.asarray(Image.open(tiny_benchmark / image)))


def test_rgb_to_yuv420p_is_bt601_limited_range_with_2x2_chroma():
    frame = np.zeros((2, 4, 3), np.uint8)
    frame[:, :2] = (255, 0, 0)            # left 2x2 block red
    frame[:, 2:] = (255, 255, 255)        # right block white
    frame[1, 3] = (0, 0, 0)               # ... but one black pixel
    planes = synthetic.rgb_to_yuv420p(frame)
    assert planes.shape == (3, 4) and planes.dtype == np.uint8
    # Y = ((66 R + 129 G + 25 B + 128) >> 8) + 16: red 82, white 235, black 16
    assert planes[:2].tolist() == [[82, 82, 235, 235], [82, 82, 235, 16]]
    # U, V of the 2x2 sums: red (R=1020) -> U = (-38*1020 + 512) >> 10 = -38 -> 90, V = 112 -> 240;
    # white with one black pixel (765 each): U = V = (0 + 512) >> 10 = 0 -> 128
    assert planes[2].tolist() == [90, 128, 240, 128]  # U plane (1 x 2), then V plane (1 x 2)


def test_encoder_gets_yuv420p_frames_and_one_thread_whatever_ran_before(tmp_path):
    frames = np.stack([synthetic.render_frame([("purple", "circle", 0.3 + 0.05 * t, 0.5, 1.0)], 32)
                       for t in range(6)])
    synthetic.write_mp4(tmp_path / "a.mp4", frames, 4)
    # other encodes in between: swscale RGB -> YUV with automatic slice threads, multi-threaded x264 and mpeg4
    for codec in ("libx264", "mpeg4"):
        with av.open(str(tmp_path / f"other-{codec}.mkv"), "w") as container:
            stream = container.add_stream(codec, rate=4)
            stream.width = stream.height = 64
            stream.pix_fmt = "yuv420p"
            for t in range(6):
                image = np.random.default_rng(t).integers(0, 256, (64, 64, 3), dtype=np.uint8)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode(None))
    synthetic.write_mp4(tmp_path / "b.mp4", frames, 4)
    data = (tmp_path / "a.mp4").read_bytes()
    assert (tmp_path / "b.mp4").read_bytes() == data
    assert b"threads=1 lookahead_threads=1 sliced_threads=0" in data  # x264's SEI: the options it really used
    with av.open(str(tmp_path / "a.mp4")) as container:
        context = container.streams.video[0].codec_context
        assert (context.colorspace, context.color_range) == (6, 1)  # tagged BT.601 (SMPTE 170M), limited range
        rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert np.abs(rgb[16, 10].astype(int) - synthetic.COLOURS["purple"]).max() <= 3  # shape centre keeps its colour
    assert np.abs(rgb[2, 2].astype(int) - synthetic.BACKGROUND).max() <= 3


def test_different_seed_gives_different_captions_and_pixels(tiny_benchmark, tmp_path):
    other = generate_synthetic(tmp_path / "other", seed=1, **TINY)
    captions = [r["captions"] for r in annotations(other, "test")]
    assert captions != [r["captions"] for r in annotations(tiny_benchmark, "test")]
    name = "videos/test/synthetic-test-00000.mp4"
    assert decode(other / name)[0].tobytes() != decode(tiny_benchmark / name)[0].tobytes()


def test_test_captions_are_distinct_and_single(tiny_benchmark):
    rows = annotations(tiny_benchmark, "test")
    assert all(len(r["captions"]) == 1 for r in rows)
    assert len({r["captions"][0] for r in rows}) == len(rows)


def test_train_videos_have_three_paraphrases_and_no_test_scene(tiny_benchmark):
    train, test = annotations(tiny_benchmark, "train"), annotations(tiny_benchmark, "test")
    assert all(len(r["captions"]) == 3 and len(set(r["captions"])) == 3 for r in train)
    assert not {tuple(r["attributes"]) for r in train} & {tuple(r["attributes"]) for r in test}


def test_test_families_are_near_duplicates_differing_in_one_attribute(tiny_benchmark):
    # the first family is the base scene then 3 variants (family size 4): each shares all but one attribute
    rows = annotations(tiny_benchmark, "test")[:4]
    base = [a.split() for a in rows[0]["attributes"]]
    for row in rows[1:]:
        variant = [a.split() for a in row["attributes"]]
        if variant == base[::-1]:  # order of events swapped
            continue
        differences = sum(a != b for e, f in zip(base, variant) for a, b in zip(e, f))
        assert differences == 1, (base, variant)


def test_caption_templates_state_the_order_of_events():
    scene = (synthetic.Event("red", "square", "move_left"), synthetic.Event("blue", "circle", "appear_top"))
    assert synthetic.caption(scene, 0) == "a red square moves left, then a blue circle appears at the top"
    assert synthetic.caption(scene, 1) == ("first a red square slides to the left, and after that "
                                           "a blue circle shows up at the top")
    assert synthetic.caption(scene, 2) == "a blue circle appears at the top after a red square moves left"


def test_rendered_shapes_have_their_colour_where_they_are():
    frame = synthetic.render_frame([("red", "square", 0.25, 0.25, 1.0), ("blue", "circle", 0.75, 0.75, 1.0)], 64)
    assert tuple(frame[16, 16]) == synthetic.COLOURS["red"]
    assert tuple(frame[48, 48]) == synthetic.COLOURS["blue"]
    assert tuple(frame[48, 16]) == synthetic.BACKGROUND


def test_same_parameters_reuse_the_cache(tiny_benchmark):
    manifest = tiny_benchmark / "manifest.json"
    before = manifest.stat().st_mtime_ns
    assert generate_synthetic(tiny_benchmark, seed=0, **TINY) == tiny_benchmark
    assert manifest.stat().st_mtime_ns == before


def test_other_parameters_regenerate(tmp_path):
    root = generate_synthetic(tmp_path / "bench", seed=0, **TINY)
    generate_synthetic(root, seed=0, **{**TINY, "num_test": 4})
    assert json.loads((root / "manifest.json").read_text())["params"]["num_test"] == 4
    assert len(list((root / "videos" / "test").glob("*.mp4"))) == 4
    assert [p.name for p in tmp_path.iterdir()] == ["bench"]  # no staging or old folder left behind


def test_interrupted_generation_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = []

    def failing_write(path, frames, fps):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt
        Path(path).write_bytes(b"partial")

    monkeypatch.setattr(synthetic, "write_mp4", failing_write)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(tmp_path / "bench", seed=0, **TINY)
    assert list(tmp_path.iterdir()) == []


def test_refuses_to_overwrite_a_folder_that_is_not_a_synthetic_benchmark(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a synthetic benchmark"):
        generate_synthetic(tmp_path, seed=0, **TINY)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_load_benchmark_returns_rows_with_absolute_video_paths(tiny_benchmark, tmp_path):
    train = load_benchmark("synthetic", data_dir=tiny_benchmark, split="train", cache_dir=tmp_path)
    test = load_benchmark("synthetic", data_dir=tiny_benchmark, split="test", cache_dir=tmp_path)
    assert (len(train), len(test)) == (6, 8)
    row = test[0]
    assert row["video_id"] == "synthetic-test-00000"
    assert Path(row["video"]).is_absolute() and Path(row["video"]).is_file()
    assert row["captions"] == annotations(tiny_benchmark, "test")[0]["captions"]
    assert (row["start"], row["end"]) == (None, None)


def test_images_split_gives_png_scenes_with_captions(tiny_benchmark, tmp_path):
    images = load_benchmark("synthetic", data_dir=tiny_benchmark, split="images", cache_dir=tmp_path)
    assert len(images) == 3
    for row in images:
        assert Image.open(row["video"]).size == (32, 32)
        assert len(row["captions"]) == 2
        # every object of the scene is named with its colour, shape and position
        for attribute in row["attributes"]:
            colour, shape, _position = attribute.split()
            assert f"{colour} {shape}" in row["captions"][0]


def test_load_benchmark_on_a_folder_without_a_benchmark_says_how_to_make_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="generate_synthetic"):
        load_benchmark("synthetic", data_dir=tmp_path, split="test", cache_dir=tmp_path / "cache")
