"""The embedding store: keys, signatures, crash-safe shards, compaction, text and video encoding through it."""

import torch
from helpers import FakeModel, FakeProcessor

from modeling_pig.embedding import (
    EmbeddingStore,
    model_fingerprint,
    processor_signature,
    text_signature,
    video_signature,
)
from modeling_pig.encoding import encode_texts


def section_of(store, model=None, processor=None):
    return store.section(model_fingerprint(model or FakeModel()), processor_signature(processor or FakeProcessor()))


def test_vectors_survive_a_reopen_and_half_written_shards_are_ignored(tmp_path):
    store = EmbeddingStore(tmp_path, dtype=torch.float16)
    section = section_of(store)
    vectors = torch.randn(3, 4)
    section.add(["a", "b", "c"], vectors)
    section.add_failed("d", "broken file")
    assert "a" in section and not section.shard_files()  # buffered: readable, not yet on disk
    section.flush()
    # a crash in the middle of a write leaves only a temporary file, which readers never look at
    (section.folder / ".shard-x.safetensors.123.tmp").write_bytes(b"half a shard")
    reopened = section_of(store)
    assert reopened.get(["c", "a"]).dtype == torch.float16
    torch.testing.assert_close(reopened.get(["c", "a"]), vectors[[2, 0]].half())
    assert reopened.failed == {"d": "broken file"} and reopened.has("d") and "d" not in reopened


def test_compact_keeps_only_the_given_items_in_one_shard(tmp_path):
    section = section_of(EmbeddingStore(tmp_path))
    for name in "abc":
        section.add([name], torch.full((1, 2), float(ord(name))))
        section.flush()
    section.add_failed("z", "gone")
    assert len(section.shard_files()) == 3
    section.compact(keep=["c", "a", "z"])
    assert len(section.shard_files()) == 1 and sorted(section.signatures()) == ["a", "c"]
    assert section.failed == {"z": "gone"}
    assert section.get(["a", "c"])[:, 0].tolist() == [97.0, 99.0]


def test_texts_come_from_the_store_on_a_second_call(tmp_path):
    model, processor = FakeModel(), FakeProcessor()
    store = EmbeddingStore(tmp_path)
    texts = ["a dog", "a cat", "a dog"]
    fresh = encode_texts(model, processor, texts, show_progress=False)
    first = encode_texts(model, processor, texts, store=store, show_progress=False)
    assert torch.equal(first, fresh)
    calls = []
    original = model.get_text_features
    model.get_text_features = lambda **kw: calls.append(1) or original(**kw)
    again = encode_texts(model, processor, ["a cat", "a bird"], store=store, show_progress=False)
    assert len(calls) == 1 and torch.equal(again[0], fresh[1])  # only "a bird" went through the model


def test_signatures_follow_the_file_and_never_collide_with_texts(tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    before = video_signature(str(video))
    assert video_signature(str(video)) == before != video_signature(str(video), 0.0, 1.0)
    video.write_bytes(b"xy")  # new content: new signature
    assert video_signature(str(video)) != before
    assert text_signature(str(video)) != video_signature(str(video))


def test_processes_that_open_the_store_at_different_times_leave_no_video_to_no_one(tmp_path):
    """Process 1 opens the store only after process 0 has embedded and flushed its whole share (a slow start under
    torchrun): the shares must still cover every video (they used to be computed from the work left, so process 1
    took every other video of what remained and skipped one). Regression: a 2-process index build once listed
    neither the vector nor the failure of a broken video."""
    from helpers import write_colour_video

    from modeling_pig.encoding import encode_videos

    videos = [str(write_colour_video(tmp_path / f"v{i}.mp4", (40 * i, 100, 200))) for i in range(4)]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 1000)
    videos.insert(2, str(broken))  # positions 0..4; process 0 takes 0, 2 (broken), 4; process 1 takes 1, 3
    model, processor = FakeModel(), FakeProcessor()
    store = EmbeddingStore(tmp_path / "store")
    first = encode_videos(model, processor, videos, batch_size=1, store=store, show_progress=False,
                          process_index=0, num_processes=2)
    assert first.positions == [0, 4] and list(first.failed) == [2]
    late = encode_videos(model, processor, videos, batch_size=1, store=store, show_progress=False,
                         process_index=1, num_processes=2)
    assert late.positions == [0, 1, 3, 4] and list(late.failed) == [2]  # it sees process 0's shards, too
    assert model.video_calls == 4  # every decodable video embedded exactly once
    merged = section_of(store, model, processor)
    merged.reload()
    whole = merged.collect([video_signature(v) for v in videos])
    assert whole.positions == [0, 1, 3, 4] and list(whole.failed) == [2] and "broken.mp4" in whole.failed[2]
    alone = encode_videos(FakeModel(), processor, videos, batch_size=1, show_progress=False)
    torch.testing.assert_close(whole.embeddings, alone.embeddings)
