"""VideoIndex, its backends and the embedding store: real videos, corrupt files, resume, save/load, exact vs FAISS."""

import json
import logging
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import FakeModel, FakeProcessor

from modeling_pig.embedding import EmbeddingStore, model_fingerprint
from modeling_pig.encoding import encode_texts, encode_videos
from modeling_pig.index import INDEX_STORE_DIR, VideoIndex, exact_search
from modeling_pig.video_io import find_videos, read_video_frames

@pytest.fixture
def fake():
    torch.manual_seed(0)
    return FakeModel(), FakeProcessor()


@pytest.fixture
def videos_with_corrupt(shared_videos, tmp_path):
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    # the three shortest real videos keep decoding time low
    small = [v for v in shared_videos if v.name in ("single_face.mp4", "carphone_pristine.mp4", "bikes.mp4")]
    return [str(p) for p in small] + [str(corrupt)]


# ----------------------------------------------------------------------------------------------------------
# exact search and FAISS on random vectors


def test_exact_search_matches_full_sort_across_chunks():
    torch.manual_seed(0)
    store = F.normalize(torch.randn(1000, 16), dim=-1).half()
    queries = F.normalize(torch.randn(7, 16), dim=-1)
    scores, indices = exact_search(store, queries, k=10, chunk_rows=64)
    full = queries @ store.float().T  # [7, 1000]
    expected = torch.topk(full, 10, dim=1)
    np.testing.assert_array_equal(indices, expected.indices.numpy())
    np.testing.assert_allclose(scores, expected.values.numpy(), rtol=1e-6)


def test_exact_search_caps_k_and_breaks_ties_by_index():
    store = torch.ones(3, 4)
    scores, indices = exact_search(store, torch.ones(1, 4), k=10, chunk_rows=2)
    assert indices.tolist() == [[0, 1, 2]] and scores.shape == (1, 3)


@pytest.mark.parametrize("backend, params", [("ivf", {"nlist": 16, "nprobe": 16}), ("hnsw", {"ef_search": 128})])
def test_faiss_backends_agree_with_exact_search(backend, params):
    torch.manual_seed(0)
    embeddings = F.normalize(torch.randn(3000, 32), dim=-1)
    paths = [f"v{i}.mp4" for i in range(3000)]
    index = VideoIndex(embeddings, paths, backend=backend, **params)
    assert index.backend == backend
    # nprobe == nlist scans every list: IVF is then exhaustive and must equal exact search
    recall = index.measure_recall(num_queries=50, k=10)
    assert recall >= (1.0 if backend == "ivf" else 0.9)
    index.set_search_params(**({"nprobe": 1} if backend == "ivf" else {"ef_search": 10}))
    low = index.measure_recall(num_queries=50, k=10)
    # less search effort must cost recall here (IVF: 1 of 16 lists, measured 0.28; HNSW ef 10: 0.89)
    assert low < (0.6 if backend == "ivf" else 1.0)
    # and the recall is what it says: top-10 overlap with a brute-force search, counted by hand
    queries = F.normalize(embeddings[:50] + 0.3 * torch.randn(50, 32), dim=-1)
    truth = (queries @ embeddings.T).topk(10, dim=1).indices.tolist()
    _, found = index.search_embeddings(queries, 10)
    by_hand = sum(len(set(f) & set(t)) for f, t in zip(found.tolist(), truth)) / 500
    assert index.measure_recall(queries=queries, k=10) == pytest.approx(by_hand)


def test_tune_raises_search_effort_until_target_recall():
    torch.manual_seed(0)
    index = VideoIndex(F.normalize(torch.randn(2000, 32), dim=-1), [str(i) for i in range(2000)], backend="ivf",
                       nlist=32, nprobe=1)
    low = index.measure_recall(num_queries=50)
    reached = index.tune(target_recall=0.99, num_queries=50)
    assert reached >= 0.99 > low and index.faiss_params["nprobe"] > 1
    assert index.measure_recall(num_queries=50) == pytest.approx(reached)


def test_auto_backend_switches_to_faiss_above_threshold():
    embeddings = F.normalize(torch.randn(500, 8), dim=-1)
    paths = [str(i) for i in range(500)]
    assert VideoIndex(embeddings, paths, faiss_threshold=1000).backend == "exact"
    big = VideoIndex(embeddings, paths, faiss_threshold=100)
    assert big.backend == "ivf" and big.faiss_params["nlist"] >= 1
    assert VideoIndex(embeddings, paths, faiss_threshold=100, backend="exact").backend == "exact"


def test_search_by_embedding_returns_paths_and_scores():
    embeddings = torch.eye(4)
    index = VideoIndex(embeddings, ["a", "b", "c", "d"])
    results = index.search(torch.tensor([[0.0, 0.9, 0.1, 0.0]]), k=2)
    assert [p for p, _ in results[0]] == ["b", "c"]
    assert results[0][0][1] == pytest.approx(0.9, abs=1e-3)
    with pytest.raises(ValueError, match=r"queries must be \[Q, 4\]"):
        index.search_embeddings(torch.zeros(1, 3))


