"""PIGModel persistence: from_clip, safetensors save/load, AutoModel in-process and as remote code in a fresh
process."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import NUM_FRAMES, TOP_K, tiny_clip_config_dict
from helpers import build_model, random_inputs
from transformers import AutoConfig, AutoModel, CLIPConfig, CLIPModel

from modeling_pig import PIGConfig, PIGModel

VARIANTS = {
    "pig": {},
    "pig-fixed-bos-eos-no-projection": dict(
        clip_config=tiny_clip_config_dict(projection_dim=32), learnable_bos_eos=False,
        generator_output_projection=False,
    ),
    "clip-vip": dict(use_pseudo_query=False),
    "meanp": dict(use_pseudo_query=False, video_tower="meanp"),
}


@pytest.fixture
def clip_dir(tmp_path):
    """A tiny random CLIPModel saved with save_pretrained, as openai's (logit scale ln 100)."""
    torch.manual_seed(3)
    clip = CLIPModel(CLIPConfig(**tiny_clip_config_dict())).eval()
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(100.0))
    clip.save_pretrained(tmp_path / "clip")
    return tmp_path / "clip", clip


def outputs_of(model, inputs):
    with torch.no_grad():
        out = model(**inputs)
        video = model.get_video_features(inputs["pixel_values"]).pooler_output
    return out.logits_per_text, out.text_embeds, video


# -------------------------------------------------------------------------------------------------- from_clip


