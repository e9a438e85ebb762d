"""PIGProcessor (modeling_pig/processing_pig.py): tokenizer, frame preprocessing, save/load, DataLoader workers."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from helpers import write_video  # tests/ is on sys.path (no __init__.py: pytest's default import mode)
from transformers import AutoProcessor

from modeling_pig import PIGProcessor, PIGVideoProcessor
from modeling_pig.processing_pig import CLIP_MEAN, CLIP_STD
from modeling_pig.tokenizer_files import MERGES_FILE, VOCAB_FILE
from modeling_pig.tokenizer_files.derive import vocabulary_file_texts
from modeling_pig.video_io import decode_all_frames, read_video_frames

CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]
START, END = 49406, 49407


@pytest.fixture(scope="module")
def processor():
    return PIGProcessor()


@pytest.fixture(scope="module")
def small_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("processor")
    return [write_video(folder / f"v{i}.mp4", num_frames=20 + 7 * i, size=(48 + 16 * i, 32)) for i in range(4)]


def _normalise(pixels01):
    """[..., 3, H, W] in [0, 1] -> CLIP-normalised."""
    return (pixels01 - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)


# --------------------------------------------------------------------------------------------------------------
# tokenizer


def test_default_processor_is_offline_real_clip_with_the_authors_defaults(processor):
    assert processor.tokenizer("a photo of a cat")["input_ids"] == CAT_IDS
    assert len(processor.tokenizer) == 49408
    assert (processor.num_frames, processor.image_size, processor.max_length, processor.resize_mode) == (
        12, 224, 50, "squash")


def test_shipped_vocabulary_files_are_what_the_gz_derives(shared_data):
    texts = vocabulary_file_texts(shared_data / "clip" / "bpe_simple_vocab_16e6.txt.gz")
    assert VOCAB_FILE.read_text(encoding="utf-8") == texts["vocab.json"]
    assert MERGES_FILE.read_text(encoding="utf-8") == texts["merges.txt"]
    assert texts["merges.txt"].count("\n") == 48894 + 1  # header + one line per merge


def test_captions_are_padded_and_truncated_to_max_length(processor):
    out = processor(text=["a photo of a cat", "word " * 80])
    assert out["input_ids"].shape == (2, 50) and out["input_ids"].dtype == torch.int64
    assert out["input_ids"][0, :7].tolist() == CAT_IDS and (out["input_ids"][0, 7:] == END).all()
    assert out["attention_mask"][0].tolist() == [1] * 7 + [0] * 43
    assert out["input_ids"][1, 0] == START and out["input_ids"][1, -1] == END  # truncated, end token kept
    assert out["attention_mask"][1].all()


def test_tokenizer_arguments_are_accepted_per_call(processor):
    longest = processor(text=["a photo of a cat", "a cat"], padding=True)
    assert longest["input_ids"].shape == (2, 7) and longest["input_ids"][0].tolist() == CAT_IDS
    assert longest["attention_mask"][1].tolist() == [1] * 4 + [0] * 3
    assert processor(text="word " * 80, max_length=10)["input_ids"].shape == (1, 10)
    assert processor(text="word " * 80, truncation=False, padding=False)["input_ids"].shape == (1, 82)
    lists = processor(text=["a photo of a cat"], padding=False, return_tensors=None)
    assert lists["input_ids"] == [CAT_IDS] and lists["attention_mask"] == [[1] * 7]
    assert isinstance(processor(text="a cat", return_tensors="np")["input_ids"], np.ndarray)


def test_processor_exposes_its_tokenizer_and_video_processor(processor, small_videos):
    assert processor.tokenizer("a photo of a cat")["input_ids"] == CAT_IDS
    assert isinstance(processor.video_processor, PIGVideoProcessor)
    assert processor.image_processor is processor.video_processor  # the name CLIPProcessor users reach for
    alone = PIGVideoProcessor(num_frames=4, image_size=32)
    assert alone(videos=small_videos[0])["pixel_values"].shape == (1, 4, 3, 32, 32)
    settings = PIGProcessor(num_frames=4, image_size=32)
    settings.num_frames = 6  # the processor's settings are the video processor's
    assert settings.video_processor.num_frames == 6 and settings.to_dict()["num_frames"] == 6


def test_decoded_frames_are_sampled_exactly_like_the_file(small_videos):
    processor = PIGProcessor(num_frames=5, image_size=32)
    path = small_videos[0]  # 20 frames
    frames = decode_all_frames(path)
    assert frames.shape[0] == 20
    from_file = processor(videos=path)["pixel_values"]
    for decoded in (frames, torch.from_numpy(frames)):
        torch.testing.assert_close(processor(videos=decoded)["pixel_values"], from_file, rtol=0, atol=0)
    seeded = lambda: dict(mode="train", generator=torch.Generator().manual_seed(3))  # noqa: E731
    torch.testing.assert_close(processor(videos=frames, **seeded())["pixel_values"],
                               processor(videos=path, **seeded())["pixel_values"], rtol=0, atol=0)
    thirty = np.repeat(frames[:1], 30, axis=0)
    assert processor(videos=thirty)["pixel_values"].shape == (1, 5, 3, 32, 32)
    assert processor(videos=[thirty, frames[:3]], num_frames=8)["pixel_values"].shape == (2, 8, 3, 32, 32)


def test_sampling_settings_are_accepted_per_call(small_videos):
    processor = PIGProcessor(num_frames=4, image_size=32)
    eight = processor(videos=small_videos[1], num_frames=8)["pixel_values"]
    assert eight.shape == (1, 8, 3, 32, 32)
    torch.testing.assert_close(eight[0], processor.preprocess_frames(read_video_frames(small_videos[1], 8)))
    assert processor.num_frames == 4  # a per-call setting does not stick
    assert isinstance(processor(videos=small_videos[1], return_tensors=None)["pixel_values"], np.ndarray)


@pytest.mark.parametrize("text", ["", "   ", ["a dog", " \n\t"], [""]])
def test_empty_captions_raise_a_clear_error(processor, text):
    with pytest.raises(ValueError, match="empty or whitespace"):
        processor(text=text)


# --------------------------------------------------------------------------------------------------------------
# frames


def _bicubic_reference(image, size):
    """Independent separable bicubic (Keys a=-0.75, half-pixel centres, edge clamp, no antialias) in numpy.

    image: float64 [C, H, W] -> [C, size, size].
    """
    def weights(in_len):
        matrix = np.zeros((size, in_len))
        for o in range(size):
            x = (o + 0.5) * in_len / size - 0.5
            i0 = int(np.floor(x))
            t = x - i0
            for k in range(-1, 3):
                d = abs(k - t)
                a = -0.75
                w = ((a + 2) * d - (a + 3)) * d * d + 1 if d <= 1 else ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
                matrix[o, min(max(i0 + k, 0), in_len - 1)] += w
        return matrix
    rows, cols = weights(image.shape[1]), weights(image.shape[2])
    return np.einsum("oh,chw,pw->cop", rows, image, cols)


def test_squash_is_the_authors_bicubic_resize_of_the_whole_frame():
    processor = PIGProcessor(image_size=24)
    frames = np.random.default_rng(0).integers(0, 256, (2, 30, 50, 3), dtype=np.uint8)  # 5:3, squashed to 1:1
    out = processor.preprocess_frames(frames)
    assert out.shape == (2, 3, 24, 24) and out.dtype == torch.float32
    expected = torch.from_numpy(_bicubic_reference(frames[1].transpose(2, 0, 1) / 255.0, 24)).float()
    torch.testing.assert_close(out[1], _normalise(expected), atol=2e-5, rtol=0)


def test_center_crop_matches_openai_clip_preprocessing(shared_data):
    folder = shared_data / "clip"
    expected = np.load(folder / "expected_preprocessed_image.npy")  # [1, 3, 224, 224]
    out = PIGProcessor(resize_mode="center_crop")(images=str(folder / "franz-kafka.jpg"))["pixel_values"]
    assert out.shape == (1, 1, 3, 224, 224)
    assert np.abs(out[0, 0].numpy() - expected[0]).max() < 1e-4


def test_a_constant_frame_keeps_its_colour_in_both_modes():
    frames = np.full((1, 40, 70, 3), (10, 128, 250), np.uint8)
    expected = _normalise(torch.tensor([10, 128, 250]).view(3, 1, 1) / 255.0).expand(3, 16, 16)
    for mode in ("squash", "center_crop"):
        torch.testing.assert_close(PIGProcessor(image_size=16, resize_mode=mode).preprocess_frames(frames)[0],
                                   expected, atol=1e-5, rtol=0)


def test_videos_from_paths_and_frame_arrays(processor, small_videos):
    frames = read_video_frames(small_videos[1], 12)
    out = processor(text="a clip", videos=[small_videos[0], frames])
    assert out["pixel_values"].shape == (2, 12, 3, 224, 224) and out["pixel_values"].dtype == torch.float32
    torch.testing.assert_close(out["pixel_values"][0], processor.load_video(small_videos[0]))
    torch.testing.assert_close(out["pixel_values"][1], processor.preprocess_frames(frames))
    assert out["input_ids"].shape == (1, 50)


def test_train_mode_and_clips_pass_through_to_the_decoder(small_videos):
    processor = PIGProcessor(num_frames=4, image_size=32)
    first = processor.load_video(small_videos[3], mode="train", generator=torch.Generator().manual_seed(5))
    again = processor.load_video(small_videos[3], mode="train", generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(first, again)
    clip = processor(videos=[small_videos[3]], starts=[0.4], ends=[0.8])["pixel_values"][0]
    torch.testing.assert_close(clip, processor.preprocess_frames(read_video_frames(small_videos[3], 4, start=0.4, end=0.8)))


def test_images_become_one_frame_videos(tmp_path):
    processor = PIGProcessor(image_size=32)
    pixels = np.random.default_rng(1).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    grey = Image.fromarray(pixels[..., 0], mode="L")  # converted to RGB by repeating the channel
    out = processor(text=["an image", "another"], images=[Image.fromarray(pixels), tmp_path / "image.png", grey])
    assert out["pixel_values"].shape == (3, 1, 3, 32, 32)
    expected = processor.preprocess_frames(pixels[None])  # [1, 3, 32, 32]
    torch.testing.assert_close(out["pixel_values"][0], expected)
    torch.testing.assert_close(out["pixel_values"][1], expected)  # png is lossless: the same pixels
    torch.testing.assert_close(out["pixel_values"][2], processor.preprocess_frames(np.repeat(pixels[None, ..., :1], 3, -1)))
    assert out["input_ids"].shape == (2, 50)


def test_real_videos_give_clip_normalised_pixels_in_range(processor, shared_videos):
    path = min(shared_videos, key=lambda p: p.stat().st_size)
    out = processor(videos=[path, str(path)])["pixel_values"]
    assert out.shape == (2, 12, 3, 224, 224) and out.dtype == torch.float32
    torch.testing.assert_close(out[0], processor.preprocess_frames(read_video_frames(path, 12)))
    assert torch.equal(out[0], out[1])  # test-mode sampling is deterministic, str and Path alike
    pixels01 = out[0] * torch.tensor(CLIP_STD).view(3, 1, 1) + torch.tensor(CLIP_MEAN).view(3, 1, 1)
    # bicubic without clamping may overshoot [0, 1] a little at sharp edges, never far (2-D Keys kernel bound)
    assert pixels01.min() > -0.45 and pixels01.max() < 1.45
    assert ((pixels01 >= -0.02) & (pixels01 <= 1.02)).float().mean() > 0.999
    frames = read_video_frames(path, 12)
    assert abs(pixels01.mean().item() - frames.mean() / 255) < 0.01  # resizing keeps the mean brightness


def test_a_video_shorter_than_num_frames_repeats_frames(tmp_path):
    path = write_video(tmp_path / "three.mp4", num_frames=3)
    processor = PIGProcessor(num_frames=12, image_size=16)
    clip = processor(videos=path)["pixel_values"][0]  # [12, 3, 16, 16]
    rows = [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 2]  # sample_frame_indices(3, 12)
    distinct = processor.preprocess_frames(read_video_frames(path, 3))  # frames 0, 1, 2
    torch.testing.assert_close(clip, distinct[rows])
    assert not torch.allclose(distinct[0], distinct[1]) and not torch.allclose(distinct[1], distinct[2])


def test_bad_inputs_raise_clear_errors(processor, small_videos, tmp_path):
    frames = read_video_frames(small_videos[0], 12)
    with pytest.raises(ValueError, match="not both"):
        processor(videos=[frames], images=[Image.new("RGB", (8, 8))])
    with pytest.raises(TypeError, match="paddding"):  # a misspelt tokenizer argument is named
        processor(text="x", paddding=True)
    with pytest.raises(ValueError, match="num_frames"):
        processor(videos=[frames], num_frames=0)
    with pytest.raises(ValueError, match="uint8"):
        processor.preprocess_frames(frames.astype(np.float32))
    with pytest.raises(ValueError, match="entries for"):
        processor(videos=[small_videos[0]], starts=[0.0, 1.0])
    with pytest.raises(ValueError, match="return_tensors"):
        processor(text="x", return_tensors="tf")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg"):
        processor(images=[tmp_path / "broken.jpg"])
    with pytest.raises(ValueError, match="resize_mode"):
        PIGProcessor(resize_mode="pad")


# --------------------------------------------------------------------------------------------------------------
# save / load, AutoProcessor, workers


def test_save_and_load_round_trip_keeps_settings_and_outputs(tmp_path, small_videos):
    processor = PIGProcessor(num_frames=4, image_size=32, max_length=16, resize_mode="center_crop")
    processor.save_pretrained(tmp_path)
    assert {"processor_config.json", "tokenizer.json", "tokenizer_config.json"} <= set(os.listdir(tmp_path))
    reference = processor(text=["a photo of a cat"], videos=[small_videos[2]])
    for loaded in (PIGProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is PIGProcessor
        assert (loaded.num_frames, loaded.image_size, loaded.max_length, loaded.resize_mode) == (
            4, 32, 16, "center_crop")
        out = loaded(text=["a photo of a cat"], videos=[small_videos[2]])
        assert torch.equal(out["input_ids"], reference["input_ids"])
        torch.testing.assert_close(out["pixel_values"], reference["pixel_values"])
    assert PIGProcessor.from_pretrained(tmp_path, num_frames=8).num_frames == 8  # keyword overrides
    tokenizer_config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert not {"is_local", "local_files_only"} & set(tokenizer_config)  # how this machine loaded it: not saved
    assert "video_processor" not in json.loads((tmp_path / "processor_config.json").read_text())


@pytest.fixture(scope="module", autouse=True)
def remote_code_process(tmp_path_factory):
    """A fresh Python loading a saved PIGProcessor by AutoProcessor with remote code, without this package.

    Started when the module's first test starts, so that its interpreter start and imports (~10 s) overlap the
    other tests; the test that checks it waits for it.
    """
    folder = tmp_path_factory.mktemp("remote_code")
    PIGProcessor(num_frames=5, max_length=20).save_pretrained(folder)
    code = (
        "import sys; from transformers import AutoProcessor\n"
        f"p = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)\n"
        "assert not any(m.startswith('modeling_pig') for m in sys.modules), 'modeling_pig was imported'\n"
        "print(type(p).__name__, p.num_frames, p(text='a photo of a cat')['input_ids'][0, :7].tolist())\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=folder)
    yield process
    if process.poll() is None:  # the checking test was deselected or failed early
        process.kill()
        process.communicate()


def test_auto_processor_with_trust_remote_code_in_a_fresh_process(remote_code_process):
    stdout, stderr = remote_code_process.communicate(timeout=300)
    assert remote_code_process.returncode == 0, stderr[-2000:]
    assert stdout.strip() == f"PIGProcessor 5 {CAT_IDS}"


class _VideoDataset(torch.utils.data.Dataset):
    def __init__(self, processor, paths):
        self.processor, self.paths = processor, paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        return self.processor.load_video(self.paths[index])


def test_decoding_in_dataloader_workers(small_videos):
    processor = PIGProcessor(num_frames=3, image_size=16)
    clone = pickle.loads(pickle.dumps(processor))  # workers may receive it pickled (spawn start method)
    assert clone.tokenizer("a photo of a cat")["input_ids"] == CAT_IDS
    loader = torch.utils.data.DataLoader(_VideoDataset(processor, small_videos), batch_size=2, num_workers=2)
    batches = list(loader)
    assert [b.shape for b in batches] == [(2, 3, 3, 16, 16)] * 2
    expected = torch.stack([processor.load_video(p) for p in small_videos])
    torch.testing.assert_close(torch.cat(batches), expected)
