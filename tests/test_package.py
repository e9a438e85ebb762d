"""The package surface: lazy imports, Auto registration without remote code, the console script."""

import os
import subprocess
import sys
import textwrap

import torch
from helpers import build_model, random_inputs

FRESH = textwrap.dedent(
    """
    import sys
    import modeling_pig
    # importing the package alone stays light: no model code, no torch
    assert "modeling_pig.modeling_pig" not in sys.modules and "torch" not in sys.modules, sorted(sys.modules)
    from modeling_pig import PIGConfig  # registers config, model and processor together
    import torch
    from transformers import AutoConfig, AutoModel, AutoProcessor

    folder = sys.argv[1]
    config = AutoConfig.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    assert type(config).__name__ == "PIGConfig" and type(model).__module__ == "modeling_pig.modeling_pig"
    assert type(processor).__name__ == "PIGProcessor" and processor.num_frames == 3
    saved = torch.load(sys.argv[2])
    with torch.no_grad():
        assert torch.equal(model(**saved["inputs"]).logits_per_text, saved["logits"])
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
