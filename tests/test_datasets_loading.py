"""load_benchmark mechanics shared by all benchmarks: finding videos, missing-video policies, path safety,
split-by-split file needs, and a cache that follows the files."""

import json
import logging

import pytest

from datasets_scripts import load_benchmark
from datasets_scripts.common import (BenchmarkFileError, MissingVideosError, UnsafeVideoIdError, VideoLookup,
                                     check_video_id)

from conftest import FIXTURES

MSRVTT = FIXTURES / "datasets" / "msrvtt"


def touch(folder, *names):
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")  # lookup is by name; nothing is decoded here


# ------------------------------------------------------------------------------------------ missing videos

def test_missing_videos_error_says_how_many_and_which(tmp_path):
    touch(tmp_path / "videos", "video9770.mp4")
    with pytest.raises(MissingVideosError, match=r"1 of 2 videos not found.*video7020.*missing_videos='drop'"):
        load_benchmark("msrvtt", MSRVTT, config="9k", split="test", video_dir=tmp_path / "videos",
                       cache_dir=tmp_path / "cache")


def test_missing_videos_error_lists_only_the_first_ten(shared_data, tmp_path):
    with pytest.raises(MissingVideosError) as error:
        load_benchmark("msrvtt", shared_data / "annotations" / "msrvtt", config="9k", split="test",
                       video_dir=tmp_path, cache_dir=tmp_path / "cache")
    message = str(error.value)
    assert "1000 of 1000 videos" in message
    listed = message.split("): ", 1)[1].split(". Pass")[0].split(", ")
    assert listed[:2] == ["video9770", "video9771"] and listed[-1] == "..." and len(listed) == 11


def test_drop_policy_leaves_missing_videos_out_and_logs_it(tmp_path, caplog):
    touch(tmp_path / "videos", "video9770.mp4")
    with caplog.at_level(logging.WARNING, logger="datasets_scripts.common"):
        test = load_benchmark("msrvtt", MSRVTT, config="9k", split="test", video_dir=tmp_path / "videos",
                              missing_videos="drop", cache_dir=tmp_path / "cache")
    assert test["video_id"] == ["video9770"]
    assert test[0]["video"] == str((tmp_path / "videos" / "video9770.mp4").resolve())
    assert "dropped 1 of 2 rows" in caplog.text


def test_keep_policy_keeps_rows_with_no_video(tmp_path):
    touch(tmp_path / "videos", "video9770.mp4")
    test = load_benchmark("msrvtt", MSRVTT, config="9k", split="test", video_dir=tmp_path / "videos",
                          missing_videos="keep", cache_dir=tmp_path / "cache")
    assert [(r["video_id"], r["video"] is None) for r in test] == [("video9770", False), ("video7020", True)]


def test_unknown_policy_is_refused(tmp_path):
    with pytest.raises(ValueError, match="missing_videos='ignore'"):
        load_benchmark("msrvtt", MSRVTT, config="9k", video_dir=tmp_path, missing_videos="ignore")


def test_cache_follows_the_video_folder(tmp_path):
    videos = tmp_path / "videos"
    touch(videos, "video9770.mp4")
    kwargs = dict(config="9k", split="test", video_dir=videos, missing_videos="drop", cache_dir=tmp_path / "cache")
    assert len(load_benchmark("msrvtt", MSRVTT, **kwargs)) == 1
    touch(videos, "video7020.webm")
    assert len(load_benchmark("msrvtt", MSRVTT, **kwargs)) == 2


# ------------------------------------------------------------------------------------------ finding videos

def test_lookup_prefers_mp4_and_searches_subfolders(tmp_path):
    touch(tmp_path, "a/video1.webm", "b/video1.mp4", "c/deep/video2.avi", "video3.MKV")
    lookup = VideoLookup(tmp_path)
    assert lookup.find("video1").endswith("b/video1.mp4")
    assert lookup.find("video2").endswith("c/deep/video2.avi")
    assert lookup.find("video3").endswith("video3.MKV")
    assert lookup.find("video4") is None


def test_lookup_handles_didemo_names_with_extension_or_bare_dot(tmp_path):
    touch(tmp_path, "exact.mov", "renamed.mov.mp4", "replaced.mp4", "bare.", "bare_re.mp4")
    lookup = VideoLookup(tmp_path)
    assert lookup.find("exact.mov").endswith("exact.mov")
    assert lookup.find("renamed.mov").endswith("renamed.mov.mp4")  # TeachCLIP naming
    assert lookup.find("replaced.avi").endswith("replaced.mp4")  # extension replaced (VLM2Vec mirror)
    assert lookup.find("bare.").endswith("bare.")
    assert lookup.find("bare_re.").endswith("bare_re.mp4")


