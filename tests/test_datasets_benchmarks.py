"""Benchmark loaders against the real annotation files (counts of datasets.md) and small fixtures in the
documented formats for the files that are not available (MSRVTT_data.json, VATEX captions, LSMDC, MSVD)."""

import csv
import json
import pickle

import pytest

from datasets_scripts import load_benchmark
from datasets_scripts.activitynet import parse_activitynet_json
from datasets_scripts.common import read_id_list
from datasets_scripts.didemo import parse_didemo_json
from datasets_scripts.lsmdc import parse_lsmdc_csv
from datasets_scripts.msrvtt import parse_id_file, parse_jsfusion_csv, parse_msrvtt_captions
from datasets_scripts.msvd import parse_msvd_captions
from datasets_scripts.vatex import parse_vatex_captions

from conftest import FIXTURES

FIX = FIXTURES / "datasets"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hf_cache")


def load(name, data_dir, cache, **kwargs):
    """Annotation-only load (no videos needed)."""
    return load_benchmark(name, data_dir, missing_videos="keep", cache_dir=cache, **kwargs)


# ----------------------------------------------------------------------------------------------- MSR-VTT (real)

def test_msrvtt_1ka_test_is_the_1000_pairs_of_the_jsfusion_csv(shared_data, cache):
    folder = shared_data / "annotations" / "msrvtt"
    with open(folder / "MSRVTT_JSFUSION_test.csv", newline="") as handle:
        expected = [(row["video_id"], row["sentence"]) for row in csv.DictReader(handle)]
    for config in ("9k", "7k"):
        test = load("msrvtt", folder, cache, config=config, split="test")
        assert len(test) == 1000
        assert [(r["video_id"], r["captions"]) for r in test] == [(v, [s]) for v, s in expected]
    assert test[0]["video"] is None and test[0]["start"] is None


def test_msrvtt_train_id_lists_have_9000_and_7010_ids_disjoint_from_1ka(shared_data):
    folder = shared_data / "annotations" / "msrvtt"
    nine, seven = parse_id_file(folder / "MSRVTT_train.9k.csv"), parse_id_file(folder / "MSRVTT_train.7k.csv")
    assert (len(nine), len(seven)) == (9000, 7010)
    test_ids = {v for v, _ in parse_jsfusion_csv(folder / "MSRVTT_JSFUSION_test.csv")}
    assert len(test_ids) == 1000 and not test_ids & set(nine)
    assert len(test_ids | set(nine)) == 10000
    # the official split as csv (CLIP2Video) and as txt (collaborative experts) agree
    for csv_name, txt_name, count in (("MSRVTT_train.full.csv", "train_list_full.txt", 6513),
                                      ("MSRVTT_val.full.csv", "val_list_full.txt", 497),
                                      ("MSRVTT_test.full.csv", "test_list_full.txt", 2990)):
        assert parse_id_file(folder / csv_name) == parse_id_file(folder / txt_name)
        assert len(parse_id_file(folder / csv_name)) == count


# ----------------------------------------------------------------------------------------------- MSR-VTT (fixture)

def test_msrvtt_train_rows_group_all_captions_of_a_video_in_file_order(cache):
    train = load("msrvtt", FIX / "msrvtt", cache, config="9k", split="train")
    assert train["video_id"] == ["video0", "video1", "video2"]
    assert train[0]["captions"] == ["a man plays a guitar", "someone is playing guitar on stage",
                                    "a musician performs a song"]


def test_msrvtt_full_test_keeps_every_caption_per_video(cache):
    test = load("msrvtt", FIX / "msrvtt", cache, config="full", split="test")
    assert [(r["video_id"], len(r["captions"])) for r in test] == [("video7020", 2), ("video9770", 2)]
    validation = load("msrvtt", FIX / "msrvtt", cache, config="full", split="validation")
    assert validation["video_id"] == ["video2"]


