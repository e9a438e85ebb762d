"""Index folders at scale: distributed build, interruptions, status, lock, duplicates, updates, zero-shot CLIP,
memory-mapped format, datasets round trip, exact single-query search and IVF-PQ."""

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_clip_config_dict
from helpers import FakeModel, FakeProcessor, pig

from modeling_pig.embedding import model_fingerprint
from modeling_pig.index import VideoIndex
from modeling_pig.indexing import IndexLockedError, build_lock, index_status
from modeling_pig.search_backends import _exact_chunked, exact_search

SMALL = ("single_face.mp4", "carphone_pristine.mp4", "bikes.mp4")


@pytest.fixture
def video_dir(shared_videos, tmp_path):
    """Four small real videos (the fourth a copy of the third with another mtime)."""
    folder = tmp_path / "videos"
    folder.mkdir()
    by_name = {p.name: p for p in shared_videos}
    for name in SMALL:
        shutil.copy(by_name[name], folder / name)
    shutil.copy(by_name["bikes.mp4"], folder / "bikes_copy.mp4")
    return folder


# ----------------------------------------------------------------------------------------------------------
# search


@pytest.mark.parametrize("num_queries", [1, 3])
def test_exact_single_query_path_equals_float32_scoring(num_queries):
    torch.manual_seed(0)
    store = F.normalize(torch.randn(5000, 64), dim=-1).half()
    store[100:110] = store[7]  # exact ties: the lower index comes first
    queries = torch.randn(num_queries, 64) * 3.0  # not normalised: the score is the plain inner product
    queries[0] = store[7].float() * 2.0
    scores, indices = exact_search(store, queries, k=15)
    ref_scores, ref_indices = _exact_chunked(store, queries.float(), 15, chunk_rows=777)
    np.testing.assert_array_equal(indices, ref_indices)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)
    assert indices[0, :11].tolist() == [7, *range(100, 110)]
    full = (queries @ store.float().T).topk(15)  # an independent reference for the scores
    np.testing.assert_allclose(scores, full.values.numpy(), rtol=1e-5, atol=1e-5)


def test_exact_search_of_a_zero_query_and_k_above_n():
    store = F.normalize(torch.randn(5, 8), dim=-1).half()
    scores, indices = exact_search(store, torch.zeros(1, 8), k=10)
    assert indices.tolist() == [[0, 1, 2, 3, 4]] and np.all(scores == 0)


def test_ivfpq_stores_pq_m_bytes_per_video_and_rescores_its_candidates_exactly(tmp_path):
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(64, 8)).Q.T  # data of intrinsic dimension 8
    embeddings = F.normalize(torch.randn(4000, 8) @ basis, dim=-1)
    paths = [f"v{i}" for i in range(4000)]
    # 16 sub-quantizers of 4 bits (16 centroids each: quick to train): 8 code bytes per video
    raw = VideoIndex(embeddings, paths, backend="ivfpq", nlist=16, nprobe=16, pq_m=16, pq_bits=4, refine=1)
    assert raw.search_backend.bytes_per_vector() == 8 + 8 and raw.faiss_params["pq_m"] == 16
    raw_recall = raw.measure_recall(num_queries=50)
    assert 0.3 <= raw_recall < 1.0  # ranked by lossy codes: measured, never assumed
    refined = VideoIndex(embeddings, paths, backend="ivfpq", nlist=16, nprobe=16, pq_m=16, pq_bits=4, refine=20)
    assert refined.measure_recall(num_queries=50) >= max(raw_recall, 0.95)  # the top 200 by code, rescored
    queries = F.normalize(torch.randn(4, 64), dim=-1)
    scores, indices = refined.search_embeddings(queries, k=5)
    np.testing.assert_allclose(scores, (queries @ embeddings.half().float().T).gather(1, torch.from_numpy(indices)),
                               rtol=1e-5)  # exact float32 scores of the fp16 vectors
    refined.save(tmp_path)
    loaded = VideoIndex.load(tmp_path)
    assert loaded.backend == "ivfpq" and loaded.search_embeddings(queries, k=5)[1].tolist() == indices.tolist()
    with pytest.raises(ValueError, match="pq_m must divide"):
        VideoIndex(embeddings, paths, backend="ivfpq", pq_m=7)


