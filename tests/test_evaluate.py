"""training/eval_retrieval.py: two-tower benchmark evaluation, skipped videos, embedding cache, results files."""

import json

import datasets
import numpy as np
import pytest
import torch
from helpers import FakeModel, FakeProcessor, tiny_pig

from modeling_pig.encoding import encode_videos
from modeling_pig.metrics import compute_retrieval_metrics
from modeling_pig.video_io import read_video_frames
from training.eval_retrieval import (
    evaluate_retrieval,
    evaluate_retrieval_detailed,
    main,
    update_results_file,
)
from training.eval_retrieval import results_file_table as results_table


@pytest.fixture
def benchmark_rows(shared_videos, tmp_path):
    """Three real videos (one with two captions, one a clip) and a corrupt file, as load_benchmark rows."""
    corrupt = tmp_path / "broken.mp4"
    corrupt.write_bytes(b"not a video at all" * 50)
    by_name = {p.name: str(p) for p in shared_videos}
    return datasets.Dataset.from_dict({
        "video_id": ["face", "car", "broken", "bikes"],
        "video": [by_name["single_face.mp4"], by_name["carphone_pristine.mp4"], str(corrupt), by_name["bikes.mp4"]],
        "captions": [["a man smiles"], ["a man talks in a car", "someone drives"], ["never seen", "also lost"],
                     ["bicycles on a street"]],
        "start": [None, 1.0, None, None],
        "end": [None, 3.0, None, None],
    })


@pytest.fixture
def fake():
    torch.manual_seed(0)
    return FakeModel(), FakeProcessor()


def similarity_by_hand(model, processor, rows, texts):
    """Cosine similarities [texts, rows] computed straight from the model and the processor (frames read with
    video_io), without training.evaluate's or modeling_pig.retrieval's embedding helpers."""
    videos = []
    for row in rows:
        frames = read_video_frames(row["video"], num_frames=processor.num_frames, start=row["start"], end=row["end"])
        pixel_values = processor(videos=[frames])["pixel_values"]
        videos.append(model.get_video_features(pixel_values=pixel_values).pooler_output[0])
    encoded = processor(text=texts)
    text_embeds = model.get_text_features(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
    text_embeds = torch.nn.functional.normalize(text_embeds.pooler_output.float(), dim=-1)
    video_embeds = torch.nn.functional.normalize(torch.stack(videos).float(), dim=-1)
    return (text_embeds @ video_embeds.T).detach().numpy()


KEPT_TEXTS = ["a man smiles", "a man talks in a car", "someone drives", "bicycles on a street"]


def test_metrics_equal_separate_embeddings_scored_by_hand(fake, benchmark_rows):
    model, processor = fake
    result = evaluate_retrieval_detailed(model, processor, benchmark_rows, batch_size=2, show_progress=False)
    # the same computation by hand, without the broken video and its captions
    sim = similarity_by_hand(model, processor, benchmark_rows.select([0, 1, 3]), KEPT_TEXTS)
    expected = compute_retrieval_metrics(sim, [0, 1, 1, 2])
    for key, value in expected.items():
        assert result.metrics[key] == pytest.approx(value)
    # and one value from the similarities alone: text->video R@1 is the share of texts whose own video scores best
    best = sim.argmax(axis=1)
    assert result.metrics["t2v_R@1"] == pytest.approx(100.0 * np.mean(best == np.array([0, 1, 1, 2])))
    assert result.metrics["num_texts"] == 4 and result.metrics["num_videos"] == 3
    assert result.protocol == "multi-caption"


def test_unreadable_videos_are_skipped_and_reported(fake, benchmark_rows):
    model, processor = fake
    result = evaluate_retrieval_detailed(model, processor, benchmark_rows, show_progress=False)
    assert result.metrics["num_skipped_videos"] == 1 and result.metrics["num_skipped_captions"] == 2
    assert [s["video_id"] for s in result.skipped] == ["broken"]
    assert "broken.mp4" in result.skipped[0]["reason"] and result.skipped[0]["num_captions"] == 2


def test_clip_bounds_change_the_video_embedding(fake, benchmark_rows):
    model, processor = fake
    path = benchmark_rows["video"][3]
    whole, clip = encode_videos(model, processor, [path, path], starts=[None, 0.0], ends=[None, 2.0],
                                show_progress=False).embeddings
    assert not torch.allclose(whole, clip)


def test_cache_is_reused_and_keeps_partial_progress(fake, benchmark_rows, tmp_path):
    model, processor = fake
    cache = tmp_path / "cache"
    original = model.get_video_features

    def crash_on_second_batch(pixel_values):
        if model.video_calls == 1:
            raise KeyboardInterrupt
        return original(pixel_values)

    model.get_video_features = crash_on_second_batch
    with pytest.raises(KeyboardInterrupt):
        evaluate_retrieval(model, processor, benchmark_rows, batch_size=1, cache_dir=cache, show_progress=False)
    model.get_video_features = original
    model.video_calls = 0
    first = evaluate_retrieval(model, processor, benchmark_rows, batch_size=1, cache_dir=cache, show_progress=False)
    assert model.video_calls == 2  # the first video came from the interrupted run's cache

    text_calls = []
    original_text = model.get_text_features
    model.get_text_features = lambda **kw: text_calls.append(1) or original_text(**kw)
    model.video_calls = 0
    again = evaluate_retrieval(model, processor, benchmark_rows, batch_size=1, cache_dir=cache, show_progress=False)
    assert model.video_calls == 0 and not text_calls
    assert again == first
    assert first == evaluate_retrieval(model, processor, benchmark_rows, show_progress=False)

    # new weights: a new cache key, everything is embedded again
    model.video_calls = 0
    with torch.no_grad():
        model.video_proj.mul_(2.0)
    evaluate_retrieval(model, processor, benchmark_rows, batch_size=1, cache_dir=cache, show_progress=False)
    assert model.video_calls == 3


def test_dsl_metrics_are_reported_separately(fake, benchmark_rows):
    model, processor = fake
    metrics = evaluate_retrieval(model, processor, benchmark_rows, dsl=True, show_progress=False)
    sim = similarity_by_hand(model, processor, benchmark_rows.select([0, 1, 3]), KEPT_TEXTS)
    plain = compute_retrieval_metrics(sim, [0, 1, 1, 2])
    dsl = compute_retrieval_metrics(sim, [0, 1, 1, 2], dsl=True)
    directions = {k for k in plain if k.startswith(("t2v_", "v2t_"))}
    assert {k for k in dsl if k.startswith("dsl_")} == {f"dsl_{k}" for k in directions}
    for key, value in dsl.items():  # the plain metrics unchanged, the DSL ones from the same similarities
        assert metrics[key] == pytest.approx(value), key
    assert metrics["dsl_t2v_MnR"] != metrics["t2v_MnR"]  # here DSL does change the ranking: the check can tell


def test_rows_without_captions_are_an_error(fake, benchmark_rows):
    model, processor = fake
    rows = benchmark_rows.map(lambda row, i: {"captions": [] if i == 0 else row["captions"]}, with_indices=True)
    with pytest.raises(ValueError, match="video_id 'face'"):
        evaluate_retrieval(model, processor, rows, show_progress=False)


def test_results_file_accumulates_and_table_lists_every_entry(tmp_path):
    metrics = {f"{d}_{m}": 1.0 for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "MdR", "MnR")}
    metrics.update(num_texts=4, num_videos=3, num_skipped_videos=1, num_skipped_captions=2)
    entry = {"model": "m", "benchmark": "msrvtt", "config": "9k", "split": "test", "protocol": "square",
             "metrics": metrics}
    output = tmp_path / "results.json"
    update_results_file(output, entry)
    update_results_file(output, {**entry, "metrics": {**metrics, "t2v_R@1": 42.0}})  # replaces
    entries = update_results_file(output, {**entry, "benchmark": "didemo", "config": None})
    assert len(entries) == 2 and json.loads(output.read_text())["results"][0]["metrics"]["t2v_R@1"] == 42.0
    table = results_table(entries).splitlines()
    assert len(table) == 4 and "| m | msrvtt (9k) | test | square | 4 | 3 | 42.0 |" in table[2]
    assert table[3].startswith("| m | didemo | test |") and table[3].endswith("| 1 |")