def test_msrvtt_official_videodatainfo_files_merge_into_one_caption_table(tmp_path):
    for name, sentences in (("train_val_videodatainfo.json", [("video0", "a"), ("video0", "b")]),
                            ("test_videodatainfo.json", [("video7010", "c")])):
        (tmp_path / name).write_text(json.dumps({"videos": [], "sentences": [
            {"video_id": v, "caption": c, "sen_id": i} for i, (v, c) in enumerate(sentences)]}))
    captions = parse_msrvtt_captions([tmp_path / "train_val_videodatainfo.json", tmp_path / "test_videodatainfo.json"])
    assert captions == {"video0": ["a", "b"], "video7010": ["c"]}


def test_msrvtt_caption_file_of_the_wrong_shape_is_named_in_the_error(tmp_path):
    (tmp_path / "MSRVTT_data.json").write_text(json.dumps([{"video_id": "video0"}]))
    with pytest.raises(ValueError, match="MSRVTT_data.json.*'sentences' list"):
        parse_msrvtt_captions([tmp_path / "MSRVTT_data.json"])


# ----------------------------------------------------------------------------------------------- DiDeMo (real)

def test_didemo_test_protocol_gives_1004_paragraphs_of_3932_sentences(shared_data, cache):
    folder = shared_data / "annotations" / "didemo"
    test = load("didemo", folder, cache, split="test")
    assert len(test) == 1004
    assert sum(len(s) for s in test["sentences"]) == 3932
    assert test["video_id"] == read_id_list(folder / "test_list.txt")
    by_video = parse_didemo_json(folder / "test_data.json")
    row = test[0]
    assert row["captions"] == [" ".join(r["description"].strip() for r in by_video[row["video_id"]])]
    assert (row["start"], row["end"]) == (0.0, 31.0)
    assert sum(v.endswith(".") for v in test["video_id"]) == 27  # bare-dot names kept as they are


def test_didemo_without_the_list_uses_every_video_of_the_json(shared_data, tmp_path, cache):
    (tmp_path / "test_data.json").write_bytes((shared_data / "annotations" / "didemo" / "test_data.json").read_bytes())
    test = load("didemo", tmp_path, cache, split="test")
    assert len(test) == 1037
    assert sum(len(s) for s in test["sentences"]) == 4021


# ----------------------------------------------------------------------------------------------- ActivityNet (real)

def test_activitynet_val1_gives_4917_paragraphs_of_stripped_sentences(shared_data, cache):
    folder = shared_data / "annotations" / "activitynet"
    test = load("activitynet", folder, cache, split="test")
    assert len(test) == 4917
    assert sum(len(s) for s in test["sentences"]) == 17505
    raw = parse_activitynet_json(folder / "val_1.json")
    row = test[0]
    assert row["video_id"].startswith("v_")
    assert row["duration"] == raw[row["video_id"]]["duration"]
    assert len(row["timestamps"]) == len(row["sentences"]) == len(raw[row["video_id"]]["sentences"])
    # 11,638 sentences start with spaces: stripped before the join (internal double spaces are the annotators')
    assert all(s == s.strip() for sentences in test["sentences"] for s in sentences)
    assert all(c == [" ".join(s)] for c, s in zip(test["captions"], test["sentences"]))
    assert row["captions"] == [" ".join(s.strip() for s in raw[row["video_id"]]["sentences"])]


def test_activitynet_train_reads_the_pdvc_copy_when_train_json_is_absent(shared_data, cache):
    train = load("activitynet", shared_data / "annotations" / "activitynet", cache, split="train")
    assert len(train) == 10009
    assert sum(len(s) for s in train["sentences"]) == 37421


def test_activitynet_list_without_v_prefix_selects_the_same_videos(shared_data, tmp_path, cache):
    annotations = json.loads((shared_data / "annotations" / "activitynet" / "val_1.json").read_text())
    subset = dict(list(annotations.items())[:5])
    (tmp_path / "val_1.json").write_text(json.dumps(subset))
    (tmp_path / "val_ids.json").write_text(json.dumps([k[2:] for k in list(subset)[:3]]))
    test = load("activitynet", tmp_path, cache, split="test")
    assert test["video_id"] == list(subset)[:3]