def test_auto_above_the_threshold_is_ivfpq_tuned_to_the_target_recall():
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(32, 8)).Q.T
    embeddings = F.normalize(torch.randn(10_000, 8) @ basis, dim=-1)
    index = VideoIndex(embeddings, [str(i) for i in range(10_000)], backend="auto", faiss_threshold=5000)
    assert index.backend == "ivfpq" and index.faiss_params["refine"] == 50
    reached = index.tune(target_recall=0.95, num_queries=50)
    assert reached >= 0.95 and index.measure_recall(num_queries=50, seed=7) >= 0.9  # on other queries too


def test_loaded_index_maps_its_vectors_and_reads_paths_on_demand(tmp_path):
    embeddings = F.normalize(torch.randn(300, 16), dim=-1)
    VideoIndex(embeddings, [f"/v/{i}.mp4" for i in range(300)]).save(tmp_path)
    loaded = VideoIndex.load(tmp_path)
    vectors_file = tmp_path / json.loads((tmp_path / "index.json").read_text())["files"]["vectors"]
    with open("/proc/self/maps") as maps:  # the vectors are a mapping of the file, not a copy read into memory
        assert str(vectors_file) in maps.read()
    hits = loaded.search(embeddings[42:43], k=2)
    assert hits[0][0][0] == "/v/42.mp4" and not isinstance(loaded._paths, list)  # the list was never built
    assert loaded.paths[299] == "/v/299.mp4"


def test_a_new_generation_replaces_the_previous_files(tmp_path):
    VideoIndex(torch.eye(4), list("abcd"), backend="ivf", nlist=1).save(tmp_path)
    VideoIndex(torch.eye(3), list("abc")).save(tmp_path)
    meta = json.loads((tmp_path / "index.json").read_text())
    names = sorted(p.name for p in tmp_path.iterdir())
    assert meta["generation"] == "g000002" and names == sorted(["index.json", *meta["files"].values()])
    assert VideoIndex.load(tmp_path).paths == list("abc")


def test_to_dataset_and_back_gives_the_same_search(tmp_path):
    torch.manual_seed(0)
    index = VideoIndex(F.normalize(torch.randn(50, 16), dim=-1), [f"v{i}" for i in range(50)])
    dataset = index.to_dataset()
    assert dataset.column_names == ["path", "embedding"] and len(dataset[0]["embedding"]) == 16
    queries = F.normalize(torch.randn(3, 16), dim=-1)
    again = VideoIndex.from_dataset(dataset)
    assert again.search(queries, k=5) == index.search(queries, k=5)
    shuffled = VideoIndex.from_dataset(dataset.select([9, 3]))
    assert shuffled.paths == ["v9", "v3"] and torch.equal(shuffled.embeddings, index.embeddings[[9, 3]])


# ----------------------------------------------------------------------------------------------------------
# building


def test_symlinked_duplicates_are_indexed_once_and_reported(video_dir):
    (video_dir / "link.mp4").symlink_to(video_dir / "bikes.mp4")
    model, processor = FakeModel(), FakeProcessor()
    paths = sorted(str(p) for p in video_dir.iterdir())
    index = VideoIndex.build(model, processor, paths, show_progress=False)
    assert len(index) == 4 and str(video_dir / "link.mp4") not in index.paths
    assert index.duplicates == {str(video_dir / "link.mp4"): str(video_dir / "bikes.mp4")}


def test_rebuild_adds_new_files_and_drops_deleted_ones_without_re_embedding(video_dir, tmp_path):
    model, processor = FakeModel(), FakeProcessor()
    out = tmp_path / "index"
    first = VideoIndex.build(model, processor, sorted(map(str, video_dir.iterdir())), out_dir=out,
                             show_progress=False)
    (video_dir / "single_face.mp4").unlink()
    shutil.copy(video_dir / "bikes.mp4", video_dir / "new.mp4")
    model.video_calls = 0
    second = VideoIndex.build(model, processor, sorted(map(str, video_dir.iterdir())), out_dir=out,
                              batch_size=8, show_progress=False)
    assert model.video_calls == 1  # one batch, holding only new.mp4
    report = second.build_report
    assert (report["reused"], report["embedded_now"], report["dropped"], report["total"]) == (3, 1, 1, 4)
    assert sorted(os.path.basename(p) for p in second.paths) == ["bikes.mp4", "bikes_copy.mp4",
                                                                 "carphone_pristine.mp4", "new.mp4"]
    kept = first.paths.index(str(video_dir / "carphone_pristine.mp4"))
    assert torch.equal(second.embeddings[second.paths.index(first.paths[kept])], first.embeddings[kept])


