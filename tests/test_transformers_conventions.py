"""PIGModel behaves like a transformers model: output options as CLIP's, the retrieval pipeline, the model card
written by save_pretrained, and no deprecation raised from our code."""

import warnings

import numpy as np
import pytest
import torch
from conftest import NUM_FRAMES, tiny_pig_config
from helpers import build_model, random_inputs
from transformers import pipeline

from modeling_pig import PIGModel, PIGProcessor
from modeling_pig.model_card import PIPELINE_TAG, TAGS

NUM_LAYERS = 2  # tiny config: 2 text, 2 vision, 2 generator layers
VIP_SEQUENCE = 4 + NUM_FRAMES * 17



# ----------------------------------------------------------------------------------------- output options (CLIP's)


def test_return_dict_false_gives_tuples_on_all_three_methods():
    model = build_model()
    inputs = random_inputs()
    with torch.no_grad():
        video = model.get_video_features(inputs["pixel_values"], return_dict=False)
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"], return_dict=False)
        out = model(**inputs, return_dict=False)
        reference = model(**inputs)
    assert isinstance(video, tuple) and isinstance(text, tuple) and isinstance(out, tuple)
    assert torch.equal(video[1], reference.video_model_output.pooler_output)  # (last_hidden_state, pooler, ...)
    assert torch.equal(text[1], reference.text_model_output.pooler_output)
    assert torch.equal(out[0], reference.logits_per_text)  # no loss asked: logits first, as CLIP
    assert isinstance(out[-1], tuple)  # the nested tower outputs become tuples too


@pytest.mark.parametrize("overrides", [{}, {"use_pseudo_query": False}, {"use_pseudo_query": False, "video_tower": "meanp"}])
def test_output_hidden_states_on_video_text_and_forward(overrides):
    model = build_model(**overrides)
    inputs = random_inputs()
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
        plain = model(**inputs)
    video, text = out.video_model_output, out.text_model_output
    assert len(video.hidden_states) == NUM_LAYERS + 1 and len(text.hidden_states) == NUM_LAYERS + 1
    assert torch.equal(video.hidden_states[-1], video.last_hidden_state)  # before post-LN, as CLIP
    sequence = VIP_SEQUENCE if "video_tower" not in overrides else NUM_FRAMES * 17
    assert all(states.shape == (2, sequence, 48) for states in video.hidden_states)
    assert plain.video_model_output.hidden_states is None and plain.text_model_output.hidden_states is None
    torch.testing.assert_close(out.logits_per_text, plain.logits_per_text, rtol=0, atol=0)


def test_output_attentions_under_eager_on_both_towers():
    model = build_model()
    model.set_attn_implementation("eager")
    with torch.no_grad():
        out = model(**random_inputs(), output_attentions=True)
        video = model.get_video_features(random_inputs()["pixel_values"], output_attentions=True)
    assert len(out.text_model_output.attentions) == NUM_LAYERS
    assert out.text_model_output.attentions[0].shape == (2, 4, 7, 7)
    assert len(video.attentions) == NUM_LAYERS and video.attentions[0].shape == (2, 4, VIP_SEQUENCE, VIP_SEQUENCE)


def test_config_defaults_for_outputs_apply_as_in_clip():
    model = build_model()
    model.config.output_hidden_states = True
    with torch.no_grad():
        video = model.get_video_features(random_inputs()["pixel_values"])
    assert len(video.hidden_states) == NUM_LAYERS + 1


# ------------------------------------------------------------------------------------------------------- pipeline


@pytest.fixture(scope="module")
def saved_pig(tmp_path_factory):
    """A tiny PIG with CLIP's vocabulary and its processor, saved: what `pipeline(model=folder)` loads."""
    folder = tmp_path_factory.mktemp("pig")
    torch.manual_seed(0)
    PIGModel(tiny_pig_config(real_vocabulary=True)).save_pretrained(folder)
    PIGProcessor(num_frames=NUM_FRAMES, image_size=32).save_pretrained(folder)
    return folder


def test_pipeline_embeds_videos_and_texts_and_ranks_videos_for_a_text(saved_pig):
    retriever = pipeline("video-text-retrieval", model=str(saved_pig))
    model, processor = retriever.model, retriever.processor
    rng = np.random.default_rng(0)
    videos = [rng.integers(0, 256, (count, 24, 40, 3), dtype=np.uint8) for count in (5, 9, 30)]

    embedded = retriever(videos=videos)
    assert [e["video"] for e in embedded] == [0, 1, 2]
    with torch.no_grad():
        stored = model.get_video_features(processor(videos=videos)["pixel_values"]).pooler_output
    expected = torch.nn.functional.normalize(stored, dim=-1)
    torch.testing.assert_close(torch.tensor([e["embedding"] for e in embedded]), expected, rtol=1e-5, atol=1e-6)

    text = retriever(text="a man plays a guitar", return_tensors=True)
    assert text["text"] == "a man plays a guitar" and text["embedding"].shape == (24,)

    ranked = retriever(text="a man plays a guitar", videos=videos)
    scores = (expected @ text["embedding"]).tolist()
    assert [r["video"] for r in ranked] == sorted(range(3), key=lambda i: -scores[i])
    assert [r["score"] for r in ranked] == pytest.approx(sorted(scores, reverse=True), abs=1e-5)
    assert len(retriever(text="a man plays a guitar", videos=videos, top_k=1)) == 1
    with pytest.raises(ValueError, match="videos=..., text=..."):
        retriever()


# ------------------------------------------------------------------------------------------------------ model card


def test_save_pretrained_writes_a_minimal_model_card(tmp_path):
    build_model(use_pseudo_query=False).save_pretrained(tmp_path / "saved")
    card = (tmp_path / "saved" / "README.md").read_text()
    header = card.split("---")[1]
    assert "library_name: transformers" in header and f"pipeline_tag: {PIPELINE_TAG}" in header
    assert all(f"- {tag}" in header for tag in TAGS)
    assert "CLIP-ViP baseline" in card
    assert "import modeling_pig" in card and 'AutoModel.from_pretrained("path/to/this/folder")' in card
    assert 'trust_remote_code=True' in card  # and without the package


def test_save_pretrained_keeps_a_card_that_is_already_there(tmp_path):
    (tmp_path / "README.md").write_text("# A trained model\n\nresults ...\n")
    build_model().save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "# A trained model\n\nresults ...\n"
    assert (tmp_path / "model.safetensors").is_file()


# ------------------------------------------------------------------------------------------------------ warnings


def test_a_forward_raises_no_deprecation_warning():
    model = build_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            model(**random_inputs(), return_loss=True)
    deprecations = [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert not deprecations, [str(w.message) for w in deprecations]


def test_deprecations_from_our_modules_fail_the_suite():
    """pyproject's filterwarnings turns a DeprecationWarning / FutureWarning whose module is ours into an error."""
    for module in ("modeling_pig.modeling_pig", "training.train", "datasets_scripts.export"):
        for category in (DeprecationWarning, FutureWarning):
            with pytest.raises(category):
                warnings.warn_explicit("going away", category, "ours.py", 1, module=module)
    with pytest.warns(FutureWarning):  # somebody else's deprecation stays a warning
        warnings.warn_explicit("going away", FutureWarning, "theirs.py", 1, module="transformers.modeling_utils")
