"""PIGViPEncoderLayer: CLIP's parameter names, the numbers of the free function it replaced, attention weights
under eager, checkpointing through transformers, and CLIP's plain layer without a layout (eager == sdpa for the
whole model, ViP tower included: test_modeling_pig.py).

`fixtures/pig_main_reference.json` holds state-dict keys and outputs computed on main before the layer existed
(its "about" field says how).
"""

import json

import pytest
import torch
from conftest import FIXTURES, NUM_FRAMES, tiny_clip_config_dict, tiny_pig_config
from helpers import build_model, random_inputs, vip_input_states
from transformers import CLIPModel

from modeling_pig.modeling_pig import PIGViPEncoderLayer, vip_attention_mask

VARIANTS = {
    "pig": {},
    "pig_fixed_bos_eos": {"learnable_bos_eos": False, "generator_output_projection": False,
                          "clip_config": tiny_clip_config_dict(projection_dim=32)},
    "clip_vip": {"use_pseudo_query": False},
    "meanp": {"use_pseudo_query": False, "video_tower": "meanp"},
}


@pytest.fixture(scope="module")
def main_reference():
    return json.loads((FIXTURES / "pig_main_reference.json").read_text())



@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_state_dict_keys_are_those_of_main(variant, main_reference):
    model = build_model(**VARIANTS[variant])
    assert list(model.state_dict()) == main_reference["keys"][variant]


@pytest.mark.parametrize("variant", ["pig", "clip_vip", "meanp"])
def test_outputs_for_a_fixed_seed_are_those_of_main(variant, main_reference):
    expected = main_reference["outputs"][variant]
    model = build_model(**VARIANTS[variant])
    inputs = random_inputs(n_text=2, n_video=2)
    with torch.no_grad():
        out = model(**inputs, return_loss=True)
    video = out.video_model_output
    assert out.loss.item() == pytest.approx(expected["loss"], abs=1e-5)
    torch.testing.assert_close(out.logits_per_text, torch.tensor(expected["logits_per_text"]), rtol=0, atol=1e-5)
    torch.testing.assert_close(video.pooler_output, torch.tensor(expected["video_pooler_output"]), rtol=0, atol=1e-5)
    if variant == "pig":
        assert video.informative_token_indices.tolist() == expected["informative_token_indices"]
        torch.testing.assert_close(video.pseudo_query_embeds, torch.tensor(expected["pseudo_query_embeds"]),
                                   rtol=0, atol=1e-5)


def test_vip_layers_replace_clip_layers_without_new_tensors_or_random_draws():
    torch.manual_seed(0)
    config = tiny_pig_config()
    clip = CLIPModel._from_config(config.clip_config)
    layer = clip.vision_model.encoder.layers[0]
    state = torch.get_rng_state()
    vip_layer = PIGViPEncoderLayer.from_clip_layer(layer, config.num_global_tokens)
    assert torch.equal(torch.get_rng_state(), state)
    assert dict(vip_layer.named_parameters()).keys() == dict(layer.named_parameters()).keys()
    for name, parameter in vip_layer.named_parameters():
        assert parameter is dict(layer.named_parameters())[name], name
    assert not any(p.is_meta for p in vip_layer.parameters())


def test_eager_returns_attention_weights_that_follow_the_vip_pattern():
    model = build_model()
    model.set_attn_implementation("eager")
    pixels = random_inputs(n_video=2)["pixel_values"]
    with torch.no_grad():
        video = model.get_video_features(pixels, output_attentions=True)
    seq_len = 4 + NUM_FRAMES * 17
    blocked = vip_attention_mask(4, NUM_FRAMES, 17, torch.float32)[0, 0] < 0  # [S, S]
    assert len(video.attentions) == len(model.clip.vision_model.encoder.layers)
    for weights in video.attentions:
        assert weights.shape == (2, 4, seq_len, seq_len)
        assert torch.all(weights[:, :, blocked] == 0)  # frame tokens never see another frame's tokens
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, seq_len))
    # the last layer's video-CLS row is the attention ITS reads
    cls_attention = model.encode_vip(pixels, return_cls_attention=True).cls_attention
    torch.testing.assert_close(video.attentions[-1][:, :, 0], cls_attention, rtol=1e-5, atol=1e-6)


def test_sdpa_returns_no_attention_weights_as_clip_does():
    model = build_model()
    with torch.no_grad():
        video = model.get_video_features(random_inputs()["pixel_values"], output_attentions=True)
    assert not video.attentions


def test_vip_mask_matches_the_block_pattern_for_one_frame_too():
    mask = vip_attention_mask(2, 1, 3, torch.float16)  # one frame: nothing is masked
    assert mask.shape == (1, 1, 5, 5) and mask.dtype == torch.float16 and torch.all(mask == 0)


def test_without_a_layout_the_layer_is_clips_own():
    """`model.clip` stays a CLIP: images through its vision tower give what a plain CLIPModel gives."""
    model = build_model()
    plain = CLIPModel._from_config(tiny_pig_config().clip_config).eval()
    plain.load_state_dict(model.clip.state_dict())
    images = random_inputs(n_video=2)["pixel_values"][:, 0]  # [2, 3, 32, 32]
    with torch.no_grad():
        expected = plain.get_image_features(pixel_values=images).pooler_output
        got = model.clip.get_image_features(pixel_values=images).pooler_output
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_checkpointing_recomputes_the_vip_layers_with_the_same_gradients():
    inputs = random_inputs(n_text=2, n_video=2)
    grads = []
    for checkpointing in (False, True):
        model = build_model(interaction_dropout=0.0).train()
        if checkpointing:
            model.activation_checkpointing_enable()
        hidden = vip_input_states(model, inputs["pixel_values"])
        layer = model.clip.vision_model.encoder.layers[0]
        forward_calls = []
        handle = layer.layer_norm1.register_forward_hook(lambda *args: forward_calls.append(1))
        out, _, _ = layer(hidden, num_frames=NUM_FRAMES)
        out.square().sum().backward()
        handle.remove()
        assert len(forward_calls) == (2 if checkpointing else 1)  # recomputed in the backward
        grads.append(layer.self_attn.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[1], grads[0])