def test_a_second_build_on_the_same_folder_is_refused(video_dir, tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "index"
    with build_lock(out):
        with pytest.raises(IndexLockedError, match="another build of this index is running"):
            VideoIndex.build(FakeModel(), FakeProcessor(), [str(video_dir / SMALL[0])], out_dir=out,
                             show_progress=False)
        status, _, stderr = pig(capsys, "index", video_dir, "--model", tiny_model_dir, "--out", out, "--num_workers", 0)
        assert status == 2 and f"pid {os.getpid()}" in stderr and len(stderr.strip().splitlines()) == 1
    VideoIndex.build(FakeModel(), FakeProcessor(), [str(video_dir / SMALL[0])], out_dir=out, show_progress=False)


def test_sigterm_keeps_finished_batches_and_info_reports_the_interrupted_build(video_dir, tmp_path, tiny_model_dir,
                                                                            capsys, monkeypatch):
    from modeling_pig.modeling_pig import PIGModel

    original = PIGModel.get_video_features
    calls = []

    def terminated_on_third_batch(self, pixel_values):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler sends at preemption
        return original(self, pixel_values)

    monkeypatch.setattr(PIGModel, "get_video_features", terminated_on_third_batch)
    out = tmp_path / "index"
    args = ["index", video_dir, "--model", tiny_model_dir, "--out", out, "--batch_size", 1, "--num_workers", 0,
            "--device", "cpu"]
    status, _, stderr = pig(capsys, *args)
    assert status == 128 + signal.SIGTERM and "interrupted (SIGTERM)" in stderr
    status, stdout, _ = pig(capsys, "info", "--json", out)
    info = json.loads(stdout)
    # two batches were finished before the signal (the default flush is every 512 videos): both are kept
    assert status == 0 and {k: info[k] for k in ("status", "embedded", "total", "failed", "running")} == \
        {"status": "incomplete", "embedded": 2, "total": 4, "failed": 0, "running": False}
    assert info["model_path"] == str(tiny_model_dir) and info["backend"] == "auto"
    status, stdout, _ = pig(capsys, "info", out)
    assert "build incomplete (interrupted): 2 of 4 videos embedded" in stdout
    monkeypatch.setattr(PIGModel, "get_video_features", original)
    status, stdout, _ = pig(capsys, *args)
    assert status == 0 and "indexed 4 of 4 videos" in stdout and "(2 embedded now, 2 from the store" in stdout
    info = json.loads(pig(capsys, "info", "--json", out)[1])
    assert {k: info[k] for k in ("status", "embedded", "total", "failed", "backend")} == \
        {"status": "complete", "embedded": 4, "total": 4, "failed": 0, "backend": "exact"}


def test_distributed_build_over_two_processes_equals_a_one_process_build(video_dir, tmp_path, tiny_model_dir):
    (video_dir / "broken.mp4").write_bytes(b"\x00" * 1000)
    one = VideoIndex.build(*tiny_model(tiny_model_dir), sorted(map(str, video_dir.iterdir())), out_dir=tmp_path / "one",
                           batch_size=1, show_progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    # torchrun starts two gloo processes on CPU (so does `accelerate launch --multi_gpu --num_processes 2`)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                           "modeling_pig.cli", "index", str(video_dir), "--model", str(tiny_model_dir), "--out",
                           str(tmp_path / "two"), "--batch_size", "1", "--num_workers", "0", "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "indexed 4 of 5 videos" in done.stdout and "2 processes" in done.stdout
    two = VideoIndex.load(tmp_path / "two")
    assert two.paths == one.paths and two.failed == one.failed
    torch.testing.assert_close(two.embeddings.float(), one.embeddings.float(), atol=1e-3, rtol=0)
    assert index_status(tmp_path / "two")["status"] == "complete"


def tiny_model(tiny_model_dir):
    from modeling_pig import load_model_and_processor

    return load_model_and_processor(str(tiny_model_dir))


# ----------------------------------------------------------------------------------------------------------
# models


def test_zero_shot_index_from_a_plain_clip_checkpoint(video_dir, tmp_path, capsys):
    from transformers import CLIPConfig, CLIPModel

    from modeling_pig import PIGProcessor

    torch.manual_seed(0)
    clip_config = tiny_clip_config_dict(real_vocabulary=True)  # the shipped CLIP tokenizer's ids
    clip = CLIPModel(CLIPConfig(**clip_config)).eval()
    clip.save_pretrained(tmp_path / "clip")
    out = tmp_path / "index"
    status, stdout, stderr = pig(capsys, "index", video_dir, "--model", tmp_path / "clip", "--out", out,
                                 "--num_frames", 3, "--num_workers", 0, "--device", "cpu")
    assert status == 0, stderr
    meta = json.loads((out / "index.json").read_text())
    assert meta["model_loader"] == {"kind": "clip-meanp", "dtype": "float32", "num_frames": 3}
    # CLIP4Clip meanP by hand: CLIP image embeddings of the 3 frames, normalised, averaged
    index = VideoIndex.load(out)
    processor = PIGProcessor(num_frames=3, image_size=32)
    path = str(video_dir / "bikes.mp4")
    with torch.no_grad():
        frames = clip.get_image_features(pixel_values=processor.load_video(path)).pooler_output  # [3, D]
    expected = F.normalize(F.normalize(frames, dim=-1).mean(dim=0), dim=0)
    torch.testing.assert_close(index.embeddings[index.paths.index(path)].float(), expected, atol=2e-3, rtol=0)
    status, stdout, _ = pig(capsys, "search", out, "bicycles", "-k", 1, "--device", "cpu")
    with torch.no_grad():
        text = processor(text=["bicycles"], return_tensors="pt")
        query = F.normalize(clip.get_text_features(**text).pooler_output, dim=-1)
    best = (query @ index.embeddings.float().T).argmax().item()
    assert status == 0 and stdout.splitlines()[2].endswith(index.paths[best])


def test_loaded_index_does_not_rehash_unchanged_model_files(video_dir, tmp_path, tiny_model_dir, capsys, monkeypatch):
    import modeling_pig.index as index_module

    out = tmp_path / "index"
    assert pig(capsys, "index", video_dir, "--model", tiny_model_dir, "--out", out, "--num_workers", 0,
               "--dtype", "bfloat16")[0] == 0
    assert json.loads((out / "index.json").read_text())["model_loader"] == {"kind": "pig", "dtype": "bfloat16"}
    hashed = []
    monkeypatch.setattr(index_module, "model_fingerprint", lambda model: hashed.append(1) or model_fingerprint(model))
    index = VideoIndex.load(out)
    index.search("a dog", k=1)
    assert hashed == []  # the model files are the ones recorded at build time
    assert next(index._model.parameters()).dtype == torch.bfloat16  # the text tower as the index recorded it
    changed = tmp_path / "model_copy"
    shutil.copytree(tiny_model_dir, changed, copy_function=shutil.copy)  # new mtimes
    index = VideoIndex.load(out)
    index.model_path = str(changed)  # same weights, other files: hashed once, and accepted
    index.search("a dog", k=1)
    assert hashed == [1]


def test_bfloat16_model_gives_close_vectors(video_dir, tiny_model_dir):
    from modeling_pig import encode_videos, load_model_and_processor

    paths = [str(video_dir / name) for name in SMALL[:2]]
    model32, processor = load_model_and_processor(str(tiny_model_dir))
    model16, _ = load_model_and_processor(str(tiny_model_dir), dtype="bfloat16")
    assert next(model16.parameters()).dtype == torch.bfloat16
    full = encode_videos(model32, processor, paths, show_progress=False).embeddings
    half = encode_videos(model16, processor, paths, show_progress=False).embeddings
    assert half.dtype == torch.float32 and F.cosine_similarity(full, half).min() > 0.99


def test_a_format_1_index_folder_is_replaced_by_a_new_build(tmp_path):
    (tmp_path / "index.json").write_text(json.dumps({"format": 1, "paths": ["a"]}))
    (tmp_path / "embeddings.safetensors").write_bytes(b"old")
    with pytest.raises(ValueError, match="index format 1, this version reads 2"):
        VideoIndex.load(tmp_path)
    VideoIndex(torch.eye(2), ["a", "b"]).save(tmp_path)
    assert not (tmp_path / "embeddings.safetensors").exists() and VideoIndex.load(tmp_path).paths == ["a", "b"]
