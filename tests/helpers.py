"""Helpers shared by several test files (import them from here, never from another test module).

- models: `build_model`, `random_inputs`, `vip_input_states` (tiny PIGModel from conftest's `tiny_pig_config`),
  `tiny_pig` (model + processor with the real CLIP tokenizer); conftest runs every test on one torch thread;
- retrieval stand-ins: `FakeModel`, `FakeProcessor` (the PIGModel / PIGProcessor interface, tiny and fast);
- videos: `write_video` (a small synthetic video in any codec/container PyAV writes), `encode_silence`;
- the `pig` command: `pig` (in this process through `main`), `pig_command` (the installed console script);
  `write_colour_video` and `COLOURS` (small H.264 files of a plain colour), `make_library` (model, videos, index);
- training: `run_train` (train.py's main with a fresh accelerate state), `tiny_argv` (argv on conftest's
  `synthetic_benchmark`).
"""

import fractions
import sys
import types
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import IMAGE_SIZE, NUM_FRAMES, SYNTHETIC_ARGS, tiny_pig_config

from modeling_pig import PIGModel
from modeling_pig.video_io import read_video_frames

# ------------------------------------------------------------------------------------------------------ models


def build_model(seed: int = 0, **overrides) -> PIGModel:
    torch.manual_seed(seed)
    return PIGModel(tiny_pig_config(**overrides)).eval()


def random_inputs(n_text: int = 2, n_video: int = 2, num_frames: int = NUM_FRAMES, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, 97, (n_text, 7), generator=generator)
    input_ids[:, 0], input_ids[:, -1] = 97, 98  # bos ... eos (eos pooling)
    pixel_values = torch.randn(n_video, num_frames, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "pixel_values": pixel_values}


def vip_input_states(model: PIGModel, pixel_values: torch.Tensor) -> torch.Tensor:
    """The ViP sequence entering the first vision layer (after CLIP's pre-LN)."""
    vision = model.clip.vision_model
    return vision.pre_layrnorm(model.vip(pixel_values, vision.embeddings))



def tiny_pig(seed: int = 0):
    """A tiny random PIGModel + PIGProcessor (4 frames of 32 px; the real CLIP tokenizer, so the tiny text
    tower gets CLIP's vocabulary size and special ids)."""
    from modeling_pig import PIGModel, PIGProcessor

    torch.manual_seed(seed)
    model = PIGModel(tiny_pig_config(real_vocabulary=True, num_frames=4, its_top_k=4)).eval()
    return model, PIGProcessor(num_frames=4, image_size=32)


# ------------------------------------------------------------------------------------------ retrieval stand-ins
# video embedding = a fixed random projection of per-channel frame statistics, text embedding = bag of bytes.


class FakeProcessor:
    """`num_frames`, `load_video`, `__call__(text=..., videos=[uint8 [T, H, W, 3]])` like PIGProcessor, 8x8 frames."""

    def __init__(self, num_frames=2):
        self.num_frames = num_frames

    def to_dict(self):
        return {"num_frames": self.num_frames, "size": 8}

    def load_video(self, path, mode="test", start=None, end=None):
        frames = read_video_frames(path, num_frames=self.num_frames, mode=mode, start=start, end=end)
        return self(videos=[frames])["pixel_values"][0]  # [T, 3, 8, 8]

    def __call__(self, text=None, videos=None, return_tensors="pt"):
        out = {}
        if text is not None:
            ids = torch.zeros(len(text), 16, dtype=torch.long)
            mask = torch.zeros(len(text), 16, dtype=torch.long)
            for i, t in enumerate(text):
                codes = list(t.encode())[:16]
                ids[i, :len(codes)] = torch.tensor(codes)
                mask[i, :len(codes)] = 1
            out.update(input_ids=ids, attention_mask=mask)
        if videos is not None:
            stacked = []
            for frames in videos:
                assert frames.dtype == np.uint8 and frames.shape[0] == self.num_frames
                h, w = frames.shape[1:3]
                rows = np.linspace(0, h - 1, 8).astype(int)
                cols = np.linspace(0, w - 1, 8).astype(int)
                small = frames[:, rows][:, :, cols]  # [T, 8, 8, 3]
                stacked.append(torch.from_numpy(small).permute(0, 3, 1, 2).float() / 255.0)  # [T, 3, 8, 8]
            out["pixel_values"] = torch.stack(stacked)
        return out