@pytest.mark.parametrize("backend", ["exact", "ivf"])
def test_save_load_gives_identical_results(tmp_path, backend):
    torch.manual_seed(1)
    embeddings = F.normalize(torch.randn(400, 16), dim=-1)
    index = VideoIndex(embeddings, [f"/videos/{i}.mp4" for i in range(400)], failed={"/x.mp4": "broken"},
                       model_path="/models/m", model_fingerprint="abc", backend=backend)
    if backend == "ivf":
        index.set_search_params(nprobe=3)
    index.save(tmp_path / "idx")
    files = json.loads((tmp_path / "idx" / "index.json").read_text())["files"]
    assert ("search" in files) == (backend == "ivf")  # exact search stores no FAISS index
    assert all((tmp_path / "idx" / name).exists() for name in files.values())
    loaded = VideoIndex.load(tmp_path / "idx")
    queries = F.normalize(torch.randn(5, 16), dim=-1)
    assert loaded.backend == backend and loaded.paths == index.paths and loaded.failed == index.failed
    assert loaded.faiss_params == index.faiss_params
    assert loaded.model_path == "/models/m" and loaded.model_fingerprint == "abc"
    assert torch.equal(loaded.embeddings, index.embeddings)
    assert loaded.search(queries, k=7) == index.search(queries, k=7)


# ----------------------------------------------------------------------------------------------------------
# embedding real videos


def test_build_indexes_real_videos_and_reports_corrupt_file(fake, videos_with_corrupt, caplog):
    model, processor = fake
    with caplog.at_level(logging.WARNING, logger="modeling_pig.encoding"):
        index = VideoIndex.build(model, processor, videos_with_corrupt, batch_size=2, show_progress=False)
    assert len(index) == 3 and index.paths == videos_with_corrupt[:3]
    assert list(index.failed) == [videos_with_corrupt[3]]
    assert "corrupt.mp4" in index.failed[videos_with_corrupt[3]]
    assert "corrupt.mp4" in caplog.text
    assert index.embeddings.dtype == torch.float16
    assert torch.allclose(index.embeddings.float().norm(dim=-1), torch.ones(3), atol=1e-2)
    # a video's vector comes from its own frames: searching with it returns that video first
    for i, path in enumerate(index.paths):
        assert index.search(index.embeddings[i:i + 1].float(), k=1)[0][0][0] == path
    # text search goes through the text tower of the model that built the index
    hits = index.search(["a man in a car"], k=2)[0]
    expected = encode_texts(model, processor, ["a man in a car"], show_progress=False)[0] @ index.embeddings.float().T
    assert hits[0][1] == pytest.approx(float(expected.max()), abs=1e-3)


def test_embedding_ignores_batch_composition_and_workers(fake, videos_with_corrupt):
    model, processor = fake
    one = encode_videos(model, processor, videos_with_corrupt, batch_size=1, show_progress=False)
    many = encode_videos(model, processor, videos_with_corrupt, batch_size=4, num_workers=2, show_progress=False)
    assert one.positions == many.positions == [0, 1, 2] and list(one.failed) == list(many.failed) == [3]
    torch.testing.assert_close(one.embeddings, many.embeddings, rtol=1e-5, atol=1e-6)


def test_build_resumes_from_checkpoint_after_interruption(fake, videos_with_corrupt, tmp_path):
    model, processor = fake
    reference = encode_videos(model, processor, videos_with_corrupt, batch_size=1, show_progress=False)
    model.video_calls = 0

    class Interrupt(Exception):
        pass

    original = model.get_video_features

    def crash_on_third_batch(pixel_values):
        if model.video_calls == 2:
            raise Interrupt()
        return original(pixel_values)

    model.get_video_features = crash_on_third_batch
    out = tmp_path / "index"
    with pytest.raises(Interrupt):
        VideoIndex.build(model, processor, videos_with_corrupt, batch_size=1, out_dir=out, flush_every=1,
                         show_progress=False)
    assert len(list((out / INDEX_STORE_DIR).glob("*/shard-*.safetensors"))) >= 2
    model.get_video_features = original
    model.video_calls = 0
    index = VideoIndex.build(model, processor, videos_with_corrupt, batch_size=1, out_dir=out, show_progress=False)
    assert model.video_calls == 1  # only the third real video was left to embed
    torch.testing.assert_close(index.embeddings, reference.embeddings.half())
    assert list(index.failed) == [videos_with_corrupt[3]]
    # once the index is saved, its store is compacted into one shard that holds this build's videos
    assert len(list((out / INDEX_STORE_DIR).glob("*/shard-*.safetensors"))) == 1
    assert VideoIndex.load(out).search(reference.embeddings[:1], k=3) == index.search(reference.embeddings[:1], k=3)


