"""Export to a Hub-style folder: `datasets.load_dataset(folder, config, split=...)` gives back the same rows;
`--push_to_hub` uploads through huggingface_hub (mocked here: no network)."""

from pathlib import Path

import datasets
import pytest
import yaml

from datasets_scripts import export, load_benchmark
from model_cards import hub

from conftest import FIXTURES

MSRVTT = FIXTURES / "datasets" / "msrvtt"


@pytest.fixture
def videos(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("video0.mp4", "video1.mp4", "video2.mp4", "video7020.mp4", "video9770.webm"):
        (folder / name).write_bytes(b"")
    return folder


def front_matter(readme):
    text = readme.read_text()
    return yaml.safe_load(text.split("---\n")[1])


def test_export_round_trips_through_load_dataset(tmp_path, videos):
    out = tmp_path / "out"
    export.main(["msrvtt", "--data_dir", str(MSRVTT), "--video_dir", str(videos), "--config", "full",
                 "--out", str(out), "--cache_dir", str(tmp_path / "cache")])
    for split in ("train", "validation", "test"):
        expected = load_benchmark("msrvtt", MSRVTT, config="full", split=split, video_dir=videos,
                                  cache_dir=tmp_path / "cache")
        loaded = datasets.load_dataset(str(out), "full", split=split, cache_dir=str(tmp_path / "hf"))
        assert loaded.to_list() == expected.to_list()
        assert loaded.features == expected.features
    assert [c["config_name"] for c in front_matter(out / "README.md")["configs"]] == ["full"]


def test_the_dataset_card_says_retrieval_not_video_generation(tmp_path, videos):
    out = tmp_path / "out"
    out.mkdir()
    # a card written by an older export: its text-to-video category goes, its other metadata stays
    (out / "README.md").write_text("---\ntask_categories: [text-to-video, feature-extraction]\ntags: [mine]\n"
                                   "---\n\nold body\n")
    export.export_benchmark("msrvtt", MSRVTT, out, config="9k", splits=["test"], video_dir=videos,
                            cache_dir=tmp_path / "cache")
    metadata = front_matter(out / "README.md")
    assert metadata["task_categories"] == ["feature-extraction", "text-retrieval"]
    assert metadata["tags"][0] == "mine" and "text-to-video-retrieval" in metadata["tags"]


def test_exporting_another_config_keeps_the_first(tmp_path, videos):
    out = tmp_path / "out"
    common = dict(video_dir=videos, cache_dir=tmp_path / "cache")
    export.export_benchmark("msrvtt", MSRVTT, out, config="full", splits=["test"], **common)
    export.export_benchmark("msrvtt", MSRVTT, out, config="9k", **common)
    assert [c["config_name"] for c in front_matter(out / "README.md")["configs"]] == ["9k", "full"]
    nine_k = datasets.load_dataset(str(out), "9k", split="test", cache_dir=str(tmp_path / "hf"))
    full = datasets.load_dataset(str(out), "full", split="test", cache_dir=str(tmp_path / "hf"))
    assert [len(c) for c in nine_k["captions"]] == [1, 1]
    assert [len(c) for c in full["captions"]] == [2, 2]


def test_relative_video_paths_are_relative_to_the_video_folder(tmp_path, videos):
    out = export.export_benchmark("msrvtt", MSRVTT, tmp_path / "out", config="9k", splits=["test"],
                                  video_dir=videos, cache_dir=tmp_path / "cache", video_paths="relative")
    loaded = datasets.load_dataset(str(out), "9k", split="test", cache_dir=str(tmp_path / "hf"))
    assert loaded["video"] == ["video9770.webm", "video7020.mp4"]


def test_push_to_hub_creates_the_dataset_repo_and_uploads_the_folder(tmp_path, videos, monkeypatch):
    calls = []

    class FakeHfApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            uploaded = sorted(p.relative_to(kwargs["folder_path"]).as_posix()
                              for p in Path(kwargs["folder_path"]).rglob("*") if p.is_file())
            calls.append(("files", uploaded))
            return type("CommitInfo", (), {"commit_url": "https://hub.example/commit/1"})()

    monkeypatch.setattr(hub, "HfApi", FakeHfApi)
    out = tmp_path / "out"
    export.main(["msrvtt", "--data_dir", str(MSRVTT), "--video_dir", str(videos), "--config", "9k",
                 "--splits", "test", "--out", str(out), "--cache_dir", str(tmp_path / "cache"),
                 "--push_to_hub", "someone/msrvtt-retrieval", "--private"])
    assert calls[1] == ("create_repo", "someone/msrvtt-retrieval",
                        {"repo_type": "dataset", "private": True, "exist_ok": True})
    upload = calls[2][1]
    assert (upload["folder_path"], upload["repo_id"], upload["repo_type"]) == (str(out), "someone/msrvtt-retrieval",
                                                                               "dataset")
    assert calls[3] == ("files", ["9k/test-00000-of-00001.parquet", "README.md"])


def test_export_refuses_an_unknown_video_path_mode(tmp_path):
    with pytest.raises(ValueError, match="video_paths='remote'"):
        export.export_benchmark("msrvtt", MSRVTT, tmp_path, config="9k", video_paths="remote")
