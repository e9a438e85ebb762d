"""`pig search` as a tool: several queries, JSON, queries from a file or stdin, query by image or video, the
index's own text encoder (a text search loads no model and hashes no weights), the weights check without
re-hashing, and one `error:` line with exit status 2 for each bad input."""

import io
import json
import os
import shutil
import sys

import pytest
import torch
from helpers import COLOURS, make_library, pig, tiny_pig, write_colour_video


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A tiny model folder, four synthetic videos plus a broken one, indexed with `pig index` (in-process)."""
    return make_library(tmp_path_factory.mktemp("cli_search"))


def test_index_lists_each_skipped_video_with_its_path_once(indexed, capsys, tmp_path):
    from modeling_pig.cli import main

    broken = tmp_path / "v" / "broken.mp4"
    write_colour_video(tmp_path / "v" / "ok.mp4", (10, 20, 30))
    broken.write_bytes(b"\x00" * 4096)
    assert main(["index", str(tmp_path / "v"), "--model", str(indexed / "model"), "--out", str(tmp_path / "i"),
                 "--num_workers", "0", "--device", "cpu"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "broken.mp4" in line]
    assert len(lines) == 1 and lines[0].count(str(broken)) == 1 and "not a readable media file" in lines[0]


def test_json_output_lists_every_query_with_the_library_results(indexed, capsys):
    from modeling_pig import VideoIndex

    status, out, err = pig(capsys, "search", indexed / "index", "a red square", "blue water", "-k", 2, "--json")
    assert status == 0, err
    answers = json.loads(out)
    assert [a["query"] for a in answers] == ["a red square", "blue water"]
    library = VideoIndex.load(indexed / "index").search(["a red square", "blue water"], k=2)
    for answer, expected in zip(answers, library):
        assert answer["query_type"] == "text"
        assert [r["path"] for r in answer["results"]] == [path for path, _ in expected]
        assert [r["score"] for r in answer["results"]] == pytest.approx([s for _, s in expected], abs=1e-4)
        assert all(set(r) == {"path", "score"} for r in answer["results"])


def test_queries_come_from_a_file_and_from_stdin(indexed, capsys, tmp_path, monkeypatch):
    queries = tmp_path / "queries.txt"
    queries.write_text("a red square\n\n  blue water  \n")
    status, out, _ = pig(capsys, "search", indexed / "index", "green grass", "--queries_file", queries, "--json")
    assert status == 0 and [a["query"] for a in json.loads(out)] == ["green grass", "a red square", "blue water"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("yellow\nred\n"))
    status, out, _ = pig(capsys, "search", indexed / "index", "--queries_file", "-", "-k", 1)
    assert status == 0 and out.splitlines()[0] == "query: yellow" and "query: red" in out.splitlines()


def test_query_by_example_video_and_image(indexed, capsys, tmp_path):
    from PIL import Image

    image = tmp_path / "red.png"
    Image.new("RGB", (64, 48), COLOURS["red.mp4"]).save(image)
    status, out, err = pig(capsys, "search", indexed / "index", "--video", indexed / "videos" / "green.mp4",
                           "--image", image, "-k", 4, "--json")
    assert status == 0, err
    by_image, by_video = json.loads(out)
    assert by_video["query_type"] == "video" and by_image["query_type"] == "image"
    assert by_video["results"][0] == {"path": str(indexed / "videos" / "green.mp4"),
                                      "score": pytest.approx(1.0, abs=2e-3)}
    assert len(by_image["results"]) == 4


def test_text_encoder_saved_with_the_index_matches_the_model(indexed):
    from modeling_pig import VideoIndex
    from modeling_pig.query_encoder import load_text_encoder

    index = VideoIndex.load(indexed / "index")
    encoder = load_text_encoder(indexed / "index", index.model_fingerprint)
    assert encoder is not None and encoder.batched
    texts = ["a red square", "two dogs run on a beach " * 10, "Ünïcode & PUNCTUATION!!"]
    torch.testing.assert_close(encoder(texts), index.embed_queries(texts), atol=1e-5, rtol=0)
    assert load_text_encoder(indexed / "index", "another fingerprint") is None  # made for other weights: ignored


def test_text_search_with_the_saved_text_encoder_loads_no_model_and_hashes_no_weights(indexed, tmp_path, capsys,
                                                                                       monkeypatch):
    import modeling_pig.embedding as embedding
    import modeling_pig.loader as loader

    index = tmp_path / "index"
    shutil.copytree(indexed / "index", index)
    metadata = json.loads((index / "index.json").read_text())
    metadata["model_path"] = str(tmp_path / "gone")  # the recorded model folder is not even there
    (index / "index.json").write_text(json.dumps(metadata))

    def refuse(*args, **kwargs):
        raise AssertionError("a text search with the index's text encoder must not load or hash the model")

    monkeypatch.setattr(loader, "load_model_and_processor", refuse)
    monkeypatch.setattr(embedding, "model_fingerprint", refuse)
    status, out, err = pig(capsys, "search", index, "a red square", "--json", "-k", 4)
    assert status == 0, err
    expected = json.loads(pig(capsys, "search", indexed / "index", "a red square", "--json", "-k", 4)[1])
    assert json.loads(out) == expected


def test_weights_are_hashed_only_when_the_model_files_are_not_the_recorded_ones(indexed, tmp_path, monkeypatch):
    import modeling_pig.embedding as embedding
    from modeling_pig.search_service import load_search_service

    calls = []
    real = embedding.model_fingerprint
    monkeypatch.setattr(embedding, "model_fingerprint", lambda model: calls.append(1) or real(model))
    service = load_search_service(indexed / "index", device="cpu")  # the recorded model, files unchanged
    assert calls == [] and service.model is not None
    shutil.copytree(indexed / "model", tmp_path / "copy")
    os.utime(tmp_path / "copy" / "model.safetensors", ns=(1, 1))  # same weights, other file state: hashed
    load_search_service(indexed / "index", str(tmp_path / "copy"), device="cpu")
    assert calls == [1]


def test_bad_inputs_give_one_error_line_and_exit_status_2(indexed, capsys, tmp_path):
    index = indexed / "index"
    other_model = tmp_path / "other_model"
    model, processor = tiny_pig(seed=1)
    model.save_pretrained(other_model)
    processor.save_pretrained(other_model)
    moved_index = tmp_path / "moved_index"
    shutil.copytree(index, moved_index)
    json_path = moved_index / "index.json"
    metadata = json.loads(json_path.read_text())
    metadata["model_path"] = str(tmp_path / "gone")  # the model folder was moved away since indexing
    json_path.write_text(json.dumps(metadata))
    (tmp_path / "broken").mkdir()
    for name in ("a.mp4", "b.mp4"):
        (tmp_path / "broken" / name).write_bytes(b"\x00" * 4096)
    cases = [
        (("search", tmp_path / "nowhere", "a dog"), f"{tmp_path / 'nowhere'}: no such index folder"),
        (("search", index, "a dog", "--model", tmp_path / "no_model"), f"{tmp_path / 'no_model'}: no such model"),
        (("search", index, "a dog", "--model", other_model), str(other_model)),
        (("search", moved_index, "--video", indexed / "videos" / "red.mp4"), "moved or deleted? pass --model"),
        (("search", index, "--image", tmp_path / "none.png"), f"--image {tmp_path / 'none.png'}: no such file"),
        (("search", index, "--image", indexed / "videos" / "red.mp4"), "this is a video; use --video"),
        (("search", index, "--video", tmp_path / "broken" / "a.mp4"), "neither a readable image nor a readable video"),
        (("search", index, "--queries_file", tmp_path / "no.txt"), "--queries_file"),
        (("search", index), "no query"),
        (("search", index, "  "), "text query 1 is empty"),
        (("index", tmp_path / "broken", "--model", indexed / "model", "--out", tmp_path / "new_index",
          "--num_workers", 0, "--device", "cpu"), "none of the 2 videos could be decoded"),
    ]
    for args, expected in cases:
        status, _, err = pig(capsys, *args)
        errors = [line for line in err.splitlines() if line.startswith("error: ")]  # besides progress bars and logs
        assert status == 2 and len(errors) == 1 and expected in errors[0] and "Traceback" not in err, (args, err)
    mismatch = pig(capsys, "search", index, "a dog", "--model", other_model)[2]
    assert str(other_model) in mismatch and str(indexed / "model") in mismatch  # names both models
    assert not (tmp_path / "new_index").exists()  # a failed first build leaves no folder behind
    assert pig(capsys, "search", moved_index, "a dog")[0] == 0  # text search needs no model folder
