"""Which tokens the generator and the pseudo interaction receive, gathered by hand from `encode_vip` (issue 18).

Layout of the ViP sequence (pig-method.md §2.3): M global tokens (video CLS + proxies), then per frame f one
frame-CLS followed by its P patches, so frame f's CLS sits at M + f * (1 + P). On the tiny config below:
M = 1 + 3 proxies = 4, P = (32 / 8)^2 = 16, T = 3 frames: frame-CLS at 4, 21, 38; sequence length 55.
The generator reads [CLS, proxies, frame-CLS x T, ITS top-k] (§4.2) and the pseudo interaction attends
[CLS, proxies, frame-CLS x T] only (§5), all after CLIP's post-LN and visual projection.
"""

import pytest
import torch

from conftest import tiny_pig_config
from modeling_pig import PIGModel

NUM_FRAMES, TOP_K = 3, 5
M, P = 4, 16
FRAME_CLS = [4, 21, 38]  # M + f * (1 + P), f = 0, 1, 2
SEQ_LEN = 55  # M + T * (1 + P)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PIGModel(tiny_pig_config(num_frames=NUM_FRAMES, its_top_k=TOP_K)).eval()


@pytest.fixture(scope="module")
def pixel_values():
    return torch.randn(2, NUM_FRAMES, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def project(model, states):
    """CLIP's post-LN and visual projection, token by token."""
    return model.clip.visual_projection(model.clip.vision_model.post_layernorm(states))


def hand_its_positions(cls_attention):
    """Top-k patch positions by the video CLS's attention, max over heads; globals and frame-CLS excluded."""
    scores = cls_attention.amax(dim=1).clone()  # [B, S]
    scores[:, :M] = float("-inf")
    scores[:, FRAME_CLS] = float("-inf")
    order = scores.argsort(dim=1, descending=True, stable=True)
    return order[:, :TOP_K]


def captured_inputs(model, pixel_values):
    """Run get_video_features and record what the generator and the interaction were called with."""
    seen = {}
    hooks = [
        model.generator.register_forward_hook(lambda m, args, out: seen.update(generator_in=args[0], generator_out=out)),
        model.interaction.register_forward_pre_hook(lambda m, args: seen.update(interaction_in=args)),
    ]
    try:
        with torch.no_grad():
            output = model.get_video_features(pixel_values)
    finally:
        for hook in hooks:
            hook.remove()
    return output, seen


def test_layout_constants_match_the_config(model):
    assert (model.config.num_global_tokens, model.config.num_patches_per_frame) == (M, P)


def test_generator_gets_cls_proxies_frame_cls_and_its_tokens_gathered_by_hand(model, pixel_values):
    with torch.no_grad():
        vip = model.encode_vip(pixel_values, return_cls_attention=True)
    hidden, cls_attention = vip.last_hidden_state, vip.cls_attention
    assert hidden.shape[1] == SEQ_LEN
    its = hand_its_positions(cls_attention)
    rows = [torch.cat([hidden[b, :M], hidden[b, FRAME_CLS], hidden[b, its[b]]]) for b in range(hidden.shape[0])]
    with torch.no_grad():
        expected = project(model, torch.stack(rows))  # [B, M + T + k, proj]

    output, seen = captured_inputs(model, pixel_values)
    tokens = seen["generator_in"]
    assert tokens.shape == (2, M + NUM_FRAMES + TOP_K, model.config.clip_config.projection_dim)
    torch.testing.assert_close(tokens[:, :M], expected[:, :M], rtol=0, atol=1e-5)
    torch.testing.assert_close(tokens[:, M:M + NUM_FRAMES], expected[:, M:M + NUM_FRAMES], rtol=0, atol=1e-5)
    torch.testing.assert_close(tokens[:, M + NUM_FRAMES:], expected[:, M + NUM_FRAMES:], rtol=0, atol=1e-5)
    assert output.informative_token_indices.tolist() == its.tolist()
    # the frame-CLS slots are not patch tokens (a stride of P instead of 1 + P would pick 4, 20, 36)
    with torch.no_grad():
        patches = project(model, hidden[:, [20, 36]])
    assert not torch.allclose(tokens[:, M + 1:M + 3], patches, atol=1e-3)


def test_interaction_attends_only_cls_proxies_and_frame_cls_with_the_generator_output(model, pixel_values):
    with torch.no_grad():
        hidden = model.encode_vip(pixel_values).last_hidden_state
        expected_tokens = project(model, torch.cat([hidden[:, :M], hidden[:, FRAME_CLS]], dim=1))  # [B, M+T, proj]
    output, seen = captured_inputs(model, pixel_values)
    pseudo_query, tokens = seen["interaction_in"]
    assert tokens.shape == (2, M + NUM_FRAMES, model.config.clip_config.projection_dim)
    torch.testing.assert_close(tokens, expected_tokens, rtol=0, atol=1e-5)
    assert torch.equal(pseudo_query, seen["generator_out"])
    torch.testing.assert_close(output.pseudo_query_embeds, seen["generator_out"], rtol=0, atol=0)
    # and the video embedding is the interaction of exactly these inputs
    with torch.no_grad():
        torch.testing.assert_close(output.pooler_output, model.interaction(pseudo_query, expected_tokens),
                                   rtol=0, atol=1e-5)
