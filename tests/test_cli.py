"""The `pig` console script end to end, in-process through `main` (plus one subprocess smoke test of the
installed entry point), with a tiny random PIG model saved to disk."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import pig, pig_command

from modeling_pig.cli import format_results

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_pig(*args, cwd):
    """`pig ARGS` in a fresh process (the installed console script)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(pig_command() + [str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def test_pig_index_then_search_end_to_end(tiny_model_dir, shared_videos, tmp_path, capsys):
    videos = tmp_path / "videos"
    (videos / "more").mkdir(parents=True)
    chosen = {p.name: p for p in shared_videos}
    shutil.copy(chosen["single_face.mp4"], videos / "face.mp4")
    shutil.copy(chosen["carphone_pristine.mp4"], videos / "more" / "car.mp4")
    (videos / "broken.mp4").write_bytes(b"\x00" * 2048)
    (videos / "notes.txt").write_text("not a video")
    out = tmp_path / "index"

    status, stdout, stderr = pig(capsys, "index", videos, "--model", tiny_model_dir, "--out", out, "--recursive",
                                 "--batch_size", 2, "--num_workers", 0, "--device", "cpu")
    assert status == 0, stderr
    assert "indexed 2 of 3 videos" in stdout
    assert "1 unreadable video(s) skipped" in stdout and "broken.mp4" in stdout
    meta = json.loads((out / "index.json").read_text())
    assert (out / meta["files"]["vectors"]).is_file() and (out / meta["files"]["videos"]).is_dir()

    status, stdout, stderr = pig(capsys, "search", out, "a man talks in a car", "a smiling face", "-k", 2,
                                 "--device", "cpu")
    assert status == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == "query: a man talks in a car" and "query: a smiling face" in lines
    ranked = [line for line in lines if line.strip().startswith(("1 ", "2 "))]
    assert len(ranked) == 4
    assert {line.split()[-1] for line in ranked} == {str(videos / "face.mp4"), str(videos / "more" / "car.mp4")}

    # the installed console script, in a fresh process (the only subprocess of this file)
    info = run_pig("info", out, cwd=tmp_path)
    assert info.returncode == 0 and "2 videos" in info.stdout and "exact" in info.stdout, info.stderr


def test_search_scores_match_the_library(tiny_model_dir, shared_videos, tmp_path):
    from modeling_pig import PIGModel, PIGProcessor, VideoIndex

    model = PIGModel.from_pretrained(tiny_model_dir).eval()
    processor = PIGProcessor.from_pretrained(tiny_model_dir)
    paths = [str(p) for p in shared_videos if p.name in ("single_face.mp4", "carphone_pristine.mp4")]
    index = VideoIndex.build(model, processor, paths, out_dir=tmp_path / "idx", model_path=str(tiny_model_dir),
                             show_progress=False)
    # the loaded index embeds the query with the recorded model and gives the same ranking and scores
    loaded = VideoIndex.load(tmp_path / "idx")
    first, again = index.search("a man", k=2)[0], loaded.search("a man", k=2)[0]
    assert [p for p, _ in again] == [p for p, _ in first]
    assert [s for _, s in again] == pytest.approx([s for _, s in first], abs=1e-5)
    text = loaded.embed_queries(["a man"])  # [1, D]
    expected = (text @ index.embeddings.float().T)[0]
    assert [s for _, s in again] == pytest.approx(sorted(expected.tolist(), reverse=True), abs=1e-4)


def test_format_results_is_a_ranked_table():
    table = format_results("q", [("/a.mp4", 0.5), ("/b.mp4", 0.25)]).splitlines()
    assert table == ["query: q", "rank    score  video", "   1   0.5000  /a.mp4", "   2   0.2500  /b.mp4"]


def test_index_of_an_empty_folder_fails_clearly(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    status, _, stderr = pig(capsys, "index", tmp_path / "empty", "--model", tmp_path / "nowhere", "--out",
                            tmp_path / "i")
    assert status == 2 and stderr.strip() == f"error: no video files in {tmp_path / 'empty'} (try --recursive)"


def test_user_mistakes_are_one_line_and_exit_status_2(tiny_model_dir, tmp_path, shared_videos, capsys):
    (tmp_path / "videos").mkdir()
    shutil.copy(shared_videos[0], tmp_path / "videos" / "a.mp4")
    cases = {
        ("index", tmp_path / "missing", "--model", tmp_path, "--out", tmp_path / "i"): "missing: not a folder",
        ("index", tmp_path / "videos", "--model", tmp_path / "nowhere", "--out", tmp_path / "i"): "--model",
        ("search", tmp_path / "videos", "a dog"): "not a VideoIndex folder",
        ("info", tmp_path / "nothing"): "nothing: no such index folder",
    }
    for args, expected in cases.items():
        status, _, stderr = pig(capsys, *args)
        assert status == 2 and expected in stderr, (args, stderr)
        assert len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
    config = json.loads((tiny_model_dir / "config.json").read_text())
    shutil.copytree(tiny_model_dir, tmp_path / "bad_model")
    (tmp_path / "bad_model" / "config.json").write_text(json.dumps({**config, "its_top_k": -1}))
    status, _, stderr = pig(capsys, "index", tmp_path / "videos", "--model", tmp_path / "bad_model", "--out",
                            tmp_path / "i")
    assert status == 2 and "its_top_k" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    status, _, stderr = pig(capsys, "search")  # argparse's own usage error
    assert status == 2 and "usage: pig" in stderr
