"""Training data of train.py: stage-1 sources (benchmark videos, imagefolder, any image+text `datasets` folder),
one caption and one frame sampling per visit, failure records for missing or undecodable files."""

import json
import shutil

import datasets
import numpy as np
import pytest
from conftest import SYNTHETIC_ARGS, SYNTHETIC_PARAMS
from PIL import Image

from training.args import parse_args
from training.data import EpochSampler, ImageCaptionDataset, TrainCollator, VideoCaptionDataset, stage1_dataset


@pytest.fixture()
def accelerator():
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return Accelerator(cpu=True)


def _image_rows(synthetic_dir):
    return [json.loads(line) for line in (synthetic_dir / "annotations" / "images.jsonl").read_text().splitlines()]


def test_stage1_on_benchmark_videos_reads_one_frame_per_video(synthetic_dir, accelerator):
    args = parse_args(["--stage1_dataset", "synthetic", "--stage1_split", "train",
                       "--stage1_data_dir", str(synthetic_dir), *SYNTHETIC_ARGS])
    data = stage1_dataset(args, accelerator)
    assert isinstance(data, VideoCaptionDataset) and len(data) == SYNTHETIC_PARAMS["num_train"]
    item = data[(0, 0)]
    assert item["ok"] and item["frames"].shape == (1, 64, 64, 3) and item["frames"].dtype == np.uint8
    assert item["caption"] in data.rows[0]["captions"]


def test_stage1_on_an_imagefolder_with_metadata(synthetic_dir, tmp_path, accelerator):
    folder = tmp_path / "images"
    folder.mkdir()
    with open(folder / "metadata.jsonl", "w") as handle:
        for row in _image_rows(synthetic_dir):
            name = row["relative_path"].split("/")[-1]
            shutil.copy(synthetic_dir / row["relative_path"], folder / name)
            handle.write(json.dumps({"file_name": name, "text": row["captions"][0]}) + "\n")
    args = parse_args(["--stage1_dataset", "imagefolder", "--stage1_data_dir", str(folder),
                       "--stage1_split", "train"])
    data = stage1_dataset(args, accelerator)
    assert isinstance(data, ImageCaptionDataset) and len(data) == SYNTHETIC_PARAMS["num_images"]
    captions = {row["captions"][0] for row in _image_rows(synthetic_dir)}
    item = data[(0, 2)]
    assert item["ok"] and item["frames"].shape == (1, 64, 64, 3) and item["caption"] in captions


def test_stage1_on_any_image_text_dataset_folder_with_list_captions(synthetic_dir, tmp_path, accelerator):
    rows = _image_rows(synthetic_dir)
    table = datasets.Dataset.from_dict(
        {"picture": [str(synthetic_dir / r["relative_path"]) for r in rows],
         "sentences": [r["captions"] for r in rows]},
        features=datasets.Features({"picture": datasets.Image(), "sentences": [datasets.Value("string")]}))
    folder = tmp_path / "hub_style"
    folder.mkdir()
    table.to_parquet(str(folder / "train.parquet"))
    args = parse_args(["--stage1_dataset", str(folder), "--stage1_split", "train",
                       "--stage1_image_column", "picture", "--stage1_caption_column", "sentences"])
    data = stage1_dataset(args, accelerator)
    assert len(data) == SYNTHETIC_PARAMS["num_images"]
    expected = np.asarray(Image.open(synthetic_dir / rows[1]["relative_path"]).convert("RGB"))
    item = data[(0, 1)]
    assert np.array_equal(item["frames"][0], expected) and item["caption"] in rows[1]["captions"]
    # the caption of a visit depends on (seed, epoch, index) only
    assert data[(3, 1)]["caption"] == data[(3, 1)]["caption"]
    assert len({data[(epoch, 1)]["caption"] for epoch in range(12)}) == 2


def test_stage1_names_a_missing_caption_column(synthetic_dir, tmp_path, accelerator):
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(synthetic_dir / _image_rows(synthetic_dir)[0]["relative_path"], folder / "a.png")
    (folder / "metadata.jsonl").write_text(json.dumps({"file_name": "a.png", "caption": "x"}) + "\n")
    args = parse_args(["--stage1_dataset", "imagefolder", "--stage1_data_dir", str(folder), "--stage1_split", "train"])
    with pytest.raises(ValueError, match="no column 'text'.*stage1_caption_column"):
        stage1_dataset(args, accelerator)


def test_missing_and_undecodable_videos_become_failure_records_that_the_collator_drops(synthetic_dir, tmp_path):
    from modeling_pig import PIGProcessor

    good = sorted((synthetic_dir / "videos" / "train").glob("*.mp4"))[0]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    rows = datasets.Dataset.from_dict({"video_id": ["good", "gone", "broken", "none"],
                                       "video": [str(good), str(tmp_path / "gone.mp4"), str(broken), None],
                                       "captions": [["a caption"], ["b"], ["c"], ["d"]]})
    data = VideoCaptionDataset(rows, num_frames=3, seed=0)
    items = [data[(0, i)] for i in range(4)]
    assert [item["ok"] for item in items] == [True, False, False, False]
    assert "gone.mp4" in items[1]["path"] and "file not found" in items[1]["error"]
    assert "broken.mp4" in items[2]["path"] and "VideoDecodeError" in items[2]["error"]
    assert items[3]["path"] is None and "row 3 (none) has no video file" in items[3]["error"]

    batch = TrainCollator(PIGProcessor(num_frames=3, image_size=32, max_length=8))(items)
    assert batch["num_failed"] == 3 and batch["failed"][2].startswith("none: VideoDecodeError: row 3")
    assert batch["pixel_values"].shape == (1, 3, 3, 32, 32) and batch["input_ids"].shape == (1, 8)
    empty = TrainCollator(PIGProcessor(num_frames=3, image_size=32, max_length=8))(items[1:])
    assert empty["num_failed"] == 3 and "pixel_values" not in empty


def test_image_records_decode_from_bytes_and_a_corrupt_image_is_a_failure_record():
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (5, 4), (200, 10, 30)).save(buffer, format="PNG")
    rows = datasets.Dataset.from_dict({"image": [{"bytes": buffer.getvalue(), "path": None},
                                                 {"bytes": b"not an image", "path": "bad.png"}],
                                       "text": ["a red picture", "noise"]})
    rows = rows.cast_column("image", datasets.Image())
    data = ImageCaptionDataset(rows, image_column="image", caption_column="text", seed=0)
    good, bad = data[(0, 0)], data[(0, 1)]
    assert good["ok"] and good["frames"].shape == (1, 4, 5, 3) and good["caption"] == "a red picture"
    assert good["frames"][0, 0, 0].tolist() == [200, 10, 30]
    assert not bad["ok"] and "UnidentifiedImageError" in bad["error"]


def test_epoch_sampler_visits_every_item_once_per_epoch_in_a_seeded_order():
    sampler = EpochSampler(10, seed=3)
    first = list(sampler)
    assert sorted(index for _, index in first) == list(range(10)) and {epoch for epoch, _ in first} == {0}
    assert list(sampler) == first
    sampler.epoch = 1
    second = list(sampler)
    assert {epoch for epoch, _ in second} == {1} and [i for _, i in second] != [i for _, i in first]