# ----------------------------------------------------------------------------------------------- VATEX

def test_vatex_hgr_lists_have_25991_1500_1500_disjoint_ids(shared_data):
    folder = shared_data / "annotations" / "vatex"
    lists = {s: read_id_list(folder / f"{s}_list.txt") for s in ("train", "val", "test")}
    assert {s: len(ids) for s, ids in lists.items()} == {"train": 25991, "val": 1500, "test": 1500}
    assert not set(lists["train"]) & set(lists["val"]) and not set(lists["val"]) & set(lists["test"])
    assert not set(lists["train"]) & set(lists["test"])


def test_vatex_test_rows_keep_all_ten_english_captions(cache):
    test = load("vatex", FIX / "vatex", cache, split="test")
    assert test["video_id"] == ["0lh_UWF9ZP4_000062_000072", "zzDXKZJL6T0_000013_000023"]
    assert [len(c) for c in test["captions"]] == [10, 10]
    assert len(load("vatex", FIX / "vatex", cache, split="train")) == 2


def test_vatex_official_and_clip2video_caption_formats_give_english_captions(tmp_path):
    official = tmp_path / "vatex_training_v1.0.json"
    official.write_text(json.dumps([{"videoID": "a_000000_000010", "enCap": ["one ", "two"], "chCap": ["一"]}]))
    clip2video = tmp_path / "vatex_data.json"
    clip2video.write_text(json.dumps({"a_000000_000010": {"enCap": ["one", "two"], "chCap": ["一"]}}))
    assert parse_vatex_captions(official) == parse_vatex_captions(clip2video) == {"a_000000_000010": ["one", "two"]}


def test_vatex_split_ids_without_captions_are_an_error(tmp_path, cache):
    (tmp_path / "test_list.txt").write_text("has_caption\nno_caption\n")
    (tmp_path / "ref_captions.json").write_text(json.dumps({"has_caption": ["x"]}))
    with pytest.raises(ValueError, match="1 of 2 split ids have no caption.*no_caption"):
        load("vatex", tmp_path, cache, split="test")


# ----------------------------------------------------------------------------------------------- LSMDC

def test_lsmdc_rows_group_sentences_by_clip_and_keep_quotes(cache):
    train = load("lsmdc", FIX / "lsmdc", cache, split="train")
    assert len(train) == 2
    assert train[0]["captions"] == ["SOMEONE looks at the sky.", "SOMEONE stares upward."]
    assert train[1]["captions"] == ['He walks to the "door".']
    test = load("lsmdc", FIX / "lsmdc", cache, split="test")
    assert len(test) == 3 and all(len(c) == 1 for c in test["captions"])
    assert test[1]["captions"] == ['She says "hello, there".']


def test_lsmdc_line_without_six_fields_names_file_and_line(tmp_path):
    bad = tmp_path / "LSMDC16_annos_val.csv"
    bad.write_text("clip_a\t1\t2\t3\t4\tok\nclip_b\t1\t2\tmissing fields\n")
    with pytest.raises(ValueError, match=r"LSMDC16_annos_val.csv:2: expected 6 tab-separated fields"):
        parse_lsmdc_csv(bad)


# ----------------------------------------------------------------------------------------------- MSVD

def test_msvd_captions_are_token_lists_joined_and_all_kept(cache):
    test = load("msvd", FIX / "msvd", cache, split="test")
    assert test["video_id"] == ["-_hbPLsZvvo_5_8", "0lh_UWF9ZP4_27_31"]
    assert test[0]["captions"] == ["a man is doing thing0", "a man is doing thing1", "a man is doing thing2"]


class _Exploit:
    def __reduce__(self):
        return (print, ("pickle code ran",))


def test_msvd_pickle_with_code_is_refused(tmp_path, capsys):
    path = tmp_path / "raw-captions.pkl"
    path.write_bytes(pickle.dumps({"v": _Exploit()}))
    with pytest.raises(ValueError, match="not a plain-data pickle"):
        parse_msvd_captions(path)
    assert "pickle code ran" not in capsys.readouterr().out