def test_from_clip_loads_both_towers_and_copies_clip_into_the_new_modules(clip_dir):
    path, clip = clip_dir
    model = PIGModel.from_clip(path, num_frames=NUM_FRAMES, its_top_k=TOP_K).eval()

    inputs = random_inputs(n_text=3)
    with torch.no_grad():
        ours = model.get_text_features(inputs["input_ids"], inputs["attention_mask"]).pooler_output
        theirs = clip.get_text_features(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    torch.testing.assert_close(ours, theirs.pooler_output, rtol=0, atol=0)

    clip_params = dict(clip.named_parameters())
    for name, param in model.clip.named_parameters():
        if name != "logit_scale":
            torch.testing.assert_close(param, clip_params[name], rtol=0, atol=0, msg=name)
    assert model.clip.logit_scale.item() == pytest.approx(4.60)  # reset from CLIP's ln 100 (§2.2)

    generator, text = model.generator, clip.text_model
    copies = [(generator.encoder, text.encoder), (generator.final_layer_norm, text.final_layer_norm),
              (generator.position_embedding, text.embeddings.position_embedding),
              (generator.text_projection, clip.text_projection)]
    for copy, source in copies:
        source_params = dict(source.named_parameters())
        for name, param in copy.named_parameters():
            torch.testing.assert_close(param, source_params[name], rtol=0, atol=0, msg=name)
            assert param.data_ptr() != source_params[name].data_ptr()  # a copy, not shared storage
    token_table = text.embeddings.token_embedding.weight
    torch.testing.assert_close(generator.bos_embedding, token_table[97], rtol=0, atol=0)
    torch.testing.assert_close(generator.eos_embedding, token_table[98], rtol=0, atol=0)
    torch.testing.assert_close(model.vip.frame_cls, clip.vision_model.embeddings.class_embedding, rtol=0, atol=0)

    # the special inits of the modules CLIP does not have
    torch.testing.assert_close(model.interaction.q_proj.weight, torch.eye(24), rtol=0, atol=0)
    assert torch.count_nonzero(model.vip.temporal_embedding) == 0
    assert 0.7 < model.vip.proxy_tokens.std().item() < 1.3


def test_from_clip_meanp_on_one_frame_is_clip_image_retrieval(clip_dir):
    path, clip = clip_dir
    model = PIGModel.from_clip(path, use_pseudo_query=False, video_tower="meanp").eval()
    assert model.vip is None and model.generator is None
    pixels = random_inputs(n_video=2, num_frames=1)["pixel_values"]
    with torch.no_grad():
        video = model.get_video_features(pixels).pooler_output
        image = clip.get_image_features(pixel_values=pixels[:, 0]).pooler_output
    torch.testing.assert_close(video, torch.nn.functional.normalize(image, dim=-1))


def test_from_clip_rejects_a_checkpoint_whose_weights_do_not_fit(tmp_path, clip_dir):
    path, _ = clip_dir
    other = tmp_path / "wider"
    CLIPModel(CLIPConfig(**tiny_clip_config_dict(projection_dim=16))).save_pretrained(other)
    # a config that does not describe the weights next to it
    (other / "config.json").write_text((path / "config.json").read_text())
    with pytest.raises(ValueError, match="wrong shape.*projection"):
        PIGModel.from_clip(other, num_frames=NUM_FRAMES, its_top_k=TOP_K)


# ------------------------------------------------------------------------------------------------- save / load


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_save_and_load_round_trip_gives_identical_outputs(tmp_path, variant):
    model = build_model(**VARIANTS[variant])
    with torch.no_grad():  # trained-looking values that an init must never overwrite on load
        for name, param in model.named_parameters():
            if not name.startswith("clip."):
                param.add_(0.01 * torch.randn_like(param))
        model.clip.logit_scale.fill_(3.0)
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert {"model.safetensors", "config.json", "configuration_pig.py", "modeling_pig.py"} <= files
    assert "pytorch_model.bin" not in files

    inputs = random_inputs(n_text=3, n_video=2)
    expected = outputs_of(model, inputs)
    for loaded in (PIGModel.from_pretrained(tmp_path), AutoModel.from_pretrained(tmp_path)):
        assert type(loaded) is PIGModel
        loaded.eval()
        state, loaded_state = model.state_dict(), loaded.state_dict()
        assert state.keys() == loaded_state.keys()
        for key in state:
            torch.testing.assert_close(loaded_state[key], state[key], rtol=0, atol=0, msg=key)
        for got, want in zip(outputs_of(loaded, inputs), expected):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_saved_config_maps_the_auto_classes_to_the_shipped_code(tmp_path):
    build_model().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "pig"
    assert config["auto_map"] == {"AutoConfig": "configuration_pig.PIGConfig", "AutoModel": "modeling_pig.PIGModel"}
    assert isinstance(AutoConfig.from_pretrained(tmp_path), PIGConfig)
    # the shipped code imports nothing from this package but its own relative module
    shipped = (tmp_path / "modeling_pig.py").read_text() + (tmp_path / "configuration_pig.py").read_text()
    assert "from modeling_pig" not in shipped and "import modeling_pig" not in shipped


FRESH_PROCESS_SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys

    class BlockPackage:
        # the installed (editable) package must not be what loads the model
        def find_spec(self, name, path=None, target=None):
            if name == "modeling_pig" or name.startswith("modeling_pig."):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockPackage())
    try:
        importlib.util.find_spec("modeling_pig")
    except ImportError:
        pass
    else:
        raise SystemExit("modeling_pig is importable: the test would not prove anything")

    import torch
    from transformers import AutoModel

    checkpoint, reference = sys.argv[1], sys.argv[2]
    model = AutoModel.from_pretrained(checkpoint, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    assert not any(name.startswith("modeling_pig") for name in sys.modules), "package imported"
    saved = torch.load(reference)
    with torch.no_grad():
        out = model(**saved["inputs"])
        video = model.get_video_features(saved["inputs"]["pixel_values"]).pooler_output
    assert torch.equal(out.logits_per_text, saved["logits_per_text"])
    assert torch.equal(video, saved["video"])
    print("LOADED", type(model).__module__)
    """
)


def test_auto_model_with_remote_code_works_in_a_fresh_process(tmp_path):
    model = build_model()
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    inputs = random_inputs(n_text=2, n_video=2)
    logits, _, video = outputs_of(model, inputs)
    torch.save({"inputs": inputs, "logits_per_text": logits, "video": video}, tmp_path / "reference.pt")
    (tmp_path / "run.py").write_text(FRESH_PROCESS_SCRIPT)

    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "modules"),
               OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "run.py"), str(checkpoint), str(tmp_path / "reference.pt")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED transformers_modules." in result.stdout