def test_rebuild_into_the_same_folder_embeds_only_new_or_changed_videos(fake, videos_with_corrupt, tmp_path):
    model, processor = fake
    copies = []
    for i, source in enumerate(videos_with_corrupt[:3]):
        copies.append(tmp_path / f"v{i}.mp4")
        copies[-1].write_bytes(open(source, "rb").read())
    out = tmp_path / "index"
    first = VideoIndex.build(model, processor, copies[:2], out_dir=out, show_progress=False)
    model.video_calls = 0
    second = VideoIndex.build(model, processor, copies, batch_size=4, out_dir=out, show_progress=False)
    assert model.video_calls == 1 and len(second) == 3  # one batch, holding only the new video
    torch.testing.assert_close(second.embeddings[:2], first.embeddings)
    copies[0].write_bytes(open(videos_with_corrupt[2], "rb").read())  # replaced by other content
    model.video_calls = 0
    third = VideoIndex.build(model, processor, copies, batch_size=4, out_dir=out, show_progress=False)
    assert model.video_calls == 1
    torch.testing.assert_close(third.embeddings[0], third.embeddings[2])
    other = VideoIndex.build(FakeModel(seed=5), processor, copies, out_dir=out, show_progress=False)
    assert not torch.allclose(other.embeddings.float(), third.embeddings.float())


def test_store_never_mixes_vectors_of_another_model_or_processor(fake, videos_with_corrupt, tmp_path):
    model, processor = fake
    store = EmbeddingStore(tmp_path / "store")
    first = encode_videos(model, processor, videos_with_corrupt[:1], store=store, show_progress=False)
    other = FakeModel(seed=1)
    second = encode_videos(other, processor, videos_with_corrupt[:1], store=store, show_progress=False)
    assert other.video_calls == 1  # nothing reused from the first model's vectors
    torch.testing.assert_close(second.embeddings, encode_videos(other, processor, videos_with_corrupt[:1],
                                                                show_progress=False).embeddings)
    assert not torch.allclose(first.embeddings, second.embeddings)
    model.video_calls = 0
    encode_videos(model, FakeProcessor(num_frames=3), videos_with_corrupt[:1], store=store, show_progress=False)
    assert model.video_calls == 1 and len(store.keys()) == 3
    model.video_calls = 0
    again = encode_videos(model, processor, videos_with_corrupt[:1], store=store, show_progress=False)
    assert model.video_calls == 0 and torch.equal(again.embeddings, first.embeddings)


def test_model_fingerprint_changes_with_weights(fake):
    model, _ = fake
    before = model_fingerprint(model)
    assert model_fingerprint(model) == before
    with torch.no_grad():
        model.video_proj[0, 0] += 1e-3
    assert model_fingerprint(model) != before


def test_loaded_index_refuses_a_different_model(fake, tmp_path):
    model, processor = fake
    index = VideoIndex(torch.eye(8)[:3], ["a", "b", "c"], model_fingerprint=model_fingerprint(model))
    index.save(tmp_path)
    VideoIndex.load(tmp_path, model=model, processor=processor)
    with pytest.raises(ValueError, match="not the one that built this index"):
        VideoIndex.load(tmp_path, model=FakeModel(seed=3), processor=processor)


def test_find_videos(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.mp4", "b.MOV", "notes.txt", "sub/c.webm"):
        (tmp_path / name).write_bytes(b"")
    assert [p.split("/")[-1] for p in find_videos(tmp_path)] == ["a.mp4", "b.MOV"]
    assert [p.split("/")[-1] for p in find_videos(tmp_path, recursive=True)] == ["a.mp4", "b.MOV", "c.webm"]


def test_pig_index_and_the_benchmark_loaders_share_one_extension_list(tmp_path):
    from datasets_scripts import common

    from modeling_pig import video_io

    assert common.VIDEO_EXTENSIONS is video_io.VIDEO_EXTENSIONS
    for name in ("a.mts", "b.M2TS", "c.3g2"):  # once skipped by `pig index` although the loaders accepted them
        (tmp_path / name).write_bytes(b"")
    assert [p.split("/")[-1] for p in find_videos(tmp_path)] == ["a.mts", "b.M2TS", "c.3g2"]


def test_encode_texts_is_normalised_and_validates(fake):
    model, processor = fake
    emb = encode_texts(model, processor, ["a", "a dog", "a cat"], batch_size=2, show_progress=False)
    assert emb.shape == (3, 8) and torch.allclose(emb.norm(dim=-1), torch.ones(3))
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        encode_texts(model, processor, ["ok", ""], show_progress=False)
    with pytest.raises(TypeError):
        encode_texts(model, processor, "one string", show_progress=False)


def test_index_folder_is_plain_json_numpy_and_arrow(tmp_path):
    import datasets

    VideoIndex(torch.eye(2), ["a", "b"], failed={"c": "broken"}).save(tmp_path)
    meta = json.loads((tmp_path / "index.json").read_text())
    assert meta["backend"] == "exact" and meta["dim"] == 2 and meta["num_videos"] == 2 and meta["num_failed"] == 1
    vectors = np.load(tmp_path / meta["files"]["vectors"])
    assert vectors.dtype == np.float16 and vectors.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    table = datasets.load_from_disk(str(tmp_path / meta["files"]["videos"]))
    assert table["path"][:] == ["a", "b", "c"] and table["status"][:] == ["indexed", "indexed", "failed"]
    assert table["detail"][2] == "broken"