def test_activitynet_videos_are_found_with_or_without_v_prefix(shared_data, tmp_path):
    annotations = json.loads((shared_data / "annotations" / "activitynet" / "val_1.json").read_text())
    first, second = list(annotations)[:2]
    (tmp_path / "val_1.json").write_text(json.dumps({first: annotations[first], second: annotations[second]}))
    touch(tmp_path / "videos", f"{first}.mp4", f"{second[2:]}.mkv")
    test = load_benchmark("activitynet", tmp_path, split="test", video_dir=tmp_path / "videos",
                          cache_dir=tmp_path / "cache")
    assert [r["video"].rsplit("/", 1)[1] for r in test] == [f"{first}.mp4", f"{second[2:]}.mkv"]


def test_didemo_test_split_finds_videos_named_as_in_the_list(shared_data, tmp_path):
    folder = shared_data / "annotations" / "didemo"
    names = [line.strip() for line in (folder / "test_list.txt").read_text().splitlines() if line.strip()]
    videos = tmp_path / "videos"
    touch(videos, *names[:3])
    test = load_benchmark("didemo", folder, split="test", video_dir=videos, missing_videos="drop",
                          cache_dir=tmp_path / "cache")
    assert test["video_id"] == names[:3]
    assert names[1].endswith(".") and test[1]["video"].endswith(names[1])


# ------------------------------------------------------------------------------------------ path safety

@pytest.mark.parametrize("video_id", ["../outside", "a/../../etc/passwd", "/etc/passwd", "C:\\videos\\x", ".."])
def test_ids_that_escape_the_video_folder_are_rejected(video_id):
    with pytest.raises(UnsafeVideoIdError, match="escape the video folder"):
        check_video_id(video_id)


def test_relative_ids_inside_the_folder_are_accepted(tmp_path):
    touch(tmp_path, "movie/clip1.avi")
    assert check_video_id("movie/clip1") == "movie/clip1"
    assert VideoLookup(tmp_path).find("movie/clip1").endswith("movie/clip1.avi")


def test_an_unsafe_id_in_an_annotation_file_fails_the_load_even_when_keeping_missing(tmp_path):
    (tmp_path / "LSMDC16_challenge_1000_publictect.csv").write_text("../../secret\t0\t1\t0\t1\tSOMEONE looks.\n")
    (tmp_path / "secret.avi").write_bytes(b"")
    with pytest.raises(UnsafeVideoIdError, match=r"lsmdc/default split 'test'.*'\.\./\.\./secret'"):
        load_benchmark("lsmdc", tmp_path, split="test", video_dir=tmp_path / "videos", missing_videos="keep",
                       cache_dir=tmp_path / "cache")


# ------------------------------------------------------------------------------------------ files and names

def test_one_split_needs_only_its_own_files(tmp_path):
    (tmp_path / "MSRVTT_JSFUSION_test.csv").write_bytes((MSRVTT / "MSRVTT_JSFUSION_test.csv").read_bytes())
    test = load_benchmark("msrvtt", tmp_path, config="9k", split="test", missing_videos="keep",
                          cache_dir=tmp_path / "cache")
    assert len(test) == 2
    with pytest.raises(BenchmarkFileError, match=r"MSRVTT_train.9k.csv"):
        load_benchmark("msrvtt", tmp_path, config="9k", split="train", missing_videos="keep",
                       cache_dir=tmp_path / "cache")


def test_annotation_files_are_found_in_subfolders(tmp_path):
    (tmp_path / "msrvtt_data" / "nested").mkdir(parents=True)
    (tmp_path / "msrvtt_data" / "nested" / "MSRVTT_JSFUSION_test.csv").write_bytes(
        (MSRVTT / "MSRVTT_JSFUSION_test.csv").read_bytes())
    test = load_benchmark("msrvtt", tmp_path, split="test", missing_videos="keep", cache_dir=tmp_path / "cache")
    assert test["video_id"] == ["video9770", "video7020"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="kinetics"), "unknown benchmark 'kinetics'"),
    (dict(name="msrvtt", config="1k-B"), "unknown config '1k-B'"),
    (dict(name="msrvtt", config="9k", split="validation"), r"unknown split\(s\) \['validation'\]"),
])
def test_unknown_names_are_refused_with_the_choices(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_benchmark(data_dir=MSRVTT, cache_dir=tmp_path, **kwargs)
