"""The README's quick start runs as written, with a tiny CLIP checkpoint saved locally in place of the Hub id.

Only two substitutions are made: the Hub id becomes a local CLIP folder (no network here) and the two video names
become real mp4 files. Everything else (the processor's defaults: real tokenizer, 12 frames, 224 px) is the
README's code, so editing the README into something that does not run fails this test.
"""

import re
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from conftest import tiny_clip_config_dict
from transformers import CLIPConfig, CLIPModel

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_block(heading: str) -> str:
    """The first ```python block after `heading` in the README."""
    text = README.read_text()
    start = text.index(heading)
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert match, f"no python block after {heading!r}"
    return match.group(1)


def write_mp4(path: Path, num_frames: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(num_frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.fixture
def tiny_224_clip(tmp_path):
    """A random CLIP with the real tokenizer's vocabulary and 224 px input (what PIGProcessor() produces)."""
    torch.manual_seed(0)
    config = CLIPConfig(**tiny_clip_config_dict(real_vocabulary=True, vision_config=dict(image_size=224, patch_size=56)))
    folder = tmp_path / "clip"
    CLIPModel(config).save_pretrained(folder)
    return folder


def test_readme_quick_start_runs_as_written(tmp_path, tiny_224_clip, monkeypatch):
    code = readme_block("## Quick start: the model")
    assert '"openai/clip-vit-base-patch32"' in code and '"a.mp4", "b.mp4"' in code
    write_mp4(tmp_path / "a.mp4", 20, seed=1)
    write_mp4(tmp_path / "b.mp4", 8, seed=2)
    monkeypatch.chdir(tmp_path)  # the README names the videos relative to the working folder
    code = code.replace('"openai/clip-vit-base-patch32"', repr(str(tiny_224_clip)))
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)

    scores, inputs, out = namespace["scores"], namespace["inputs"], namespace["out"]
    assert inputs["pixel_values"].shape == (2, 12, 3, 224, 224)
    assert inputs["input_ids"][0, 0] == 49406  # the real CLIP tokenizer's bos
    assert out.logits_per_text.shape == (2, 2) and torch.isfinite(out.loss)
    assert scores.shape == (2, 2)
    # the README's scores are the model's own similarity, up to the logit scale
    scale = namespace["model"].clip.logit_scale.exp()
    with torch.no_grad():
        logits = namespace["model"](**inputs).logits_per_text
    torch.testing.assert_close(scores * scale, logits, rtol=1e-4, atol=1e-4)


def test_readme_transformers_conventions_run_as_written(tmp_path, tiny_224_clip, monkeypatch):
    quick_start = readme_block("## Quick start: the model").replace('"openai/clip-vit-base-patch32"',
                                                                   repr(str(tiny_224_clip)))
    code = readme_block("### Like any transformers model")
    assert "import modeling_pig" in code and 'pipeline("video-text-retrieval"' in code
    write_mp4(tmp_path / "a.mp4", 20, seed=1)
    write_mp4(tmp_path / "b.mp4", 8, seed=2)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(quick_start, str(README), "exec"), namespace)
    exec(compile(code, str(README), "exec"), namespace)

    assert type(namespace["model"]).__name__ == "PIGModel" and (tmp_path / "pig-demo" / "README.md").is_file()
    assert namespace["inputs"]["input_ids"].shape == (2, 7)  # padding=True: to the longest caption
    hidden = namespace["out"].video_model_output.hidden_states
    assert len(hidden) == 1 + 2 and hidden[0].shape == (2, 4 + 12 * 17, 48)  # tiny: 16 patches, 48 wide
    ranked = namespace["retriever"](text="a man plays a guitar", videos=["a.mp4", "b.mp4"])
    assert sorted(r["video"] for r in ranked) == ["a.mp4", "b.mp4"]
