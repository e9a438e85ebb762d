"""The package surface: `import modeling_pig` registers the Auto classes and the pipeline, lazy names."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from helpers import build_model, random_inputs

HEAVY = ("transformers.models", "transformers.modeling_utils", "transformers.processing_utils", "transformers.pipelines",
         "modeling_pig.modeling_pig", "modeling_pig.processing_pig", "modeling_pig.pipeline_pig")

FRESH = textwrap.dedent(
    """
    import sys
    if sys.argv[3] == "transformers-first":  # transformers' auto and pipeline modules already imported
        import transformers.pipelines
        from transformers import AutoProcessor
    import modeling_pig  # noqa: F401  (importing the package is all it takes, as for a transformers model)
    if sys.argv[3] == "package-first":  # the registration imported none of the modelling or pipeline code
        heavy = [name for name in HEAVY if name in sys.modules]
        assert not heavy, heavy
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
    # once the real classes exist, transformers' mappings hold them (not the stand-ins of auto_registration)
    from modeling_pig import PIGConfig, PIGModel, PIGProcessor, PIGRetrievalPipeline
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
    from transformers.pipelines import PIPELINE_REGISTRY
    assert AutoModel._model_mapping[PIGConfig] is PIGModel, AutoModel._model_mapping[PIGConfig]
    assert PROCESSOR_MAPPING[PIGConfig] is PIGProcessor, PROCESSOR_MAPPING[PIGConfig]
    assert PIPELINE_REGISTRY.supported_tasks["video-text-retrieval"]["impl"] is PIGRetrievalPipeline
    print("OK")
    """
).replace("HEAVY", repr(HEAVY))


@pytest.mark.parametrize("order", ["package-first", "transformers-first"])
def test_auto_classes_load_a_saved_folder_without_remote_code(tmp_path, order):
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
    result = subprocess.run([sys.executable, str(tmp_path / "run.py"), str(folder), str(tmp_path / "reference.pt"), order],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("OK")
    assert "Overwriting" not in result.stderr, result.stderr  # the real pipeline replaced the stand-in quietly


def test_transformers_configuration_modules_do_not_import_processing_auto_or_pipelines():
    """What makes the processing_auto hook of auto_registration safe: it imports PIGConfig, which needs transformers'
    configuration modules complete; they would not be if one of them imported processing_auto or the pipelines."""
    code = ("import sys, huggingface_hub.dataclasses, transformers.configuration_utils, "
            "transformers.models.auto.configuration_auto, transformers.models.clip.configuration_clip\n"
            "print([m for m in ('transformers.models.auto.processing_auto', 'transformers.pipelines') "
            "if m in sys.modules])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_lazy_registration_names_the_same_task_and_classes_as_the_modules():
    from modeling_pig import auto_registration, pipeline_pig, processing_pig
    from modeling_pig import modeling_pig as modeling

    assert auto_registration.PIPELINE_TASK == pipeline_pig.TASK
    from modeling_pig import configuration_pig

    for module, name in (auto_registration._CONFIG, auto_registration._MODEL, auto_registration._PROCESSOR,
                         auto_registration._PIPELINE):
        real = getattr({"modeling_pig.modeling_pig": modeling, "modeling_pig.processing_pig": processing_pig,
                        "modeling_pig.pipeline_pig": pipeline_pig,
                        "modeling_pig.configuration_pig": configuration_pig}[module], name)
        stand_in = auto_registration.lazy_class(module, name)
        assert stand_in.__name__ == real.__name__ and stand_in.__module__ == real.__module__
        assert stand_in._pig_resolve() is real
        if hasattr(real, "from_pretrained"):  # attributes come from the real class
            assert stand_in.from_pretrained == real.from_pretrained


def test_unknown_name_is_a_clear_attribute_error():
    import modeling_pig

    try:
        modeling_pig.PIGModle  # noqa: B018
    except AttributeError as error:
        assert "PIGModle" in str(error)
    else:
        raise AssertionError("a misspelt name must raise AttributeError")