def test_command_line_on_the_synthetic_benchmark_with_a_tiny_pig(tmp_path, capsys):
    from datasets_scripts.synthetic import generate_synthetic

    data = generate_synthetic(tmp_path / "synthetic", seed=0, num_train=2, num_test=6, num_images=0,
                              num_frames_per_video=8, resolution=32, fps=4, progress=False)
    model, processor = tiny_pig()
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    output = tmp_path / "out" / "results.json"
    argv = ["--model", str(tmp_path / "model"), "--benchmark", "synthetic", "--data_dir", str(data),
            "--output", str(output), "--cache_dir", str(tmp_path / "cache"), "--datasets_cache_dir",
            str(tmp_path / "hf"), "--num_workers", "0", "--device", "cpu", "--dsl", "--num_frames", "3"]
    entry = main(argv)
    metrics = entry["metrics"]
    assert entry["protocol"] == "square" and entry["num_frames"] == 3 and entry["processor"]["num_frames"] == 3
    assert metrics["num_texts"] == metrics["num_videos"] == 6 and metrics["num_skipped_videos"] == 0
    assert 0.0 <= metrics["t2v_R@1"] <= 100.0 and 1.0 <= metrics["t2v_MdR"] <= 6.0 and "dsl_v2t_R@1" in metrics
    saved = json.loads(output.read_text())["results"]
    assert len(saved) == 1 and saved[0]["metrics"] == pytest.approx(metrics)
    table = output.with_suffix(".md").read_text().splitlines()
    assert len(table) == 4 and "| synthetic | test | square |" in table[2] and "square + DSL" in table[3]
    assert table[2] in capsys.readouterr().out
    # the library call the trainer makes gives the same numbers (and reuses the cache)
    from datasets_scripts.loading import load_benchmark

    test = load_benchmark("synthetic", data, split="test", cache_dir=tmp_path / "hf")
    processor.num_frames = 3
    again = evaluate_retrieval(model, processor, test, cache_dir=tmp_path / "cache", dsl=True, show_progress=False)
    assert again == pytest.approx(metrics)