class FakeModel(torch.nn.Module):
    def __init__(self, dim=8, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.video_proj = torch.nn.Parameter(torch.randn(3 * 8 * 8, dim, generator=generator))
        self.token_emb = torch.nn.Parameter(torch.randn(256, dim, generator=generator))
        self.video_calls = 0

    def get_video_features(self, pixel_values):
        self.video_calls += 1
        pooled = pixel_values.mean(dim=1).flatten(1)  # [B, 3*8*8]
        return types.SimpleNamespace(pooler_output=(pooled - pooled.mean(dim=1, keepdim=True)) @ self.video_proj)

    def get_text_features(self, input_ids, attention_mask):
        emb = self.token_emb[input_ids] * attention_mask[..., None]  # [B, L, D]
        return types.SimpleNamespace(pooler_output=emb.sum(dim=1))


# ------------------------------------------------------------------------------------------------------ videos


def write_video(path, num_frames=24, size=(64, 48), fps=25, codec="libx264", container_format=None, audio=False,
                gop=None, codec_options=None, container_options=None, frame_pts_ms=None):
    """Write a small synthetic video with PyAV; frame i has its own colour and a bar whose width grows with i.

    `frame_pts_ms` gives per-frame timestamps in milliseconds (variable frame rate).
    """
    width, height = size
    with av.open(str(path), "w", format=container_format, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        options = dict(codec_options or {})
        if codec == "libx265":
            options.setdefault("x265-params", "log-level=error")
        stream.options = options
        if gop:
            stream.codec_context.gop_size = gop
        if frame_pts_ms is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        audio_stream = container.add_stream("aac", rate=16000) if audio else None
        for i in range(num_frames):
            image = np.zeros((height, width, 3), np.uint8)
            image[..., 0] = (i * 37) % 256
            image[:, : (i * 3) % width + 1, 1] = 220
            image[..., 2] = (np.arange(width)[None, :] * 4) % 256
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            if frame_pts_ms is not None:
                frame.pts, frame.time_base = frame_pts_ms[i], fractions.Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            encode_silence(container, audio_stream)
    return Path(path)


def encode_silence(container, audio_stream, num_blocks=5):
    for j in range(num_blocks):
        block = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        block.sample_rate, block.pts = 16000, j * 1024
        for packet in audio_stream.encode(block):
            container.mux(packet)
    for packet in audio_stream.encode():
        container.mux(packet)


# ---------------------------------------------------------------------------------------------------- training


def run_train(argv):
    """training/train.py's main() with a fresh accelerate state (several runs share this process)."""
    from accelerate.state import AcceleratorState, GradientState

    from training.train import main

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return main(argv)


def tiny_argv(output_dir, data_dir, *extra):
    return ["--output_dir", str(output_dir), "--data_dir", str(data_dir), *SYNTHETIC_ARGS,
            "--train_batch_size", "4", "--stage1_train_batch_size", "4", "--eval_batch_size", "4",
            "--logging_steps", "1", *extra]


class Interrupted(Exception):
    """Raised by `interrupt_after_checkpoint` to stop a run the way a crash would."""


def interrupt_after_checkpoint(monkeypatch, stage, step):
    """Make the next run stop (raise Interrupted) right after it saved the checkpoint of `stage` at `step`."""
    import training.train as train_module

    real_save = train_module.save_checkpoint

    def save_then_stop(accelerator, state, directory, limit, *args):
        path = real_save(accelerator, state, directory, limit, *args)
        if state.stage == stage and state.step == step:
            raise Interrupted
        return path

    monkeypatch.setattr(train_module, "save_checkpoint", save_then_stop)


# ------------------------------------------------------------------------------------------- the pig command


def pig_command() -> list[str]:
    script = Path(sys.executable).with_name("pig")
    return [str(script)] if script.exists() else [sys.executable, "-m", "modeling_pig.cli"]


def pig(capsys, *args):
    """`pig ARGS` in this process through `main`: (exit status, stdout, stderr)."""
    capsys.readouterr()
    from modeling_pig.cli import main

    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


COLOURS = {"red.mp4": (220, 30, 30), "nested/blue.mp4": (30, 40, 220), "green.mp4": (30, 200, 60),
           "swap.mp4": (200, 200, 40)}


def write_colour_video(path: Path, colour, num_frames: int = 12, size=(64, 48)) -> Path:
    """A small H.264 file: a plain colour with a white bar that moves (browsers play it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(num_frames):
            image = np.empty((height, width, 3), np.uint8)
            image[:] = colour
            image[:, (4 * i) % width: (4 * i) % width + 6] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def make_library(root: Path) -> Path:
    """`root/model` (`tiny_pig`), `root/videos` (the videos of COLOURS and a broken one) and `root/index`, built
    by `pig index` in this process. Returns root."""
    from modeling_pig.cli import main

    model, processor = tiny_pig()
    model.save_pretrained(root / "model")
    processor.save_pretrained(root / "model")
    for name, colour in COLOURS.items():
        write_colour_video(root / "videos" / name, colour)
    (root / "videos" / "broken.mp4").write_bytes(b"\x00" * 4096)
    assert main(["index", str(root / "videos"), "--model", str(root / "model"), "--out", str(root / "index"),
                 "--recursive", "--num_workers", "0", "--device", "cpu"]) == 0
    return root
