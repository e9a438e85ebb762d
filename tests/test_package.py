"""The package surface: `import modeling_pig` registers the Auto classes and the pipeline, lazy names."""

import os
import subprocess
import sys
import textwrap

import torch
from helpers import build_model, random_inputs

FRESH = textwrap.dedent(
    """
    import sys
    import modeling_pig  # noqa: F401  (importing the package is all it takes, as for a transformers model)
    import numpy as np
    import torch
    from transformers import AutoConfig, AutoModel, AutoProcessor, pipeline

    folder = sys.argv[1]
    config = AutoConfig.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    assert type(config).__name__ == "PIGConfig" and type(model).__module__ == "modeling_pig.modeling_pig"
    assert type(processor).__name__ == "PIGProcessor" and processor.num_frames == 3
    saved = torch.load(sys.argv[2])
    with torch.no_grad():
        assert torch.equal(model(**saved["inputs"]).logits_per_text, saved["logits"])
    retriever = pipeline("video-text-retrieval", model=folder)
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    embedded = retriever(videos=[frames, frames[::-1]])  # (this tiny model's vocabulary is not CLIP's: no text)
    assert [e["video"] for e in embedded] == [0, 1] and len(embedded[0]["embedding"]) == 24, embedded
    print("OK")
    """
)


def test_auto_classes_load_a_saved_folder_without_remote_code(tmp_path):
    from modeling_pig import PIGProcessor

    model = build_model()
    folder = tmp_path / "pig"
    model.save_pretrained(folder)
    PIGProcessor(num_frames=3, image_size=32, max_length=7).save_pretrained(folder)
    inputs = random_inputs()
    with torch.no_grad():
        logits = model(**inputs).logits_per_text
    torch.save({"inputs": inputs, "logits": logits}, tmp_path / "reference.pt")
    (tmp_path / "run.py").write_text(FRESH)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(folder), str(tmp_path / "reference.pt")],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")


def test_unknown_name_is_a_clear_attribute_error():
    import modeling_pig

    try:
        modeling_pig.PIGModle  # noqa: B018
    except AttributeError as error:
        assert "PIGModle" in str(error)
    else:
        raise AssertionError("a misspelt name must raise AttributeError")
